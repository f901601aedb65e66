//! Direct messages with a durable mailbox (`router --mailbox ADDR`, `docs/mailbox.md`): the
//! original messaging service's TCP protocol ([`proto`]) on its own thread (a single-threaded
//! tokio runtime), a store on disk ([`store`]) written by one thread with group commit, and one
//! deliverer per connected user that pushes that user's stored messages in the order they were
//! sent, removing each once its push has succeeded. The UDP shards never wait on the disk.

pub mod proto;
pub mod store;

use crate::background::Background;
use proto::{reply, Parse, Request};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{SendOutcome, Store, StoreLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::{sleep, timeout, Instant};

/// A connection that has not sent a whole request within this long is closed, unanswered.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a push keeps trying to reach a client's listen port (the original client starts
/// listening only after it has read its CONNECT reply).
const PUSH_PATIENCE: Duration = Duration::from_secs(3);
/// Stored messages a deliverer reads from the store at a time.
const DELIVERY_BATCH: usize = 64;
/// Connections served at once; more are closed as they come, unanswered.
const MAX_CONNECTIONS: usize = 4096;

#[derive(Debug, Clone)]
pub struct MailboxConfig {
    pub listen: SocketAddr,
    /// Where the database lives (`mailbox.redb` in it).
    pub data_dir: PathBuf,
    /// Many requests share one transaction and one flush; off: one flush per request.
    pub group_commit: bool,
    pub limits: StoreLimits,
}

impl MailboxConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            group_commit: true,
            limits: StoreLimits {
                users: 100_000,
                per_user: 10_000,
                total: 1_000_000,
            },
        }
    }
}

/// A connected user: where pushes go, and its deliverer's wake-up.
struct Online {
    addr: SocketAddr,
    wake: Arc<Notify>,
    /// Which CONNECT this is: a deliverer of an earlier one stops.
    generation: u64,
}

/// What the mailbox did, for the shutdown report.
#[derive(Debug, Default)]
pub struct MailboxCounters {
    pub requests: AtomicU64,
    pub refused_connections: AtomicU64,
    pub pushes: AtomicU64,
    pub failed_pushes: AtomicU64,
    /// Deliverers running now (one per connected user).
    pub deliverers: AtomicU64,
}

impl std::fmt::Display for MailboxCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} refused_connections={} pushes={} failed_pushes={} deliverers={}",
            self.requests.load(Relaxed),
            self.refused_connections.load(Relaxed),
            self.pushes.load(Relaxed),
            self.failed_pushes.load(Relaxed),
            self.deliverers.load(Relaxed),
        )
    }
}

struct Shared {
    counters: Arc<MailboxCounters>,
    store: Store,
    online: Mutex<HashMap<String, Online>>,
    generations: AtomicU64,
    /// One lock per user, held by its deliverer from reading the store until what it pushed
    /// is removed: a deliverer of a new CONNECT never sees what an old one has just pushed.
    delivering: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Shared {
    fn online(&self) -> std::sync::MutexGuard<'_, HashMap<String, Online>> {
        self.online.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delivery_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.delivering.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(user.to_string()).or_default().clone()
    }
}

pub struct MailboxServer {
    pub local: SocketAddr,
    pub counters: Arc<MailboxCounters>,
    thread: Background,
}

impl MailboxServer {
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

/// Opens the store and binds `cfg.listen` (errors are reported here), then starts the thread.
pub fn start(cfg: MailboxConfig) -> std::io::Result<MailboxServer> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let store = Store::open(
        &cfg.data_dir.join("mailbox.redb"),
        cfg.limits,
        cfg.group_commit,
    )
    .map_err(std::io::Error::other)?;
    let listener = std::net::TcpListener::bind(cfg.listen)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let counters = Arc::new(MailboxCounters::default());
    let shared = Arc::new(Shared {
        counters: counters.clone(),
        store,
        online: Mutex::new(HashMap::new()),
        generations: AtomicU64::new(0),
        delivering: Mutex::new(HashMap::new()),
    });
    let thread = Background::start("mailbox", move || async move {
        if let Ok(listener) = TcpListener::from_std(listener) {
            accept(listener, shared).await;
        }
    })?;
    Ok(MailboxServer {
        local,
        counters,
        thread,
    })
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok((conn, peer)) = listener.accept().await else {
            continue;
        };
        // A flood of connections costs at most MAX_CONNECTIONS tasks and descriptors.
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            shared.counters.refused_connections.fetch_add(1, Relaxed);
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            handle(conn, peer, shared).await;
            drop(slot);
        });
    }
}

/// One connection, one request: read it whole (within [`REQUEST_TIMEOUT`]), carry it out,
/// answer. A connection that closes early, idles or sends garbage is closed and changes
/// nothing.
async fn handle(mut conn: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let _ = conn.set_nodelay(true);
    let Some(request) = read_request(&mut conn).await else {
        return;
    };
    shared.counters.requests.fetch_add(1, Relaxed);
    let answer = carry_out(request, peer, &shared).await;
    let _ = timeout(REQUEST_TIMEOUT, conn.write_all(&answer)).await;
}

