//! Browsers over WebSocket against real router processes: the page over HTTP, the JSON
//! protocol next to DuckChat users on one router and across a federation, the original client
//! unmodified, refused frames, and a browser that never reads.

use crate::support;

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};
use support::{free_port, free_tcp_port, Client, Reply, Router, WAIT};
use tungstenite::client::IntoClientRequest;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::{Message, WebSocket};

pub(crate) type Ws = WebSocket<TcpStream>;

/// A router with `--ws` on a TCP port of its own.
fn router(neighbors: &[u16], udp: u16) -> (Router, u16) {
    let ws = free_tcp_port();
    let addr = format!("127.0.0.1:{ws}");
    let mut r = Router::start(udp, neighbors, &["--ws", &addr, "--cores", "2"]);
    r.wait_for_line("WebSocket on", WAIT);
    (r, ws)
}

pub(crate) fn connect(port: u16, json_protocol: bool) -> Ws {
    let mut request = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .unwrap();
    if json_protocol {
        request
            .headers_mut()
            .insert("Sec-WebSocket-Protocol", "chat-router".parse().unwrap());
    }
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let (ws, _) = tungstenite::client(request, stream).expect("handshake");
    ws
}

/// A read that found nothing within the socket's timeout.
fn timed_out(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e) if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ))
}

/// The next text frame within `limit` (pings are answered by tungstenite as it reads).
fn next_text(ws: &mut Ws, limit: Duration) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Text(t)) => return Some(t.to_string()),
            Ok(_) => {}
            Err(e) if timed_out(&e) => {}
            Err(e) => panic!("connection failed: {e}"),
        }
    }
    None
}

pub(crate) fn next_event(ws: &mut Ws) -> Value {
    let text = next_text(ws, WAIT).expect("an event within the wait");
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
}

/// The next event of `kind`, skipping others.
pub(crate) fn wait_for(ws: &mut Ws, kind: &str) -> Value {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        let e = next_event(ws);
        if e["type"] == kind {
            return e;
        }
    }
    panic!("no {kind} event");
}

pub(crate) fn send(ws: &mut Ws, request: Value) {
    ws.send(Message::Text(request.to_string().into())).unwrap();
}

/// Picks a nick, joins Common and waits until WHO lists it (the join reached the owner).
fn sign_in(ws: &mut Ws, nick: &str) {
    assert_eq!(next_event(ws)["type"], "welcome");
    send(ws, json!({"type": "nick", "name": nick}));
    assert_eq!(
        wait_for(ws, "ok"),
        json!({"type": "ok", "request": "nick", "name": nick})
    );
    send(ws, json!({"type": "join", "channel": "Common"}));
    assert_eq!(wait_for(ws, "ok")["channel"], "Common");
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        send(ws, json!({"type": "who", "channel": "Common"}));
        let members = wait_for(ws, "members");
        if members["users"].as_array().unwrap().contains(&json!(nick)) {
            return;
        }
    }
    panic!("{nick} never listed");
}

