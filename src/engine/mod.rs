//! The per-shard state machine, sans I/O: `handle_datagram`, `handle_message` and
//! `handle_timeout` update state and write what must happen into an [`Outbox`]. It never calls
//! the OS and never reads the clock, so the same code runs under the real runtime, under a
//! deterministic simulation and in benchmarks.
//!
//! Where state lives (`shared/design.md`):
//! - the **home shard** of a client (the shard the kernel hands its datagrams to) owns its
//!   session and the channel's *local member list* for the members it is home to ([`clients`]);
//! - the **owner shard** of a channel (`hash(channel) % shards`) owns what is decided once per
//!   channel: the full member list (for WHO), which shards have members, the federation tree and
//!   the loop-detection ids ([`channels`]);
//! - every shard keeps a replica of the channel directory (names only, updated by the owners
//!   when a channel appears or disappears), so LIST and "No channel by the name" stay local.
//!
//! Shards exchange [`ShardMsg`]s: small values that travel through bounded queues (only a long
//! text-protocol line points to the heap, see [`Chat`]).
//!
//! Two client protocols share the port ([`clients`] for DuckChat, [`text_clients`] for text
//! lines) and the channels; federation is DuckChat's tree of neighbors ([`channels`]) or a
//! static [`group`] with ordered multicast.

mod channels;
mod chat;
mod clients;
mod counters;
pub mod group;
mod idset;
mod outbox;
mod text_clients;

pub use chat::Chat;
pub use counters::{Counter, Counters, DropReason};
pub use group::{Cluster, Member, Order, MAX_SERVERS};
pub use idset::IdSet;
pub use outbox::{Outbox, PayloadId, Send};

use crate::proto::duckchat::{self, Inbound, SayLayout};
use crate::proto::{text, Name, Text};
use crate::rng::Rng;
use ahash::AHashMap;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// The one channel that exists from start-up and is never deleted.
pub const COMMON: &str = "Common";

/// Bounds on everything the network can make the engine remember.
#[derive(Debug, Clone)]
pub struct Limits {
    pub sessions_per_shard: usize,
    pub channels_per_user: usize,
    pub channels_per_shard: usize,
    /// How many recent S2S_SAY ids each owner shard remembers.
    pub recent_ids: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            sessions_per_shard: 250_000,
            channels_per_user: 256,
            channels_per_shard: 100_000,
            recent_ids: 1 << 16,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    /// This server's address, as neighbors and log lines know it.
    pub local: SocketAddr,
    pub neighbors: Vec<SocketAddr>,
    pub user_timeout: Duration,
    pub s2s_refresh: Duration,
    pub s2s_timeout: Duration,
    pub say_layout: SayLayout,
    /// Course-format log lines into [`Outbox::log_text`].
    pub verbose: bool,
    /// Text-protocol rooms are 1 to `rooms`.
    pub rooms: u32,
    /// Group federation: this server is one of a static cluster (then `neighbors` is empty).
    pub cluster: Option<Cluster>,
    pub limits: Limits,
    /// Seeds of the channel-ownership hash: the same on every shard of one server.
    pub hash_seeds: [u64; 4],
}

impl Config {
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            neighbors: Vec::new(),
            user_timeout: Duration::from_secs(120),
            s2s_refresh: Duration::from_secs(60),
            s2s_timeout: Duration::from_secs(120),
            say_layout: SayLayout::UserFirst,
            verbose: false,
            rooms: 10,
            cluster: None,
            limits: Limits::default(),
            hash_seeds: [0x5eed, 1, 2, 3],
        }
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
        client: SocketAddr,
        user: Name,
        home: u16,
    },
    /// Home -> owner: a local user left, logged out or expired.
    Left {
        channel: Name,
        client: SocketAddr,
        home: u16,
    },
    /// Home -> owner: a local user said something.
    Said {
        channel: Name,
        chat: Chat,
    },
    /// Home -> owner: answer WHO to this client.
    Who {
        channel: Name,
        client: SocketAddr,
    },
    /// Receiving shard -> owner: a neighbor's datagram.
    FromNeighbor {
        neighbor: u16,
        s2s: S2s,
    },
    /// Receiving shard -> owner: a datagram from another server of the cluster.
    FromPeer {
        room: Name,
        peer: u16,
        datagram: Arc<[u8]>,
    },
    /// Owner -> every shard with members: deliver this to your local members.
    Deliver {
        channel: Name,
        chat: Chat,
    },
    /// Owner -> every shard: directory updates.
    ChannelAdded(Name),
    ChannelRemoved(Name),
}

