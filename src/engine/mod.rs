//! The per-shard state machine, sans I/O: `handle_datagram`, `handle_message` and
//! `handle_timeout` update state and write what must happen into an [`Outbox`]. It never calls
//! the OS and never reads the clock, so the same code runs under the real runtime, under a
//! deterministic simulation and in benchmarks.
//!
//! Where state lives (`shared/design.md`):
//! - the **home shard** of a client (the shard the kernel hands its datagrams to) owns its
//!   session, named everywhere by a [`SessionId`], and the channel's *local member list* for
//!   the members it is home to ([`clients`]);
//! - the **owner shard** of a channel (`hash(channel) % shards`) owns what is decided once per
//!   channel: the full member list (for WHO), which shards have members ([`channels`]) and the
//!   channel's federation state;
//! - every shard keeps a replica of the channel directory (names only, updated by the owners
//!   when a channel appears or disappears), so LIST and "No channel by the name" stay local.
//!
//! Shards exchange [`ShardMsg`]s: small values that travel through bounded queues (only a long
//! text-protocol line points to the heap, see [`Chat`]).
//!
//! Client protocols are front-ends ([`frontend`]: DuckChat and text lines share the UDP port):
//! they turn requests into commands and write replies, deliveries and answers in their own
//! format; the core never names one. Federation is one strategy chosen from the [`Config`]:
//! none, DuckChat's tree of neighbors ([`tree`]) or a static [`group`] with ordered multicast.
//! Every timer is in one table ([`timers`]).
//!
//! # Calling contract
//!
//! One [`Engine`] per shard, all built from one [`Config`] with the same shard count; the
//! caller owns the clock (`now` never goes backwards) and the queues between shards.
//!
//! - [`Engine::handle_datagram`]: a datagram this shard's socket received (the caller sends
//!   every datagram of one source to the same shard, as SO_REUSEPORT does).
//! - [`Engine::handle_message`]: a [`ShardMsg`] another shard (or this one) addressed to it, in
//!   the order that shard emitted them.
//! - [`Engine::handle_timeout`]: call it when `now` reaches [`Engine::next_timeout`], which any
//!   of the three calls may move.
//!
//! Each call appends to the [`Outbox`] it is given: datagrams to send (in order), messages for
//! other shards (`take_msgs`: hand them over in order; membership must never be dropped, see
//! [`ShardMsg::is_control`] and `crate::mesh`) and, with `verbose`, log lines. The caller
//! empties the outbox after each call, queuing the messages before sending the datagrams (a
//! client that reacts to a reply must find the state that reply implies). Between calls, with
//! no message in flight, the shards agree ([`check_agreement`]) and each holds no more than
//! its [`Limits`] allow ([`Engine::census`]).

pub mod accounts;
mod answers;
mod budget;
mod channels;
mod chat;
mod clients;
mod counters;
pub mod direct;
mod endpoint;
pub mod frontend;
pub mod group;
mod idset;
mod logins;
mod lossy;
mod members;
mod outbox;
mod sessions;
mod timers;
pub mod token;
mod tree;

pub use chat::{Chat, Origin, Stamp};
pub use counters::{Counter, Counters, DropReason, Histogram};
pub use endpoint::Endpoint;
pub use frontend::{IrcWord, Protocol, IRC_SERVER, IRC_UNREGISTERED};
pub use group::{Cluster, Member, Order, MAX_SERVERS};
pub use idset::IdSet;
pub use outbox::{Outbox, PayloadId, Send};
pub use sessions::SessionId;
pub use tree::Format;

use crate::proto::duckchat::{self, Endian, SayLayout};
use crate::proto::{text, Name, Text};
use crate::rng::Rng;
use ahash::AHashMap;
use lossy::Lossy;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use timers::Timer;

/// The one channel that exists from start-up and is never deleted.
pub const COMMON: &str = "Common";

// Relations the code relies on.
// A stored name always fits a DuckChat field with its NUL.
const _: () = assert!(Name::CAPACITY < duckchat::NAME_FIELD);
// Every text room's channel name ("1" to the largest room number, ilog10 + 1 digits) is a
// valid channel name.
const _: () = assert!((text::MAX_ROOMS.ilog10() as usize) < Name::CAPACITY);
// `Common` is a valid channel name.
const _: () = assert!(COMMON.len() <= Name::CAPACITY);
// A text delivery always fits the outbox's largest payload and a UDP datagram.
const _: () = assert!(text::MAX_LINE <= 65_507);

