//! Group federation (`docs/cluster.md`): a static cluster of servers, each a member of every
//! room, with no central sequencer. The origin of a message sends it straight to every other
//! server; how the servers order what they receive is the [`Order`].
//!
//! Layers:
//! - one reliable in-order [`stream`] to and from every other server, for all rooms, so that
//!   acknowledgements ride on the frames going the other way and one step's frames share
//!   datagrams; messages longer than a datagram travel as fragments;
//! - membership ([`link`]): each server runs as an incarnation chosen at start-up; a peer
//!   silent for longer than the peer timeout is excluded, a restarted one (a new incarnation) is
//!   excluded as the old and admitted as the new; an excluded server that is in fact alive is
//!   told so and starts afresh as a new incarnation;
//! - when a server is excluded, the survivors pass its last frames on to one another ([`relay`])
//!   so that what it started is delivered by every survivor or by none;
//! - `unordered` and `fifo` deliver what arrives, at once: each origin's frames arrive in the
//!   order it sent them, so both are FIFO here; `total` runs ISIS ([`total`]) on top.
//!
//! All of it lives on shard 0 (the owner of every room in a cluster), so the ordering state is
//! single-threaded by construction: the shard that receives a server's datagram hands it there,
//! while deliveries to members still fan out from every shard.

mod link;
mod relay;
mod stream;
mod total;

pub use total::MAX_SERVERS;

/// Early datagrams the streams of one server hold at most, over all its peers.
pub const MAX_HELD_DATAGRAMS: usize = MAX_SERVERS * stream::HOLD as usize;

use super::{
    Chat, DropReason, Engine, Lossy, Origin, Outbox, SessionId, ShardMsg, Stamp, Strategy,
};
use crate::proto::group::{self, frames_of, Frame, Header, Key, Multicast, MAX_DATAGRAM};
use crate::proto::{text, Name};
use ahash::AHashMap;
use link::{Link, State};
use relay::Relay;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use total::{MsgId, TotalOrder};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    Unordered,
    Fifo,
    Total,
}

impl Order {
    pub fn name(self) -> &'static str {
        match self {
            Order::Unordered => "unordered",
            Order::Fifo => "fifo",
            Order::Total => "total",
        }
    }
}

/// One line of the cluster file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    /// Where the other servers send to (a proxy may sit there).
    pub forward: SocketAddr,
    /// Where the server listens and sends from; its clients use it.
    pub bind: SocketAddr,
}

#[derive(Debug, Clone)]
pub struct Cluster {
    pub members: Vec<Member>,
    /// This server's position in `members` (0-based; the file and the logs count from 1).
    pub me: u16,
    pub order: Order,
    /// This run of the server: chosen at start-up, larger than any earlier run's (the clock),
    /// never 0.
    pub incarnation: u64,
    /// With a key, every datagram between servers carries a MAC, and those without the right
    /// one are dropped.
    pub key: Option<Key>,
    /// A server silent for this long is excluded from the cluster.
    pub peer_timeout: Duration,
}

impl Cluster {
    pub const DEFAULT_PEER_TIMEOUT: Duration = Duration::from_secs(2);

    /// A cluster without a key, with the default timeout, as incarnation 1.
    pub fn new(members: Vec<Member>, me: u16, order: Order) -> Self {
        Self {
            members,
            me,
            order,
            incarnation: 1,
            key: None,
            peer_timeout: Self::DEFAULT_PEER_TIMEOUT,
        }
    }
}

struct Room {
    /// This server's messages in the room so far (ids are (server, counter)).
    counter: u64,
    /// Local messages refused because a server was a whole window behind.
    refused: u64,
    total: Option<TotalOrder>,
}

/// An excluded server's frames being passed on among the survivors.
struct Flush {
    inc: u64,
    /// A bit per survivor that has not yet passed on all it has.
    waiting: u64,
}

pub(super) struct Group {
    /// Only shard 0 runs the cluster; the others hand it what they receive.
    active: bool,
    forward: Vec<SocketAddr>,
    /// Per server: its forwarding address is not its bind address (a proxy should hold it).
    proxied: Vec<bool>,
    me: u16,
    order: Order,
    incarnation: u64,
    key: Option<Key>,
    peer_timeout: Duration,
    links: Vec<Link>,
    rooms: AHashMap<Name, Room>,
    relay: Relay,
    /// The number of this server's last frame to every other (`mseq`).
    mseq: u64,
    flushing: Vec<Option<Flush>>,
    /// Per origin: fragments of a long message received so far.
    partial: Vec<Vec<u8>>,
    /// When membership is next looked after (keep-alives, timeouts, `H` frames).
    next_tick: Duration,
    /// Frames are queued: send them at the end of this step.
    send_now: bool,
    ready: Vec<(MsgId, Chat)>,
}

