//! A reliable, in-order stream of datagrams from one server to another, one per room: the
//! assignment assumes no loss between servers, we do not. The sender keeps what it sent until a
//! cumulative acknowledgement covers it and retransmits on a timeout computed from measured
//! round trips (RFC 6298: SRTT + 4 RTTVAR, backed off on each expiry, Karn's rule); a partial
//! acknowledgement after a retransmission resends the next hole at once (NewReno), so a burst of
//! losses costs one round trip per hole, not one timeout. The receiver holds what arrives early
//! and hands datagrams over in sequence. Both sides are bounded by [`WINDOW`].

use std::collections::{btree_map, BTreeMap, VecDeque};
use std::time::Duration;

/// Unacknowledged datagrams beyond which a sender takes no new message. Proposals and
/// agreements are always taken (refusing one would stall a room for good); there is at most one
/// per message in flight of either side, so a stream holds at most about three windows.
pub const WINDOW: usize = 256;
/// How far ahead of the next expected datagram a receiver holds.
const HOLD: u64 = 4 * WINDOW as u64;
const INITIAL_RTO: Duration = Duration::from_millis(100);
const MIN_RTO: Duration = Duration::from_millis(10);
const MAX_RTO: Duration = Duration::from_secs(1);
/// Acknowledgements that repeat without progress before the oldest datagram is resent.
const DUPLICATE_ACKS: u32 = 3;

struct Sent {
    seq: u64,
    bytes: Vec<u8>,
    sent_at: Duration,
    retransmitted: bool,
}

pub struct OutStream {
    next_seq: u64,
    unacked: VecDeque<Sent>,
    /// Buffers of acknowledged datagrams, reused for new ones: after warm-up, keeping a
    /// datagram for retransmission allocates nothing. At most as many as were ever unacked.
    spare: Vec<Vec<u8>>,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    /// When the oldest unacknowledged datagram is resent.
    timer: Option<Duration>,
    /// After a retransmission: the highest sequence number sent then (NewReno's recovery point).
    recover: u64,
    duplicate_acks: u32,
    pub retransmissions: u64,
}

impl Default for OutStream {
    fn default() -> Self {
        Self {
            next_seq: 1,
            unacked: VecDeque::new(),
            spare: Vec::new(),
            srtt: None,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
            timer: None,
            recover: 0,
            duplicate_acks: 0,
            retransmissions: 0,
        }
    }
}

impl OutStream {
    /// New messages' datagrams that can still be sent before the window is full.
    pub fn room(&self) -> usize {
        WINDOW.saturating_sub(self.unacked.len())
    }

    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Keeps a copy of `datagram` (encoded with [`Self::next_seq`]) until acknowledged; the
    /// caller sends it.
    pub fn push(&mut self, now: Duration, datagram: &[u8]) {
        let mut bytes = self.spare.pop().unwrap_or_default();
        bytes.clear();
        bytes.extend_from_slice(datagram);
        self.unacked.push_back(Sent {
            seq: self.next_seq,
            bytes,
            sent_at: now,
            retransmitted: false,
        });
        self.next_seq += 1;
        self.timer.get_or_insert(now + self.rto);
    }

    /// A cumulative acknowledgement of everything up to `seq`. Returns a datagram to resend at
    /// once, when the acknowledgement shows a hole.
    pub fn ack(&mut self, now: Duration, seq: u64) -> Option<&[u8]> {
        let oldest = self.unacked.front()?;
        if seq < oldest.seq {
            // No progress: after enough of these the receiver is evidently missing `oldest`.
            self.duplicate_acks += 1;
            if self.duplicate_acks == DUPLICATE_ACKS && self.recover == 0 {
                return self.resend_oldest(now);
            }
            return None;
        }
        if seq >= self.next_seq {
            return None; // acknowledges what was never sent: a confused or hostile peer
        }
        self.duplicate_acks = 0;
        while self.unacked.front().is_some_and(|s| s.seq <= seq) {
            if let Some(sent) = self.unacked.pop_front() {
                if !sent.retransmitted && sent.seq == seq {
                    self.sample(now.saturating_sub(sent.sent_at));
                }
                self.spare.push(sent.bytes);
            }
        }
        if self.unacked.is_empty() {
            self.timer = None;
            self.recover = 0;
            return None;
        }
        self.timer = Some(now + self.rto);
        if self.recover != 0 {
            if seq < self.recover {
                return self.resend_oldest(now); // a partial acknowledgement: the next hole
            }
            self.recover = 0;
        }
        None
    }

