//! Browsers: one thread runs an HTTP server (axum on a single-threaded tokio runtime) that
//! serves the chat page at `/` and WebSocket at `/ws` on one TCP port. The UDP shards stay as
//! they are: each connection belongs to one shard, which gets its events through a bounded
//! queue ([`bridge`]) and sends events back through another; to the engine a connection is a
//! session like any other (`Endpoint::Stream`).
//!
//! Crates: axum (HTTP and the upgrade; the tokio project's own server framework) over
//! tokio-tungstenite, whose WebSocket implementation passes the Autobahn suite and refuses what
//! RFC 6455 forbids (unmasked client frames, bad UTF-8 in text, oversized frames).

pub mod bridge;
mod connection;

pub use connection::IDLE;

use crate::background::Background;
use crate::gate::{Gate, GateCounters, GatedListener, Peer};
use crate::tls::Tls;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bridge::Bridge;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// An event's text as the web thread sends it: shared, so that one payload fanned out to many
/// connections is copied once.
pub type Text = axum::extract::ws::Utf8Bytes;

/// A shard's payload as an event (front-ends write UTF-8 JSON; anything else is not sent).
pub fn text(payload: &[u8]) -> Option<Text> {
    Text::try_from(axum::body::Bytes::copy_from_slice(payload)).ok()
}

/// The page, served from the binary.
const PAGE: &str = include_str!("page.html");
/// Events the dispatcher hands over before it lets the connections write.
const YIELD_EVERY: usize = 64;
/// The subprotocol that asks for the JSON protocol from the first frame.
pub const SUBPROTOCOL: &str = "chat-router";

#[derive(Debug, Clone)]
pub struct WebConfig {
    pub listen: SocketAddr,
    /// Origins allowed to open `/ws` (the `Origin` header, e.g. `http://localhost:8080`);
    /// empty: any.
    pub origins: Vec<String>,
    /// This server's name in welcome lines and events.
    pub server: String,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle: std::time::Duration,
    /// https and wss, beside plain http and ws (`--tls-cert`).
    pub tls: Option<Tls>,
    /// Connections one address may hold at once (`--ws-per-ip`).
    pub per_ip: usize,
}

/// A connection's way back: its events, and the kick that closes it when it falls behind.
struct Handle {
    events: mpsc::Sender<axum::extract::ws::Message>,
    kick: Option<oneshot::Sender<()>>,
}

struct Shared {
    bridge: Arc<Bridge>,
    cfg: WebConfig,
    next_conn: AtomicU64,
    conns: Mutex<HashMap<u64, Handle>>,
}

pub struct WebServer {
    pub local: SocketAddr,
    /// What the listener refused.
    pub gate: Arc<GateCounters>,
    thread: Background,
}

impl WebServer {
    /// Stops serving: every connection is dropped (the shards get no `Closed`: they stop too).
    pub fn stop(&mut self) {
        self.thread.stop();
    }
}

/// Binds `cfg.listen` (errors are reported here, before anything runs) and starts the thread.
pub fn start(cfg: WebConfig, bridge: Arc<Bridge>, gate: Arc<Gate>) -> std::io::Result<WebServer> {
    let listener = std::net::TcpListener::bind(cfg.listen)?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    let shared = Arc::new(Shared {
        bridge,
        cfg,
        next_conn: AtomicU64::new(0),
        conns: Mutex::new(HashMap::new()),
    });
    let counters = gate.counters.clone();
    let thread = Background::start("web", move || serve(listener, gate, shared))?;
    Ok(WebServer {
        local,
        gate: counters,
        thread,
    })
}

async fn serve(listener: std::net::TcpListener, gate: Arc<Gate>, shared: Arc<Shared>) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    let app = Router::new()
        .route("/", get(page))
        .route("/ws", get(upgrade))
        .with_state(shared.clone());
    let server = axum::serve(
        GatedListener {
            listener,
            gate,
            tls: shared.cfg.tls.clone(),
        },
        app.into_make_service_with_connect_info::<Peer>(),
    );
    tokio::select! {
        _ = server => {}
        _ = dispatch(shared) => {}
    }
}

async fn page() -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-cache")], Html(PAGE))
}

async fn upgrade(
    ws: WebSocketUpgrade,
    ConnectInfo(Peer(peer)): ConnectInfo<Peer>,
    headers: HeaderMap,
    State(shared): State<Arc<Shared>>,
) -> Response {
    if !shared.cfg.origins.is_empty() {
        let origin = headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("");
        if !shared.cfg.origins.iter().any(|o| o == origin) {
            return (StatusCode::FORBIDDEN, "origin not allowed\n").into_response();
        }
    }
    ws.protocols([SUBPROTOCOL])
        .max_message_size(connection::MAX_FRAME)
        .max_frame_size(connection::MAX_FRAME)
        // Small buffers: memory per idle connection is what 10,000 browsers cost.
        .read_buffer_size(connection::BUFFER)
        .write_buffer_size(connection::BUFFER)
        .max_write_buffer_size(connection::MAX_WRITE_BUFFER)
        .on_upgrade(move |socket| connection::run(socket, peer, shared))
}

/// Hands what the shards sent to each connection's queue; a connection whose queue is full is
/// kicked (told why and closed), so one slow browser never holds up the others.
async fn dispatch(shared: Arc<Shared>) {
    loop {
        let mut handed = 0;
        while let Some((conn, text)) = shared.bridge.next_for_web() {
            handed += 1;
            if handed % YIELD_EVERY == 0 {
                // The connections share this thread: let them write before handing more.
                tokio::task::yield_now().await;
            }
            let counters = &shared.bridge.counters;
            let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
            let Some(handle) = conns.get_mut(&conn) else {
                counters.events_unrouted.fetch_add(1, Relaxed);
                continue;
            };
            match handle
                .events
                .try_send(axum::extract::ws::Message::Text(text))
            {
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
        shared.bridge.web_wake.notified().await;
    }
}
