//! IRC against real router processes (`--irc`): clients written here from RFC 2812 and the
//! modern IRC documentation, and `ii`, a real IRC client from Debian's packages, in the same
//! channels as DuckChat and text users: registration and its errors, capability negotiation,
//! SASL PLAIN against the accounts, direct messages stored for an account that is away, TLS on
//! the same port, and a connection that never registers.

use crate::accounts::register;
use crate::mailbox::{data_dir, Text};
use crate::support::{free_port, free_tcp_port, Client, Reply, Router, WAIT};

use base64::Engine as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Instant;

/// A router with `--irc` on a free port (and `extra`); the IRC port.
fn start(extra: &[&str]) -> (Router, u16) {
    let port = free_tcp_port();
    let irc = format!("127.0.0.1:{port}");
    let mut args = vec!["--irc", &irc];
    args.extend_from_slice(extra);
    let mut router = Router::start(free_port(), &[], &args);
    router.wait_for_line("IRC on", WAIT);
    (router, port)
}

/// A stream both ways (TCP, or TLS over it).
trait Stream: Read + Write {}
impl<T: Read + Write> Stream for T {}

/// An IRC client: lines out, lines in (each wait bounded by [`WAIT`]).
struct Irc {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    /// Every line received, in order.
    seen: Vec<String>,
}

impl Irc {
    fn connect(port: u16) -> Irc {
        let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        Irc::over(Box::new(tcp))
    }

    fn over(stream: Box<dyn Stream>) -> Irc {
        Irc {
            stream,
            buf: Vec::new(),
            seen: Vec::new(),
        }
    }

    /// Connects and registers as `nick`; waits for the welcome.
    fn registered(port: u16, nick: &str) -> Irc {
        let mut c = Irc::connect(port);
        c.register(nick);
        c
    }

    fn register(&mut self, nick: &str) {
        self.send(&format!("NICK {nick}"));
        self.send(&format!("USER {nick} 0 * :{nick} tester"));
        let welcome = self.expect(|l| numeric(l) == Some("001"));
        assert!(
            welcome.contains(&format!(" 001 {nick} :Welcome")),
            "{welcome}"
        );
        self.expect(|l| numeric(l) == Some("422"));
    }

    fn send(&mut self, line: &str) {
        self.stream
            .write_all(format!("{line}\r\n").as_bytes())
            .unwrap();
        self.stream.flush().unwrap();
    }

    /// The next line, or `None` when the connection closed or nothing came within `WAIT`.
    fn line(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                self.seen.push(line.clone());
                return Some(line);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// The first line that `want` accepts (others are skipped, and kept in `seen`).
    #[track_caller]
    fn expect(&mut self, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        while Instant::now() < deadline {
            match self.line() {
                Some(line) if want(&line) => return line,
                Some(_) => {}
                None => break,
            }
        }
        panic!("no such line; received: {:#?}", self.seen);
    }

    /// Joins `channel` and waits for the end of its NAMES: the channel's owner has the join.
    fn join(&mut self, channel: &str) -> Vec<String> {
        self.send(&format!("JOIN {channel}"));
        self.expect(|l| l.ends_with(&format!(" JOIN {channel}")));
        let mut names = Vec::new();
        loop {
            let line = self.expect(|l| matches!(numeric(l), Some("353" | "366")));
            if numeric(&line) == Some("366") {
                return names;
            }
            let listed = line.rsplit_once(" :").map_or("", |(_, n)| n);
            names.extend(listed.split(' ').map(str::to_string));
        }
    }
}

/// The numeric of a server line (`:server 001 nick ...`).
fn numeric(line: &str) -> Option<&str> {
    let mut words = line.split(' ');
    words.next().filter(|prefix| prefix.starts_with(':'))?;
    words
        .next()
        .filter(|w| w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()))
}

