//! Direct messages with a durable mailbox (`router --mailbox ADDR`, `docs/mailbox.md`): the
//! original messaging service's TCP protocol ([`proto`]) on its own thread (a single-threaded
//! tokio runtime), a store on disk ([`store`]) written by one thread with group commit, and one
//! deliverer per online user ([`deliver`]). The router's other front-ends reach it through the
//! engine's queues ([`link`]): their sessions send direct messages and, by the names they take,
//! are where users are online too ([`presence`]): one namespace. The shards never wait on it.

mod accounts;
mod deliver;
pub mod link;
mod presence;
pub mod proto;
pub mod store;

use crate::background::Background;
use crate::engine::direct::{DirectOutcome, FromMailbox, ToMailbox};
use crate::gate::{Gate, GateCounters, Pass};
use crate::tls::{Stream, Tls};
use link::Link;
use presence::Presence;
use proto::{reply, Parse, Request};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{Registered, SendOutcome, Store, StoreLimits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::time::{timeout, Instant};

/// A reply the client does not read within this long is given up.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
pub struct MailboxConfig {
    pub listen: SocketAddr,
    /// Where the database lives (`mailbox.redb` in it).
    pub data_dir: PathBuf,
    /// Many requests share one transaction and one flush; off: one flush per request.
    pub group_commit: bool,
    /// Two flushes per commit (see [`store::Store::open`]).
    pub two_phase: bool,
    pub limits: StoreLimits,
    /// TLS beside plain TCP (`--tls-cert`).
    pub tls: Option<Tls>,
}

impl MailboxConfig {
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            group_commit: true,
            two_phase: false,
            limits: StoreLimits::DEFAULT,
            tls: None,
        }
    }
}

/// What the mailbox did, for the shutdown report.
#[derive(Debug, Default)]
pub struct MailboxCounters {
    pub requests: AtomicU64,
    pub pushes: AtomicU64,
    pub failed_pushes: AtomicU64,
    /// Deliverers running now (one per connected user).
    pub deliverers: AtomicU64,
    /// Direct messages from sessions of the other front-ends.
    pub session_sends: AtomicU64,
    /// Events for sessions that had ended (or whose shard's queue stayed full): what they
    /// carried stays stored.
    pub missed_sessions: AtomicU64,
}

impl std::fmt::Display for MailboxCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "requests={} pushes={} failed_pushes={} deliverers={} session_sends={} \
             missed_sessions={}",
            self.requests.load(Relaxed),
            self.pushes.load(Relaxed),
            self.failed_pushes.load(Relaxed),
            self.deliverers.load(Relaxed),
            self.session_sends.load(Relaxed),
            self.missed_sessions.load(Relaxed),
        )
    }
}

struct Shared {
    counters: Arc<MailboxCounters>,
    store: Store,
    link: Arc<Link>,
    presence: Mutex<Presence>,
    /// Which `CONNECT` is which.
    connects: AtomicU64,
    /// One lock per user, held by its deliverer from reading the store until what it pushed
    /// is removed: a deliverer of a new CONNECT never sees what an old one has just pushed.
    delivering: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Events handed to shards, waiting for word that their session took them.
    handoffs: Mutex<HashMap<u64, oneshot::Sender<bool>>>,
    tokens: AtomicU64,
    accounts: Mutex<accounts::Accounts>,
    hashers: accounts::Hashers,
    /// Pushes under way at once, within the mailbox's share of the descriptors.
    pushes: tokio::sync::Semaphore,
}

