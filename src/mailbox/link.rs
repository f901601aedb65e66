//! The queues between the shards and the mailbox's thread. Shards queue their requests
//! ([`ToMailbox`]) on one bounded queue and wake the mailbox; the mailbox answers each session
//! through its home shard's bounded queue ([`FromMailbox`]) and wakes that shard. Neither side
//! ever waits on the other: a full queue is the sender's to handle (a shard refuses a direct
//! message as busy and holds membership back; the mailbox tries again a little later).

use crate::engine::direct::{DirectOutcome, FromMailbox, ToMailbox};
use crossbeam_queue::ArrayQueue;
use std::collections::VecDeque;
use tokio::sync::Notify;

/// Requests in flight from all shards to the mailbox.
pub const TO_MAILBOX_DEPTH: usize = 65_536;
/// Events in flight from the mailbox to one shard.
pub const TO_SHARD_DEPTH: usize = 16_384;

pub struct Link {
    to_mailbox: ArrayQueue<ToMailbox>,
    /// Wakes the mailbox's thread when `to_mailbox` has something.
    pub(super) mailbox_wake: Notify,
    to_shards: Vec<ArrayQueue<FromMailbox>>,
    /// Wakes shard `i` when its queue has something (the runtime's eventfd protocol).
    wake_shard: Box<dyn Fn(usize) + Send + Sync>,
}

impl Link {
    pub fn new(shards: usize, wake_shard: Box<dyn Fn(usize) + Send + Sync>) -> Self {
        Self {
            to_mailbox: ArrayQueue::new(TO_MAILBOX_DEPTH),
            mailbox_wake: Notify::new(),
            to_shards: (0..shards)
                .map(|_| ArrayQueue::new(TO_SHARD_DEPTH))
                .collect(),
            wake_shard,
        }
    }

    /// From a shard; gives the request back when the queue is full.
    pub fn to_mailbox(&self, request: ToMailbox) -> Result<(), ToMailbox> {
        self.to_mailbox.push(request)
    }

    /// After a batch of [`Link::to_mailbox`]: wakes the mailbox.
    pub fn wake_mailbox(&self) {
        self.mailbox_wake.notify_one();
    }

    pub(super) fn next_for_mailbox(&self) -> Option<ToMailbox> {
        self.to_mailbox.pop()
    }

    /// An event for a session, queued for its home shard; given back when that queue is full.
    pub(super) fn to_shard(&self, event: FromMailbox) -> Result<(), FromMailbox> {
        match event.session() {
            Some(session) => self.to_shard_at(usize::from(session.home), event),
            None => Ok(()), // for every shard: see `to_shard_at`
        }
    }

    /// An event for shard `shard`; given back when its queue is full.
    pub(super) fn to_shard_at(&self, shard: usize, event: FromMailbox) -> Result<(), FromMailbox> {
        let Some(queue) = self.to_shards.get(shard) else {
            return Ok(()); // no such shard: no such session either
        };
        queue.push(event)?;
        (self.wake_shard)(shard);
        Ok(())
    }

    pub(super) fn shards(&self) -> usize {
        self.to_shards.len()
    }

    /// The next event for shard `shard`.
    pub fn next_for(&self, shard: usize) -> Option<FromMailbox> {
        self.to_shards[shard].pop()
    }

    pub fn has_events_for(&self, shard: usize) -> bool {
        !self.to_shards[shard].is_empty()
    }
}

/// Membership a shard holds back for room in the mailbox's queue beyond which it stops reading
/// its socket until the mailbox catches up.
pub const HELD_LIMIT: usize = 4096;

/// A shard's end of the link: what did not fit in the mailbox's queue.
#[derive(Default)]
pub struct Port {
    /// Membership waiting for room, in order: it is never dropped.
    held: VecDeque<ToMailbox>,
    /// Answers the shard gives itself: direct messages refused because the queue was full.
    refused: Vec<FromMailbox>,
}

impl Port {
    /// Queues one step's requests, after what is held; true when any went (the mailbox is then
    /// to be woken).
    pub fn send(&mut self, link: &Link, requests: impl Iterator<Item = ToMailbox>) -> bool {
        let mut went = self.retry(link);
        for request in requests {
            if !self.held.is_empty() && request.is_control() {
                self.held.push_back(request); // behind the membership held before it
                continue;
            }
            match link.to_mailbox(request) {
                Ok(()) => went = true,
                Err(request) => self.hold_or_refuse(request),
            }
        }
        went
    }

    /// Queues what is held, in order, as far as there is room; true when any went.
    pub fn retry(&mut self, link: &Link) -> bool {
        let mut went = false;
        while let Some(request) = self.held.pop_front() {
            if let Err(request) = link.to_mailbox(request) {
                self.held.push_front(request);
                break;
            }
            went = true;
        }
        went
    }

    fn hold_or_refuse(&mut self, request: ToMailbox) {
        match request {
            ToMailbox::Send { session, to, .. } => self.refused.push(FromMailbox::Sent {
                session,
                to,
                outcome: DirectOutcome::Busy,
            }),
            control => self.held.push_back(control),
        }
    }

    /// Answers for direct messages the mailbox's queue had no room for.
    pub fn take_refused(&mut self) -> std::vec::Drain<'_, FromMailbox> {
        self.refused.drain(..)
    }

    pub fn has_refused(&self) -> bool {
        !self.refused.is_empty()
    }

    /// Membership is waiting for room.
    pub fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// So much membership is waiting that the shard should take nothing new.
    pub fn backlogged(&self) -> bool {
        self.held.len() >= HELD_LIMIT
    }
}
