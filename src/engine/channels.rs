//! The owner shard's half: each channel's members (for WHO and to know which shards to fan
//! out to) and its DuckChat federation tree: join flooding, say forwarding with random ids,
//! loop detection, pruning and soft state (`shared/spec/duckchat.md`, "Federation").

use super::lossy::Lossy;
use super::members::Members;
use super::sessions::SessionId;
use super::{Chat, Config, DropReason, Engine, IdSet, Outbox, S2s, ShardMsg, COMMON};
use crate::proto::duckchat::{self, Inbound, S2sSay};
use crate::proto::{Name, Text};
use ahash::AHashMap;
use smallvec::SmallVec;
use std::net::SocketAddr;
use std::time::Duration;

/// A neighbor in this channel's tree, and when it last sent S2S_JOIN for it.
#[derive(Clone, Copy)]
struct Subscriber {
    neighbor: u16,
    last_join: Duration,
}

struct Channel {
    /// Every member's user name, by session (which names its home shard): O(1) join, rename
    /// and leave at any size.
    members: Members<SessionId, Name>,
    /// Members per home shard: fan-out goes only to shards with members.
    per_shard: SmallVec<[u32; 8]>,
    /// Whether this server is part of the channel's tree.
    subscribed: bool,
    neighbors: SmallVec<[Subscriber; 4]>,
}

impl Channel {
    fn record(&mut self, neighbor: u16, now: Duration) {
        match self.neighbors.iter_mut().find(|s| s.neighbor == neighbor) {
            Some(s) => s.last_join = now,
            None => self.neighbors.push(Subscriber {
                neighbor,
                last_join: now,
            }),
        }
    }

    fn forget(&mut self, neighbor: u16) {
        self.neighbors.retain(|s| s.neighbor != neighbor);
    }

    fn unused(&self) -> bool {
        self.members.is_empty() && self.neighbors.is_empty()
    }
}

pub(super) struct Channels {
    owned: AHashMap<Name, Channel>,
    seen: IdSet,
    shards: u16,
    expired: Vec<(Name, u16)>,
}

impl Channels {
    pub(super) fn new(cfg: &Config, id_hash: ahash::RandomState, shards: u16) -> Self {
        Self {
            owned: AHashMap::new(),
            seen: IdSet::new(cfg.limits.recent_ids, id_hash),
            shards,
            expired: Vec::new(),
        }
    }

    pub(super) fn owned_count(&self) -> usize {
        self.owned.len()
    }

    /// Every member of every channel this shard owns.
    pub(super) fn members(&self) -> impl Iterator<Item = (Name, SessionId)> + '_ {
        self.owned
            .iter()
            .flat_map(|(name, c)| c.members.iter().map(|&(id, _)| (*name, id)))
    }

    /// Whether each channel's per-shard counts match its members.
    pub(super) fn counts_agree(&self) -> bool {
        self.owned.values().all(|c| {
            let mut counts: SmallVec<[u32; 8]> = SmallVec::from_elem(0, c.per_shard.len());
            for (id, _) in c.members.iter() {
                counts[id.home as usize] += 1;
            }
            counts == c.per_shard
        })
    }

    /// Whether `name` exists or may be created within `limit` channels.
    fn has_room_for(&self, name: &Name, limit: usize) -> bool {
        self.owned.contains_key(name) || self.owned.len() < limit
    }

    pub(super) fn create(&mut self, name: Name) {
        let shards = self.shards as usize;
        self.owned.entry(name).or_insert_with(|| Channel {
            members: Members::default(),
            per_shard: SmallVec::from_elem(0, shards),
            subscribed: false,
            neighbors: SmallVec::new(),
        });
    }
}

impl Engine {
    /// Creates the channel if needed and tells every shard's directory about it.
    fn ensure_channel(&mut self, name: Name, out: &mut Outbox) {
        if !self.channels.owned.contains_key(&name) {
            self.channels.create(name);
            self.broadcast(ShardMsg::ChannelAdded(name), out);
        }
    }

