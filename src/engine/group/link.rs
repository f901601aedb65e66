//! This server's side of its conversation with one other server of the cluster: which
//! incarnation of it is in the cluster, the reliable streams both ways, and when to speak.
//!
//! An incarnation is believed only once the other side shows it has heard from this one: a
//! datagram from an unknown incarnation is answered with a bare datagram addressed to it, and
//! the incarnation is admitted when a datagram from it names this server's own incarnation. A
//! forger who cannot see the traffic between the servers cannot do that, so it can neither make
//! the cluster drop a live server nor slip frames into a stream.

use super::stream::{InStream, OutStream};
use crate::proto::group::{self, Header, Key, MAX_DATAGRAM};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Not heard from yet since this incarnation started, but expected: frames for it wait
    /// in its stream until it is admitted, or until the peer timeout gives up on it.
    Unknown,
    /// In the cluster, as this incarnation.
    Live(u64),
    /// Excluded: that incarnation is never believed again (0: never heard from in time).
    Excluded(u64),
}

pub struct Link {
    pub state: State,
    /// An incarnation heard from but not yet admitted: bare datagrams go to it.
    pub candidate: u64,
    /// When a datagram of the admitted incarnation last arrived.
    pub heard: Duration,
    /// When a datagram last went to it.
    pub sent: Duration,
    pub out: OutStream,
    pub inn: InStream,
    /// When an acknowledgement must go, if no datagram carries one before.
    pub ack_due: Option<Duration>,
    /// A bare datagram is wanted (a probe or a keep-alive).
    pub bare_due: bool,
    /// A bare datagram to the candidate incarnation is wanted (a handshake answer).
    pub answer_due: bool,
    /// Frames are pending that should not wait for others to ride with.
    pub urgent: bool,
    /// When the last answer to a stranger's datagram went (they are rate-limited).
    pub answered: Option<Duration>,
}

impl Link {
    pub fn new(now: Duration) -> Self {
        Self {
            state: State::Unknown,
            candidate: 0,
            heard: now,
            sent: Duration::ZERO,
            out: OutStream::default(),
            inn: InStream::default(),
            ack_due: None,
            bare_due: true,
            answer_due: false,
            urgent: false,
            answered: None,
        }
    }

    /// Starts over in `state`: both streams begin again at sequence 1.
    pub fn reset(&mut self, now: Duration, state: State) {
        *self = Self {
            state,
            candidate: self.candidate,
            heard: now,
            answered: self.answered,
            ..Self::new(now)
        };
    }

    /// Admitted: datagrams go to it.
    pub fn live(&self) -> bool {
        matches!(self.state, State::Live(_))
    }

    /// Admitted or expected: frames are queued for it and, in total order, its proposal is
    /// waited for.
    pub fn member(&self) -> bool {
        matches!(self.state, State::Live(_) | State::Unknown)
    }

    /// The incarnation datagrams are addressed to.
    fn to(&self) -> u64 {
        match self.state {
            State::Live(inc) => inc,
            State::Unknown | State::Excluded(_) => self.candidate,
        }
    }

    /// Queues a frame that may wait for the next datagram to this peer (at most a tick).
    pub fn push_lazy(&mut self, frame: &group::Frame<'_>) {
        if self.member() {
            self.out.push(frame);
        }
    }

    /// Whether frames wait that the next tick must send.
    pub fn has_pending(&self) -> bool {
        self.out.has_pending()
    }

    /// Whether an answer to an unconfirmed or excluded sender may go now: one per `gap`.
    pub fn may_answer(&mut self, now: Duration, gap: Duration) -> bool {
        if self.answered.is_some_and(|t| now < t + gap) {
            return false;
        }
        self.answered = Some(now);
        true
    }

    /// The header of this link's next datagram numbered `seq` (0: a bare one).
    pub fn header(&self, me: u64, seq: u64) -> Header {
        Header {
            excluded: false,
            from: me,
            to: self.to(),
            seq,
            ack: self.inn.acked(),
        }
    }

    /// Everything that should go now: new datagrams of the stream (for a live peer), else a
    /// bare one when an acknowledgement or a bare datagram is due. Returns how many went.
    pub fn transmit(
        &mut self,
        now: Duration,
        me: u64,
        key: Option<&Key>,
        mut send: impl FnMut(&[u8]),
    ) -> usize {
        let mut buf = [0u8; MAX_DATAGRAM];
        let mut sent = 0;
        let ack_due = self.ack_due.is_some_and(|t| t <= now);
        if self.answer_due {
            self.answer_due = false;
            let header = Header {
                excluded: false,
                from: me,
                to: self.candidate,
                seq: 0,
                ack: 0,
            };
            if let Some(n) = encode(&header, key, &[], &mut buf) {
                send(&buf[..n]);
            }
        }
        if self.live() && (self.urgent || ack_due || self.bare_due) {
            self.urgent = false;
            let header = self.header(me, 0);
            sent = self.out.transmit(now, |seq, frames| {
                if let Some(n) = encode(&Header { seq, ..header }, key, frames, &mut buf) {
                    send(&buf[..n]);
                }
            });
        }
        if sent == 0 && (ack_due || self.bare_due) {
            if let Some(n) = encode(&self.header(me, 0), key, &[], &mut buf) {
                send(&buf[..n]);
                sent = 1;
            }
        }
        if sent > 0 {
            self.sent = now;
            self.ack_due = None;
            self.bare_due = false;
        }
        sent
    }

    /// "You were excluded", to the excluded incarnation.
    pub fn excluded_notice(&self, me: u64, key: Option<&Key>, buf: &mut [u8]) -> Option<usize> {
        let State::Excluded(inc) = self.state else {
            return None;
        };
        let header = Header {
            excluded: true,
            from: me,
            to: inc,
            seq: 0,
            ack: 0,
        };
        encode(&header, key, &[], buf)
    }
}

/// Encodes a whole datagram into `buf`; its length.
pub fn encode(header: &Header, key: Option<&Key>, frames: &[u8], buf: &mut [u8]) -> Option<usize> {
    let n = group::encode_header(buf, header).ok()?;
    group::finish(buf, n, frames, key).ok()
}
