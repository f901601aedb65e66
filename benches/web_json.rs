//! The WebSocket front-end's message event as the router writes it (`engine::frontend::web`:
//! serde_json from its event enum) beside serde_json from a plain derived struct. The router's
//! own hand-written JSON writer was measured this way against serde_json and lost (1.6 to 2x
//! slower on a long text with escapes, no faster on a short one), so it was replaced.

use chat_router::engine::frontend::{Delivery, Protocol};
use chat_router::engine::Chat;
use chat_router::proto::Name;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use serde::Serialize;
use std::borrow::Cow;
use std::fmt::Write as _;
use std::io::Cursor;

#[derive(Serialize)]
struct Message<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    channel: Cow<'a, str>,
    from: Cow<'a, str>,
    text: Cow<'a, str>,
    origin: Option<&'a str>,
    id: &'a str,
    ts: u64,
}

/// The same event through serde_json (names and texts read as lossy UTF-8, as the router's
/// writer reads them).
fn with_serde(d: &Delivery<'_>, buf: &mut [u8]) -> Option<usize> {
    let mut origin = arrayvec::ArrayString::<64>::new();
    if let Some(o) = d.origin {
        let _ = write!(origin, "{o}");
    }
    let mut id = arrayvec::ArrayString::<16>::new();
    let _ = write!(id, "{:016x}", d.id);
    let message = Message {
        kind: "message",
        channel: String::from_utf8_lossy(d.channel.as_bytes()),
        from: String::from_utf8_lossy(d.chat.user()),
        text: String::from_utf8_lossy(d.chat.text()),
        origin: d.origin.map(|_| origin.as_str()),
        id: &id,
        ts: d.unix_ms,
    };
    let mut cursor = Cursor::new(buf);
    serde_json::to_writer(&mut cursor, &message).ok()?;
    Some(cursor.position() as usize)
}

fn web_json(c: &mut Criterion) {
    let channel = Name::from("Common");
    let short = Chat::new(b"alice", b"the quick brown fox jumps over the lazy dog");
    let long_text =
        "a line with \"quotes\", a tab\tand some UTF-8: h\u{e9}llo w\u{f6}rld. ".repeat(12);
    let long = Chat::new(b"alice", long_text.as_bytes());
    let mut buf = vec![0u8; 8192];
    for (name, chat) in [("44 bytes", &short), ("long, escapes", &long)] {
        let delivery = Delivery {
            channel: &channel,
            chat,
            id: 0x0123_4567_89ab_cdef,
            origin: Some("127.0.0.1:4000".parse().unwrap()),
            unix_ms: 1_796_000_000_000,
        };
        let mut ours = vec![0u8; 8192];
        let len = Protocol::Web.encode_chat(&delivery, &mut ours).unwrap();
        let theirs = with_serde(&delivery, &mut buf).unwrap();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&ours[..len]).unwrap(),
            serde_json::from_slice::<serde_json::Value>(&buf[..theirs]).unwrap(),
            "the same event"
        );
        c.bench_function(&format!("web message, the router, {name}"), |b| {
            b.iter(|| Protocol::Web.encode_chat(black_box(&delivery), &mut buf))
        });
        c.bench_function(&format!("web message, plain struct, {name}"), |b| {
            b.iter(|| with_serde(black_box(&delivery), &mut buf))
        });
    }
}

criterion_group!(benches, web_json);
criterion_main!(benches);
