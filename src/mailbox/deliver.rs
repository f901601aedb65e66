//! Getting messages to users: one deliverer per online user pushes its stored messages in the
//! order they were sent, and removes each once it has reached the user somewhere (its TCP listen
//! port, or a session of another front-end, whose home shard confirms the hand-over); the
//! sender then hears of it, or is owed the acknowledgement until it connects.

use super::presence::{Arrived, Targets};
use super::{proto, Shared};
use crate::engine::direct::FromMailbox;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

/// How long a push keeps trying to reach a client's listen port (the original client starts
/// listening only after it has read its CONNECT reply).
const PUSH_PATIENCE: Duration = Duration::from_secs(3);
/// How long an event for a session may take to reach its shard's queue, and its hand-over to
/// be confirmed.
const HAND_PATIENCE: Duration = Duration::from_secs(2);
/// Stored messages a deliverer reads from the store at a time.
const DELIVERY_BATCH: usize = 64;
/// How long a deliverer waits before trying again when no target took a message.
const RETRY: Duration = Duration::from_millis(20);

/// What goes to a user.
pub(super) enum Push<'a> {
    Message {
        from: &'a str,
        id: Option<u32>,
        text: &'a str,
    },
    /// The message `id` the user sent was delivered.
    Ack(u32),
}

/// Starts the deliverer of a user who just came online.
pub(super) fn spawn(shared: &Arc<Shared>, arrived: Arrived) {
    let shared = shared.clone();
    shared.counters.deliverers.fetch_add(1, Relaxed);
    tokio::spawn(async move {
        deliver(&arrived, &shared).await;
        shared.counters.deliverers.fetch_sub(1, Relaxed);
    });
}

/// Pushes the user's owed acknowledgements and stored messages, in order, while it stays
/// online (this time: `arrived.generation`), waiting for more when there are none.
async fn deliver(arrived: &Arrived, shared: &Shared) {
    let user = &arrived.user;
    let targets = || shared.presence().targets(user, arrived.generation);
    let lock = shared.delivery_lock(user);
    loop {
        let woken = arrived.wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        // A deliverer of a later time online never sees what this one has just pushed.
        let turn = lock.lock().await;
        if targets().is_none() {
            return;
        }
        let (acks, pending) = match (
            shared.store.owed_acks(user, DELIVERY_BATCH),
            shared.store.pending(user, DELIVERY_BATCH),
        ) {
            (Ok(a), Ok(p)) => (a, p),
            _ => return,
        };
        if acks.is_empty() && pending.is_empty() {
            drop(turn);
            woken.await;
            continue;
        }
        if !deliver_batch(user, arrived.generation, &acks, &pending, shared).await {
            drop(turn);
            if targets().is_none() {
                return;
            }
            sleep(RETRY).await; // a queue was full or a session just ended: try again
        }
    }
}

/// One batch; false when a push reached no one (what is left stays stored).
async fn deliver_batch(
    user: &str,
    generation: u64,
    acks: &[(u64, u32)],
    pending: &[super::store::Stored],
    shared: &Shared,
) -> bool {
    for &(seq, id) in acks {
        let Some(targets) = shared.presence().targets(user, generation) else {
            return false;
        };
        if !reach(shared, user, &targets, &Push::Ack(id)).await {
            return false;
        }
        if shared.store.acked(user.to_string(), seq).await.is_none() {
            return false;
        }
    }
    for message in pending {
        let Some(targets) = shared.presence().targets(user, generation) else {
            return false;
        };
        let push = Push::Message {
            from: &message.sender,
            id: Some(message.id),
            text: &message.text,
        };
        if !reach(shared, user, &targets, &push).await {
            return false;
        }
        // The sender hears now if it is online and a push reaches it; else it is owed.
        let sender = shared
            .presence()
            .get(&message.sender)
            .map(|o| o.targets.clone());
        let told = match sender {
            Some(t) => reach(shared, &message.sender, &t, &Push::Ack(message.id)).await,
            None => false,
        };
        if shared
            .store
            .delivered(user.to_string(), message, !told)
            .await
            .is_none()
        {
            return false;
        }
        if !told {
            // The sender may have come online meanwhile: its deliverer finds the owed one.
            shared.presence().wake(&message.sender);
        }
    }
    true
}

