//! The open-loop schedule: message k is due at `start + k / rate`, whether or not earlier
//! messages were answered or even sent on time. A sender that falls behind sends late messages
//! at once, and each still carries its intended time, so the delay it suffered is counted in
//! its latency (wrk2's correction for coordinated omission). With no rate, every message is
//! due at once: the sender runs flat out and the latency it reports is meaningless.

#[derive(Debug, Clone)]
pub struct Pacer {
    start_ns: u64,
    /// Nanoseconds between intended sends, in 2^-16 ns steps so rates above 1M/s stay exact.
    interval_fp: u128,
    next: u64,
}

impl Pacer {
    /// `rate` messages per second from `start_ns`; `None` means as fast as possible.
    pub fn new(start_ns: u64, rate: Option<f64>) -> Pacer {
        let interval_fp = match rate {
            Some(r) if r > 0.0 => (1e9 / r * 65536.0).round() as u128,
            _ => 0,
        };
        Pacer {
            start_ns,
            interval_fp,
            next: 0,
        }
    }

    /// When message `k` should be sent.
    pub fn intended(&self, k: u64) -> u64 {
        self.start_ns + ((k as u128 * self.interval_fp) >> 16) as u64
    }

    /// The next message's intended time if it is due at `now_ns`, and advances past it.
    pub fn due(&mut self, now_ns: u64) -> Option<u64> {
        let at = self.intended(self.next);
        (at <= now_ns).then(|| {
            self.next += 1;
            at
        })
    }

    /// When the next message is due.
    pub fn next_due(&self) -> u64 {
        self.intended(self.next)
    }

    /// Messages handed out so far.
    pub fn issued(&self) -> u64 {
        self.next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_is_evenly_spaced_from_start() {
        let p = Pacer::new(1_000, Some(1000.0));
        assert_eq!(p.intended(0), 1_000);
        assert_eq!(p.intended(1), 1_001_000);
        assert_eq!(p.intended(1000), 1_000_001_000);
    }

    #[test]
    fn high_rates_do_not_drift() {
        // 3M/s: 333.33 ns apart; after 3M messages exactly one second has passed.
        let p = Pacer::new(0, Some(3e6));
        let at = p.intended(3_000_000);
        assert!((999_999_000..=1_000_001_000).contains(&at), "{at}");
    }

    #[test]
    fn a_late_sender_catches_up_with_intended_times_kept() {
        let mut p = Pacer::new(0, Some(1000.0));
        // Nothing is due before its time.
        assert_eq!(p.due(0), Some(0));
        assert_eq!(p.due(999_999), None);
        // The sender stalls for 3.5 ms: three messages are due, each with its own intended time.
        let late: Vec<u64> = std::iter::from_fn(|| p.due(4_500_000)).collect();
        assert_eq!(late, vec![1_000_000, 2_000_000, 3_000_000, 4_000_000]);
        assert_eq!(p.next_due(), 5_000_000);
        assert_eq!(p.issued(), 5);
    }

    #[test]
    fn no_rate_means_always_due() {
        let mut p = Pacer::new(50, None);
        assert_eq!(p.due(50), Some(50));
        assert_eq!(p.due(50), Some(50));
        assert_eq!(p.issued(), 2);
    }
}
