//! Threads and queues: one shard per core, each pinned, with its own SO_REUSEPORT socket, its
//! own I/O backend and its own engine. Shards talk through a full mesh of bounded lock-free
//! queues (`queues[from * n + to]`, each with one producer and one consumer, their depth from
//! one memory budget); a producer writes the consumer's eventfd only when the consumer has said
//! it is about to sleep. A message that finds its queue full waits in the producer's
//! [`Outgoing`]: membership is never lost, and a shard with too much of it waiting stops reading
//! its socket until the others catch up. The main thread
//! owns nothing on the hot path: it waits for SIGINT/SIGTERM, prints stats, and stops the shards.

use crate::engine::{Config, Counters, DropReason, Engine, Outbox, ShardMsg};
use crate::gate;
use crate::io::{self, sys, Backend, IoKind, Transmit};
use crate::mailbox::link::{Link, Port};
use crate::mailbox::{self, MailboxConfig, MailboxServer};
use crate::mesh::Outgoing;
use crate::metrics::{self, MetricsServer, Sources};
use crate::pinned::{Pinned, Start};
use crate::proto::Name;
use crate::streams::bridge::{Bridge, StreamEvent};
use crate::streams::irc::IrcConfig;
use crate::streams::web::WebConfig;
use crate::streams::{self, StreamServer, Transport};
use crossbeam_queue::ArrayQueue;
use std::io::Write;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use thiserror::Error;

/// Memory for the whole mesh of queues between shards (n^2 queues), whatever the number of
/// shards: each queue's depth (messages in flight from one shard to another before the next
/// ones wait in their sender's [`Outgoing`]) follows from it, within the bounds below.
pub const QUEUE_MESH_BUDGET: usize = 16 << 20;
const MAX_QUEUE_DEPTH: usize = 8192;
const MIN_QUEUE_DEPTH: usize = 16;
/// The most shards a router runs.
pub const MAX_SHARDS: usize = 64;
/// One queue slot: the message and the queue's sequence stamp.
const SLOT: usize = std::mem::size_of::<ShardMsg>() + std::mem::size_of::<usize>();
// The budget holds the mesh at every shard count up to the maximum.
const _: () = assert!(QUEUE_MESH_BUDGET / (MAX_SHARDS * MAX_SHARDS * SLOT) >= MIN_QUEUE_DEPTH);

/// The depth of each queue of a mesh of `shards`.
pub fn queue_depth(shards: usize) -> usize {
    (QUEUE_MESH_BUDGET / (shards * shards * SLOT)).clamp(MIN_QUEUE_DEPTH, MAX_QUEUE_DEPTH)
}
/// Messages handled from one queue before the shard turns back to its socket.
const DRAIN_BUDGET: usize = 1024;
/// The longest a shard sleeps, so that a stop request is seen promptly even without a wake-up.
const MAX_SLEEP: Duration = Duration::from_millis(100);
/// The longest a shard sleeps while messages wait for room in another shard's queue.
const RETRY_SLEEP: Duration = Duration::from_micros(200);

