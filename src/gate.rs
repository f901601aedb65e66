//! What every TCP listener does before a connection is served (WebSocket, IRC, the mailbox,
//! the metrics endpoint): each listener has its own share of the process's file descriptors
//! ([`Budgets`]), so a flood of connections to one never starves the others; one source
//! address holds at most a few of them; a connection must finish its handshake (or send its
//! first request) within a deadline; when the share is spent, a newcomer takes the place of the
//! oldest connection still in its handshake, so holding connections open from many addresses
//! locks no one out (a real client finishes its handshake at once); and an accept that fails
//! (EMFILE and the like) waits a little before the next, so the loop never spins. Every
//! refusal is counted ([`GateCounters`]).

use crate::tls::{Stream, Tls};
use futures_util::task::AtomicWaker;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// A connection must finish its handshake (WebSocket: the HTTP upgrade; IRC: its
/// registration; the mailbox: its one request) within this long, unless the command line says otherwise.
pub const HANDSHAKE: Duration = Duration::from_secs(10);
/// How long an accept loop rests after the kernel refused an accept (descriptors exhausted).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Connections one source address may hold at once, per listener: browsers (a household or an
/// office behind one address has a tab or two each), the mailbox (one request per connection,
/// answered at once: a client holds one or two), the metrics endpoint (a scraper or two).
pub const WEB_PER_IP: usize = 256;
/// IRC clients (a person runs one or two; a bouncer a few).
pub const IRC_PER_IP: usize = 32;
pub const MAILBOX_PER_IP: usize = 32;
pub const METRICS_PER_IP: usize = 4;

/// Descriptors kept for the process itself (shard sockets, rings, eventfds, the database,
/// pushes), at most; the rest is shared among the listeners.
const RESERVED: u64 = 512;

/// Each listener's share of the descriptors the process may open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budgets {
    pub web: usize,
    pub irc: usize,
    /// The mailbox's connections from clients.
    pub mailbox: usize,
    /// The mailbox's pushes: its own connections to clients' listen ports.
    pub pushes: usize,
    pub metrics: usize,
}

impl Budgets {
    /// The shares of a process that may open `nofile` descriptors: a reserve for the rest of
    /// the process (a quarter, at most [`RESERVED`]), a few for the metrics endpoint, then half
    /// for browsers, a sixth for IRC clients and one third for the mailbox (three quarters of
    /// it for its clients' connections, a quarter for its pushes).
    pub fn from_limit(nofile: u64) -> Self {
        let reserve = (nofile / 4).min(RESERVED);
        let metrics = 16u64.min(nofile / 16);
        let shared = nofile.saturating_sub(reserve + metrics);
        let web = shared / 2;
        let irc = shared / 6;
        let mailbox = (shared - web - irc) * 3 / 4;
        Budgets {
            web: web as usize,
            irc: irc as usize,
            mailbox: mailbox as usize,
            pushes: (shared - web - irc - mailbox) as usize,
            metrics: metrics as usize,
        }
    }
}

/// What one listener refused and why.
#[derive(Debug, Default)]
pub struct GateCounters {
    /// Connections let in.
    pub accepted: AtomicU64,
    /// Refused: the listener's descriptor budget was spent.
    pub refused_budget: AtomicU64,
    /// Refused: the source address held its maximum.
    pub refused_per_ip: AtomicU64,
    /// Closed: no handshake within the deadline.
    pub handshake_timeouts: AtomicU64,
    /// Closed in its handshake to make room for a newcomer (the budget was spent).
    pub evicted: AtomicU64,
    /// Accepts the kernel refused (descriptors exhausted), each followed by a rest.
    pub accept_errors: AtomicU64,
}

impl std::fmt::Display for GateCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "accepted={} refused_budget={} refused_per_ip={} handshake_timeouts={} evicted={} \
             accept_errors={}",
            self.accepted.load(Relaxed),
            self.refused_budget.load(Relaxed),
            self.refused_per_ip.load(Relaxed),
            self.handshake_timeouts.load(Relaxed),
            self.evicted.load(Relaxed),
            self.accept_errors.load(Relaxed),
        )
    }
}

/// One listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct GateConfig {
    /// Connections open at once (its descriptor budget).
    pub budget: usize,
    /// Connections open at once from one address.
    pub per_ip: usize,
    /// Time to finish the handshake.
    pub handshake: Duration,
}

/// The connections a listener holds.
pub struct Gate {
    cfg: GateConfig,
    open: Mutex<Open>,
    pub counters: Arc<GateCounters>,
}

#[derive(Default)]
struct Open {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
    /// Connections in their handshake, oldest first (some may have finished or gone since:
    /// they are skipped when met).
    handshaking: VecDeque<Arc<Handshake>>,
}

