//! Fuzz harnesses: one function per decoder and one for the engine as a whole, each taking
//! arbitrary bytes. The fuzz targets beside this file run them under cargo-fuzz
//! (coverage-guided, nightly); the test suite (`tests/simulations/fuzz.rs`, which includes this
//! file: it is no part of the router's library) replays `fuzz/corpus/` through them and runs each on random and mutated inputs for a
//! fixed time, so the attacks found stay fixed on the stable toolchain too.
//!
//! A harness panics only when an invariant breaks: a decoder that panics, an encoder whose
//! output does not read back as what was encoded, or an engine that holds more than its
//! limits allow or sends a source without a session more bytes than it sent.

use chat_router::engine::{
    Cluster, Config, Engine, Federation, Member, Neighbors, Order, Outbox, ShardMsg,
};
use chat_router::proto::duckchat::{self, SayLayout};
use chat_router::proto::{group, text};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The DuckChat decoders, both S2S_SAY layouts. Whatever decodes re-encodes as the same
/// type, and encoding is idempotent (decode, encode, decode, encode gives the same bytes).
pub fn duckchat(data: &[u8]) {
    for layout in [SayLayout::UserFirst, SayLayout::ChannelFirst] {
        let Ok(first) = duckchat::decode_inbound(data, layout) else {
            continue;
        };
        let mut a = [0u8; duckchat::S2S_SAY_LEN];
        let n = first
            .encode(&mut a, layout)
            .expect("a request fits its struct");
        assert_eq!(duckchat::type_code(&a[..n]), duckchat::type_code(data));
        let second = duckchat::decode_inbound(&a[..n], layout).expect("an encoding decodes");
        let mut b = [0u8; duckchat::S2S_SAY_LEN];
        let m = second
            .encode(&mut b, layout)
            .expect("a request fits its struct");
        assert_eq!(&a[..n], &b[..m], "{first:?} / {second:?}");
    }
    let _ = duckchat::decode_outbound(data);
}

/// The text protocol's parsers.
pub fn text(data: &[u8]) {
    if !text::is_text(data) {
        return;
    }
    match text::parse(data) {
        text::Line::Join(arg) => {
            if let Ok(room) = text::parse_room(arg, text::MAX_ROOMS) {
                assert!((1..=text::MAX_ROOMS).contains(&room));
            }
        }
        text::Line::Nick(nick) if text::check_nick(nick).is_ok() => {
            assert!(chat_router::proto::is_printable_name(nick) && !nick.contains(&b'>'));
        }
        _ => {}
    }
}

/// The cluster's datagram decoder; every frame that decodes re-encodes to bytes that decode
/// the same.
pub fn group(data: &[u8]) {
    if let Ok(d) = group::decode(data) {
        let _ = d.authentic(Some(&group::Key::derive(b"fuzz")));
        for frame in d.frames().map_while(Result::ok) {
            let mut buf = Vec::new();
            if group::push_frame(&mut buf, group::MAX_DATAGRAM, &frame) {
                let again = group::frames_of(&buf).next();
                assert_eq!(again, Some(Ok(frame)));
            }
        }
    }
}

/// Limits small enough that arbitrary input reaches them.
fn small(mut cfg: Config) -> Config {
    cfg.user_timeout = Duration::from_secs(2);
    cfg.limits.sessions_per_shard = 8;
    cfg.limits.sessions_per_ip = 3;
    cfg.limits.channels_per_user = 4;
    cfg.limits.channels = 16;
    cfg.limits.recent_ids = 64;
    cfg.limits.reply_burst = 2048;
    cfg.limits.reply_bytes_per_sec = 4096;
    cfg
}

fn at(ip: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, ip], port))
}

