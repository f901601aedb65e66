//! IRC clients over TCP (`router --irc ADDR`, `docs/irc.md`), as one of the stream thread's
//! transports. A connection speaks IRC's connection-level part here: lines (at most
//! [`irc::MAX_TAGGED_LINE`] bytes, CR LF or LF), capability negotiation (`CAP`, offering only
//! `sasl`), the registration (`NICK`, `USER`, then the 001-005 welcome and 422 once the
//! nick is granted), SASL PLAIN's exchange (its credentials go to the shard, which checks them
//! against the accounts), `PING` both ways and `QUIT`. Every other line of a registered client
//! goes to the connection's shard, where the IRC front-end (`engine::frontend::irc`) decodes it.
//! TLS on the same port when the router has a certificate (the first byte tells).
//!
//! The transport reads the lines it relays only while it waits for the answer to the
//! registration's nick (the front-end's `NICK` line, which it turns into the welcome) or to
//! SASL (903 or 904); a registered client's lines pass untouched, except that a rename is
//! noted.

use super::bridge::StreamEvent;
use super::{Connection, Hub, Text, Transport};
use crate::engine::Protocol;
use crate::engine::{IrcWord as Word, IRC_SERVER as SERVER, IRC_UNREGISTERED};
use crate::gate::{Gate, GateCounters, Pass};
use crate::proto::irc::{self, Message};
use crate::tls::{Stream, Tls};
use futures_util::future::LocalBoxFuture;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::{interval, timeout, Instant};

/// A client that sends nothing (not even a PONG) for this long is closed; it is pinged three
/// times meanwhile.
pub const IDLE: Duration = Duration::from_secs(120);
/// How long one write may wait for the client to read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Events written with one system call, at most.
const BATCH: usize = 64;
/// SASL's credentials arrive in pieces of 400 base64 bytes; a PLAIN exchange needs few.
const SASL_PIECE: usize = 400;
const MAX_SASL: usize = 4 * SASL_PIECE;
/// Lines kept from a client between its registration and its welcome, at most.
const EARLY_LINES: usize = 32;
/// The read buffer grows to at most one line.
const READ_CHUNK: usize = 4096;

#[derive(Debug, Clone)]
pub struct IrcConfig {
    pub listen: SocketAddr,
    /// IRC over TLS on the same port (`--tls-cert`).
    pub tls: Option<Tls>,
    pub idle: Duration,
    /// When the router started, for 003.
    pub started: String,
}

impl Transport for IrcConfig {
    fn name(&self) -> &'static str {
        "irc"
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
        let cfg = Arc::new(*self);
        Box::pin(async move {
            loop {
                let (tcp, peer, pass) = gate.accept(&listener).await;
                // Lines are small and latency matters: no Nagle delay.
                let _ = tcp.set_nodelay(true);
                let stream = Stream::new(tcp, cfg.tls.as_ref());
                let client = Client::new(cfg.clone(), hub.clone(), peer, gate.counters.clone());
                tokio::spawn(client.run(stream, pass, gate.handshake()));
            }
        })
    }
}

/// How far SASL has gone.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sasl {
    Idle,
    /// `AUTHENTICATE PLAIN` was answered `+`: the credentials come next.
    Receiving(Vec<u8>),
    /// The credentials went to the shard; 903 or 904 comes back.
    Checking,
    SignedIn,
}

/// One connection's state.
struct Client {
    cfg: Arc<IrcConfig>,
    hub: Arc<Hub>,
    connection: Connection,
    peer: SocketAddr,
    /// The nick the client asked for (before its registration), then the one it has.
    nick: Option<Vec<u8>>,
    /// USER was sent (its fields are not kept: every line names a user `nick!nick@server`).
    user: bool,
    /// CAP LS was sent and CAP END not yet: the registration waits.
    negotiating: bool,
    /// The client asked for the `sasl` capability.
    sasl_enabled: bool,
    sasl: Sasl,
    /// The account SASL signed in to (its name is the registration's nick).
    account: Option<Vec<u8>>,
    /// The registration's nick went to the shard.
    registering: bool,
    /// The welcome was sent: the connection is registered.
    welcomed: bool,
    /// Lines waiting to be written.
    out: Vec<u8>,
    /// What came for the client before its welcome (mail waiting for an account SASL signed
    /// in to): written right after the welcome, where clients expect it.
    held: Vec<u8>,
    /// Lines the client sent after its registration but before its welcome (clients that do
    /// not wait for 001 before their JOIN): forwarded right after the welcome.
    early: Vec<Vec<u8>>,
    /// The listener's counters (a registration that times out is counted there).
    gate: Arc<GateCounters>,
    closing: Option<&'static str>,
}