/// Bounds on everything the network can make the engine remember or send: the one place where
/// they are stated (the README's "Limits" table lists them with these defaults).
#[derive(Debug, Clone)]
pub struct Limits {
    /// Sessions (of every protocol) per shard; a full table evicts its longest-silent session.
    pub sessions_per_shard: usize,
    /// Sessions (of every protocol) one IP address may hold on one shard.
    pub sessions_per_ip: usize,
    pub channels_per_user: usize,
    /// Channels the server knows (made by local JOINs and by neighbors' S2S_JOINs).
    pub channels: usize,
    /// How many recent S2S_SAY ids each owner shard remembers.
    pub recent_ids: usize,
    /// Reply bytes (errors, `+OK`/`-ERR`, LIST and WHO answers) one IP address may receive from
    /// one shard: a burst, then a rate.
    pub reply_burst: u64,
    pub reply_bytes_per_sec: u64,
    /// Errors a session gets in a row before it does something that succeeds.
    pub errors_in_a_row: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions_per_shard: 250_000,
            sessions_per_ip: 1024,
            channels_per_user: 256,
            channels: 10_000,
            recent_ids: 1 << 16,
            reply_burst: 16 * 1024,
            reply_bytes_per_sec: 32 * 1024,
            errors_in_a_row: 32,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// This server's address, as neighbors and log lines know it.
    pub local: SocketAddr,
    /// How this server federates with others: chosen once, one of three.
    pub federation: Federation,
    pub user_timeout: Duration,
    /// Course-format log lines into [`Outbox::log_text`].
    pub verbose: bool,
    /// Text-protocol rooms are 1 to `rooms`.
    pub rooms: u32,
    pub limits: Limits,
    /// Seeds of the channel-ownership hash: the same on every shard of one server.
    pub hash_seeds: [u64; 4],
    /// Wall-clock time (milliseconds since 1970) when the engines' `now` was zero, for the
    /// timestamps front-ends write; the runtime sets it (the engine never reads a clock).
    pub epoch_unix_ms: u64,
    /// A mailbox runs beside the shards: text and web sessions send and receive direct
    /// messages ([`direct`]) and have accounts ([`accounts`]).
    pub mailbox: bool,
    /// The names that were accounts when the server started (the shards learn of later ones
    /// from the mailbox).
    pub accounts: Arc<ahash::AHashSet<Name>>,
    /// The key of the tokens this server signs for browsers that signed in (kept with the
    /// mailbox's data), if it signs any.
    pub session_key: Option<Vec<u8>>,
    /// Keys whose tokens sign a session in: `session_key` and the operator's (`--auth-key`).
    pub token_keys: Vec<Vec<u8>>,
}

impl Config {
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            federation: Federation::Alone,
            user_timeout: Duration::from_secs(120),
            verbose: false,
            rooms: 10,
            limits: Limits::default(),
            hash_seeds: [0x5eed, 1, 2, 3],
            epoch_unix_ms: 0,
            mailbox: false,
            accounts: Arc::default(),
            session_key: None,
            token_keys: Vec::new(),
        }
    }

    /// The cluster this server is one of, if it is.
    pub fn cluster(&self) -> Option<&Cluster> {
        match &self.federation {
            Federation::Group(c) => Some(c),
            Federation::Alone | Federation::Tree(_) => None,
        }
    }
}

/// How a server federates: one strategy, so a configuration cannot name both neighbors and a
/// cluster.
#[derive(Debug, Clone)]
pub enum Federation {
    /// A server on its own.
    Alone,
    /// DuckChat's tree of neighbors ([`tree`]).
    Tree(Neighbors),
    /// A static cluster with ordered multicast ([`group`]).
    Group(Cluster),
}

/// DuckChat federation: the neighbors and the soft-state timers.
#[derive(Debug, Clone)]
pub struct Neighbors {
    /// Each neighbor once.
    peers: Vec<Peer>,
    /// How often every subscribed channel's S2S_JOIN is sent again.
    pub refresh: Duration,
    /// How long a neighbor stays subscribed to a channel without a refresh.
    pub timeout: Duration,
    /// The S2S_SAY layout of a neighbor that has not shown its own.
    pub say_layout: SayLayout,
}

/// A neighbor, and how it writes S2S datagrams where that is given rather than learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub addr: SocketAddr,
    /// Where its S2S_SAY puts the user and the channel; `None`: learned from what it sends.
    pub layout: Option<SayLayout>,
    /// The byte order of its type codes; `None`: learned from what it sends.
    pub endian: Option<Endian>,
}

