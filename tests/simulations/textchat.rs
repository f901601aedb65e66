//! Deterministic simulations of the text protocol and of group federation (see `sim/mod.rs`):
//! clusters of 3 and 10 servers on a network that delays and reorders every server-to-server
//! datagram (and loses some, where asked), with a fake clock. The ordering checker
//! (`chat_router::check`) judges what every client received; `unordered` serves as the negative
//! control that shows the checker does see total-order violations.

use crate::sim;

use chat_router::check::{self, Checker, Report};
use chat_router::engine::Order;
use chat_router::proto::duckchat::Inbound;
use chat_router::rng::Rng;
use sim::{addr, Sim, CLUSTER_PORT};
use std::time::Duration;

const SETTLE: Duration = Duration::from_millis(300);

fn line(sim: &mut Sim, client: u16, server: u16, text: &str) {
    sim.send_raw(addr(client), server, text.as_bytes().to_vec());
}

/// Two `/nick`s at once: the second arrives before the owner shard of the first name has
/// answered (driven by hand, shard by shard); each still gets its one reply, and the session
/// goes by the second.
#[test]
fn a_nick_overtaken_by_another_still_gets_its_reply() {
    use chat_router::engine::{Config, Engine, Outbox, ShardMsg};
    use chat_router::proto::Name;
    use std::sync::Arc;
    let cfg = Arc::new(Config::new(addr(4000)));
    let now = Duration::from_secs(1);
    let mut shards: Vec<Engine> = (0..2)
        .map(|i| Engine::new(i, 2, cfg.clone(), 7, now))
        .collect();
    // Names owned by the other shard than the client's home (shard 0).
    let mut names = (0..)
        .map(|i| format!("n{i}"))
        .filter(|n| shards[0].owner(&Name::from(n.as_str())) == 1);
    let (first, second) = (names.next().unwrap(), names.next().unwrap());
    let client = addr(50100);
    let mut replies = Vec::new();
    let mut out = Outbox::default();
    let deliver = |shards: &mut Vec<Engine>, mut queue: Vec<(u16, ShardMsg)>, out: &mut Outbox| {
        let mut heard = Vec::new();
        for _ in 0..1000 {
            let Some((to, msg)) = (!queue.is_empty()).then(|| queue.remove(0)) else {
                break;
            };
            shards[usize::from(to)].handle_message(now, msg, out);
            for send in out.sends().iter().filter(|s| s.dst == client) {
                heard.push(String::from_utf8_lossy(out.bytes(send.payload)).into_owned());
            }
            queue.extend(out.take_msgs());
            out.clear();
        }
        assert!(queue.is_empty(), "the shards went quiet");
        heard
    };
    let request = |shards: &mut Vec<Engine>, line: &str, out: &mut Outbox| {
        shards[0].handle_datagram(now, client, line.as_bytes(), out);
        let heard: Vec<String> = out
            .sends()
            .iter()
            .filter(|s| s.dst == client)
            .map(|s| String::from_utf8_lossy(out.bytes(s.payload)).into_owned())
            .collect();
        let msgs: Vec<(u16, ShardMsg)> = out.take_msgs().collect();
        out.clear();
        (heard, msgs)
    };
    let (heard, msgs) = request(&mut shards, "/join 1", &mut out);
    replies.extend(heard);
    replies.extend(deliver(&mut shards, msgs, &mut out));
    assert_eq!(replies, ["+OK You are now in chat room #1"]);
    replies.clear();
    // Both requests are handled before any message between the shards moves.
    let (heard_a, msgs_a) = request(&mut shards, &format!("/nick {first}"), &mut out);
    let (heard_b, msgs_b) = request(&mut shards, &format!("/nick {second}"), &mut out);
    replies.extend(heard_a.into_iter().chain(heard_b));
    replies.extend(deliver(
        &mut shards,
        msgs_a.into_iter().chain(msgs_b).collect(),
        &mut out,
    ));
    assert_eq!(
        replies,
        [
            format!("-ERR Nickname '{first}' not set: you asked for another"),
            format!("+OK Nickname set to '{second}'"),
        ]
    );
}

