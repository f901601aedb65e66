//! The web front-ends on the engine alone (no sockets): browsers in the same channels as
//! DuckChat users, the JSON protocol's replies and errors, and the original client's shape.

use chat_router::engine::{Config, Endpoint, Engine, Outbox, Protocol};
use chat_router::proto::duckchat::{self, Inbound, Outbound, SayLayout};
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

struct One {
    engine: Engine,
    out: Outbox,
    now: Duration,
}

impl One {
    fn new() -> Self {
        let mut cfg = Config::new(addr(4000));
        cfg.epoch_unix_ms = 1_800_000_000_000;
        Self {
            engine: Engine::new(0, 1, Arc::new(cfg), 1, Duration::ZERO),
            out: Outbox::with_capacity(64),
            now: Duration::from_secs(1),
        }
    }

    fn udp(&mut self, from: SocketAddr, req: Inbound<'_>) {
        let mut buf = [0u8; 256];
        let n = req.encode(&mut buf, SayLayout::UserFirst).unwrap();
        self.engine
            .handle_datagram(self.now, from, &buf[..n], &mut self.out);
    }

    fn frame(&mut self, conn: Endpoint, protocol: Protocol, text: &str) {
        self.engine
            .stream_request(self.now, conn, protocol, text.as_bytes(), &mut self.out);
    }

    /// What went to `conn` since the last call, as JSON values (or strings), and forgets all.
    fn take(&mut self, conn: Endpoint) -> Vec<Value> {
        let Endpoint::Stream { conn: id, .. } = conn else {
            panic!("not a stream")
        };
        let got = self
            .out
            .stream_sends()
            .iter()
            .filter(|(c, _)| *c == id)
            .map(|&(_, p)| serde_json::from_slice(self.out.bytes(p)).unwrap())
            .collect();
        got
    }

    fn datagrams_to(&self, dst: SocketAddr) -> Vec<Vec<u8>> {
        self.out
            .sends()
            .iter()
            .filter(|s| s.dst == dst)
            .map(|s| self.out.bytes(s.payload).to_vec())
            .collect()
    }
}

fn stream(conn: u64, port: u16) -> Endpoint {
    Endpoint::Stream {
        conn,
        peer: addr(port),
    }
}

