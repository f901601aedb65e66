//! Simulated browsers: clients that reach the router over WebSocket and speak its JSON
//! protocol (`docs/websocket.md`), in the same channels as the UDP clients and with the same
//! accounting: a message's text is its stamp, and its `message` event is a delivery.
//!
//! Each browser is one TCP connection from its own loopback address; the sender writes to it
//! and a receiver reads from it, so each sits behind a mutex (they rarely meet).

use crate::clients::client_ip;
use crate::plan::{channel_name, client_name, Plan};
use crate::LoadError;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

type Ws = WebSocket<Retrying>;

/// A TCP stream whose reads and writes are tried again when interrupted (EINTR): the
/// WebSocket library takes an interrupted call for a failed connection, and such calls are
/// interrupted here now and then while the embedded router runs.
pub struct Retrying(TcpStream);

impl std::io::Read for Retrying {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

impl std::io::Write for Retrying {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        loop {
            match self.0.write(buf) {
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// How long one browser may take to connect, pick its nick and join.
const SETUP_WAIT: Duration = Duration::from_secs(10);

/// The browsers among the clients: `first..` of them, by client index.
pub struct Browsers {
    first: usize,
    conns: Vec<Mutex<Ws>>,
    fds: Vec<RawFd>,
}

impl Browsers {
    /// No browsers: every client is a UDP client.
    pub fn none(clients: usize) -> Self {
        Self {
            first: clients,
            conns: Vec::new(),
            fds: Vec::new(),
        }
    }

    /// Connects clients `first..plan.clients()` to `target` (the router's `--ws` address),
    /// each with its nick and in its channel, confirmed by the router's `ok` events.
    pub fn connect(plan: &Plan, first: usize, target: SocketAddr) -> Result<Self, LoadError> {
        let SocketAddr::V4(target_v4) = target else {
            return Err(LoadError::Setup(
                "browsers need an IPv4 --ws address".into(),
            ));
        };
        let mut conns = Vec::new();
        let mut fds = Vec::new();
        for client in first..plan.clients() {
            let setup = |e: String| LoadError::Setup(format!("browser {client}: {e}"));
            let stream = crate::io::tcp_connect_from(client_ip(client), target_v4)
                .map_err(|e| setup(format!("cannot connect to {target}: {e}")))?;
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .map_err(LoadError::Socket)?;
            let _ = stream.set_nodelay(true);
            let mut request = format!("ws://{target}/ws")
                .into_client_request()
                .map_err(|e| setup(e.to_string()))?;
            let protocol = "chat-router".parse().map_err(|_| setup("header".into()))?;
            request
                .headers_mut()
                .insert("Sec-WebSocket-Protocol", protocol);
            let (mut ws, _) = tungstenite::client(request, Retrying(stream))
                .map_err(|e| setup(format!("handshake: {e}")))?;
            let channel = channel_name(plan.channel_of[client]);
            for request in [
                serde_json::json!({"type": "nick", "name": client_name(client as u32)}),
                serde_json::json!({"type": "join", "channel": channel}),
            ] {
                ws.send(Message::Text(request.to_string().into()))
                    .map_err(|e| setup(format!("send: {e}")))?;
            }
            wait_for_oks(&mut ws, 2).map_err(|e| setup(format!("waiting for ok: {e}")))?;
            ws.get_ref()
                .0
                .set_nonblocking(true)
                .map_err(LoadError::Socket)?;
            fds.push(ws.get_ref().0.as_raw_fd());
            conns.push(Mutex::new(ws));
        }
        Ok(Self { first, conns, fds })
    }

    pub fn count(&self) -> usize {
        self.conns.len()
    }

    pub fn is_browser(&self, client: usize) -> bool {
        client >= self.first && client - self.first < self.conns.len()
    }

    pub fn fd(&self, client: usize) -> RawFd {
        self.fds[client - self.first]
    }

    /// Says `text` in `channel`; false when the connection has failed. A frame the socket
    /// cannot take now stays buffered and goes with the next write or read.
    pub fn say(&self, client: usize, channel: &str, text: &str) -> bool {
        let mut ws = self.conns[client - self.first]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let mut frame = arrayvec::ArrayString::<192>::new();
        // Channel names and stamps need no escaping.
        let written = std::fmt::Write::write_fmt(
            &mut frame,
            format_args!(r#"{{"type":"say","channel":"{channel}","text":"{text}"}}"#),
        );
        if written.is_err() {
            return false;
        }
        match ws.send(Message::Text(frame.as_str().into())) {
            Ok(()) => true,
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => true,
            Err(_) => false,
        }
    }

    /// Reads every frame that is ready; calls `on_message` with the text of each `message`
    /// event (the stamp). Returns false when the connection has failed.
    pub fn read(&self, client: usize, mut on_message: impl FnMut(&[u8])) -> bool {
        let mut ws = self.conns[client - self.first]
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        loop {
            match ws.read() {
                Ok(Message::Text(text)) => {
                    if let Some(stamp) = message_text(text.as_bytes()) {
                        on_message(stamp);
                    }
                }
                Ok(_) => {}
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    // Pongs to the router's pings and buffered frames go out now.
                    let _ = ws.flush();
                    return true;
                }
                Err(_) => return false,
            }
        }
    }
}

/// The `text` of a `message` event, found without parsing the whole event: loadgen's texts
/// are stamps, which need no escaping.
fn message_text(event: &[u8]) -> Option<&[u8]> {
    if !event.starts_with(br#"{"type":"message""#) {
        return None;
    }
    let key = br#","text":""#;
    let at = event.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &event[at..];
    let end = rest.iter().position(|&b| b == b'"')?;
    Some(&rest[..end])
}

/// Reads until `n` `ok` events have come (others are skipped), within [`SETUP_WAIT`].
fn wait_for_oks(ws: &mut Ws, n: usize) -> Result<(), String> {
    let deadline = Instant::now() + SETUP_WAIT;
    let mut oks = 0;
    while oks < n {
        if Instant::now() > deadline {
            return Err("no ok from the router in time".into());
        }
        match ws.read() {
            Ok(Message::Text(t)) if t.starts_with(r#"{"type":"ok""#) => oks += 1,
            Ok(Message::Text(t)) if t.starts_with(r#"{"type":"error""#) => {
                return Err(format!("refused: {t}"));
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_text_of_message_events_only() {
        let event = br#"{"type":"message","channel":"c7","from":"u3","text":"3 a1 ff","origin":null,"id":"00","ts":1}"#;
        assert_eq!(message_text(event), Some(&b"3 a1 ff"[..]));
        assert_eq!(message_text(br#"{"type":"presence","text":"x"}"#), None);
        assert_eq!(message_text(br#"{"type":"message","channel":"c"}"#), None);
    }
}
