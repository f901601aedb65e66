//! The mailbox against real router processes, byte for byte as the original's Python client
//! speaks it: replies, pushes to the client's listen port (which it opens only after reading
//! its CONNECT reply), stored messages delivered in order exactly once, connections that close
//! early or go silent, and kill -9 in the middle of a burst of SENDs.

use crate::support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use support::{free_port, free_tcp_port, Router, WAIT};

pub(crate) struct Mailbox {
    pub(crate) router: Router,
    pub(crate) port: u16,
}

pub(crate) fn data_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("chat-router-mailbox-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

pub(crate) fn start(dir: &Path, port: u16) -> Mailbox {
    start_with(dir, port, &[])
}

pub(crate) fn start_with(dir: &Path, port: u16, extra: &[&str]) -> Mailbox {
    let addr = format!("127.0.0.1:{port}");
    let mut args = vec![
        "--mailbox",
        &addr,
        "--data-dir",
        dir.to_str().unwrap(),
        "--cores",
        "1",
    ];
    args.extend_from_slice(extra);
    let mut router = Router::start(free_port(), &[], &args);
    router.wait_for_line("mailbox on", WAIT);
    Mailbox { router, port }
}

impl Mailbox {
    /// One request on its own connection; the whole answer.
    pub(crate) fn ask(&self, fields: &[&str]) -> Vec<u8> {
        let mut c = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        c.set_read_timeout(Some(WAIT)).unwrap();
        let mut request = Vec::new();
        for f in fields {
            request.extend_from_slice(f.as_bytes());
            request.push(0);
        }
        c.write_all(&request).unwrap();
        let mut answer = Vec::new();
        c.read_to_end(&mut answer).unwrap();
        answer
    }
}

/// A client's listen port, as the Python client opens one.
pub(crate) struct Listener(TcpListener);

impl Listener {
    pub(crate) fn new() -> Self {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        Listener(l)
    }

    pub(crate) fn port(&self) -> String {
        self.0.local_addr().unwrap().port().to_string()
    }

    /// The pushes that arrive within `limit` (each on its own connection), as field lists,
    /// until `want` have come.
    pub(crate) fn pushes(&self, want: usize, limit: Duration) -> Vec<Vec<String>> {
        self.pushes_until(want, limit, limit)
    }

    /// Pushes until `want` have come, none came for `quiet`, or `limit` passed.
    fn pushes_until(&self, want: usize, quiet: Duration, limit: Duration) -> Vec<Vec<String>> {
        let mut got = Vec::new();
        let deadline = Instant::now() + limit;
        let mut last = Instant::now();
        while got.len() < want && Instant::now() < deadline && last.elapsed() < quiet {
            match self.0.accept() {
                Ok((mut c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(WAIT)).unwrap();
                    let mut bytes = Vec::new();
                    c.read_to_end(&mut bytes).unwrap();
                    let fields: Vec<String> = bytes
                        .split(|&b| b == 0)
                        .filter(|f| !f.is_empty())
                        .map(|f| String::from_utf8_lossy(f).into_owned())
                        .collect();
                    got.push(fields);
                    last = Instant::now();
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        got
    }
}

pub(crate) fn message(sender: &str, id: u32, text: &str) -> Vec<String> {
    vec![
        "SEND_MESSAGE".into(),
        sender.into(),
        id.to_string(),
        text.into(),
    ]
}

#[test]
fn the_protocol_byte_for_byte() {
    let dir = data_dir("protocol");
    let m = start(&dir, free_tcp_port());
    assert_eq!(m.ask(&["REGISTER", "amy"]), [0]);
    assert_eq!(m.ask(&["REGISTER", "amy"]), [1]);
    assert_eq!(m.ask(&["REGISTER", "bob"]), [0]);
    assert_eq!(m.ask(&["UNREGISTER", "zed"]), [1]);
    assert_eq!(m.ask(&["CONNECT", "zed", "5000"]), [1]);
    assert_eq!(m.ask(&["DISCONNECT", "zed"]), [1]);
    assert_eq!(m.ask(&["DISCONNECT", "bob"]), [2], "not connected");
    assert_eq!(m.ask(&["SEND", "amy", "zed", "hi"]), [1]);
    // bob is offline: stored, with an id.
    assert_eq!(m.ask(&["SEND", "amy", "bob", "first"]), b"\x000\0");
    let (amy, bob) = (Listener::new(), Listener::new());
    assert_eq!(m.ask(&["CONNECT", "amy", &amy.port()]), [0]);
    assert_eq!(
        m.ask(&["CONNECT", "amy", &amy.port()]),
        [2],
        "already connected"
    );
    assert_eq!(m.ask(&["CONNECT", "bob", &bob.port()]), [0]);
    assert_eq!(bob.pushes(1, WAIT), [message("amy", 0, "first")]);
    assert_eq!(
        amy.pushes(1, WAIT),
        [vec!["SEND_MESS_ACK".to_string(), "0".into()]]
    );
    // Both online: pushed at once, acknowledged.
    assert_eq!(m.ask(&["SEND", "bob", "amy", "hello amy"]), b"\x001\0");
    assert_eq!(amy.pushes(1, WAIT), [message("bob", 1, "hello amy")]);
    assert_eq!(
        bob.pushes(1, WAIT),
        [vec!["SEND_MESS_ACK".to_string(), "1".into()]]
    );
    // A text of 256 characters (the Python client lets one through) is cut to 255 bytes, as
    // the original cuts it, not refused with a closed connection (the client would hang).
    let long = "x".repeat(256);
    assert_eq!(m.ask(&["SEND", "bob", "amy", &long]), b"\x002\0");
    assert_eq!(amy.pushes(1, WAIT), [message("bob", 2, &long[..255])]);
    assert_eq!(bob.pushes(1, WAIT).len(), 1, "its acknowledgement");
    assert_eq!(m.ask(&["DISCONNECT", "bob"]), [0]);
    assert_eq!(m.ask(&["UNREGISTER", "bob"]), [0]);
    assert_eq!(m.ask(&["SEND", "amy", "bob", "gone"]), [1]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn stored_messages_arrive_in_order_exactly_once() {
    let dir = data_dir("order");
    let m = start(&dir, free_tcp_port());
    for u in ["amy", "bob"] {
        assert_eq!(m.ask(&["REGISTER", u]), [0]);
    }
    for i in 0..30 {
        let answer = m.ask(&["SEND", "amy", "bob", &format!("m{i}")]);
        assert_eq!(answer[0], 0);
    }
    let bob = Listener::new();
    assert_eq!(m.ask(&["CONNECT", "bob", &bob.port()]), [0]);
    let got = bob.pushes(30, WAIT);
    let texts: Vec<&str> = got.iter().map(|p| p[3].as_str()).collect();
    let want: Vec<String> = (0..30).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, want);
    assert!(
        bob.pushes(1, Duration::from_millis(500)).is_empty(),
        "nothing twice"
    );
    assert_eq!(m.ask(&["DISCONNECT", "bob"]), [0]);
    assert_eq!(m.ask(&["CONNECT", "bob", &bob.port()]), [0]);
    assert!(
        bob.pushes(1, Duration::from_millis(500)).is_empty(),
        "not again on reconnect"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn early_closes_half_requests_and_garbage_change_nothing() {
    let dir = data_dir("hostile");
    let m = start(&dir, free_tcp_port());
    // Connects and closes without a request.
    drop(TcpStream::connect(("127.0.0.1", m.port)).unwrap());
    // Half a request, then silence: it must not hold up anyone else.
    let mut half = TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    half.write_all(b"REGISTER\0ha").unwrap();
    // Garbage.
    let mut junk = TcpStream::connect(("127.0.0.1", m.port)).unwrap();
    junk.write_all(&[0xff; 600]).unwrap();
    junk.set_read_timeout(Some(WAIT)).unwrap();
    let mut answer = Vec::new();
    let _ = junk.read_to_end(&mut answer);
    assert!(answer.is_empty(), "garbage gets no answer: {answer:?}");
    assert_eq!(
        m.ask(&["REGISTER", "amy"]),
        [0],
        "while a half request waits"
    );
    // The half request, closed early, did nothing: "ha" was never registered.
    drop(half);
    assert_eq!(m.ask(&["REGISTER", "ha"]), [0]);
    // A short request is never replayed as the previous one (the original's phantom SENDs).
    assert_eq!(m.ask(&["REGISTER", "bob"]), [0]);
    assert_eq!(m.ask(&["SEND", "amy", "bob", "once"]), b"\x000\0");
    drop(TcpStream::connect(("127.0.0.1", m.port)).unwrap());
    let bob = Listener::new();
    assert_eq!(m.ask(&["CONNECT", "bob", &bob.port()]), [0]);
    assert_eq!(
        bob.pushes(2, Duration::from_secs(2)),
        [message("amy", 0, "once")]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn acknowledged_messages_survive_kill_9() {
    survive_kill_9("checksum");
}

#[test]
fn acknowledged_messages_survive_kill_9_with_two_phase_commit() {
    survive_kill_9("two-phase");
}

fn survive_kill_9(commit: &str) {
    let dir = data_dir(&format!("crash-{commit}"));
    let port = free_tcp_port();
    let extra = ["--mailbox-commit", commit];
    let mut m = start_with(&dir, port, &extra);
    for u in ["bob", "s0", "s1", "s2", "s3"] {
        assert_eq!(m.ask(&["REGISTER", u]), [0]);
    }
    // Four senders send as fast as they can; the router is killed in the middle.
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..4)
        .map(|s| {
            let acked = acked.clone();
            std::thread::spawn(move || {
                for i in 0..100_000 {
                    let text = format!("s{s}-{i}");
                    let Ok(mut c) = TcpStream::connect(("127.0.0.1", port)) else {
                        return;
                    };
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let request = format!("SEND\0s{s}\0bob\0{text}\0");
                    if c.write_all(request.as_bytes()).is_err() {
                        return;
                    }
                    let mut answer = Vec::new();
                    let _ = c.read_to_end(&mut answer);
                    match answer.first() {
                        Some(0) => acked.lock().unwrap().push(text),
                        _ => return,
                    }
                }
            })
        })
        .collect();
    // Killed in the middle of the burst, once some SENDs are acknowledged.
    let deadline = Instant::now() + WAIT;
    while acked.lock().unwrap().len() <= 50 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    m.router.kill(); // SIGKILL
    for s in senders {
        s.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 50,
        "only {} acknowledged before the kill",
        acked.len()
    );
    let m = start_with(&dir, port, &extra);
    let bob = Listener::new();
    assert_eq!(m.ask(&["CONNECT", "bob", &bob.port()]), [0]);
    // Everything acknowledged, then whatever else comes before a second of quiet.
    let mut got = bob.pushes(acked.len(), Duration::from_secs(30));
    got.extend(bob.pushes_until(8, Duration::from_secs(1), Duration::from_secs(5)));
    let texts: Vec<String> = got.iter().map(|p| p[3].clone()).collect();
    let mut seen = std::collections::HashSet::new();
    for t in &texts {
        assert!(seen.insert(t.clone()), "{t} delivered twice");
    }
    for a in &acked {
        assert!(seen.contains(a), "{a} was acknowledged and lost");
    }
    // At most the messages stored whose answer the kill cut off come on top, and in each
    // sender's order.
    assert!(
        texts.len() <= acked.len() + 4,
        "{} delivered, {} acknowledged",
        texts.len(),
        acked.len()
    );
    for s in 0..4 {
        let mine: Vec<u64> = texts
            .iter()
            .filter_map(|t| {
                t.strip_prefix(&format!("s{s}-"))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        assert!(mine.windows(2).all(|w| w[0] < w[1]), "s{s} out of order");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_sender_who_was_away_gets_its_acknowledgement_when_it_connects() {
    let dir = data_dir("ack");
    let m = start(&dir, free_tcp_port());
    for u in ["amy", "bob"] {
        assert_eq!(m.ask(&["REGISTER", u]), [0]);
    }
    // amy sends while offline; bob gets it; amy is not connected to hear of it.
    assert_eq!(
        m.ask(&["SEND", "amy", "bob", "while you were out"]),
        b"\x000\0"
    );
    let bob = Listener::new();
    assert_eq!(m.ask(&["CONNECT", "bob", &bob.port()]), [0]);
    assert_eq!(
        bob.pushes(1, WAIT),
        [message("amy", 0, "while you were out")]
    );
    // The acknowledgement waits (on disk) for amy's next CONNECT, then comes once.
    let amy = Listener::new();
    assert_eq!(m.ask(&["CONNECT", "amy", &amy.port()]), [0]);
    assert_eq!(
        amy.pushes(1, WAIT),
        [vec!["SEND_MESS_ACK".to_string(), "0".into()]]
    );
    assert_eq!(m.ask(&["DISCONNECT", "amy"]), [0]);
    assert_eq!(m.ask(&["CONNECT", "amy", &amy.port()]), [0]);
    assert!(amy.pushes(1, Duration::from_millis(500)).is_empty(), "once");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn connecting_and_disconnecting_leaves_nothing_behind() {
    let dir = data_dir("cycles");
    let m = start(&dir, free_tcp_port());
    assert_eq!(m.ask(&["REGISTER", "amy"]), [0]);
    let amy = Listener::new();
    for _ in 0..200 {
        assert_eq!(m.ask(&["CONNECT", "amy", &amy.port()]), [0]);
        assert_eq!(m.ask(&["DISCONNECT", "amy"]), [0]);
    }
    // A few more requests on the same thread: the woken deliverers have run by their answers.
    for _ in 0..5 {
        assert_eq!(m.ask(&["REGISTER", "amy"]), [1]);
    }
    let (_, output) = m.router.interrupt();
    let report = output.iter().find(|l| l.starts_with("mailbox:")).unwrap();
    assert!(report.contains(" deliverers=0 "), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A text-protocol client over UDP.
pub(crate) struct Text(UdpSocket, SocketAddr);

impl Text {
    pub(crate) fn new(router: SocketAddr) -> Self {
        let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
        Text(sock, router)
    }

    pub(crate) fn send(&self, line: &str) {
        self.0.send_to(line.as_bytes(), self.1).unwrap();
    }

    /// The next line within `limit`.
    pub(crate) fn next(&self, limit: Duration) -> Option<String> {
        self.0.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 2048];
        let (n, _) = self.0.recv_from(&mut buf).ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    }

    /// Shows the router that this address receives: asks for its code and sends it back.
    pub(crate) fn confirm(&self) {
        let given = self.ask("/confirm");
        let code = given
            .strip_prefix("+OK Code ")
            .unwrap_or_else(|| panic!("no code: {given}"));
        assert_eq!(
            self.ask(&format!("/confirm {code}")),
            "+OK Address confirmed"
        );
    }

    /// One command and its one reply.
    pub(crate) fn ask(&self, line: &str) -> String {
        self.send(line);
        self.next(WAIT)
            .unwrap_or_else(|| panic!("no reply to {line}"))
    }
}

/// `+OK Message ID for TO stored`: the id.
fn stored_id(reply: &str, to: &str) -> u32 {
    reply
        .strip_prefix("+OK Message ")
        .and_then(|r| r.strip_suffix(&format!(" for {to} stored")))
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not stored for {to}: {reply}"))
}

#[test]
fn one_namespace_for_text_users_and_mailbox_users() {
    let dir = data_dir("namespace");
    let m = start(&dir, free_tcp_port());
    let udp = m.router.addr();
    for user in ["amy", "bob", "carol"] {
        assert_eq!(m.ask(&["REGISTER", user]), [0]);
    }
    let amy = Text::new(udp);
    assert_eq!(amy.ask("/nick amy"), "+OK Nickname set to 'amy'");
    // A text user to a mailbox user who is away: stored once amy's address has shown it
    // receives (a datagram's source may be forged), then pushed when bob connects.
    let refused = amy.ask("/msg bob hello bob");
    let code = refused
        .strip_prefix("-ERR Confirm your address first: /confirm ")
        .unwrap_or_else(|| panic!("stored without a round trip: {refused}"));
    assert_eq!(amy.ask("/confirm 00000000"), "-ERR Wrong code");
    assert_eq!(
        amy.ask(&format!("/confirm {code}")),
        "+OK Address confirmed"
    );
    let id = stored_id(&amy.ask("/msg bob hello bob"), "bob");
    let bob = Listener::new();
    assert_eq!(m.ask(&["CONNECT", "bob", &bob.port()]), [0]);
    assert_eq!(bob.pushes(1, WAIT), [message("amy", id, "hello bob")]);
    // A mailbox user to a text user who is here: pushed to the session, and bob hears it went.
    let answer = m.ask(&["SEND", "bob", "amy", "hi amy"]);
    let id: u32 = std::str::from_utf8(&answer[1..answer.len() - 1])
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(amy.next(WAIT).as_deref(), Some("+MSG <bob> hi amy"));
    assert_eq!(
        bob.pushes(1, WAIT),
        [vec!["SEND_MESS_ACK".to_string(), id.to_string()]]
    );
    // Stored for a text user who is away, delivered in order once a session takes the name,
    // exactly once: a later session of that name gets only what came after.
    for text in ["for later 1", "for later 2"] {
        assert_eq!(m.ask(&["SEND", "bob", "carol", text])[0], 0);
    }
    let carol = Text::new(udp);
    carol.confirm();
    assert_eq!(carol.ask("/nick carol"), "+OK Nickname set to 'carol'");
    assert_eq!(carol.next(WAIT).as_deref(), Some("+MSG <bob> for later 1"));
    assert_eq!(carol.next(WAIT).as_deref(), Some("+MSG <bob> for later 2"));
    // After a quit, a message is stored (a hand-over to the ended session is refused by its
    // shard, whichever arrives first).
    carol.send("/quit");
    assert_eq!(m.ask(&["SEND", "bob", "carol", "after quit"])[0], 0);
    assert_eq!(carol.next(Duration::from_millis(300)), None, "quit");
    let carol_again = Text::new(udp);
    carol_again.confirm();
    assert_eq!(
        carol_again.ask("/nick carol"),
        "+OK Nickname set to 'carol'"
    );
    assert_eq!(
        carol_again.next(WAIT).as_deref(),
        Some("+MSG <bob> after quit")
    );
    assert_eq!(carol_again.next(Duration::from_millis(300)), None, "once");
    // A name nobody registered reaches whoever goes by it now, and is not stored.
    let dave = Text::new(udp);
    dave.confirm();
    assert_eq!(dave.ask("/nick dave"), "+OK Nickname set to 'dave'");
    assert_eq!(amy.ask("/msg dave psst"), "+OK Message for dave delivered");
    assert_eq!(dave.next(WAIT).as_deref(), Some("+MSG <amy> psst"));
    assert_eq!(amy.ask("/msg nobody hello"), "-ERR No such user nobody");
    assert_eq!(amy.ask("/msg bob"), "-ERR Usage: /msg NICK text");
    let long = format!("/msg bob {}", "x".repeat(256));
    assert_eq!(
        amy.ask(&long),
        "-ERR A direct message is at most 255 bytes of UTF-8"
    );
    let (_, output) = m.router.interrupt();
    let report = output.iter().find(|l| l.starts_with("mailbox:")).unwrap();
    assert!(report.contains(" session_sends=4 "), "{report}"); // the refused one too
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_a_mailbox_direct_messages_are_refused() {
    let router = Router::start(free_port(), &[], &["--cores", "1"]);
    let amy = Text::new(router.addr());
    assert_eq!(
        amy.ask("/msg bob hi"),
        "-ERR Direct messages are off on this server"
    );
}