    /// When [`Self::on_timer`] should run next.
    pub fn timer(&self) -> Option<Duration> {
        self.timer
    }

    /// The retransmission timeout: resends the oldest datagram and backs off.
    pub fn on_timer(&mut self, now: Duration) -> Option<&[u8]> {
        if self.timer.is_none_or(|t| now < t) {
            return None;
        }
        self.rto = (self.rto * 2).min(MAX_RTO);
        self.resend_oldest(now)
    }

    fn resend_oldest(&mut self, now: Duration) -> Option<&[u8]> {
        self.recover = self.next_seq - 1;
        self.timer = Some(now + self.rto);
        let oldest = self.unacked.front_mut()?;
        oldest.retransmitted = true;
        self.retransmissions += 1;
        Some(&oldest.bytes)
    }

    fn sample(&mut self, rtt: Duration) {
        match self.srtt {
            None => {
                self.srtt = Some(rtt);
                self.rttvar = rtt / 2;
            }
            Some(srtt) => {
                let delta = srtt.abs_diff(rtt);
                self.rttvar = (self.rttvar * 3 + delta) / 4;
                self.srtt = Some((srtt * 7 + rtt) / 8);
            }
        }
        let srtt = self.srtt.unwrap_or(rtt);
        self.rto = (srtt + self.rttvar * 4).clamp(MIN_RTO, MAX_RTO);
    }
}

/// What the receiving side did with a datagram.
#[derive(Debug, PartialEq, Eq)]
pub enum Arrival {
    /// The next one in sequence: handle it now, then whatever [`InStream::pop_ready`] gives.
    Next,
    /// Early: held until the datagrams before it arrive.
    Held,
    /// Already handled (a retransmission whose acknowledgement was lost).
    Duplicate,
    /// Beyond what a receiver holds: dropped (a correct sender never sends it).
    TooFar,
}

pub struct InStream {
    next: u64,
    /// Early datagrams, copied: only a reordered datagram costs an allocation.
    held: BTreeMap<u64, Box<[u8]>>,
}

impl Default for InStream {
    fn default() -> Self {
        Self {
            next: 1,
            held: BTreeMap::new(),
        }
    }
}

impl InStream {
    pub fn arrive(&mut self, seq: u64, datagram: &[u8]) -> Arrival {
        if seq < self.next {
            return Arrival::Duplicate;
        }
        if seq == self.next {
            self.next += 1;
            return Arrival::Next;
        }
        if seq - self.next >= HOLD {
            return Arrival::TooFar;
        }
        match self.held.entry(seq) {
            btree_map::Entry::Occupied(_) => Arrival::Duplicate,
            btree_map::Entry::Vacant(e) => {
                e.insert(datagram.into());
                Arrival::Held
            }
        }
    }

    /// The next held datagram, once everything before it has been handled.
    pub fn pop_ready(&mut self) -> Option<Box<[u8]>> {
        let datagram = self.held.remove(&self.next)?;
        self.next += 1;
        Some(datagram)
    }

