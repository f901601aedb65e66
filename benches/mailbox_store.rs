//! The mailbox's store alone: acknowledged SENDs per second from 100 concurrent requests, with
//! group commit and with a flush per request, each answered only once flushed (fsync). Next to
//! `loadgen mailbox`, which adds the protocol's TCP connection per request and per push, it
//! shows how much of the end-to-end cost is the store's.

use chat_router::mailbox::store::{SendOutcome, Store, StoreLimits};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use std::time::Duration;

const CONCURRENT: usize = 100;
const SENDS: usize = 1000;

fn store(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let mut group = c.benchmark_group("mailbox store");
    group.throughput(Throughput::Elements(SENDS as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(5));
    for (name, group_commit) in [("group commit", true), ("a flush each", false)] {
        let dir = std::env::temp_dir().join(format!(
            "chat-router-bench-store-{}-{group_commit}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a data directory");
        let limits = StoreLimits {
            users: u64::MAX,
            users_per_source: u64::MAX,
            per_user: u64::MAX,
            per_sender: u64::MAX,
            per_source: u64::MAX,
            total: u64::MAX,
        };
        let source = std::net::IpAddr::from([127, 0, 0, 1]);
        let store =
            Store::open(&dir.join("bench.redb"), limits, group_commit, false).expect("a store");
        runtime.block_on(async {
            for i in 0..CONCURRENT {
                store.register(format!("s{i}"), None, source).await;
                store.register(format!("r{i}"), None, source).await;
            }
        });
        group.bench_function(format!("{CONCURRENT} concurrent SENDs, {name}"), |b| {
            b.iter(|| {
                runtime.block_on(async {
                    let mut tasks = tokio::task::JoinSet::new();
                    for i in 0..CONCURRENT {
                        let store = store.clone();
                        tasks.spawn(async move {
                            for n in 0..SENDS / CONCURRENT {
                                let to = format!("r{}", (i + n) % CONCURRENT);
                                let sent = store
                                    .send(format!("s{i}"), to, "x".repeat(40), source)
                                    .await;
                                assert!(matches!(sent, Some(SendOutcome::Stored { .. })));
                            }
                        });
                    }
                    while tasks.join_next().await.is_some() {}
                })
            })
        });
        let _ = std::fs::remove_dir_all(&dir);
    }
    group.finish();
}

criterion_group!(benches, store);
criterion_main!(benches);