/// Why the connection closes, as its ERROR line says.
const QUIT: &str = "Quit";
const PING_TIMEOUT: &str = "Ping timeout";
const TOO_SLOW: &str = "Too slow: more than 1024 events waiting";
const TOO_LONG: &str = "Line too long";

impl Client {
    fn new(cfg: Arc<IrcConfig>, hub: Arc<Hub>, peer: SocketAddr, gate: Arc<GateCounters>) -> Self {
        let connection = hub.connect(peer);
        Client {
            cfg,
            hub,
            connection,
            peer,
            nick: None,
            user: false,
            negotiating: false,
            sasl_enabled: false,
            sasl: Sasl::Idle,
            account: None,
            registering: false,
            welcomed: false,
            out: Vec::with_capacity(512),
            held: Vec::new(),
            early: Vec::new(),
            gate,
            closing: None,
        }
    }

    async fn run(mut self, stream: Stream, pass: Pass, handshake: Duration) {
        let (conn, endpoint) = (self.connection.conn, self.connection.endpoint);
        self.hub
            .to_shard(conn, StreamEvent::Opened(endpoint, Protocol::Irc))
            .await;
        let (mut reader, mut writer) = tokio::io::split(stream);
        let mut buf = Vec::with_capacity(READ_CHUNK);
        let mut heard = Instant::now();
        let registration = tokio::time::sleep(handshake);
        tokio::pin!(registration);
        let mut ping = interval(self.cfg.idle / 3);
        ping.tick().await; // the first tick is immediate
        while self.closing.is_none() {
            tokio::select! {
                read = read_more(&mut reader, &mut buf) => {
                    heard = Instant::now();
                    match read {
                        Ok(0) | Err(_) => break,
                        Ok(_) => self.take_lines(&mut buf).await,
                    }
                }
                event = self.connection.events.recv() => match event {
                    Some(text) => {
                        self.relay(&text, &pass).await;
                        for _ in 1..BATCH {
                            let Ok(next) = self.connection.events.try_recv() else { break };
                            self.relay(&next, &pass).await;
                        }
                    }
                    None => break,
                },
                _ = &mut self.connection.kicked => self.closing = Some(TOO_SLOW),
                _ = &mut registration, if !self.welcomed => {
                    self.gate.handshake_timeouts.fetch_add(1, Relaxed);
                    self.closing = Some("Registration timeout");
                }
                _ = pass.handshake.evicted(), if !self.welcomed => {
                    self.closing = Some("Server full");
                }
                _ = ping.tick() => {
                    if heard.elapsed() > self.cfg.idle {
                        self.hub.bridge.counters.closed_idle.fetch_add(1, Relaxed);
                        self.closing = Some(PING_TIMEOUT);
                    } else {
                        self.line(format_args!("PING :{SERVER}"));
                    }
                }
            }
            if !self.out.is_empty() && !self.flush(&mut writer).await {
                break;
            }
        }
        if let Some(why) = self.closing {
            let host = self.peer.ip();
            self.line(format_args!("ERROR :Closing link: ({host}) [{why}]"));
            let _ = self.flush(&mut writer).await;
            let _ = timeout(WRITE_TIMEOUT, writer.shutdown()).await;
        }
        self.hub.disconnect(&self.connection, Protocol::Irc).await;
        drop(pass);
    }

    /// Takes every complete line out of `buf`; a line longer than IRC allows closes the
    /// connection.
    async fn take_lines(&mut self, buf: &mut Vec<u8>) {
        let mut start = 0;
        while let Some(end) = buf[start..].iter().position(|&b| b == b'\n') {
            let mut line = &buf[start..start + end];
            if let Some(stripped) = line.strip_suffix(b"\r") {
                line = stripped;
            }
            let line = line.to_vec();
            start += end + 1;
            self.take_line(&line).await;
            if self.closing.is_some() {
                return;
            }
        }
        buf.drain(..start);
        if buf.len() > irc::MAX_TAGGED_LINE {
            self.closing = Some(TOO_LONG);
        }
    }