#[test]
fn text_commands_get_exactly_one_reply_each() {
    for shards in [1, 3] {
        let mut sim = Sim::topology(1, shards, &[(4000, &[])]);
        let a = 50001;
        // A source without a session never gets a reply longer than its request.
        for text in ["hello", "/join abc", "/dance", "/part"] {
            line(&mut sim, a, 4000, text);
        }
        let long = "a line long enough to be answered by the error it gets";
        line(&mut sim, a, 4000, long);
        sim.run_for(SETTLE);
        assert_eq!(sim.lines(addr(a)), ["-ERR You are not in a chat room"]);
        sim.clear_inboxes();
        // /nick is the text protocol's login: the session begins.
        line(&mut sim, a, 4000, "/nick 127.0.0.1:50001");
        sim.run_for(SETTLE);
        assert_eq!(
            sim.lines(addr(a)),
            ["+OK Nickname set to '127.0.0.1:50001'"]
        );
        sim.clear_inboxes();
        for text in [
            "hello",
            "/part",
            "/join",
            "/join abc",
            "/join 0",
            "/join 11",
            "/join -3",
            "/nick",
            "/nick a>b",
            "/dance now",
            "/join 7",
            "/join 8",
            "",
        ] {
            line(&mut sim, a, 4000, text);
            sim.run_for(SETTLE);
        }
        let a_addr = addr(a);
        assert_eq!(
            sim.lines(a_addr),
            [
                "-ERR You are not in a chat room",
                "-ERR You are not in a chat room",
                "-ERR Usage: /join N (rooms 1 to 10)",
                "-ERR No room 'abc': rooms are 1 to 10",
                "-ERR No room '0': rooms are 1 to 10",
                "-ERR No room '11': rooms are 1 to 10",
                "-ERR No room '-3': rooms are 1 to 10",
                "-ERR Usage: /nick NAME",
                "-ERR A nickname must not contain '>'",
                "-ERR Unknown command /dance",
                "+OK You are now in chat room #7",
                "-ERR You are already in room #7",
                "-ERR Empty message",
            ]
        );
        sim.clear_inboxes();
        let b = 50002;
        line(&mut sim, b, 4000, "/nick Linh Tran");
        line(&mut sim, b, 4000, "/join 7");
        sim.run_for(SETTLE);
        line(&mut sim, a, 4000, "hi all\n"); // a trailing newline is not part of the line
        sim.run_for(SETTLE);
        line(&mut sim, b, 4000, "hi 127.0.0.1:50001");
        sim.run_for(SETTLE);
        line(&mut sim, b, 4000, &"x".repeat(1001));
        line(&mut sim, b, 4000, "/part");
        line(&mut sim, b, 4000, "/part");
        line(&mut sim, b, 4000, "/quit");
        line(&mut sim, b, 4000, "/quit"); // unknown by now: no reply
        sim.run_for(SETTLE);
        line(&mut sim, a, 4000, &"y".repeat(1000));
        sim.run_for(SETTLE);
        assert_eq!(
            sim.lines(addr(b)),
            [
                "+OK Nickname set to 'Linh Tran'",
                "+OK You are now in chat room #7",
                "<127.0.0.1:50001> hi all",
                "<Linh Tran> hi 127.0.0.1:50001",
                "-ERR Message too long (at most 1000 bytes)",
                "+OK You have left chat room #7",
                "-ERR You are not in a chat room",
            ]
        );
        let long = format!("<127.0.0.1:50001> {}", "y".repeat(1000));
        assert_eq!(
            sim.lines(a_addr),
            [
                "<127.0.0.1:50001> hi all",
                "<Linh Tran> hi 127.0.0.1:50001",
                long.as_str()
            ]
        );
    }
}

#[test]
fn rooms_and_duckchat_channels_are_one_namespace() {
    for shards in [1, 3] {
        let mut sim = Sim::topology(2, shards, &[(4000, &[])]);
        let (text, duck) = (50001, 50002);
        line(&mut sim, text, 4000, "/nick tina");
        line(&mut sim, text, 4000, "/join 7");
        sim.send(addr(duck), 4000, Inbound::Login { user: b"dave" });
        sim.send(addr(duck), 4000, Inbound::Join { channel: b"7" });
        sim.run_for(SETTLE);
        sim.clear_inboxes();
        line(
            &mut sim,
            text,
            4000,
            &format!("hello from text {}", "z".repeat(80)),
        );
        sim.run_for(SETTLE);
        sim.send(
            addr(duck),
            4000,
            Inbound::Say {
                channel: b"7",
                text: b"hello from duckchat",
            },
        );
        sim.run_for(SETTLE);
        sim.send(addr(duck), 4000, Inbound::Who { channel: b"7" });
        sim.run_for(SETTLE);
        let cut = format!("hello from text {}", "z".repeat(63 - 16));
        assert_eq!(
            sim.decoded(addr(duck)),
            [
                format!("say 7 tina {cut}"),
                "say 7 dave hello from duckchat".to_string(),
                "who 7 dave,tina".to_string(),
            ],
            "a text line reaches DuckChat cut to its 63-byte field"
        );
        assert_eq!(
            sim.lines(addr(text))[1..],
            ["<dave> hello from duckchat"],
            "and DuckChat reaches text users as <name> text"
        );
    }
}