#[test]
fn irc_users_share_channels_with_duckchat_and_text_users() {
    let (router, port) = start(&["--cores", "2"]);
    let udp = router.addr();
    let mut amy = Irc::registered(port, "amy");
    let duck = Client::connect(udp, "duck"); // DuckChat, in Common
    let names = amy.join("#Common");
    assert!(
        names.contains(&"amy".to_string()) && names.contains(&"duck".to_string()),
        "{names:?}"
    );

    // DuckChat -> IRC, and IRC -> DuckChat; the IRC sender is not sent its own line back.
    duck.say("Common", "quack");
    amy.expect(|l| l == ":duck!duck@chat-router PRIVMSG #Common :quack");
    amy.send("PRIVMSG #Common :hello duck");
    let heard = duck.wait_for(|r| matches!(r, Reply::Say { user, .. } if user == "amy"));
    match heard {
        Reply::Say {
            channel,
            user,
            text,
        } => {
            assert_eq!(
                (channel.as_str(), user.as_str(), text.as_str()),
                ("Common", "amy", "hello duck")
            )
        }
        other => panic!("{other:?}"),
    }
    // A text user in room 7 is in #7.
    let text = Text::new(udp);
    assert_eq!(text.ask("/nick tex"), "+OK Nickname set to 'tex'");
    assert_eq!(text.ask("/join 7"), "+OK You are now in chat room #7");
    let names = amy.join("#7");
    assert!(names.contains(&"tex".to_string()), "{names:?}");
    text.send("from room seven");
    amy.expect(|l| l == ":tex!tex@chat-router PRIVMSG #7 :from room seven");
    assert_eq!(
        text.next(WAIT).as_deref(),
        Some("<tex> from room seven"),
        "its echo"
    );
    amy.send("NOTICE #7 :to room seven");
    assert_eq!(text.next(WAIT).as_deref(), Some("<amy> to room seven"));

    // A second IRC user sees the first's lines, joins and parts; WHO lists both protocols.
    let mut bob = Irc::registered(port, "bob");
    bob.join("#Common");
    amy.expect(|l| l == ":bob!bob@chat-router JOIN #Common");
    amy.send("PRIVMSG #Common :hi bob");
    bob.expect(|l| l == ":amy!amy@chat-router PRIVMSG #Common :hi bob");
    // A rename is one NICK line to the channel's IRC members (browsers see leave and join).
    bob.send("NICK bobby");
    bob.expect(|l| l == ":bob!bob@chat-router NICK :bobby");
    amy.expect(|l| l == ":bob!bob@chat-router NICK :bobby");
    bob.send("WHO #Common");
    let mut who = Vec::new();
    loop {
        let line = bob.expect(|l| matches!(numeric(l), Some("352" | "315")));
        if numeric(&line) == Some("315") {
            break;
        }
        who.push(line.split(' ').nth(7).unwrap_or("").to_string());
    }
    who.sort();
    assert_eq!(who, ["amy", "bobby", "duck"]);
    bob.send("PART #Common :bye");
    bob.expect(|l| l == ":bobby!bobby@chat-router PART #Common");
    amy.expect(|l| l == ":bobby!bobby@chat-router PART #Common");
    // The channel is still the same for DuckChat: nothing of amy's own came back to her.
    duck.say("Common", "still here");
    amy.expect(|l| l.ends_with("PRIVMSG #Common :still here"));
    assert!(
        !amy.seen
            .iter()
            .any(|l| l.starts_with(":amy!") && l.contains("PRIVMSG")),
        "{:#?}",
        amy.seen
    );
    bob.send("QUIT :done");
    bob.expect(|l| l.starts_with("ERROR :Closing link"));
    assert_eq!(bob.line(), None, "closed after ERROR");
}

