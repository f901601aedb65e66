//! Hostile sources, simulated (see `sim/mod.rs`): spoofed logins that try to lock users out, a
//! full session table, text sessions that never leave, channels without end, names with control
//! characters, and answers aimed at a victim. Each test runs with one shard and with three.

use crate::sim;

use chat_router::engine::{Config, DropReason, Engine, Outbox};
use chat_router::proto::duckchat::{self, Inbound, SayLayout};
use sim::{addr, Sim};
use std::net::SocketAddr;
use std::time::Duration;

const SETTLE: Duration = Duration::from_millis(200);
const SHARDS: [u16; 2] = [1, 3];

/// Client `i` of the spoofed address block 10.x.y.z (one IP each).
fn spoofed(i: u32) -> SocketAddr {
    SocketAddr::from((std::net::Ipv4Addr::from((10u32 << 24) + i), 1000))
}

fn server(seed: u64, shards: u16, tune: impl FnOnce(&mut Config)) -> Sim {
    let mut sim = Sim::new(seed, shards);
    let mut cfg = Sim::config(4000, &[]);
    tune(&mut cfg);
    sim.add_server(cfg);
    sim
}

fn drops(sim: &Sim, why: DropReason) -> u64 {
    sim.engines(4000).map(|e| e.counters().drops(why)).sum()
}

fn counter(sim: &Sim, get: impl Fn(&chat_router::engine::Counters) -> u64) -> u64 {
    sim.engines(4000).map(|e| get(e.counters())).sum()
}

fn say(sim: &mut Sim, client: SocketAddr, channel: &str, text: &str) {
    sim.send(
        client,
        4000,
        Inbound::Say {
            channel: channel.as_bytes(),
            text: text.as_bytes(),
        },
    );
}

#[test]
fn spoofed_logins_from_one_address_cannot_lock_others_out() {
    for shards in SHARDS {
        let mut sim = server(1, shards, |c| c.limits.sessions_per_ip = 16);
        for port in 1..=3000u16 {
            let from = SocketAddr::from(([10, 6, 6, 6], port));
            // Each a name of its own (the last login of a name logs the others out).
            let name = format!("mallory{port}");
            sim.send(
                from,
                4000,
                Inbound::Login {
                    user: name.as_bytes(),
                },
            );
            sim.send(from, 4000, Inbound::KeepAlive);
        }
        sim.run_for(SETTLE);
        let admitted = 3000 - drops(&sim, DropReason::IpLimit);
        assert!(
            admitted <= 16 * u64::from(shards),
            "{admitted} sessions from one address"
        );
        let user = addr(50001);
        sim.login(user, 4000, "amy");
        say(&mut sim, user, "Common", "still welcome");
        sim.run_for(SETTLE);
        assert_eq!(sim.says(user), ["Common amy still welcome"]);
    }
}

#[test]
fn a_full_table_evicts_the_longest_silent_session() {
    for shards in SHARDS {
        let mut sim = server(2, shards, |c| c.limits.sessions_per_shard = 50);
        let user = addr(50001);
        sim.login(user, 4000, "amy");
        sim.run_for(SETTLE);
        // Spoofed logins from 2,000 addresses, while the user keeps talking.
        for i in 0..2000 {
            let name = format!("bot{i}");
            sim.send(
                spoofed(i),
                4000,
                Inbound::Login {
                    user: name.as_bytes(),
                },
            );
            // Touched more often than the table turns over: never the longest-silent.
            if i % 20 == 0 {
                sim.run_for(Duration::from_millis(10));
                sim.send(user, 4000, Inbound::KeepAlive);
            }
        }
        sim.run_for(SETTLE);
        let evicted = counter(&sim, |c| c.sessions_evicted.get());
        assert!(
            evicted >= 2000 + 1 - 50 * u64::from(shards),
            "evicted {evicted}"
        );
        say(&mut sim, user, "Common", "never evicted");
        sim.run_for(SETTLE);
        assert_eq!(sim.says(user), ["Common amy never evicted"]);
        assert_eq!(drops(&sim, DropReason::SessionLimit), 0, "nobody refused");
    }
}

