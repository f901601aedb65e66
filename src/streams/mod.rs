//! Stream transports: clients that hold a TCP connection (browsers over WebSocket, IRC
//! clients). Each transport is a module behind [`Transport`]: it accepts its connections
//! through its listener's [`Gate`] and runs each one, speaking its protocol's connection-level
//! part (an HTTP upgrade, IRC's registration, pings) itself and handing requests to the shards
//! as frames. What they share is the [`Hub`]: the queues to and from the shards ([`bridge`]),
//! which connection is which, and the dispatcher that hands each connection what the shards
//! sent it. All transports run on one thread (a single-threaded tokio runtime); to a shard a
//! connection is a session like any other (`Endpoint::Stream`), whatever its transport.
//!
//! Adding a protocol over TCP: its front-end (`src/engine/frontend/`), its transport here,
//! and one line in the runtime that registers it.

pub mod bridge;
pub mod irc;
pub mod web;

use crate::background::Background;
use crate::engine::{Endpoint, Protocol};
use crate::gate::{Gate, GateCounters};
use bridge::{Bridge, StreamEvent};
use futures_util::future::LocalBoxFuture;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

/// An event's bytes as the stream thread sends them: UTF-8 (every stream front-end writes it),
/// shared, so that one payload fanned out to many connections is copied once.
pub type Text = axum::extract::ws::Utf8Bytes;

/// A shard's payload as an event (stream front-ends write UTF-8; anything else is not sent).
pub fn text(payload: &[u8]) -> Option<Text> {
    Text::try_from(axum::body::Bytes::copy_from_slice(payload)).ok()
}

/// Events the dispatcher hands over before it lets the connections write.
const YIELD_EVERY: usize = 64;
/// Events waiting to be written to one connection before it is closed as too slow.
pub const QUEUE: usize = 1024;
/// How long an event waits for room in its shard's queue before it is given up (the router
/// is stopping or hopelessly overloaded).
const SHARD_PATIENCE: Duration = Duration::from_secs(10);

/// A protocol over TCP, as the stream thread runs it.
pub trait Transport: Send + 'static {
    /// Its name in counters, metrics and errors (`web`, `irc`).
    fn name(&self) -> &'static str;
    /// The address it listens on.
    fn listen(&self) -> SocketAddr;
    /// Accepts connections through `gate` and serves each, until the thread stops.
    fn serve(
        self: Box<Self>,
        listener: tokio::net::TcpListener,
        gate: Arc<Gate>,
        hub: Arc<Hub>,
    ) -> LocalBoxFuture<'static, ()>;
}

/// A connection's way back: its events, and the kick that closes it when it falls behind.
struct Handle {
    events: mpsc::Sender<Text>,
    kick: Option<oneshot::Sender<()>>,
}

/// What every transport's connections share.
pub struct Hub {
    pub bridge: Arc<Bridge>,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, Handle>>,
}

/// A connection as its transport holds it: what the shards send it, and the kick.
pub struct Connection {
    pub endpoint: Endpoint,
    pub conn: u64,
    /// What the shards sent, in order.
    pub events: mpsc::Receiver<Text>,
    /// Fires when the connection fell [`QUEUE`] events behind: it is to close.
    pub kicked: oneshot::Receiver<()>,
}

impl Hub {
    pub fn new(bridge: Arc<Bridge>) -> Arc<Self> {
        Arc::new(Self {
            bridge,
            next_conn: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        })
    }

    /// A new connection from `peer`, registered for the shards' events.
    pub fn connect(&self, peer: SocketAddr) -> Connection {
        self.bridge.counters.connections.fetch_add(1, Relaxed);
        let conn = self.next_conn.fetch_add(1, Relaxed);
        let (events, queued) = mpsc::channel(QUEUE);
        let (kick, kicked) = oneshot::channel();
        let handle = Handle {
            events,
            kick: Some(kick),
        };
        self.lock().insert(conn, handle);
        Connection {
            endpoint: Endpoint::Stream { conn, peer },
            conn,
            events: queued,
            kicked,
        }
    }

    /// The connection ended: its shard is told, after whatever it sent before.
    pub async fn disconnect(&self, connection: &Connection, protocol: Protocol) {
        self.lock().remove(&connection.conn);
        let event = StreamEvent::Closed(connection.endpoint, protocol);
        self.to_shard(connection.conn, event).await;
    }