impl Group {
    pub(in crate::engine) fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Early datagrams the streams hold, over all peers.
    pub(in crate::engine) fn held_datagrams(&self) -> usize {
        self.links.iter().map(|l| l.inn.held()).sum()
    }

    pub(super) fn new(cluster: &Cluster, shard: u16, now: Duration) -> Self {
        let servers = cluster.members.len();
        assert!(servers <= MAX_SERVERS && usize::from(cluster.me) < servers);
        assert!(cluster.incarnation != 0, "0 means unknown on the wire");
        Self {
            active: shard == 0,
            forward: cluster.members.iter().map(|m| m.forward).collect(),
            proxied: cluster
                .members
                .iter()
                .map(|m| m.forward != m.bind)
                .collect(),
            me: cluster.me,
            order: cluster.order,
            incarnation: cluster.incarnation,
            key: cluster.key.clone(),
            peer_timeout: cluster.peer_timeout,
            links: (0..servers).map(|_| Link::new(now)).collect(),
            rooms: AHashMap::new(),
            relay: Relay::new(servers),
            mseq: 0,
            flushing: (0..servers).map(|_| None).collect(),
            partial: vec![Vec::new(); servers],
            next_tick: now,
            send_now: false,
            ready: Vec::new(),
        }
    }

    /// When [`Engine::group_timeout`] should run (never on shards other than 0).
    pub(super) fn next_timer(&self) -> Option<Duration> {
        if !self.active {
            return None;
        }
        if self.send_now {
            return Some(Duration::ZERO);
        }
        let mut next = self.next_tick;
        for l in &self.links {
            for t in [l.ack_due, l.out.timer()].into_iter().flatten() {
                next = next.min(t);
            }
        }
        Some(next)
    }

    /// Keep-alives, probes and `H` frames: often enough that a live server is never taken for
    /// a dead one, and a restarted one is found within a fraction of a second.
    fn tick_period(&self) -> Duration {
        (self.peer_timeout / 8).clamp(Duration::from_millis(1), Duration::from_millis(100))
    }

    fn peers(&self) -> impl Iterator<Item = u16> + use<> {
        let me = self.me;
        (0..self.forward.len() as u16).filter(move |&s| s != me)
    }

    /// A bit per member (live or expected), this server included: who must have a message.
    fn member_mask(&self) -> u64 {
        self.peers()
            .filter(|&p| self.links[usize::from(p)].member())
            .fold(1 << self.me, |m, p| m | 1 << p)
    }

    /// A bit per live peer.
    fn live_mask(&self) -> u64 {
        self.peers()
            .filter(|&p| self.links[usize::from(p)].live())
            .fold(0, |m, p| m | 1 << p)
    }

    fn bits(mask: u64) -> impl Iterator<Item = u16> {
        (0..MAX_SERVERS as u16).filter(move |&p| mask & (1 << p) != 0)
    }

    /// Queues a frame to a member, to go at the end of this step (or once it is admitted).
    fn push(&mut self, peer: u16, frame: &Frame<'_>) {
        let link = &mut self.links[usize::from(peer)];
        if link.member() && link.out.push(frame) {
            link.urgent = true;
            self.send_now = true;
        }
    }

    /// Queues a frame to every live peer, numbered in this server's multicast sequence.
    fn multicast(&mut self, m: Multicast<'_>) {
        self.mseq += 1;
        let mseq = self.mseq;
        for p in Self::bits(self.member_mask() & !(1 << self.me)) {
            self.push(p, &Frame::Multicast { mseq, m });
        }
        self.relay.sent(self.me, mseq);
    }

    /// Whether a new message of `fragments` datagrams would overrun a peer's window.
    fn backlogged(&self, fragments: usize) -> bool {
        self.links
            .iter()
            .any(|l| l.member() && l.out.room() < fragments)
    }
}

