//! A deterministic simulation: sans-I/O router engines (several shards per server, routed by a
//! hash of the source address as SO_REUSEPORT does) joined by a simulated network with a fake
//! clock and seeded delay, reordering and loss. Same seed, same run.

#![allow(dead_code)]

use chat_router::engine::{
    Cluster, Config, Engine, Federation, Member, Neighbors, Order, Outbox, ShardMsg,
};
use chat_router::proto::duckchat::{self, Inbound, Outbound, SayLayout};
use chat_router::rng::Rng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Cluster server i (from 1) listens on `CLUSTER_PORT + i`.
pub const CLUSTER_PORT: u16 = 6000;

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// The course's triangle, as an adjacency list of ports.
pub const TRIANGLE: &[(u16, &[u16])] = &[
    (4000, &[5000, 6000]),
    (5000, &[4000, 6000]),
    (6000, &[4000, 5000]),
];

/// The course's capital H of seven servers.
pub const CAPITAL_H: &[(u16, &[u16])] = &[
    (4000, &[4001]),
    (4001, &[4000, 4002, 4003]),
    (4002, &[4001]),
    (4003, &[4001, 4005]),
    (4004, &[4005]),
    (4005, &[4004, 4003, 4006]),
    (4006, &[4005]),
];

/// The course's 3x3 grid of nine servers.
pub const GRID: &[(u16, &[u16])] = &[
    (8100, &[8101, 8103]),
    (8101, &[8100, 8102, 8104]),
    (8102, &[8101, 8105]),
    (8103, &[8100, 8104, 8106]),
    (8104, &[8101, 8103, 8105, 8107]),
    (8105, &[8102, 8104, 8108]),
    (8106, &[8103, 8107]),
    (8107, &[8106, 8104, 8108]),
    (8108, &[8105, 8107]),
];

/// A random connected graph of `n` servers on ports `first_port..`: a random tree plus
/// `extra` random links, as an adjacency list.
pub fn random_graph(n: u16, extra: usize, seed: u64, first_port: u16) -> Vec<(u16, Vec<u16>)> {
    let mut rng = Rng::new(seed);
    let mut adj: Vec<Vec<u16>> = vec![Vec::new(); usize::from(n)];
    let link = |a: u16, b: u16, adj: &mut Vec<Vec<u16>>| {
        if a != b && !adj[usize::from(a)].contains(&b) {
            adj[usize::from(a)].push(b);
            adj[usize::from(b)].push(a);
        }
    };
    for i in 1..n {
        let parent = rng.below(u64::from(i)) as u16;
        link(i, parent, &mut adj);
    }
    for _ in 0..extra {
        let (a, b) = (
            rng.below(u64::from(n)) as u16,
            rng.below(u64::from(n)) as u16,
        );
        link(a, b, &mut adj);
    }
    let port = |i: u16| first_port + i;
    (0..n)
        .map(|i| {
            (
                port(i),
                adj[usize::from(i)].iter().map(|&j| port(j)).collect(),
            )
        })
        .collect()
}

pub struct Network {
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Probability that a datagram between servers is lost.
    pub s2s_loss: f64,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            min_delay: Duration::from_micros(50),
            max_delay: Duration::from_millis(5),
            s2s_loss: 0.0,
        }
    }
}

struct Server {
    shards: Vec<Engine>,
}

/// A datagram as it left a sender.
#[derive(Clone, Debug)]
pub struct Wire {
    pub at: Duration,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

pub struct Sim {
    pub now: Duration,
    rng: Rng,
    pub net: Network,
    servers: BTreeMap<SocketAddr, Server>,
    configs: HashMap<SocketAddr, Arc<Config>>,
    shards: u16,
    events: BinaryHeap<Reverse<(Duration, u64)>>,
    in_flight: HashMap<u64, Wire>,
    seq: u64,
    /// What each client address received, in order.
    pub inbox: HashMap<SocketAddr, Vec<Vec<u8>>>,
    /// Every datagram a server sent.
    pub server_log: Vec<Wire>,
    outbox: Outbox,
    client_links: HashMap<(SocketAddr, SocketAddr), Duration>,
    /// Queues between shards of this depth, with the runtime's waiting room for full ones
    /// ([`chat_router::mesh::Outgoing`]); `None`: unbounded.
    pub queue_depth: Option<usize>,
}

impl Sim {
    pub fn new(seed: u64, shards: u16) -> Self {
        Self {
            now: Duration::ZERO,
            rng: Rng::new(seed),
            net: Network::default(),
            servers: BTreeMap::new(),
            configs: HashMap::new(),
            shards,
            events: BinaryHeap::new(),
            in_flight: HashMap::new(),
            seq: 0,
            inbox: HashMap::new(),
            server_log: Vec::new(),
            outbox: Outbox::with_capacity(64),
            client_links: HashMap::new(),
            queue_depth: None,
        }
    }