#[test]
fn registration_capabilities_and_errors_as_irc_clients_expect() {
    let (_router, port) = start(&["--cores", "1"]);
    let mut c = Irc::connect(port);
    c.send("CAP LS 302");
    assert_eq!(c.expect(|_| true), ":chat-router CAP * LS :sasl=PLAIN");
    c.send("JOIN #early");
    assert_eq!(
        c.expect(|_| true),
        ":chat-router 451 * :You have not registered"
    );
    c.send("NICK 9lives");
    assert_eq!(
        c.expect(|_| true),
        ":chat-router 432 * 9lives :Erroneous nickname"
    );
    c.send("CAP REQ :multi-prefix");
    assert_eq!(c.expect(|_| true), ":chat-router CAP * NAK :multi-prefix");
    c.send("NICK cat");
    c.send("USER cat 0 * :Cat");
    c.send("PING :early");
    assert_eq!(c.expect(|_| true), ":chat-router PONG chat-router :early");
    // No welcome while the capability negotiation goes on.
    c.send("CAP END");
    c.expect(|l| l.starts_with(":chat-router 001 cat :Welcome"));
    let isupport = c.expect(|l| numeric(l) == Some("005"));
    assert!(
        isupport.contains("CHANTYPES=#") && isupport.contains("NICKLEN=31"),
        "{isupport}"
    );
    c.expect(|l| numeric(l) == Some("422"));

    // The same nick is refused to another connection until its holder leaves.
    let mut other = Irc::connect(port);
    other.send("NICK cat");
    other.send("USER other 0 * :Other");
    assert_eq!(
        other.expect(|_| true),
        ":chat-router 433 * cat :Nickname is already in use"
    );
    other.send("NICK kit");
    other.expect(|l| l.starts_with(":chat-router 001 kit "));
    other.expect(|l| numeric(l) == Some("422"));

    for (line, want) in [
        (
            "FROBNICATE x",
            ":chat-router 421 cat FROBNICATE :Unknown command",
        ),
        ("JOIN", ":chat-router 461 cat JOIN :Not enough parameters"),
        (
            "JOIN nohash",
            ":chat-router 403 cat nohash :No such channel",
        ),
        ("PRIVMSG #Common", ":chat-router 412 cat :No text to send"),
        (
            "PART #nowhere",
            ":chat-router 403 cat #nowhere :No such channel",
        ),
        (
            "TOPIC #Common",
            ":chat-router 331 cat #Common :No topic is set",
        ),
        (
            "AWAY :lunch",
            ":chat-router 306 cat :You have been marked as being away",
        ),
        (
            "AWAY",
            ":chat-router 305 cat :You are no longer marked as being away",
        ),
        (
            "USER again 0 * :x",
            ":chat-router 462 cat :You may not reregister",
        ),
        ("MODE cat", ":chat-router 221 cat +"),
    ] {
        c.send(line);
        assert_eq!(c.expect(|_| true), want, "after {line}");
    }
    // A rename is confirmed with the old prefix; the new nick is free for no one else.
    c.send("NICK tom");
    assert_eq!(c.expect(|_| true), ":cat!cat@chat-router NICK :tom");
    other.send("NICK tom");
    assert_eq!(
        other.expect(|_| true),
        ":chat-router 433 kit tom :Nickname is already in use"
    );
    // LIST names the channels there are.
    c.join("#lounge");
    c.send("LIST");
    c.expect(|l| l == ":chat-router 322 tom #lounge 0 :");
    c.expect(|l| l == ":chat-router 323 tom :End of /LIST");
}

#[test]
fn a_connection_that_never_registers_is_closed() {
    let (router, port) = start(&["--cores", "1", "--handshake-timeout", "1s"]);
    let mut idle = Irc::connect(port);
    idle.send("NICK lurker"); // and never USER
    let closed = idle.expect(|l| l.starts_with("ERROR"));
    assert!(closed.contains("Registration timeout"), "{closed}");
    assert_eq!(idle.line(), None);
    let (_, output) = router.interrupt();
    let report = output.iter().find(|l| l.starts_with("irc: ")).unwrap();
    assert!(
        report.contains(" accepted=1 ") && report.contains(" handshake_timeouts=1 "),
        "{report}"
    );
}

/// SASL PLAIN's credentials, base64.
fn plain(name: &str, password: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{name}\0{name}\0{password}"))
}

