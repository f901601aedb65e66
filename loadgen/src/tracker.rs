//! Per-receiver accounting of what arrived: each receiver remembers, per sender, the highest
//! sequence number seen and a 64-wide window below it, which tells a first arrival that is in
//! order, one that overtook nothing but came late (reordered), and a repeat (duplicate).
//! Loss is what is left: expected deliveries minus unique ones, once the run has drained.

use ahash::AHashMap;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    InOrder,
    /// A first arrival below the highest sequence number already seen from that sender.
    Reordered,
    Duplicate,
}

#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// One past the highest sequence number seen (0: nothing seen yet).
    high: u64,
    /// Bit i: sequence number `high - 1 - i` has been seen.
    seen: u64,
}

#[derive(Debug, Default)]
pub struct Tracker {
    windows: AHashMap<(u32, u32), Window>,
}

impl Tracker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `receiver` got message `seq` of `sender`.
    pub fn arrive(&mut self, receiver: u32, sender: u32, seq: u64) -> Arrival {
        let w = self.windows.entry((receiver, sender)).or_default();
        if seq >= w.high {
            let shift = seq + 1 - w.high;
            w.seen = if shift >= 64 { 0 } else { w.seen << shift };
            w.seen |= 1;
            w.high = seq + 1;
            return Arrival::InOrder;
        }
        let back = w.high - 1 - seq;
        if back >= 64 {
            // Too far back to remember; a duplicate this late is counted as reordered.
            return Arrival::Reordered;
        }
        let bit = 1u64 << back;
        if w.seen & bit != 0 {
            Arrival::Duplicate
        } else {
            w.seen |= bit;
            Arrival::Reordered
        }
    }
}

/// What a run's receivers saw, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Deliveries the plan called for: each message times its channel's size.
    pub expected: u64,
    /// First arrivals (in order or not).
    pub unique: u64,
    pub duplicates: u64,
    pub reordered: u64,
    /// Datagrams that were not a delivery of ours (errors, foreign text, S2S_JOINs).
    pub foreign: u64,
    /// S2S_LEAVEs the router sent to loadgen's neighbor servers.
    #[serde(default)]
    pub s2s_leaves: u64,
    /// What churn clients received: chat while they were members, and errors (none expected:
    /// each churn client's requests arrive in order).
    #[serde(default)]
    pub churn_received: u64,
    #[serde(default)]
    pub churn_errors: u64,
    /// Browser connections that failed during the run (a slow one is closed by the router).
    #[serde(default)]
    pub browsers_lost: u64,
}

impl Tally {
    pub fn count(&mut self, arrival: Arrival) {
        match arrival {
            Arrival::InOrder => self.unique += 1,
            Arrival::Reordered => {
                self.unique += 1;
                self.reordered += 1;
            }
            Arrival::Duplicate => self.duplicates += 1,
        }
    }

    pub fn lost(&self) -> u64 {
        self.expected.saturating_sub(self.unique)
    }

    pub fn add(&mut self, other: &Tally) {
        self.expected += other.expected;
        self.unique += other.unique;
        self.duplicates += other.duplicates;
        self.reordered += other.reordered;
        self.foreign += other.foreign;
        self.s2s_leaves += other.s2s_leaves;
        self.churn_received += other.churn_received;
        self.churn_errors += other.churn_errors;
        self.browsers_lost += other.browsers_lost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_reordered_and_duplicate() {
        let mut t = Tracker::new();
        assert_eq!(t.arrive(1, 2, 0), Arrival::InOrder);
        assert_eq!(t.arrive(1, 2, 2), Arrival::InOrder); // 1 is missing so far
        assert_eq!(t.arrive(1, 2, 1), Arrival::Reordered);
        assert_eq!(t.arrive(1, 2, 1), Arrival::Duplicate);
        assert_eq!(t.arrive(1, 2, 2), Arrival::Duplicate);
        assert_eq!(t.arrive(1, 2, 0), Arrival::Duplicate);
        // Each (receiver, sender) pair has its own window.
        assert_eq!(t.arrive(3, 2, 1), Arrival::InOrder);
        assert_eq!(t.arrive(1, 4, 0), Arrival::InOrder);
    }

    #[test]
    fn the_window_slides() {
        let mut t = Tracker::new();
        assert_eq!(t.arrive(0, 0, 0), Arrival::InOrder);
        assert_eq!(t.arrive(0, 0, 63), Arrival::InOrder);
        assert_eq!(t.arrive(0, 0, 0), Arrival::Duplicate); // still inside the window
        assert_eq!(t.arrive(0, 0, 64), Arrival::InOrder);
        assert_eq!(t.arrive(0, 0, 0), Arrival::Reordered); // fell out of it
        assert_eq!(t.arrive(0, 0, 500), Arrival::InOrder);
        assert_eq!(t.arrive(0, 0, 499), Arrival::Reordered);
        assert_eq!(t.arrive(0, 0, 499), Arrival::Duplicate);
    }

    #[test]
    fn tally_counts_loss_as_what_never_arrived() {
        let mut tally = Tally {
            expected: 10,
            ..Tally::default()
        };
        for a in [
            Arrival::InOrder,
            Arrival::Reordered,
            Arrival::Duplicate,
            Arrival::InOrder,
        ] {
            tally.count(a);
        }
        assert_eq!((tally.unique, tally.duplicates, tally.reordered), (3, 1, 1));
        assert_eq!(tally.lost(), 7);
    }
}