/// The engine of one server with two shards, fed arbitrary datagrams from a few dozen
/// sources (clients on four addresses, a neighbor, cluster peers, its own address) with time
/// passing between them. The first byte picks DuckChat federation or a total-order cluster;
/// then each record is `source, pause, length, bytes`.
///
/// After every step it checks what the shards hold against the limits, and that a source
/// without a session before and after its datagram got no more bytes than it sent.
pub fn engine(data: &[u8]) {
    let Some((&mode, mut rest)) = data.split_first() else {
        return;
    };
    let local = at(1, 4000);
    let mut cfg = small(Config::new(local));
    if mode % 2 == 0 {
        let mut neighbors = Neighbors::new(vec![at(1, 5001)]);
        neighbors.refresh = Duration::from_secs(1);
        neighbors.timeout = Duration::from_secs(2);
        cfg.federation = Federation::Tree(neighbors);
    } else {
        let member = |port| Member {
            forward: at(1, port),
            bind: at(1, port),
        };
        cfg.federation = Federation::Group(Cluster::new(
            vec![member(4000), member(6002), member(6003)],
            0,
            Order::Total,
        ));
    }
    let cfg = Arc::new(cfg);
    let limits = cfg.limits.clone();
    const SHARDS: u16 = 2;
    let mut now = Duration::from_secs(1);
    let mut shards: Vec<Engine> = (0..SHARDS)
        .map(|i| Engine::new(i, SHARDS, cfg.clone(), u64::from(i) + 1, now))
        .collect();
    let mut out = Outbox::with_capacity(256);
    const CLIENTS: usize = 32;
    let sources: Vec<SocketAddr> = (0..CLIENTS as u16)
        .map(|i| at(2 + (i % 4) as u8, 10_000 + i))
        .chain([at(1, 5001), at(1, 6002), at(1, 6003), local])
        .collect();
    while let [source, pause, len, tail @ ..] = rest {
        let len = (*len as usize).min(tail.len());
        let (datagram, next) = tail.split_at(len);
        rest = next;
        now += Duration::from_millis(u64::from(*pause) * 8);
        let source = *source as usize % sources.len();
        let src = sources[source];
        let home = usize::from(src.port() % SHARDS);
        // Servers get federation traffic, which is not a reply; clients are the first 32.
        let stranger = source < CLIENTS && !shards[home].has_session(&src);
        shards[home].handle_datagram(now, src, datagram, &mut out);
        let mut sent_to_src = 0;
        run_until_quiet(&mut shards, now, &mut out, |dst, bytes| {
            if dst == src {
                sent_to_src += bytes;
            }
        });
        if stranger && !shards[home].has_session(&src) {
            assert!(
                sent_to_src <= chat_router::engine::AMPLIFICATION * datagram.len(),
                "{sent_to_src} bytes to a stranger for {datagram:?}"
            );
        }
        for shard in &shards {
            if let Err(e) = shard.census().check(&limits, SHARDS) {
                panic!("{e}");
            }
        }
    }
}

/// Runs every shard's timers and hands messages between shards until nothing is left,
/// reporting each datagram sent.
fn run_until_quiet(
    shards: &mut [Engine],
    now: Duration,
    out: &mut Outbox,
    mut sent: impl FnMut(SocketAddr, usize),
) {
    let mut queue: VecDeque<(u16, ShardMsg)> = VecDeque::new();
    for shard in shards.iter_mut() {
        if now >= shard.next_timeout() {
            shard.handle_timeout(now, out);
        }
        take(out, &mut queue, &mut sent);
    }
    // Bounded: each message comes from handling another, and fan-out is finite.
    for _ in 0..100_000 {
        let Some((to, msg)) = queue.pop_front() else {
            return;
        };
        shards[to as usize].handle_message(now, msg, out);
        take(out, &mut queue, &mut sent);
    }
    panic!("the shards never went quiet");
}

fn take(
    out: &mut Outbox,
    queue: &mut VecDeque<(u16, ShardMsg)>,
    sent: &mut impl FnMut(SocketAddr, usize),
) {
    for s in out.sends() {
        sent(s.dst, out.bytes(s.payload).len());
    }
    queue.extend(out.take_msgs());
    out.clear();
}