/// The group, in a cluster (a field borrow, so the rest of the engine stays usable).
fn group_of(federation: &Strategy) -> Option<&Group> {
    match federation {
        Strategy::Group(g) => Some(g),
        Strategy::Alone | Strategy::Tree(_) => None,
    }
}

fn group_of_mut(federation: &mut Strategy) -> Option<&mut Group> {
    match federation {
        Strategy::Group(g) => Some(g),
        Strategy::Alone | Strategy::Tree(_) => None,
    }
}

impl Engine {
    fn group_me(&self) -> u16 {
        group_of(&self.federation).map_or(0, |g| g.me)
    }

    /// A datagram from another server of the cluster, on whichever shard received it: only
    /// its header is read here; shard 0 handles it (another shard sends it a shared copy).
    pub(super) fn peer_datagram(&mut self, now: Duration, peer: u16, buf: &[u8], out: &mut Outbox) {
        self.counters.s2s_in.inc();
        if self.shard == 0 {
            return self.peer_message(now, peer, buf, out);
        }
        // Only a datagram that decodes is worth a shared copy for shard 0.
        if group::decode(buf).is_err() {
            return self.counters.decode_errors.inc();
        }
        let msg = ShardMsg::FromPeer {
            peer,
            datagram: Arc::from(buf),
        };
        self.send_to_shard(0, msg, out);
    }

    /// On shard 0: a datagram from server `peer`.
    pub(super) fn peer_message(&mut self, now: Duration, peer: u16, buf: &[u8], out: &mut Outbox) {
        let Ok(d) = group::decode(buf) else {
            return self.counters.decode_errors.inc();
        };
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        if !d.authentic(g.key.as_ref()) {
            return self.counters.dropped(DropReason::Forged);
        }
        let h = d.header;
        let me = g.incarnation;
        let tick = g.tick_period();
        let Some(link) = g.links.get_mut(usize::from(peer)) else {
            return;
        };
        if h.excluded {
            // Believed only from the admitted incarnation, about this one.
            if link.state == State::Live(h.from) && h.to == me {
                return self.group_restart(now, peer, out);
            }
            return self.counters.dropped(DropReason::Stale);
        }
        match link.state {
            State::Live(inc) if inc == h.from => {
                if h.to != me {
                    // Addressed to an earlier run of this server, or it lost track of us.
                    if h.to == 0 && link.may_answer(now, tick) {
                        link.bare_due = true;
                        g.send_now = true;
                    }
                    return self.counters.dropped(DropReason::Stale);
                }
            }
            State::Excluded(inc) if inc == h.from => {
                // Still talking after it was excluded: it should start afresh.
                if link.may_answer(now, tick) {
                    let mut buf = [0u8; MAX_DATAGRAM];
                    if let Some(n) = link.excluded_notice(me, g.key.as_ref(), &mut buf) {
                        out.send_bytes(g.forward[usize::from(peer)], &buf[..n]);
                        self.counters.s2s_out.inc();
                    }
                }
                return self.counters.dropped(DropReason::Stale);
            }
            State::Live(inc) | State::Excluded(inc) if h.from < inc => {
                return self.counters.dropped(DropReason::Stale);
            }
            State::Unknown | State::Live(_) | State::Excluded(_) => {
                // An incarnation not (yet) admitted.
                link.candidate = h.from;
                if h.to != me || h.from == 0 {
                    if link.may_answer(now, tick) {
                        link.answer_due = true;
                        g.send_now = true;
                    }
                    return self.counters.dropped(DropReason::Stale);
                }
                if link.live() {
                    self.group_exclude(now, peer, "it restarted", out);
                }
                let Some(g) = group_of_mut(&mut self.federation) else {
                    return;
                };
                if g.flushing[usize::from(peer)].is_some() {
                    // Admitted once the survivors have settled what its last run started.
                    return self.counters.dropped(DropReason::Stale);
                }
                self.group_admit(now, peer, h.from, out);
            }
        }
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        let me = g.incarnation;
        let key = g.key.clone();
        let dst = g.forward[usize::from(peer)];
        let link = &mut g.links[usize::from(peer)];
        link.heard = now;
        let header = link.header(me, 0);
        if let Some((seq, frames)) = link.out.ack(now, h.ack) {
            let mut buf = [0u8; MAX_DATAGRAM];
            if let Some(n) = link::encode(&Header { seq, ..header }, key.as_ref(), frames, &mut buf)
            {
                self.retransmit(dst, peer, &buf[..n], out);
            }
        }
        if h.seq == 0 {
            return;
        }
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        let link = &mut g.links[usize::from(peer)];
        match link.inn.arrive(h.seq, buf) {
            stream::Arrival::Next => {
                let due = now + stream::ACK_DELAY;
                link.ack_due = Some(link.ack_due.map_or(due, |t| t.min(due)));
                self.peer_frames(now, peer, d.frames(), out);
                loop {
                    let Some(g) = group_of_mut(&mut self.federation) else {
                        return;
                    };
                    let link = &mut g.links[usize::from(peer)];
                    // A frame may have excluded the peer or restarted this server.
                    if !link.live() {
                        return;
                    }
                    let Some(next) = link.inn.pop_ready() else {
                        break;
                    };
                    if let Ok(d) = group::decode(&next) {
                        self.peer_frames(now, peer, d.frames(), out);
                    }
                }
            }
            // Early: nothing new to acknowledge (the sender learns of a loss by its timeout).
            stream::Arrival::Held => {}
            stream::Arrival::Duplicate => {
                link.ack_due = Some(now);
                self.counters.duplicates.inc();
            }
            stream::Arrival::TooFar => self.counters.dropped(DropReason::StreamWindow),
        }
        if let Some(g) = group_of_mut(&mut self.federation) {
            g.send_now |= g.links[usize::from(peer)].ack_due == Some(now);
        }
    }