/// A connection's handshake, as the gate and the connection both see it.
#[derive(Default)]
pub struct Handshake {
    done: AtomicBool,
    evicted: AtomicBool,
    waker: AtomicWaker,
}

impl Handshake {
    /// The connection finished its handshake: it is never evicted from now on.
    pub fn finish(&self) {
        self.done.store(true, Relaxed);
    }

    /// Ready once the gate has chosen this connection to make room (it is then to close).
    pub fn poll_evicted(&self, cx: &mut Context<'_>) -> Poll<()> {
        self.waker.register(cx.waker());
        match self.evicted.load(Relaxed) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        }
    }

    /// Resolves once the gate has chosen this connection to make room.
    pub async fn evicted(&self) {
        std::future::poll_fn(|cx| self.poll_evicted(cx)).await
    }
}

/// A connection's place in its listener's budget, given back when it is dropped.
pub struct Pass {
    gate: Arc<Gate>,
    ip: IpAddr,
    pub handshake: Arc<Handshake>,
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.handshake.finish(); // gone: nothing left to evict
        let mut open = self.gate.open.lock().unwrap_or_else(|e| e.into_inner());
        open.total -= 1;
        if let Some(n) = open.per_ip.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.per_ip.remove(&self.ip);
            }
        }
    }
}

impl Gate {
    pub fn new(cfg: GateConfig) -> Arc<Self> {
        Arc::new(Self {
            cfg,
            open: Mutex::new(Open::default()),
            counters: Arc::default(),
        })
    }

    pub fn handshake(&self) -> Duration {
        self.cfg.handshake
    }

    /// A place for a connection from `ip`, or `None` (counted) when the address's share is
    /// spent, or the budget is and no connection is left in its handshake to make room. The
    /// one evicted closes at once; until it has, the listener holds one more than its budget.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Option<Pass> {
        let ip = ip.to_canonical();
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if open.per_ip.get(&ip).copied().unwrap_or(0) >= self.cfg.per_ip {
            self.counters.refused_per_ip.fetch_add(1, Relaxed);
            return None;
        }
        if open.total >= self.cfg.budget && !open.evict_oldest(&self.counters) {
            self.counters.refused_budget.fetch_add(1, Relaxed);
            return None;
        }
        *open.per_ip.entry(ip).or_insert(0) += 1;
        open.total += 1;
        let handshake = Arc::new(Handshake::default());
        open.handshaking.push_back(handshake.clone());
        // Entries of finished handshakes go as they are met at the front, and each admission
        // looks at the front: the queue stays within about the connections held.
        while open
            .handshaking
            .front()
            .is_some_and(|h| h.done.load(Relaxed))
        {
            open.handshaking.pop_front();
        }
        debug_assert!(open.per_ip.len() <= open.total);
        self.counters.accepted.fetch_add(1, Relaxed);
        Some(Pass {
            gate: self.clone(),
            ip,
            handshake,
        })
    }

    /// The next connection this gate lets in: refused ones are closed at once, and a failed
    /// accept rests [`ACCEPT_BACKOFF`] (the kernel refuses while descriptors are exhausted:
    /// trying again at once would spin a core).
    pub async fn accept(self: &Arc<Self>, listener: &TcpListener) -> (TcpStream, SocketAddr, Pass) {
        loop {
            match listener.accept().await {
                Ok((conn, peer)) => {
                    if let Some(pass) = self.admit(peer.ip()) {
                        return (conn, peer, pass);
                    }
                    drop(conn);
                }
                Err(e) if is_per_connection(&e) => {}
                Err(_) => {
                    self.counters.accept_errors.fetch_add(1, Relaxed);
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            }
        }
    }
}

impl Open {
    /// Tells the oldest connection still in its handshake to close; false when there is none.
    fn evict_oldest(&mut self, counters: &GateCounters) -> bool {
        while let Some(oldest) = self.handshaking.pop_front() {
            if !oldest.done.load(Relaxed) && !oldest.evicted.swap(true, Relaxed) {
                oldest.waker.wake();
                counters.evicted.fetch_add(1, Relaxed);
                return true;
            }
        }
        false
    }
}

/// An accept error about one connection (it went before it was taken), not the listener.
fn is_per_connection(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionRefused | ConnectionAborted | ConnectionReset
    )
}

/// A TCP listener for axum behind a gate: what it accepts holds a [`Pass`] and must finish the
/// WebSocket handshake (TLS first, if it asks for it; then the server answers `101`) within
/// the gate's deadline; a connection that only fetches the page is closed at the deadline too
/// (a browser opens another).
pub struct GatedListener {
    pub listener: TcpListener,
    pub gate: Arc<Gate>,
    /// TLS offered to connections that ask for it (`--tls-cert`).
    pub tls: Option<Tls>,
}

