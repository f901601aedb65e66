//! Deterministic simulations of single servers and federations (see `sim/mod.rs`). Every test
//! runs with one shard per server and with three, so cross-shard paths are exercised too.

use crate::sim;

use chat_router::engine::{DropReason, Limits};
use chat_router::proto::duckchat::{self, Inbound};
use sim::{addr, Sim};
use std::time::Duration;

const SETTLE: Duration = Duration::from_millis(200);
const SHARDS: [u16; 2] = [1, 3];

fn say(sim: &mut Sim, client: u16, server: u16, channel: &str, text: &str) {
    sim.send(
        addr(client),
        server,
        Inbound::Say {
            channel: channel.as_bytes(),
            text: text.as_bytes(),
        },
    );
}

#[test]
fn single_server_client_behaviour() {
    for shards in SHARDS {
        let mut sim = Sim::topology(1, shards, &[(4000, &[])]);
        let (a, b) = (addr(50001), addr(50002));
        // A source without a session never gets more than three times the bytes it sent: a
        // 36-byte JOIN gets its 68-byte error, a 4-byte LIST nothing.
        sim.send(a, 4000, Inbound::Join { channel: b"x" });
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(a), ["error Not logged in"]);
        sim.clear_inboxes();
        sim.send(a, 4000, Inbound::List);
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(a), Vec::<String>::new());
        say(&mut sim, 50001, 4000, "x", "hi");
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(a), ["error Not logged in"]);
        sim.clear_inboxes();

        sim.login(a, 4000, "zed");
        sim.login(b, 4000, "amy");
        sim.run_for(SETTLE);
        say(&mut sim, 50001, 4000, "Common", "hello");
        sim.run_for(SETTLE);
        assert_eq!(sim.says(a), ["Common zed hello"], "echo to the sender");
        assert_eq!(sim.says(b), ["Common zed hello"]);

        sim.send(b, 4000, Inbound::Join { channel: b"dev" });
        sim.send(b, 4000, Inbound::Join { channel: b"dev" }); // silently accepted
        sim.run_for(SETTLE);
        sim.clear_inboxes();
        sim.send(a, 4000, Inbound::List);
        sim.send(a, 4000, Inbound::Who { channel: b"Common" });
        sim.send(a, 4000, Inbound::Who { channel: b"nope" });
        sim.send(a, 4000, Inbound::Leave { channel: b"dev" });
        sim.send(a, 4000, Inbound::Leave { channel: b"nope" });
        sim.send(
            a,
            4000,
            Inbound::Say {
                channel: b"dev",
                text: b"x",
            },
        );
        sim.run_for(SETTLE);
        let mut got = sim.decoded(a);
        got.sort(); // replies to different requests may come from different shards
        assert_eq!(
            got,
            [
                "error No channel by the name nope",
                "error No channel by the name nope",
                "error You are not in channel dev",
                "error You are not in channel dev",
                "list Common,dev",
                "who Common amy,zed",
            ]
        );

        // Unknown type codes, short datagrams, rename, logout.
        sim.clear_inboxes();
        sim.send_raw(a, 4000, 42i32.to_le_bytes().to_vec());
        sim.send_raw(a, 4000, vec![2, 0, 0, 0, b'x']); // a JOIN too short: dropped, counted
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(a), ["error *Unknown command"]);
        sim.send(a, 4000, Inbound::Login { user: b"aaron" });
        sim.run_for(SETTLE);
        sim.send(b, 4000, Inbound::Who { channel: b"Common" });
        sim.send(b, 4000, Inbound::Leave { channel: b"dev" });
        sim.run_for(SETTLE);
        sim.send(b, 4000, Inbound::List);
        sim.send(a, 4000, Inbound::Logout);
        sim.run_for(SETTLE);
        say(&mut sim, 50001, 4000, "Common", "bye?");
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(a).last().unwrap(), "error Not logged in");
        let got = sim.decoded(b);
        assert!(got.contains(&"who Common aaron,amy".to_string()), "{got:?}");
        assert!(
            got.contains(&"list Common".to_string()),
            "dev deleted with its last member: {got:?}"
        );
        let decode_errors: u64 = sim
            .engines(4000)
            .map(|e| e.counters().decode_errors.get())
            .sum();
        assert_eq!(decode_errors, 2);
    }
}