    pub(super) fn member_joined(
        &mut self,
        now: Duration,
        name: Name,
        session: SessionId,
        user: Name,
        out: &mut Outbox,
    ) {
        if !self.channels.has_room_for(&name, self.cfg.limits.channels) {
            // Home shards check the limit against their directory first; this catches the
            // joins that raced ahead of it, and the home shard undoes the join.
            self.counters.dropped(DropReason::ChannelLimit);
            let msg = ShardMsg::JoinRefused {
                channel: name,
                session,
            };
            return self.send_to_shard(session.home, msg, out);
        }
        self.ensure_channel(name, out);
        let Some(channel) = self.channels.owned.get_mut(&name) else {
            return;
        };
        if let Some(known) = channel.members.get_mut(&session) {
            *known = user; // a rename
            return;
        }
        channel.members.insert(session, user);
        channel.per_shard[session.home as usize] += 1;
        if !channel.subscribed {
            self.subscribe(now, name, None, out);
        }
    }

    pub(super) fn member_left(&mut self, name: Name, session: SessionId, out: &mut Outbox) {
        let Some(channel) = self.channels.owned.get_mut(&name) else {
            return;
        };
        if channel.members.remove(&session).is_some() {
            channel.per_shard[session.home as usize] -= 1;
        }
        self.collect(name, out);
    }