    /// The frames of one datagram of `peer`'s stream, in order.
    fn peer_frames(
        &mut self,
        now: Duration,
        peer: u16,
        frames: group::Frames<'_>,
        out: &mut Outbox,
    ) {
        let state = group_of(&self.federation).map(|g| g.links[usize::from(peer)].state);
        for frame in frames {
            let Ok(frame) = frame else {
                return self.counters.decode_errors.inc();
            };
            match frame {
                Frame::Multicast { mseq, m } => self.multicast_frame(peer, mseq, m, out),
                Frame::Propose {
                    room,
                    counter,
                    priority,
                } => self.proposal(Name::truncating(room), counter, priority, peer, out),
                Frame::Have { first, positions } => {
                    if let Some(g) = group_of_mut(&mut self.federation) {
                        let live = g.live_mask();
                        g.relay.heard(peer, first, &positions, live);
                    }
                }
                Frame::Flush { origin, inc } => self.flush_from(now, peer, origin, inc, out),
                Frame::Relay {
                    origin,
                    inc,
                    mseq,
                    m,
                } => {
                    let relayed = group_of(&self.federation).is_some_and(|g| {
                        origin != g.me
                            && g.links.get(usize::from(origin)).map(|l| l.state)
                                == Some(State::Excluded(inc))
                            && g.flushing[usize::from(origin)].is_some()
                    });
                    if relayed {
                        self.multicast_frame(origin, mseq, m, out);
                    }
                }
                Frame::End { origin, inc } => self.end_from(peer, origin, inc, out),
            }
            // A frame may have excluded the peer or restarted this server: the rest is void.
            if group_of(&self.federation).map(|g| g.links[usize::from(peer)].state) != state {
                return;
            }
        }
    }

    /// The next frame of `origin`'s multicast sequence, from it or passed on by a survivor.
    fn multicast_frame(&mut self, origin: u16, mseq: u64, m: Multicast<'_>, out: &mut Outbox) {
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        if !g.relay.is_next(origin, mseq) {
            return self.counters.duplicates.inc();
        }
        let dropped = g.relay.handled(origin, mseq, &m);
        self.counters.dropped_many(DropReason::Retention, dropped);
        match m {
            Multicast::Msg {
                room,
                counter,
                more,
                user,
                text,
            } => {
                let room = Name::truncating(room);
                let partial = &mut g.partial[usize::from(origin)];
                if partial.len() + text.len() > text::MAX_MESSAGE {
                    partial.clear();
                    return self.counters.dropped(DropReason::Oversize);
                }
                if more {
                    return partial.extend_from_slice(text);
                }
                let chat = if partial.is_empty() {
                    Chat::new(user, text)
                } else {
                    partial.extend_from_slice(text);
                    let chat = Chat::new(user, partial);
                    partial.clear();
                    chat
                };
                self.log_event(
                    out,
                    format_args!(
                        "Receives message {}.{counter} for chat room #{room}: \"{}\"",
                        origin + 1,
                        Lossy(chat.text())
                    ),
                );
                self.order_message(room, (origin, counter), chat, out);
            }
            Multicast::Agreed {
                room,
                counter,
                priority,
                proposer,
            } => {
                let room = Name::truncating(room);
                self.log_event(
                    out,
                    format_args!(
                        "Learns {priority}.{} agreed for message {}.{counter} in chat room #{room}",
                        proposer + 1,
                        origin + 1
                    ),
                );
                self.agreed(room, (origin, counter), priority, proposer, out);
            }
        }
    }

