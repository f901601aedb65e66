//! DuckChat federation, on each channel's owner shard: a tree of neighbors per channel, built
//! by flooding S2S_JOIN, carrying S2S_SAY with random ids, cutting a link that delivers a
//! duplicate (a loop), pruning branches nobody needs, and kept as soft state: joins are
//! refreshed every `refresh`, and a neighbor that has not refreshed a channel within `timeout`
//! is forgotten.

use super::lossy::Lossy;
use super::timers::Timer;
use super::{
    Chat, DropReason, Engine, IdSet, Neighbors, Origin, Outbox, S2s, ShardMsg, Stamp, Strategy,
};
use crate::proto::duckchat::{self, Endian, Inbound, S2sSay, SayLayout};
use crate::proto::{Name, Text};
use ahash::AHashMap;
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::time::Duration;

/// A neighbor in this channel's tree, when it last sent S2S_JOIN for it, and when it last
/// brought a message first.
#[derive(Clone, Copy)]
struct Subscriber {
    neighbor: u16,
    last_join: Duration,
    last_first: Option<Duration>,
}

/// How long a link that brought a message first is kept through loop detection. Two floods at
/// once can each find a different link of one loop redundant; cutting both would split the
/// tree. A link that has just carried one flood's first copy is part of that flood's tree, so
/// a duplicate of the other flood on it does not cut it (it is dropped unanswered, and a cut
/// the neighbor makes is answered with S2S_JOIN), and only links that carry duplicates alone
/// are cut. A neighbor that sends one id twice itself is answered as the spec says. Longer than
/// a flood takes to cross a federation on one network; short enough that a link used now and
/// then still goes.
const IN_USE: Duration = Duration::from_millis(50);

/// A channel's place in the tree.
#[derive(Default)]
pub(super) struct Links {
    /// Whether this server is part of the channel's tree.
    pub(super) subscribed: bool,
    neighbors: SmallVec<[Subscriber; 4]>,
}

impl Links {
    fn record(&mut self, neighbor: u16, now: Duration) {
        match self.neighbors.iter_mut().find(|s| s.neighbor == neighbor) {
            Some(s) => s.last_join = now,
            None => self.neighbors.push(Subscriber {
                neighbor,
                last_join: now,
                last_first: None,
            }),
        }
        debug_assert_eq!(
            self.neighbors
                .iter()
                .filter(|s| s.neighbor == neighbor)
                .count(),
            1,
            "a neighbor subscribed once"
        );
    }

    /// `neighbor` brought a message first, now.
    fn carried(&mut self, neighbor: u16, now: Duration) {
        if let Some(s) = self.neighbors.iter_mut().find(|s| s.neighbor == neighbor) {
            s.last_first = Some(now);
        }
    }

    /// Whether the link to `neighbor` brought a message first within [`IN_USE`].
    fn in_use(&self, neighbor: u16, now: Duration) -> bool {
        self.neighbors.iter().any(|s| {
            s.neighbor == neighbor && s.last_first.is_some_and(|t| now.saturating_sub(t) < IN_USE)
        })
    }

    fn forget(&mut self, neighbor: u16) {
        self.neighbors.retain(|s| s.neighbor != neighbor);
        debug_assert!(self.neighbors.iter().all(|s| s.neighbor != neighbor));
    }

    pub(super) fn is_empty(&self) -> bool {
        self.neighbors.is_empty()
    }
}

/// How one neighbor writes its datagrams: given on the command line, or learned from what it
/// sends (the same on every shard: the shard that learns tells the others). Everything sent
/// to it is written its way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Format {
    pub layout: SayLayout,
    pub endian: Endian,
}

/// The "neighbor" that brings a local user's message first.
const HERE: u16 = u16::MAX;

/// The tree's state on one shard.
pub(super) struct Tree {
    cfg: Neighbors,
    /// Each channel's place in the tree, for channels this shard owns (an entry only while
    /// the channel exists).
    links: AHashMap<Name, Links>,
    /// Each neighbor's [`Format`], by its index.
    formats: Vec<Format>,
    /// Recent S2S_SAY ids, for loop detection.
    seen: IdSet,
    /// Which neighbor brought each of them first ([`HERE`]: a local user's), by ring slot.
    first_from: Box<[u16]>,
    expired: Vec<(Name, u16)>,
}

