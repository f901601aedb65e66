//! A reliable, in-order stream of datagrams from one server to another, carrying frames for
//! every room: the assignment assumes no loss between servers, we do not.
//!
//! The sender packs the frames queued during one engine step into as few datagrams as fit
//! (under load, several messages' frames share one datagram), keeps each until a cumulative
//! acknowledgement covers it, and retransmits on a timeout computed from measured round trips
//! (RFC 6298: SRTT + 4 RTTVAR plus the receiver's acknowledgement delay, with a floor well
//! above a proxy's jitter, backed off on each expiry, Karn's rule); a partial acknowledgement
//! after a retransmission resends the next hole at once (NewReno). Acknowledgements ride on the
//! datagrams going the other way; only when none goes within [`ACK_DELAY`] is one sent alone.
//! The receiver holds what arrives early and hands datagrams over in sequence. Both sides are
//! bounded: the sender by [`WINDOW`] (new messages are refused beyond it), the receiver by
//! [`HOLD`] datagrams ahead of the next expected one.

use crate::proto::group::{push_frame, Frame, MAX_FRAMES};
use std::collections::{btree_map, BTreeMap, VecDeque};
use std::time::Duration;

/// Unacknowledged datagrams beyond which a sender takes no new message. Proposals, agreements
/// and membership frames are always taken (refusing one would stall a room for good).
pub const WINDOW: usize = 256;
/// How far ahead of the next expected datagram a receiver holds: what one peer can make a
/// server keep is at most this many datagrams of at most 999 bytes.
pub const HOLD: u64 = 2 * WINDOW as u64;
/// Before any round trip was measured (generous: a proxy may delay by 100 ms each way).
const INITIAL_RTO: Duration = Duration::from_millis(300);
/// A timeout never shorter than this: a proxy's delays vary, and a retransmission of a
/// datagram that was only late costs more than waiting a little longer for a lost one.
const MIN_RTO: Duration = Duration::from_millis(40);
const MAX_RTO: Duration = Duration::from_secs(1);
/// How long a receiver waits for a datagram of its own to carry an acknowledgement.
pub const ACK_DELAY: Duration = Duration::from_millis(10);

struct Sent {
    seq: u64,
    frames: Vec<u8>,
    sent_at: Duration,
    transmitted: bool,
    retransmitted: bool,
}

pub struct OutStream {
    next_seq: u64,
    unacked: VecDeque<Sent>,
    /// Frames queued since the last datagram was sealed.
    pending: Vec<u8>,
    /// Buffers of acknowledged datagrams, reused for new ones: after warm-up, keeping a
    /// datagram for retransmission allocates nothing.
    spare: Vec<Vec<u8>>,
    srtt: Option<Duration>,
    rttvar: Duration,
    rto: Duration,
    /// When the oldest unacknowledged datagram is resent.
    timer: Option<Duration>,
    /// After a retransmission: the highest sequence number sent then (NewReno's recovery point).
    recover: u64,
    pub retransmissions: u64,
}

impl Default for OutStream {
    fn default() -> Self {
        Self {
            next_seq: 1,
            unacked: VecDeque::new(),
            pending: Vec::with_capacity(MAX_FRAMES),
            spare: Vec::new(),
            srtt: None,
            rttvar: Duration::ZERO,
            rto: INITIAL_RTO,
            timer: None,
            recover: 0,
            retransmissions: 0,
        }
    }
}

impl OutStream {
    /// Datagrams that can still be sent before the window is full.
    pub fn room(&self) -> usize {
        WINDOW.saturating_sub(self.unacked.len())
    }

    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Queues a frame; a datagram that cannot take it is sealed first. False for a frame too
    /// big for any datagram (the callers size fragments so that none is).
    pub fn push(&mut self, frame: &Frame<'_>) -> bool {
        if push_frame(&mut self.pending, MAX_FRAMES, frame) {
            return true;
        }
        self.seal();
        push_frame(&mut self.pending, MAX_FRAMES, frame)
    }