#[test]
fn a_browser_and_a_duckchat_user_share_a_channel() {
    let mut one = One::new();
    let amy = addr(50001);
    let bob = stream(1, 50002);
    one.udp(amy, Inbound::Login { user: b"amy" });
    one.udp(amy, Inbound::Join { channel: b"Common" });
    one.frame(bob, Protocol::Web, r#"{"type":"nick","name":"bob"}"#);
    one.frame(bob, Protocol::Web, r#"{"type":"join","channel":"Common"}"#);
    assert_eq!(
        one.take(bob),
        [
            serde_json::json!({"type":"ok","request":"nick","name":"bob"}),
            serde_json::json!({"type":"ok","request":"join","channel":"Common"}),
            serde_json::json!({"type":"presence","channel":"Common","user":"bob","event":"joined","signed_in":false}),
        ]
    );
    one.out.clear();
    one.udp(
        amy,
        Inbound::Say {
            channel: b"Common",
            text: b"hi \"bob\"",
        },
    );
    let got = one.take(bob);
    assert_eq!(got.len(), 1, "{got:?}");
    let m = &got[0];
    assert_eq!(m["type"], "message");
    assert_eq!(m["channel"], "Common");
    assert_eq!(m["from"], "amy");
    assert_eq!(m["text"], "hi \"bob\"");
    assert_eq!(m["origin"], "127.0.0.1:4000");
    assert_eq!(m["ts"], 1_800_000_001_000u64);
    assert_eq!(m["id"].as_str().map(str::len), Some(16));
    one.out.clear();
    one.frame(
        bob,
        Protocol::Web,
        r#"{"type":"say","channel":"Common","text":"h\u00e9llo"}"#,
    );
    let to_amy = one.datagrams_to(amy);
    assert_eq!(to_amy.len(), 1);
    assert_eq!(
        duckchat::decode_outbound(&to_amy[0]).unwrap(),
        Outbound::Say {
            channel: b"Common",
            user: b"bob",
            text: "héllo".as_bytes(),
        }
    );
    assert_eq!(one.take(bob)[0]["text"], "héllo", "the sender sees its own");
    one.out.clear();
    one.frame(bob, Protocol::Web, r#"{"type":"who","channel":"Common"}"#);
    one.frame(bob, Protocol::Web, r#"{"type":"list"}"#);
    assert_eq!(
        one.take(bob),
        [
            serde_json::json!({"type":"members","channel":"Common","users":["amy","bob"],"signed_in":[],"last":true}),
            serde_json::json!({"type":"channels","channels":["Common"],"last":true}),
        ]
    );
    // The connection closes: bob leaves.
    one.out.clear();
    one.engine
        .stream_closed(one.now, bob, Protocol::Web, &mut one.out);
    one.udp(amy, Inbound::Who { channel: b"Common" });
    let who = one.datagrams_to(amy);
    assert!(matches!(
        duckchat::decode_outbound(&who[0]),
        Ok(Outbound::Who { users, .. }) if users.len() == 1
    ));
}

#[test]
fn bad_frames_get_error_events() {
    let mut one = One::new();
    let c = stream(7, 50003);
    for (frame, says) in [
        ("not json", "not a request"),
        (r#"{"type":"fly"}"#, "not a request"),
        (
            r#"{"type":"say","channel":"Common","text":"x"}"#,
            "pick a nick or join",
        ),
        (r#"{"type":"join","channel":""}"#, "a channel needs a name"),
        (r#"{"type":"nick","name":"a\u0007b"}"#, "printable"),
        (
            r#"{"type":"dm","to":"amy","text":"hi"}"#,
            "direct messages are off on this server",
        ),
        (r#"{"type":"dm","to":"amy"}"#, "not a request"),
    ] {
        one.out.clear();
        one.frame(c, Protocol::Web, frame);
        let got = one.take(c);
        assert_eq!(got.len(), 1, "{frame}: {got:?}");
        assert_eq!(got[0]["type"], "error", "{frame}");
        let message = got[0]["message"].as_str().unwrap();
        assert!(message.contains(says), "{frame}: {message}");
    }
    // Thirty-three errors in a row still get answers: a connection cannot be forged.
    one.out.clear();
    for _ in 0..40 {
        one.frame(c, Protocol::Web, "{}");
    }
    assert_eq!(one.take(c).len(), 40);
}

#[test]
fn the_original_client_is_in_common_from_the_start() {
    let mut one = One::new();
    let amy = addr(50001);
    let old = stream(3, 36116);
    one.udp(amy, Inbound::Login { user: b"amy" });
    one.udp(amy, Inbound::Join { channel: b"Common" });
    one.engine
        .stream_opened(one.now, old, Protocol::WebCompat, &mut one.out);
    one.udp(
        amy,
        Inbound::Say {
            channel: b"Common",
            text: b"hello",
        },
    );
    assert_eq!(
        one.take(old),
        [serde_json::json!({
            "sender": "amy",
            "originServerId": "127.0.0.1:4000",
            "content": "hello",
            "timestamp": 1_800_000_001_000u64
        })]
    );
    one.out.clear();
    one.frame(old, Protocol::WebCompat, "hi all\n");
    assert_eq!(one.take(old)[0]["sender"], "User@/127.0.0.1:36116");
    assert_eq!(
        duckchat::decode_outbound(&one.datagrams_to(amy)[0]).unwrap(),
        Outbound::Say {
            channel: b"Common",
            user: b"User@/127.0.0.1:36116",
            text: b"hi all",
        }
    );
}

#[test]
fn browsers_see_who_joins_and_leaves() {
    let mut one = One::new();
    let amy = addr(50001);
    let bob = stream(1, 50002);
    one.frame(bob, Protocol::Web, r#"{"type":"join","channel":"Common"}"#);
    assert_eq!(
        one.take(bob),
        [
            serde_json::json!({"type":"ok","request":"join","channel":"Common"}),
            serde_json::json!({"type":"presence","channel":"Common","user":"127.0.0.1:50002","event":"joined","signed_in":false}),
        ]
    );
    one.out.clear();
    one.frame(bob, Protocol::Web, r#"{"type":"nick","name":"bob"}"#);
    let presence = |user: &str, event: &str| serde_json::json!({"type":"presence","channel":"Common","user":user,"event":event,"signed_in":false});
    assert_eq!(
        one.take(bob),
        [
            serde_json::json!({"type":"ok","request":"nick","name":"bob"}),
            presence("127.0.0.1:50002", "left"),
            presence("bob", "joined"),
        ]
    );
    one.out.clear();
    one.udp(amy, Inbound::Login { user: b"amy" });
    one.udp(amy, Inbound::Join { channel: b"Common" });
    one.udp(amy, Inbound::Leave { channel: b"Common" });
    assert_eq!(
        one.take(bob),
        [presence("amy", "joined"), presence("amy", "left")]
    );
    assert!(one.out.sends().is_empty(), "DuckChat users are not told");
}