impl Tree {
    pub(super) fn new(cfg: &Neighbors, recent_ids: usize, id_hash: ahash::RandomState) -> Self {
        let formats = cfg
            .peers()
            .iter()
            .map(|p| Format {
                layout: p.layout.unwrap_or(cfg.say_layout),
                endian: p.endian.unwrap_or_default(),
            })
            .collect();
        let seen = IdSet::new(recent_ids, id_hash);
        Self {
            cfg: cfg.clone(),
            links: AHashMap::new(),
            formats,
            first_from: vec![HERE; seen.capacity()].into_boxed_slice(),
            seen,
            expired: Vec::new(),
        }
    }

    /// How often subscriptions are checked for expiry: a quarter of the timeout.
    pub(super) fn sweep_period(&self) -> Duration {
        (self.cfg.timeout / 4).clamp(Duration::from_millis(1), Duration::from_secs(1))
    }

    pub(super) fn refresh_period(&self) -> Duration {
        self.cfg.refresh
    }

    fn neighbors(&self) -> u16 {
        self.cfg.peers().len() as u16
    }
}

impl Engine {
    fn tree(&self) -> Option<&Tree> {
        match &self.federation {
            Strategy::Tree(t) => Some(t),
            _ => None,
        }
    }

    fn tree_mut(&mut self) -> Option<&mut Tree> {
        match &mut self.federation {
            Strategy::Tree(t) => Some(t),
            _ => None,
        }
    }

    fn neighbor_count(&self) -> u16 {
        self.tree().map_or(0, Tree::neighbors)
    }

    /// The channel's place in the tree, if it has one.
    fn links(&self, name: &Name) -> Option<&Links> {
        self.tree()?.links.get(name)
    }

    fn links_mut(&mut self, name: &Name) -> Option<&mut Links> {
        self.tree_mut()?.links.get_mut(name)
    }

    /// Whether a channel that just got a member should join the tree (it is not in it yet).
    pub(super) fn tree_wants_subscription(&self, name: &Name) -> bool {
        self.tree().is_some() && !self.links(name).is_some_and(|l| l.subscribed)
    }

    /// Whether the federation still needs a channel that has no members (a neighbor is in its
    /// tree).
    pub(super) fn federation_needs(&self, name: &Name) -> bool {
        self.links(name).is_some_and(|l| !l.is_empty())
    }

    /// Whether every channel with a place in the tree is a channel this shard owns (the
    /// invariants of debug builds).
    #[cfg(debug_assertions)]
    pub(super) fn tree_links_are_owned(&self) -> bool {
        self.tree()
            .is_none_or(|t| t.links.keys().all(|n| self.channels.owned.contains_key(n)))
    }

    /// The channel is forgotten (or, `Common`, left with no members): so is its place in the
    /// tree.
    pub(super) fn federation_forget(&mut self, name: &Name) {
        if let Some(tree) = self.tree_mut() {
            tree.links.remove(name);
        }
    }

    /// Joins the channel's tree: S2S_JOIN to every neighbor, each recorded as subscribed
    /// (they will all join in turn). That includes the neighbor whose S2S_JOIN started it, if
    /// one did: the spec forwards a join to the others only, but a neighbor refreshing a
    /// channel we had left would then not know us until our own refresh, and hear nothing
    /// from us meanwhile.
    pub(super) fn subscribe(&mut self, now: Duration, name: Name, out: &mut Outbox) {
        let neighbors = self.neighbor_count();
        if !self.channels.owned.contains_key(&name) {
            return;
        }
        let Some(tree) = self.tree_mut() else {
            return;
        };
        let links = tree.links.entry(name).or_default();
        links.subscribed = true;
        for n in 0..neighbors {
            links.record(n, now);
        }
        for n in 0..neighbors {
            self.send_s2s(
                n,
                Inbound::S2sJoin {
                    channel: name.as_bytes(),
                },
                out,
            );
        }
    }

    /// The neighbors in `channel`'s tree on this shard (its owner has them), for simulations
    /// that check the trees of a federation.
    pub fn tree_links(&self, channel: &Name) -> Option<Vec<SocketAddr>> {
        self.channels.owned.get(channel)?;
        let addrs = self.links(channel).into_iter().flat_map(|l| &l.neighbors);
        Some(addrs.map(|s| self.neighbor_addr(s.neighbor)).collect())
    }

