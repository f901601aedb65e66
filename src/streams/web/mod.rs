//! Browsers: an HTTP server (axum) that serves the chat page at `/` and WebSocket at `/ws` on
//! one TCP port, as one of the stream thread's transports ([`super::Transport`]).
//!
//! Crates: axum (HTTP and the upgrade; the tokio project's own server framework) over
//! tokio-tungstenite, whose WebSocket implementation passes the Autobahn suite and refuses what
//! RFC 6455 forbids (unmasked client frames, bad UTF-8 in text, oversized frames).

mod connection;

pub use connection::IDLE;

use super::{Hub, Transport};
use crate::gate::{Gate, GatedListener, Peer};
use crate::tls::Tls;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::future::LocalBoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;

/// The page, served from the binary.
const PAGE: &str = include_str!("page.html");
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

struct Shared {
    hub: Arc<Hub>,
    cfg: WebConfig,
}

impl Transport for WebConfig {
    fn name(&self) -> &'static str {
        "web"
    }

    fn listen(&self) -> SocketAddr {
        self.listen
    }

    fn serve(
        self: Box<Self>,
        listener: tokio::net::TcpListener,
        gate: Arc<Gate>,
        hub: Arc<Hub>,
    ) -> LocalBoxFuture<'static, ()> {
        let tls = self.tls.clone();
        let shared = Arc::new(Shared { hub, cfg: *self });
        let app = Router::new()
            .route("/", get(page))
            .route("/ws", get(upgrade))
            .with_state(shared);
        let server = axum::serve(
            GatedListener {
                listener,
                gate,
                tls,
            },
            app.into_make_service_with_connect_info::<Peer>(),
        );
        Box::pin(async move {
            let _ = server.await;
        })
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