    /// Numbers the pending frames as the next datagram, to be transmitted by [`Self::transmit`].
    fn seal(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let mut frames = self.spare.pop().unwrap_or_default();
        frames.clear();
        std::mem::swap(&mut frames, &mut self.pending);
        debug_assert!(
            self.unacked
                .back()
                .is_none_or(|s| s.seq + 1 == self.next_seq),
            "sequence numbers without a gap"
        );
        self.unacked.push_back(Sent {
            seq: self.next_seq,
            frames,
            sent_at: Duration::ZERO,
            transmitted: false,
            retransmitted: false,
        });
        self.next_seq += 1;
    }

    /// Seals what is pending and hands every datagram not yet sent to `send` (seq, frames).
    /// Returns how many.
    pub fn transmit(&mut self, now: Duration, mut send: impl FnMut(u64, &[u8])) -> usize {
        self.seal();
        let mut n = 0;
        for s in self.unacked.iter_mut().rev() {
            if s.transmitted {
                break;
            }
            n += 1;
        }
        let from = self.unacked.len() - n;
        debug_assert!(
            self.unacked.range(..from).all(|s| s.transmitted),
            "datagrams go out in sequence"
        );
        for s in self.unacked.range_mut(from..) {
            s.transmitted = true;
            s.sent_at = now;
            send(s.seq, &s.frames);
        }
        if n > 0 {
            self.timer.get_or_insert(now + self.rto);
        }
        debug_assert!(
            self.unacked.is_empty() || self.timer.is_some(),
            "unacknowledged, no timer"
        );
        n
    }