    /// A local user's message: a new id, to every subscribed neighbor, and to local members.
    pub(super) fn tree_say(&mut self, name: Name, chat: Chat, out: &mut Outbox) {
        if !self.channels.owned.contains_key(&name) {
            return;
        }
        let user = Name::truncating(chat.user());
        let text = Text::truncating(chat.text());
        let id = loop {
            let id = self.rng.next_u64();
            match self.tree_mut().map(|t| (t.seen.insert_slot(id), t)) {
                None => break id,
                Some((Ok(slot), tree)) => {
                    tree.first_from[slot] = HERE;
                    break id;
                }
                Some((Err(_), _)) => {}
            }
        };
        self.forward_say(id, name, user, text, None, out);
        let stamp = Stamp {
            id,
            origin: Origin::Here,
        };
        self.fan_out(name, &chat, stamp, out);
    }

    /// Sends the S2S_SAY to every subscribed neighbor except `except`.
    fn forward_say(
        &mut self,
        id: u64,
        name: Name,
        user: Name,
        text: Text,
        except: Option<u16>,
        out: &mut Outbox,
    ) {
        let Some(links) = self.links(&name) else {
            return;
        };
        let targets: SmallVec<[u16; 8]> = links
            .neighbors
            .iter()
            .map(|s| s.neighbor)
            .filter(|&n| Some(n) != except)
            .collect();
        debug_assert!(
            except.is_none_or(|e| !targets.contains(&e)),
            "a SAY back where it came from"
        );
        let say = S2sSay {
            id,
            user: user.as_bytes(),
            channel: name.as_bytes(),
            text: text.as_bytes(),
        };
        for n in targets {
            self.send_s2s(n, Inbound::S2sSay(say), out);
        }
    }

    /// A neighbor's datagram, on the channel's owner.
    pub(super) fn neighbor_s2s(&mut self, now: Duration, from: u16, s2s: S2s, out: &mut Outbox) {
        match s2s {
            S2s::Join { channel: name } => {
                if !self.channels.has_room_for(&name, self.cfg.limits.channels) {
                    return self.counters.dropped(DropReason::ChannelLimit);
                }
                self.ensure_channel(name, out);
                if !self.channels.owned.contains_key(&name) {
                    return;
                }
                let Some(links) = self.links_mut(&name).filter(|l| l.subscribed) else {
                    return self.subscribe(now, name, out);
                };
                let known = links.neighbors.iter().any(|s| s.neighbor == from);
                links.record(from, now);
                if !known {
                    // A link comes back (a refresh after loop detection cut it, or the
                    // neighbor restarted): join back at once, so that it carries messages both
                    // ways now rather than one way until our own refresh. A link that works one
                    // way only can leave a server that no one hears.
                    let join = Inbound::S2sJoin {
                        channel: name.as_bytes(),
                    };
                    self.send_s2s(from, join, out);
                }
            }
            S2s::Leave { channel: name } => {
                let Some(links) = self.links_mut(&name) else {
                    return;
                };
                if links.subscribed && links.in_use(from, now) {
                    // The neighbor cut a link that just carried a flood here: keep it, and
                    // ask for it back (it joins back at once).
                    let join = Inbound::S2sJoin {
                        channel: name.as_bytes(),
                    };
                    return self.send_s2s(from, join, out);
                }
                links.forget(from);
                self.collect(name, out);
            }
            S2s::Say {
                id,
                channel: name,
                user,
                text,
            } => {
                let first = match self.tree_mut().map(|t| (t.seen.insert_slot(id), t)) {
                    Some((Ok(slot), tree)) => {
                        tree.first_from[slot] = from;
                        None
                    }
                    Some((Err(slot), tree)) => Some(tree.first_from[slot]),
                    None => None,
                };
                if let Some(first) = first {
                    // A loop: cut the redundant link on both sides. The sender forgets us when
                    // our S2S_LEAVE arrives; we forget it now. Keeping it would leave a link that
                    // carries messages one way only, and a server whose every link is one-way
                    // reaches no one. A link that another flood is using now (IN_USE) stays,
                    // unanswered: it is not redundant, only crossed by two floods.
                    self.counters.duplicates.inc();
                    let crossed =
                        first != from && self.links(&name).is_some_and(|l| l.in_use(from, now));
                    if crossed {
                        return;
                    }
                    let leave = Inbound::S2sLeave {
                        channel: name.as_bytes(),
                    };
                    self.send_s2s(from, leave, out);
                    if let Some(links) = self.links_mut(&name) {
                        links.forget(from);
                        self.collect(name, out);
                    }
                    return;
                }
                let members = self
                    .channels
                    .owned
                    .get(&name)
                    .is_some_and(|c| !c.members.is_empty());
                let needed = self.links(&name).is_some_and(|l| {
                    l.subscribed && (members || l.neighbors.iter().any(|s| s.neighbor != from))
                });
                if !needed {
                    // Prune: no one here or beyond wants this channel from us.
                    let leave = Inbound::S2sLeave {
                        channel: name.as_bytes(),
                    };
                    self.send_s2s(from, leave, out);
                    if let Some(links) = self.links_mut(&name) {
                        links.forget(from);
                        self.collect(name, out);
                    }
                    return;
                }
                if let Some(links) = self.links_mut(&name) {
                    links.carried(from, now);
                }
                self.forward_say(id, name, user, text, Some(from), out);
                let stamp = Stamp {
                    id,
                    origin: Origin::Unknown,
                };
                self.fan_out(name, &Chat::Short { user, text }, stamp, out);
            }
        }
    }