    /// The room's state, created on first use (bounded like the channels).
    fn group_room(&mut self, name: Name) -> Option<&mut Room> {
        let group = group_of_mut(&mut self.federation)?;
        if !group.rooms.contains_key(&name) {
            if group.rooms.len() >= self.cfg.limits.channels {
                self.counters.dropped(DropReason::ChannelLimit);
                return None;
            }
            let room = Room {
                counter: 0,
                refused: 0,
                total: (group.order == Order::Total).then(|| TotalOrder::new(group.me)),
            };
            group.rooms.insert(name, room);
        }
        group.rooms.get_mut(&name)
    }

    /// A local user's message, on shard 0: numbered, sent to every other server, and ordered
    /// here like everyone else's.
    pub(super) fn group_say(
        &mut self,
        room: Name,
        chat: Chat,
        session: SessionId,
        out: &mut Outbox,
    ) {
        let chunk = group::max_text(room.as_bytes(), chat.user()).max(1);
        let fragments = chat.text().len().div_ceil(chunk).max(1);
        let backlogged = group_of(&self.federation).is_some_and(|g| g.backlogged(fragments));
        let Some(r) = self.group_room(room) else {
            return;
        };
        if backlogged {
            // A server has not acknowledged most of a window: refuse rather than grow, and
            // tell the sender, who would otherwise never know.
            r.refused += 1;
            let refused = r.refused;
            self.counters.dropped(DropReason::ReplicationBacklog);
            let home = session.home;
            self.send_to_shard(
                home,
                ShardMsg::SayRefused {
                    channel: room,
                    session,
                },
                out,
            );
            return self.log_event(
                out,
                format_args!(
                    "Refuses a message to chat room #{room} ({refused} so far): a server is not acknowledging"
                ),
            );
        }
        r.counter += 1;
        let counter = r.counter;
        let me = self.group_me();
        self.log_event(
            out,
            format_args!(
                "{} posts \"{}\" to chat room #{room} as message {}.{counter}",
                Lossy(chat.user()),
                Lossy(chat.text()),
                me + 1
            ),
        );
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        let text = chat.text();
        // At least one fragment, so an empty DuckChat text still travels.
        for i in 0..fragments {
            g.multicast(Multicast::Msg {
                room: room.as_bytes(),
                counter,
                more: i + 1 < fragments,
                user: chat.user(),
                text: &text[i * chunk..((i + 1) * chunk).min(text.len())],
            });
        }
        self.order_message(room, (me, counter), chat, out);
    }

    /// A whole message (local or reassembled) enters this server's ordering.
    fn order_message(&mut self, room: Name, id: MsgId, chat: Chat, out: &mut Outbox) {
        let me = self.group_me();
        let expect = group_of(&self.federation).map_or(0, Group::member_mask);
        let Some(total) = self.group_room(room).and_then(|r| r.total.as_mut()) else {
            return self.group_deliver(room, id, &chat, out);
        };
        let Some(priority) = total.receive(id, chat, expect) else {
            return self.counters.dropped(DropReason::StreamWindow);
        };
        self.log_event(
            out,
            format_args!(
                "Proposes {priority}.{} for message {}.{} in chat room #{room}",
                me + 1,
                id.0 + 1,
                id.1
            ),
        );
        if id.0 == me {
            self.proposal(room, id.1, priority, me, out);
        } else if let Some(g) = group_of_mut(&mut self.federation) {
            let frame = Frame::Propose {
                room: room.as_bytes(),
                counter: id.1,
                priority,
            };
            g.push(id.0, &frame);
        }
    }

    /// A proposal for one of this server's messages (its own included).
    fn proposal(
        &mut self,
        room: Name,
        counter: u64,
        priority: u64,
        proposer: u16,
        out: &mut Outbox,
    ) {
        let Some(total) = self.group_room(room).and_then(|r| r.total.as_mut()) else {
            return;
        };
        if let Some((priority, proposer)) = total.propose(counter, priority, proposer) {
            self.agree_own(room, counter, priority, proposer, out);
        }
    }