/// The course's client keeps alive once a minute; in between, forged logins from thousands of
/// addresses turn the table over many times. The user, who did more than log in, is never the
/// one evicted: those that only logged in go first.
#[test]
fn a_user_who_keeps_alive_once_a_minute_outlives_a_flood_of_forged_logins() {
    for shards in SHARDS {
        let mut sim = server(2, shards, |c| {
            c.limits.sessions_per_shard = 50;
            c.user_timeout = Duration::from_secs(120);
        });
        let user = addr(50001);
        sim.login(user, 4000, "amy");
        sim.run_for(SETTLE);
        for minute in 0..3 {
            for i in 0..3000 {
                let name = format!("bot{minute}-{i}");
                let from = spoofed(minute * 3000 + i);
                sim.send(
                    from,
                    4000,
                    Inbound::Login {
                        user: name.as_bytes(),
                    },
                );
                if i % 100 == 0 {
                    sim.run_for(Duration::from_millis(20));
                }
            }
            sim.run_for(Duration::from_secs(55));
            sim.send(user, 4000, Inbound::KeepAlive);
        }
        let evicted = counter(&sim, |c| c.sessions_evicted.get());
        assert!(
            evicted >= 9000 - 50 * u64::from(shards),
            "evicted {evicted}"
        );
        say(&mut sim, user, "Common", "still here");
        sim.run_for(SETTLE);
        assert_eq!(sim.says(user), ["Common amy still here"]);
    }
}

#[test]
fn text_sessions_expire_like_duckchat_ones() {
    for shards in SHARDS {
        let mut sim = server(3, shards, |_| {});
        let (quiet, talker) = (addr(50001), addr(50002));
        sim.send_raw(quiet, 4000, b"/join 3".to_vec());
        sim.send_raw(talker, 4000, b"/join 3".to_vec());
        sim.run_for(SETTLE);
        // The talker keeps its session alive by talking; the quiet one says nothing for longer
        // than the user timeout (20 s in the simulation).
        for i in 0..6 {
            sim.run_for(Duration::from_secs(5));
            sim.send_raw(talker, 4000, format!("tick {i}").into_bytes());
        }
        sim.run_for(SETTLE);
        sim.clear_inboxes();
        sim.send_raw(talker, 4000, b"anyone?".to_vec());
        sim.run_for(SETTLE);
        assert!(sim.lines(quiet).is_empty(), "{:?}", sim.lines(quiet));
        assert_eq!(sim.lines(talker), ["<127.0.0.1:50002> anyone?"]);
        assert_eq!(counter(&sim, |c| c.users_expired.get()), 1);
    }
}

#[test]
fn local_joins_are_bounded_by_the_channel_limit() {
    for shards in SHARDS {
        let mut sim = server(4, shards, |c| c.limits.channels = 20);
        let (a, b) = (addr(50001), addr(50002));
        sim.login(a, 4000, "a");
        sim.login(b, 4000, "b");
        sim.run_for(SETTLE);
        for (user, first) in [(a, 0), (b, 100)] {
            for i in first..first + 15 {
                let name = format!("c{i}");
                sim.send(
                    user,
                    4000,
                    Inbound::Join {
                        channel: name.as_bytes(),
                    },
                );
                sim.run_for(Duration::from_millis(5));
            }
        }
        sim.run_for(SETTLE);
        let refusals = sim
            .decoded(b)
            .iter()
            .filter(|l| *l == "error Too many channels on this server")
            .count();
        assert_eq!(refusals, 15 + 15 + 1 - 20, "{:?}", sim.decoded(b));
        sim.send(a, 4000, Inbound::List);
        sim.run_for(SETTLE);
        let listed = sim
            .decoded(a)
            .iter()
            .filter_map(|l| l.strip_prefix("list "))
            .flat_map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
            .count();
        assert_eq!(listed, 20);
        assert_eq!(drops(&sim, DropReason::ChannelLimit), 11);
    }
}

