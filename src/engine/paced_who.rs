//! WHO answers that did not fit their destination's reply budget: the channel's owner shard
//! keeps a sorted copy of the names still to send and goes on as the budget returns, so a long
//! answer is paced rather than cut. Bounded in entries and in bytes of names per shard; what
//! does not fit is cut and counted.

use crate::proto::Name;
use std::collections::VecDeque;
use std::net::SocketAddr;

/// At most this many answers wait per shard (a new WHO looks through them for its client).
pub(super) const MAX_WAITING: usize = 256;
/// At most this many bytes of names wait per shard.
const MAX_BYTES: usize = 4 << 20;

pub(super) struct PacedWho {
    pub(super) client: SocketAddr,
    pub(super) channel: Name,
    /// The names still to send, in order.
    pub(super) names: Box<[Name]>,
}

#[derive(Default)]
pub(super) struct WhoQueue {
    waiting: VecDeque<PacedWho>,
    bytes: usize,
}

impl WhoQueue {
    pub(super) fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    pub(super) fn len(&self) -> usize {
        self.waiting.len()
    }

    /// Whether an answer to `client` is waiting already (a second WHO meanwhile adds nothing).
    pub(super) fn waits_for(&self, client: &SocketAddr) -> bool {
        self.waiting.iter().any(|p| p.client == *client)
    }

    /// Keeps the rest of an answer; false when the queue is full.
    pub(super) fn push(&mut self, client: SocketAddr, channel: Name, names: &[Name]) -> bool {
        let bytes = std::mem::size_of_val(names);
        if self.waiting.len() >= MAX_WAITING || self.bytes + bytes > MAX_BYTES {
            return false;
        }
        self.bytes += bytes;
        let names = names.into();
        self.waiting.push_back(PacedWho {
            client,
            channel,
            names,
        });
        true
    }

    pub(super) fn pop(&mut self) -> Option<PacedWho> {
        let p = self.waiting.pop_front()?;
        self.bytes -= std::mem::size_of_val(&*p.names);
        Some(p)
    }
}