    async fn take_line(&mut self, line: &[u8]) {
        if line.len() > irc::MAX_TAGGED_LINE {
            self.closing = Some(TOO_LONG);
            return;
        }
        let Ok(message) = irc::parse(line) else {
            return; // an empty line, or bytes no IRC line has: nothing to answer
        };
        let me = self.me();
        match message.command_upper().as_slice() {
            b"CAP" => self.cap(&message).await,
            b"PING" => {
                let token = Word(message.param(0).unwrap_or(b""));
                self.line(format_args!(":{SERVER} PONG {SERVER} :{token}"));
            }
            b"PONG" => {}
            b"QUIT" => self.closing = Some(QUIT),
            b"PASS" if !self.registering => {}
            b"USER" | b"PASS" if self.registering => {
                self.line(format_args!(":{SERVER} 462 {me} :You may not reregister"));
            }
            b"USER" => match message.param(0) {
                Some(name) if !name.is_empty() => {
                    self.user = true;
                    self.try_register().await;
                }
                _ => self.line(format_args!(
                    ":{SERVER} 461 {me} USER :Not enough parameters"
                )),
            },
            b"NICK" if !self.registering => match message.param(0) {
                Some(nick) if irc::is_valid_nick(nick) => {
                    self.nick = Some(nick.to_vec());
                    self.try_register().await;
                }
                Some(nick) if !nick.is_empty() => {
                    let nick = Word(&nick[..nick.len().min(64)]);
                    self.line(format_args!(
                        ":{SERVER} 432 {me} {nick} :Erroneous nickname"
                    ));
                }
                _ => self.line(format_args!(":{SERVER} 431 {me} :No nickname given")),
            },
            b"AUTHENTICATE" => self.authenticate(&message).await,
            _ if !self.registering => {
                self.line(format_args!(":{SERVER} 451 {me} :You have not registered"));
            }
            // Another nick, after the registration's was refused.
            b"NICK" if !self.welcomed => self.forward(line).await,
            _ if !self.welcomed => {
                if self.early.len() < EARLY_LINES {
                    self.early.push(line.to_vec());
                } else {
                    self.line(format_args!(":{SERVER} 451 {me} :You have not registered"));
                }
            }
            b"JOIN" | b"PART" | b"PRIVMSG" | b"NOTICE" => self.forward_each(&message).await,
            _ => self.forward(line).await,
        }
    }

    /// CAP LS / REQ / LIST / END: `sasl` (PLAIN) is the one capability offered.
    async fn cap(&mut self, message: &Message<'_>) {
        let me = self.me();
        let sub = message.param(0).unwrap_or(b"").to_ascii_uppercase();
        match sub.as_slice() {
            b"LS" => {
                self.negotiating = !self.registering;
                let version_302 = message.param(1).is_some_and(|v| v >= b"302".as_slice());
                let caps = if version_302 { "sasl=PLAIN" } else { "sasl" };
                self.line(format_args!(":{SERVER} CAP {me} LS :{caps}"));
            }
            b"REQ" => {
                self.negotiating = !self.registering;
                let asked = String::from_utf8_lossy(message.param(1).unwrap_or(b"")).into_owned();
                let asked = asked.trim();
                let caps: Vec<&str> = asked.split(' ').filter(|c| !c.is_empty()).collect();
                if !caps.is_empty() && caps.iter().all(|c| *c == "sasl" || *c == "-sasl") {
                    self.sasl_enabled = caps.last() == Some(&"sasl");
                    self.line(format_args!(":{SERVER} CAP {me} ACK :{asked}"));
                } else {
                    let asked = asked.replace(['\r', '\n'], " ");
                    self.line(format_args!(":{SERVER} CAP {me} NAK :{asked}"));
                }
            }
            b"LIST" => {
                let caps = if self.sasl_enabled { "sasl" } else { "" };
                self.line(format_args!(":{SERVER} CAP {me} LIST :{caps}"));
            }
            b"END" => {
                self.negotiating = false;
                self.try_register().await;
            }
            _ => {
                let sub = Word(&sub);
                self.line(format_args!(
                    ":{SERVER} 410 {me} {sub} :Invalid CAP command"
                ));
            }
        }
    }