#[test]
fn names_with_control_characters_are_refused() {
    for shards in SHARDS {
        let mut sim = server(5, shards, |_| {});
        let (a, b) = (addr(50001), addr(50002));
        sim.send(
            a,
            4000,
            Inbound::Login {
                user: b"\x1b[2Jevil",
            },
        );
        sim.run_for(SETTLE);
        say(&mut sim, a, "Common", "am I in?");
        sim.run_for(SETTLE);
        assert_eq!(
            sim.decoded(a),
            [
                "error User names must be printable UTF-8",
                "error Not logged in"
            ]
        );

        sim.login(b, 4000, "bob");
        sim.send(
            b,
            4000,
            Inbound::Login {
                user: b"bob\r\nmallory",
            },
        );
        sim.send(
            b,
            4000,
            Inbound::Join {
                channel: b"line\nbreak",
            },
        );
        sim.send(b, 4000, Inbound::Join { channel: b"" });
        // A text source without a session would get no answer longer than its request.
        sim.send_raw(addr(50003), 4000, b"/nick carol".to_vec());
        sim.send_raw(addr(50003), 4000, b"/nick \x1b[31mred".to_vec());
        sim.send_raw(addr(50003), 4000, b"/nick caf\xc3".to_vec());
        sim.run_for(SETTLE);
        assert_eq!(
            sim.decoded(b),
            [
                "error User names must be printable UTF-8",
                "error Channel names must be printable UTF-8",
                "error Channel names must be printable UTF-8",
            ]
        );
        assert_eq!(
            sim.lines(addr(50003)),
            [
                "+OK Nickname set to 'carol'",
                "-ERR A nickname must be printable UTF-8",
                "-ERR A nickname must be printable UTF-8"
            ]
        );
        sim.send(b, 4000, Inbound::Who { channel: b"Common" });
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(b).last().unwrap(), "who Common bob");
        assert_eq!(drops(&sim, DropReason::BadName), 6);
    }
}

#[test]
fn a_large_list_to_a_spoofed_address_is_paced_by_its_reply_budget() {
    const BURST: u64 = 4096;
    const RATE: u64 = 8192;
    for shards in SHARDS {
        let mut sim = server(6, shards, |c| {
            c.limits.reply_burst = BURST;
            c.limits.reply_bytes_per_sec = RATE;
            c.limits.channels_per_user = 1000;
        });
        let owner = addr(50001);
        sim.login(owner, 4000, "owner");
        for i in 0..400 {
            let name = format!("channel-{i:03}");
            sim.send(
                owner,
                4000,
                Inbound::Join {
                    channel: name.as_bytes(),
                },
            );
        }
        sim.run_for(SETTLE);
        // LOGIN + LIST (40 bytes) spoofed from the victim: 401 channels, 12.8 kB of answer.
        let (early, listed) = aim_at(&mut sim, Inbound::List, "list ", Duration::from_secs(3));
        assert!(
            early <= (BURST + RATE / 10) * u64::from(shards),
            "{early} bytes in the first 50 ms"
        );
        assert_eq!(listed.len(), 401, "all of it, in the end");
        assert!(
            listed.windows(2).all(|w| w[0] < w[1]),
            "in order, once each"
        );
    }
}

/// A forged LOGIN and five `request`s from a victim's address, the later ones while the first
/// answer is still being paced (they add nothing). Returns the bytes the victim got in the
/// first 50 ms, and after `then` the names of every answer datagram starting with `prefix`.
fn aim_at(sim: &mut Sim, request: Inbound, prefix: &str, then: Duration) -> (u64, Vec<String>) {
    let victim = SocketAddr::from(([10, 0, 0, 7], 9));
    sim.send(victim, 4000, Inbound::Login { user: b"v" });
    for _ in 0..5 {
        sim.send(victim, 4000, request);
    }
    sim.run_for(Duration::from_millis(50));
    let early: u64 = sim.raw(victim).iter().map(|d| d.len() as u64).sum();
    assert!(early > 0, "the burst is sent at once");
    sim.run_for(then);
    let names = sim
        .decoded(victim)
        .iter()
        .filter_map(|l| l.strip_prefix(prefix))
        .flat_map(|l| l.split(',').map(str::to_string).collect::<Vec<_>>())
        .collect();
    (early, names)
}

fn encoded(request: Inbound) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = request.encode(&mut buf, SayLayout::UserFirst).unwrap();
    buf.truncate(n);
    buf
}

