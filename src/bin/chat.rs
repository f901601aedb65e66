//! `chat`: a terminal client for people. `chat HOST PORT NAME` speaks DuckChat with the course
//! client's commands; `chat --text HOST PORT [NICK]` speaks the text protocol's rooms.
//!
//! One thread reads the keyboard and sends; another prints what the server sends and keeps
//! the session alive (a DuckChat KEEP_ALIVE after a minute without sending, as the protocol
//! asks). Each line the server sends is printed as one line, so the client can be scripted.

use chat_router::config;
use chat_router::proto::duckchat::{self, Inbound, Outbound, SayLayout};
use clap::Parser;
use std::collections::BTreeSet;
use std::io::{BufRead, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The longest name the protocol carries (its 32-byte fields end in a NUL).
const MAX_NAME: usize = 31;
/// The longest text of one SAY.
const MAX_SAY: usize = 63;
/// A DuckChat client that has sent nothing for this long sends a KEEP_ALIVE.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// A chat client. DuckChat: `chat HOST PORT NAME` logs in as NAME and joins Common; then
/// `/join C`, `/leave C`, `/switch C` (the channel your lines go to), `/list`, `/who C` and
/// `/exit`; any other line is said on the current channel. Text rooms: `chat --text HOST PORT
/// [NICK]`, then `/join N`, `/part`, `/nick NAME`, `/msg NICK text`, `/register NAME PASSWORD`,
/// `/login NAME PASSWORD`, chat lines, `/exit`.
#[derive(Debug, Parser)]
#[command(name = "chat", version = env!("CHAT_ROUTER_VERSION"))]
struct Cli {
    /// The server's host (a name or an address).
    host: String,
    /// The server's UDP port.
    port: String,
    /// DuckChat: the name to log in as. Text: a nickname to set (optional).
    name: Option<String>,
    /// Speak the text protocol (rooms 1 to 10, `+OK`/`-ERR` answers) instead of DuckChat.
    #[arg(long)]
    text: bool,
}

fn main() -> ExitCode {
    let cli = match config::parse_command_line::<Cli>("chat") {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<(), String> {
    let server = config::parse_course_args(&[cli.host.clone(), cli.port.clone()])
        .map_err(|e| e.to_string())?
        .0;
    let socket = UdpSocket::bind(if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })
    .and_then(|s| s.connect(server).map(|()| s))
    .map_err(|e| format!("cannot reach {server}: {e}"))?;
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .map_err(|e| e.to_string())?;
    let link = Arc::new(Link {
        socket,
        started: Instant::now(),
        last_sent: AtomicU64::new(0),
        done: AtomicBool::new(false),
        server,
        refused: AtomicBool::new(false),
        last_line: std::sync::Mutex::new(Vec::new()),
    });
    let printer = {
        let link = link.clone();
        let text = cli.text;
        std::thread::spawn(move || link.print_incoming(text))
    };
    let result = if cli.text {
        text_session(&link, cli.name.as_deref())
    } else {
        let name = cli.name.as_deref().ok_or("give a NAME to log in as")?;
        duckchat_session(&link, name, server)
    };
    link.done.store(true, Ordering::Relaxed);
    let _ = printer.join();
    result
}

/// The socket, and when something was last sent (for keep-alives).
struct Link {
    socket: UdpSocket,
    started: Instant,
    last_sent: AtomicU64,
    done: AtomicBool,
    server: SocketAddr,
    /// The "no server" note was printed.
    refused: AtomicBool,
    /// The last line typed (text mode), sent again once the address is confirmed.
    last_line: std::sync::Mutex<Vec<u8>>,
}

impl Link {
    fn send(&self, bytes: &[u8]) -> Result<(), String> {
        self.last_sent
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
        match self.socket.send(bytes) {
            Ok(_) => Ok(()),
            // The kernel's report that nothing listened when an earlier datagram arrived (the
            // server not started yet, or restarting): UDP goes on; say so, once.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                if !self.refused.swap(true, Ordering::Relaxed) {
                    eprintln!("chat: no server answering at {} (yet)", self.server);
                }
                Ok(())
            }
            Err(e) => Err(format!("cannot send: {e}")),
        }
    }

    fn request(&self, req: Inbound<'_>) -> Result<(), String> {
        let mut buf = [0u8; 128];
        let n = req
            .encode(&mut buf, SayLayout::UserFirst)
            .map_err(|_| "request too long".to_string())?;
        self.send(&buf[..n])
    }

    /// The router gives a text session its code when asked (`/confirm` at start), or asks for
    /// it before the session registers, signs in or leaves a message (docs/accounts.md): the
    /// client sends the code back, then the line that was refused, as a person would.
    fn confirm_if_asked(&self, reply: &[u8]) {
        const ASKED: &[u8] = b"-ERR Confirm your address first: /confirm ";
        const GIVEN: &[u8] = b"+OK Code ";
        let (code, refused) = match (reply.strip_prefix(ASKED), reply.strip_prefix(GIVEN)) {
            (Some(code), _) => (code, true),
            (None, Some(code)) => (code, false),
            (None, None) => return,
        };
        let mut confirm = b"/confirm ".to_vec();
        confirm.extend_from_slice(code);
        let _ = self.send(&confirm);
        if refused {
            let again = self.last_line.lock().map(|l| l.clone()).unwrap_or_default();
            if !again.is_empty() {
                let _ = self.send(&again);
            }
        }
    }

    /// Prints what arrives until the session ends; in DuckChat, keeps the session alive.
    fn print_incoming(&self, text: bool) {
        let mut buf = [0u8; 65536];
        let stdout = std::io::stdout();
        while !self.done.load(Ordering::Relaxed) {
            if !text {
                let idle = self.started.elapsed().as_millis() as u64
                    - self.last_sent.load(Ordering::Relaxed);
                if idle >= KEEP_ALIVE.as_millis() as u64 {
                    let _ = self.request(Inbound::KeepAlive);
                }
            }
            let Ok(n) = self.socket.recv(&mut buf) else {
                continue; // a timeout (or the server's port closed for now: keep listening)
            };
            if text {
                self.confirm_if_asked(&buf[..n]);
            }
            let mut out = stdout.lock();
            let _ = if text {
                writeln!(out, "{}", String::from_utf8_lossy(&buf[..n]))
            } else {
                print_duckchat(&mut out, &buf[..n])
            };
            let _ = out.flush();
        }
    }
}

