//! What a server keeps so that a crashed server's last messages reach every survivor or none.
//!
//! Every server numbers what it sends to all others (`mseq`), so the frames of one origin are
//! the same sequence at every receiver, and each receiver has handled a prefix of it. Receivers
//! tell each other how far they got (`H` frames, a few times a second), and keep each origin's
//! frames until every other live server has said it has them. When an origin is excluded, each
//! survivor passes on to each other survivor the frames it has beyond that one's position:
//! afterwards every survivor has handled the longest prefix any of them had.

use crate::proto::group::{push_frame, Frame, Multicast, MAX_FRAMES, MAX_SERVERS};
use arrayvec::ArrayVec;
use std::collections::VecDeque;

/// Frame bytes kept per origin at most (reserved on its first frame, so that keeping frames
/// allocates nothing after); beyond it the oldest go (counted), and a crash of that origin may
/// then leave a survivor without a message others delivered.
pub const RETAIN_BYTES: usize = 256 * 1024;
/// Frames kept per origin at most, likewise.
pub const RETAIN_FRAMES: usize = 8192;

#[derive(Default)]
struct Retained {
    /// (mseq, length) of each frame in `bytes`, oldest first.
    index: VecDeque<(u64, usize)>,
    bytes: VecDeque<u8>,
}

pub struct Relay {
    /// Per origin: the mseq of the last of its frames handled here (0: none yet).
    have: Vec<u64>,
    /// Per server, per origin: how far that server said it got.
    peers_have: Vec<Vec<u64>>,
    retained: Vec<Retained>,
    /// `have` moved since it was last announced.
    changed: bool,
    scratch: Vec<u8>,
}

impl Relay {
    pub fn new(servers: usize) -> Self {
        assert!(servers <= MAX_SERVERS);
        Self {
            have: vec![0; servers],
            peers_have: vec![vec![0; servers]; servers],
            retained: (0..servers).map(|_| Retained::default()).collect(),
            changed: false,
            scratch: Vec::with_capacity(MAX_FRAMES),
        }
    }

    /// Whether frame `mseq` of `origin` is the next to handle (the first one heard sets where
    /// the sequence starts: a server admitted late starts in the middle).
    pub fn is_next(&self, origin: u16, mseq: u64) -> bool {
        let have = self.have[usize::from(origin)];
        mseq != 0 && (have == 0 || mseq == have + 1)
    }

    /// Frame `mseq` of `origin` was handled here: kept until every other server has it.
    /// Returns how many older frames of that origin went to make room.
    pub fn handled(&mut self, origin: u16, mseq: u64, m: &Multicast<'_>) -> u64 {
        debug_assert!(self.is_next(origin, mseq));
        self.have[usize::from(origin)] = mseq;
        self.changed = true;
        self.scratch.clear();
        if !push_frame(
            &mut self.scratch,
            MAX_FRAMES,
            &Frame::Multicast { mseq, m: *m },
        ) {
            return 0;
        }
        let r = &mut self.retained[usize::from(origin)];
        if r.bytes.capacity() == 0 {
            r.bytes.reserve_exact(RETAIN_BYTES);
            r.index.reserve_exact(RETAIN_FRAMES);
        }
        let mut dropped = 0;
        while r.bytes.len() + self.scratch.len() > RETAIN_BYTES || r.index.len() >= RETAIN_FRAMES {
            let Some((_, len)) = r.index.pop_front() else {
                break;
            };
            r.bytes.drain(..len);
            dropped += 1;
        }
        r.index.push_back((mseq, self.scratch.len()));
        r.bytes.extend(&self.scratch);
        dropped
    }

    /// This server's own frame `mseq` went out.
    pub fn sent(&mut self, me: u16, mseq: u64) {
        self.have[usize::from(me)] = mseq;
    }

    /// A new incarnation of `origin` starts its sequence afresh.
    pub fn reset(&mut self, origin: u16) {
        let o = usize::from(origin);
        self.have[o] = 0;
        for p in &mut self.peers_have {
            p[o] = 0;
        }
        self.retained[o] = Retained::default();
    }

