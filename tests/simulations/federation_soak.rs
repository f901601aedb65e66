//! DuckChat federations run for many soft-state refresh periods in the deterministic simulation
//! (`sim/mod.rs`), with chat from many servers at once (floods overlap), users leaving and
//! joining (servers leave the tree and join it again), delay and reordering: every staying user
//! must get every message exactly once while the periodic S2S_JOINs keep re-adding the links
//! that loop detection cut, and a message must cross about a spanning tree's links.

use crate::sim;

use chat_router::proto::duckchat::{self, Inbound};
use chat_router::rng::Rng;
use sim::{addr, random_graph, Sim, CAPITAL_H, GRID, TRIANGLE};
use std::collections::HashMap;
use std::time::Duration;

/// What a run delivered to the users who stayed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Tally {
    sent: usize,
    lost: usize,
    duplicated: usize,
}

/// A request from `client` to `server` at `at`.
fn request_at(sim: &mut Sim, at: Duration, client: u16, server: u16, request: Inbound<'_>) {
    let mut buf = [0u8; 128];
    let len = request.encode(&mut buf, Default::default()).expect("fits");
    sim.send_at(at, addr(client), server, buf[..len].to_vec());
}

/// A user on each server, all in Common; on every other server that user comes and goes
/// (leaves Common and joins again every few seconds, so that its server leaves the tree and
/// joins it again, where it has no one else), on the others it stays. Over `span`, `count`
/// messages from staying users at uniformly random moments, so that floods overlap now and
/// then; then a quiet second. Every staying user must get every message once.
fn soak(sim: &mut Sim, seed: u64, tag: &str, count: usize, span: Duration) -> Tally {
    let users: Vec<(u16, u16, bool)> = sim
        .ports()
        .iter()
        .enumerate()
        .map(|(i, &s)| (50_000 + i as u16, s, i % 2 == 0))
        .collect();
    for &(c, s, _) in &users {
        sim.login(addr(c), s, &format!("u{c}"));
    }
    sim.run_for(Duration::from_secs(1));
    let start = sim.now;
    let mut rng = Rng::new(seed);
    for &(c, s, stays) in &users {
        let mut at = start + Duration::from_millis(rng.below(3000));
        while !stays && at < start + span {
            request_at(sim, at, c, s, Inbound::Leave { channel: b"Common" });
            at += Duration::from_millis(500 + rng.below(1500));
            request_at(sim, at, c, s, Inbound::Join { channel: b"Common" });
            at += Duration::from_millis(1000 + rng.below(3000));
        }
    }
    let speakers: Vec<(u16, u16)> = users
        .iter()
        .filter(|u| u.2)
        .map(|&(c, s, _)| (c, s))
        .collect();
    let mut times: Vec<u64> = (0..count)
        .map(|_| rng.below(span.as_nanos() as u64))
        .collect();
    times.sort_unstable();
    for (n, at) in times.into_iter().enumerate() {
        let (c, s) = speakers[rng.below(speakers.len() as u64) as usize];
        let text = format!("{tag}{n}");
        let say = Inbound::Say {
            channel: b"Common",
            text: text.as_bytes(),
        };
        request_at(sim, start + Duration::from_nanos(at), c, s, say);
    }
    sim.run_for(span + Duration::from_secs(1));

    let mut tally = Tally {
        sent: count,
        ..Tally::default()
    };
    for &(c, _) in &speakers {
        let mut got: HashMap<String, usize> = HashMap::new();
        for line in sim.says(addr(c)) {
            let text = line.rsplit(' ').next().unwrap_or_default().to_string();
            *got.entry(text).or_default() += 1;
        }
        for n in 0..count {
            match got.get(&format!("{tag}{n}")).copied().unwrap_or(0) {
                0 => tally.lost += 1,
                1 => {}
                k => tally.duplicated += k - 1,
            }
        }
    }
    tally
}

/// Servers of `edges` (an adjacency list of ports) started at random moments of a refresh
/// period, so that their refreshes are out of phase, as on a real machine.
fn federation(edges: &[(u16, Vec<u16>)], seed: u64, shards: u16) -> Sim {
    let mut sim = Sim::new(seed, shards);
    let mut phase = Rng::new(seed ^ 0x5eed);
    for (port, neighbors) in edges {
        sim.add_server(Sim::config(*port, neighbors));
        sim.run_for(Duration::from_nanos(phase.below(5_000_000_000)));
    }
    // Loopback-like delays: a flood crosses the federation in well under a millisecond.
    sim.net.min_delay = Duration::from_micros(20);
    sim.net.max_delay = Duration::from_micros(200);
    sim
}

fn owned(edges: &[(u16, &[u16])]) -> Vec<(u16, Vec<u16>)> {
    edges.iter().map(|(p, n)| (*p, n.to_vec())).collect()
}

#[test]
fn every_topology_delivers_everything_once_across_refreshes() {
    let topologies = [
        ("triangle", owned(TRIANGLE)),
        ("H", owned(CAPITAL_H)),
        ("3x3 grid", owned(GRID)),
        ("random 20", random_graph(20, 12, 3, 9000)),
    ];
    for (name, edges) in &topologies {
        for shards in [1, 3] {
            for seed in 0..2 {
                let mut sim = federation(edges, 700 + seed, shards);
                // First 2% of the datagrams between routers are lost for 20 s: joins, leaves
                // and refreshes go missing too. Messages may be lost then (DuckChat does not
                // retransmit), never duplicated.
                sim.net.s2s_loss = 0.02;
                let lossy = soak(&mut sim, seed, "lossy", 200, Duration::from_secs(20));
                assert_eq!(lossy.duplicated, 0, "{name}: {lossy:?}");
                // Once the loss stops, one refresh period settles the trees; then 10
                // messages a second for 60 s, a dozen refresh periods (5 s here).
                sim.net.s2s_loss = 0.0;
                sim.run_for(Duration::from_secs(5));
                let settled = sim.now;
                let tally = soak(&mut sim, seed, "m", 600, Duration::from_secs(60));
                // Loops are cut: a message crosses about a spanning tree's links, not every
                // link of the graph (the grid has 12 links, its spanning trees 8).
                let says = sim.s2s_sent(duckchat::S2S_SAY, settled).len();
                let per_message = says as f64 / 600.0;
                let tree = (edges.len() - 1) as f64;
                assert!(
                    per_message <= 1.1 * tree,
                    "{name}: {per_message:.2} S2S_SAYs per message, a spanning tree has {tree}"
                );
                let want = Tally {
                    sent: 600,
                    lost: 0,
                    duplicated: 0,
                };
                assert_eq!(tally, want, "{name}, {shards} shard(s), seed {seed}");
            }
        }
    }
}