    /// Short timers so that soft state can be simulated quickly.
    pub fn config(port: u16, neighbors: &[u16]) -> Config {
        let mut cfg = Config::new(addr(port));
        if !neighbors.is_empty() {
            let mut tree = Neighbors::new(neighbors.iter().map(|&p| addr(p)).collect());
            tree.refresh = Duration::from_secs(5);
            tree.timeout = Duration::from_secs(10);
            cfg.federation = Federation::Tree(tree);
        }
        cfg.user_timeout = Duration::from_secs(20);
        cfg
    }

    pub fn add_server(&mut self, cfg: Config) {
        let cfg = Arc::new(cfg);
        let shards = (0..self.shards)
            .map(|i| Engine::new(i, self.shards, cfg.clone(), self.rng.next_u64(), self.now))
            .collect();
        self.configs.insert(cfg.local, cfg.clone());
        self.servers.insert(cfg.local, Server { shards });
    }

    /// A cluster of `servers` group-federated servers on ports `CLUSTER_PORT + 1..`, with
    /// forwarding address = bind address (the simulated network delays and reorders itself).
    pub fn cluster(seed: u64, shards: u16, servers: u16, order: Order) -> Self {
        Self::cluster_with(seed, shards, servers, order, |_| {})
    }

    /// As [`Sim::cluster`], each server's cluster settings changed by `tweak` first.
    pub fn cluster_with(
        seed: u64,
        shards: u16,
        servers: u16,
        order: Order,
        tweak: impl Fn(&mut Cluster),
    ) -> Self {
        let mut sim = Self::new(seed, shards);
        let members: Vec<Member> = (1..=servers)
            .map(|i| Member {
                forward: addr(CLUSTER_PORT + i),
                bind: addr(CLUSTER_PORT + i),
            })
            .collect();
        for me in 0..servers {
            let mut cfg = Self::config(CLUSTER_PORT + me + 1, &[]);
            let mut cluster = Cluster::new(members.clone(), me, order);
            cluster.incarnation = 1000 * u64::from(me + 1);
            tweak(&mut cluster);
            cfg.federation = Federation::Group(cluster);
            sim.add_server(cfg);
        }
        sim
    }

    /// Servers with neighbors given as an adjacency list of ports.
    pub fn topology(seed: u64, shards: u16, edges: &[(u16, &[u16])]) -> Self {
        let mut sim = Self::new(seed, shards);
        for (port, neighbors) in edges {
            sim.add_server(Self::config(*port, neighbors));
        }
        sim
    }

    /// Stops a server: it forgets everything and datagrams to it are lost.
    pub fn crash(&mut self, port: u16) {
        self.servers.remove(&addr(port));
    }

    /// Starts a crashed server again with empty state (a cluster server as a new incarnation,
    /// as a real one takes its incarnation from the clock).
    pub fn restart(&mut self, port: u16) {
        let mut cfg = (*self.configs[&addr(port)]).clone();
        if let Federation::Group(cluster) = &mut cfg.federation {
            cluster.incarnation += 1_000_000;
        }
        self.add_server(cfg);
    }

    pub fn engine(&self, port: u16, shard: usize) -> &Engine {
        &self.servers[&addr(port)].shards[shard]
    }

    pub fn engines(&self, port: u16) -> impl Iterator<Item = &Engine> {
        self.servers[&addr(port)].shards.iter()
    }

    fn is_server(&self, a: SocketAddr) -> bool {
        self.configs.contains_key(&a)
    }

    fn schedule(&mut self, src: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
        self.schedule_at(self.now, src, dst, bytes);
    }

    fn schedule_at(&mut self, sent: Duration, src: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
        if self.is_server(src) {
            self.server_log.push(Wire {
                at: self.now,
                src,
                dst,
                bytes: bytes.clone(),
            });
        }
        let s2s = self.is_server(src) && self.is_server(dst);
        if s2s && self.rng.chance(self.net.s2s_loss) {
            return;
        }
        let span = (self.net.max_delay - self.net.min_delay).as_nanos() as u64;
        let delay = self.net.min_delay + Duration::from_nanos(self.rng.below(span.max(1)));
        let mut at = sent + delay;
        if !s2s {
            // A client's link is one loopback hop: it delays but never reorders.
            let last = self.client_links.entry((src, dst)).or_default();
            at = at.max(*last + Duration::from_nanos(1));
            *last = at;
        }
        self.seq += 1;
        self.events.push(Reverse((at, self.seq)));
        self.in_flight.insert(
            self.seq,
            Wire {
                at: sent,
                src,
                dst,
                bytes,
            },
        );
    }

