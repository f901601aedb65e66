//! One WebSocket connection: its frames go to its shard in order, its events come back through
//! a bounded queue, and it is pinged, timed out when silent, and closed with a reason when it
//! cannot keep up or sends what is refused.

use super::{Shared, SUBPROTOCOL};
use crate::engine::Protocol;
use crate::streams::bridge::StreamEvent;
use crate::streams::Text;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{interval, timeout, Instant};

/// The largest frame or message a browser may send (a request is far smaller).
pub const MAX_FRAME: usize = 16 * 1024;
/// Read and write buffers: writes gather up to this much before going to the socket.
pub const BUFFER: usize = 4 * 1024;
/// The most a connection's write buffer holds (a batch of events, one at most of them large).
pub const MAX_WRITE_BUFFER: usize = 256 * 1024;
/// Events written in one batch, with one flush.
const BATCH: usize = 64;
/// A connection that sends nothing (not even a pong) for this long is closed, unless
/// `--ws-idle` says otherwise; it is pinged three times meanwhile.
pub const IDLE: Duration = Duration::from_secs(75);
/// How long one write may wait for the browser to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a close frame may wait behind what the browser has not read yet.
const CLOSE_PATIENCE: Duration = Duration::from_secs(30);
const TOO_SLOW: &str = "too slow: more than 1024 events waiting";
const _: () = assert!(crate::streams::QUEUE == 1024);

pub(super) async fn run(mut socket: WebSocket, peer: SocketAddr, shared: Arc<Shared>) {
    let hub = &shared.hub;
    let bridge = &hub.bridge;
    let mut connection = hub.connect(peer);
    let (conn, endpoint) = (connection.conn, connection.endpoint);
    // With the subprotocol, JSON from the start; without, the original client until a first
    // frame shows otherwise.
    let asked_json = socket.protocol().is_some_and(|p| p == SUBPROTOCOL);
    let mut protocol = if asked_json {
        Protocol::Web
    } else {
        Protocol::WebCompat
    };
    let server = &shared.cfg.server;
    let welcome = match protocol {
        Protocol::Web => format!(r#"{{"type":"welcome","server":{}}}"#, json_string(server)),
        _ => format!("Welcome to ChatServer {server}!"),
    };
    hub.to_shard(conn, StreamEvent::Opened(endpoint, protocol))
        .await;
    let mut first = true;
    let mut heard = Instant::now();
    let idle = shared.cfg.idle;
    let mut ping = interval(idle / 3);
    ping.tick().await; // the first tick is immediate
    let mut outcome = send(&mut socket, Message::Text(welcome.into())).await;
    while outcome.is_ok() {
        tokio::select! {
            received = socket.recv() => {
                heard = Instant::now();
                match received {
                    Some(Ok(Message::Text(text))) => {
                        bridge.counters.frames_in.fetch_add(1, Relaxed);
                        if first && protocol == Protocol::WebCompat && is_json_request(&text) {
                            hub.to_shard(conn, StreamEvent::Closed(endpoint, protocol)).await;
                            protocol = Protocol::Web;
                        }
                        first = false;
                        let event = StreamEvent::Frame(endpoint, protocol, text.as_bytes().into());
                        hub.to_shard(conn, event).await;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        let refusal = r#"{"type":"error","message":"frames must be text: JSON requests"}"#;
                        outcome = send(&mut socket, Message::Text(refusal.into())).await;
                    }
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                    Some(Ok(Message::Close(_))) | None => break,
                    Some(Err(e)) => {
                        // Refused by the protocol layer, which says why.
                        let (code, reason) = refusal(e);
                        let _ = close(&mut socket, code, reason).await;
                        break;
                    }
                }
            }
            event = connection.events.recv() => match event {
                // A write waits for the browser to read; a kick meanwhile ends the wait (what
                // was written stays buffered ahead of the close frame).
                Some(message) => tokio::select! {
                    sent = send_batch(&mut socket, message, &mut connection.events) => outcome = sent,
                    _ = &mut connection.kicked => {
                        let _ = close(&mut socket, 1013, TOO_SLOW).await;
                        break;
                    }
                },
                None => break,
            },
            _ = &mut connection.kicked => {
                let _ = close(&mut socket, 1013, TOO_SLOW).await;
                break;
            }
            _ = ping.tick() => {
                if heard.elapsed() > idle {
                    bridge.counters.closed_idle.fetch_add(1, Relaxed);
                    let _ = close(&mut socket, 1001, "idle").await;
                    break;
                }
                outcome = send(&mut socket, Message::Ping(Default::default())).await;
            }
        }
    }
    if outcome == Err(WriteFailed::TooSlow) {
        bridge.counters.closed_slow.fetch_add(1, Relaxed);
    }
    hub.disconnect(&connection, protocol).await;
}

/// Why a write did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFailed {
    /// The browser did not read within [`WRITE_TIMEOUT`].
    TooSlow,
    /// The connection is gone.
    Closed,
}

/// `first` and whatever else is queued (up to [`BATCH`]), gathered into few writes and one
/// flush, which the browser must take within [`WRITE_TIMEOUT`].
async fn send_batch(
    socket: &mut WebSocket,
    first: Text,
    queued: &mut mpsc::Receiver<Text>,
) -> Result<(), WriteFailed> {
    let gather = async {
        socket.feed(Message::Text(first)).await?;
        for _ in 1..BATCH {
            let Ok(next) = queued.try_recv() else { break };
            socket.feed(Message::Text(next)).await?;
        }
        socket.flush().await
    };
    match timeout(WRITE_TIMEOUT, gather).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFailed::Closed),
        Err(_) => Err(WriteFailed::TooSlow),
    }
}

/// A write the browser must take within [`WRITE_TIMEOUT`].
async fn send(socket: &mut WebSocket, message: Message) -> Result<(), WriteFailed> {
    match timeout(WRITE_TIMEOUT, socket.send(message)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFailed::Closed),
        Err(_) => Err(WriteFailed::TooSlow),
    }
}

/// Sends a close frame with its reason, behind what is already buffered, and waits up to
/// [`CLOSE_PATIENCE`] for the browser to read that far.
async fn close(socket: &mut WebSocket, code: u16, reason: &'static str) -> Result<(), WriteFailed> {
    let frame = CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    };
    match timeout(CLOSE_PATIENCE, socket.send(Message::Close(Some(frame)))).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(WriteFailed::Closed),
        Err(_) => Err(WriteFailed::TooSlow),
    }
}

/// The close code and reason for what the WebSocket layer refused.
fn refusal(e: axum::Error) -> (u16, &'static str) {
    match e.into_inner().downcast_ref::<tungstenite::Error>() {
        Some(tungstenite::Error::Capacity(_)) => (1009, "refused: frames are at most 16 KiB"),
        Some(tungstenite::Error::Utf8(_)) => (1007, "refused: text frames must be UTF-8"),
        Some(tungstenite::Error::Protocol(_)) => (1002, "refused: not a valid WebSocket frame"),
        _ => (1011, "refused: the connection failed"),
    }
}

/// A JSON object with a `type`: a request of the JSON protocol, not the original's text.
fn is_json_request(text: &str) -> bool {
    text.trim_start().starts_with('{')
        && serde_json::from_str::<serde_json::Value>(text)
            .is_ok_and(|v| v.get("type").is_some_and(serde_json::Value::is_string))
}

fn json_string(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}
