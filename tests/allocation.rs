//! The engine's hot path does not touch the heap: once sessions, channels and the outbox exist,
//! client SAYs, S2S_SAYs (fresh and duplicate ids), text chat lines that fit DuckChat's fields,
//! and the cross-shard fan-out they cause run with zero allocations; a longer text line costs
//! exactly one (its copy, shared by every shard that delivers it); in a cluster, the only
//! allocation is the shared copy of a server's datagram that crosses to its room's owner shard.
//! A counting global allocator watches this test's thread only.

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

/// Three servers of a total-order cluster, two shards each, joined by a lossless in-order
/// network (its buffers reused, so that it allocates nothing itself after warm-up); every
/// datagram between them is delivered before the next client line.
struct Cluster {
    servers: Vec<Server>,
    wire: VecDeque<(SocketAddr, SocketAddr, Vec<u8>)>,
    spare: Vec<Vec<u8>>,
    /// Datagrams between servers that arrived on a shard other than the room's owner.
    crossings: u64,
}

const CLUSTER_PORT: u16 = 6000;
const ROOM: &str = "1";

impl Cluster {
    fn new() -> Self {
        use chat_router::engine::{Cluster as Members, Member, Order};
        let members: Vec<Member> = (1..=3)
            .map(|i| Member {
                forward: addr(CLUSTER_PORT + i),
                bind: addr(CLUSTER_PORT + i),
            })
            .collect();
        let servers = (0..3)
            .map(|me| {
                let mut cfg = Config::new(members[me].bind);
                let mut cluster = Members::new(members.clone(), me as u16, Order::Total);
                cluster.incarnation = 1 + me as u64;
                cfg.federation = Federation::Group(cluster);
                let mut server = Server::new();
                let cfg = Arc::new(cfg);
                server.shards = (0..SHARDS)
                    .map(|i| Engine::new(i, SHARDS, cfg.clone(), 7 + u64::from(i), server.now))
                    .collect();
                server
            })
            .collect();
        let mut cluster = Self {
            servers,
            wire: VecDeque::with_capacity(4096),
            spare: Vec::new(),
            crossings: 0,
        };
        // The servers find one another (each probes the others at start-up).
        for to in 0..3 {
            cluster.settle(to);
        }
        cluster.carry();
        cluster
    }

    /// A client's datagram to server `to`, then everything the servers send each other.
    fn datagram(&mut self, to: usize, src: SocketAddr, bytes: &[u8]) {
        self.handle(to, src, bytes);
        self.carry();
    }

    /// Everything the servers send each other, until they go quiet.
    fn carry(&mut self) {
        for _ in 0..100_000 {
            let Some((src, dst, bytes)) = self.wire.pop_front() else {
                return;
            };
            let to = usize::from(dst.port() - CLUSTER_PORT - 1);
            let owner = self.servers[to].shards[0].owner(&chat_router::proto::Name::from(ROOM));
            if owner != src.port() % SHARDS {
                self.crossings += 1;
            }
            self.handle(to, src, &bytes);
            self.spare.push(bytes);
        }
        panic!("the servers never went quiet");
    }

    fn handle(&mut self, to: usize, src: SocketAddr, bytes: &[u8]) {
        let server = &mut self.servers[to];
        let home = (src.port() % SHARDS) as usize;
        server.shards[home].handle_datagram(server.now, src, bytes, &mut server.out);
        self.settle(to);
    }

    /// Sends what server `to` produced, handles what its shards sent each other, and runs its
    /// due timers (the cluster sends its frames at the end of each step), until it is done.
    fn settle(&mut self, to: usize) {
        let server = &mut self.servers[to];
        loop {
            for s in server.out.sends() {
                if s.dst.port() > CLUSTER_PORT && s.dst.port() <= CLUSTER_PORT + 3 {
                    let from = addr(CLUSTER_PORT + 1 + to as u16);
                    let mut copy = self.spare.pop().unwrap_or_default();
                    copy.clear();
                    copy.extend_from_slice(server.out.bytes(s.payload));
                    self.wire.push_back((from, s.dst, copy));
                } else {
                    server.sent += 1;
                }
            }
            server.queue.extend(server.out.take_msgs());
            server.out.clear();
            if let Some((dst, msg)) = server.queue.pop_front() {
                server.shards[dst as usize].handle_message(server.now, msg, &mut server.out);
                continue;
            }
            let now = server.now;
            let Some(due) = server.shards.iter_mut().find(|s| s.next_timeout() <= now) else {
                break;
            };
            due.handle_timeout(now, &mut server.out);
        }
    }
}

/// The cluster path allocates once per datagram from another server that arrives on a shard
/// other than 0 (which runs the cluster): the shared copy (`Arc<[u8]>`) that carries it there,
/// so the receiving shard never waits. Nothing else: datagrams kept for retransmission reuse
/// the buffers of acknowledged ones, frames kept for passing on fill a ring reserved once, and
/// only a reordered datagram is copied to be held. (With three servers in total order, one
/// client line makes 2 data datagrams from its origin, 2 proposals back, 2 agreements out;
/// acknowledgements ride on them or follow.)
#[test]
fn the_cluster_path_allocates_only_to_cross_shards() {
    let mut cluster = Cluster::new();
    let clients: Vec<SocketAddr> = (0..3).map(|i| addr(30_000 + i)).collect();
    let join = format!("/join {ROOM}");
    for (i, &c) in clients.iter().enumerate() {
        cluster.datagram(i, c, join.as_bytes());
    }
    let line = b"hello, ordered room";
    for _ in 0..200 {
        for (i, &c) in clients.iter().enumerate() {
            cluster.datagram(i, c, line);
        }
    }
    let sent_before: u64 = cluster.servers.iter().map(|s| s.sent).sum();
    let crossings_before = cluster.crossings;
    const MESSAGES: u64 = 300;
    let allocations = allocations_during(|| {
        for _ in 0..MESSAGES / 3 {
            for (i, &c) in clients.iter().enumerate() {
                cluster.datagram(i, c, line);
            }
        }
    });
    let delivered = cluster.servers.iter().map(|s| s.sent).sum::<u64>() - sent_before;
    assert_eq!(
        delivered,
        MESSAGES * 3,
        "every line reached the three members"
    );
    let crossings = cluster.crossings - crossings_before;
    assert!(crossings > 0, "some datagrams crossed shards");
    assert_eq!(
        allocations, crossings,
        "allocations beyond one per crossing"
    );
}