    /// Joins the channel's tree: S2S_JOIN to every neighbor but `from`, each recorded as
    /// subscribed (they will all join in turn), and `from` recorded as well.
    fn subscribe(&mut self, now: Duration, name: Name, from: Option<u16>, out: &mut Outbox) {
        let Some(channel) = self.channels.owned.get_mut(&name) else {
            return;
        };
        channel.subscribed = true;
        for n in 0..self.cfg.neighbors.len() as u16 {
            channel.record(n, now);
        }
        for n in 0..self.cfg.neighbors.len() as u16 {
            if Some(n) != from {
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

    /// Leaves the tree and forgets the channel once no member and no neighbor needs it.
    fn collect(&mut self, name: Name, out: &mut Outbox) {
        let Some(channel) = self.channels.owned.get_mut(&name) else {
            return;
        };
        if !channel.unused() {
            return;
        }
        channel.subscribed = false;
        if name.as_bytes() != COMMON.as_bytes() {
            self.channels.owned.remove(&name);
            self.broadcast(ShardMsg::ChannelRemoved(name), out);
        }
    }

    pub(super) fn local_say(&mut self, now: Duration, name: Name, chat: Chat, out: &mut Outbox) {
        if self.group.is_some() {
            return self.group_say(now, name, chat, out);
        }
        if !self.channels.owned.contains_key(&name) {
            return;
        }
        let user = Name::truncating(chat.user());
        let text = Text::truncating(chat.text());
        let id = loop {
            let id = self.rng.next_u64();
            if self.channels.seen.insert(id) {
                break id;
            }
        };
        self.forward_say(id, name, user, text, None, out);
        self.fan_out(name, &chat, out);
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
        let Some(channel) = self.channels.owned.get(&name) else {
            return;
        };
        let targets: SmallVec<[u16; 8]> = channel
            .neighbors
            .iter()
            .map(|s| s.neighbor)
            .filter(|&n| Some(n) != except)
            .collect();
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

    /// Hands the message to every shard that is home to a member.
    pub(super) fn fan_out(&mut self, name: Name, chat: &Chat, out: &mut Outbox) {
        let Some(channel) = self.channels.owned.get(&name) else {
            return;
        };
        let shards: SmallVec<[u16; 16]> = (0..self.shards)
            .filter(|&s| channel.per_shard[s as usize] > 0)
            .collect();
        for shard in shards {
            self.send_to_shard(
                shard,
                ShardMsg::Deliver {
                    channel: name,
                    chat: chat.clone(),
                },
                out,
            );
        }
    }

    pub(super) fn neighbor_s2s(&mut self, now: Duration, from: u16, s2s: S2s, out: &mut Outbox) {
        match s2s {
            S2s::Join { channel: name } => {
                if !self.channels.has_room_for(&name, self.cfg.limits.channels) {
                    return self.counters.dropped(DropReason::ChannelLimit);
                }
                self.ensure_channel(name, out);
                let Some(channel) = self.channels.owned.get_mut(&name) else {
                    return;
                };
                if channel.subscribed {
                    channel.record(from, now);
                } else {
                    self.subscribe(now, name, Some(from), out);
                }
            }
            S2s::Leave { channel: name } => {
                if let Some(channel) = self.channels.owned.get_mut(&name) {
                    channel.forget(from);
                    self.collect(name, out);
                }
            }
            S2s::Say {
                id,
                channel: name,
                user,
                text,
            } => {
                if !self.channels.seen.insert(id) {
                    // A loop: cut the redundant link.
                    self.counters.duplicates.inc();
                    return self.send_s2s(
                        from,
                        Inbound::S2sLeave {
                            channel: name.as_bytes(),
                        },
                        out,
                    );
                }
                let needed = self.channels.owned.get(&name).is_some_and(|c| {
                    c.subscribed
                        && (!c.members.is_empty() || c.neighbors.iter().any(|s| s.neighbor != from))
                });
                if !needed {
                    // Prune: no one here or beyond wants this channel from us.
                    self.send_s2s(
                        from,
                        Inbound::S2sLeave {
                            channel: name.as_bytes(),
                        },
                        out,
                    );
                    if let Some(channel) = self.channels.owned.get_mut(&name) {
                        channel.forget(from);
                        self.collect(name, out);
                    }
                    return;
                }
                self.forward_say(id, name, user, text, Some(from), out);
                self.fan_out(name, &Chat::Short { user, text }, out);
            }
        }
    }

    /// WHO: the channel's members, sorted, sent to the asking user's home shard, which
    /// answers (the owner never sends to a client). A channel removed since its home shard saw
    /// it in the directory gets no answer.
    pub(super) fn who_names(&mut self, name: Name, session: SessionId, out: &mut Outbox) {
        let Some(channel) = self.channels.owned.get(&name) else {
            return;
        };
        let mut names: Vec<Name> = channel.members.values().copied().collect();
        names.sort_unstable();
        let msg = ShardMsg::WhoNames {
            channel: name,
            session,
            names: names.into(),
        };
        self.send_to_shard(session.home, msg, out);
    }

    /// Soft state: forget neighbors that have not refreshed a channel within the S2S timeout.
    pub(super) fn expire_neighbors(&mut self, now: Duration, out: &mut Outbox) {
        let timeout = self.cfg.s2s_timeout;
        let mut expired = std::mem::take(&mut self.channels.expired);
        for (name, channel) in &self.channels.owned {
            for s in &channel.neighbors {
                if now.saturating_sub(s.last_join) > timeout {
                    expired.push((*name, s.neighbor));
                }
            }
        }
        for (name, neighbor) in expired.drain(..) {
            self.counters.neighbors_expired.inc();
            if self.cfg.verbose {
                out.log(format_args!(
                    "{} {} expired from {}",
                    self.cfg.local,
                    self.neighbor_addr(neighbor),
                    name
                ));
            }
            if let Some(channel) = self.channels.owned.get_mut(&name) {
                channel.forget(neighbor);
                self.collect(name, out);
            }
        }
        self.channels.expired = expired;
    }

    /// Soft state: S2S_JOIN for every subscribed channel to every neighbor.
    pub(super) fn refresh_subscriptions(&mut self, out: &mut Outbox) {
        let names: Vec<Name> = self
            .channels
            .owned
            .iter()
            .filter(|(_, c)| c.subscribed)
            .map(|(n, _)| *n)
            .collect();
        for name in names {
            for n in 0..self.cfg.neighbors.len() as u16 {
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

    /// A neighbor's datagram, received on this shard: decoded here, decided by the owner.
    pub(super) fn neighbor_datagram(
        &mut self,
        neighbor: u16,
        src: SocketAddr,
        inbound: Inbound<'_>,
        out: &mut Outbox,
    ) {
        self.counters.s2s_in.inc();
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
            _ => return,
        };
        if self.cfg.verbose {
            self.log_s2s(src, "recv", &inbound, out);
        }
        self.send_to_owner(ShardMsg::FromNeighbor { neighbor, s2s }, out);
    }

    fn send_s2s(&mut self, neighbor: u16, datagram: Inbound<'_>, out: &mut Outbox) {
        let dst = self.neighbor_addr(neighbor);
        if self.cfg.verbose {
            self.log_s2s(dst, "send", &datagram, out);
        }
        self.counters.s2s_out.inc();
        let layout = self.cfg.say_layout;
        out.send_new(dst, duckchat::S2S_SAY_LEN, |buf| {
            datagram.encode(buf, layout)
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