impl ShardMsg {
    /// The channel a message is about: it decides the owner shard.
    fn channel(&self) -> &Name {
        match self {
            ShardMsg::Joined { channel, .. }
            | ShardMsg::Left { channel, .. }
            | ShardMsg::Said { channel, .. }
            | ShardMsg::Who { channel, .. }
            | ShardMsg::Deliver { channel, .. }
            | ShardMsg::ChannelAdded(channel)
            | ShardMsg::ChannelRemoved(channel)
            | ShardMsg::FromPeer { room: channel, .. } => channel,
            ShardMsg::FromNeighbor { s2s, .. } => match s2s {
                S2s::Join { channel } | S2s::Leave { channel } | S2s::Say { channel, .. } => {
                    channel
                }
            },
        }
    }
}

pub struct Engine {
    shard: u16,
    shards: u16,
    cfg: Arc<Config>,
    owner_hash: ahash::RandomState,
    neighbor_index: AHashMap<SocketAddr, u16>,
    /// Servers of the cluster by forwarding address (the source of their datagrams).
    peer_index: AHashMap<SocketAddr, u16>,
    group: Option<group::Group>,
    counters: Arc<Counters>,
    rng: Rng,
    /// Messages this shard sends to itself, handled after the current event (FIFO like a queue).
    loopback: VecDeque<ShardMsg>,
    clients: clients::Clients,
    channels: channels::Channels,
    next_refresh: Duration,
    next_sweep: Duration,
    /// Set while handling a datagram that must not be answered with an error.
    mute_errors: bool,
}

impl Engine {
    /// Shard `shard` of `shards`; `seed` feeds the S2S id generator (use OS randomness in production).
    pub fn new(shard: u16, shards: u16, cfg: Arc<Config>, seed: u64, now: Duration) -> Self {
        assert!(shard < shards, "shard {shard} of {shards}");
        let [a, b, c, d] = cfg.hash_seeds;
        let owner_hash = ahash::RandomState::with_seeds(a, b, c, d);
        let mut rng = Rng::new(seed);
        let id_hash = ahash::RandomState::with_seeds(rng.next_u64(), rng.next_u64(), 0, 0);
        let neighbor_index = cfg
            .neighbors
            .iter()
            .enumerate()
            .map(|(i, &a)| (a, i as u16))
            .collect();
        let peer_index = cfg
            .cluster
            .iter()
            .flat_map(|c| {
                let me = c.me as usize;
                c.members
                    .iter()
                    .enumerate()
                    .filter(move |&(i, _)| i != me)
                    .map(|(i, m)| (m.forward, i as u16))
            })
            .collect();
        let mut engine = Self {
            shard,
            shards,
            neighbor_index,
            peer_index,
            group: cfg.cluster.as_ref().map(group::Group::new),
            counters: Arc::new(Counters::default()),
            rng,
            loopback: VecDeque::with_capacity(64),
            clients: clients::Clients::default(),
            channels: channels::Channels::new(&cfg, id_hash, shards),
            next_refresh: now + cfg.s2s_refresh,
            next_sweep: now + Self::sweep_period(&cfg),
            mute_errors: false,
            owner_hash,
            cfg,
        };
        let common = Name::from(COMMON);
        engine.clients.directory.insert(common);
        if engine.owner(&common) == shard {
            engine.channels.create(common);
        }
        engine
    }

    fn sweep_period(cfg: &Config) -> Duration {
        (cfg.user_timeout.min(cfg.s2s_timeout) / 4)
            .clamp(Duration::from_millis(1), Duration::from_secs(1))
    }

    pub fn counters(&self) -> &Arc<Counters> {
        &self.counters
    }

    /// The shard that owns `channel`.
    pub fn owner(&self, channel: &Name) -> u16 {
        (self.owner_hash.hash_one(channel) % self.shards as u64) as u16
    }

    /// When `handle_timeout` should next be called.
    pub fn next_timeout(&self) -> Duration {
        let retransmit = self.group.as_ref().and_then(|g| g.next_timer());
        self.next_refresh
            .min(self.next_sweep)
            .min(retransmit.unwrap_or(Duration::MAX))
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
        // Outside a cluster the map is empty: skip hashing the address on every datagram.
        if let Some(&peer) = (!self.peer_index.is_empty())
            .then(|| self.peer_index.get(&src))
            .flatten()
        {
            self.peer_datagram(peer, buf, out);
            return self.drain_loopback(now, out);
        }
        if text::is_text(buf) {
            self.text_request(now, src, buf, out);
            return self.drain_loopback(now, out);
        }
        // A TXT_ERROR another server sent us reads as a LEAVE request (type 3, longer than its
        // struct); answering it with an error of our own would start an endless ping-pong
        // between two servers (one spoofed datagram is enough). Such datagrams get no error.
        self.mute_errors = buf.len() == duckchat::TXT_ERROR_LEN
            && duckchat::type_code(buf) == Some(duckchat::TXT_ERROR);
        match duckchat::decode_inbound(buf, self.cfg.say_layout) {
            Ok(inbound) => match self.neighbor_index.get(&src) {
                Some(&n) if is_s2s(&inbound) => self.neighbor_datagram(n, src, inbound, out),
                _ if is_s2s(&inbound) => self.counters.dropped(DropReason::NotNeighbor),
                _ => self.client_request(now, src, inbound, out),
            },
            Err(duckchat::DecodeError::UnknownType(_)) => {
                self.counters.decode_errors.inc();
                self.unknown_command(now, src, out);
            }
            Err(_) => self.counters.decode_errors.inc(),
        }
        self.drain_loopback(now, out);
    }