    /// AUTHENTICATE: PLAIN only, before the registration, once the client asked for `sasl`;
    /// the credentials go to the shard as one line.
    async fn authenticate(&mut self, message: &Message<'_>) {
        let me = self.me();
        let arg = message.param(0).unwrap_or(b"");
        if self.registering || !self.sasl_enabled {
            let code = if self.sasl == Sasl::SignedIn {
                "907"
            } else {
                "904"
            };
            let why = match code {
                "907" => "You have already authenticated using SASL",
                _ => "SASL authentication failed",
            };
            return self.line(format_args!(":{SERVER} {code} {me} :{why}"));
        }
        if arg == b"*" {
            self.sasl = Sasl::Idle;
            return self.line(format_args!(
                ":{SERVER} 906 {me} :SASL authentication aborted"
            ));
        }
        match std::mem::replace(&mut self.sasl, Sasl::Idle) {
            Sasl::Idle | Sasl::SignedIn if arg.eq_ignore_ascii_case(b"PLAIN") => {
                self.sasl = Sasl::Receiving(Vec::new());
                self.line(format_args!("AUTHENTICATE +"));
            }
            Sasl::Idle | Sasl::SignedIn => {
                self.line(format_args!(
                    ":{SERVER} 908 {me} PLAIN :are available SASL mechanisms"
                ));
                self.line(format_args!(
                    ":{SERVER} 904 {me} :SASL authentication failed"
                ));
            }
            Sasl::Receiving(mut got) => {
                if arg != b"+" {
                    got.extend_from_slice(arg);
                }
                if got.len() > MAX_SASL {
                    return self.line(format_args!(
                        ":{SERVER} 904 {me} :SASL authentication failed"
                    ));
                }
                if arg.len() == SASL_PIECE {
                    self.sasl = Sasl::Receiving(got);
                    return; // more pieces follow
                }
                self.sasl = Sasl::Checking;
                let mut line = b"AUTHENTICATE ".to_vec();
                line.extend_from_slice(&got);
                self.forward(&line).await;
            }
            Sasl::Checking => self.sasl = Sasl::Checking, // one exchange at a time
        }
    }

    /// Sends the registration's nick to the shard once NICK and USER are in and neither
    /// capability negotiation nor SASL is under way. An account's name, once SASL signed the
    /// client in to it, is its nick.
    async fn try_register(&mut self) {
        let waiting = self.negotiating || matches!(self.sasl, Sasl::Receiving(_) | Sasl::Checking);
        if self.registering || waiting || !self.user {
            return;
        }
        let Some(nick) = self.account.clone().or_else(|| self.nick.clone()) else {
            return;
        };
        self.registering = true;
        let mut line = b"NICK ".to_vec();
        line.extend_from_slice(&nick);
        self.forward(&line).await;
    }

    /// A command whose first parameter may list several targets, once per target (`JOIN
    /// #a,#b`); a JOIN is followed by NAMES, as IRC clients expect after the JOIN line.
    async fn forward_each(&mut self, message: &Message<'_>) {
        let Some(targets) = message.param(0) else {
            return self.forward_message(message, None).await;
        };
        let join = message.is("JOIN");
        let targets: Vec<Vec<u8>> = irc::list(targets).take(16).map(<[u8]>::to_vec).collect();
        for target in targets {
            self.forward_message(message, Some(&target)).await;
            if join && target.starts_with(b"#") {
                let mut names = b"NAMES ".to_vec();
                names.extend_from_slice(&target);
                self.forward(&names).await;
            }
        }
    }

    /// `message` again, with `target` as its first parameter.
    async fn forward_message(&mut self, message: &Message<'_>, target: Option<&[u8]>) {
        let mut line = message.command.to_vec();
        for (i, param) in message.params.iter().enumerate() {
            let param = if i == 0 {
                target.unwrap_or(param)
            } else {
                param
            };
            line.push(b' ');
            if i + 1 == message.params.len() && i > 0 {
                line.push(b':');
            }
            line.extend_from_slice(param);
        }
        self.forward(&line).await;
    }

    async fn forward(&mut self, line: &[u8]) {
        self.hub
            .bridge
            .counters
            .frames_in
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (conn, endpoint) = (self.connection.conn, self.connection.endpoint);
        let frame = StreamEvent::Frame(endpoint, Protocol::Irc, line.into());
        self.hub.to_shard(conn, frame).await;
    }