impl axum::serve::Listener for GatedListener {
    type Io = Gated;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (conn, peer, pass) = self.gate.accept(&self.listener).await;
        // Events are small and latency matters: no Nagle delay behind an unacknowledged
        // segment.
        let _ = conn.set_nodelay(true);
        let deadline = Box::pin(tokio::time::sleep(self.gate.handshake()));
        let gated = Gated {
            conn: Stream::new(conn, self.tls.as_ref()),
            pass,
            deadline: Some(deadline),
            counters: self.gate.counters.clone(),
        };
        (gated, peer)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

/// The peer of a connection a [`GatedListener`] accepted, for axum's `ConnectInfo`.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, GatedListener>>
    for Peer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, GatedListener>) -> Self {
        Peer(*stream.remote_addr())
    }
}

/// A connection until its handshake is done: reads fail once the deadline passes.
pub struct Gated {
    conn: Stream,
    pass: Pass,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    counters: Arc<GateCounters>,
}

/// How the server's answer to a WebSocket upgrade begins.
const SWITCHING: &[u8] = b"HTTP/1.1 101";

impl AsyncRead for Gated {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(deadline) = self.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                self.deadline = None;
                self.counters.handshake_timeouts.fetch_add(1, Relaxed);
                return Poll::Ready(Err(std::io::ErrorKind::TimedOut.into()));
            }
            if self.pass.handshake.poll_evicted(cx).is_ready() {
                self.deadline = None;
                return Poll::Ready(Err(std::io::ErrorKind::ConnectionAborted.into()));
            }
        }
        Pin::new(&mut self.conn).poll_read(cx, buf)
    }
}

impl AsyncWrite for Gated {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        if self.deadline.is_some() && bytes.starts_with(SWITCHING) {
            self.deadline = None; // upgraded: the WebSocket's own idle timeout takes over
            self.pass.handshake.finish();
        }
        Pin::new(&mut self.conn).poll_write(cx, bytes)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.conn).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.conn).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_share_the_limit() {
        let b = Budgets::from_limit(20_000);
        assert_eq!(b.metrics, 16);
        assert_eq!(
            b.web + b.irc + b.mailbox + b.pushes + b.metrics,
            20_000 - 512
        );
        assert!(b.web > b.mailbox && b.mailbox > b.irc && b.irc > b.pushes);
        let small = Budgets::from_limit(400);
        assert_eq!(
            small.web + small.irc + small.mailbox + small.pushes + small.metrics,
            300
        );
        assert!(small.metrics >= 1 && small.irc >= 1 && small.mailbox >= 1 && small.pushes >= 1);
    }

    #[test]
    fn a_gate_counts_per_address_and_in_all_and_gives_back() {
        let gate = Gate::new(GateConfig {
            budget: 3,
            per_ip: 2,
            handshake: HANDSHAKE,
        });
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let first = gate.admit(a).unwrap();
        let second = gate.admit(a).unwrap();
        assert!(gate.admit(a).is_none(), "the address's share");
        let third = gate.admit(b).unwrap();
        for pass in [&first, &second, &third] {
            pass.handshake.finish();
        }
        assert!(
            gate.admit("10.0.0.3".parse().unwrap()).is_none(),
            "the budget"
        );
        drop(first);
        let fourth = gate.admit(a).expect("given back");
        let c = &gate.counters;
        assert_eq!(c.refused_per_ip.load(Relaxed), 1);
        assert_eq!(c.refused_budget.load(Relaxed), 1);
        assert_eq!(c.accepted.load(Relaxed), 4);
        // The budget spent, a newcomer takes the place of the oldest connection still in its
        // handshake, never of one that finished it.
        let newcomer = gate.admit("10.0.0.9".parse().unwrap()).expect("room made");
        assert!(
            fourth.handshake.evicted.load(Relaxed),
            "the one still in its handshake"
        );
        assert!(!second.handshake.evicted.load(Relaxed));
        assert_eq!(c.evicted.load(Relaxed), 1);
        newcomer.handshake.finish();
        drop(fourth); // closed, as told
        let refused = gate.admit("10.0.0.10".parse().unwrap());
        assert!(
            refused.is_none(),
            "every connection held finished its handshake"
        );
        assert_eq!(c.refused_budget.load(Relaxed), 2);
        drop(second);
        assert!(
            gate.admit("10.0.0.10".parse().unwrap()).is_some(),
            "given back"
        );
    }
}