/// A run of the ordering checker on a simulated cluster: `clients` text clients spread over the
/// servers and `rooms` rooms, each sending `per_client` numbered messages at a jittered 2 ms.
struct Run {
    seed: u64,
    servers: u16,
    shards: u16,
    order: Order,
    clients: u16,
    rooms: u16,
    per_client: u64,
    /// Bytes per message (over 900, a message crosses between servers as two fragments).
    len: usize,
    loss: f64,
}

impl Run {
    fn new(servers: u16, order: Order) -> Self {
        Self {
            seed: 7,
            servers,
            shards: 1,
            order,
            clients: 30,
            rooms: 3,
            per_client: 10,
            len: 24,
            loss: 0.0,
        }
    }

    fn check(&self) -> Report {
        let mut sim = Sim::cluster(self.seed, self.shards, self.servers, self.order);
        sim.net.s2s_loss = self.loss;
        let mut rng = Rng::new(self.seed);
        let mut checker = Checker::default();
        let client = |c: u16| 40000 + c;
        let server = |c: u16| CLUSTER_PORT + 1 + c % self.servers;
        // Every room has members on every server, so messages of several origins meet in it.
        let room = |c: u16| u32::from(c / self.servers % self.rooms) + 1;
        for c in 0..self.clients {
            line(
                &mut sim,
                client(c),
                server(c),
                &format!("/join {}", room(c)),
            );
            checker.member(u32::from(c), room(c));
        }
        sim.run_for(SETTLE);
        for c in 0..self.clients {
            let joined = format!("+OK You are now in chat room #{}", room(c));
            assert_eq!(sim.lines(addr(client(c))), [joined]);
        }
        sim.clear_inboxes();
        let start = sim.now;
        for c in 0..self.clients {
            for seq in 1..=self.per_client {
                let at =
                    start + Duration::from_millis(2 * seq) + Duration::from_micros(rng.below(2000));
                let text = check::message(seq, u32::from(c), room(c), self.len);
                sim.send_at(at, addr(client(c)), server(c), text.into_bytes());
                checker.sent(u32::from(c), seq, self.len);
            }
        }
        sim.run_for(Duration::from_secs(10));
        for c in 0..self.clients {
            for datagram in sim.raw(addr(client(c))) {
                checker.received(u32::from(c), datagram);
            }
        }
        let report = checker.report();
        assert_eq!(report.sent, u64::from(self.clients) * self.per_client);
        report
    }
}

#[test]
fn fifo_and_total_order_hold_on_three_servers() {
    for order in [Order::Fifo, Order::Total] {
        for shards in [1, 3] {
            let report = Run {
                shards,
                ..Run::new(3, order)
            }
            .check();
            assert!(
                report.clean(order == Order::Total),
                "{order:?} with {shards} shard(s): {report:?}"
            );
        }
    }
}

#[test]
fn unordered_delivers_everything_and_violates_total_order() {
    // The negative control: the same traffic, with nothing ordering messages of different
    // servers, must show the checker total-order violations.
    let report = Run::new(3, Order::Unordered).check();
    assert!(report.clean(false), "{report:?}");
    assert!(report.total_violations > 0, "{report:?}");
}

#[test]
fn every_mode_on_ten_servers_with_250_clients() {
    for order in [Order::Unordered, Order::Fifo, Order::Total] {
        let report = Run {
            clients: 250,
            rooms: 10,
            per_client: 4,
            ..Run::new(10, order)
        }
        .check();
        assert!(report.clean(order == Order::Total), "{order:?}: {report:?}");
        assert_eq!(report.delivered, report.expected);
        if order == Order::Unordered {
            assert!(report.total_violations > 0, "negative control: {report:?}");
        }
    }
}