    /// Every server still in the cluster has proposed for this server's message `counter`.
    fn agree_own(
        &mut self,
        room: Name,
        counter: u64,
        priority: u64,
        proposer: u16,
        out: &mut Outbox,
    ) {
        let me = self.group_me();
        self.log_event(
            out,
            format_args!(
                "Agrees {priority}.{} for message {}.{counter} in chat room #{room}",
                proposer + 1,
                me + 1
            ),
        );
        if let Some(g) = group_of_mut(&mut self.federation) {
            g.multicast(Multicast::Agreed {
                room: room.as_bytes(),
                counter,
                priority,
                proposer,
            });
        }
        self.agreed(room, (me, counter), priority, proposer, out);
    }

    fn agreed(&mut self, room: Name, id: MsgId, priority: u64, proposer: u16, out: &mut Outbox) {
        let Some(group) = group_of_mut(&mut self.federation) else {
            return;
        };
        let mut ready = std::mem::take(&mut group.ready);
        let known = group
            .rooms
            .get_mut(&room)
            .and_then(|r| r.total.as_mut())
            .is_some_and(|t| t.agree(id, priority, proposer, &mut ready));
        if !known {
            // Sent before this server was admitted, or by a confused peer.
            self.counters.duplicates.inc();
        }
        self.deliver_ready(room, ready, out);
    }

    fn deliver_ready(&mut self, room: Name, mut ready: Vec<(MsgId, Chat)>, out: &mut Outbox) {
        for (id, chat) in ready.drain(..) {
            self.group_deliver(room, id, &chat, out);
        }
        if let Some(group) = group_of_mut(&mut self.federation) {
            group.ready = ready;
        }
    }

    fn group_deliver(&mut self, room: Name, id: MsgId, chat: &Chat, out: &mut Outbox) {
        self.log_event(
            out,
            format_args!(
                "Delivers message {}.{} to chat room #{room}: \"{}\"",
                id.0 + 1,
                id.1,
                Lossy(chat.text())
            ),
        );
        let me = self.group_me();
        let stamp = Stamp {
            id: (u64::from(id.0) << 48) | (id.1 & ((1 << 48) - 1)),
            origin: if id.0 == me {
                Origin::Here
            } else {
                Origin::Member(id.0)
            },
        };
        self.fan_out(room, chat, stamp, out);
    }

    /// Admits incarnation `inc` of `peer`: both streams start afresh.
    fn group_admit(&mut self, now: Duration, peer: u16, inc: u64, out: &mut Outbox) {
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        let addr = g.forward[usize::from(peer)];
        let link = &mut g.links[usize::from(peer)];
        if link.state == State::Unknown {
            // Expected since start-up: what was queued for it goes now.
            link.state = State::Live(inc);
            link.heard = now;
            link.urgent = true;
        } else {
            link.reset(now, State::Live(inc));
        }
        link.bare_due = true;
        g.relay.reset(peer);
        g.partial[usize::from(peer)].clear();
        g.send_now = true;
        out.log(format_args!(
            "{} Admits S{:02} at {addr} (incarnation {inc})",
            self.settings.prefix(),
            peer + 1
        ));
    }

