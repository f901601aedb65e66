//! Real `router` processes on loopback and a DuckChat client written here from the spec's
//! struct layouts (deliberately not the router's own codec). Every wait is bounded.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

pub const WAIT: Duration = Duration::from_secs(10);
/// How long silence must last before "nothing more arrives" is believed.
pub const QUIET: Duration = Duration::from_millis(300);

/// A free port for a router, below the kernel's ephemeral range (32768 and up by default):
/// a port the kernel picked for us could be handed to another test's client socket before
/// the router binds it, while one below that range is only ever taken by name. Each test
/// binary starts at its own offset, then counts up, skipping ports in use.
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id() * 997 % SPAN,
        Ordering::Relaxed,
        Ordering::Relaxed,
    );
    for _ in 0..SPAN {
        let port = (FIRST + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN) as u16;
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port from {FIRST} to {}", FIRST + SPAN);
}

/// A free port for a TCP listener (a router's `--ws`), from the same range as [`free_port`].
pub fn free_tcp_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free TCP port");
}

pub struct Router {
    pub child: Child,
    pub port: u16,
    lines: Receiver<String>,
    pub output: Vec<String>,
}

impl Router {
    /// Starts `router 127.0.0.1 PORT [127.0.0.1 NEIGHBOR]... EXTRA...` and waits until it listens.
    pub fn start(port: u16, neighbors: &[u16], extra: &[&str]) -> Router {
        let mut args = vec!["127.0.0.1".to_string(), port.to_string()];
        for n in neighbors {
            args.push("127.0.0.1".into());
            args.push(n.to_string());
        }
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::launch(&args, port)
    }

    /// Starts `router ARGS...` (which must listen on `port`) and waits until it listens.
    pub fn launch(args: &[String], port: u16) -> Router {
        let mut command = Command::new(env!("CARGO_BIN_EXE_router"));
        command.args(args);
        Self::run(command, port)
    }

    /// Like [`Router::start`], with open descriptors limited (the shell's `ulimit`, which the
    /// router then runs under, as its own process): `hard`, and `soft` to begin with.
    pub fn start_with_nofile(port: u16, extra: &[&str], hard: u64, soft: u64) -> Router {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg(format!(
                "ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$0\" \"$@\""
            ))
            .arg(env!("CARGO_BIN_EXE_router"))
            .args(["127.0.0.1", &port.to_string()])
            .args(extra);
        Self::run(command, port)
    }

    fn run(mut command: Command, port: u16) -> Router {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start router");
        let (tx, lines) = channel();
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        let mut router = Router {
            child,
            port,
            lines,
            output: Vec::new(),
        };
        router.wait_for_line("listening on", WAIT);
        router
    }

