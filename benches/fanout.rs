//! The engine's user-space cost per delivered message, without sockets: one SAY into a
//! channel of N members on a single shard, from decoding to the outbox holding N sends.
//! Throughput is in deliveries, so criterion reports time per delivery directly.

mod common;

use chat_router::engine::{Config, Engine, Outbox};
use chat_router::proto::duckchat::Inbound;
use common::{client, encoded};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout");
    for members in [1u32, 10, 100, 1000] {
        let cfg = Arc::new(Config::new(SocketAddr::from(([127, 0, 0, 1], 4000))));
        let now = Duration::from_secs(1);
        let mut engine = Engine::new(0, 1, cfg, 1, now);
        let mut out = Outbox::with_capacity(4096);
        for i in 0..members {
            let login = encoded(Inbound::Login {
                user: format!("u{i}").as_bytes(),
            });
            engine.handle_datagram(now, client(i), &login, &mut out);
            let join = encoded(Inbound::Join { channel: b"room" });
            engine.handle_datagram(now, client(i), &join, &mut out);
            out.clear();
        }
        let say = encoded(Inbound::Say {
            channel: b"room",
            text: b"the quick brown fox jumps over the lazy dog",
        });
        group.throughput(Throughput::Elements(u64::from(members)));
        group.bench_with_input(BenchmarkId::from_parameter(members), &members, |b, _| {
            b.iter(|| {
                engine.handle_datagram(now, client(0), &say, &mut out);
                assert_eq!(out.sends().len(), members as usize);
                out.clear();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, fanout);
criterion_main!(benches);