async fn read_request(conn: &mut TcpStream) -> Option<Request> {
    let mut buf = Vec::with_capacity(128);
    let deadline = Instant::now() + REQUEST_TIMEOUT;
    let mut chunk = [0u8; 512];
    loop {
        match proto::parse(&buf) {
            Ok(request) => return Some(request),
            Err(Parse::Bad(_)) => return None,
            Err(Parse::Incomplete) if buf.len() >= proto::MAX_REQUEST => return None,
            Err(Parse::Incomplete) => {}
        }
        let n = tokio::time::timeout_at(deadline, conn.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None; // closed before a whole request: nothing happens
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

async fn carry_out(request: Request, peer: SocketAddr, shared: &Arc<Shared>) -> Vec<u8> {
    let store = &shared.store;
    let code = match request {
        Request::Register { user } => match store.register(user).await {
            Some(true) => reply::OK,
            Some(false) => reply::ONE,
            None => reply::TWO,
        },
        Request::Unregister { user } => {
            go_offline(shared, &user);
            shared
                .delivering
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&user);
            match store.unregister(user).await {
                Some(true) => reply::OK,
                Some(false) => reply::ONE,
                None => reply::TWO,
            }
        }
        Request::Connect { user, port } => match store.is_registered(&user) {
            Ok(false) => reply::ONE,
            Err(_) => reply::FAILURE,
            Ok(true) => {
                let mut online = shared.online();
                if online.contains_key(&user) {
                    reply::TWO
                } else {
                    let generation = shared.generations.fetch_add(1, Relaxed);
                    let wake = Arc::new(Notify::new());
                    let addr = SocketAddr::new(peer.ip(), port);
                    online.insert(
                        user.clone(),
                        Online {
                            addr,
                            wake: wake.clone(),
                            generation,
                        },
                    );
                    let shared = shared.clone();
                    shared.counters.deliverers.fetch_add(1, Relaxed);
                    tokio::spawn(async move {
                        deliver(user, generation, addr, wake, &shared).await;
                        shared.counters.deliverers.fetch_sub(1, Relaxed);
                    });
                    reply::OK
                }
            }
        },
        Request::Disconnect { user } => match store.is_registered(&user) {
            Ok(false) => reply::ONE,
            Err(_) => reply::FAILURE,
            Ok(true) => match go_offline(shared, &user) {
                true => reply::OK,
                false => reply::TWO,
            },
        },
        Request::Send { from, to, text } => match store.send(from, to.clone(), text).await {
            Some(SendOutcome::Stored { id, .. }) => {
                if let Some(online) = shared.online().get(&to) {
                    online.wake.notify_one();
                }
                let mut answer = vec![reply::OK];
                answer.extend_from_slice(id.to_string().as_bytes());
                answer.push(0);
                return answer;
            }
            Some(SendOutcome::UnknownUser) => reply::ONE,
            Some(SendOutcome::Full) | None => reply::TWO,
        },
    };
    vec![code]
}

/// Pushes `user`'s stored messages in order while it stays connected (this CONNECT of it):
/// each is removed from the store once its push has succeeded, and its sender, if connected,
/// gets the acknowledgement. A push that fails marks the user disconnected; the message stays.
async fn deliver(
    user: String,
    generation: u64,
    addr: SocketAddr,
    wake: Arc<Notify>,
    shared: &Shared,
) {
    let still_online = |shared: &Shared| {
        shared
            .online()
            .get(&user)
            .is_some_and(|o| o.generation == generation)
    };
    let lock = shared.delivery_lock(&user);
    loop {
        let woken = wake.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let turn = lock.lock().await;
        if !still_online(shared) {
            return;
        }
        let (acks, pending) = match (
            shared.store.owed_acks(&user, DELIVERY_BATCH),
            shared.store.pending(&user, DELIVERY_BATCH),
        ) {
            (Ok(a), Ok(p)) => (a, p),
            _ => return,
        };
        if acks.is_empty() && pending.is_empty() {
            drop(turn);
            woken.await;
            continue;
        }
        for (seq, id) in acks {
            if !still_online(shared) || !push_counted(shared, addr, &proto::ack_push(id)).await {
                return drop_if_current(shared, &user, generation);
            }
            if shared.store.acked(user.clone(), seq).await.is_none() {
                return;
            }
        }
        for message in pending {
            if !still_online(shared) {
                return;
            }
            let push = proto::message_push(&message.sender, message.id, &message.text);
            if !push_counted(shared, addr, &push).await {
                return drop_if_current(shared, &user, generation);
            }
            // The sender hears now if it is connected and the push works; else it is owed.
            let sender = shared.online().get(&message.sender).map(|o| o.addr);
            let told = match sender {
                Some(sender_addr) => {
                    push_counted(shared, sender_addr, &proto::ack_push(message.id)).await
                }
                None => false,
            };
            if shared
                .store
                .delivered(user.clone(), &message, !told)
                .await
                .is_none()
            {
                return;
            }
            if !told {
                // The sender may have connected meanwhile: its deliverer finds the owed one.
                if let Some(sender) = shared.online().get(&message.sender) {
                    sender.wake.notify_one();
                }
            }
        }
    }
}

/// Marks `user` disconnected and wakes its deliverer, which then ends (a deliverer waiting for
/// messages would otherwise wait for good, one more each CONNECT). False when not connected.
fn go_offline(shared: &Shared, user: &str) -> bool {
    match shared.online().remove(user) {
        Some(online) => {
            online.wake.notify_one();
            true
        }
        None => false,
    }
}

/// A push to `user` failed: it is marked disconnected, unless it has connected again since.
fn drop_if_current(shared: &Shared, user: &str, generation: u64) {
    let mut online = shared.online();
    if online.get(user).is_some_and(|o| o.generation == generation) {
        online.remove(user);
    }
}

/// A push, counted: true when it went.
async fn push_counted(shared: &Shared, addr: SocketAddr, bytes: &[u8]) -> bool {
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
    timeout(PUSH_PATIENCE, async {
        conn.write_all(bytes).await?;
        conn.shutdown().await
    })
    .await
    .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
}