    /// The tree's timers: expiry of neighbors' subscriptions, and the refresh of ours.
    pub(super) fn tree_timeout(&mut self, timer: Timer, now: Duration, out: &mut Outbox) {
        let Some(tree) = self.tree() else {
            return;
        };
        match timer {
            Timer::NeighborExpiry => {
                let next = now + tree.sweep_period();
                self.timers.set(Timer::NeighborExpiry, next);
                self.expire_neighbors(now, out);
            }
            Timer::Refresh => {
                let next = now + tree.refresh_period();
                self.timers.set(Timer::Refresh, next);
                self.refresh_subscriptions(out);
            }
            _ => {}
        }
    }

    /// Soft state: forget neighbors that have not refreshed a channel within the S2S timeout.
    fn expire_neighbors(&mut self, now: Duration, out: &mut Outbox) {
        let Some(tree) = self.tree_mut() else {
            return;
        };
        let timeout = tree.cfg.timeout;
        let mut expired = std::mem::take(&mut tree.expired);
        for (name, links) in &tree.links {
            for s in &links.neighbors {
                if now.saturating_sub(s.last_join) > timeout {
                    expired.push((*name, s.neighbor));
                }
            }
        }
        for (name, neighbor) in expired.drain(..) {
            self.counters.neighbors_expired.inc();
            if self.cfg.verbose {
                let addr = self.neighbor_addr(neighbor);
                out.log(format_args!(
                    "{} {addr} expired from {name}",
                    self.cfg.local
                ));
            }
            if let Some(links) = self.links_mut(&name) {
                links.forget(neighbor);
                self.collect(name, out);
            }
        }
        if let Some(tree) = self.tree_mut() {
            tree.expired = expired;
        }
    }

    /// Soft state: S2S_JOIN for every subscribed channel to every neighbor.
    fn refresh_subscriptions(&mut self, out: &mut Outbox) {
        let names: Vec<Name> = self
            .tree()
            .into_iter()
            .flat_map(|t| &t.links)
            .filter(|(_, l)| l.subscribed)
            .map(|(n, _)| *n)
            .collect();
        for name in names {
            for n in 0..self.neighbor_count() {
                self.send_s2s(
                    n,
                    Inbound::S2sJoin {
                        channel: name.as_bytes(),
                    },
                    out,
                );
            }
        }
    }

    /// A neighbor's datagram, received on this shard: its format learned, decoded here,
    /// decided by the owner.
    pub(super) fn neighbor_datagram(
        &mut self,
        neighbor: u16,
        src: SocketAddr,
        buf: &[u8],
        out: &mut Outbox,
    ) {
        let Some(format) = self.learn_format(neighbor, buf, out) else {
            return;
        };
        let inbound = match duckchat::decode_inbound(buf, format.layout) {
            Ok(inbound) => inbound,
            Err(_) => return self.counters.decode_errors.inc(),
        };
        let s2s = match inbound {
            Inbound::S2sJoin { channel } => S2s::Join {
                channel: Name::truncating(channel),
            },
            Inbound::S2sLeave { channel } => S2s::Leave {
                channel: Name::truncating(channel),
            },
            Inbound::S2sSay(say) => S2s::Say {
                id: say.id,
                channel: Name::truncating(say.channel),
                user: Name::truncating(say.user),
                text: Text::truncating(say.text),
            },
            _ => return self.counters.dropped(DropReason::FromServer),
        };
        self.counters.s2s_in.inc();
        if self.cfg.verbose {
            self.log_s2s(src, "recv", &inbound, out);
        }
        self.send_to_owner(ShardMsg::FromNeighbor { neighbor, s2s }, out);
    }