    /// A client sends a request to a server.
    pub fn send(&mut self, client: SocketAddr, server: u16, req: Inbound<'_>) {
        let mut buf = [0u8; 256];
        let n = req
            .encode(&mut buf, SayLayout::UserFirst)
            .expect("buffer fits");
        self.send_raw(client, server, buf[..n].to_vec());
    }

    pub fn send_raw(&mut self, client: SocketAddr, server: u16, bytes: Vec<u8>) {
        self.schedule(client, addr(server), bytes);
    }

    /// A client sends `bytes` at a later time `at` (sends of one client keep their order).
    pub fn send_at(&mut self, at: Duration, client: SocketAddr, server: u16, bytes: Vec<u8>) {
        self.schedule_at(at, client, addr(server), bytes);
    }

    /// Every datagram a client received, as text (the text protocol's replies and deliveries).
    pub fn lines(&self, client: SocketAddr) -> Vec<String> {
        self.inbox
            .get(&client)
            .map_or(&[][..], |v| v.as_slice())
            .iter()
            .map(|b| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    pub fn raw(&self, client: SocketAddr) -> &[Vec<u8>] {
        self.inbox.get(&client).map_or(&[][..], |v| v.as_slice())
    }

    /// Logs `name` in from `client` and joins Common, as the stock client does.
    pub fn login(&mut self, client: SocketAddr, server: u16, name: &str) {
        self.send(
            client,
            server,
            Inbound::Login {
                user: name.as_bytes(),
            },
        );
        self.send(client, server, Inbound::Join { channel: b"Common" });
    }

    fn home(&self, src: SocketAddr) -> usize {
        let h = ahash::RandomState::with_seeds(9, 8, 7, 6).hash_one(src);
        (h % self.shards as u64) as usize
    }

    /// Handles whatever one engine call produced: sends go to the network, messages between
    /// shards through the mesh ([`Sim::run_shards`]), until the server is quiescent; then checks
    /// that its shards agree and keep their limits.
    fn settle(
        &mut self,
        server: SocketAddr,
        first: impl FnOnce(&mut Engine, &mut Outbox),
        shard: usize,
    ) {
        let depth = self.queue_depth.unwrap_or(usize::MAX);
        self.run_shards(server, first, shard, depth);
        // Quiescent: the shards must agree, and hold no more than their limits allow.
        let shards = &self.servers[&server].shards;
        if let Err(e) = chat_router::engine::check_agreement(shards) {
            panic!("{server} at {:?}: {e}", self.now);
        }
        let limits = &self.configs[&server].limits;
        for shard in shards {
            if let Err(e) = shard.census().check(limits, self.shards) {
                panic!("{server} at {:?}: {e}", self.now);
            }
        }
    }

    /// Runs the shards until the server is quiescent: each message goes through a queue of
    /// `depth` between two shards, taken by the receiver in turn, and one that finds its queue
    /// full waits in the sender's [`Outgoing`], as in the runtime.
    fn run_shards(
        &mut self,
        server: SocketAddr,
        first: impl FnOnce(&mut Engine, &mut Outbox),
        shard: usize,
        depth: usize,
    ) {
        use chat_router::mesh::Outgoing;
        let n = self.shards as usize;
        let mut out = std::mem::take(&mut self.outbox);
        let mut queues: Vec<VecDeque<ShardMsg>> = (0..n * n).map(|_| VecDeque::new()).collect();
        let mut outgoing: Vec<Outgoing> = (0..n).map(|_| Outgoing::new(n)).collect();
        let counters: Vec<_> = self.servers[&server]
            .shards
            .iter()
            .map(|e| e.counters().clone())
            .collect();
        {
            let srv = self.servers.get_mut(&server).expect("server exists");
            first(&mut srv.shards[shard], &mut out);
        }
        let mut from = shard;
        loop {
            // What shard `from` just produced: datagrams to the network, messages to the mesh.
            let sends: Vec<(SocketAddr, Vec<u8>)> = out
                .sends()
                .iter()
                .map(|s| (s.dst, out.bytes(s.payload).to_vec()))
                .collect();
            let mut push = |to, msg| offer(&mut queues[from * n + to], depth, msg);
            for (to, msg) in out.take_msgs() {
                outgoing[from].send(to as usize, msg, &mut push, &counters[from]);
            }
            out.clear();
            for (dst, bytes) in sends {
                self.schedule(server, dst, bytes);
            }
            // The next message: the first queue with one, after letting every shard retry.
            for (s, o) in outgoing.iter_mut().enumerate() {
                o.retry(&mut |to, msg| offer(&mut queues[s * n + to], depth, msg));
            }
            let Some(i) = (0..n * n).find(|&i| !queues[i].is_empty()) else {
                assert!(outgoing.iter().all(Outgoing::is_empty), "messages stuck");
                break;
            };
            let msg = queues[i].pop_front().expect("not empty");
            let to = i % n;
            from = to;
            let now = self.now;
            let srv = self.servers.get_mut(&server).expect("server exists");
            srv.shards[to].handle_message(now, msg, &mut out);
        }
        self.outbox = out;
    }

    fn next_timer(&self) -> Option<Duration> {
        self.servers
            .values()
            .flat_map(|s| s.shards.iter().map(Engine::next_timeout))
            .min()
    }

    /// Runs the simulation for `span` of simulated time.
    pub fn run_for(&mut self, span: Duration) {
        let end = self.now + span;
        loop {
            let next_event = self.events.peek().map(|Reverse((t, _))| *t);
            let next_timer = self.next_timer();
            let next = match (next_event, next_timer) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => a.or(b).unwrap_or(end),
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            if next_event == Some(next) {
                let Reverse((_, seq)) = self.events.pop().expect("peeked");
                let wire = self.in_flight.remove(&seq).expect("in flight");
                self.arrive(wire);
            } else {
                let due: Vec<(SocketAddr, usize)> = self
                    .servers
                    .iter()
                    .flat_map(|(a, s)| {
                        s.shards
                            .iter()
                            .enumerate()
                            .filter(|(_, e)| e.next_timeout() <= next)
                            .map(|(i, _)| (*a, i))
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let now = self.now;
                for (server, shard) in due {
                    self.settle(server, |e, out| e.handle_timeout(now, out), shard);
                }
            }
        }
    }

    fn arrive(&mut self, wire: Wire) {
        if self.servers.contains_key(&wire.dst) {
            let shard = self.home(wire.src);
            let now = self.now;
            self.settle(
                wire.dst,
                |e, out| e.handle_datagram(now, wire.src, &wire.bytes, out),
                shard,
            );
        } else if !self.is_server(wire.dst) {
            self.inbox.entry(wire.dst).or_default().push(wire.bytes);
        }
    }

    /// The TXT_SAYs a client received, as `channel user text` strings.
    pub fn says(&self, client: SocketAddr) -> Vec<String> {
        self.decoded(client)
            .into_iter()
            .filter(|s| s.starts_with("say "))
            .map(|s| s[4..].to_string())
            .collect()
    }

    /// Every datagram a client received, decoded into a readable line.
    pub fn decoded(&self, client: SocketAddr) -> Vec<String> {
        let lossy = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        self.inbox
            .get(&client)
            .map(|v| v.as_slice())
            .unwrap_or(&[])
            .iter()
            .map(|bytes| match duckchat::decode_outbound(bytes) {
                Ok(Outbound::Say {
                    channel,
                    user,
                    text,
                }) => {
                    format!("say {} {} {}", lossy(channel), lossy(user), lossy(text))
                }
                Ok(Outbound::List(names)) => {
                    format!(
                        "list {}",
                        names.iter().map(lossy).collect::<Vec<_>>().join(",")
                    )
                }
                Ok(Outbound::Who { channel, users }) => format!(
                    "who {} {}",
                    lossy(channel),
                    users.iter().map(lossy).collect::<Vec<_>>().join(",")
                ),
                Ok(Outbound::Error { message }) => format!("error {}", lossy(message)),
                Err(e) => format!("undecodable {e}"),
            })
            .collect()
    }

    pub fn clear_inboxes(&mut self) {
        self.inbox.clear();
    }

    /// S2S datagrams of type `kind` sent by servers since `since`, as (src port, dst port).
    pub fn s2s_sent(&self, kind: i32, since: Duration) -> Vec<(u16, u16)> {
        self.server_log
            .iter()
            .filter(|w| w.at >= since && duckchat::type_code(&w.bytes) == Some(kind))
            .map(|w| (w.src.port(), w.dst.port()))
            .collect()
    }

    pub fn ports(&self) -> Vec<u16> {
        self.servers.keys().map(|a| a.port()).collect()
    }

    pub fn unique(v: &[String]) -> bool {
        v.iter().collect::<HashSet<_>>().len() == v.len()
    }
}

/// Puts `msg` in a queue of `depth`; hands it back when the queue is full.
fn offer(queue: &mut VecDeque<ShardMsg>, depth: usize, msg: ShardMsg) -> Option<ShardMsg> {
    if queue.len() >= depth {
        return Some(msg);
    }
    queue.push_back(msg);
    None
}