    /// Waits for an output line containing `needle`; panics with the output so far if none comes.
    pub fn wait_for_line(&mut self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.output.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => break,
            }
        }
        panic!(
            "router on {} never printed {needle:?}; output: {:#?}",
            self.port, self.output
        );
    }

    /// With `--stats-every`: waits until two stats lines in a row report the same number of
    /// datagrams in (the router has gone quiet) and returns it; panics if it never does.
    pub fn quiet_datagrams_in(&mut self) -> u64 {
        let read = |line: &str| -> u64 {
            let value = line.split("in=").nth(1).and_then(|v| v.split(' ').next());
            value.and_then(|v| v.parse().ok()).expect("a stats line")
        };
        let mut last = read(&self.wait_for_line("stats:", WAIT));
        for _ in 0..100 {
            let now = read(&self.wait_for_line("stats:", WAIT));
            if now == last {
                return now;
            }
            last = now;
        }
        panic!(
            "router on {} never went quiet: {} datagrams in",
            self.port, last
        );
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// SIGINT, then the exit status and everything it printed.
    pub fn interrupt(self) -> (std::process::ExitStatus, Vec<String>) {
        self.signal("INT")
    }

    /// Sends the named signal (`INT`, `TERM`), then returns the exit status and everything the
    /// router printed.
    pub fn signal(mut self, name: &str) -> (std::process::ExitStatus, Vec<String>) {
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success());
        let deadline = Instant::now() + WAIT;
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "router did not stop on SIG{name}"
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
            self.output.push(line);
        }
        (status, std::mem::take(&mut self.output))
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Router {
    fn drop(&mut self) {
        self.kill();
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Say {
        channel: String,
        user: String,
        text: String,
    },
    List(Vec<String>),
    Who {
        channel: String,
        users: Vec<String>,
    },
    Error(String),
    Other(Vec<u8>),
}

fn cstr(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

fn names(bytes: &[u8], count_at: usize, from: usize) -> Vec<String> {
    let n = i32::from_le_bytes(bytes[count_at..count_at + 4].try_into().unwrap()).max(0) as usize;
    bytes[from..].chunks_exact(32).take(n).map(cstr).collect()
}

fn parse(b: &[u8]) -> Reply {
    let kind = if b.len() >= 4 {
        i32::from_le_bytes(b[..4].try_into().unwrap())
    } else {
        -1
    };
    match (kind, b.len()) {
        (0, 132) => Reply::Say {
            channel: cstr(&b[4..36]),
            user: cstr(&b[36..68]),
            text: cstr(&b[68..132]),
        },
        (1, n) if n >= 8 => Reply::List(names(b, 4, 8)),
        (2, n) if n >= 40 => Reply::Who {
            channel: cstr(&b[8..40]),
            users: names(b, 4, 40),
        },
        (3, 68) => Reply::Error(cstr(&b[4..68])),
        _ => Reply::Other(b.to_vec()),
    }
}

pub struct Client {
    pub sock: UdpSocket,
    pub server: SocketAddr,
}

fn with_field(mut buf: Vec<u8>, s: &str, width: usize) -> Vec<u8> {
    let mut field = vec![0u8; width];
    let n = s.len().min(width - 1);
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
    buf.extend_from_slice(&field);
    buf
}

fn head(kind: i32) -> Vec<u8> {
    kind.to_le_bytes().to_vec()
}

impl Client {
    pub fn new(server: SocketAddr) -> Client {
        Client::from_ip(server, [127, 0, 0, 1])
    }

    /// A client on another loopback address (all of 127.0.0.0/8 is this host's): another host,
    /// as far as the router's per-address limits are concerned.
    pub fn from_ip(server: SocketAddr, ip: [u8; 4]) -> Client {
        let sock = UdpSocket::bind((std::net::Ipv4Addr::from(ip), 0)).unwrap();
        Client { sock, server }
    }

    /// Logs in and joins Common, as the stock client does, then waits until WHO lists the
    /// user: the join has then reached the channel's owner shard, so messages said from now on
    /// reach this client. (Two clients' datagrams may land on different shards, and nothing
    /// orders one client's JOIN before another client's SAY.)
    #[track_caller]
    ///
    /// A datagram may be lost on the way (a full socket buffer drops it, and the router counts
    /// that as `kernel_drops`), so it tries again, as a real client would, until [`WAIT`].
    pub fn connect(server: SocketAddr, name: &str) -> Client {
        let c = Client::new(server);
        c.sign_in(name);
        c
    }

    /// Logs in, joins Common and asks WHO until WHO lists the user (see [`Client::connect`]).
    pub fn sign_in(&self, name: &str) {
        const ATTEMPT: Duration = Duration::from_millis(500);
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            self.login(name);
            self.join("Common");
            self.who("Common");
            let attempt_end = Instant::now() + ATTEMPT;
            while let Some(left) = attempt_end.checked_duration_since(Instant::now()) {
                match self.recv(left) {
                    Some(Reply::Who { users, .. }) if users.iter().any(|u| u == name) => return,
                    _ => {}
                }
            }
        }
        panic!("{name} was never listed by WHO within {WAIT:?}");
    }

    pub fn raw(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).unwrap();
    }

    /// Sends a datagram; false when the kernel refused it (a full send buffer).
    pub fn try_raw(&self, bytes: &[u8]) -> bool {
        self.sock.send_to(bytes, self.server).is_ok()
    }

    pub fn login(&self, name: &str) {
        self.raw(&with_field(head(0), name, 32));
    }
    pub fn logout(&self) {
        self.raw(&head(1));
    }
    pub fn join(&self, channel: &str) {
        self.raw(&with_field(head(2), channel, 32));
    }
    pub fn leave(&self, channel: &str) {
        self.raw(&with_field(head(3), channel, 32));
    }
    pub fn say(&self, channel: &str, text: &str) {
        self.raw(&with_field(with_field(head(4), channel, 32), text, 64));
    }
    pub fn list(&self) {
        self.raw(&head(5));
    }
    pub fn who(&self, channel: &str) {
        self.raw(&with_field(head(6), channel, 32));
    }
    pub fn keep_alive(&self) {
        self.raw(&head(7));
    }

    /// The next datagram, or None after `limit`.
    pub fn recv(&self, limit: Duration) -> Option<Reply> {
        self.sock
            .set_read_timeout(Some(limit.max(Duration::from_millis(1))))
            .unwrap();
        let mut buf = [0u8; 65536];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => Some(parse(&buf[..n])),
            Err(_) => None,
        }
    }

    /// The next datagram; panics if none arrives in time.
    #[track_caller]
    pub fn expect(&self) -> Reply {
        self.recv(WAIT).expect("a reply within the wait limit")
    }

    /// Waits for a reply that satisfies `want`, skipping others; panics after the wait limit.
    #[track_caller]
    pub fn wait_for(&self, want: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = Instant::now() + WAIT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            if let Some(r) = self.recv(left) {
                if want(&r) {
                    return r;
                }
            }
        }
        panic!("no matching reply within {WAIT:?}");
    }

    /// The texts of the messages that arrive until `enough` says they are enough (or [`WAIT`]
    /// has passed: the caller's assertion then says what is missing), then of any more that
    /// arrive before [`QUIET`] passes without one: so a message delivered twice shows, and a
    /// slow machine only makes it wait.
    pub fn says_until(&self, enough: impl Fn(&[String]) -> bool) -> Vec<String> {
        let mut texts = Vec::new();
        let deadline = Instant::now() + WAIT;
        while !enough(&texts) {
            let left = deadline.checked_duration_since(Instant::now());
            match left.and_then(|left| self.recv(left)) {
                Some(r) => texts.extend(say_text(&r).map(String::from)),
                None => break,
            }
        }
        texts.extend(self.drain().iter().filter_map(say_text).map(String::from));
        texts
    }

    /// Everything that arrives until the line is quiet for [`QUIET`].
    pub fn drain(&self) -> Vec<Reply> {
        let mut got = Vec::new();
        while let Some(r) = self.recv(QUIET) {
            got.push(r);
        }
        got
    }
}

pub fn say_text(r: &Reply) -> Option<&str> {
    match r {
        Reply::Say { text, .. } => Some(text),
        _ => None,
    }
}

/// Repeats `send(i)` until `receiver` sees one of them: the federation's trees are then in place.
pub fn until_federated(sender: &Client, receiver: &Client, tag: &str) {
    let deadline = Instant::now() + WAIT;
    for i in 0.. {
        assert!(Instant::now() < deadline, "federation never carried {tag}");
        sender.say("Common", &format!("{tag}{i}"));
        if let Some(Reply::Say { text, .. }) = receiver.recv(Duration::from_millis(100)) {
            if text.starts_with(tag) {
                break;
            }
        }
    }
    // Let stragglers of the probe arrive and discard them.
    sender.drain();
    receiver.drain();
}