impl Peer {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            layout: None,
            endian: None,
        }
    }
}

impl Neighbors {
    /// Neighbors at `addrs`, their formats learned; an address listed twice counts once.
    pub fn new(addrs: Vec<SocketAddr>) -> Self {
        let mut neighbors = Self {
            peers: Vec::new(),
            refresh: Duration::from_secs(60),
            timeout: Duration::from_secs(120),
            say_layout: SayLayout::UserFirst,
        };
        for addr in addrs {
            neighbors.add(Peer::new(addr));
        }
        neighbors
    }

    /// Adds a neighbor; false (nothing added) when its address is listed already: one
    /// neighbor listed twice would get every datagram twice, and its own messages back.
    pub fn add(&mut self, peer: Peer) -> bool {
        if self.peers.iter().any(|p| p.addr == peer.addr) {
            return false;
        }
        self.peers.push(peer);
        true
    }

    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }
}

/// A federation datagram, decoded by whichever shard received it and handed to the channel's owner.
#[derive(Debug, Clone, Copy)]
pub enum S2s {
    Join {
        channel: Name,
    },
    Leave {
        channel: Name,
    },
    Say {
        id: u64,
        channel: Name,
        user: Name,
        text: Text,
    },
}

/// What shards tell each other.
#[derive(Debug, Clone)]
pub enum ShardMsg {
    /// Home -> owner: a local user joined (or, when already a member, was renamed).
    Joined {
        channel: Name,
        session: SessionId,
        user: frontend::Person,
        /// The session's protocol shows who joins and leaves ([`Protocol::wants_presence`]).
        watches: bool,
    },
    /// Home -> owner: a local user left, logged out or expired.
    Left {
        channel: Name,
        session: SessionId,
    },
    /// Owner -> home: the channel could not be created (the server's channel limit, reached by
    /// joins racing on other shards); the home shard undoes the join.
    JoinRefused {
        channel: Name,
        session: SessionId,
    },
    /// Home -> owner: a local user (`session`) said something.
    Said {
        channel: Name,
        chat: Chat,
        session: SessionId,
    },
    /// Owner -> home: the session's message was not sent (a cluster server is a whole window
    /// behind); the home shard tells the client.
    SayRefused {
        channel: Name,
        session: SessionId,
    },
    /// Home -> owner: the members of this channel, for this session's WHO.
    Who {
        channel: Name,
        session: SessionId,
        /// Names only ([`frontend::Command::Who`]).
        brief: bool,
    },
    /// Owner -> home: the members' names, sorted, for the home shard to answer WHO with.
    WhoNames {
        channel: Name,
        session: SessionId,
        names: Arc<[frontend::Person]>,
        brief: bool,
    },
    /// Receiving shard -> owner: a neighbor's datagram.
    FromNeighbor {
        neighbor: u16,
        s2s: S2s,
    },
    /// Receiving shard -> shard 0: a datagram from another server of the cluster.
    FromPeer {
        peer: u16,
        datagram: Arc<[u8]>,
    },
    /// Owner -> every shard with members: deliver this to your local members.
    Deliver {
        channel: Name,
        chat: Chat,
        stamp: Stamp,
    },
    /// Owner -> every shard with members that watch presence: `user` joined or left.
    Presence {
        channel: Name,
        user: frontend::Person,
        change: frontend::Change,
    },
    /// Owner -> every shard: directory updates.
    ChannelAdded(Name),
    ChannelRemoved(Name),
    /// Home -> the name's owner: a session takes `name` ([`logins`]).
    ClaimName {
        name: Name,
        session: SessionId,
        claim: logins::Claim,
    },
    /// The name's owner -> home: whether the session's claim of `name` was granted.
    NameAnswer {
        name: Name,
        session: SessionId,
        granted: bool,
    },
    /// Home -> the name's owner: the session goes by `name` no more.
    ReleaseName {
        name: Name,
        session: SessionId,
    },
    /// Owner -> home: a later login took the session's name; it is logged out.
    LoggedInElsewhere(SessionId),
    /// Receiving shard -> every shard: how a neighbor writes its datagrams, learned from
    /// them; every shard then writes to it that way.
    NeighborFormat {
        neighbor: u16,
        format: tree::Format,
    },
}

