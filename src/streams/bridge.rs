//! The queues between the stream thread (`super`) and the shards. Each connection belongs to one shard (its
//! id modulo the shard count), which gets every event of that connection in order through its
//! own bounded queue; what the shards send back goes through one bounded queue to the stream
//! thread, which hands each event to its connection.

use crate::engine::{Endpoint, Protocol};
use axum::extract::ws::Utf8Bytes;
use crossbeam_queue::ArrayQueue;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use tokio::sync::Notify;

/// Events in flight from the stream thread to one shard.
pub const TO_SHARD_DEPTH: usize = 16_384;
/// Events in flight from all shards to the stream thread.
pub const TO_STREAMS_DEPTH: usize = 65_536;

/// What happened on a connection, for its shard.
#[derive(Debug)]
pub enum StreamEvent {
    Opened(Endpoint, Protocol),
    Frame(Endpoint, Protocol, Box<[u8]>),
    Closed(Endpoint, Protocol),
}

/// The stream side's counters (the shards count what they do with the events).
#[derive(Debug, Default)]
pub struct StreamCounters {
    pub connections: AtomicU64,
    pub frames_in: AtomicU64,
    pub events_out: AtomicU64,
    /// Connections closed because their send queue overflowed.
    pub closed_slow: AtomicU64,
    /// Connections closed after the idle timeout.
    pub closed_idle: AtomicU64,
    /// Events for connections already gone.
    pub events_unrouted: AtomicU64,
    /// Events the shards could not queue for the stream thread (it fell behind).
    pub events_dropped: AtomicU64,
}

impl std::fmt::Display for StreamCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "connections={} frames_in={} events_out={} closed_slow={} closed_idle={} \
             events_unrouted={} events_dropped={}",
            self.connections.load(Relaxed),
            self.frames_in.load(Relaxed),
            self.events_out.load(Relaxed),
            self.closed_slow.load(Relaxed),
            self.closed_idle.load(Relaxed),
            self.events_unrouted.load(Relaxed),
            self.events_dropped.load(Relaxed),
        )
    }
}

pub struct Bridge {
    to_shards: Vec<ArrayQueue<StreamEvent>>,
    to_streams: ArrayQueue<(u64, Utf8Bytes)>,
    /// Wakes the stream thread's dispatcher when `to_streams` has something.
    pub(super) stream_wake: Notify,
    /// Wakes shard `i` when its queue has something (the runtime's eventfd protocol).
    wake_shard: Box<dyn Fn(usize) + Send + Sync>,
    pub counters: StreamCounters,
}

impl Bridge {
    pub fn new(shards: usize, wake_shard: Box<dyn Fn(usize) + Send + Sync>) -> Self {
        Self {
            to_shards: (0..shards)
                .map(|_| ArrayQueue::new(TO_SHARD_DEPTH))
                .collect(),
            to_streams: ArrayQueue::new(TO_STREAMS_DEPTH),
            stream_wake: Notify::new(),
            wake_shard,
            counters: StreamCounters::default(),
        }
    }

    pub fn home(&self, conn: u64) -> usize {
        (conn % self.to_shards.len() as u64) as usize
    }

    /// Queues an event for the connection's shard; gives it back when the queue is full (the
    /// connection waits and tries again: its events are never dropped).
    pub(super) fn to_shard(&self, conn: u64, event: StreamEvent) -> Result<(), StreamEvent> {
        let shard = self.home(conn);
        self.to_shards[shard].push(event)?;
        (self.wake_shard)(shard);
        Ok(())
    }

    /// The next event for shard `shard`.
    pub fn next_for(&self, shard: usize) -> Option<StreamEvent> {
        self.to_shards[shard].pop()
    }

    pub fn has_events_for(&self, shard: usize) -> bool {
        !self.to_shards[shard].is_empty()
    }

    /// An event from a shard for connection `conn`; dropped and counted when the stream thread
    /// has fallen too far behind.
    pub fn to_stream(&self, conn: u64, text: Utf8Bytes) {
        if self.to_streams.push((conn, text)).is_err() {
            self.counters.events_dropped.fetch_add(1, Relaxed);
        }
    }

    /// After a batch of [`Bridge::to_stream`]: wakes the stream thread.
    pub fn wake_streams(&self) {
        self.stream_wake.notify_one();
    }

    pub(super) fn next_for_stream(&self) -> Option<(u64, Utf8Bytes)> {
        self.to_streams.pop()
    }
}