    /// Queues an event for the connection's shard, waiting while that queue is full (the
    /// connection's own requests wait with it: back-pressure on the client, never a lost
    /// event).
    pub async fn to_shard(&self, conn: u64, mut event: StreamEvent) {
        let deadline = Instant::now() + SHARD_PATIENCE;
        loop {
            match self.bridge.to_shard(conn, event) {
                Ok(()) => return,
                Err(back) if Instant::now() < deadline => {
                    event = back;
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                Err(_) => return,
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A transport's listener, once bound.
pub struct Listening {
    pub name: &'static str,
    pub local: SocketAddr,
    /// What the listener refused.
    pub gate: Arc<GateCounters>,
}

/// The stream thread.
pub struct StreamServer {
    pub listening: Vec<Listening>,
    thread: Background,
}

impl StreamServer {
    /// Stops serving: every connection is dropped (the shards get no `Closed`: they stop too).
    pub fn stop(&mut self) {
        self.thread.stop();
    }

    /// The address transport `name` listens on.
    pub fn local(&self, name: &str) -> Option<SocketAddr> {
        self.listening
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.local)
    }
}

/// Why a transport could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve {name} on {addr}: {source}")]
pub struct StartError {
    pub name: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// Binds every transport's address (errors are reported here, before anything runs) and
/// starts the thread that serves them all.
pub fn start(
    transports: Vec<(Box<dyn Transport>, Arc<Gate>)>,
    bridge: Arc<Bridge>,
) -> Result<StreamServer, StartError> {
    let mut bound = Vec::with_capacity(transports.len());
    let mut listening = Vec::with_capacity(transports.len());
    for (transport, gate) in transports {
        let (name, addr) = (transport.name(), transport.listen());
        let error = |source| StartError { name, addr, source };
        let listener = std::net::TcpListener::bind(addr).map_err(error)?;
        listener.set_nonblocking(true).map_err(error)?;
        let local = listener.local_addr().map_err(error)?;
        listening.push(Listening {
            name,
            local,
            gate: gate.counters.clone(),
        });
        bound.push((transport, listener, gate));
    }
    let hub = Hub::new(bridge);
    let thread =
        Background::start("streams", move || serve(bound, hub)).map_err(|source| StartError {
            name: "streams",
            addr: listening_addr(&listening),
            source,
        })?;
    Ok(StreamServer { listening, thread })
}

fn listening_addr(listening: &[Listening]) -> SocketAddr {
    listening
        .first()
        .map_or(SocketAddr::from(([0, 0, 0, 0], 0)), |l| l.local)
}

type Bound = (Box<dyn Transport>, std::net::TcpListener, Arc<Gate>);

async fn serve(bound: Vec<Bound>, hub: Arc<Hub>) {
    let mut running = Vec::with_capacity(bound.len() + 1);
    for (transport, listener, gate) in bound {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            continue;
        };
        running.push(transport.serve(listener, gate, hub.clone()));
    }
    running.push(Box::pin(dispatch(hub)));
    // Each runs until the thread stops.
    futures_util::future::join_all(running).await;
}

/// Hands what the shards sent to each connection's queue; a connection whose queue is full is
/// kicked (its transport tells it why and closes it), so one slow client never holds up the
/// others.
async fn dispatch(hub: Arc<Hub>) {
    let counters = &hub.bridge.counters;
    loop {
        let mut handed = 0;
        while let Some((conn, text)) = hub.bridge.next_for_stream() {
            handed += 1;
            if handed % YIELD_EVERY == 0 {
                // The connections share this thread: let them write before handing more.
                tokio::task::yield_now().await;
            }
            let mut conns = hub.lock();
            let Some(handle) = conns.get_mut(&conn) else {
                counters.events_unrouted.fetch_add(1, Relaxed);
                continue;
            };
            match handle.events.try_send(text) {
                Ok(()) => {
                    counters.events_out.fetch_add(1, Relaxed);
                }
                Err(mpsc::error::TrySendError::Full(_)) => {
                    counters.closed_slow.fetch_add(1, Relaxed);
                    if let Some(kick) = handle.kick.take() {
                        let _ = kick.send(());
                    }
                    conns.remove(&conn);
                }
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    conns.remove(&conn);
                }
            }
        }
        hub.bridge.stream_wake.notified().await;
    }
}