#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    pub engine: Config,
    pub cores: usize,
    pub io: IoKind,
    pub stats_every: Option<Duration>,
    /// Browsers over WebSocket (`--ws`), on the stream thread.
    pub web: Option<WebConfig>,
    /// IRC clients (`--irc`), on the stream thread.
    pub irc: Option<IrcConfig>,
    /// Direct messages with a durable mailbox (`--mailbox`), on their own thread.
    pub mailbox: Option<MailboxConfig>,
    /// Prometheus metrics at `http://ADDR/metrics` (`--metrics`), on their own thread.
    pub metrics: Option<SocketAddr>,
    /// Time a TCP connection has to finish its handshake or first request.
    pub handshake: Duration,
}

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error("cannot bind {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("io_uring unavailable: {0}")]
    Uring(String),
    #[error("cannot start shard {shard}: {source}")]
    Shard {
        shard: usize,
        source: std::io::Error,
    },
    #[error("cannot set up signal handling: {0}")]
    Signals(std::io::Error),
    #[error("--cores {0}: at most {MAX_SHARDS} shards")]
    TooManyShards(usize),
    #[error(transparent)]
    Streams(#[from] streams::StartError),
    #[error("cannot serve the mailbox on {addr}: {source}")]
    Mailbox {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("cannot serve metrics on {addr}: {source}")]
    Metrics {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// What every shard shares.
struct Shared {
    queues: Vec<ArrayQueue<ShardMsg>>,
    wakers: Arc<[Waker]>,
    /// The queues to and from the stream thread, with `--ws` or `--irc`.
    bridge: Option<Arc<Bridge>>,
    /// The queues to and from the mailbox's thread, with `--mailbox`.
    mailbox: Option<Arc<Link>>,
    stop: AtomicBool,
    epoch: Instant,
    shards: usize,
    /// Group log lines start with the time of day, so that `sort` merges the servers' logs.
    stamp_logs: bool,
}

struct Waker {
    eventfd: sys::EventFd,
    sleeping: AtomicBool,
}

impl Shared {
    fn queue(&self, from: usize, to: usize) -> &ArrayQueue<ShardMsg> {
        &self.queues[from * self.shards + to]
    }

    /// Per shard: the messages from all shards waiting in its queues.
    fn inbox_depths(&self) -> Vec<usize> {
        (0..self.shards)
            .map(|to| {
                (0..self.shards)
                    .map(|from| self.queue(from, to).len())
                    .sum()
            })
            .collect()
    }

    /// Tells every shard to stop, and wakes the sleeping ones.
    fn halt(&self) {
        self.stop.store(true, Ordering::SeqCst);
        for waker in self.wakers.iter() {
            waker.eventfd.notify();
        }
    }
}

/// Starts the shards, blocks until SIGINT or SIGTERM, then stops them and prints their counters.
pub fn run(cfg: RuntimeConfig) -> Result<(), RuntimeError> {
    let signals = [libc::SIGINT, libc::SIGTERM];
    // Before any thread exists, so that every shard inherits the mask and only sigtimedwait
    // below sees the signals.
    sys::block_signals(&signals).map_err(RuntimeError::Signals)?;
    let router = start(&cfg)?;
    if let Some(why) = &router.fallback {
        println!("router: io_uring unavailable ({why}); using recvmmsg/sendmmsg");
    }
    println!(
        "router: listening on {} with {} shard(s), {} backend",
        router.local,
        router.counters.len(),
        router.backend
    );
    if let Some(web) = router.local("web") {
        println!("router: serving the chat page on http://{web}/ and WebSocket on ws://{web}/ws");
    }
    if let Some(irc) = router.local("irc") {
        println!("router: IRC on {irc}");
    }
    if let Some(mailbox) = &router.mailbox {
        println!("router: mailbox on {}", mailbox.local);
    }
    if let Some(metrics) = &router.metrics {
        println!("router: metrics on http://{}/metrics", metrics.local);
    }
    let _ = std::io::stdout().flush();
    let signal = wait_for_stop(
        &signals,
        cfg.stats_every,
        &router.counters,
        router.shared.epoch,
    );
    let name = if signal == libc::SIGTERM {
        "SIGTERM"
    } else {
        "SIGINT"
    };
    println!("router: stopping on {name}; each shard's counters follow");
    let _ = std::io::stdout().flush();
    let bridge = router.shared.bridge.clone();
    let stream_gates: Vec<_> = router
        .streams
        .iter()
        .flat_map(|s| s.listening.iter().map(|l| (l.name, l.gate.clone())))
        .collect();
    let mailbox = router
        .mailbox
        .as_ref()
        .map(|m| (m.counters.clone(), m.gate.clone()));
    for (shard, c) in router.stop().iter().enumerate() {
        println!("shard {shard}: {c}");
    }
    // The stream thread's counters (every transport's connections) on the first transport's
    // line: `web: ...` as it always was where browsers are served.
    for (i, (name, gate)) in stream_gates.into_iter().enumerate() {
        match (&bridge, i) {
            (Some(bridge), 0) => println!("{name}: {} {gate}", bridge.counters),
            _ => println!("{name}: {gate}"),
        }
    }
    if let Some((counters, gate)) = mailbox {
        println!("mailbox: {counters} {gate}");
    }
    Ok(())
}

/// A router whose shards are running on their own threads (in this process).
pub struct Running {
    /// The address the shards listen on (the kernel's choice where port 0 was asked for).
    pub local: SocketAddr,
    /// The backend's name, for start-up lines and reports.
    pub backend: &'static str,
    /// Why `--io auto` fell back to recvmmsg/sendmmsg, when it did.
    pub fallback: Option<String>,
    /// One per shard; readable while the shards run.
    pub counters: Vec<Arc<Counters>>,
    /// The stream thread (browsers, IRC clients), with `--ws` or `--irc`.
    pub streams: Option<StreamServer>,
    /// The mailbox server, with `--mailbox`.
    pub mailbox: Option<MailboxServer>,
    /// The metrics endpoint, with `--metrics`.
    pub metrics: Option<MetricsServer>,
    shared: Arc<Shared>,
    threads: Pinned,
}

impl Running {
    /// Stops the shards, waits for their threads, and returns their final counters.
    pub fn stop(mut self) -> Vec<Arc<Counters>> {
        self.halt();
        std::mem::take(&mut self.counters)
    }

    /// The shards' kernel thread ids, for reading their CPU time from /proc.
    pub fn thread_ids(&self) -> &[i32] {
        &self.threads.thread_ids
    }

    /// The stream thread's counters, with `--ws` or `--irc`.
    pub fn stream_counters(&self) -> Option<&crate::streams::bridge::StreamCounters> {
        self.shared.bridge.as_ref().map(|b| &b.counters)
    }

    /// The address stream transport `name` (`web`, `irc`) listens on, if it runs.
    pub fn local(&self, name: &str) -> Option<SocketAddr> {
        self.streams.as_ref().and_then(|s| s.local(name))
    }

    fn halt(&mut self) {
        if let Some(metrics) = &mut self.metrics {
            metrics.stop();
        }
        if let Some(streams) = &mut self.streams {
            streams.stop();
        }
        if let Some(mailbox) = &mut self.mailbox {
            mailbox.stop();
        }
        self.shared.halt();
        self.threads.join();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Binds the sockets and starts one pinned thread per shard; returns once every shard is ready.
/// Shard threads are named `shard-N`, so their CPU time can be read from /proc.
pub fn start(cfg: &RuntimeConfig) -> Result<Running, RuntimeError> {
    let shards = cfg.cores.max(1);
    if shards > MAX_SHARDS {
        return Err(RuntimeError::TooManyShards(shards));
    }
    let (io_kind, fallback) = io::choose(cfg.io).map_err(RuntimeError::Uring)?;
    let addr = cfg.engine.local;
    claim(addr)?;
    let sockets = (0..shards)
        .map(|_| sys::bind_udp(addr, true).map_err(|source| RuntimeError::Bind { addr, source }))
        .collect::<Result<Vec<OwnedFd>, _>>()?;
    let mut engine_cfg = cfg.engine.clone();
    if addr.port() == 0 {
        // Port 0: every shard must share the port the kernel picked for the first socket.
        engine_cfg.local =
            sys::local_addr(&sockets[0]).map_err(|source| RuntimeError::Bind { addr, source })?;
    }
    let wakers: Arc<[Waker]> = (0..shards)
        .map(|shard| {
            let eventfd =
                sys::EventFd::new().map_err(|source| RuntimeError::Shard { shard, source })?;
            Ok(Waker {
                eventfd,
                sleeping: AtomicBool::new(false),
            })
        })
        .collect::<Result<Vec<_>, RuntimeError>>()?
        .into();
    let bridge = (cfg.web.is_some() || cfg.irc.is_some()).then(|| {
        let wakers = wakers.clone();
        Arc::new(Bridge::new(
            shards,
            Box::new(move |shard| wake(&wakers[shard])),
        ))
    });
    let link = cfg.mailbox.as_ref().map(|_| {
        let wakers = wakers.clone();
        Arc::new(Link::new(
            shards,
            Box::new(move |shard| wake(&wakers[shard])),
        ))
    });
    engine_cfg.mailbox = link.is_some();
    // The store opens first: the shards begin knowing which names are accounts.
    let opened = match &cfg.mailbox {
        Some(mailbox_cfg) => {
            let opened = mailbox::open(mailbox_cfg).map_err(|source| RuntimeError::Mailbox {
                addr: mailbox_cfg.listen,
                source,
            })?;
            engine_cfg.session_key = Some(opened.session_key().to_vec());
            engine_cfg.token_keys.push(opened.session_key().to_vec());
            engine_cfg.accounts = Arc::new(
                opened
                    .account_names()
                    .iter()
                    .map(|n| Name::truncating(n.as_bytes()))
                    .collect(),
            );
            Some(opened)
        }
        None => None,
    };
    let epoch = Instant::now();
    engine_cfg.epoch_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let engine_cfg = Arc::new(engine_cfg);
    let shared = Arc::new(Shared {
        queues: (0..shards * shards)
            .map(|_| ArrayQueue::new(queue_depth(shards)))
            .collect(),
        wakers,
        bridge: bridge.clone(),
        mailbox: link.clone(),
        stop: AtomicBool::new(false),
        epoch,
        shards,
        stamp_logs: cfg.engine.cluster().is_some(),
    });
    let mut counters = Vec::with_capacity(shards);
    let starts = sockets
        .into_iter()
        .enumerate()
        .map(|(shard, socket)| {
            let engine = Engine::new(
                shard as u16,
                shards as u16,
                engine_cfg.clone(),
                sys::random_u64(),
                shared.epoch.elapsed(),
            );
            counters.push(engine.counters().clone());
            // The backend owns the socket for as long as the loop runs.
            let socket_fd = socket.as_raw_fd();
            Start {
                socket,
                wake: shared.wakers[shard].eventfd.raw(),
                payload: (engine, socket_fd),
            }
        })
        .collect();
    let body = {
        let shared = shared.clone();
        move |shard, backend, (engine, socket_fd)| {
            shard_loop(shard, engine, backend, socket_fd, &shared)
        }
    };
    let mut threads = Pinned::start("shard", io_kind, starts, body, || shared.halt())
        .map_err(|(shard, source)| RuntimeError::Shard { shard, source })?;
    // Every listener gets its share of the descriptors the process may open.
    let budgets = gate::Budgets::from_limit(sys::raise_nofile());
    let gate = |budget, per_ip| {
        gate::Gate::new(gate::GateConfig {
            budget,
            per_ip,
            handshake: cfg.handshake,
        })
    };
    let mut gates = Vec::new();
    let mut transports: Vec<(Box<dyn Transport>, Arc<gate::Gate>)> = Vec::new();
    if let Some(web) = &cfg.web {
        transports.push((Box::new(web.clone()), gate(budgets.web, web.per_ip)));
    }
    if let Some(irc) = &cfg.irc {
        transports.push((Box::new(irc.clone()), gate(budgets.irc, gate::IRC_PER_IP)));
    }
    let streams = match bridge {
        Some(bridge) => match streams::start(transports, bridge) {
            Ok(server) => Some(server),
            Err(e) => {
                shared.halt();
                threads.join();
                return Err(e.into());
            }
        },
        None => None,
    };
    let mailbox = match (&cfg.mailbox, link, opened) {
        (Some(mailbox_cfg), Some(link), Some(opened)) => {
            let gate = gate(budgets.mailbox, gate::MAILBOX_PER_IP);
            match mailbox::start(mailbox_cfg.clone(), opened, link, gate, budgets.pushes) {
                Ok(server) => Some(server),
                Err(source) => {
                    shared.halt();
                    threads.join();
                    let addr = mailbox_cfg.listen;
                    return Err(RuntimeError::Mailbox { addr, source });
                }
            }
        }
        _ => None,
    };
    let metrics = match cfg.metrics {
        Some(addr) => {
            let inboxes = shared.clone();
            for l in streams.iter().flat_map(|s| &s.listening) {
                gates.push((l.name, l.gate.clone()));
            }
            if let Some(m) = &mailbox {
                gates.push(("mailbox", m.gate.clone()));
            }
            let metrics_gate = gate(budgets.metrics, gate::METRICS_PER_IP);
            gates.push(("metrics", metrics_gate.counters.clone()));
            let sources = Sources {
                counters: counters.clone(),
                inboxes: Arc::new(move || inboxes.inbox_depths()),
                gates,
            };
            match metrics::start(addr, sources, metrics_gate) {
                Ok(server) => Some(server),
                Err(source) => {
                    shared.halt();
                    threads.join();
                    return Err(RuntimeError::Metrics { addr, source });
                }
            }
        }
        None => None,
    };
    Ok(Running {
        local: engine_cfg.local,
        backend: io_kind.name(),
        fallback,
        counters,
        streams,
        mailbox,
        metrics,
        shared,
        threads,
    })
}

/// Makes sure no other socket holds `addr` before the shards bind it with SO_REUSEPORT:
/// otherwise a second router (or the socket of a just-killed one, which the kernel may keep
/// alive while it tears the dead process's io_uring down) would silently share the port and
/// take a share of its clients. Waits a little for such a dying socket to go.
fn claim(addr: SocketAddr) -> Result<(), RuntimeError> {
    if addr.port() == 0 {
        return Ok(());
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        match sys::bind_udp(addr, false) {
            Ok(_probe) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(source) => return Err(RuntimeError::Bind { addr, source }),
        }
    }
}

/// Prints the stats lines until one of `signals` arrives; returns it.
fn wait_for_stop(
    signals: &[libc::c_int],
    every: Option<Duration>,
    counters: &[Arc<Counters>],
    epoch: Instant,
) -> libc::c_int {
    let period = every.unwrap_or(Duration::from_secs(3600));
    let mut last = (epoch.elapsed(), Totals::of(counters));
    let mut next = last.0 + period;
    loop {
        // sigtimedwait can return early (EINTR), so the period is kept by deadline.
        let left = next.saturating_sub(epoch.elapsed());
        if let Some(signal) = sys::wait_signal(signals, left) {
            return signal;
        }
        if epoch.elapsed() < next {
            continue;
        }
        next += period;
        if every.is_some() {
            let now = (epoch.elapsed(), Totals::of(counters));
            let secs = (now.0 - last.0).as_secs_f64().max(1e-9);
            let rate = |a: u64, b: u64| (a - b) as f64 / secs;
            println!(
                "{} stats: in={} ({:.0}/s) out={} ({:.0}/s) deliveries={} ({:.0}/s) drops={} kernel_drops={} decode_errors={}",
                sys::local_time_of_day(),
                now.1.datagrams_in,
                rate(now.1.datagrams_in, last.1.datagrams_in),
                now.1.datagrams_out,
                rate(now.1.datagrams_out, last.1.datagrams_out),
                now.1.deliveries,
                rate(now.1.deliveries, last.1.deliveries),
                now.1.drops,
                now.1.kernel_drops,
                now.1.decode_errors,
            );
            let _ = std::io::stdout().flush();
            last = now;
        }
    }
}

#[derive(Default, Clone, Copy)]
struct Totals {
    datagrams_in: u64,
    datagrams_out: u64,
    deliveries: u64,
    drops: u64,
    kernel_drops: u64,
    decode_errors: u64,
}

impl Totals {
    fn of(counters: &[Arc<Counters>]) -> Self {
        counters.iter().fold(Self::default(), |t, c| Self {
            datagrams_in: t.datagrams_in + c.datagrams_in.get(),
            datagrams_out: t.datagrams_out + c.datagrams_out.get(),
            deliveries: t.deliveries + c.deliveries.get(),
            drops: t.drops + c.total_drops(),
            kernel_drops: t.kernel_drops + c.kernel_drops.get(),
            decode_errors: t.decode_errors + c.decode_errors.get(),
        })
    }
}

fn shard_loop(
    me: usize,
    mut engine: Engine,
    mut backend: Backend,
    socket_fd: RawFd,
    shared: &Shared,
) {
    let mut out = Outbox::with_capacity(4096);
    let mut outgoing = Outgoing::new(shared.shards);
    let mut port = Port::default();
    let counters = engine.counters().clone();
    let mut kernel_drops = (0u32, Duration::ZERO);
    while !shared.stop.load(Ordering::Relaxed) {
        let now = shared.epoch.elapsed();
        let mut work = drain_inbox(me, now, &mut engine, &mut out, shared);
        if let Some(bridge) = &shared.bridge {
            work += drain_streams(me, now, &mut engine, &mut out, bridge);
        }
        if let Some(link) = &shared.mailbox {
            work += drain_mailbox(me, now, &mut engine, &mut out, link, &mut port);
        }
        // Too much control waiting for other shards or the mailbox: take nothing new from the
        // socket (the kernel queues, then drops and counts) until they have caught up.
        if !outgoing.backlogged() && !port.backlogged() {
            let received = backend.recv(&mut |src, bytes| {
                // Causality: a message another shard queued before this datagram arrived (say,
                // the directory entry for a channel whose creation the sender has already seen
                // acknowledged) is handled first. Empty queues cost a few loads.
                drain_inbox(me, now, &mut engine, &mut out, shared);
                let started = Instant::now();
                engine.handle_datagram(now, src, bytes, &mut out);
                counters.handling.record(started.elapsed());
            });
            counters.dropped_many(DropReason::NoBuffer, received.no_buffer);
            work += received.datagrams;
        }
        if now >= engine.next_timeout() {
            engine.handle_timeout(now, &mut out);
            if now >= kernel_drops.1 + KERNEL_DROPS_EVERY {
                copy_kernel_drops(socket_fd, &mut kernel_drops.0, &counters);
                kernel_drops.1 = now;
            }
        }
        work += flush(
            me,
            &mut out,
            &mut outgoing,
            &mut port,
            &mut backend,
            &counters,
            shared,
        );
        if work == 0 {
            let waiting = !outgoing.is_empty() || port.holding();
            sleep(me, &engine, &mut backend, waiting, &port, shared);
        }
    }
    copy_kernel_drops(socket_fd, &mut kernel_drops.0, &counters);
}

/// How often a shard reads its socket's drop count (a getsockopt), at most: on a timer event
/// this long after the last reading, and once more when it stops.
const KERNEL_DROPS_EVERY: Duration = Duration::from_millis(100);

/// Adds what the kernel dropped at the socket since the `last` reading to the shard's counters;
/// the kernel's count is 32 bits and wraps.
fn copy_kernel_drops(fd: RawFd, last: &mut u32, counters: &Counters) {
    if let Ok(now) = sys::socket_drops(fd) {
        counters
            .kernel_drops
            .add(u64::from(now.wrapping_sub(*last)));
        *last = now;
    }
}

/// Wakes a shard that said it is about to sleep; clearing the flag makes this the only
/// notification until it sleeps again.
fn wake(waker: &Waker) {
    if waker.sleeping.swap(false, Ordering::SeqCst) {
        waker.eventfd.notify();
    }
}

/// Handles what the stream thread queued for this shard (a bounded amount).
fn drain_streams(
    me: usize,
    now: Duration,
    engine: &mut Engine,
    out: &mut Outbox,
    bridge: &Bridge,
) -> usize {
    let mut handled = 0;
    while handled < DRAIN_BUDGET {
        let Some(event) = bridge.next_for(me) else {
            break;
        };
        match event {
            StreamEvent::Opened(endpoint, protocol) => {
                engine.stream_opened(now, endpoint, protocol, out)
            }
            StreamEvent::Frame(endpoint, protocol, bytes) => {
                engine.stream_request(now, endpoint, protocol, &bytes, out)
            }
            StreamEvent::Closed(endpoint, protocol) => {
                engine.stream_closed(now, endpoint, protocol, out)
            }
        }
        handled += 1;
    }
    handled
}

/// Handles what the mailbox sent this shard's sessions (a bounded amount), after the answers
/// the shard gave itself when the mailbox's queue was full.
fn drain_mailbox(
    me: usize,
    now: Duration,
    engine: &mut Engine,
    out: &mut Outbox,
    link: &Link,
    port: &mut Port,
) -> usize {
    let mut handled = 0;
    for refused in port.take_refused() {
        engine.mailbox_event(now, refused, out);
        handled += 1;
    }
    while handled < DRAIN_BUDGET {
        let Some(event) = link.next_for(me) else {
            break;
        };
        engine.mailbox_event(now, event, out);
        handled += 1;
    }
    handled
}

/// Handles what other shards queued for this one (a bounded amount per queue).
fn drain_inbox(
    me: usize,
    now: Duration,
    engine: &mut Engine,
    out: &mut Outbox,
    shared: &Shared,
) -> usize {
    let mut handled = 0;
    for from in 0..shared.shards {
        let queue = shared.queue(from, me);
        for _ in 0..DRAIN_BUDGET {
            let Some(msg) = queue.pop() else { break };
            engine.handle_message(now, msg, out);
            handled += 1;
        }
    }
    handled
}

/// Queues messages for other shards (those still waiting first) before sending datagrams, so
/// that whatever a client does after seeing a reply happens after those messages were queued.
/// Returns how many waiting messages went.
fn flush(
    me: usize,
    out: &mut Outbox,
    outgoing: &mut Outgoing,
    port: &mut Port,
    backend: &mut Backend,
    counters: &Counters,
    shared: &Shared,
) -> usize {
    if let Some(link) = &shared.mailbox {
        if port.send(link, out.take_mailbox()) {
            link.wake_mailbox();
        }
    }
    let mut push = |to: usize, msg: ShardMsg| -> Option<ShardMsg> {
        if let Err(full) = shared.queue(me, to).push(msg) {
            return Some(full);
        }
        wake(&shared.wakers[to]);
        None
    };
    let moved = outgoing.retry(&mut push);
    if out.is_empty() {
        return moved;
    }
    for (to, msg) in out.take_msgs() {
        outgoing.send(to as usize, msg, &mut push, counters);
    }
    if !out.log_text().is_empty() {
        let mut stdout = std::io::stdout().lock();
        if shared.stamp_logs {
            let time = sys::local_time_of_day();
            for line in out.log_text().lines() {
                let _ = writeln!(stdout, "{time} {line}");
            }
        } else {
            let _ = stdout.write_all(out.log_text().as_bytes());
        }
        let _ = stdout.flush();
    }
    if let (Some(bridge), false) = (&shared.bridge, out.stream_sends().is_empty()) {
        // One shared copy per payload, however many connections it goes to.
        let mut last: Option<(crate::engine::PayloadId, streams::Text)> = None;
        for &(conn, payload) in out.stream_sends() {
            let text = match &last {
                Some((p, text)) if *p == payload => text.clone(),
                _ => {
                    let Some(text) = streams::text(out.bytes(payload)) else {
                        continue;
                    };
                    last = Some((payload, text.clone()));
                    text
                }
            };
            bridge.to_stream(conn, text);
        }
        bridge.wake_streams();
    }
    if !out.sends().is_empty() {
        let sent = backend.send(out.sends().iter().map(|s| Transmit {
            dst: s.dst,
            contents: out.bytes(s.payload),
        }));
        counters.datagrams_out.add(sent.sent);
        counters.dropped_many(DropReason::SendFailed, sent.failed);
    }
    out.clear();
    moved
}

/// Announces the intent to sleep, re-checks the queues (a producer that pushed before seeing the
/// flag would not wake us), then sleeps until a datagram, a wake-up or the next timer.
/// With messages `waiting` for full queues, it sleeps briefly: no one wakes a producer when a
/// consumer makes room.
fn sleep(
    me: usize,
    engine: &Engine,
    backend: &mut Backend,
    waiting: bool,
    port: &Port,
    shared: &Shared,
) {
    let waker = &shared.wakers[me];
    waker.sleeping.store(true, Ordering::SeqCst);
    let pending = (0..shared.shards).any(|from| !shared.queue(from, me).is_empty())
        || shared.bridge.as_ref().is_some_and(|b| b.has_events_for(me))
        || shared
            .mailbox
            .as_ref()
            .is_some_and(|l| l.has_events_for(me))
        || port.has_refused();
    if !pending && !shared.stop.load(Ordering::SeqCst) {
        let until_timer = engine.next_timeout().saturating_sub(shared.epoch.elapsed());
        let longest = if waiting { RETRY_SLEEP } else { MAX_SLEEP };
        backend.wait(until_timer.min(longest));
    }
    if backend.take_woken() {
        waker.eventfd.clear();
    }
    waker.sleeping.store(false, Ordering::SeqCst);
}