#[test]
fn sasl_signs_in_to_an_account_and_mail_waits_for_it() {
    let dir = data_dir("irc-sasl");
    let irc_port = free_tcp_port();
    let irc = format!("127.0.0.1:{irc_port}");
    let m = crate::mailbox::start_with(&dir, free_tcp_port(), &["--irc", &irc]);
    let amy = register(&m, "amy", "correct horse");
    // Without signing in, the account's name is refused.
    let mut impostor = Irc::connect(irc_port);
    impostor.send("NICK amy");
    impostor.send("USER x 0 * :x");
    let refused = impostor.expect(|_| true);
    assert!(
        refused.starts_with(":chat-router 433 * amy :Nickname is registered"),
        "{refused}"
    );

    // A wrong password: 904, and no welcome.
    let mut c = Irc::connect(irc_port);
    c.send("CAP LS 302");
    c.send("NICK amy");
    c.send("USER amy 0 * :Amy");
    c.expect(|l| l.contains(" CAP * LS "));
    c.send("CAP REQ :sasl");
    assert_eq!(c.expect(|_| true), ":chat-router CAP * ACK :sasl");
    c.send("AUTHENTICATE PLAIN");
    assert_eq!(c.expect(|_| true), "AUTHENTICATE +");
    c.send(&format!("AUTHENTICATE {}", plain("amy", "wrong horse")));
    let failed = c.expect(|_| true);
    assert!(
        failed.starts_with(":chat-router 904 * :SASL authentication failed"),
        "{failed}"
    );
    // The right one: 900 and 903, then the welcome as amy.
    c.send("AUTHENTICATE PLAIN");
    c.expect(|l| l == "AUTHENTICATE +");
    c.send(&format!("AUTHENTICATE {}", plain("amy", "correct horse")));
    let logged_in = c.expect(|l| numeric(l) == Some("900"));
    assert!(
        logged_in.contains(" amy :You are now logged in as amy"),
        "{logged_in}"
    );
    c.expect(|l| numeric(l) == Some("903"));
    c.send("CAP END");
    c.expect(|l| l.starts_with(":chat-router 001 amy "));

    // A direct message from a text user reaches her at once, and her answer reaches him.
    let tex = Text::new(m.router.addr());
    tex.confirm();
    assert_eq!(tex.ask("/nick tex"), "+OK Nickname set to 'tex'");
    let sent = tex.ask("/msg amy are you there");
    assert!(sent.starts_with("+OK Message"), "{sent}");
    c.expect(|l| l == ":tex!tex@chat-router PRIVMSG amy :are you there");
    c.send("PRIVMSG tex :yes");
    let answer = tex.next(WAIT).unwrap_or_default();
    assert!(answer.contains("amy") && answer.contains("yes"), "{answer}");
    c.send("PRIVMSG nobody-here :hello?");
    c.expect(|l| l == ":chat-router 401 amy nobody-here :No such nick/channel");
    drop(amy);

    // Mail to an account nobody is signed in to waits for its sign-in. bob registers over
    // text in room 9, where amy sees him leave: his session is then gone.
    let bob = register(&m, "bob", "battery staple");
    assert_eq!(bob.ask("/join 9"), "+OK You are now in chat room #9");
    let names = c.join("#9");
    assert!(names.contains(&"bob".to_string()), "{names:?}");
    bob.send("/quit");
    c.expect(|l| l == ":bob!bob@chat-router PART #9");
    c.send("PRIVMSG bob :see you later");
    c.send("QUIT");
    c.expect(|l| l.starts_with("ERROR"));
    let mut b = Irc::connect(irc_port);
    b.send("CAP REQ :sasl");
    b.send("NICK bob");
    b.send("USER bob 0 * :Bob");
    b.send("AUTHENTICATE PLAIN");
    b.expect(|l| l == "AUTHENTICATE +");
    b.send(&format!("AUTHENTICATE {}", plain("bob", "battery staple")));
    b.expect(|l| numeric(l) == Some("903"));
    b.send("CAP END");
    b.expect(|l| l.starts_with(":chat-router 001 bob "));
    b.expect(|l| l == ":amy!amy@chat-router PRIVMSG bob :see you later");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn irc_over_tls_on_the_same_port() {
    let dir = data_dir("irc-tls");
    let cert = crate::tls::certificate(&dir);
    let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
    let (_router, port) = start(&[
        "--cores",
        "1",
        "--tls-cert",
        cert_file.to_str().unwrap(),
        "--tls-key",
        key_file.to_str().unwrap(),
    ]);
    let mut plain = Irc::registered(port, "plain");
    plain.join("#Common");
    let mut secure = Irc::over(Box::new(crate::tls::tls_connect(port, &cert)));
    secure.register("secure");
    secure.join("#Common");
    plain.expect(|l| l == ":secure!secure@chat-router JOIN #Common");
    secure.send("PRIVMSG #Common :over tls");
    plain.expect(|l| l == ":secure!secure@chat-router PRIVMSG #Common :over tls");
    plain.send("PRIVMSG #Common :in clear");
    secure.expect(|l| l == ":plain!plain@chat-router PRIVMSG #Common :in clear");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `ii`, a real IRC client from Debian's packages (one FIFO and one log file per channel), in
/// #Common with a DuckChat user: what each says reaches the other.
#[test]
fn a_real_irc_client_talks_with_a_duckchat_user() {
    let (router, port) = start(&["--cores", "2"]);
    let duck = Client::connect(router.addr(), "duck");
    let dir = data_dir("ii");
    std::fs::create_dir_all(&dir).unwrap();
    let ii = std::process::Command::new("ii")
        .args([
            "-s",
            "127.0.0.1",
            "-p",
            &port.to_string(),
            "-n",
            "iris",
            "-i",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ii, an IRC client: run .ci/install-test-tools");
    let _ii = Reap(ii);
    let server = dir.join("127.0.0.1");
    wait_for_file(
        &server.join("out"),
        "Welcome to the chat-router IRC network, iris!",
    );
    write_fifo(&server.join("in"), "/j #Common");
    let channel = server.join("#common");
    wait_for_file(
        &channel.join("out"),
        "iris(iris@chat-router) has joined #Common",
    );
    duck.say("Common", "quack from DuckChat");
    wait_for_file(&channel.join("out"), "<duck> quack from DuckChat");
    write_fifo(&channel.join("in"), "hello from ii");
    let heard = duck.wait_for(|r| matches!(r, Reply::Say { user, .. } if user == "iris"));
    assert!(
        matches!(&heard, Reply::Say { text, .. } if text == "hello from ii"),
        "{heard:?}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills and reaps a child process when the test ends, however it ends.
struct Reap(std::process::Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `path` holds `text` (ii writes what it receives into files; a file changes
/// without telling anyone, so it is read again every few milliseconds, within [`WAIT`]).
#[track_caller]
fn wait_for_file(path: &std::path::Path, text: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let content = std::fs::read_to_string(path).unwrap_or_default();
        if content.contains(text) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} never held {text:?}; it holds:\n{content}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// One line into one of ii's FIFOs (waits, within [`WAIT`], for ii to have made it).
fn write_fifo(path: &std::path::Path, line: &str) {
    let deadline = Instant::now() + WAIT;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "ii never made {}",
            path.display()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut fifo = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    fifo.write_all(format!("{line}\n").as_bytes()).unwrap();
}

/// Garbage on the IRC port: lines of random bytes are answered or ignored, never a crash; a
/// line longer than IRC allows closes that connection only.
#[test]
fn garbage_and_overlong_lines_hurt_no_one() {
    let (_router, port) = start(&["--cores", "2"]);
    let mut watcher = Irc::registered(port, "watcher");
    watcher.join("#Common");
    let mut noisy = Irc::registered(port, "noisy");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..300 {
        let mut line = Vec::new();
        for _ in 0..(x % 60) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let alphabet = b"#: ,\0\x01\xffaZ!@PRIVMSG JOIN";
            line.push(alphabet[(x % alphabet.len() as u64) as usize]);
        }
        line.extend_from_slice(b"\r\n");
        noisy.stream.write_all(&line).unwrap();
    }
    noisy.send("PING :still-here");
    noisy.expect(|l| l == ":chat-router PONG chat-router :still-here");
    noisy.send(&"x".repeat(5000));
    noisy.expect(|l| l.contains("[Line too long]"));
    assert_eq!(noisy.line(), None, "closed");
    // The others go on.
    let mut later = Irc::registered(port, "later");
    later.join("#Common");
    watcher.expect(|l| l == ":later!later@chat-router JOIN #Common");
    later.send("PRIVMSG #Common :all well");
    watcher.expect(|l| l == ":later!later@chat-router PRIVMSG #Common :all well");
}
