//! The engine's timers in one table, indexed by what each is for: the caller asks for one next
//! timeout, and `handle_timeout` runs every timer that is due, in a fixed order. A handler that
//! wants to run again sets its timer again.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Timer {
    /// The cluster's stream retransmissions ([`super::group`]).
    Retransmit,
    /// Logging out sessions silent for longer than the user timeout.
    Sweep,
    /// Forgetting neighbors that stopped refreshing a channel ([`super::tree`]).
    NeighborExpiry,
    /// LIST and WHO answers waiting for reply budget ([`super::answers`]).
    Pace,
    /// Sending every subscribed channel's S2S_JOIN again ([`super::tree`]).
    Refresh,
}

impl Timer {
    const ALL: [Timer; 5] = [
        Timer::Retransmit,
        Timer::Sweep,
        Timer::NeighborExpiry,
        Timer::Pace,
        Timer::Refresh,
    ];
}

#[derive(Debug, Default)]
pub(super) struct Timers([Option<Duration>; Timer::ALL.len()]);

impl Timers {
    pub(super) fn set(&mut self, timer: Timer, at: Duration) {
        self.0[timer as usize] = Some(at);
    }

    pub(super) fn stop(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    pub(super) fn get(&self, timer: Timer) -> Option<Duration> {
        self.0[timer as usize]
    }

    /// The earliest timer, if any is set.
    pub(super) fn next(&self) -> Option<Duration> {
        self.0.iter().flatten().min().copied()
    }

    /// The timers due at `now`, in the table's order, each stopped.
    pub(super) fn take_due(&mut self, now: Duration) -> arrayvec::ArrayVec<Timer, 5> {
        let mut due = arrayvec::ArrayVec::new();
        for timer in Timer::ALL {
            if self.get(timer).is_some_and(|at| at <= now) {
                self.stop(timer);
                due.push(timer);
            }
        }
        debug_assert!(
            self.next().is_none_or(|at| at > now),
            "a due timer left armed"
        );
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_timers_in_order_and_stopped() {
        let ms = Duration::from_millis;
        let mut t = Timers::default();
        assert_eq!(t.next(), None);
        t.set(Timer::Refresh, ms(5));
        t.set(Timer::Sweep, ms(9));
        t.set(Timer::Retransmit, ms(5));
        assert_eq!(t.next(), Some(ms(5)));
        assert_eq!(t.take_due(ms(4)).as_slice(), []);
        assert_eq!(
            t.take_due(ms(5)).as_slice(),
            [Timer::Retransmit, Timer::Refresh]
        );
        assert_eq!(t.next(), Some(ms(9)));
        t.stop(Timer::Sweep);
        assert_eq!(t.next(), None);
    }
}
