//! DuckChat federation at scale, in the deterministic simulation of `tests/simulations/sim`: 100
//! and 1,000 routers in random and tree-like topologies, one user on every router in one channel.
//! For each, it reports the S2S_SAYs a message costs against the optimum (a spanning tree of the
//! subscribed routers: one datagram per router but the origin), how long a join takes to reach
//! every router, the soft-state traffic per router per refresh period, and how long it takes after
//! a router dies until a message reaches every user again. Timers are the simulation's
//! (refresh 5 s, timeout 10 s); the write-up scales them to the defaults (60 s, 120 s).
//!
//! `cargo bench --bench federation_scale` prints a table and writes
//! `results/<UTC time>-federation-scale.json`.

#[path = "../tests/simulations/sim/mod.rs"]
mod sim;

use chat_router::proto::duckchat::{self, Inbound};
use chat_router::proto::Name;
use chat_router::rng::Rng;
use serde_json::json;
use sim::{addr, random_graph, Sim};
use std::time::Duration;

const REFRESH: Duration = Duration::from_secs(5);

fn request(sim: &mut Sim, client: u16, server: u16, request: Inbound<'_>) {
    let mut buf = [0u8; 128];
    let len = request.encode(&mut buf, Default::default()).expect("fits");
    sim.send_raw(addr(client), server, buf[..len].to_vec());
}

/// Whether every router but `except` is in `channel`'s tree.
fn everywhere(sim: &Sim, channel: &Name, except: Option<u16>) -> bool {
    sim.ports()
        .into_iter()
        .filter(|&p| Some(p) != except)
        .all(|p| {
            sim.engines(p)
                .filter_map(|e| e.tree_links(channel))
                .any(|links| !links.is_empty())
        })
}

/// Whether every user of `users` has received `text`.
fn heard(sim: &Sim, users: &[(u16, u16)], text: &str) -> bool {
    users
        .iter()
        .all(|&(c, _)| sim.says(addr(c)).iter().any(|s| s.ends_with(text)))
}

/// The routers still connected to `from` once `dead` is gone.
fn reachable(edges: &[(u16, Vec<u16>)], from: u16, dead: u16) -> std::collections::HashSet<u16> {
    let adjacency: std::collections::HashMap<u16, &Vec<u16>> =
        edges.iter().map(|(p, n)| (*p, n)).collect();
    let mut seen = std::collections::HashSet::from([from]);
    let mut todo = vec![from];
    while let Some(p) = todo.pop() {
        for &q in adjacency[&p].iter() {
            if q != dead && seen.insert(q) {
                todo.push(q);
            }
        }
    }
    seen
}

