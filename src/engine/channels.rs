//! The owner shard's half: each channel's members (for WHO and to know which shards to fan out
//! to), its life (created by the first join, forgotten when no member and no federation link
//! needs it), and what is said in it, handed to the federation and fanned out. What a
//! federation keeps about a channel (the tree's links, the cluster's rooms) is the federation's
//! own, asked for through [`Engine::federation_needs`].

use super::frontend::{Change, Person};
use super::members::Members;
use super::sessions::SessionId;
use super::{Chat, DropReason, Engine, Origin, Outbox, ShardMsg, Stamp, Strategy, COMMON};
use crate::proto::Name;
use ahash::AHashMap;
use smallvec::SmallVec;

/// A member, as the owner knows it.
#[derive(Clone, Copy)]
pub(super) struct Member {
    person: Person,
    /// Its protocol shows who joins and leaves.
    watches: bool,
}

pub(super) struct Channel {
    /// Every member, by session (which names its home shard): O(1) join, rename and leave at
    /// any size.
    pub(super) members: Members<SessionId, Member>,
    /// Members per home shard: fan-out goes only to shards with members.
    per_shard: SmallVec<[u32; 8]>,
    /// Members that watch presence, per home shard: presence goes only where someone shows it.
    watchers: SmallVec<[u32; 8]>,
}

pub(super) struct Channels {
    pub(super) owned: AHashMap<Name, Channel>,
    shards: u16,
}

impl Channels {
    pub(super) fn new(shards: u16) -> Self {
        Self {
            owned: AHashMap::new(),
            shards,
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
            let mut watchers = counts.clone();
            for (id, member) in c.members.iter() {
                counts[id.home as usize] += 1;
                watchers[id.home as usize] += u32::from(member.watches);
            }
            counts == c.per_shard && watchers == c.watchers
        })
    }

    /// Whether `name` exists or may be created within `limit` channels.
    pub(super) fn has_room_for(&self, name: &Name, limit: usize) -> bool {
        self.owned.contains_key(name) || self.owned.len() < limit
    }

    pub(super) fn create(&mut self, name: Name) {
        let shards = self.shards as usize;
        self.owned.entry(name).or_insert_with(|| Channel {
            members: Members::default(),
            per_shard: SmallVec::from_elem(0, shards),
            watchers: SmallVec::from_elem(0, shards),
        });
    }
}

impl Engine {
    /// Creates the channel if needed and tells every shard's directory about it.
    pub(super) fn ensure_channel(&mut self, name: Name, out: &mut Outbox) {
        if !self.channels.owned.contains_key(&name) {
            self.channels.create(name);
            self.broadcast(ShardMsg::ChannelAdded(name), out);
        }
    }

    pub(super) fn member_joined(
        &mut self,
        now: std::time::Duration,
        name: Name,
        session: SessionId,
        user: Person,
        watches: bool,
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
            // A rename (or a sign-in under the same name).
            let from = std::mem::replace(&mut known.person, user);
            return self.announce(name, user, Change::Renamed { from }, out);
        }
        debug_assert!(session.home < self.shards, "a member's home is a shard");
        channel.members.insert(
            session,
            Member {
                person: user,
                watches,
            },
        );
        channel.per_shard[session.home as usize] += 1;
        channel.watchers[session.home as usize] += u32::from(watches);
        debug_assert!(
            channel.watchers[session.home as usize] <= channel.per_shard[session.home as usize],
            "more watchers than members on a shard"
        );
        debug_assert!(
            channel.per_shard.iter().map(|&n| n as usize).sum::<usize>() == channel.members.len(),
            "per-shard counts add up to the members"
        );
        self.announce(name, user, Change::Joined, out);
        if self.tree_wants_subscription(&name) {
            self.subscribe(now, name, out);
        }
    }

    /// Presence: to every shard with a member that watches it.
    fn announce(&mut self, name: Name, user: Person, change: Change, out: &mut Outbox) {
        let Some(channel) = self.channels.owned.get(&name) else {
            return;
        };
        let shards: SmallVec<[u16; 16]> = (0..self.shards)
            .filter(|&s| channel.watchers[s as usize] > 0)
            .collect();
        debug_assert!(
            shards.iter().all(|&s| s < self.shards),
            "presence to no shard"
        );
        for shard in shards {
            let msg = ShardMsg::Presence {
                channel: name,
                user,
                change,
            };
            self.send_to_shard(shard, msg, out);
        }
    }

    pub(super) fn member_left(&mut self, name: Name, session: SessionId, out: &mut Outbox) {
        let Some(channel) = self.channels.owned.get_mut(&name) else {
            return;
        };
        if let Some(member) = channel.members.remove(&session) {
            debug_assert!(
                channel.per_shard[session.home as usize] > 0,
                "a member uncounted"
            );
            channel.per_shard[session.home as usize] -= 1;
            channel.watchers[session.home as usize] -= u32::from(member.watches);
            debug_assert!(
                channel.members.get(&session).is_none(),
                "a member left twice"
            );
            self.announce(name, member.person, Change::Left, out);
        }
        self.collect(name, out);
    }

    /// Forgets the channel once no member and no neighbor needs it (`Common` stays).
    pub(super) fn collect(&mut self, name: Name, out: &mut Outbox) {
        let Some(channel) = self.channels.owned.get(&name) else {
            return;
        };
        if !channel.members.is_empty() || self.federation_needs(&name) {
            return;
        }
        self.federation_forget(&name);
        if name.as_bytes() != COMMON.as_bytes() {
            self.channels.owned.remove(&name);
            self.broadcast(ShardMsg::ChannelRemoved(name), out);
        }
    }

    /// A local user's message (from `session`), on the channel's owner: handed to the
    /// federation, which delivers it here when its order allows.
    pub(super) fn local_say(
        &mut self,
        name: Name,
        chat: Chat,
        session: super::SessionId,
        out: &mut Outbox,
    ) {
        match self.federation {
            Strategy::Alone => {
                let stamp = Stamp {
                    id: self.rng.next_u64(),
                    origin: Origin::Here,
                };
                self.fan_out(name, &chat, stamp, out)
            }
            Strategy::Tree(_) => self.tree_say(name, chat, out),
            Strategy::Group(_) => self.group_say(name, chat, session, out),
        }
    }

    /// Hands the message to every shard that is home to a member.
    pub(super) fn fan_out(&mut self, name: Name, chat: &Chat, stamp: Stamp, out: &mut Outbox) {
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
                    stamp,
                },
                out,
            );
        }
    }

    /// WHO: the channel's members, sorted, sent to the asking user's home shard, which
    /// answers (the owner never sends to a client). A channel removed since its home shard saw
    /// it in the directory gets no answer.
    pub(super) fn who_names(
        &mut self,
        name: Name,
        session: SessionId,
        brief: bool,
        out: &mut Outbox,
    ) {
        let Some(channel) = self.channels.owned.get(&name) else {
            return;
        };
        let mut names: Vec<Person> = channel.members.values().map(|m| m.person).collect();
        names.sort_unstable();
        let msg = ShardMsg::WhoNames {
            channel: name,
            session,
            names: names.into(),
            brief,
        };
        self.send_to_shard(session.home, msg, out);
    }
}
