//! `loadgen compare A.json B.json ...`: runs side by side, each figure with its change from the
//! first run, so a commit's effect on throughput and latency reads off one table. Columns are
//! as wide as their longest cell, so run names are shown whole.

use crate::latency::human;
use crate::report::RunRecord;
use std::fmt::Write as _;

/// How a figure is printed.
#[derive(Clone, Copy)]
enum Unit {
    /// Per second, or a count: whole numbers.
    Rate,
    Percent,
    /// Microseconds, printed in the unit that suits them.
    Latency,
    Ratio,
}

type Metric = (&'static str, Unit, fn(&RunRecord) -> Option<f64>);

fn metrics() -> Vec<Metric> {
    use Unit::*;
    vec![
        ("sent msgs/s", Rate, |r| Some(r.result.sent_per_s)),
        ("deliveries/s", Rate, |r| Some(r.result.deliveries_per_s)),
        ("loss", Percent, |r| Some(r.result.loss_ratio * 100.0)),
        ("latency p50", Latency, |r| Some(r.result.latency.p50_us)),
        ("latency p90", Latency, |r| Some(r.result.latency.p90_us)),
        ("latency p99", Latency, |r| Some(r.result.latency.p99_us)),
        ("latency p99.9", Latency, |r| Some(r.result.latency.p999_us)),
        ("latency max", Latency, |r| Some(r.result.latency.max_us)),
        ("cpu ns/delivery", Rate, |r| r.result.cpu_ns_per_delivery),
        ("ceiling deliveries/s", Rate, |r| {
            r.ceiling.as_ref().map(|c| c.deliveries_per_s)
        }),
        ("router / ceiling", Ratio, RunRecord::ceiling_ratio),
    ]
}

fn show(unit: Unit, v: f64) -> String {
    match unit {
        Unit::Rate => format!("{v:.0}"),
        Unit::Percent => format!("{v:.3}%"),
        Unit::Latency => human(v),
        Unit::Ratio => format!("{v:.3}"),
    }
}

/// The file name without its directory and `.json`: the run's stem.
fn run_name(path: &str) -> &str {
    let name = path.rsplit('/').next().unwrap_or(path);
    name.strip_suffix(".json").unwrap_or(name)
}

pub fn compare(runs: &[(String, RunRecord)]) -> String {
    let mut rows: Vec<(&str, Vec<String>)> = vec![
        (
            "run",
            runs.iter().map(|(n, _)| run_name(n).to_string()).collect(),
        ),
        (
            "scenario",
            runs.iter().map(|(_, r)| r.scenario.clone()).collect(),
        ),
        (
            "commit",
            runs.iter()
                .map(|(_, r)| r.source.short().unwrap_or_else(|| "-".into()))
                .collect(),
        ),
        (
            "started",
            runs.iter().map(|(_, r)| r.started.clone()).collect(),
        ),
        (
            "clients / rate",
            runs.iter()
                .map(|(_, r)| {
                    let rate = r.params.rate.map_or("max".into(), |x| format!("{x:.0}"));
                    format!("{} / {rate}", r.params.clients)
                })
                .collect(),
        ),
        (
            "backend / cores",
            runs.iter()
                .map(|(_, r)| format!("{} / {}", r.backend(), r.params.cores))
                .collect(),
        ),
    ];
    for (label, unit, get) in metrics() {
        let base = runs.first().and_then(|(_, r)| get(r));
        let cells = runs
            .iter()
            .enumerate()
            .map(|(i, (_, r))| match (get(r), base) {
                (None, _) => "-".into(),
                (Some(v), Some(b)) if i > 0 && b != 0.0 => {
                    format!("{} ({:+.1}%)", show(unit, v), (v - b) / b * 100.0)
                }
                (Some(v), _) => show(unit, v),
            })
            .collect();
        rows.push((label, cells));
    }
    let label_width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..runs.len())
        .map(|i| {
            rows.iter()
                .map(|(_, c)| c[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (label, cells) in &rows {
        let _ = write!(s, "{label:<label_width$}");
        for (cell, width) in cells.iter().zip(&widths) {
            let _ = write!(s, "  {cell:>width$}");
        }
        s.push('\n');
    }
    if runs.iter().any(|(_, r)| r.params.rate.is_none()) {
        s.push_str(crate::report::SATURATED);
    }
    s
}