impl ShardMsg {
    /// Membership (joins, leaves, renames, the directory, neighbors' subscriptions) and WHO,
    /// which a client waits on: never dropped between shards (see [`crate::mesh`]). Chat and
    /// the cluster's datagrams (whose streams retransmit) may be, and are counted.
    pub fn is_control(&self) -> bool {
        match self {
            ShardMsg::Joined { .. }
            | ShardMsg::Left { .. }
            | ShardMsg::JoinRefused { .. }
            | ShardMsg::SayRefused { .. }
            | ShardMsg::Who { .. }
            | ShardMsg::WhoNames { .. }
            | ShardMsg::ChannelAdded(_)
            | ShardMsg::ChannelRemoved(_)
            | ShardMsg::NeighborFormat { .. }
            | ShardMsg::ClaimName { .. }
            | ShardMsg::NameAnswer { .. }
            | ShardMsg::ReleaseName { .. }
            | ShardMsg::LoggedInElsewhere(_) => true,
            ShardMsg::FromNeighbor { s2s, .. } => !matches!(s2s, S2s::Say { .. }),
            ShardMsg::Said { .. }
            | ShardMsg::Deliver { .. }
            | ShardMsg::Presence { .. }
            | ShardMsg::FromPeer { .. } => false,
        }
    }

    /// The channel a message is about: it decides the owner shard (`None`: a message sent to
    /// a shard named otherwise, never to a channel's owner).
    fn channel(&self) -> Option<&Name> {
        Some(match self {
            ShardMsg::Joined { channel, .. }
            | ShardMsg::Left { channel, .. }
            | ShardMsg::JoinRefused { channel, .. }
            | ShardMsg::SayRefused { channel, .. }
            | ShardMsg::Said { channel, .. }
            | ShardMsg::Who { channel, .. }
            | ShardMsg::WhoNames { channel, .. }
            | ShardMsg::Deliver { channel, .. }
            | ShardMsg::Presence { channel, .. }
            | ShardMsg::ChannelAdded(channel)
            | ShardMsg::ChannelRemoved(channel) => channel,
            ShardMsg::FromNeighbor { s2s, .. } => match s2s {
                S2s::Join { channel } | S2s::Leave { channel } | S2s::Say { channel, .. } => {
                    channel
                }
            },
            ShardMsg::NeighborFormat { .. }
            | ShardMsg::FromPeer { .. }
            | ShardMsg::ClaimName { .. }
            | ShardMsg::NameAnswer { .. }
            | ShardMsg::ReleaseName { .. }
            | ShardMsg::LoggedInElsewhere(_) => return None,
        })
    }
}

/// A source without a session (which has not shown it receives) gets at most this many times
/// the bytes of its request in reply: QUIC's anti-amplification factor.
pub const AMPLIFICATION: usize = 3;

/// What one shard holds: everything the network can make it remember, counted, so that tests
/// and fuzzing can check it against the [`Limits`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Census {
    /// Sessions of every protocol.
    pub sessions: usize,
    /// Sessions counted per source IP, summed, and the most any one IP holds.
    pub sessions_by_address: usize,
    pub busiest_address: usize,
    /// Channels with members this shard is home to, and those members.
    pub local_channels: usize,
    pub local_members: usize,
    pub owned_channels: usize,
    pub directory: usize,
    pub paced_answers: usize,
    pub group_rooms: usize,
    /// Early datagrams the cluster's streams hold.
    pub group_held: usize,
    /// DuckChat names this shard owns the holder of ([`logins`]).
    pub held_names: usize,
}

impl Census {
    /// The first way in which this census exceeds `limits` (for a server of `shards` shards).
    pub fn check(&self, limits: &Limits, shards: u16) -> Result<(), String> {
        let memberships = self.sessions * limits.channels_per_user;
        let channels = limits.channels.max(1); // Common exists from the start
        let checks = [
            (self.sessions <= limits.sessions_per_shard, "sessions"),
            (
                self.sessions_by_address == self.sessions,
                "sessions counted by address",
            ),
            (
                self.busiest_address <= limits.sessions_per_ip,
                "sessions of one address",
            ),
            (self.local_members <= memberships, "local members"),
            (self.local_channels <= memberships, "local channels"),
            (self.owned_channels <= channels, "owned channels"),
            (
                self.directory <= channels * usize::from(shards),
                "directory",
            ),
            (self.paced_answers <= answers::MAX_WAITING, "paced answers"),
            (self.group_rooms <= channels, "cluster rooms"),
            (
                self.group_held <= group::MAX_HELD_DATAGRAMS,
                "cluster datagrams held",
            ),
            (
                self.held_names <= limits.sessions_per_shard * usize::from(shards),
                "held names",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, what)) => Err(format!("{what} over the limit: {self:?}")),
            None => Ok(()),
        }
    }
}