#[test]
fn who_and_list_are_sorted_and_split_across_datagrams() {
    for shards in SHARDS {
        let mut sim = Sim::topology(2, shards, &[(4000, &[])]);
        let asker = addr(40000);
        sim.login(asker, 4000, "asker");
        for i in 0..100u16 {
            let c = addr(41000 + i);
            sim.send(
                c,
                4000,
                Inbound::Login {
                    user: format!("user{:03}", 99 - i).as_bytes(),
                },
            );
            sim.send(c, 4000, Inbound::Join { channel: b"big" });
            sim.send(
                c,
                4000,
                Inbound::Join {
                    channel: format!("ch{i:03}").as_bytes(),
                },
            );
        }
        sim.run_for(SETTLE);
        sim.send(asker, 4000, Inbound::Who { channel: b"big" });
        sim.run_for(SETTLE);
        sim.send(asker, 4000, Inbound::List);
        sim.run_for(SETTLE);
        let datagrams = &sim.inbox[&asker];
        assert!(datagrams.iter().all(|d| d.len() <= duckchat::SPLIT_LIMIT));
        let got = sim.decoded(asker);
        let who: Vec<String> = got
            .iter()
            .filter_map(|l| l.strip_prefix("who big "))
            .flat_map(|l| l.split(','))
            .map(String::from)
            .collect();
        let expected: Vec<String> = (0..100).map(|i| format!("user{i:03}")).collect();
        assert_eq!(who, expected);
        assert!(
            got.iter().filter(|l| l.starts_with("who ")).count() >= 3,
            "split"
        );
        let list: Vec<&str> = got
            .iter()
            .filter_map(|l| l.strip_prefix("list "))
            .flat_map(|l| l.split(','))
            .collect();
        assert_eq!(list.len(), 102);
        assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted: {list:?}");
    }
}

#[test]
fn silent_users_are_logged_out_and_keep_alive_keeps_them() {
    for shards in SHARDS {
        let mut sim = Sim::topology(3, shards, &[(4000, &[])]);
        let (quiet, alive, watcher) = (addr(50001), addr(50002), addr(50003));
        sim.login(quiet, 4000, "quiet");
        sim.login(alive, 4000, "alive");
        sim.login(watcher, 4000, "watcher");
        for _ in 0..5 {
            sim.run_for(Duration::from_secs(5));
            sim.send(alive, 4000, Inbound::KeepAlive);
            sim.send(watcher, 4000, Inbound::KeepAlive);
        }
        sim.send(watcher, 4000, Inbound::Who { channel: b"Common" });
        say(&mut sim, 50001, 4000, "Common", "still here?");
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(watcher), ["who Common alive,watcher"]);
        assert_eq!(sim.decoded(quiet), ["error Not logged in"]);
    }
}