    /// Takes `peer` out of the cluster: its streams are dropped, what it started is passed on
    /// among the survivors, and its proposals are waited for no more.
    fn group_exclude(&mut self, now: Duration, peer: u16, why: &str, out: &mut Outbox) {
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        let p = usize::from(peer);
        let inc = match g.links[p].state {
            State::Live(inc) => inc,
            State::Unknown => 0, // never heard from: nothing to pass on
            State::Excluded(_) => return,
        };
        let addr = g.forward[p];
        let mut settled_now = false;
        g.links[p].reset(now, State::Excluded(inc));
        g.partial[p].clear();
        // Pass its frames on to every survivor, then say that is all.
        // Never heard from: nothing to pass on, nobody to wait for.
        let survivors: Vec<u16> = match inc {
            0 => Vec::new(),
            _ => Group::bits(g.live_mask()).collect(),
        };
        let mut waiting = 0u64;
        for s in survivors {
            waiting |= 1 << s;
            g.push(s, &Frame::Flush { origin: peer, inc });
            let mut relayed = Vec::new();
            g.relay.missing(peer, s, |raw| relayed.push(raw.to_vec()));
            for raw in &relayed {
                if let Some(Ok(Frame::Multicast { mseq, m })) = frames_of(raw).next() {
                    g.push(
                        s,
                        &Frame::Relay {
                            origin: peer,
                            inc,
                            mseq,
                            m,
                        },
                    );
                }
            }
            g.push(s, &Frame::End { origin: peer, inc });
        }
        g.flushing[p] = Some(Flush { inc, waiting });
        if waiting == 0 {
            settled_now = true;
        }
        self.counters.peers_excluded.inc();
        out.log(format_args!(
            "{} Excludes S{:02} at {addr} (incarnation {inc}): {why}",
            self.settings.prefix(),
            peer + 1
        ));
        // Its proposals are waited for no more.
        let agreed: Vec<(Name, u64, u64, u16)> = g
            .rooms
            .iter_mut()
            .filter_map(|(name, r)| Some((*name, r.total.as_mut()?)))
            .flat_map(|(name, t)| {
                t.exclude(peer)
                    .into_iter()
                    .map(move |(c, p, q)| (name, c, p, q))
            })
            .collect();
        for (room, counter, priority, proposer) in agreed {
            self.agree_own(room, counter, priority, proposer, out);
        }
        // Other exclusions wait for it no more either.
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        let mut settled = Vec::new();
        for (origin, f) in g.flushing.iter_mut().enumerate() {
            if let Some(f) = f {
                f.waiting &= !(1 << peer);
                if f.waiting == 0 {
                    settled.push(origin as u16);
                }
            }
        }
        if settled_now {
            settled.push(peer);
        }
        for origin in settled {
            self.flush_settled(origin, out);
        }
    }

    /// Every survivor has passed on what it had of excluded `origin`: its messages that are
    /// not agreed by now are delivered by none.
    fn flush_settled(&mut self, origin: u16, out: &mut Outbox) {
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        if g.flushing[usize::from(origin)].take().is_none() {
            return;
        }
        g.partial[usize::from(origin)].clear();
        let link = &mut g.links[usize::from(origin)];
        // A new run of it may be waiting to be admitted: prompt it.
        link.answer_due = link.candidate != 0;
        g.send_now = true;
        let rooms: Vec<Name> = g.rooms.keys().copied().collect();
        for room in rooms {
            let Some(g) = group_of_mut(&mut self.federation) else {
                return;
            };
            let mut ready = std::mem::take(&mut g.ready);
            if let Some(t) = g.rooms.get_mut(&room).and_then(|r| r.total.as_mut()) {
                t.forget_origin(origin, &mut ready);
            }
            self.deliver_ready(room, ready, out);
        }
        self.log_event(out, format_args!("Settles what S{:02} started", origin + 1));
    }

    /// `F`: `peer` excluded that incarnation of `origin`; follow it (or, with nothing to pass
    /// on, say so at once).
    fn flush_from(&mut self, now: Duration, peer: u16, origin: u16, inc: u64, out: &mut Outbox) {
        let Some(g) = group_of(&self.federation) else {
            return;
        };
        if origin == g.me {
            if inc == g.incarnation {
                // Taken for dead: the others have settled without this run.
                self.group_restart(now, peer, out);
            }
            return;
        }
        match g.links.get(usize::from(origin)).map(|l| l.state) {
            Some(State::Live(live)) if live <= inc => {
                let why = format!("S{:02} excluded it", peer + 1);
                self.group_exclude(now, origin, &why, out);
            }
            Some(_) => {
                if let Some(g) = group_of_mut(&mut self.federation) {
                    g.push(peer, &Frame::End { origin, inc });
                }
            }
            None => {}
        }
    }

    /// `E`: `peer` has passed on all it had of `origin`.
    fn end_from(&mut self, peer: u16, origin: u16, inc: u64, out: &mut Outbox) {
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        let Some(Some(f)) = g.flushing.get_mut(usize::from(origin)) else {
            return;
        };
        if inc >= f.inc {
            f.waiting &= !(1 << peer);
            if f.waiting == 0 {
                self.flush_settled(origin, out);
            }
        }
    }