/// Checks what the shards of one server hold against each other, at a moment when no message is
/// in flight between them (the simulator's quiescence): each channel's owner lists exactly the
/// members that their home shards hold, a home shard's member lists and its sessions' channels
/// agree, and the owners' per-shard counts match. Returns the first disagreement.
pub fn check_agreement(shards: &[Engine]) -> Result<(), String> {
    use std::collections::HashSet;
    let mut owned = HashSet::new();
    let mut local = HashSet::new();
    for (i, shard) in shards.iter().enumerate() {
        if !shard.channels.counts_agree() {
            return Err(format!(
                "shard {i}: per-shard member counts disagree with the members"
            ));
        }
        owned.extend(shard.channels.members());
        for (channel, id, held) in shard.clients.local_members() {
            if id.home as usize != i || !held {
                return Err(format!(
                    "shard {i} lists {id:?} in {channel} but its session is not there"
                ));
            }
            local.insert((channel, id));
        }
        if let Some((c, id)) = shard
            .clients
            .session_channels()
            .find(|m| !local.contains(m))
        {
            return Err(format!(
                "{id:?} is in {c} on shard {i} but not on its member list"
            ));
        }
    }
    if let Some((c, id)) = owned.difference(&local).next() {
        return Err(format!(
            "{id:?} is a member of {c} at its owner but not on its home shard"
        ));
    }
    if let Some((c, id)) = local.difference(&owned).next() {
        return Err(format!(
            "{id:?} is a member of {c} on its home shard but not at its owner"
        ));
    }
    Ok(())
}

pub struct Engine {
    shard: u16,
    shards: u16,
    cfg: Arc<Config>,
    owner_hash: ahash::RandomState,
    /// Every address a server uses: this one's, the neighbors', the cluster's bind and
    /// forwarding addresses. Nothing from them is a client request, nothing to them a reply.
    servers: AHashMap<SocketAddr, Server>,
    federation: Strategy,
    counters: Arc<Counters>,
    /// What front-ends need of the configuration.
    settings: frontend::Settings,
    rng: Rng,
    /// Messages this shard sends to itself, handled after the current event (FIFO like a queue).
    loopback: VecDeque<ShardMsg>,
    clients: clients::Clients,
    channels: channels::Channels,
    logins: logins::Logins,
    accounts: accounts::Accounts,
    timers: timers::Timers,
    /// Steps since the last full check of the invariants (debug builds: [`Engine::invariants`]).
    #[cfg(debug_assertions)]
    steps: u32,
}

/// Debug builds check the whole census and the owners' counts every this many steps (the
/// cheap invariants are checked after every step).
#[cfg(debug_assertions)]
const DEEP_CHECK_EVERY: u32 = 256;

/// The federation this server takes part in, with its state.
enum Strategy {
    Alone,
    Tree(tree::Tree),
    Group(group::Group),
}

