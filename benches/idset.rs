//! Loop detection: the fixed-size id ring and set every S2S_SAY goes through.

use chat_router::engine::IdSet;
use chat_router::rng::Rng;
use criterion::{black_box, criterion_group, criterion_main, Criterion};

fn idset(c: &mut Criterion) {
    const CAPACITY: usize = 1 << 16;
    let mut set = IdSet::new(CAPACITY, ahash::RandomState::with_seeds(1, 2, 3, 4));
    let mut rng = Rng::new(7);
    // Full, so every insert also evicts the oldest id: the steady state.
    for _ in 0..CAPACITY {
        set.insert(rng.next_u64());
    }
    c.bench_function("idset insert (full, evicting)", |b| {
        b.iter(|| set.insert(black_box(rng.next_u64())))
    });
    c.bench_function("idset contains (miss)", |b| {
        b.iter(|| set.contains(black_box(rng.next_u64())))
    });
}

criterion_group!(benches, idset);
criterion_main!(benches);