pub(crate) fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    s.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn the_page_and_a_browser_next_to_a_duckchat_user() {
    let udp = free_port();
    let (server, ws_port) = router(&[], udp);
    let page = http_get(ws_port, "/");
    assert!(page.starts_with("HTTP/1.1 200"), "{page:.200}");
    assert!(page.contains("<title>chat-router</title>"));
    assert!(page.contains("new WebSocket("));

    let amy = Client::connect(server.addr(), "amy");
    let mut bob = connect(ws_port, true);
    sign_in(&mut bob, "bob");
    amy.say("Common", "hello bob");
    let m = wait_for(&mut bob, "message");
    assert_eq!(m["from"], "amy");
    assert_eq!(m["text"], "hello bob");
    assert_eq!(m["channel"], "Common");
    assert_eq!(m["origin"], format!("127.0.0.1:{udp}"));
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(m["ts"].as_u64().unwrap().abs_diff(now_ms) < 60_000, "{m}");
    send(
        &mut bob,
        json!({"type": "say", "channel": "Common", "text": "hi amy"}),
    );
    let heard = amy.wait_for(|r| matches!(r, Reply::Say { user, .. } if user != "amy"));
    assert_eq!(
        heard,
        Reply::Say {
            channel: "Common".into(),
            user: "bob".into(),
            text: "hi amy".into()
        }
    );
    assert_eq!(wait_for(&mut bob, "message")["text"], "hi amy");
    // Errors are events; the connection stays.
    send(&mut bob, json!({"type": "leave", "channel": "nowhere"}));
    let e = wait_for(&mut bob, "error");
    assert_eq!(e["message"], "no channel by the name nowhere");
    bob.send(Message::Text("{".into())).unwrap();
    assert!(wait_for(&mut bob, "error")["message"]
        .as_str()
        .unwrap()
        .starts_with("not a request"));
    bob.send(Message::Binary(vec![1, 2, 3].into())).unwrap();
    assert!(wait_for(&mut bob, "error")["message"]
        .as_str()
        .unwrap()
        .contains("text"));
    // Closing the connection ends the session.
    bob.close(None).unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        amy.who("Common");
        if let Reply::Who { users, .. } = amy.wait_for(|r| matches!(r, Reply::Who { .. })) {
            if users == ["amy"] {
                break;
            }
        }
        assert!(Instant::now() < deadline, "bob never left");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn the_original_client_unmodified() {
    let udp = free_port();
    let (server, ws_port) = router(&[], udp);
    let amy = Client::connect(server.addr(), "amy");
    let mut old = connect(ws_port, false);
    assert_eq!(
        next_text(&mut old, WAIT).unwrap(),
        format!("Welcome to ChatServer 127.0.0.1:{udp}!")
    );
    // It is in Common from the start: wait until WHO lists it, then amy's message reaches it.
    let deadline = Instant::now() + WAIT;
    while !matches!(amy.recv(Duration::ZERO), Some(Reply::Who { ref users, .. }) if users.len() == 2)
    {
        assert!(
            Instant::now() < deadline,
            "the original client never joined"
        );
        amy.who("Common");
        std::thread::sleep(Duration::from_millis(50));
    }
    amy.say("Common", "hello");
    let m: Value = serde_json::from_str(&next_text(&mut old, WAIT).unwrap()).unwrap();
    assert_eq!(m["sender"], "amy");
    assert_eq!(m["content"], "hello");
    assert_eq!(m["originServerId"], format!("127.0.0.1:{udp}"));
    assert!(m["timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    old.send(Message::Text("hi everyone".into())).unwrap();
    match amy.wait_for(|r| matches!(r, Reply::Say { user, .. } if user != "amy")) {
        Reply::Say { user, text, .. } => {
            assert!(user.starts_with("User@/127.0.0.1:"), "{user}");
            assert_eq!(text, "hi everyone");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn browsers_on_two_federated_routers_and_a_duckchat_user() {
    let (a_udp, b_udp) = (free_port(), free_port());
    let (a, a_ws) = router(&[b_udp], a_udp);
    let (_b, b_ws) = router(&[a_udp], b_udp);
    let amy = Client::connect(a.addr(), "amy");
    let mut ann = connect(a_ws, true);
    let mut bea = connect(b_ws, true);
    sign_in(&mut ann, "ann");
    sign_in(&mut bea, "bea");
    // Until the tree carries bea's messages to router a.
    let deadline = Instant::now() + WAIT;
    'carried: for i in 0.. {
        assert!(Instant::now() < deadline, "the federation never carried");
        send(
            &mut bea,
            json!({"type": "say", "channel": "Common", "text": format!("probe {i}")}),
        );
        while let Some(text) = next_text(&mut ann, Duration::from_millis(200)) {
            if text.contains("probe") {
                break 'carried;
            }
        }
    }
    amy.drain();
    send(
        &mut bea,
        json!({"type": "say", "channel": "Common", "text": "from b"}),
    );
    let heard = loop {
        let m = wait_for(&mut ann, "message");
        if m["text"] == "from b" {
            break m;
        }
    };
    assert_eq!(heard["from"], "bea");
    assert_eq!(heard["origin"], Value::Null, "DuckChat does not say whose");
    let said = amy.wait_for(|r| matches!(r, Reply::Say { text, .. } if text == "from b"));
    assert!(matches!(said, Reply::Say { user, .. } if user == "bea"));
    amy.say("Common", "from amy");
    let deadline = Instant::now() + WAIT;
    loop {
        let m = wait_for(&mut bea, "message");
        if m["text"] == "from amy" {
            assert_eq!(m["from"], "amy");
            break;
        }
        assert!(Instant::now() < deadline);
    }
}

#[test]
fn oversized_frames_are_refused_with_a_reason() {
    let (_server, ws_port) = router(&[], free_port());
    let mut ws = connect(ws_port, true);
    assert_eq!(next_event(&mut ws)["type"], "welcome");
    let big = "x".repeat(20 * 1024);
    ws.send(Message::Text(big.into())).unwrap();
    assert_eq!(close_code(&mut ws), CloseCode::Size);
}

#[test]
fn a_browser_that_never_reads_is_closed_and_the_others_go_on() {
    const MESSAGES: usize = 12_000;
    let (server, ws_port) = router(&[], free_port());
    let mut slow = connect(ws_port, true);
    sign_in(&mut slow, "slow");
    let mut watcher = connect(ws_port, true);
    sign_in(&mut watcher, "watcher");
    let mut talker = connect(ws_port, true);
    sign_in(&mut talker, "talker");
    let reader = std::thread::spawn(move || {
        let mut got = 0;
        let deadline = Instant::now() + Duration::from_secs(60);
        while got < MESSAGES && Instant::now() < deadline {
            match next_text(&mut watcher, Duration::from_secs(5)) {
                Some(t) if t.contains("\"talker\"") => got += 1,
                Some(_) => {}
                None => break,
            }
        }
        got
    });
    let text = "y".repeat(1000);
    talker
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(1)))
        .unwrap();
    for i in 0..MESSAGES {
        send(
            &mut talker,
            json!({"type": "say", "channel": "Common", "text": text}),
        );
        if i % 100 == 99 {
            // The talker reads its own echoes, as a browser does.
            while next_text(&mut talker, Duration::from_millis(2)).is_some() {}
        }
    }
    assert_eq!(
        reader.join().unwrap(),
        MESSAGES,
        "the watcher missed messages"
    );
    // The slow one: what was buffered, then the reason it was closed.
    assert_eq!(close_code(&mut slow), CloseCode::Again);
    let (_, output) = server.interrupt();
    let report = output.iter().find(|l| l.starts_with("web:")).unwrap();
    assert!(report.contains("closed_slow=1 "), "{report}");
}

#[test]
fn browsers_on_a_total_order_cluster() {
    let (p1, p2) = (free_port(), free_port());
    let file = std::env::temp_dir().join(format!("chat-router-ws-{}-{p1}.txt", std::process::id()));
    std::fs::write(&file, format!("127.0.0.1:{p1}\n127.0.0.1:{p2}\n")).unwrap();
    let start = |index: &str, port: u16| {
        let ws = free_tcp_port();
        let args: Vec<String> = [
            "--cluster",
            file.to_str().unwrap(),
            "--index",
            index,
            "-o",
            "total",
            "--ws",
            &format!("127.0.0.1:{ws}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut r = Router::launch(&args, port);
        r.wait_for_line("WebSocket on", WAIT);
        (r, ws)
    };
    let (_one, ws1) = start("1", p1);
    let (_two, ws2) = start("2", p2);
    let mut ann = connect(ws1, true);
    let mut bea = connect(ws2, true);
    sign_in(&mut ann, "ann");
    sign_in(&mut bea, "bea");
    for i in 0..3 {
        send(
            &mut ann,
            json!({"type": "say", "channel": "Common", "text": format!("a{i}")}),
        );
        send(
            &mut bea,
            json!({"type": "say", "channel": "Common", "text": format!("b{i}")}),
        );
    }
    // Both see all six, in the same order, each once, with the same ids; the origin is the
    // cluster server whose user said it.
    let mut seen = Vec::new();
    for ws in [&mut ann, &mut bea] {
        let mut got = Vec::new();
        while got.len() < 6 {
            let m = wait_for(ws, "message");
            got.push((
                m["text"].as_str().unwrap().to_string(),
                m["id"].as_str().unwrap().to_string(),
                m["origin"].as_str().unwrap().to_string(),
            ));
        }
        seen.push(got);
    }
    assert_eq!(seen[0], seen[1], "the same order and ids on both servers");
    for (text, _, origin) in &seen[0] {
        let port = if text.starts_with('a') { p1 } else { p2 };
        assert_eq!(origin, &format!("127.0.0.1:{port}"), "{text}");
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn only_allowed_origins_open_the_websocket() {
    let udp = free_port();
    let ws = free_tcp_port();
    let addr = format!("127.0.0.1:{ws}");
    let mut r = Router::start(
        udp,
        &[],
        &["--ws", &addr, "--ws-origin", "http://chat.example.org"],
    );
    r.wait_for_line("WebSocket on", WAIT);
    let attempt = |origin: &str| {
        let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
        request
            .headers_mut()
            .insert("Origin", origin.parse().unwrap());
        let stream = TcpStream::connect(&addr).unwrap();
        stream.set_read_timeout(Some(WAIT)).unwrap();
        // The HTTP status of a refused handshake (0 for any other failure).
        tungstenite::client(request, stream)
            .map(|_| ())
            .map_err(|e| match e {
                tungstenite::HandshakeError::Failure(tungstenite::Error::Http(response)) => {
                    response.status().as_u16()
                }
                _ => 0,
            })
    };
    assert_eq!(attempt("http://chat.example.org"), Ok(()));
    assert_eq!(attempt("http://evil.example.com"), Err(403));
}

/// Waits for the close frame and returns its code.
fn close_code(ws: &mut Ws) -> CloseCode {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match ws.read() {
            Ok(Message::Close(Some(frame))) => return frame.code,
            Ok(_) => {}
            Err(e) if timed_out(&e) => {}
            Err(e) => panic!("closed without a reason: {e}"),
        }
    }
    panic!("never closed");
}

#[test]
fn hostile_frames_get_errors_or_a_reasoned_close_and_the_router_goes_on() {
    let (server, ws_port) = router(&[], free_port());
    let mut ws = connect(ws_port, true);
    assert_eq!(next_event(&mut ws)["type"], "welcome");
    let long_channel = format!(r#"{{"type":"join","channel":"{}"}}"#, "x".repeat(40));
    let deep = "[".repeat(10_000);
    for junk in [
        "",
        "null",
        "[]",
        r#"{"type":5}"#,
        r#"{"type":"say"}"#,
        r#"{"type":"say","channel":"Common","text":"\ud800"}"#,
        "\u{0}\u{1}\u{7f}",
        &long_channel,
        &deep,
    ] {
        ws.send(Message::Text(junk.into())).unwrap();
        let e = wait_for(&mut ws, "error");
        assert!(e["message"].is_string(), "{junk:.40}: {e}");
    }
    // The connection is still good.
    send(&mut ws, json!({"type": "nick", "name": "still-here"}));
    assert_eq!(wait_for(&mut ws, "ok")["name"], "still-here");
    // Text that is not UTF-8 is refused by the WebSocket layer, with the code that says so.
    use tungstenite::protocol::frame::coding::{Data, OpCode};
    use tungstenite::protocol::frame::Frame;
    let bad = Frame::message(vec![0xff, 0xfe, 0x41], OpCode::Data(Data::Text), true);
    ws.write(Message::Frame(bad)).unwrap();
    ws.flush().unwrap();
    assert_eq!(close_code(&mut ws), CloseCode::Invalid);
    // Garbage instead of HTTP gets an HTTP error or a closed connection, and nothing else.
    let mut raw = TcpStream::connect(("127.0.0.1", ws_port)).unwrap();
    raw.set_read_timeout(Some(WAIT)).unwrap();
    raw.write_all(b"\x16\x03\x01garbage\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let _ = raw.read_to_end(&mut reply);
    assert!(
        reply.is_empty() || reply.starts_with(b"HTTP/1.1 400"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    // And the router serves the next browser as if nothing happened.
    let mut next = connect(ws_port, true);
    sign_in(&mut next, "next");
    let (status, _) = server.interrupt();
    assert!(status.success(), "the router exited with {status}");
}

#[test]
fn a_silent_browser_is_closed_after_the_idle_time() {
    let ws_port = free_tcp_port();
    let addr = format!("127.0.0.1:{ws_port}");
    let mut r = Router::start(free_port(), &[], &["--ws", &addr, "--ws-idle", "600ms"]);
    r.wait_for_line("WebSocket on", WAIT);
    // One that reads (and so answers the pings) stays; one that never writes is closed. The
    // silent one speaks the handshake by hand: a WebSocket library would answer the pings.
    let mut talker = connect(ws_port, true);
    let mut silent = TcpStream::connect(&addr).unwrap();
    write!(
        silent,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let _ = next_text(&mut talker, Duration::from_millis(100));
    }
    silent.set_read_timeout(Some(WAIT)).unwrap();
    let mut received = Vec::new();
    let _ = silent.read_to_end(&mut received);
    assert!(received.starts_with(b"HTTP/1.1 101"));
    // An unmasked close frame (0x88) whose payload begins with code 1001 (0x03e9).
    assert!(
        received
            .windows(4)
            .any(|w| w[0] == 0x88 && w[2..] == [0x03, 0xe9]),
        "no close frame with code 1001 in {received:?}"
    );
    send(&mut talker, json!({"type": "nick", "name": "talker"}));
    assert_eq!(
        wait_for(&mut talker, "ok")["name"],
        "talker",
        "still connected"
    );
    let (_, output) = r.interrupt();
    let report = output.iter().find(|l| l.starts_with("web:")).unwrap();
    assert!(report.contains("closed_idle=1 "), "{report}");
}

/// One request to the mailbox's TCP port (fields ended by NUL); the whole answer.
fn mailbox_ask(port: u16, fields: &[&str]) -> Vec<u8> {
    let mut c = TcpStream::connect(("127.0.0.1", port)).unwrap();
    c.set_read_timeout(Some(WAIT)).unwrap();
    let request: Vec<u8> = fields
        .iter()
        .flat_map(|f| [f.as_bytes(), b"\0"].concat())
        .collect();
    c.write_all(&request).unwrap();
    let mut answer = Vec::new();
    c.read_to_end(&mut answer).unwrap();
    answer
}

#[test]
fn direct_messages_between_browsers_text_users_and_the_mailbox() {
    let (ws, mailbox) = (free_tcp_port(), free_tcp_port());
    let dir = std::env::temp_dir().join(format!("chat-router-web-dm-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut r = Router::start(
        free_port(),
        &[],
        &[
            "--ws",
            &format!("127.0.0.1:{ws}"),
            "--mailbox",
            &format!("127.0.0.1:{mailbox}"),
            "--data-dir",
            dir.to_str().unwrap(),
            "--cores",
            "2",
        ],
    );
    r.wait_for_line("mailbox on", WAIT);
    let mut amy = connect(ws, true);
    sign_in(&mut amy, "amy");
    let bob = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    bob.set_read_timeout(Some(WAIT)).unwrap();
    let bob_line = |line: &str| -> String {
        if !line.is_empty() {
            bob.send_to(line.as_bytes(), r.addr()).unwrap();
        }
        let mut buf = [0u8; 2048];
        let (n, _) = bob.recv_from(&mut buf).expect("a line from the router");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    // bob shows that his address receives (a forged source cannot), so his name takes mail.
    let code = bob_line("/confirm");
    let code = code.strip_prefix("+OK Code ").expect("a code");
    assert_eq!(
        bob_line(&format!("/confirm {code}")),
        "+OK Address confirmed"
    );
    assert_eq!(bob_line("/nick bob"), "+OK Nickname set to 'bob'");
    // Neither is registered: handed to whoever goes by the name now, without an id.
    send(
        &mut amy,
        json!({"type": "dm", "to": "bob", "text": "hi bob"}),
    );
    assert_eq!(
        wait_for(&mut amy, "ok"),
        json!({"type": "ok", "request": "dm", "to": "bob", "id": null})
    );
    assert_eq!(bob_line(""), "+MSG <amy> hi bob");
    assert_eq!(bob_line("/msg amy hi amy"), "+OK Message for amy delivered");
    let dm = wait_for(&mut amy, "dm");
    assert_eq!(
        (&dm["from"], &dm["text"], &dm["id"]),
        (&json!("bob"), &json!("hi amy"), &Value::Null)
    );
    // A registered user who is away: stored; delivered when a browser takes the name, and
    // the sender hears it.
    assert_eq!(mailbox_ask(mailbox, &["REGISTER", "carol"]), [0]);
    send(
        &mut amy,
        json!({"type": "dm", "to": "carol", "text": "see you"}),
    );
    let ok = wait_for(&mut amy, "ok");
    let id = ok["id"].as_u64().expect("stored with an id");
    let mut carol = connect(ws, true);
    assert_eq!(next_event(&mut carol)["type"], "welcome");
    send(&mut carol, json!({"type": "nick", "name": "carol"}));
    let dm = wait_for(&mut carol, "dm");
    assert_eq!(
        (&dm["from"], &dm["text"], &dm["id"]),
        (&json!("amy"), &json!("see you"), &json!(id))
    );
    assert_eq!(
        wait_for(&mut amy, "delivered"),
        json!({"type": "delivered", "id": id})
    );
    send(&mut amy, json!({"type": "dm", "to": "nobody", "text": "x"}));
    assert_eq!(
        wait_for(&mut amy, "error")["message"],
        "no such user: nobody"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
