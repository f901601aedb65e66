//! End to end: real `router` processes on loopback, driven by the test's own DuckChat client,
//! for `--cores 1` and `--cores 2` and both I/O backends.

use crate::support;

use std::process::Command;

use chat_router::proto::duckchat;
use support::{free_port, say_text, until_federated, Client, Reply, Router, QUIET};

/// Every (cores, io) combination the router must work with.
const MATRIX: [(&str, &str); 4] = [("1", "mmsg"), ("2", "mmsg"), ("1", "uring"), ("2", "uring")];

fn flags<'a>(cores: &'a str, io: &'a str) -> Vec<&'a str> {
    vec!["--cores", cores, "--io", io]
}

/// Short soft-state timers so that expiry and re-join happen within a test. Only where soft
/// state is under test: every refresh re-adds the links that loop detection cut, so the tree
/// re-forms through duplicate cuts, and a message said while it does can be lost (the
/// protocol's own behaviour, once a minute with the default timers).
fn short_timers<'a>(cores: &'a str, io: &'a str) -> Vec<&'a str> {
    let mut f = flags(cores, io);
    f.extend([
        "--s2s-refresh",
        "300ms",
        "--s2s-timeout",
        "1s",
        "--user-timeout",
        "5s",
    ]);
    f
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn single_server(cores: &str, io: &str) {
    let router = Router::start(free_port(), &[], &flags(cores, io));
    let stranger = Client::new(router.addr());
    stranger.join("x"); // shorter than an error: no answer
    stranger.say("x", "hi");
    assert_eq!(stranger.expect(), Reply::Error("Not logged in".into()));

    let zed = Client::connect(router.addr(), "zed");
    let amy = Client::connect(router.addr(), "amy");
    zed.say("Common", "hello");
    let hello = Reply::Say {
        channel: "Common".into(),
        user: "zed".into(),
        text: "hello".into(),
    };
    assert_eq!(zed.expect(), hello, "echo to the sender");
    assert_eq!(amy.expect(), hello);

    amy.join("dev");
    amy.who("dev"); // answered after the join: same client, same shard, in order
    assert_eq!(
        amy.expect(),
        Reply::Who {
            channel: "dev".into(),
            users: vec!["amy".into()]
        }
    );
    zed.who("Common");
    assert_eq!(
        zed.expect(),
        Reply::Who {
            channel: "Common".into(),
            users: vec!["amy".into(), "zed".into()]
        }
    );
    zed.list();
    assert_eq!(
        zed.expect(),
        Reply::List(vec!["Common".into(), "dev".into()])
    );
    zed.leave("dev");
    assert_eq!(
        zed.expect(),
        Reply::Error("You are not in channel dev".into())
    );
    zed.who("nope");
    assert_eq!(
        zed.expect(),
        Reply::Error("No channel by the name nope".into())
    );
    zed.say("nope", "x");
    assert_eq!(
        zed.expect(),
        Reply::Error("No channel by the name nope".into())
    );
    zed.raw(&99i32.to_le_bytes());
    assert_eq!(zed.expect(), Reply::Error("*Unknown command".into()));

    // Per-client order through the shards.
    for i in 0..50 {
        zed.say("Common", &format!("m{i}"));
    }
    let got: Vec<String> = (0..50)
        .map(|_| say_text(&amy.expect()).unwrap().to_string())
        .collect();
    assert_eq!(got, (0..50).map(|i| format!("m{i}")).collect::<Vec<_>>());

    // amy's LOGOUT and zed's WHO may land on different shards: zed asks until it is processed.
    amy.logout();
    let deadline = std::time::Instant::now() + support::WAIT;
    let who = loop {
        zed.who("Common");
        let who = zed.wait_for(|r| matches!(r, Reply::Who { .. }));
        if std::time::Instant::now() > deadline
            || matches!(&who, Reply::Who { users, .. } if users.len() == 1)
        {
            break who;
        }
    };
    assert_eq!(
        who,
        Reply::Who {
            channel: "Common".into(),
            users: vec!["zed".into()]
        }
    );

    let (status, output) = router.interrupt();
    assert!(status.success(), "clean exit on SIGINT: {output:?}");
    let shard_lines = output.iter().filter(|l| l.starts_with("shard ")).count();
    assert_eq!(shard_lines, cores.parse::<usize>().unwrap(), "{output:?}");
}

fn two_servers(cores: &str, io: &str) {
    let (pa, pb) = (free_port(), free_port());
    let a = Router::start(pa, &[pb], &flags(cores, io));
    let b = Router::start(pb, &[pa], &flags(cores, io));
    let alice = Client::connect(a.addr(), "alice");
    let bob = Client::connect(b.addr(), "bob");
    until_federated(&alice, &bob, "probe");
    for i in 0..20 {
        alice.say("Common", &format!("a{i}"));
        bob.say("Common", &format!("b{i}"));
    }
    let ours = |t: &String| t.starts_with('a') || t.starts_with('b');
    for c in [&alice, &bob] {
        let got: Vec<String> = c
            .says_until(|texts| texts.iter().filter(|t| ours(t)).count() >= 40)
            .into_iter()
            .filter(ours)
            .collect();
        let mut expected: Vec<String> = (0..20)
            .flat_map(|i| [format!("a{i}"), format!("b{i}")])
            .collect();
        expected.sort();
        assert_eq!(sorted(got), expected, "each message exactly once");
    }
}

fn triangle(cores: &str, io: &str) {
    let p = [free_port(), free_port(), free_port()];
    let routers: Vec<Router> = (0..3)
        .map(|i| Router::start(p[i], &[p[(i + 1) % 3], p[(i + 2) % 3]], &flags(cores, io)))
        .collect();
    let users: Vec<Client> = routers
        .iter()
        .enumerate()
        .map(|(i, r)| Client::connect(r.addr(), &format!("u{i}")))
        .collect();
    until_federated(&users[0], &users[1], "probe");
    until_federated(&users[1], &users[2], "probe");
    until_federated(&users[2], &users[0], "probe");
    for round in 0..5 {
        for (i, sender) in users.iter().enumerate() {
            let text = format!("{i}-{round}");
            sender.say("Common", &text);
            for u in &users {
                u.wait_for(|r| say_text(r) == Some(text.as_str()));
            }
        }
    }
    for u in &users {
        // A late copy of a probe (sent again until the trees carried one) is no duplicate.
        let extra: Vec<Reply> = u
            .drain()
            .into_iter()
            .filter(|r| !say_text(r).is_some_and(|t| t.starts_with("probe")))
            .collect();
        assert!(extra.is_empty(), "no duplicates: {extra:?}");
    }
}

fn neighbor_killed_and_restarted(cores: &str, io: &str) {
    let (pa, pb) = (free_port(), free_port());
    let a = Router::start(pa, &[pb], &short_timers(cores, io));
    let mut b = Router::start(pb, &[pa], &short_timers(cores, io));
    let alice = Client::connect(a.addr(), "alice");
    let bob = Client::connect(b.addr(), "bob");
    until_federated(&alice, &bob, "before");
    b.kill();
    // alice's server keeps serving her while its neighbor is gone.
    alice.say("Common", "alone");
    alice.wait_for(|r| say_text(r) == Some("alone"));
    let b = Router::start(pb, &[pa], &short_timers(cores, io));
    let bob = Client::connect(b.addr(), "bob");
    until_federated(&alice, &bob, "after");
    until_federated(&bob, &alice, "back");
}

fn malformed_flood(cores: &str, io: &str) {
    let router = Router::start(free_port(), &[], &flags(cores, io));
    let mut rng = chat_router::rng::Rng::new(7);
    // From another address than the user's: replies to an address share its budget.
    let attackers: Vec<Client> = (0..8)
        .map(|_| Client::from_ip(router.addr(), [127, 0, 0, 2]))
        .collect();
    for i in 0..20_000usize {
        let len = rng.below(200) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        if len >= 4 && i % 2 == 0 {
            bytes[..4].copy_from_slice(&(rng.below(12) as i32 - 1).to_le_bytes());
        }
        attackers[i % 8].raw(&bytes);
    }
    let user = Client::connect(router.addr(), "survivor");
    // The flood may still fill the socket buffer: say it again until it comes back, as a
    // person would.
    let echoed = (0..10).any(|_| {
        user.say("Common", "still here");
        std::iter::from_fn(|| user.recv(std::time::Duration::from_millis(500)))
            .any(|r| say_text(&r) == Some("still here"))
    });
    assert!(echoed, "the user's message never came back");
    let (status, output) = router.interrupt();
    assert!(status.success());
    let decode_errors: u64 = output
        .iter()
        .filter_map(|l| l.split("decode_errors=").nth(1))
        .map(|s| s.split(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert!(decode_errors > 1000, "garbage was counted: {output:?}");
}

macro_rules! matrix {
    ($($name:ident => $body:ident,)*) => {$(
        #[test]
        fn $name() {
            for (cores, io) in MATRIX {
                eprintln!("--cores {cores} --io {io}");
                $body(cores, io);
            }
        }
    )*};
}

matrix! {
    single_server_behaviour_and_errors => single_server,
    two_server_federation => two_servers,
    triangle_delivers_each_message_once => triangle,
    a_killed_neighbor_rejoins_after_restart => neighbor_killed_and_restarted,
    a_flood_of_malformed_datagrams_leaves_it_answering => malformed_flood,
}

#[test]
fn bad_arguments_give_one_line_and_a_nonzero_exit() {
    for args in [
        &["127.0.0.1"][..],
        &["127.0.0.1", "notaport"],
        &["--user-timeout", "5"],
        &["--cores", "0"],
        &["--cores", "-1"],
        &["--user-timeout", "-5s"],
        &["--cores", "999"],
        &["--bogus"],
        &["--io", "carrier-pigeon"],
        &["no.such.host.invalid.", "4000"],
        &["--cluster", "/nonexistent/servers.txt", "--index", "1"],
        &["--cluster", "Cargo.toml", "--index", "1"],
        &["--index", "1"],
        &["--rooms", "0"],
        &["--order", "causal"],
        &["127.0.0.1", "4000", "127.0.0.1", "4000"],
        &["--neighbor", "127.0.0.1:5000,sideways"],
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_router"))
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("router: "), "{stderr}");
    }
}

#[test]
fn a_neighbor_listed_twice_is_used_once_with_a_warning() {
    let (port, neighbor) = (free_port(), free_port());
    let n = format!("127.0.0.1:{neighbor}");
    let router = Router::start(port, &[], &["--neighbor", &n, "--neighbor", &n]);
    // Printed before it listens.
    let warning = format!("router: neighbor {n} is listed twice; using it once");
    assert!(router.output.contains(&warning), "{:?}", router.output);
    // A user's join goes to the neighbor once.
    let sock = std::net::UdpSocket::bind(("127.0.0.1", neighbor)).unwrap();
    sock.set_read_timeout(Some(QUIET)).unwrap();
    let _user = Client::connect(router.addr(), "amy");
    let mut joins = 0;
    let mut buf = [0u8; 256];
    while let Ok((len, _)) = sock.recv_from(&mut buf) {
        if duckchat::type_code(&buf[..len]) == Some(duckchat::S2S_JOIN) {
            joins += 1;
        }
    }
    assert_eq!(joins, 1, "one S2S_JOIN for Common");
}

/// What a router holds at start, read from /proc: the queue mesh stays within its budget
/// whatever the number of shards (it grew with their square: 1.45 GB at 64 shards before).
#[test]
fn memory_at_start_follows_the_queue_budget() {
    for shards in [1usize, 8, 64] {
        let n = shards.to_string();
        let router = Router::start(free_port(), &[], &["--cores", &n]);
        let status = std::fs::read_to_string(format!("/proc/{}/status", router.child.id()));
        let rss_kib: usize = status
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmRSS in /proc/PID/status");
        // The process and its first shard, each further shard (its engine, its io_uring and
        // receive buffers), and the mesh.
        let bound = 8 * 1024 + shards * 1024 + chat_router::runtime::QUEUE_MESH_BUDGET / 1024;
        assert!(
            rss_kib <= bound,
            "{shards} shards: {rss_kib} KiB at start, budget {bound} KiB"
        );
        let (status, _) = router.interrupt();
        assert!(status.success());
    }
}

#[test]
fn a_second_router_on_a_taken_port_refuses_to_start() {
    let first = Router::start(free_port(), &[], &["--cores", "2"]);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_router"))
        .args(["--listen", &first.addr().to_string(), "--cores", "2"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot bind {}", first.addr())),
        "{stderr}"
    );
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn verbose_prints_the_course_log_lines() {
    let (pa, pb) = (free_port(), free_port());
    let mut a = Router::start(pa, &[pb], &["--cores", "1", "-v"]);
    let _b = Router::start(pb, &[pa], &["--cores", "1"]);
    let _alice = Client::connect(a.addr(), "alice");
    a.wait_for_line("recv Request login alice", support::WAIT);
    a.wait_for_line("recv Request join alice Common", support::WAIT);
    let line = a.wait_for_line("send S2S Join Common", support::WAIT);
    assert_eq!(
        line,
        format!("127.0.0.1:{pa} 127.0.0.1:{pb} send S2S Join Common")
    );
}

/// Sum of `key=N` over the shard lines of a router's shutdown report.
fn shard_sum(output: &[String], key: &str) -> u64 {
    output
        .iter()
        .filter(|l| l.starts_with("shard "))
        .filter_map(|l| l.split(key).nth(1)?.split(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn every_datagram_sent_is_counted_in_or_as_a_kernel_drop() {
    for io in ["mmsg", "uring"] {
        let router = Router::start(free_port(), &[], &["--cores", "1", "--io", io]);
        let pid = router.child.id().to_string();
        let sender = Client::new(router.addr());
        // Stopped, the router reads nothing: its socket fills and the kernel drops the rest.
        assert!(Command::new("kill")
            .args(["-STOP", &pid])
            .status()
            .unwrap()
            .success());
        let mut sent = 0u64;
        for i in 0..20_000u32 {
            // An unknown type code: counted, and (4 bytes, from a stranger) never answered.
            let mut datagram = [0u8; 100];
            datagram[..4].copy_from_slice(&(1000 + i as i32).to_le_bytes());
            sent += u64::from(sender.try_raw(&datagram));
        }
        assert!(Command::new("kill")
            .args(["-CONT", &pid])
            .status()
            .unwrap()
            .success());
        // A login after the burst, answered once everything before it has been read.
        let user = Client::connect(router.addr(), "last");
        drop(user);
        let (status, output) = router.interrupt();
        assert!(status.success());
        let (seen, dropped) = (
            shard_sum(&output, " in="),
            shard_sum(&output, "kernel_drops="),
        );
        assert!(dropped > 0, "{io}: the socket overflowed: {output:?}");
        // The sign-in's own datagrams (LOGIN, JOIN, WHO, perhaps repeated) come on top.
        let signing_in = seen + dropped - sent;
        assert!(
            (3..=60).contains(&signing_in),
            "{io}: {sent} sent, {seen} in, {dropped} dropped by the kernel"
        );
    }
}

#[test]
fn stats_every_reports_traffic_and_sigterm_prints_the_counters() {
    let mut router = Router::start(
        free_port(),
        &[],
        &["--cores", "2", "--stats-every", "100ms"],
    );
    let amy = Client::connect(router.addr(), "amy");
    for i in 0..5 {
        amy.say("Common", &format!("m{i}"));
        amy.wait_for(|r| matches!(r, Reply::Say { .. }));
    }
    // The periodic line eventually covers everything amy caused: at least five deliveries.
    let deadline = std::time::Instant::now() + support::WAIT;
    loop {
        let line = router.wait_for_line("stats: ", support::WAIT);
        let deliveries: u64 = line
            .split("deliveries=")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no deliveries in {line:?}"));
        if deliveries >= 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{line}");
    }
    let (status, output) = router.signal("TERM");
    assert!(status.success(), "clean exit on SIGTERM: {output:?}");
    let shards: Vec<&String> = output.iter().filter(|l| l.starts_with("shard ")).collect();
    assert_eq!(shards.len(), 2, "{output:?}");
    assert!(
        shards.iter().all(|l| l.contains("deliveries=")),
        "{shards:?}"
    );
    assert!(
        output
            .iter()
            .any(|l| l.starts_with("router: stopping on SIGTERM")),
        "{output:?}"
    );
    // A stats line starts with the time of day.
    let stats = output
        .iter()
        .find(|l| l.contains("stats: "))
        .expect("a stats line");
    let time = stats.split(' ').next().unwrap_or_default();
    assert!(time.len() == 15 && time.as_bytes()[2] == b':', "{stats}");
}

#[test]
fn version_names_the_commit() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_router"))
        .arg("--version")
        .output()
        .expect("run router --version");
    let text = String::from_utf8_lossy(&out.stdout);
    // `router 0.1.0 (1479a05)` in a git checkout, `(unknown commit)` outside one.
    assert!(
        out.status.success() && text.starts_with("router 0.1.0 ("),
        "{text}"
    );
    assert!(text.trim_end().ends_with(')'), "{text}");
}

#[test]
fn a_cluster_started_without_its_proxy_says_which_server_it_cannot_reach() {
    // Server 2's forwarding address differs from its bind address and nobody holds it.
    let (me, other_fwd, other_bind) = (free_port(), free_port(), free_port());
    let file = std::env::temp_dir().join(format!("no-proxy-{}-{me}.txt", std::process::id()));
    std::fs::write(
        &file,
        format!("127.0.0.1:{me}\n127.0.0.1:{other_fwd},127.0.0.1:{other_bind}\n"),
    )
    .unwrap();
    let args: Vec<String> = [
        "--cluster",
        &file.display().to_string(),
        "--index",
        "1",
        "--peer-timeout",
        "300ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut router = Router::launch(&args, me);
    let line = router.wait_for_line("Excludes S02", support::WAIT);
    let _ = std::fs::remove_file(&file);
    assert!(line.contains(&format!("127.0.0.1:{other_fwd}")), "{line}");
    assert!(line.contains("is the proxy running?"), "{line}");
}

/// A one-line cluster file on a free port; returns its path and the port.
fn cluster_file(name: &str) -> (std::path::PathBuf, u16) {
    let port = free_port();
    let file = std::env::temp_dir().join(format!("{name}-{}-{port}.txt", std::process::id()));
    std::fs::write(&file, format!("127.0.0.1:{port}\n")).unwrap();
    (file, port)
}

#[test]
fn text_clients_and_the_stamped_verbose_log_of_a_cluster_server() {
    let (file, port) = cluster_file("chat-router-one");
    // The original's positional form: chatserver -o total -v FILE INDEX.
    let args: Vec<String> = ["--cores", "2", "-o", "total", "-v"]
        .iter()
        .map(|s| s.to_string())
        .chain([file.display().to_string(), "1".into()])
        .collect();
    let mut router = Router::launch(&args, port);
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client.set_read_timeout(Some(support::WAIT)).unwrap();
    let me = client.local_addr().unwrap();
    let mut buf = [0u8; 2048];
    let mut ask = |line: &str| {
        client.send_to(line.as_bytes(), router.addr()).unwrap();
        let n = client.recv(&mut buf).expect("a reply");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(ask("/join 3"), "+OK You are now in chat room #3");
    assert_eq!(
        ask("hello"),
        format!("<{me}> hello"),
        "through ISIS with one server"
    );
    assert_eq!(ask("/nick Linh"), "+OK Nickname set to 'Linh'");
    assert_eq!(ask("again"), "<Linh> again");
    let line = router.wait_for_line("joins chat room #3", support::WAIT);
    let (time, rest) = line.split_once(' ').unwrap();
    assert_eq!(rest, format!("S01 Client {me} joins chat room #3"));
    let digits: Vec<&str> = time.split([':', '.']).collect();
    assert_eq!(
        digits.iter().map(|d| d.len()).collect::<Vec<_>>(),
        [2, 2, 2, 6],
        "hh:mm:ss.uuuuuu, got {time}"
    );
    assert!(digits.iter().all(|d| d.bytes().all(|b| b.is_ascii_digit())));
    router.wait_for_line("S01 Delivers message 1.1 to chat room #3", support::WAIT);
    let _ = std::fs::remove_file(file);
}

/// The course's 3x3 grid of real routers, refreshing their soft state every 250 ms so that 5 s
/// hold 20 refreshes (issue 13 saw 648 of its messages lost in 60 s with `--s2s-refresh 2s`):
/// 200 messages from random users, 25 ms apart (the scenario's pace, not a wait), each reaches
/// every user exactly once. The timeout stays at 3 s: a router descheduled on a busy machine
/// must not be taken for dead.
#[test]
fn a_grid_of_routers_carries_every_message_once_across_refreshes() {
    const GRID: [&[usize]; 9] = [
        &[1, 3],
        &[0, 2, 4],
        &[1, 5],
        &[0, 4, 6],
        &[1, 3, 5, 7],
        &[2, 4, 8],
        &[3, 7],
        &[6, 4, 8],
        &[5, 7],
    ];
    let ports: Vec<u16> = (0..9).map(|_| free_port()).collect();
    let timers = [
        "--s2s-refresh",
        "250ms",
        "--s2s-timeout",
        "3s",
        "--cores",
        "1",
    ];
    let routers: Vec<Router> = GRID
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let neighbors: Vec<u16> = n.iter().map(|&j| ports[j]).collect();
            Router::start(ports[i], &neighbors, &timers)
        })
        .collect();
    let users: Vec<Client> = routers
        .iter()
        .enumerate()
        .map(|(i, r)| Client::connect(r.addr(), &format!("u{i}")))
        .collect();
    for other in &users[1..] {
        until_federated(&users[0], other, "probe");
    }
    for u in &users {
        u.drain();
    }
    let mut rng = chat_router::rng::Rng::new(13);
    let count = 200;
    for n in 0..count {
        let sender = &users[rng.below(users.len() as u64) as usize];
        sender.say("Common", &format!("g{n}"));
        std::thread::sleep(std::time::Duration::from_millis(25));
    }
    let ours = |t: &String| t.starts_with('g');
    for (i, u) in users.iter().enumerate() {
        let mut got = std::collections::HashMap::new();
        for text in u.says_until(|texts| texts.iter().filter(|t| ours(t)).count() >= count) {
            if ours(&text) {
                *got.entry(text).or_insert(0) += 1;
            }
        }
        let missing: Vec<String> = (0..count)
            .map(|n| format!("g{n}"))
            .filter(|t| !got.contains_key(t))
            .collect();
        let twice: Vec<&String> = got.iter().filter(|(_, &k)| k > 1).map(|(t, _)| t).collect();
        assert!(
            missing.is_empty() && twice.is_empty(),
            "user {i}: missing {missing:?}, more than once {twice:?}"
        );
    }
}

/// One scrape of `http://addr/metrics` over a plain TCP connection.
fn scrape(addr: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).expect("metrics endpoint");
    tcp.set_read_timeout(Some(support::WAIT)).unwrap();
    write!(
        tcp,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    tcp.read_to_string(&mut response).expect("a response");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
}

/// The value of the sample named exactly `series` (name and labels), if present.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_serve_the_counters_gauges_and_handling_times_to_prometheus() {
    let metrics = format!("127.0.0.1:{}", support::free_tcp_port());
    let mut router = Router::start(
        free_port(),
        &[],
        &[
            "--cores",
            "1",
            "--user-timeout",
            "4s",
            "--metrics",
            &metrics,
        ],
    );
    router.wait_for_line("metrics on", support::WAIT);
    let amy = Client::connect(router.addr(), "amy");
    amy.say("Common", "counted");
    amy.wait_for(|r| matches!(r, Reply::Say { .. }));
    // The gauges follow the shard's sweep (a quarter of the user timeout).
    let deadline = std::time::Instant::now() + support::WAIT;
    let text = loop {
        let text = scrape(&metrics);
        if sample(&text, "chat_router_sessions{shard=\"0\"}") == Some(1.0) {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "{text}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    assert!(
        sample(&text, "chat_router_deliveries_total{shard=\"0\"}") >= Some(1.0),
        "{text}"
    );
    assert!(sample(&text, "chat_router_datagrams_in_total{shard=\"0\"}") >= Some(3.0));
    let reasons = text
        .lines()
        .filter(|l| l.starts_with("chat_router_drops_total{"))
        .count();
    assert_eq!(
        reasons,
        chat_router::engine::DropReason::ALL.len(),
        "{text}"
    );
    assert!(text.contains("chat_router_kernel_drops_total{shard=\"0\"}"));
    assert!(text.contains("# TYPE chat_router_handling_seconds histogram"));
    assert!(sample(&text, "chat_router_handling_seconds_count{shard=\"0\"}") >= Some(3.0));
    assert!(sample(&text, "chat_router_inbox_depth{shard=\"0\"}").is_some());
}

#[test]
fn completions_and_the_manual_page_come_from_the_options() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_router"))
            .args(args)
            .output()
            .expect("run router");
        assert!(out.status.success(), "{args:?}");
        String::from_utf8(out.stdout).expect("text")
    };
    for shell in ["bash", "zsh", "fish"] {
        let script = run(&["--completions", shell]);
        assert!(
            script.contains("metrics") && script.contains("cluster-key"),
            "{shell}"
        );
    }
    let man = run(&["--man"]);
    assert!(man.contains(".TH router 1"), "{man}");
    assert!(
        man.contains("peer\\-timeout"),
        "every option is in the manual"
    );
}
