//! Sessions are named by id, not by address: one address may hold a session in each protocol,
//! and an id that outlives its session never reaches the next session in its slot.

use crate::sim;

use chat_router::engine::{Config, Engine, Outbox, ShardMsg};
use chat_router::proto::duckchat::{Inbound, SayLayout};
use chat_router::proto::Name;
use sim::{addr, Sim};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const SETTLE: Duration = Duration::from_millis(200);

#[test]
fn one_address_holds_a_session_in_each_protocol() {
    for shards in [1, 3] {
        let mut sim = Sim::new(11, shards);
        sim.add_server(Sim::config(4000, &[]));
        let (both, bob) = (addr(50001), addr(50002));
        sim.send(both, 4000, Inbound::Login { user: b"amy" });
        sim.send(both, 4000, Inbound::Join { channel: b"3" });
        sim.send_raw(both, 4000, b"/join 3".to_vec());
        sim.send(bob, 4000, Inbound::Login { user: b"bob" });
        sim.send(bob, 4000, Inbound::Join { channel: b"3" });
        sim.run_for(SETTLE);
        sim.send(bob, 4000, Inbound::Who { channel: b"3" });
        sim.send(
            bob,
            4000,
            Inbound::Say {
                channel: b"3",
                text: b"hi",
            },
        );
        sim.run_for(SETTLE);
        assert_eq!(
            sim.decoded(bob),
            ["who 3 127.0.0.1:50001,amy,bob", "say 3 bob hi"],
            "{shards} shards"
        );
        let got = sim.lines(both);
        assert_eq!(got[0], "+OK You are now in chat room #3");
        assert_eq!(got[1..].len(), 2, "{got:?}");
        assert!(got.contains(&"<bob> hi".to_string()), "{got:?}");
        assert!(sim.decoded(both).contains(&"say 3 bob hi".to_string()));
        // The text session leaving does not take the DuckChat one with it.
        sim.send_raw(both, 4000, b"/quit".to_vec());
        sim.run_for(SETTLE);
        sim.send(bob, 4000, Inbound::Who { channel: b"3" });
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(bob).last().unwrap(), "who 3 amy,bob");
    }
}

fn request(req: Inbound<'_>) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = req.encode(&mut buf, SayLayout::UserFirst).unwrap();
    buf[..n].to_vec()
}

/// Hands every message in `out` to its shard, and what they produce in turn, until none is
/// left (what they send stays in `out`); returns those for which `hold` is true instead of
/// handing them over.
fn deliver(
    shards: &mut [Engine],
    out: &mut Outbox,
    hold: impl Fn(&ShardMsg) -> bool,
) -> Vec<(u16, ShardMsg)> {
    let mut held = Vec::new();
    let mut pending: Vec<(u16, ShardMsg)> = out.take_msgs().collect();
    for _ in 0..1000 {
        let Some((to, msg)) = pending.pop() else {
            return held;
        };
        if hold(&msg) {
            held.push((to, msg));
            continue;
        }
        shards[to as usize].handle_message(Duration::ZERO, msg, out);
        pending.extend(out.take_msgs());
    }
    panic!("messages between shards never ended");
}

#[test]
fn an_old_sessions_answer_never_reaches_the_next_session_in_its_slot() {
    let cfg = Arc::new(Config::new(addr(4000)));
    let mut shards: Vec<Engine> = (0..2)
        .map(|i| Engine::new(i, 2, cfg.clone(), 7, Duration::ZERO))
        .collect();
    // A channel owned by shard 1, so that WHO crosses to it and back.
    let channel = (0..100)
        .map(|i| format!("c{i}"))
        .find(|c| shards[0].owner(&Name::from(c.as_str())) == 1)
        .unwrap();
    let (amy, bob): (SocketAddr, SocketAddr) = (addr(50001), addr(50002));
    let mut out = Outbox::with_capacity(64);
    let now = Duration::ZERO;
    let on_home = |shards: &mut [Engine], out: &mut Outbox, from, req| {
        shards[0].handle_datagram(now, from, &request(req), out);
    };
    on_home(&mut shards, &mut out, amy, Inbound::Login { user: b"amy" });
    let join = Inbound::Join {
        channel: channel.as_bytes(),
    };
    on_home(&mut shards, &mut out, amy, join);
    deliver(&mut shards, &mut out, |_| false);
    on_home(
        &mut shards,
        &mut out,
        amy,
        Inbound::Who {
            channel: channel.as_bytes(),
        },
    );
    let held = deliver(&mut shards, &mut out, |m| {
        matches!(m, ShardMsg::WhoNames { .. })
    });
    assert_eq!(held.len(), 1, "the owner answered WHO");
    // Amy leaves before the answer is home; Bob takes her slot.
    on_home(&mut shards, &mut out, amy, Inbound::Logout);
    on_home(&mut shards, &mut out, bob, Inbound::Login { user: b"bob" });
    on_home(&mut shards, &mut out, bob, join);
    deliver(&mut shards, &mut out, |_| false);
    assert!(out.sends().is_empty());
    for (to, msg) in held {
        shards[to as usize].handle_message(now, msg, &mut out);
    }
    assert!(
        out.sends().is_empty(),
        "Amy's WHO answer went to {:?}",
        out.sends()
    );
    // Bob's own WHO is answered: the answer path works.
    on_home(
        &mut shards,
        &mut out,
        bob,
        Inbound::Who {
            channel: channel.as_bytes(),
        },
    );
    deliver(&mut shards, &mut out, |_| false);
    assert_eq!(out.sends().len(), 1);
    assert_eq!(out.sends()[0].dst, bob);
}