    /// One message from another shard (or from this one, through the runtime's queues).
    pub fn handle_message(&mut self, now: Duration, msg: ShardMsg, out: &mut Outbox) {
        self.dispatch(now, msg, out);
        self.drain_loopback(now, out);
    }

    /// Timers: user expiry, neighbor expiry, S2S_JOIN refresh, group retransmissions.
    pub fn handle_timeout(&mut self, now: Duration, out: &mut Outbox) {
        self.group_timeout(now, out);
        if now >= self.next_sweep {
            self.next_sweep = now + Self::sweep_period(&self.cfg);
            self.expire_users(now, out);
            self.expire_neighbors(now, out);
        }
        if now >= self.next_refresh {
            self.next_refresh = now + self.cfg.s2s_refresh;
            self.refresh_subscriptions(out);
        }
        self.drain_loopback(now, out);
    }

    fn dispatch(&mut self, now: Duration, msg: ShardMsg, out: &mut Outbox) {
        match msg {
            ShardMsg::Joined {
                channel,
                client,
                user,
                home,
            } => self.member_joined(now, channel, client, user, home, out),
            ShardMsg::Left {
                channel,
                client,
                home,
            } => self.member_left(channel, client, home, out),
            ShardMsg::Said { channel, chat } => self.local_say(now, channel, chat, out),
            ShardMsg::Who { channel, client } => self.answer_who(channel, client, out),
            ShardMsg::FromNeighbor { neighbor, s2s } => self.neighbor_s2s(now, neighbor, s2s, out),
            ShardMsg::FromPeer {
                room,
                peer,
                datagram,
            } => self.peer_message(now, peer, room, datagram, out),
            ShardMsg::Deliver { channel, chat } => self.deliver(channel, &chat, out),
            ShardMsg::ChannelAdded(c) => {
                self.clients.directory.insert(c);
            }
            ShardMsg::ChannelRemoved(c) => {
                if c.as_bytes() != COMMON.as_bytes() {
                    self.clients.directory.remove(&c);
                }
            }
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
        let owner = self.owner(msg.channel());
        self.send_to_shard(owner, msg, out);
    }

    fn broadcast(&mut self, msg: ShardMsg, out: &mut Outbox) {
        for shard in 0..self.shards {
            self.send_to_shard(shard, msg.clone(), out);
        }
    }

    fn drain_loopback(&mut self, now: Duration, out: &mut Outbox) {
        while let Some(msg) = self.loopback.pop_front() {
            self.dispatch(now, msg, out);
        }
    }

    /// A DuckChat neighbor or a cluster server: never answered with an error, which it would
    /// take for a request and answer in turn.
    fn is_server(&self, addr: &SocketAddr) -> bool {
        self.neighbor_index.contains_key(addr) || self.peer_index.contains_key(addr)
    }

    fn neighbor_addr(&self, neighbor: u16) -> SocketAddr {
        self.cfg.neighbors[neighbor as usize]
    }

    /// A verbose log line about a text client or the group, prefixed `Snn` (the server's index
    /// in the cluster) as the spec's logs are; the runtime adds the time of day.
    fn log_event(&self, out: &mut Outbox, line: std::fmt::Arguments<'_>) {
        if !self.cfg.verbose {
            return;
        }
        match &self.cfg.cluster {
            Some(c) => out.log(format_args!("S{:02} {line}", c.me + 1)),
            None => out.log(format_args!("{} {line}", self.cfg.local)),
        }
    }
}

fn is_s2s(inbound: &Inbound<'_>) -> bool {
    matches!(
        inbound,
        Inbound::S2sJoin { .. } | Inbound::S2sLeave { .. } | Inbound::S2sSay(_)
    )
}

/// Names and texts in log lines: lossy UTF-8, as the course servers print them.
struct Lossy<'a>(&'a [u8]);

impl std::fmt::Display for Lossy<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&String::from_utf8_lossy(self.0), f)
    }
}