impl Engine {
    /// Shard `shard` of `shards`; `seed` feeds the S2S id generator (use OS randomness in production).
    pub fn new(shard: u16, shards: u16, cfg: Arc<Config>, seed: u64, now: Duration) -> Self {
        assert!(shard < shards, "shard {shard} of {shards}");
        let [a, b, c, d] = cfg.hash_seeds;
        let owner_hash = ahash::RandomState::with_seeds(a, b, c, d);
        let mut rng = Rng::new(seed);
        let id_hash = ahash::RandomState::with_seeds(rng.next_u64(), rng.next_u64(), 0, 0);
        // Later roles win: a neighbor or a peer listed at this server's own address is still
        // recognised as that peer.
        let mut servers = AHashMap::new();
        servers.insert(cfg.local, Server::Other);
        if let Some(c) = cfg.cluster() {
            for (i, m) in c.members.iter().enumerate() {
                servers.insert(m.bind, Server::Other);
                // This server's own forwarding address is the proxy's socket for it: what comes
                // from there is forged, and an answer there would come back to it.
                let role = if i == c.me as usize {
                    Server::Other
                } else {
                    Server::Peer(i as u16)
                };
                servers.insert(m.forward, role);
            }
        }
        if let Federation::Tree(tree) = &cfg.federation {
            for (i, n) in tree.peers().iter().enumerate() {
                servers.insert(n.addr, Server::Neighbor(i as u16));
            }
        }
        let reply_hash = ahash::RandomState::with_seeds(rng.next_u64(), rng.next_u64(), 1, 1);
        let mut timers = timers::Timers::default();
        timers.set(Timer::Sweep, now + Self::sweep_period(&cfg));
        let federation = match &cfg.federation {
            Federation::Alone => Strategy::Alone,
            Federation::Tree(neighbors) => {
                let tree = tree::Tree::new(neighbors, cfg.limits.recent_ids, id_hash);
                timers.set(Timer::NeighborExpiry, now + tree.sweep_period());
                timers.set(Timer::Refresh, now + tree.refresh_period());
                Strategy::Tree(tree)
            }
            Federation::Group(cluster) => Strategy::Group(group::Group::new(cluster, shard, now)),
        };
        let mut code_key = [0u8; 32];
        for chunk in code_key.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        let accounts = accounts::Accounts::new(cfg.accounts.clone(), code_key);
        let mut engine = Self {
            shard,
            shards,
            servers,
            federation,
            counters: Arc::new(Counters::default()),
            rng,
            loopback: VecDeque::with_capacity(64),
            clients: clients::Clients::new(shard, &cfg.limits, reply_hash),
            settings: frontend::Settings {
                local: cfg.local,
                cluster_index: cfg.cluster().map(|c| c.me),
                rooms: cfg.rooms,
            },
            channels: channels::Channels::new(shards),
            logins: logins::Logins::default(),
            accounts,
            timers,
            owner_hash,
            cfg,
            #[cfg(debug_assertions)]
            steps: 0,
        };
        let common = Name::from(COMMON);
        engine.clients.directory.insert(common);
        if engine.owner(&common) == shard {
            engine.channels.create(common);
        }
        engine
    }