#[test]
fn a_mass_expiry_is_spread_over_short_steps() {
    let mut cfg = Sim::config(4000, &[]);
    cfg.limits.sessions_per_ip = usize::MAX;
    let timeout = cfg.user_timeout;
    let mut engine = Engine::new(0, 1, std::sync::Arc::new(cfg), 1, Duration::ZERO);
    let mut out = Outbox::with_capacity(1024);
    const USERS: u32 = 20_000;
    for i in 0..USERS {
        let client = spoofed(i);
        let name = format!("u{i}");
        let login = encoded(Inbound::Login {
            user: name.as_bytes(),
        });
        engine.handle_datagram(Duration::ZERO, client, &login, &mut out);
        let join = encoded(Inbound::Join { channel: b"big" });
        engine.handle_datagram(Duration::ZERO, client, &join, &mut out);
        out.clear();
    }
    let mut now = timeout + Duration::from_secs(2);
    let mut steps = 0;
    let expired = |e: &Engine| e.counters().users_expired.get();
    while expired(&engine) < u64::from(USERS) {
        let before = expired(&engine);
        now = now.max(engine.next_timeout());
        engine.handle_timeout(now, &mut out);
        out.clear();
        assert!(
            expired(&engine) - before <= 1024,
            "one step expired too many"
        );
        steps += 1;
        assert!(steps < 1000, "expiry never finished");
    }
    assert!(steps >= u64::from(USERS).div_ceil(1024) as usize);
    // The channel is gone with its last member.
    let who = encoded(Inbound::Who { channel: b"big" });
    let login = encoded(Inbound::Login { user: b"late" });
    let late = addr(50009);
    engine.handle_datagram(now, late, &login, &mut out);
    engine.handle_datagram(now, late, &who, &mut out);
    let replies: Vec<String> = out
        .sends()
        .iter()
        .filter_map(|s| match duckchat::decode_outbound(out.bytes(s.payload)) {
            Ok(duckchat::Outbound::Error { message }) => {
                Some(String::from_utf8_lossy(message).into_owned())
            }
            _ => None,
        })
        .collect();
    assert_eq!(replies, ["No channel by the name big"]);
}

#[test]
fn a_source_without_a_session_never_gets_more_bytes_than_it_sent() {
    let cfg = std::sync::Arc::new(Sim::config(4000, &[]));
    let mut engine = Engine::new(0, 1, cfg, 7, Duration::ZERO);
    let mut out = Outbox::with_capacity(1024);
    let mut rng = chat_router::rng::Rng::new(99);
    let mut answered = 0;
    for i in 0..50_000u32 {
        let src = spoofed(i % 5000);
        let len = rng.below(160) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if len >= 4 && i % 2 == 0 {
            // A valid type code, but never LOGIN: these sources stay without a session.
            let kind = 1 + rng.below(11) as i32;
            bytes[..4].copy_from_slice(&kind.to_le_bytes());
        } else if i % 4 == 1 {
            // Text lines, but never the commands that begin a session.
            bytes.retain(|&b| b != 0);
            if bytes.starts_with(b"/j") || bytes.starts_with(b"/n") {
                bytes[1] = b'x';
            }
        } else if len >= 4 && bytes[..4] == [0, 0, 0, 0] {
            bytes[0] = 1;
        }
        let now = Duration::from_millis(u64::from(i));
        engine.handle_datagram(now, src, &bytes, &mut out);
        let sent: usize = out
            .sends()
            .iter()
            .filter(|s| s.dst == src)
            .map(|s| out.bytes(s.payload).len())
            .sum();
        assert!(
            sent <= chat_router::engine::AMPLIFICATION * bytes.len(),
            "{sent} bytes for {bytes:?}"
        );
        answered += usize::from(sent > 0);
        out.clear();
    }
    assert!(
        answered > 1000,
        "strangers do get answers that fit: {answered}"
    );
}