    /// The cumulative acknowledgement to send.
    pub fn acked(&self) -> u64 {
        self.next - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn bytes(seq: u64) -> Vec<u8> {
        seq.to_string().into_bytes()
    }

    fn send(out: &mut OutStream, now: Duration, n: usize) {
        for _ in 0..n {
            let seq = out.next_seq();
            out.push(now, &bytes(seq));
        }
    }

    #[test]
    fn receiver_hands_over_in_order_and_bounds_what_it_holds() {
        let mut inn = InStream::default();
        let d = &b"x"[..];
        assert_eq!(inn.arrive(2, d), Arrival::Held);
        assert_eq!(inn.arrive(2, d), Arrival::Duplicate);
        assert_eq!(inn.arrive(3, d), Arrival::Held);
        assert_eq!(inn.pop_ready(), None);
        assert_eq!(inn.acked(), 0);
        assert_eq!(inn.arrive(1, d), Arrival::Next);
        assert!(inn.pop_ready().is_some());
        assert!(inn.pop_ready().is_some());
        assert_eq!(inn.pop_ready(), None);
        assert_eq!(inn.acked(), 3);
        assert_eq!(inn.arrive(1, d), Arrival::Duplicate);
        assert_eq!(inn.arrive(4 + HOLD, d), Arrival::TooFar);
        assert_eq!(inn.arrive(3 + HOLD, d), Arrival::Held);
    }

    #[test]
    fn timeout_resends_the_oldest_and_backs_off() {
        let mut out = OutStream::default();
        send(&mut out, Duration::ZERO, 3);
        assert_eq!(out.room(), WINDOW - 3);
        assert_eq!(out.timer(), Some(INITIAL_RTO));
        assert!(out.on_timer(INITIAL_RTO - MS).is_none());
        assert_eq!(out.on_timer(INITIAL_RTO), Some(&b"1"[..]));
        assert_eq!(out.timer(), Some(INITIAL_RTO * 3), "doubled");
        // The retransmission fills the hole; the receiver acknowledges all three.
        assert!(out.ack(INITIAL_RTO + MS, 3).is_none());
        assert_eq!(out.timer(), None);
        assert_eq!(out.room(), WINDOW);
        assert_eq!(out.retransmissions, 1);
    }

    #[test]
    fn partial_acknowledgement_resends_the_next_hole_at_once() {
        let mut out = OutStream::default();
        send(&mut out, Duration::ZERO, 5); // 2 and 4 are lost
        assert_eq!(out.ack(MS, 1), None);
        assert_eq!(out.ack(MS, 1), None);
        assert_eq!(out.ack(MS, 1), None);
        assert_eq!(out.ack(MS, 1), Some(&b"2"[..]), "third duplicate");
        assert_eq!(out.ack(2 * MS, 3), Some(&b"4"[..]), "partial: 4 is next");
        assert_eq!(out.ack(3 * MS, 5), None);
        assert_eq!(out.timer(), None);
    }

    #[test]
    fn round_trips_set_the_timeout() {
        let mut out = OutStream::default();
        for i in 0..20u32 {
            let now = MS * 40 * i;
            send(&mut out, now, 1);
            out.ack(now + MS * 20, u64::from(i) + 1);
        }
        // SRTT 20 ms, RTTVAR decays towards 0: the timeout approaches 20 ms from above.
        send(&mut out, Duration::from_secs(1), 1);
        let rto = out.timer().unwrap() - Duration::from_secs(1);
        assert!(rto > MS * 20 && rto < MS * 30, "{rto:?}");
    }

    #[test]
    fn a_full_window_refuses_new_messages_but_still_takes_control_datagrams() {
        let mut out = OutStream::default();
        send(&mut out, Duration::ZERO, WINDOW);
        assert_eq!(out.room(), 0);
        send(&mut out, Duration::ZERO, 3); // proposals and agreements
        assert_eq!(out.room(), 0);
        assert!(out.ack(MS, WINDOW as u64 + 3).is_none());
        assert_eq!(out.room(), WINDOW);
    }

    #[test]
    fn nonsense_acknowledgements_change_nothing() {
        let mut out = OutStream::default();
        assert!(out.ack(MS, 7).is_none());
        send(&mut out, Duration::ZERO, 2);
        assert!(out.ack(MS, 9).is_none());
        assert_eq!(out.room(), WINDOW - 2);
    }
}