    /// How often sessions are checked for expiry: a quarter of the user timeout.
    fn sweep_period(cfg: &Config) -> Duration {
        (cfg.user_timeout / 4).clamp(Duration::from_millis(1), Duration::from_secs(1))
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    pub fn census(&self) -> Census {
        let mut census = self.clients.census();
        census.owned_channels = self.channels.owned_count();
        census.held_names = self.logins.len();
        if let Strategy::Group(g) = &self.federation {
            census.group_rooms = g.room_count();
            census.group_held = g.held_datagrams();
        }
        census
    }

    /// Whether `addr` has a session of any protocol on this shard.
    pub fn has_session(&self, addr: &SocketAddr) -> bool {
        Protocol::ALL.iter().any(|&p| {
            self.clients
                .sessions
                .find(&(Endpoint::Udp(*addr), p))
                .is_some()
        })
    }

    /// The shard that owns `channel`: in a cluster, shard 0 owns every room ([`group`]).
    pub fn owner(&self, channel: &Name) -> u16 {
        if self.cfg.cluster().is_some() {
            return 0;
        }
        (self.owner_hash.hash_one(channel) % self.shards as u64) as u16
    }

    /// When `handle_timeout` should next be called.
    pub fn next_timeout(&self) -> Duration {
        self.timers.next().unwrap_or(Duration::MAX)
    }

    /// One datagram received on this shard's socket.
    pub fn handle_datagram(
        &mut self,
        now: Duration,
        src: SocketAddr,
        buf: &[u8],
        out: &mut Outbox,
    ) {
        self.counters.datagrams_in.inc();
        match self.servers.get(&src).copied() {
            None => {}
            Some(Server::Peer(peer)) => {
                self.peer_datagram(now, peer, buf, out);
                return self.drain_loopback(now, out);
            }
            Some(Server::Neighbor(n)) => {
                self.neighbor_datagram(n, src, buf, out);
                return self.drain_loopback(now, out);
            }
            // Our own address (spoofed) or a cluster server's bind address: never a client.
            Some(Server::Other) => return self.counters.dropped(DropReason::FromServer),
        }
        let protocol = Protocol::of_datagram(buf);
        self.client_request(now, Endpoint::Udp(src), protocol, buf, out);
        self.drain_loopback(now, out);
    }

    /// A stream connection (a WebSocket) that this shard is home to opened, speaking
    /// `protocol`; the runtime's stream thread sends every event of one connection to the
    /// same shard, in order.
    pub fn stream_opened(
        &mut self,
        now: Duration,
        endpoint: Endpoint,
        protocol: Protocol,
        out: &mut Outbox,
    ) {
        self.open_stream_session(now, (endpoint, protocol), out);
        self.drain_loopback(now, out);
    }

    /// One request (a frame) on a stream connection.
    pub fn stream_request(
        &mut self,
        now: Duration,
        endpoint: Endpoint,
        protocol: Protocol,
        request: &[u8],
        out: &mut Outbox,
    ) {
        self.counters.datagrams_in.inc();
        self.client_request(now, endpoint, protocol, request, out);
        self.drain_loopback(now, out);
    }

    /// A stream connection closed: its session ends.
    pub fn stream_closed(
        &mut self,
        now: Duration,
        endpoint: Endpoint,
        protocol: Protocol,
        out: &mut Outbox,
    ) {
        self.close_stream_session((endpoint, protocol), out);
        self.drain_loopback(now, out);
    }

    /// One message from another shard (or from this one, through the runtime's queues).
    pub fn handle_message(&mut self, now: Duration, msg: ShardMsg, out: &mut Outbox) {
        self.dispatch(now, msg, out);
        self.drain_loopback(now, out);
    }

    /// Runs every timer that is due (see [`timers`]).
    pub fn handle_timeout(&mut self, now: Duration, out: &mut Outbox) {
        for timer in self.timers.take_due(now) {
            match timer {
                Timer::Retransmit => self.group_timeout(now, out),
                Timer::Sweep => {
                    // When more are due than one step handles, go on soon.
                    let period = match self.expire_users(now, out) {
                        true => clients::PACE_TICK,
                        false => Self::sweep_period(&self.cfg),
                    };
                    self.timers.set(Timer::Sweep, now + period);
                    self.counters
                        .sessions
                        .set(self.clients.sessions.len() as u64);
                    self.counters
                        .channels
                        .set(self.channels.owned_count() as u64);
                }
                Timer::Pace => self.pace_answers(now, out),
                Timer::NeighborExpiry | Timer::Refresh => self.tree_timeout(timer, now, out),
            }
        }
        self.drain_loopback(now, out);
    }

    fn dispatch(&mut self, now: Duration, msg: ShardMsg, out: &mut Outbox) {
        match msg {
            ShardMsg::Joined {
                channel,
                session,
                user,
                watches,
            } => self.member_joined(now, channel, session, user, watches, out),
            ShardMsg::Presence {
                channel,
                user,
                change,
            } => self.deliver_presence(channel, user, change, out),
            ShardMsg::Left { channel, session } => self.member_left(channel, session, out),
            ShardMsg::JoinRefused { channel, session } => {
                self.join_refused(now, channel, session, out)
            }
            ShardMsg::Said {
                channel,
                chat,
                session,
            } => self.local_say(channel, chat, session, out),
            ShardMsg::SayRefused { channel, session } => {
                self.say_refused(now, channel, session, out)
            }
            ShardMsg::Who {
                channel,
                session,
                brief,
            } => self.who_names(channel, session, brief, out),
            ShardMsg::WhoNames {
                channel,
                session,
                names,
                brief,
            } => self.answer_who(now, session, (channel, brief), names, 0, out),
            ShardMsg::FromNeighbor { neighbor, s2s } => self.neighbor_s2s(now, neighbor, s2s, out),
            ShardMsg::FromPeer { peer, datagram } => self.peer_message(now, peer, &datagram, out),
            ShardMsg::Deliver {
                channel,
                chat,
                stamp,
            } => self.deliver(now, channel, &chat, stamp, out),
            ShardMsg::ChannelAdded(c) => {
                self.clients.directory.insert(c);
            }
            ShardMsg::ChannelRemoved(c) => {
                if c.as_bytes() != COMMON.as_bytes() {
                    self.clients.directory.remove(&c);
                }
            }
            ShardMsg::NeighborFormat { neighbor, format } => self.set_format(neighbor, format),
            ShardMsg::ClaimName {
                name,
                session,
                claim,
            } => self.name_claimed(name, session, claim, out),
            ShardMsg::NameAnswer {
                name,
                session,
                granted,
            } => self.name_answer(now, session, name, granted, out),
            ShardMsg::ReleaseName { name, session } => self.name_released(name, session),
            ShardMsg::LoggedInElsewhere(session) => self.logged_in_elsewhere(session, out),
        }
    }

    /// Sends `msg` to `shard`; to itself it goes through the loopback queue.
    fn send_to_shard(&mut self, shard: u16, msg: ShardMsg, out: &mut Outbox) {
        if shard == self.shard {
            self.loopback.push_back(msg);
        } else {
            out.queue(shard, msg);
        }
    }

    /// Sends `msg` to the owner of its channel.
    fn send_to_owner(&mut self, msg: ShardMsg, out: &mut Outbox) {
        let Some(channel) = msg.channel() else {
            debug_assert!(false, "{msg:?} has no owner");
            return;
        };
        let owner = self.owner(channel);
        self.send_to_shard(owner, msg, out);
    }

    fn broadcast(&mut self, msg: ShardMsg, out: &mut Outbox) {
        for shard in 0..self.shards {
            self.send_to_shard(shard, msg.clone(), out);
        }
    }

    /// Handles what this shard sent itself; then the timers that follow from state changed in
    /// many places (waiting answers, the cluster's streams) are brought up to date.
    fn drain_loopback(&mut self, now: Duration, out: &mut Outbox) {
        while let Some(msg) = self.loopback.pop_front() {
            self.dispatch(now, msg, out);
        }
        match (self.clients.pacing(), self.timers.get(Timer::Pace)) {
            (true, None) => self.timers.set(Timer::Pace, now + clients::PACE_TICK),
            (false, Some(_)) => self.timers.stop(Timer::Pace),
            _ => {}
        }
        if let Strategy::Group(g) = &self.federation {
            match g.next_timer() {
                Some(at) => self.timers.set(Timer::Retransmit, at),
                None => self.timers.stop(Timer::Retransmit),
            }
        }
        #[cfg(debug_assertions)]
        self.invariants();
    }

    /// What holds after every step (debug builds, so every test and the simulator check it):
    /// nothing left on the loopback, every table within its limit, a timer armed for work that
    /// waits, and, every [`DEEP_CHECK_EVERY`] steps, the census against the limits and each
    /// owned channel's per-shard counts against its members.
    #[cfg(debug_assertions)]
    fn invariants(&mut self) {
        let limits = &self.cfg.limits;
        assert!(self.loopback.is_empty(), "a step left messages to itself");
        assert!(
            self.clients.sessions.len() <= limits.sessions_per_shard,
            "sessions over the limit"
        );
        assert!(
            self.channels.owned_count() <= limits.channels.max(1),
            "owned channels over the limit"
        );
        assert!(
            self.logins.len() <= limits.sessions_per_shard * usize::from(self.shards),
            "held names over the limit"
        );
        assert_eq!(
            self.clients.pacing(),
            self.timers.get(Timer::Pace).is_some(),
            "answers wait exactly when the pace timer is armed"
        );
        assert!(
            self.timers.get(Timer::Sweep).is_some(),
            "the expiry sweep is always armed"
        );
        if let Strategy::Group(g) = &self.federation {
            assert_eq!(
                g.next_timer().is_some(),
                self.timers.get(Timer::Retransmit).is_some(),
                "the cluster's timer is armed exactly when it has one"
            );
        }
        self.steps += 1;
        if self.steps < DEEP_CHECK_EVERY {
            return;
        }
        self.steps = 0;
        if let Err(e) = self.census().check(limits, self.shards) {
            panic!("shard {}: {e}", self.shard);
        }
        assert!(
            self.tree_links_are_owned(),
            "shard {}: a place in the tree for a channel it does not own",
            self.shard
        );
        assert!(
            self.channels.counts_agree(),
            "shard {}: an owned channel's per-shard counts disagree with its members",
            self.shard
        );
    }

    /// This server, a DuckChat neighbor or a cluster server: never sent a reply, which it would
    /// take for a request and answer in turn.
    fn is_server(&self, addr: &SocketAddr) -> bool {
        self.servers.contains_key(addr)
    }

    /// A verbose log line about the group, prefixed `Snn` (the server's index in the cluster)
    /// as the spec's logs are; the runtime adds the time of day.
    fn log_event(&self, out: &mut Outbox, line: std::fmt::Arguments<'_>) {
        if self.cfg.verbose {
            out.log(format_args!("{} {line}", self.settings.prefix()));
        }
    }
}

/// What a server's address is to this one.
#[derive(Debug, Clone, Copy)]
enum Server {
    Neighbor(u16),
    Peer(u16),
    /// This server's own address, or a cluster server's bind address.
    Other,
}
