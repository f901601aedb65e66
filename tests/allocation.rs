//! The engine's hot path does not touch the heap: once sessions, channels and the outbox exist,
//! client SAYs, S2S_SAYs (fresh and duplicate ids), text chat lines that fit DuckChat's fields,
//! and the cross-shard fan-out they cause run with zero allocations; a longer text line costs
//! exactly one (its copy, shared by every shard that delivers it). A counting global allocator
//! watches this test's thread only.

use chat_router::engine::{Config, Engine, Federation, Neighbors, Outbox, ShardMsg};
use chat_router::proto::duckchat::{Inbound, S2sSay, SayLayout};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

struct CountingAllocator;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_allocation() {
    // try_with: the allocator also runs while thread-locals are being torn down.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        }
    });
}

// SAFETY (of the impl as a whole): every call is forwarded unchanged to the system allocator.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_allocation();
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Allocations made on this thread while `f` runs.
fn allocations_during(f: impl FnOnce()) -> u64 {
    ALLOCATIONS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    f();
    COUNTING.with(|on| on.set(false));
    ALLOCATIONS.with(|n| n.get())
}

const SHARDS: u16 = 2;
const NEIGHBOR: u16 = 5000;

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Two shards of one server, with the runtime's shard-to-shard queues replaced by one FIFO.
struct Server {
    shards: Vec<Engine>,
    out: Outbox,
    queue: VecDeque<(u16, ShardMsg)>,
    now: Duration,
    sent: u64,
}

impl Server {
    fn new() -> Self {
        let mut cfg = Config::new(addr(4000));
        cfg.federation = Federation::Tree(Neighbors::new(vec![addr(NEIGHBOR)]));
        let cfg = Arc::new(cfg);
        let now = Duration::from_secs(1);
        Self {
            shards: (0..SHARDS)
                .map(|i| Engine::new(i, SHARDS, cfg.clone(), 42 + u64::from(i), now))
                .collect(),
            out: Outbox::with_capacity(4096),
            queue: VecDeque::with_capacity(4096),
            now,
            sent: 0,
        }
    }

    /// Delivers one datagram to the shard SO_REUSEPORT would pick (here: port parity), then
    /// runs every cross-shard message it causes; sends are counted and dropped.
    fn datagram(&mut self, src: SocketAddr, bytes: &[u8]) {
        let home = (src.port() % SHARDS) as usize;
        self.shards[home].handle_datagram(self.now, src, bytes, &mut self.out);
        loop {
            self.sent += self.out.sends().len() as u64;
            self.queue.extend(self.out.take_msgs());
            self.out.clear();
            let Some((dst, msg)) = self.queue.pop_front() else {
                break;
            };
            self.shards[dst as usize].handle_message(self.now, msg, &mut self.out);
        }
    }
}

fn encode(request: Inbound) -> Vec<u8> {
    let mut buf = vec![0u8; 256];
    let n = request.encode(&mut buf, SayLayout::UserFirst).unwrap();
    buf.truncate(n);
    buf
}

fn s2s_say(id: u64) -> Vec<u8> {
    encode(Inbound::S2sSay(S2sSay {
        id,
        user: b"remote",
        channel: b"room",
        text: b"hello from the neighbor",
    }))
}

#[test]
fn says_and_s2s_says_do_not_allocate_after_warm_up() {
    let mut server = Server::new();
    let clients: Vec<SocketAddr> = (0..64).map(|i| addr(10_000 + i)).collect();
    for (i, &c) in clients.iter().enumerate() {
        server.datagram(
            c,
            &encode(Inbound::Login {
                user: format!("u{i}").as_bytes(),
            }),
        );
        server.datagram(c, &encode(Inbound::Join { channel: b"room" }));
    }
    server.datagram(
        addr(NEIGHBOR),
        &encode(Inbound::S2sJoin { channel: b"room" }),
    );

    let say = encode(Inbound::Say {
        channel: b"room",
        text: b"hello, room",
    });
    let fresh: Vec<Vec<u8>> = (0..2000u64).map(|i| s2s_say(1_000_000 + i)).collect();
    let (warm, measured) = fresh.split_at(1000);

    // Warm-up: scratch vectors, the outbox and the id set reach their working sizes.
    for round in 0..10 {
        for &c in &clients {
            server.datagram(c, &say);
        }
        for bytes in &warm[round * 100..(round + 1) * 100] {
            server.datagram(addr(NEIGHBOR), bytes);
        }
    }

    let sent_before = server.sent;
    let allocations = allocations_during(|| {
        for round in 0..10 {
            for &c in &clients {
                server.datagram(c, &say);
            }
            for bytes in &measured[round * 100..(round + 1) * 100] {
                server.datagram(addr(NEIGHBOR), bytes);
                server.datagram(addr(NEIGHBOR), bytes); // a duplicate: answered with S2S_LEAVE
            }
        }
    });
    // Each client SAY reaches 64 members and the neighbor; each fresh S2S_SAY reaches 64.
    let expected = 10 * 64 * 65 + 1000 * 64;
    assert!(
        server.sent - sent_before >= expected,
        "the measured traffic really fanned out: {} sends, expected at least {expected}",
        server.sent - sent_before
    );
    assert_eq!(allocations, 0, "heap allocations on the hot path");
}

#[test]
fn text_chat_allocates_only_a_shared_copy_of_long_lines() {
    let mut server = Server::new();
    let clients: Vec<SocketAddr> = (0..64).map(|i| addr(20_000 + i)).collect();
    for (i, &c) in clients.iter().enumerate() {
        server.datagram(c, format!("/nick n{i}").as_bytes());
        server.datagram(c, b"/join 3");
    }
    let short = b"hello, room three";
    let long = [b'x'; 900];
    for _ in 0..10 {
        for &c in &clients {
            server.datagram(c, short);
            server.datagram(c, &long);
        }
    }
    let sent_before = server.sent;
    let short_allocations = allocations_during(|| {
        for _ in 0..10 {
            for &c in &clients {
                server.datagram(c, short);
            }
        }
    });
    let long_allocations = allocations_during(|| {
        for _ in 0..10 {
            for &c in &clients {
                server.datagram(c, &long);
            }
        }
    });
    // Each line reaches the 64 members and the neighbor.
    assert_eq!(
        server.sent - sent_before,
        2 * 10 * 64 * 65,
        "every line reached the room"
    );
    assert_eq!(short_allocations, 0, "heap allocations for short lines");
    assert_eq!(long_allocations, 10 * 64, "one shared copy per long line");
}