#[test]
fn a_large_who_to_a_spoofed_address_is_paced_by_its_reply_budget() {
    const BURST: u64 = 4096;
    const RATE: u64 = 8192;
    for shards in SHARDS {
        let mut sim = server(8, shards, |c| {
            c.limits.reply_burst = BURST;
            c.limits.reply_bytes_per_sec = RATE;
        });
        // 500 members in Common: 16 kB of names.
        for i in 0..500 {
            sim.login(spoofed(1000 + i), 4000, &format!("member-{i:03}"));
        }
        sim.run_for(SETTLE);
        let who = Inbound::Who { channel: b"Common" };
        let (early, listed) = aim_at(&mut sim, who, "who Common ", Duration::from_secs(4));
        assert!(
            early <= BURST + RATE / 10,
            "{early} bytes in the first 50 ms"
        );
        assert_eq!(listed.len(), 500, "all of it, once");
        assert!(listed.windows(2).all(|w| w[0] < w[1]), "in order");
    }
}

#[test]
fn a_cluster_server_never_answers_another_servers_bind_address() {
    use chat_router::engine::{Cluster, Federation, Member, Order};
    // Forwarding addresses differ from bind addresses, as behind the proxy.
    let members: Vec<Member> = (1..=3u16)
        .map(|i| Member {
            forward: addr(8000 + i),
            bind: addr(5000 + i),
        })
        .collect();
    let mut cfg = Config::new(members[0].bind);
    cfg.federation = Federation::Group(Cluster::new(members.clone(), 0, Order::Total));
    let mut engine = Engine::new(0, 1, std::sync::Arc::new(cfg), 1, Duration::ZERO);
    let mut out = Outbox::with_capacity(64);
    for from in [
        members[1].bind,
        members[2].bind,
        members[0].bind,
        members[0].forward,
    ] {
        for line in [
            &b"x"[..],
            b"/nick a-nick-long-enough-for-its-answer-to-be-sent",
        ] {
            engine.handle_datagram(Duration::ZERO, from, line, &mut out);
            assert!(out.sends().is_empty(), "answered {from}");
        }
    }
    assert_eq!(engine.counters().drops(DropReason::FromServer), 8);
}

#[test]
fn a_join_the_owner_refuses_is_undone_on_the_home_shard() {
    // Two shards, room for two channels on each owner. Three users on shard 0 join three new
    // channels owned by shard 1 before shard 1's directory updates can reach shard 0: the
    // home shard's own check lets all three through, and the owner refuses the third.
    let mut cfg = Sim::config(4000, &[]);
    cfg.limits.channels = 2;
    let cfg = std::sync::Arc::new(cfg);
    let now = Duration::from_secs(1);
    let mut shards: Vec<Engine> = (0..2)
        .map(|i| Engine::new(i, 2, cfg.clone(), 1, now))
        .collect();
    let names: Vec<String> = (0..100)
        .map(|i| format!("x{i}"))
        .filter(|n| shards[0].owner(&chat_router::proto::Name::from(n.as_str())) == 1)
        .take(3)
        .collect();
    let mut out = Outbox::with_capacity(64);
    let mut to_owner = Vec::new();
    let users: Vec<SocketAddr> = (0..3).map(|i| addr(50000 + i)).collect();
    for (user, name) in users.iter().zip(&names) {
        shards[0].handle_datagram(
            now,
            *user,
            // Named like the channel: the claim of the name goes to shard 1 too.
            &encoded(Inbound::Login {
                user: name.as_bytes(),
            }),
            &mut out,
        );
        let join = encoded(Inbound::Join {
            channel: name.as_bytes(),
        });
        shards[0].handle_datagram(now, *user, &join, &mut out);
        to_owner.extend(out.take_msgs());
        out.clear();
    }
    // Now shard 1 handles the three joins; its answers go back to shard 0.
    let mut back = Vec::new();
    for (to, msg) in to_owner {
        assert_eq!(to, 1);
        shards[1].handle_message(now, msg, &mut out);
        back.extend(out.take_msgs().filter(|(to, _)| *to == 0));
        out.clear();
    }
    let mut errors = Vec::new();
    for (_, msg) in back {
        shards[0].handle_message(now, msg, &mut out);
        for s in out.sends() {
            if let Ok(duckchat::Outbound::Error { message }) =
                duckchat::decode_outbound(out.bytes(s.payload))
            {
                errors.push((s.dst, String::from_utf8_lossy(message).into_owned()));
            }
        }
        out.clear();
    }
    assert_eq!(
        errors,
        [(users[2], "Too many channels on this server".to_string())]
    );
    chat_router::engine::check_agreement(&shards).unwrap();
}