    /// This run was excluded by the others (told by `by`): it starts afresh as a new
    /// incarnation, with no messages in flight; its clients stay.
    fn group_restart(&mut self, now: Duration, by: u16, out: &mut Outbox) {
        let bump = 1 + self.rng.next_u64() % 4096;
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        g.incarnation += bump;
        let inc = g.incarnation;
        let servers = g.forward.len();
        for link in &mut g.links {
            link.reset(now, State::Unknown);
            link.candidate = 0;
            link.bare_due = true;
        }
        g.rooms.clear();
        g.relay = Relay::new(servers);
        g.mseq = 0;
        g.flushing.iter_mut().for_each(|f| *f = None);
        g.partial.iter_mut().for_each(Vec::clear);
        g.send_now = true;
        self.counters.peers_excluded.inc();
        out.log(format_args!(
            "{} Was excluded (told by S{:02}): starts again as incarnation {inc}",
            self.settings.prefix(),
            by + 1
        ));
    }

    fn retransmit(&mut self, dst: SocketAddr, peer: u16, bytes: &[u8], out: &mut Outbox) {
        out.send_bytes(dst, bytes);
        self.counters.s2s_out.inc();
        self.counters.retransmissions.inc();
        self.log_event(out, format_args!("Retransmits to S{:02}", peer + 1));
    }

    /// Membership and the streams' timers; then whatever is queued goes out.
    pub(super) fn group_timeout(&mut self, now: Duration, out: &mut Outbox) {
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        if !g.active {
            return;
        }
        if now >= g.next_tick {
            g.next_tick = now + g.tick_period();
            self.group_tick(now, out);
        }
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        let me = g.incarnation;
        let key = g.key.clone();
        let mut resends = Vec::new();
        for (peer, link) in g.links.iter_mut().enumerate() {
            let header = link.header(me, 0);
            if let Some((seq, frames)) = link.out.on_timer(now) {
                let mut buf = [0u8; MAX_DATAGRAM];
                if let Some(n) =
                    link::encode(&Header { seq, ..header }, key.as_ref(), frames, &mut buf)
                {
                    resends.push((g.forward[peer], peer as u16, buf[..n].to_vec()));
                }
            }
        }
        for (dst, peer, bytes) in resends {
            self.retransmit(dst, peer, &bytes, out);
        }
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        g.send_now = false;
        let mut sent = 0;
        for (peer, link) in g.links.iter_mut().enumerate() {
            if peer == usize::from(g.me) {
                continue;
            }
            let dst = g.forward[peer];
            sent += link.transmit(now, me, key.as_ref(), |bytes| out.send_bytes(dst, bytes));
        }
        self.counters.s2s_out.add(sent as u64);
    }

    /// Keep-alives and probes, peers silent too long, and where this server got to.
    fn group_tick(&mut self, now: Duration, out: &mut Outbox) {
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        let keepalive = g.peer_timeout / 4;
        // Looking for a peer costs a bare datagram a tick: a cluster whose servers start out
        // of step (or before the proxy between them) comes together within a tick of both ends.
        let probe = g.tick_period();
        let mut silent = Vec::new();
        for peer in g.peers() {
            let link = &mut g.links[usize::from(peer)];
            match link.state {
                State::Live(_) | State::Unknown
                    if now.saturating_sub(link.heard) > g.peer_timeout =>
                {
                    silent.push(peer);
                }
                State::Live(_) => {
                    link.bare_due |= now.saturating_sub(link.sent) >= keepalive;
                    link.urgent |= link.has_pending();
                }
                State::Unknown | State::Excluded(_) => {
                    link.bare_due |= now.saturating_sub(link.sent) >= probe;
                }
            }
        }
        g.send_now = true;
        for peer in silent {
            let Some(g) = group_of(&self.federation) else {
                return;
            };
            let proxy = match g.proxied[usize::from(peer)] {
                true => "; its forwarding address is not its bind address: is the proxy running?",
                false => "",
            };
            let why = match g.links[usize::from(peer)].state {
                State::Unknown => format!("not heard from within {:?}{proxy}", g.peer_timeout),
                _ => format!("silent for more than {:?}{proxy}", g.peer_timeout),
            };
            self.group_exclude(now, peer, &why, out);
        }
        let Some(g) = group_of_mut(&mut self.federation) else {
            return;
        };
        // `H` frames ride on the next datagram to each peer, or go at the next tick.
        for have in g.relay.announcement() {
            for p in Group::bits(g.live_mask()) {
                g.links[usize::from(p)].push_lazy(&have);
            }
        }
    }
}