#[test]
fn every_mode_survives_two_percent_loss() {
    for order in [Order::Unordered, Order::Fifo, Order::Total] {
        let report = Run {
            loss: 0.02,
            per_client: 20,
            ..Run::new(3, order)
        }
        .check();
        assert!(report.clean(order == Order::Total), "{order:?}: {report:?}");
    }
    let report = Run {
        loss: 0.02,
        clients: 100,
        rooms: 5,
        per_client: 5,
        shards: 2,
        ..Run::new(10, Order::Total)
    }
    .check();
    assert!(report.clean(true), "10 servers: {report:?}");
}

#[test]
fn messages_of_1000_bytes_cross_as_fragments() {
    for order in [Order::Fifo, Order::Total] {
        let report = Run {
            len: 1000,
            loss: 0.02,
            ..Run::new(3, order)
        }
        .check();
        assert!(report.clean(order == Order::Total), "{order:?}: {report:?}");
        assert_eq!(report.delivered, report.expected);
    }
}

#[test]
fn duckchat_and_text_users_share_a_room_across_a_cluster() {
    let mut sim = Sim::cluster(11, 2, 3, Order::Total);
    let (s1, s2, s3) = (CLUSTER_PORT + 1, CLUSTER_PORT + 2, CLUSTER_PORT + 3);
    let (text, duck, other) = (40001, 40002, 40003);
    line(&mut sim, text, s1, "/nick tina");
    line(&mut sim, text, s1, "/join 3");
    sim.send(addr(duck), s2, Inbound::Login { user: b"dave" });
    sim.send(addr(duck), s2, Inbound::Join { channel: b"3" });
    line(&mut sim, other, s3, "/join 3");
    sim.run_for(SETTLE);
    sim.clear_inboxes();
    line(&mut sim, text, s1, "from text");
    sim.send(
        addr(duck),
        s2,
        Inbound::Say {
            channel: b"3",
            text: b"from duckchat",
        },
    );
    sim.run_for(Duration::from_secs(1));
    let mut duck_saw = sim.says(addr(duck));
    duck_saw.sort();
    assert_eq!(duck_saw, ["3 dave from duckchat", "3 tina from text"]);
    let text_saw = sim.lines(addr(text));
    let mut sorted = text_saw.clone();
    sorted.sort();
    assert_eq!(sorted, ["<dave> from duckchat", "<tina> from text"]);
    assert_eq!(sim.lines(addr(other)), text_saw, "one order in the room");
    let order: Vec<String> = sim
        .says(addr(duck))
        .iter()
        .map(|s| s.split_once(' ').map_or("", |x| x.1).to_string())
        .collect();
    let text_order: Vec<String> = text_saw
        .iter()
        .map(|l| l.replacen('<', "", 1).replacen('>', "", 1))
        .collect();
    assert_eq!(order, text_order, "the DuckChat user sees the same order");
}

#[test]
fn a_message_the_window_refuses_is_answered_with_an_error() {
    for order in [Order::Unordered, Order::Total] {
        let mut sim = Sim::cluster(12, 2, 3, order);
        let (s1, s2) = (CLUSTER_PORT + 1, CLUSTER_PORT + 2);
        let tina = 40001;
        line(&mut sim, tina, s1, "/join 1");
        sim.run_for(SETTLE);
        sim.clear_inboxes();
        // Server 2 goes: nothing it should acknowledge is acknowledged, and the window fills.
        sim.crash(s2);
        for n in 0..400 {
            line(&mut sim, tina, s1, &format!("m{n}"));
        }
        sim.run_for(SETTLE);
        let refused =
            "-ERR Message not sent to room #1: a server of the cluster is behind; try again";
        let errors = sim
            .lines(addr(tina))
            .iter()
            .filter(|l| *l == refused)
            .count();
        let counted: u64 = sim
            .engines(s1)
            .map(|e| {
                e.counters()
                    .drops(chat_router::engine::DropReason::ReplicationBacklog)
            })
            .sum();
        assert!(errors > 0, "{order:?}: the window filled");
        assert_eq!(
            errors as u64, counted,
            "{order:?}: each refusal told and counted"
        );
        // What was not refused was sent, and the sender saw its own messages.
        let delivered = sim
            .lines(addr(tina))
            .iter()
            .filter(|l| l.starts_with('<'))
            .count();
        if order == Order::Unordered {
            assert_eq!(delivered + errors, 400, "{order:?}");
        }
    }
}