/// Pushes to every place `user` is reached; true when at least one took it. A failed TCP push
/// marks that `CONNECT` disconnected.
pub(super) async fn reach(shared: &Shared, user: &str, targets: &Targets, push: &Push<'_>) -> bool {
    let mut reached = false;
    for &session in &targets.sessions {
        let event = |token| match *push {
            Push::Message { from, id, text } => FromMailbox::Message {
                session,
                from: from.to_string(),
                id,
                text: text.to_string(),
                token,
            },
            Push::Ack(id) => FromMailbox::Delivered { session, id, token },
        };
        reached |= hand(shared, event).await;
    }
    if let Some(tcp) = targets.tcp {
        let bytes = match *push {
            Push::Message { from, id, text } => proto::message_push(from, id.unwrap_or(0), text),
            Push::Ack(id) => proto::ack_push(id),
        };
        if push_counted(shared, tcp.addr, &bytes).await {
            reached = true;
        } else {
            shared.presence().disconnect(user, Some(tcp.generation));
        }
    }
    reached
}

/// An event for a session, queued for its shard; true once the shard confirms that the
/// session was there to take it.
async fn hand(shared: &Shared, event: impl FnOnce(u64) -> FromMailbox) -> bool {
    let token = shared.tokens.fetch_add(1, Relaxed);
    let (done, handed) = tokio::sync::oneshot::channel();
    shared.handoffs().insert(token, done);
    let delivered = match to_shard(shared, event(token)).await {
        true => timeout(HAND_PATIENCE, handed)
            .await
            .is_ok_and(|d| d.unwrap_or(false)),
        false => false,
    };
    shared.handoffs().remove(&token);
    if !delivered {
        shared.counters.missed_sessions.fetch_add(1, Relaxed);
    }
    delivered
}

/// Queues an event for a session's shard, waiting a little while its queue is full; false
/// when it stays full.
pub(super) async fn to_shard(shared: &Shared, mut event: FromMailbox) -> bool {
    let deadline = Instant::now() + HAND_PATIENCE;
    loop {
        match shared.link.to_shard(event) {
            Ok(()) => return true,
            Err(back) if Instant::now() < deadline => {
                event = back;
                sleep(Duration::from_millis(1)).await;
            }
            Err(_) => return false,
        }
    }
}

/// An event for every shard, queued on each however long that takes: what it says (a new
/// account) must never be lost.
pub(super) async fn to_every_shard(shared: &Shared, event: &FromMailbox) {
    for shard in 0..shared.link.shards() {
        while shared.link.to_shard_at(shard, event.clone()).is_err() {
            sleep(Duration::from_millis(1)).await;
        }
    }
}

/// A push, counted: true when it went.
async fn push_counted(shared: &Shared, addr: SocketAddr, bytes: &[u8]) -> bool {
    // A push holds a descriptor: at most the mailbox's share of them at once, the rest wait.
    let Ok(_permit) = shared.pushes.acquire().await else {
        return false;
    };
    let ok = push_to(addr, bytes).await.is_ok();
    let counter = match ok {
        true => &shared.counters.pushes,
        false => &shared.counters.failed_pushes,
    };
    counter.fetch_add(1, Relaxed);
    ok
}

/// One push on a new connection, retried while the listener is not up yet.
async fn push_to(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<()> {
    let deadline = Instant::now() + PUSH_PATIENCE;
    let mut conn = loop {
        match timeout(PUSH_PATIENCE, TcpStream::connect(addr)).await {
            Ok(Ok(conn)) => break conn,
            Ok(Err(e))
                if e.kind() == std::io::ErrorKind::ConnectionRefused
                    && Instant::now() < deadline =>
            {
                sleep(Duration::from_millis(50)).await;
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(std::io::ErrorKind::TimedOut.into()),
        }
    };
    // Closing after the write sends the FIN behind the data: no shutdown call of its own.
    timeout(PUSH_PATIENCE, conn.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
