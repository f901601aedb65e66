//! Latency histograms: nanoseconds from a message's intended send time to its delivery, in an
//! HdrHistogram with 3 significant digits up to 100 s. Each receiver records into its own and
//! the run merges them. A histogram is stored in results as its non-empty buckets
//! (`[value, count]` pairs), which rebuilds it exactly.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;

const MAX_NS: u64 = 100_000_000_000;

#[derive(Debug, Clone)]
pub struct Latency(Histogram<u64>);

impl Default for Latency {
    fn default() -> Self {
        Self::new()
    }
}

/// The figures a report shows, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

impl Latency {
    pub fn new() -> Self {
        // Cannot fail: the bounds are constants within what HdrHistogram supports.
        Self(Histogram::new_with_bounds(1, MAX_NS, 3).expect("valid histogram bounds"))
    }

    pub fn record(&mut self, ns: u64) {
        self.0.saturating_record(ns.clamp(1, MAX_NS));
    }

    pub fn merge(&mut self, other: &Latency) {
        // Cannot fail: both have the same bounds.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn reset(&mut self) {
        self.0.reset();
    }

    pub fn quantile_us(&self, q: f64) -> f64 {
        self.0.value_at_quantile(q) as f64 / 1e3
    }

    pub fn percentiles(&self) -> Percentiles {
        if self.0.is_empty() {
            return Percentiles::default();
        }
        Percentiles {
            count: self.0.len(),
            mean_us: self.0.mean() / 1e3,
            p50_us: self.quantile_us(0.5),
            p90_us: self.quantile_us(0.9),
            p99_us: self.quantile_us(0.99),
            p999_us: self.quantile_us(0.999),
            max_us: self.0.max() as f64 / 1e3,
        }
    }

    /// The non-empty buckets as `(value_ns, count)`.
    pub fn buckets(&self) -> Vec<(u64, u64)> {
        self.0
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect()
    }

    pub fn from_buckets(buckets: &[(u64, u64)]) -> Self {
        let mut h = Self::new();
        for &(value, count) in buckets {
            let _ = h.0.record_n(value.clamp(1, MAX_NS), count);
        }
        h
    }

    /// The percentile distribution in HdrHistogram's text format (values in microseconds),
    /// readable by the usual HdrHistogram plotting tools.
    pub fn percentile_text(&self) -> String {
        let mut s = String::from("       Value     Percentile TotalCount 1/(1-Percentile)\n\n");
        for v in self.0.iter_quantiles(5) {
            let q = v.quantile_iterated_to();
            let inverse = if q < 1.0 {
                format!("{:14.2}", 1.0 / (1.0 - q))
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "{:12.3} {:14.12} {:10} {inverse}",
                v.value_iterated_to() as f64 / 1e3,
                q,
                v.count_since_last_iteration()
            );
        }
        let p = self.percentiles();
        let _ = writeln!(
            s,
            "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]",
            p.mean_us,
            self.0.stdev() / 1e3
        );
        let _ = writeln!(
            s,
            "#[Max     = {:12.3}, Total count    = {:12}]",
            p.max_us, p.count
        );
        s
    }
}

/// A latency for people: three significant figures in the unit that suits it (`41.2 us`,
/// `37.4 ms`, `2.31 s`). Results keep microseconds; only what is printed is converted.
pub fn human(us: f64) -> String {
    let (value, unit) = if us >= 1e6 {
        (us / 1e6, "s")
    } else if us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (us, "us")
    };
    // Rounding may carry into the next unit's range (999.96 us prints as 1000 us): harmless.
    let decimals = if value >= 100.0 {
        0
    } else if value >= 10.0 {
        1
    } else {
        2
    };
    format!("{value:.decimals$} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_latencies_pick_their_unit() {
        assert_eq!(human(0.5), "0.50 us");
        assert_eq!(human(41.23), "41.2 us");
        assert_eq!(human(412.3), "412 us");
        assert_eq!(human(1_234.0), "1.23 ms");
        assert_eq!(human(37_407.0), "37.4 ms");
        assert_eq!(human(232_521.7), "233 ms");
        assert_eq!(human(2_310_000.0), "2.31 s");
        assert_eq!(human(0.0), "0.00 us");
    }

    #[test]
    fn percentiles_of_a_known_distribution() {
        let mut h = Latency::new();
        for us in 1..=1000u64 {
            h.record(us * 1000);
        }
        let p = h.percentiles();
        assert_eq!(p.count, 1000);
        assert!((p.p50_us - 500.0).abs() <= 1.0, "{p:?}");
        assert!((p.p99_us - 990.0).abs() <= 1.0, "{p:?}");
        assert!((p.max_us - 1000.0).abs() <= 1.0, "{p:?}");
        assert!((p.mean_us - 500.5).abs() <= 1.0, "{p:?}");
    }

    #[test]
    fn buckets_rebuild_the_same_histogram() {
        let mut h = Latency::new();
        for i in 0..10_000u64 {
            h.record(1 + i * i % 7_000_000);
        }
        let back = Latency::from_buckets(&h.buckets());
        assert_eq!(back.count(), h.count());
        assert_eq!(back.percentiles(), h.percentiles());
        assert_eq!(back.buckets(), h.buckets());
    }

    #[test]
    fn merge_adds_counts() {
        let (mut a, mut b) = (Latency::new(), Latency::new());
        a.record(1_000);
        b.record(2_000_000);
        b.record(3_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 3);
        assert!((a.percentiles().max_us - 3000.0).abs() < 3.0);
    }

    #[test]
    fn out_of_range_values_are_clamped_not_lost() {
        let mut h = Latency::new();
        h.record(0);
        h.record(u64::MAX);
        assert_eq!(h.count(), 2);
    }

    #[test]
    fn percentile_text_ends_with_the_totals() {
        let mut h = Latency::new();
        h.record(5_000);
        let text = h.percentile_text();
        assert!(text.contains("Total count    =            1"), "{text}");
        assert!(text.lines().count() > 3);
    }
}
