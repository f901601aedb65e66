//! The engine's cost per membership change at different channel sizes: one user joins and
//! leaves a channel that already holds N members (a JOIN and a LEAVE per iteration, on one
//! shard, decoding included). With O(1) member lists the time is the same for 10 members and
//! for 100,000. And a mass expiry: 100,000 members of one channel falling silent together,
//! expired in timer steps of at most 1,024 (criterion reports the cost per member; a step
//! costs at most 1,024 times that).

mod common;

use chat_router::engine::{Config, Engine, Outbox};
use chat_router::proto::duckchat::Inbound;
use common::{client, encoded};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn membership(c: &mut Criterion) {
    let mut group = c.benchmark_group("join_and_leave");
    for members in [10u32, 100_000] {
        let cfg = Arc::new(Config::new(SocketAddr::from(([127, 0, 0, 1], 4000))));
        let now = Duration::from_secs(1);
        let mut engine = Engine::new(0, 1, cfg, 1, now);
        let mut out = Outbox::with_capacity(4096);
        let join = encoded(Inbound::Join { channel: b"room" });
        let leave = encoded(Inbound::Leave { channel: b"room" });
        for i in 0..=members {
            let login = encoded(Inbound::Login {
                user: format!("u{i}").as_bytes(),
            });
            engine.handle_datagram(now, client(i), &login, &mut out);
            engine.handle_datagram(now, client(i), &join, &mut out);
            out.clear();
        }
        // The member that comes and goes joined first: it sits at the front of every list.
        let mover = client(0);
        engine.handle_datagram(now, mover, &leave, &mut out);
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                engine.handle_datagram(now, mover, &join, &mut out);
                engine.handle_datagram(now, mover, &leave, &mut out);
                assert!(out.sends().is_empty(), "no error, no answer");
                out.clear();
            })
        });
    }
    group.finish();
}

fn mass_expiry(c: &mut Criterion) {
    const MEMBERS: u32 = 100_000;
    let mut group = c.benchmark_group("mass_expiry");
    group.sample_size(10);
    group.throughput(criterion::Throughput::Elements(u64::from(MEMBERS)));
    // Each user a name of its own: one name's logins would replace each other.
    let logins: Vec<Vec<u8>> = (0..MEMBERS)
        .map(|i| {
            let name = format!("u{i}");
            encoded(Inbound::Login {
                user: name.as_bytes(),
            })
        })
        .collect();
    let join = encoded(Inbound::Join { channel: b"room" });
    group.bench_function("one_channel_100000", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for _ in 0..iters {
                let cfg = Config::new(SocketAddr::from(([127, 0, 0, 1], 4000)));
                let timeout = cfg.user_timeout;
                let mut engine = Engine::new(0, 1, Arc::new(cfg), 1, Duration::ZERO);
                let mut out = Outbox::with_capacity(4096);
                for i in 0..MEMBERS {
                    let login = &logins[i as usize];
                    engine.handle_datagram(Duration::ZERO, client(i), login, &mut out);
                    engine.handle_datagram(Duration::ZERO, client(i), &join, &mut out);
                    out.clear();
                }
                let mut now = timeout + Duration::from_secs(1);
                let started = std::time::Instant::now();
                while engine.counters().users_expired.get() < u64::from(MEMBERS) {
                    now = now.max(engine.next_timeout());
                    engine.handle_timeout(now, &mut out);
                    out.clear();
                }
                spent += started.elapsed();
            }
            spent
        })
    });
    group.finish();
}

criterion_group!(benches, membership, mass_expiry);
criterion_main!(benches);