    /// What the shard sent, on its way to the client. Until the welcome, the answer to the
    /// registration's nick becomes the welcome; SASL's outcome lets the registration go on;
    /// a rename is noted. Anything else passes as it is.
    async fn relay(&mut self, text: &Text, pass: &Pass) {
        let bytes = text.as_bytes();
        if self.welcomed && self.sasl != Sasl::Checking && second_word(bytes) != b"NICK" {
            self.out.extend_from_slice(bytes);
            return;
        }
        let mut sasl_answered = false;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            let Ok(message) = irc::parse(line.strip_suffix(b"\r\n").unwrap_or(line)) else {
                self.out.extend_from_slice(line);
                continue;
            };
            match message.command {
                b"NICK" => {
                    self.nick = message.param(0).map(<[u8]>::to_vec);
                    if !self.welcomed {
                        self.welcome();
                        pass.handshake.finish();
                        let held = std::mem::take(&mut self.held);
                        self.out.extend_from_slice(&held);
                        continue;
                    }
                }
                b"900" => self.account = message.param(2).map(<[u8]>::to_vec),
                b"903" => {
                    self.sasl = Sasl::SignedIn;
                    sasl_answered = true;
                }
                b"904" => {
                    self.sasl = Sasl::Idle;
                    sasl_answered = true;
                }
                // Chat before the welcome waits for it.
                b"PRIVMSG" | b"NOTICE" | b"JOIN" | b"PART" if !self.welcomed => {
                    self.held.extend_from_slice(line);
                    continue;
                }
                _ => {}
            }
            self.out.extend_from_slice(line);
        }
        if sasl_answered {
            self.try_register().await;
        }
        if self.welcomed && !self.early.is_empty() {
            for line in std::mem::take(&mut self.early) {
                self.take_line(&line).await;
            }
        }
    }

    /// 001 to 005 and 422: the client is registered as its nick.
    fn welcome(&mut self) {
        self.welcomed = true;
        let me = self.me();
        let version = env!("CARGO_PKG_VERSION");
        let started = self.cfg.started.clone();
        let max_channel = crate::proto::Name::CAPACITY + 1;
        let max_nick = irc::MAX_NICK;
        self.line(format_args!(
            // The client's mask as every line of the server writes it.
            ":{SERVER} 001 {me} :Welcome to the {SERVER} IRC network, {me}!{me}@{SERVER}"
        ));
        self.line(format_args!(
            ":{SERVER} 002 {me} :Your host is {SERVER}, running version {version}"
        ));
        self.line(format_args!(
            ":{SERVER} 003 {me} :This server was created {started}"
        ));
        self.line(format_args!(":{SERVER} 004 {me} {SERVER} {version} i n"));
        self.line(format_args!(
            ":{SERVER} 005 {me} NETWORK={SERVER} CHANTYPES=# CHANNELLEN={max_channel} \
             NICKLEN={max_nick} CASEMAPPING=ascii PREFIX=() CHANMODES=,,,n \
             :are supported by this server"
        ));
        self.line(format_args!(":{SERVER} 422 {me} :MOTD File is missing"));
    }

    /// The client's nick as lines address it (`*` before it has one).
    fn me(&self) -> String {
        match (&self.nick, self.welcomed) {
            (Some(nick), true) => Word(nick).to_string(),
            _ => IRC_UNREGISTERED.to_string(),
        }
    }

    /// One line and its CR LF, to be written.
    fn line(&mut self, args: std::fmt::Arguments<'_>) {
        use std::io::Write as _;
        let _ = self.out.write_fmt(args);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Writes what waits; false when the client is gone or does not read.
    async fn flush(&mut self, writer: &mut WriteHalf<Stream>) -> bool {
        let written = timeout(WRITE_TIMEOUT, writer.write_all(&self.out)).await;
        self.out.clear();
        if self.out.capacity() > 64 * 1024 {
            self.out.shrink_to(4096);
        }
        matches!(written, Ok(Ok(())))
    }
}

/// Reads what the client sent after what `buf` holds (cancel-safe: only what was read is
/// added).
async fn read_more(reader: &mut ReadHalf<Stream>, buf: &mut Vec<u8>) -> std::io::Result<usize> {
    buf.reserve(READ_CHUNK);
    reader.read_buf(buf).await
}

/// The command of a line the server wrote (`:prefix COMMAND ...`).
fn second_word(bytes: &[u8]) -> &[u8] {
    let after = match bytes.iter().position(|&b| b == b' ') {
        Some(i) => &bytes[i + 1..],
        None => return b"",
    };
    let end = after.iter().position(|&b| b == b' ').unwrap_or(after.len());
    &after[..end]
}