    /// How `neighbor` writes, updated from its datagram `buf` where the command line leaves
    /// it open: the byte order of any datagram's type code, and the layout of an S2S_SAY whose
    /// channel this server knows in the other layout and not in the one assumed. A change goes
    /// to every shard.
    fn learn_format(&mut self, neighbor: u16, buf: &[u8], out: &mut Outbox) -> Option<Format> {
        let tree = self.tree()?;
        let peer = *tree.cfg.peers().get(usize::from(neighbor))?;
        let known = tree.formats[usize::from(neighbor)];
        let mut format = known;
        let Some((kind, endian)) = duckchat::type_code_order(buf) else {
            return Some(known);
        };
        if peer.endian.is_none() {
            format.endian = endian;
        }
        if peer.layout.is_none() && kind == duckchat::S2S_SAY {
            let channel_in = |layout| match duckchat::decode_inbound(buf, layout) {
                Ok(Inbound::S2sSay(say)) => {
                    let channel = Name::truncating(say.channel);
                    self.clients.directory.contains(&channel)
                }
                _ => false,
            };
            // The layout it has shown holds while its channels make sense read that way.
            let other = match format.layout {
                SayLayout::UserFirst => SayLayout::ChannelFirst,
                SayLayout::ChannelFirst => SayLayout::UserFirst,
            };
            if !channel_in(format.layout) && channel_in(other) {
                format.layout = other;
            }
        }
        if format != known {
            if self.cfg.verbose {
                out.log(format_args!(
                    "{} {} writes {:?} type codes and {:?} S2S_SAY",
                    self.cfg.local, peer.addr, format.endian, format.layout
                ));
            }
            self.broadcast(ShardMsg::NeighborFormat { neighbor, format }, out);
        }
        Some(format)
    }

    /// Another shard learned how `neighbor` writes.
    pub(super) fn set_format(&mut self, neighbor: u16, format: Format) {
        if let Some(known) = self
            .tree_mut()
            .and_then(|t| t.formats.get_mut(usize::from(neighbor)))
        {
            *known = format;
        }
    }

    fn neighbor_addr(&self, neighbor: u16) -> SocketAddr {
        self.tree()
            .and_then(|t| t.cfg.peers().get(neighbor as usize).map(|p| p.addr))
            .unwrap_or(self.cfg.local)
    }

    /// An S2S datagram to `neighbor`, written its way.
    fn send_s2s(&mut self, neighbor: u16, datagram: Inbound<'_>, out: &mut Outbox) {
        let Some(tree) = self.tree() else {
            return;
        };
        debug_assert!(
            usize::from(neighbor) < tree.cfg.peers().len(),
            "no such neighbor"
        );
        let dst = tree.cfg.peers()[usize::from(neighbor)].addr;
        let format = tree.formats[usize::from(neighbor)];
        if self.cfg.verbose {
            self.log_s2s(dst, "send", &datagram, out);
        }
        self.counters.s2s_out.inc();
        out.send_new(dst, duckchat::S2S_SAY_LEN, |buf| {
            let len = datagram.encode(buf, format.layout)?;
            if format.endian == Endian::Big {
                duckchat::to_big_endian(&mut buf[..len]);
            }
            Ok::<_, duckchat::BufferTooSmall>(len)
        });
    }

    fn log_s2s(&self, peer: SocketAddr, dir: &str, datagram: &Inbound<'_>, out: &mut Outbox) {
        let local = self.cfg.local;
        match *datagram {
            Inbound::S2sJoin { channel } => out.log(format_args!(
                "{local} {peer} {dir} S2S Join {}",
                Lossy(channel)
            )),
            Inbound::S2sLeave { channel } => out.log(format_args!(
                "{local} {peer} {dir} S2S Leave {}",
                Lossy(channel)
            )),
            Inbound::S2sSay(s) => out.log(format_args!(
                "{local} {peer} {dir} S2S say {} {} \"{}\"",
                Lossy(s.user),
                Lossy(s.channel),
                Lossy(s.text)
            )),
            _ => {}
        }
    }
}