    /// A cumulative acknowledgement of everything up to `seq`. Returns a datagram to resend at
    /// once (seq, frames) when it acknowledges only part of what a retransmission covered.
    pub fn ack(&mut self, now: Duration, seq: u64) -> Option<(u64, &[u8])> {
        let oldest = self.unacked.front()?;
        if seq < oldest.seq || seq >= self.next_seq {
            return None; // old news, or acknowledges what was never sent: confused or hostile
        }
        debug_assert!(oldest.seq <= seq && seq < self.next_seq);
        while self.unacked.front().is_some_and(|s| s.seq <= seq) {
            if let Some(sent) = self.unacked.pop_front() {
                if !sent.retransmitted && sent.seq == seq && sent.transmitted {
                    self.sample(now.saturating_sub(sent.sent_at));
                }
                self.spare.push(sent.frames);
            }
        }
        debug_assert!(
            self.unacked.front().is_none_or(|s| s.seq > seq),
            "acknowledged, still kept"
        );
        if !self.unacked.front().is_some_and(|s| s.transmitted) {
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
    pub fn on_timer(&mut self, now: Duration) -> Option<(u64, &[u8])> {
        if self.timer.is_none_or(|t| now < t) {
            return None;
        }
        self.rto = (self.rto * 2).min(MAX_RTO);
        self.resend_oldest(now)
    }

    fn resend_oldest(&mut self, now: Duration) -> Option<(u64, &[u8])> {
        self.recover = self.next_seq - 1;
        self.timer = Some(now + self.rto);
        let oldest = self.unacked.front_mut().filter(|s| s.transmitted)?;
        oldest.retransmitted = true;
        self.retransmissions += 1;
        Some((oldest.seq, &oldest.frames))
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
        self.rto = (srtt + self.rttvar * 4 + ACK_DELAY).clamp(MIN_RTO, MAX_RTO);
        debug_assert!((MIN_RTO..=MAX_RTO).contains(&self.rto));
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
        debug_assert!(seq > self.next && seq - self.next < HOLD);
        let arrival = match self.held.entry(seq) {
            btree_map::Entry::Occupied(_) => Arrival::Duplicate,
            btree_map::Entry::Vacant(e) => {
                e.insert(datagram.into());
                Arrival::Held
            }
        };
        debug_assert!(self.held.len() <= HOLD as usize, "held beyond the window");
        arrival
    }

    /// The next held datagram, once everything before it has been handled.
    pub fn pop_ready(&mut self) -> Option<Box<[u8]>> {
        let datagram = self.held.remove(&self.next)?;
        self.next += 1;
        debug_assert!(
            self.held.keys().next().is_none_or(|&s| s >= self.next),
            "held a handled one"
        );
        Some(datagram)
    }

    /// The cumulative acknowledgement to send.
    pub fn acked(&self) -> u64 {
        self.next - 1
    }

    pub fn held(&self) -> usize {
        self.held.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn propose(counter: u64) -> Frame<'static> {
        Frame::Propose {
            room: b"1",
            counter,
            priority: 1,
        }
    }

    /// Queues one frame per datagram and transmits at `now`.
    fn send(out: &mut OutStream, now: Duration, n: usize) {
        for i in 0..n {
            out.push(&propose(i as u64));
            out.transmit(now, |_, _| {});
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
        assert_eq!(inn.held(), 1);
    }

    #[test]
    fn frames_of_one_step_share_datagrams() {
        let mut out = OutStream::default();
        for i in 0..100 {
            assert!(out.push(&propose(i)));
        }
        let mut sent = Vec::new();
        let n = out.transmit(MS, |seq, frames| sent.push((seq, frames.len())));
        assert!((2..10).contains(&n), "{n} datagrams for 100 proposals");
        assert_eq!(
            sent.iter().map(|s| s.0).collect::<Vec<_>>(),
            (1..=n as u64).collect::<Vec<_>>()
        );
        assert!(sent.iter().all(|s| s.1 <= MAX_FRAMES));
        assert_eq!(out.transmit(MS, |_, _| panic!("sent twice")), 0);
    }

    #[test]
    fn timeout_resends_the_oldest_and_backs_off() {
        let mut out = OutStream::default();
        send(&mut out, Duration::ZERO, 3);
        assert_eq!(out.room(), WINDOW - 3);
        assert_eq!(out.timer(), Some(INITIAL_RTO));
        assert!(out.on_timer(INITIAL_RTO - MS).is_none());
        assert_eq!(out.on_timer(INITIAL_RTO).map(|r| r.0), Some(1));
        assert_eq!(out.timer(), Some(INITIAL_RTO * 3), "doubled");
        // The retransmission fills the hole; the receiver acknowledges all three.
        assert!(out.ack(INITIAL_RTO + MS, 3).is_none());
        assert_eq!(out.timer(), None);
        assert_eq!(out.room(), WINDOW);
        assert_eq!(out.retransmissions, 1);
    }

    #[test]
    fn partial_acknowledgement_after_a_timeout_resends_the_next_hole_at_once() {
        let mut out = OutStream::default();
        send(&mut out, Duration::ZERO, 5); // 1 and 3 are lost
        assert_eq!(out.on_timer(INITIAL_RTO).map(|r| r.0), Some(1));
        assert_eq!(
            out.ack(INITIAL_RTO + MS, 2).map(|r| r.0),
            Some(3),
            "partial"
        );
        assert_eq!(out.ack(INITIAL_RTO + 2 * MS, 5), None);
        assert_eq!(out.timer(), None);
    }

    #[test]
    fn round_trips_set_the_timeout_with_a_floor_above_jitter() {
        let mut out = OutStream::default();
        for i in 0..20u32 {
            let now = MS * 100 * i;
            send(&mut out, now, 1);
            out.ack(now + MS * 60, u64::from(i) + 1);
        }
        // SRTT 60 ms, RTTVAR decays towards 0: the timeout approaches 65 ms from above.
        send(&mut out, Duration::from_secs(3), 1);
        let rto = out.timer().unwrap() - Duration::from_secs(3);
        assert!(rto > MS * 65 && rto < MS * 80, "{rto:?}");
        let mut fast = OutStream::default();
        for i in 0..20u32 {
            let now = MS * 100 * i;
            send(&mut fast, now, 1);
            fast.ack(now + MS, u64::from(i) + 1);
        }
        send(&mut fast, Duration::from_secs(3), 1);
        assert_eq!(fast.timer().unwrap() - Duration::from_secs(3), MIN_RTO);
    }

    #[test]
    fn a_full_window_refuses_new_messages_but_still_takes_control_frames() {
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