fn print_duckchat(out: &mut impl Write, datagram: &[u8]) -> std::io::Result<()> {
    let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    match duckchat::decode_outbound(datagram) {
        Ok(Outbound::Say {
            channel,
            user,
            text,
        }) => writeln!(
            out,
            "[{}][{}]: {}",
            lossy(channel),
            lossy(user),
            lossy(text)
        ),
        Ok(Outbound::List(names)) => {
            writeln!(out, "Existing channels:")?;
            for name in names.iter() {
                writeln!(out, " {}", lossy(name))?;
            }
            Ok(())
        }
        Ok(Outbound::Who { channel, users }) => {
            writeln!(out, "Users on channel {}:", lossy(channel))?;
            for user in users.iter() {
                writeln!(out, " {}", lossy(user))?;
            }
            Ok(())
        }
        Ok(Outbound::Error { message }) => writeln!(out, "Error: {}", lossy(message)),
        Err(_) => writeln!(out, "(a datagram this client cannot read)"),
    }
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn duckchat_session(link: &Link, name: &str, server: SocketAddr) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(format!("a name is 1 to {MAX_NAME} bytes"));
    }
    link.request(Inbound::Login {
        user: name.as_bytes(),
    })?;
    let mut joined = BTreeSet::from(["Common".to_string()]);
    let mut active = Some("Common".to_string());
    link.request(Inbound::Join { channel: b"Common" })?;
    eprintln!("chat: logged in to {server} as {name}, in Common (/exit to leave)");
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let (command, arg) = match line.strip_prefix('/') {
            Some(rest) => rest.split_once(' ').unwrap_or((rest, "")),
            None => ("", ""),
        };
        let arg = cut(arg.trim(), MAX_NAME);
        match (line.starts_with('/'), command) {
            (false, _) => match &active {
                Some(channel) => link.request(Inbound::Say {
                    channel: channel.as_bytes(),
                    text: cut(&line, MAX_SAY).as_bytes(),
                })?,
                None => eprintln!("chat: you are in no channel: /join one"),
            },
            (true, "exit") => break,
            (true, "join") if !arg.is_empty() => {
                link.request(Inbound::Join {
                    channel: arg.as_bytes(),
                })?;
                joined.insert(arg.to_string());
                active = Some(arg.to_string());
            }
            (true, "leave") if !arg.is_empty() => {
                link.request(Inbound::Leave {
                    channel: arg.as_bytes(),
                })?;
                joined.remove(arg);
                if active.as_deref() == Some(arg) {
                    active = None;
                }
            }
            (true, "switch") if !arg.is_empty() => {
                if joined.contains(arg) {
                    active = Some(arg.to_string());
                } else {
                    eprintln!("chat: you have not joined {arg}");
                }
            }
            (true, "list") => link.request(Inbound::List)?,
            (true, "who") if !arg.is_empty() => link.request(Inbound::Who {
                channel: arg.as_bytes(),
            })?,
            (true, "join" | "leave" | "switch" | "who") => {
                eprintln!("chat: /{command} needs a channel")
            }
            (true, _) => eprintln!("chat: unknown command /{command}"),
        }
    }
    link.request(Inbound::Logout)
}

fn text_session(link: &Link, nick: Option<&str>) -> Result<(), String> {
    // Shows at once that this address receives, so that mail for the nick it takes reaches it
    // (the router gives its code; the code goes back: docs/accounts.md).
    link.send(b"/confirm")?;
    if let Some(nick) = nick {
        link.send(format!("/nick {nick}").as_bytes())?;
    }
    eprintln!(
        "chat: text rooms: /join N, /part, /nick NAME, /msg NICK text, /register NAME PASSWORD, \
         /login NAME PASSWORD, chat lines, /exit"
    );
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        if line == "/exit" {
            break;
        }
        if !line.is_empty() {
            if let Ok(mut last) = link.last_line.lock() {
                *last = line.as_bytes().to_vec();
            }
            link.send(line.as_bytes())?;
        }
    }
    link.send(b"/quit")
}