fn measure(name: &str, edges: &[(u16, Vec<u16>)], seed: u64) -> serde_json::Value {
    let n = edges.len();
    let links: usize = edges.iter().map(|e| e.1.len()).sum::<usize>() / 2;
    let mut sim = Sim::new(seed, 1);
    // Loopback-like delays; routers started at random moments of a refresh period.
    sim.net.min_delay = Duration::from_micros(20);
    sim.net.max_delay = Duration::from_micros(200);
    let mut phase = Rng::new(seed);
    for (port, neighbors) in edges {
        let mut cfg = Sim::config(*port, neighbors);
        // The users say nothing for a while: they must not time out meanwhile.
        cfg.user_timeout = Duration::from_secs(3600);
        sim.add_server(cfg);
        sim.run_for(Duration::from_nanos(
            phase.below(REFRESH.as_nanos() as u64 / n as u64),
        ));
    }
    let users: Vec<(u16, u16)> = edges
        .iter()
        .enumerate()
        .map(|(i, e)| (20_000 + i as u16, e.0))
        .collect();

    // A join reaching every router: the first user joins a new channel.
    let fresh = Name::from("fresh");
    request(
        &mut sim,
        users[0].0,
        users[0].1,
        Inbound::Login { user: b"first" },
    );
    request(
        &mut sim,
        users[0].0,
        users[0].1,
        Inbound::Join { channel: b"fresh" },
    );
    let joined_at = sim.now;
    let step = Duration::from_micros(100);
    while !everywhere(&sim, &fresh, None) && sim.now - joined_at < Duration::from_secs(1) {
        sim.run_for(step);
    }
    let join_spread = sim.now - joined_at;

    // Everyone in Common; two refresh periods for the trees to settle.
    for &(c, s) in &users {
        sim.login(addr(c), s, &format!("u{c}"));
    }
    sim.run_for(2 * REFRESH);

    // Soft state: S2S_JOINs over four quiet refresh periods.
    let since = sim.now;
    sim.run_for(4 * REFRESH);
    let joins = sim.s2s_sent(duckchat::S2S_JOIN, since).len() as f64;
    let joins_per_router_per_refresh = joins / 4.0 / n as f64;

    // Messages one at a time from random users: S2S_SAYs each, against a spanning tree's n-1.
    let mut rng = Rng::new(seed ^ 7);
    let since = sim.now;
    const MESSAGES: usize = 50;
    for m in 0..MESSAGES {
        let (c, s) = users[rng.below(n as u64) as usize];
        let text = format!("x{m}");
        let say = Inbound::Say {
            channel: b"Common",
            text: text.as_bytes(),
        };
        request(&mut sim, c, s, say);
        sim.run_for(Duration::from_millis(100));
    }
    let says = sim.s2s_sent(duckchat::S2S_SAY, since).len() as f64 / MESSAGES as f64;
    let delivered = (0..MESSAGES)
        .filter(|m| heard(&sim, &users, &format!("x{m}")))
        .count();

    // A router dies (the one with the most links); probes every 100 ms from a user elsewhere
    // until one reaches every user the topology still connects to it.
    let dead = edges
        .iter()
        .max_by_key(|e| e.1.len())
        .map(|e| e.0)
        .unwrap_or(edges[0].0);
    let (prober, at) = *users.iter().find(|u| u.1 != dead).expect("another router");
    let connected = reachable(edges, at, dead);
    let survivors: Vec<(u16, u16)> = users
        .iter()
        .copied()
        .filter(|u| connected.contains(&u.1))
        .collect();
    sim.crash(dead);
    let crashed_at = sim.now;
    let mut recovery = None;
    for probe in 0..600 {
        let text = format!("probe{probe}");
        let say = Inbound::Say {
            channel: b"Common",
            text: text.as_bytes(),
        };
        request(&mut sim, prober, at, say);
        sim.run_for(Duration::from_millis(100));
        if heard(&sim, &survivors, &text) {
            recovery = Some(sim.now - crashed_at);
            break;
        }
    }
    let row = json!({
        "topology": name,
        "routers": n,
        "links": links,
        "join_reaches_all_ms": join_spread.as_secs_f64() * 1e3,
        "s2s_say_per_message": says,
        "optimum_per_message": n - 1,
        "ratio_to_optimum": says / (n - 1) as f64,
        "messages_delivered_to_all": delivered,
        "messages": MESSAGES,
        "joins_per_router_per_refresh": joins_per_router_per_refresh,
        "recovery_after_death_s": recovery.map(|d| d.as_secs_f64()),
        "routers_cut_off_by_death": n - 1 - connected.len(),
        "refresh_s": REFRESH.as_secs_f64(),
    });
    println!(
        "{name:>10} {n:>5} routers {links:>5} links | join everywhere {:>7.2} ms | {says:>7.1} \
         S2S_SAY/msg (optimum {}, x{:.3}) | {delivered}/{MESSAGES} to all | {:>5.1} JOIN/router/refresh | recovery {}",
        join_spread.as_secs_f64() * 1e3,
        n - 1,
        says / (n - 1) as f64,
        joins_per_router_per_refresh,
        recovery.map_or("none in 60 s".to_string(), |d| format!("{:.1} s", d.as_secs_f64())),
    );
    row
}

fn main() {
    // `cargo bench` measures and writes; `cargo test` (no --bench) and `cargo bench -- --test`
    // run the smallest case once, as criterion's benches do in test mode, to show it still works.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") || args.iter().any(|a| a == "--test") {
        let row = measure("tree-like", &random_graph(100, 5, 1, 10_000), 1);
        println!("federation_scale: 100 routers, tree-like: {row}");
        assert_eq!(
            row["messages_delivered_to_all"], row["messages"],
            "every message reaches every user"
        );
        return;
    }
    let mut rows = Vec::new();
    for n in [100u16, 1000] {
        rows.push(measure(
            "tree-like",
            &random_graph(n, usize::from(n) / 20, 1, 10_000),
            1,
        ));
        rows.push(measure(
            "random",
            &random_graph(n, usize::from(n), 2, 10_000),
            2,
        ));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let stamp = chat_router::utc::utc(now).replace(['-', ':'], "");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results");
    let file = dir.join(format!("{stamp}-federation-scale.json"));
    let body = json!({ "kind": "federation-scale", "rows": rows });
    match std::fs::write(
        &file,
        serde_json::to_string_pretty(&body).unwrap_or_default(),
    ) {
        Ok(()) => println!("wrote {}", file.display()),
        Err(e) => eprintln!("cannot write {}: {e}", file.display()),
    }
}