    /// An `H` frame from `peer`; then drops what every other live server (`live`, a bit each,
    /// not this one) has.
    pub fn heard(&mut self, peer: u16, first: u16, positions: &[u64], live: u64) {
        let theirs = &mut self.peers_have[usize::from(peer)];
        for (i, &p) in positions.iter().enumerate() {
            if let Some(slot) = theirs.get_mut(usize::from(first) + i) {
                *slot = (*slot).max(p);
            }
        }
        for origin in 0..self.retained.len() {
            self.trim(origin as u16, live);
        }
    }

    fn trim(&mut self, origin: u16, live: u64) {
        let o = usize::from(origin);
        let everyone = (0..self.peers_have.len())
            .filter(|&p| p != o && live & (1 << p) != 0)
            .map(|p| self.peers_have[p][o])
            .min()
            .unwrap_or(u64::MAX);
        let r = &mut self.retained[o];
        while r.index.front().is_some_and(|&(mseq, _)| mseq <= everyone) {
            if let Some((_, len)) = r.index.pop_front() {
                r.bytes.drain(..len);
            }
        }
    }

    /// The `H` frames to announce where this server is, once per change (in parts that fit a
    /// datagram whatever the numbers).
    pub fn announcement(&mut self) -> Vec<Frame<'static>> {
        if !std::mem::take(&mut self.changed) {
            return Vec::new();
        }
        self.have
            .chunks(32)
            .enumerate()
            .map(|(i, part)| Frame::Have {
                first: (i * 32) as u16,
                positions: part.iter().copied().collect::<ArrayVec<u64, MAX_SERVERS>>(),
            })
            .collect()
    }

    /// `origin`'s kept frames that `peer` has not said it has, for `each` (encoded frames).
    pub fn missing(&self, origin: u16, peer: u16, mut each: impl FnMut(&[u8])) {
        let after = self.peers_have[usize::from(peer)][usize::from(origin)];
        let r = &self.retained[usize::from(origin)];
        let mut at = 0;
        let mut frame = Vec::with_capacity(MAX_FRAMES);
        for &(mseq, len) in &r.index {
            if mseq > after {
                frame.clear();
                frame.extend(r.bytes.range(at..at + len));
                each(&frame);
            }
            at += len;
        }
    }

    /// Frames kept for `origin`.
    #[cfg(test)]
    pub fn kept(&self, origin: u16) -> usize {
        self.retained[usize::from(origin)].index.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::group::frames_of;

    fn msg(counter: u64) -> Multicast<'static> {
        Multicast::Msg {
            room: b"1",
            counter,
            more: false,
            user: b"u",
            text: b"t",
        }
    }

    #[test]
    fn frames_are_kept_until_every_live_server_has_them() {
        let mut r = Relay::new(4);
        for mseq in 5..=9 {
            assert!(r.is_next(2, mseq));
            r.handled(2, mseq, &msg(mseq));
        }
        assert!(!r.is_next(2, 9) && !r.is_next(2, 11));
        let live = 0b1110; // this server is 0
        r.heard(1, 0, &[0, 0, 7, 0], live);
        assert_eq!(r.kept(2), 5, "server 3 has said nothing");
        r.heard(3, 2, &[8], live);
        assert_eq!(r.kept(2), 2, "everyone has up to 7");
        let mut missing = Vec::new();
        r.missing(2, 1, |f| missing.push(f.to_vec()));
        assert_eq!(missing.len(), 2);
        let frames: Vec<_> = frames_of(&missing[0]).map(Result::unwrap).collect();
        assert_eq!(frames, [Frame::Multicast { mseq: 8, m: msg(8) }]);
        r.heard(1, 0, &[0, 0, 9, 0], 0b0010);
        assert_eq!(r.kept(2), 0, "server 3 left: 1 has everything");
    }

    #[test]
    fn retention_is_bounded_per_origin() {
        let mut r = Relay::new(2);
        let text = [b'x'; 500];
        let mut dropped = 0;
        for mseq in 1..=2000 {
            let m = Multicast::Msg {
                room: b"1",
                counter: mseq,
                more: false,
                user: b"u",
                text: &text,
            };
            dropped += r.handled(1, mseq, &m);
        }
        assert!(r.retained[1].bytes.len() <= RETAIN_BYTES);
        assert_eq!(dropped, 2000 - r.kept(1) as u64);
        assert!(dropped > 0);
        assert_eq!(r.announcement().len(), 1);
        assert!(r.announcement().is_empty(), "once per change");
    }
}