impl Shared {
    fn accounts(&self) -> std::sync::MutexGuard<'_, accounts::Accounts> {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn presence(&self) -> std::sync::MutexGuard<'_, Presence> {
        self.presence.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn handoffs(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<bool>>> {
        self.handoffs.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn delivery_lock(&self, user: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.delivering.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(user.to_string()).or_default().clone()
    }
}

pub struct MailboxServer {
    pub local: SocketAddr,
    pub counters: Arc<MailboxCounters>,
    /// What the listener refused.
    pub gate: Arc<GateCounters>,
    thread: Background,
}

impl MailboxServer {
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

/// The store, opened before the shards start: they begin with its accounts' names.
pub struct Opened {
    store: Store,
    accounts: Vec<String>,
    session_key: Vec<u8>,
}

impl Opened {
    /// The names that are accounts.
    pub fn account_names(&self) -> &[String] {
        &self.accounts
    }

    /// The key of the sign-in tokens this server gives browsers (`session.key` beside the
    /// database, made at first start), so they stay good across restarts.
    pub fn session_key(&self) -> &[u8] {
        &self.session_key
    }
}

/// The session key in `dir`, made (32 random bytes, readable by the owner alone) if missing.
fn session_key(dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("session.key");
    match std::fs::read(&path) {
        Ok(key) if key.len() >= 32 => return Ok(key),
        Ok(_) => {
            return Err(std::io::Error::other(format!(
                "{} is too short",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let key: Vec<u8> = (0..4)
        .flat_map(|_| crate::io::sys::random_u64().to_le_bytes())
        .collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    file.write_all(&key)?;
    file.sync_all()?;
    Ok(key)
}

/// Opens (or creates) the store under `cfg.data_dir`.
pub fn open(cfg: &MailboxConfig) -> std::io::Result<Opened> {
    std::fs::create_dir_all(&cfg.data_dir)?;
    let store = Store::open(
        &cfg.data_dir.join("mailbox.redb"),
        cfg.limits,
        cfg.group_commit,
        cfg.two_phase,
    )
    .map_err(std::io::Error::other)?;
    let accounts = store.account_names().map_err(std::io::Error::other)?;
    let session_key = session_key(&cfg.data_dir)?;
    Ok(Opened {
        store,
        accounts,
        session_key,
    })
}

/// Binds `cfg.listen` (errors are reported here), then starts the thread, which also serves
/// the shards' requests on `link`.
pub fn start(
    cfg: MailboxConfig,
    opened: Opened,
    link: Arc<Link>,
    gate: Arc<Gate>,
    pushes: usize,
) -> std::io::Result<MailboxServer> {
    let Opened {
        store, accounts, ..
    } = opened;
    let listener = std::net::TcpListener::bind(cfg.listen)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let counters = Arc::new(MailboxCounters::default());
    let shared = Arc::new(Shared {
        counters: counters.clone(),
        store,
        link,
        presence: Mutex::new(Presence::default()),
        connects: AtomicU64::new(0),
        delivering: Mutex::new(HashMap::new()),
        handoffs: Mutex::new(HashMap::new()),
        tokens: AtomicU64::new(0),
        accounts: Mutex::new(accounts::Accounts::new(accounts)),
        hashers: accounts::Hashers::default(),
        pushes: tokio::sync::Semaphore::new(pushes.max(1)),
    });
    let gate_counters = gate.counters.clone();
    let tls = cfg.tls.clone();
    let thread = Background::start("mailbox", move || async move {
        if let Ok(listener) = TcpListener::from_std(listener) {
            let accepting = accept(listener, gate, tls, shared.clone());
            tokio::join!(accepting, serve_shards(shared));
        }
    })?;
    Ok(MailboxServer {
        local,
        counters,
        gate: gate_counters,
        thread,
    })
}

/// Connections as the gate lets them in (its descriptor budget, its cap per address), each
/// served on its own.
async fn accept(listener: TcpListener, gate: Arc<Gate>, tls: Option<Tls>, shared: Arc<Shared>) {
    loop {
        let (conn, peer, pass) = gate.accept(&listener).await;
        let conn = Stream::new(conn, tls.as_ref());
        let shared = shared.clone();
        let limit = gate.handshake();
        let counters = gate.counters.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = handle(conn, peer, limit, &pass, &counters, shared) => {}
                // Its place went to a newcomer while it had not sent its request.
                () = pass.handshake.evicted() => {}
            }
        });
    }
}

/// One connection, one request: read it whole (within `limit`), carry it out, answer. A
/// connection that closes early, idles or sends garbage is closed and changes nothing.
async fn handle(
    mut conn: Stream,
    peer: SocketAddr,
    limit: Duration,
    pass: &Pass,
    counters: &GateCounters,
    shared: Arc<Shared>,
) {
    // No TCP_NODELAY: the one reply is the connection's only segment, which Nagle never holds.
    let request = match read_request(&mut conn, limit).await {
        Ok(request) => request,
        Err(Unread::TimedOut) => {
            counters.handshake_timeouts.fetch_add(1, Relaxed);
            return;
        }
        Err(Unread::Closed) => return,
    };
    pass.handshake.finish();
    shared.counters.requests.fetch_add(1, Relaxed);
    let answer = carry_out(request, peer, &shared).await;
    let _ = timeout(REPLY_TIMEOUT, conn.write_all(&answer)).await;
}

/// Why no request was read.
enum Unread {
    /// Not whole within the time allowed.
    TimedOut,
    /// Closed early, or garbage.
    Closed,
}

async fn read_request(conn: &mut Stream, limit: Duration) -> Result<Request, Unread> {
    let mut buf = Vec::with_capacity(128);
    let deadline = Instant::now() + limit;
    let mut chunk = [0u8; 512];
    loop {
        match proto::parse(&buf) {
            Ok(request) => return Ok(request),
            Err(Parse::Bad(_)) => return Err(Unread::Closed),
            Err(Parse::Incomplete) if buf.len() >= proto::MAX_REQUEST => {
                return Err(Unread::Closed)
            }
            Err(Parse::Incomplete) => {}
        }
        let n = tokio::time::timeout_at(deadline, conn.read(&mut chunk))
            .await
            .map_err(|_| Unread::TimedOut)?
            .map_err(|_| Unread::Closed)?;
        if n == 0 {
            return Err(Unread::Closed); // closed before a whole request: nothing happens
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Carries out one request of the original protocol. It has no password: its REGISTER makes
/// an open account, and what would act as an account (a password-protected name) is refused:
/// CONNECT and DISCONNECT answer 3, UNREGISTER and SEND from it answer 2.
async fn carry_out(request: Request, peer: SocketAddr, shared: &Arc<Shared>) -> Vec<u8> {
    let store = &shared.store;
    let account = |user: &str| shared.accounts().is_account(user);
    let code = match request {
        Request::Register { user } => match store.register(user, None, peer.ip()).await {
            Some(Registered::Done) => reply::OK,
            Some(Registered::Taken) => reply::ONE,
            Some(Registered::Full) | None => reply::TWO,
        },
        Request::Unregister { user } if account(&user) => reply::TWO,
        Request::Unregister { user } => {
            shared.presence().disconnect(&user, None);
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
        Request::Connect { user, .. } | Request::Disconnect { user } if account(&user) => {
            reply::FAILURE
        }
        Request::Connect { user, port } => match store.is_registered(&user) {
            Ok(false) => reply::ONE,
            Err(_) => reply::FAILURE,
            Ok(true) => {
                let addr = SocketAddr::new(peer.ip(), port);
                let connect = shared.connects.fetch_add(1, Relaxed);
                let connected = shared.presence().connect(&user, addr, connect);
                match connected {
                    Err(()) => reply::TWO,
                    Ok(arrived) => {
                        if let Some(arrived) = arrived {
                            deliver::spawn(shared, arrived);
                        }
                        reply::OK
                    }
                }
            }
        },
        Request::Disconnect { user } => match store.is_registered(&user) {
            Ok(false) => reply::ONE,
            Err(_) => reply::FAILURE,
            Ok(true) => match shared.presence().disconnect(&user, None) {
                true => reply::OK,
                false => reply::TWO,
            },
        },
        Request::Send { from, .. } if account(&from) => reply::TWO,
        Request::Send { from, to, text } => {
            match store.send(from, to.clone(), text, peer.ip()).await {
                Some(SendOutcome::Stored { id, .. }) => {
                    shared.presence().wake(&to);
                    let mut answer = vec![reply::OK];
                    answer.extend_from_slice(id.to_string().as_bytes());
                    answer.push(0);
                    return answer;
                }
                Some(SendOutcome::UnknownUser) => reply::ONE,
                Some(SendOutcome::Full) | None => reply::TWO,
            }
        }
    };
    vec![code]
}

/// The shards' requests, in the order they were queued: names taken (where users are online)
/// and direct messages sent, each stored in order and answered when the store has it.
async fn serve_shards(shared: Arc<Shared>) {
    loop {
        let woken = shared.link.mailbox_wake.notified();
        while let Some(request) = shared.link.next_for_mailbox() {
            match request {
                ToMailbox::Named {
                    session,
                    name,
                    signed_in,
                } => {
                    // An account's mail reaches only the sessions signed in to it.
                    let name = name.filter(|n| signed_in || !shared.accounts().is_account(n));
                    let arrived = shared.presence().named(session, name);
                    if let Some(arrived) = arrived {
                        deliver::spawn(&shared, arrived);
                    }
                }
                ToMailbox::Handed { token, delivered } => {
                    if let Some(waiting) = shared.handoffs().remove(&token) {
                        let _ = waiting.send(delivered);
                    }
                }
                ToMailbox::Account {
                    session,
                    name,
                    password,
                    source,
                    register,
                } => {
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let asked = (name.clone(), password, source);
                        let outcome = match register {
                            true => accounts::register(&shared, session, asked).await,
                            false => accounts::sign_in(&shared, asked).await,
                        };
                        let answer = FromMailbox::Account {
                            session,
                            name,
                            outcome,
                        };
                        deliver::to_shard(&shared, answer).await;
                    });
                }
                ToMailbox::Send {
                    session,
                    from,
                    to,
                    text,
                    source,
                    may_store,
                } => {
                    shared.counters.session_sends.fetch_add(1, Relaxed);
                    // From a session that has not shown it receives, nothing is stored: a
                    // registered recipient gets it only if it is online now.
                    let storable =
                        may_store || !matches!(shared.store.is_registered(&to), Ok(true));
                    let stored = storable.then(|| {
                        let (from, to, text) = (from.clone(), to.clone(), text.clone());
                        shared.store.send_from_session(from, to, text, source)
                    });
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let Some(stored) = stored else {
                            let outcome = match deliver_live(&shared, &from, &to, &text).await {
                                DirectOutcome::NoSuchUser => DirectOutcome::Unconfirmed,
                                delivered => delivered,
                            };
                            let answer = FromMailbox::Sent {
                                session,
                                to,
                                outcome,
                            };
                            deliver::to_shard(&shared, answer).await;
                            return;
                        };
                        let outcome = match stored {
                            None => DirectOutcome::Busy,
                            Some(stored) => match stored.await {
                                Ok(SendOutcome::Stored { id, .. }) => {
                                    shared.presence().wake(&to);
                                    DirectOutcome::Stored(id)
                                }
                                Ok(SendOutcome::UnknownUser) => {
                                    deliver_live(&shared, &from, &to, &text).await
                                }
                                Ok(SendOutcome::Full) => DirectOutcome::Full,
                                Err(_) => DirectOutcome::Failed,
                            },
                        };
                        let answer = FromMailbox::Sent {
                            session,
                            to,
                            outcome,
                        };
                        deliver::to_shard(&shared, answer).await;
                    });
                }
            }
        }
        woken.await;
    }
}

/// A direct message that is not stored (to a name that is not registered, or from a session
/// that has not shown it receives): handed to wherever `to` is online now, if anywhere.
async fn deliver_live(shared: &Shared, from: &str, to: &str, text: &str) -> DirectOutcome {
    let targets = shared.presence().get(to).map(|o| o.targets.clone());
    let push = deliver::Push::Message {
        from,
        id: None,
        text,
    };
    match deliver::reach(shared, to, &targets.unwrap_or_default(), &push).await {
        true => DirectOutcome::Delivered,
        false => DirectOutcome::NoSuchUser,
    }
}