#[test]
fn two_servers_exchange_messages_once() {
    for shards in SHARDS {
        let mut sim = Sim::topology(4, shards, &[(4000, &[4001]), (4001, &[4000])]);
        let (a, b) = (addr(50001), addr(50002));
        sim.login(a, 4000, "a");
        sim.login(b, 4001, "b");
        sim.run_for(SETTLE);
        for i in 0..10 {
            say(&mut sim, 50001, 4000, "Common", &format!("a{i}"));
            say(&mut sim, 50002, 4001, "Common", &format!("b{i}"));
        }
        sim.run_for(SETTLE);
        for c in [a, b] {
            let got = sim.says(c);
            assert_eq!(got.len(), 20, "{got:?}");
            assert!(Sim::unique(&got));
        }
        // Per-sender order is kept on the sender's server (the S2S network here reorders,
        // and DuckChat promises no order across servers).
        let from_a: Vec<String> = sim
            .says(a)
            .into_iter()
            .filter(|s| s.contains(" a a"))
            .collect();
        assert_eq!(
            from_a,
            (0..10)
                .map(|i| format!("Common a a{i}"))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn a_line_of_three_forwards_through_the_middle() {
    for shards in SHARDS {
        let mut sim = Sim::topology(
            5,
            shards,
            &[(4000, &[4001]), (4001, &[4000, 4002]), (4002, &[4001])],
        );
        let (a, c) = (addr(50001), addr(50003));
        sim.login(a, 4000, "a");
        sim.login(c, 4002, "c");
        sim.send(a, 4000, Inbound::Join { channel: b"side" });
        sim.send(c, 4002, Inbound::Join { channel: b"side" });
        sim.run_for(SETTLE);
        say(&mut sim, 50001, 4000, "side", "hi");
        sim.run_for(SETTLE);
        assert_eq!(sim.says(c), ["side a hi"]);
        assert_eq!(sim.says(a), ["side a hi"]);
    }
}

#[test]
fn triangle_delivers_each_message_exactly_once() {
    for shards in SHARDS {
        for seed in 0..5 {
            let mut sim = Sim::topology(10 + seed, shards, sim::TRIANGLE);
            let users = [(50001, 4000), (50002, 5000), (50003, 6000)];
            for (c, s) in users {
                sim.login(addr(c), s, &format!("u{c}"));
            }
            sim.run_for(SETTLE);
            // One message at a time, as the course tested (messages that overlap:
            // tests/simulations/federation_soak.rs).
            for round in 0..5 {
                for (c, s) in users {
                    say(&mut sim, c, s, "Common", &format!("{c}-{round}"));
                    sim.run_for(SETTLE);
                }
            }
            for (c, _) in users {
                let got = sim.says(addr(c));
                assert_eq!(got.len(), 15, "seed {seed} shards {shards} {c}: {got:?}");
                assert!(Sim::unique(&got), "{got:?}");
            }
        }
    }
}

#[test]
fn capital_h_produces_exactly_the_three_leaves_of_the_spec() {
    for shards in SHARDS {
        let mut sim = Sim::topology(20, shards, sim::CAPITAL_H);
        let (a, b) = (addr(50000), addr(50005));
        sim.login(a, 4000, "a");
        sim.login(b, 4005, "b");
        sim.run_for(SETTLE);
        let since = sim.now;
        say(&mut sim, 50000, 4000, "Common", "across");
        sim.run_for(SETTLE);
        let mut leaves = sim.s2s_sent(duckchat::S2S_LEAVE, since);
        leaves.sort();
        assert_eq!(leaves, [(4002, 4001), (4004, 4005), (4006, 4005)]);
        assert_eq!(sim.says(b), ["Common a across"]);
        // The pruned tree now carries messages only along the path.
        let since = sim.now;
        say(&mut sim, 50005, 4005, "Common", "back");
        sim.run_for(SETTLE);
        let mut says = sim.s2s_sent(duckchat::S2S_SAY, since);
        says.sort();
        assert_eq!(says, [(4001, 4000), (4003, 4001), (4005, 4003)]);
        assert_eq!(sim.says(a), ["Common a across", "Common b back"]);
    }
}

#[test]
fn grid_delivers_exactly_once_and_prunes_its_loops() {
    let grid = sim::GRID;
    for shards in SHARDS {
        for seed in 0..3 {
            let mut sim = Sim::topology(30 + seed, shards, grid);
            let users = [
                (50000, 8100),
                (50002, 8102),
                (50006, 8106),
                (50008, 8108),
                (50004, 8104),
            ];
            for (c, s) in users {
                sim.login(addr(c), s, &format!("u{c}"));
            }
            sim.run_for(SETTLE);
            for round in 0..4 {
                for (c, s) in users {
                    say(&mut sim, c, s, "Common", &format!("{c}-{round}"));
                    sim.run_for(SETTLE);
                }
            }
            for (c, _) in users {
                let got = sim.says(addr(c));
                assert_eq!(
                    got.len(),
                    20,
                    "seed {seed} shards {shards} client {c}: {got:?}"
                );
                assert!(Sim::unique(&got));
            }
            let dups: u64 = sim
                .ports()
                .iter()
                .flat_map(|&p| sim.engines(p))
                .map(|e| e.counters().duplicates.get())
                .sum();
            assert!(
                dups > 0,
                "the grid has loops, so duplicates were seen and cut"
            );
            // After pruning, a message crosses each tree link at most once: at most 8 S2S_SAYs
            // (a spanning tree of 9 servers) per message.
            let since = sim.now;
            say(&mut sim, 50000, 8100, "Common", "last");
            sim.run_for(SETTLE);
            let says = sim.s2s_sent(duckchat::S2S_SAY, since);
            assert!(says.len() <= 8, "{says:?}");
            for (c, _) in users {
                assert_eq!(sim.says(addr(c)).len(), 21);
            }
        }
    }
}

#[test]
fn soft_state_expires_a_silent_neighbor_and_rejoins_when_it_returns() {
    for shards in SHARDS {
        let mut sim = Sim::topology(40, shards, &[(4000, &[4001]), (4001, &[4000])]);
        let (a, b) = (addr(50001), addr(50002));
        sim.login(a, 4000, "a");
        sim.login(b, 4001, "b");
        sim.run_for(SETTLE);
        sim.crash(4001);
        // Keep a's session alive across the S2S timeout (10s) and beyond.
        for _ in 0..4 {
            sim.run_for(Duration::from_secs(4));
            sim.send(a, 4000, Inbound::KeepAlive);
        }
        let expired: u64 = sim
            .engines(4000)
            .map(|e| e.counters().neighbors_expired.get())
            .sum();
        assert!(expired >= 1, "4001 expired from Common's tree at 4000");
        let since = sim.now;
        say(&mut sim, 50001, 4000, "Common", "alone");
        sim.run_for(SETTLE);
        assert!(
            sim.s2s_sent(duckchat::S2S_SAY, since).is_empty(),
            "nothing forwarded to the dead neighbor"
        );

        // 4001 comes back with no state; 4000's periodic S2S_JOIN rebuilds the tree, and b's login floods too.
        sim.restart(4001);
        sim.login(b, 4001, "b");
        sim.run_for(Duration::from_secs(6));
        sim.clear_inboxes();
        say(&mut sim, 50001, 4000, "Common", "again");
        say(&mut sim, 50002, 4001, "Common", "back");
        sim.run_for(SETTLE);
        for c in [a, b] {
            let mut got = sim.says(c);
            got.sort();
            assert_eq!(got, ["Common a again", "Common b back"]);
        }
    }
}

#[test]
fn s2s_from_strangers_is_dropped_and_counted() {
    let mut sim = Sim::topology(50, 1, &[(4000, &[4001])]);
    let user = addr(50001);
    sim.login(user, 4000, "u");
    sim.run_for(SETTLE);
    let mut buf = [0u8; 140];
    let say = duckchat::S2sSay {
        id: 7,
        user: b"mallory",
        channel: b"Common",
        text: b"spoof",
    };
    let n = say
        .encode(&mut buf, duckchat::SayLayout::UserFirst)
        .unwrap();
    sim.send_raw(addr(6666), 4000, buf[..n].to_vec());
    sim.run_for(SETTLE);
    assert!(sim.says(user).is_empty());
    assert_eq!(
        sim.engine(4000, 0)
            .counters()
            .drops(chat_router::engine::DropReason::NotNeighbor),
        1
    );
}

#[test]
fn a_duplicate_id_is_answered_with_leave_and_not_delivered() {
    let mut sim = Sim::topology(60, 1, &[(4000, &[4001, 4002])]);
    let user = addr(50001);
    sim.login(user, 4000, "u");
    sim.run_for(SETTLE);
    let mut buf = [0u8; 140];
    let say = duckchat::S2sSay {
        id: 99,
        user: b"far",
        channel: b"Common",
        text: b"once",
    };
    let n = say
        .encode(&mut buf, duckchat::SayLayout::UserFirst)
        .unwrap();
    // 4001 and 4002 are configured but not simulated: inject as them.
    sim.send_raw(addr(4001), 4000, buf[..n].to_vec());
    sim.run_for(SETTLE);
    let since = sim.now;
    sim.send_raw(addr(4002), 4000, buf[..n].to_vec());
    sim.run_for(SETTLE);
    assert_eq!(sim.says(user), ["Common far once"]);
    assert_eq!(sim.s2s_sent(duckchat::S2S_LEAVE, since), [(4000, 4002)]);
    // The redundant link goes on this side too: messages no longer go to 4002.
    let common = chat_router::proto::Name::from("Common");
    let links: Vec<_> = sim
        .engines(4000)
        .filter_map(|e| e.tree_links(&common))
        .flatten()
        .collect();
    assert_eq!(links, [addr(4001)]);
    // Its next refresh brings it back, both ways at once: 4000 joins back.
    let since = sim.now;
    let join = duckchat::Inbound::S2sJoin { channel: b"Common" };
    let n = join.encode(&mut buf, Default::default()).unwrap();
    sim.send_raw(addr(4002), 4000, buf[..n].to_vec());
    sim.run_for(SETTLE);
    assert_eq!(sim.s2s_sent(duckchat::S2S_JOIN, since), [(4000, 4002)]);
    // A refresh of a link that is there is only recorded.
    let since = sim.now;
    sim.send_raw(addr(4002), 4000, buf[..n].to_vec());
    sim.run_for(SETTLE);
    assert_eq!(sim.s2s_sent(duckchat::S2S_JOIN, since), []);
}

/// Datagrams the servers sent to each other's addresses.
fn between_servers(sim: &Sim, servers: &[u16]) -> usize {
    sim.server_log
        .iter()
        .filter(|w| servers.contains(&w.dst.port()))
        .count()
}

fn drops(sim: &Sim, port: u16, why: DropReason) -> u64 {
    sim.engines(port).map(|e| e.counters().drops(why)).sum()
}

#[test]
fn no_reply_loops_between_servers() {
    // Two servers that are not each other's neighbors; every datagram below is spoofed "from"
    // 4001 to 4000. Whatever 4000 answers, 4001 must not answer in turn.
    let spoofed: [(&str, Vec<u8>); 5] = [
        ("an unknown type code", 42i32.to_le_bytes().to_vec()),
        ("a SAY (answered: Not logged in)", {
            let mut b = vec![0u8; duckchat::SAY_LEN];
            b[0] = duckchat::SAY as u8;
            b
        }),
        ("a one-byte text line", b"x".to_vec()),
        (
            "a long /nick (answered: +OK)",
            b"/nick a-rather-long-nick-to-be-answered-in-full".to_vec(),
        ),
        ("an -ERR line", b"-ERR You are not in a chat room".to_vec()),
    ];
    for (what, bytes) in spoofed {
        let mut sim = Sim::topology(70, 1, &[(4000, &[]), (4001, &[])]);
        sim.send_raw(addr(4001), 4000, bytes);
        sim.run_for(SETTLE);
        // The log holds the spoofed datagram too.
        let exchanged = between_servers(&sim, &[4000, 4001]);
        assert!(
            exchanged <= 2,
            "{what}: at most one answer, got {}",
            exchanged - 1
        );
    }

    // Tricked into taking each other for logged-in clients, with a TXT_ERROR-shaped LEAVE to
    // start them off: errors stop after `errors_in_a_row` each way.
    let mut sim = Sim::topology(72, 1, &[(4000, &[]), (4001, &[])]);
    sim.send(addr(4001), 4000, Inbound::Login { user: b"s1" });
    sim.send(addr(4000), 4001, Inbound::Login { user: b"s0" });
    sim.run_for(SETTLE);
    let mut leave = vec![0u8; duckchat::TXT_ERROR_LEN];
    leave[0] = duckchat::LEAVE as u8;
    leave[4..17].copy_from_slice(b"Not logged in");
    sim.send_raw(addr(4001), 4000, leave);
    sim.run_for(Duration::from_secs(5));
    // Less the two logins and the LEAVE, all spoofed.
    let errors = between_servers(&sim, &[4000, 4001]) - 3;
    let limit = Limits::default().errors_in_a_row as usize;
    assert!(errors > 2, "they did answer each other: {errors}");
    assert!(errors <= 2 * limit, "{errors} errors");

    // Its own address is never a client.
    let mut sim = Sim::topology(73, 1, &[(4000, &[])]);
    sim.send_raw(addr(4000), 4000, b"x".to_vec());
    sim.send(addr(4000), 4000, Inbound::Login { user: b"me" });
    sim.run_for(SETTLE);
    assert_eq!(
        between_servers(&sim, &[4000]),
        2,
        "the two spoofed ones, no answer"
    );
    assert_eq!(drops(&sim, 4000, DropReason::FromServer), 2);

    // And a configured neighbor never gets an error text.
    let mut sim = Sim::topology(71, 1, &[(4000, &[4001])]);
    sim.send_raw(addr(4001), 4000, 42i32.to_le_bytes().to_vec());
    sim.send_raw(
        addr(4001),
        4000,
        vec![duckchat::SAY as u8; duckchat::SAY_LEN],
    );
    sim.run_for(SETTLE);
    assert!(sim.s2s_sent(duckchat::TXT_ERROR, Duration::ZERO).is_empty());
}

#[test]
fn membership_survives_full_queues_between_shards() {
    // Queues of one message between three shards: nearly every message between shards finds
    // its queue full and waits. Memberships must all arrive, in order, and WHO must agree
    // with delivery.
    let mut sim = Sim::new(80, 3);
    sim.queue_depth = Some(1);
    sim.add_server(Sim::config(4000, &[]));
    let users: Vec<_> = (0..30u16).map(|i| addr(50000 + i)).collect();
    for (i, &u) in users.iter().enumerate() {
        sim.login(u, 4000, &format!("u{i:02}"));
        for c in 0..8 {
            let name = format!("c{c}");
            sim.send(
                u,
                4000,
                Inbound::Join {
                    channel: name.as_bytes(),
                },
            );
        }
    }
    sim.run_for(SETTLE);
    // Every third user leaves c3, every fifth logs out, every seventh renames itself.
    for (i, &u) in users.iter().enumerate() {
        if i % 3 == 0 {
            sim.send(u, 4000, Inbound::Leave { channel: b"c3" });
        }
        if i % 5 == 0 {
            sim.send(u, 4000, Inbound::Logout);
        } else if i % 7 == 0 {
            sim.send(
                u,
                4000,
                Inbound::Login {
                    user: format!("r{i:02}").as_bytes(),
                },
            );
        }
    }
    sim.run_for(SETTLE);
    sim.clear_inboxes();
    let watcher = addr(50999);
    sim.login(watcher, 4000, "watcher");
    sim.run_for(SETTLE);
    for c in 0..8 {
        let channel = format!("c{c}");
        let mut expected: Vec<String> = (0..30)
            .filter(|i| i % 5 != 0 && !(c == 3 && i % 3 == 0))
            .map(|i| {
                if i % 7 == 0 {
                    format!("r{i:02}")
                } else {
                    format!("u{i:02}")
                }
            })
            .collect();
        expected.sort();
        sim.send(
            watcher,
            4000,
            Inbound::Who {
                channel: channel.as_bytes(),
            },
        );
        sim.run_for(SETTLE);
        let who = sim.decoded(watcher).pop().unwrap();
        assert_eq!(who, format!("who {channel} {}", expected.join(",")));
        // And a message in the channel reaches exactly those members.
        say(&mut sim, 50001, 4000, &channel, "hello");
        sim.run_for(SETTLE);
        let heard: Vec<usize> = (0..30)
            .filter(|&i| sim.says(users[i]).iter().any(|s| s.starts_with(&channel)))
            .collect();
        let members: Vec<usize> = (0..30)
            .filter(|i| i % 5 != 0 && !(c == 3 && i % 3 == 0))
            .collect();
        assert_eq!(heard, members, "{channel}");
        sim.clear_inboxes();
    }
    let queue_full: u64 = sim
        .engines(4000)
        .map(|e| e.counters().drops(DropReason::QueueFull))
        .sum();
    assert_eq!(queue_full, 0, "control is never dropped");
}

/// A request as a client that writes big-endian type codes sends it.
fn big_endian(req: Inbound<'_>) -> Vec<u8> {
    let mut buf = [0u8; 256];
    let n = req.encode(&mut buf, Default::default()).unwrap();
    duckchat::to_big_endian(&mut buf[..n]);
    buf[..n].to_vec()
}

#[test]
fn big_endian_clients_get_big_endian_answers() {
    for shards in SHARDS {
        let mut sim = Sim::topology(80, shards, &[(4000, &[])]);
        let (big, little) = (addr(50001), addr(50002));
        for req in [
            Inbound::Login { user: b"bea" },
            Inbound::Join { channel: b"Common" },
        ] {
            sim.send_raw(big, 4000, big_endian(req));
        }
        sim.login(little, 4000, "lou");
        sim.run_for(SETTLE);
        sim.send_raw(big, 4000, big_endian(Inbound::Who { channel: b"Common" }));
        sim.send_raw(
            big,
            4000,
            big_endian(Inbound::Leave {
                channel: b"Nowhere",
            }),
        );
        sim.run_for(SETTLE);
        say(&mut sim, 50002, 4000, "Common", "hello bea");
        sim.run_for(SETTLE);
        let got = sim.raw(big);
        // TXT_WHO with its count big-endian, TXT_ERROR, then TXT_SAY (0 either way).
        assert_eq!(got.len(), 3, "shards {shards}: {got:?}");
        assert_eq!(&got[0][..8], &[0, 0, 0, 2, 0, 0, 0, 2], "who");
        assert_eq!(&got[1][..4], &[0, 0, 0, 3], "error");
        assert_eq!(sim.decoded(big)[0], "who Common bea,lou");
        assert_eq!(sim.says(big), ["Common lou hello bea"]);
        // The little-endian client's answers stay little-endian.
        sim.send(little, 4000, Inbound::Who { channel: b"Common" });
        sim.run_for(SETTLE);
        let who = sim.raw(little).last().unwrap().clone();
        assert_eq!(&who[..8], &[2, 0, 0, 0, 2, 0, 0, 0]);
    }
}

#[test]
fn each_neighbor_is_written_to_as_it_writes() {
    for shards in SHARDS {
        // 5000 is a channel-first, big-endian peer that the simulation plays by hand.
        let mut sim = Sim::topology(90, shards, &[(4000, &[4001, 5000]), (4001, &[4000])]);
        let (near, far) = (addr(50001), addr(50002));
        sim.login(near, 4000, "near");
        sim.login(far, 4001, "far");
        sim.run_for(SETTLE);
        let peer = addr(5000);
        let mut buf = [0u8; 256];
        let n = duckchat::Inbound::S2sJoin { channel: b"Common" }
            .encode(&mut buf, Default::default())
            .unwrap();
        duckchat::to_big_endian(&mut buf[..n]);
        sim.send_raw(peer, 4000, buf[..n].to_vec());
        let from_peer = duckchat::S2sSay {
            id: 7,
            user: b"pat",
            channel: b"Common",
            text: b"from afar",
        };
        let n = from_peer
            .encode(&mut buf, duckchat::SayLayout::ChannelFirst)
            .unwrap();
        duckchat::to_big_endian(&mut buf[..n]);
        sim.send_raw(peer, 4000, buf[..n].to_vec());
        sim.run_for(SETTLE);
        // Read in its layout and order, and carried on in 4001's.
        for user in [near, far] {
            assert_eq!(sim.says(user), ["Common pat from afar"], "shards {shards}");
        }
        let since = sim.now;
        say(&mut sim, 50001, 4000, "Common", "hello pat");
        sim.run_for(SETTLE);
        let to_peer: Vec<_> = sim
            .server_log
            .iter()
            .filter(|w| w.at >= since && w.dst == peer)
            .collect();
        assert_eq!(to_peer.len(), 1, "shards {shards}");
        let bytes = &to_peer[0].bytes;
        assert_eq!(&bytes[..4], &[0, 0, 0, 10], "a big-endian S2S_SAY");
        match duckchat::decode_inbound(bytes, duckchat::SayLayout::ChannelFirst) {
            Ok(Inbound::S2sSay(s)) => {
                assert_eq!(
                    (s.channel, s.user, s.text),
                    (&b"Common"[..], &b"near"[..], &b"hello pat"[..])
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(sim.says(far).last().unwrap(), "Common near hello pat");
    }
}

#[test]
fn the_last_login_takes_the_name() {
    for shards in SHARDS {
        let mut sim = Sim::topology(95, shards, &[(4000, &[])]);
        let (first, second, watcher) = (addr(50001), addr(50002), addr(50003));
        sim.login(first, 4000, "amy");
        sim.login(watcher, 4000, "wes");
        sim.run_for(SETTLE);
        sim.login(second, 4000, "amy");
        sim.run_for(SETTLE);
        sim.send(watcher, 4000, Inbound::Who { channel: b"Common" });
        sim.run_for(SETTLE);
        assert_eq!(
            sim.decoded(watcher).last().unwrap(),
            "who Common amy,wes",
            "shards {shards}"
        );
        // The first login is logged out: its requests are refused, it hears nothing more.
        say(&mut sim, 50001, 4000, "Common", "am I here?");
        say(&mut sim, 50003, 4000, "Common", "hi amy");
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(first).last().unwrap(), "error Not logged in");
        assert!(!sim.says(first).iter().any(|s| s.ends_with("hi amy")));
        assert_eq!(sim.says(second), ["Common wes hi amy"]);
        let replaced: u64 = sim
            .engines(4000)
            .map(|e| e.counters().logins_replaced.get())
            .sum();
        assert_eq!(replaced, 1);
        // The one who holds the name logging out frees it; the old session's end does not.
        sim.send(second, 4000, Inbound::Logout);
        sim.run_for(SETTLE);
        sim.login(first, 4000, "amy");
        sim.run_for(SETTLE);
        sim.send(watcher, 4000, Inbound::Who { channel: b"Common" });
        sim.run_for(SETTLE);
        assert_eq!(sim.decoded(watcher).last().unwrap(), "who Common amy,wes");
    }
}
