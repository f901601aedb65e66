//! Group federation (`shared/spec/textchat.md`): a static cluster of servers, each a member of
//! every room, with no central sequencer. The origin of a message sends it straight to every
//! other server; how the servers order what they receive is the [`Order`].
//!
//! Everything about one room lives on the room's owner shard (the channel of the same name), so
//! the ordering state is single-threaded by construction and `--cores N` needs no locks: the
//! shard that receives a server's datagram only reads the room from it and hands it to the owner.
//!
//! Layers, per room:
//! - a reliable in-order [`stream`] to and from every other server (acknowledgements,
//!   retransmission, bounded windows), so all modes survive loss, and messages longer than a
//!   datagram travel as fragments;
//! - `unordered` and `fifo` deliver what the stream hands over, at once: the stream is in order
//!   per origin, so both are FIFO here (nothing orders messages of different origins);
//! - `total` runs ISIS ([`total`]) on top.

mod stream;
mod total;

pub use total::MAX_SERVERS;

use super::{
    Chat, DropReason, Engine, Lossy, Origin, Outbox, SessionId, ShardMsg, Stamp, Strategy,
};
use crate::proto::group::{self, Body, Datagram};
use crate::proto::{text, Name};
use ahash::AHashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use stream::{Arrival, InStream, OutStream};
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
}

/// This server's side of the conversation with one other server about one room.
#[derive(Default)]
struct Link {
    out: OutStream,
    inn: InStream,
    /// Fragments of a long message received so far.
    partial: Vec<u8>,
}

struct Room {
    links: Vec<Link>,
    /// This server's messages in the room so far (ids are (server, counter)).
    counter: u64,
    /// Local messages refused because a server was a whole window behind.
    refused: u64,
    total: Option<TotalOrder>,
}

pub(super) struct Group {
    forward: Vec<SocketAddr>,
    me: u16,
    order: Order,
    rooms: AHashMap<Name, Room>,
    /// The earliest retransmission timer of any stream (a lower bound: timers only move later).
    next_timer: Option<Duration>,
    ready: Vec<(MsgId, Chat)>,
}

impl Group {
    pub(in crate::engine) fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub(super) fn new(cluster: &Cluster) -> Self {
        Self {
            forward: cluster.members.iter().map(|m| m.forward).collect(),
            me: cluster.me,
            order: cluster.order,
            rooms: AHashMap::new(),
            next_timer: None,
            ready: Vec::new(),
        }
    }

    pub(super) fn next_timer(&self) -> Option<Duration> {
        self.next_timer
    }

    fn arm(&mut self, timer: Option<Duration>) {
        if let Some(t) = timer {
            self.next_timer = Some(self.next_timer.map_or(t, |n| n.min(t)));
        }
    }

    fn servers(&self) -> u16 {
        self.forward.len() as u16
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
    /// This server's index in the cluster (0-based).
    fn group_me(&self) -> u16 {
        group_of(&self.federation).map_or(0, |g| g.me)
    }

    /// The other servers of the cluster.
    fn group_peers(&self) -> impl Iterator<Item = u16> + use<> {
        let (me, servers) = group_of(&self.federation).map_or((0, 0), |g| (g.me, g.servers()));
        (0..servers).filter(move |&s| s != me)
    }

    /// A datagram from another server of the cluster, on whichever shard received it: only the
    /// room is read here; its owner decides (another shard gets a shared copy).
    pub(super) fn peer_datagram(&mut self, now: Duration, peer: u16, buf: &[u8], out: &mut Outbox) {
        self.counters.s2s_in.inc();
        let Ok(decoded) = group::decode(buf) else {
            return self.counters.decode_errors.inc();
        };
        let room = Name::truncating(decoded.room());
        if self.owner(&room) == self.shard {
            return self.peer_message(now, peer, room, buf, out);
        }
        let msg = ShardMsg::FromPeer {
            room,
            peer,
            datagram: Arc::from(buf),
        };
        self.send_to_owner(msg, out);
    }

    /// The room's state, created on first use (bounded like the channels).
    fn group_room(&mut self, name: Name) -> Option<&mut Room> {
        let group = group_of_mut(&mut self.federation)?;
        if !group.rooms.contains_key(&name) {
            if group.rooms.len() >= self.cfg.limits.channels {
                self.counters.dropped(DropReason::ChannelLimit);
                return None;
            }
            let servers = group.servers();
            let room = Room {
                links: (0..servers).map(|_| Link::default()).collect(),
                counter: 0,
                refused: 0,
                total: (group.order == Order::Total).then(|| TotalOrder::new(group.me, servers)),
            };
            group.rooms.insert(name, room);
        }
        group.rooms.get_mut(&name)
    }

    /// Sends `body` on the room's stream to `peer` (new messages check the window first).
    fn send_data(
        &mut self,
        now: Duration,
        room: Name,
        peer: u16,
        body: Body<'_>,
        out: &mut Outbox,
    ) {
        let Some(group) = group_of_mut(&mut self.federation) else {
            return;
        };
        let dst = group.forward[peer as usize];
        let Some(link) = group
            .rooms
            .get_mut(&room)
            .and_then(|r| r.links.get_mut(peer as usize))
        else {
            return;
        };
        let datagram = Datagram::Data {
            room: room.as_bytes(),
            seq: link.out.next_seq(),
            body,
        };
        let Some(payload) = out.payload(group::MAX_DATAGRAM, |buf| datagram.encode(buf)) else {
            return; // the callers size fragments to fit
        };
        link.out.push(now, out.bytes(payload));
        out.send(dst, payload);
        let timer = link.out.timer();
        group.arm(timer);
        self.counters.s2s_out.inc();
    }

    fn send_ack(&mut self, room: Name, peer: u16, seq: u64, out: &mut Outbox) {
        let Some(group) = group_of(&self.federation) else {
            return;
        };
        let dst = group.forward[peer as usize];
        out.send_new(dst, group::MAX_DATAGRAM, |buf| {
            Datagram::Ack {
                room: room.as_bytes(),
                seq,
            }
            .encode(buf)
        });
        self.counters.s2s_out.inc();
    }

    /// A local user's message, on the room's owner: numbered, sent to every other server, and
    /// ordered here like everyone else's.
    pub(super) fn group_say(
        &mut self,
        now: Duration,
        room: Name,
        chat: Chat,
        session: SessionId,
        out: &mut Outbox,
    ) {
        let chunk = group::max_text(room.as_bytes(), chat.user()).max(1);
        let fragments = chat.text().len().div_ceil(chunk).max(1);
        let Some(r) = self.group_room(room) else {
            return;
        };
        if r.links.iter().any(|l| l.out.room() < fragments) {
            // A server has been unreachable for a whole window: refuse rather than grow, and
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
        let text = chat.text();
        for peer in self.group_peers() {
            // At least one fragment, so an empty DuckChat text still travels.
            for i in 0..fragments {
                let body = Body::Msg {
                    counter,
                    more: i + 1 < fragments,
                    user: chat.user(),
                    text: &text[i * chunk..((i + 1) * chunk).min(text.len())],
                };
                self.send_data(now, room, peer, body, out);
            }
        }
        self.order_message(now, room, (me, counter), chat, out);
    }

    /// A whole message (local or reassembled) enters this server's ordering.
    fn order_message(
        &mut self,
        now: Duration,
        room: Name,
        id: MsgId,
        chat: Chat,
        out: &mut Outbox,
    ) {
        let me = self.group_me();
        let Some(total) = self.group_room(room).and_then(|r| r.total.as_mut()) else {
            return self.group_deliver(room, id, &chat, out);
        };
        let Some(priority) = total.receive(id, chat) else {
            return;
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
            self.proposal(now, room, id.1, priority, me, out);
        } else {
            let body = Body::Propose {
                counter: id.1,
                priority,
            };
            self.send_data(now, room, id.0, body, out);
        }
    }

    /// A proposal for one of this server's messages (its own included).
    fn proposal(
        &mut self,
        now: Duration,
        room: Name,
        counter: u64,
        priority: u64,
        proposer: u16,
        out: &mut Outbox,
    ) {
        let Some(total) = self.group_room(room).and_then(|r| r.total.as_mut()) else {
            return;
        };
        let Some((priority, proposer)) = total.propose(counter, priority, proposer) else {
            return;
        };
        let me = self.group_me();
        self.log_event(
            out,
            format_args!(
                "Agrees {priority}.{} for message {}.{counter} in chat room #{room}",
                proposer + 1,
                me + 1
            ),
        );
        for peer in self.group_peers() {
            let body = Body::Agreed {
                counter,
                priority,
                proposer: proposer + 1,
            };
            self.send_data(now, room, peer, body, out);
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
            self.counters.decode_errors.inc();
        }
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

    /// On the room's owner: a datagram from server `peer`.
    pub(super) fn peer_message(
        &mut self,
        now: Duration,
        peer: u16,
        room: Name,
        datagram: &[u8],
        out: &mut Outbox,
    ) {
        let Ok(decoded) = group::decode(datagram) else {
            return; // the receiving shard decoded it already
        };
        let Some(r) = self.group_room(room) else {
            return;
        };
        let Some(link) = r.links.get_mut(peer as usize) else {
            return;
        };
        match decoded {
            Datagram::Ack { seq, .. } => {
                let resend = link.out.ack(now, seq).map(<[u8]>::to_vec);
                let timer = link.out.timer();
                if let Some(bytes) = resend {
                    self.retransmit(peer, room, &bytes, out);
                }
                if let Some(group) = group_of_mut(&mut self.federation) {
                    group.arm(timer);
                }
            }
            Datagram::Data { seq, body, .. } => {
                match link.inn.arrive(seq, datagram) {
                    Arrival::Next => {
                        self.stream_body(now, room, peer, body, out);
                        while let Some(next) = self
                            .group_room(room)
                            .and_then(|r| r.links.get_mut(peer as usize))
                            .and_then(|l| l.inn.pop_ready())
                        {
                            if let Ok(Datagram::Data { body, .. }) = group::decode(&next) {
                                self.stream_body(now, room, peer, body, out);
                            }
                        }
                    }
                    Arrival::Held => {}
                    Arrival::Duplicate => self.counters.duplicates.inc(),
                    Arrival::TooFar => self.counters.dropped(DropReason::StreamWindow),
                }
                let acked = self
                    .group_room(room)
                    .and_then(|r| r.links.get(peer as usize))
                    .map_or(0, |l| l.inn.acked());
                self.send_ack(room, peer, acked, out);
            }
        }
    }

    /// The next datagram of `peer`'s stream for `room`, in order.
    fn stream_body(
        &mut self,
        now: Duration,
        room: Name,
        peer: u16,
        body: Body<'_>,
        out: &mut Outbox,
    ) {
        match body {
            Body::Msg {
                counter,
                more,
                user,
                text,
            } => {
                let Some(link) = self
                    .group_room(room)
                    .and_then(|r| r.links.get_mut(peer as usize))
                else {
                    return;
                };
                if link.partial.len() + text.len() > text::MAX_MESSAGE {
                    link.partial.clear();
                    return self.counters.dropped(DropReason::Oversize);
                }
                if more {
                    return link.partial.extend_from_slice(text);
                }
                let chat = if link.partial.is_empty() {
                    Chat::new(user, text)
                } else {
                    link.partial.extend_from_slice(text);
                    let chat = Chat::new(user, &link.partial);
                    link.partial.clear();
                    chat
                };
                self.log_event(
                    out,
                    format_args!(
                        "Receives message {}.{counter} for chat room #{room}: \"{}\"",
                        peer + 1,
                        Lossy(chat.text())
                    ),
                );
                self.order_message(now, room, (peer, counter), chat, out);
            }
            Body::Propose { counter, priority } => {
                self.proposal(now, room, counter, priority, peer, out)
            }
            Body::Agreed {
                counter,
                priority,
                proposer,
            } => {
                let servers = group_of(&self.federation).map_or(0, |g| g.servers());
                if proposer == 0 || proposer > servers {
                    return self.counters.decode_errors.inc();
                }
                self.log_event(
                    out,
                    format_args!(
                        "Learns {priority}.{proposer} agreed for message {}.{counter} in chat room #{room}",
                        peer + 1
                    ),
                );
                self.agreed(room, (peer, counter), priority, proposer - 1, out);
            }
        }
    }

    fn retransmit(&mut self, peer: u16, room: Name, bytes: &[u8], out: &mut Outbox) {
        let Some(group) = group_of(&self.federation) else {
            return;
        };
        out.send_bytes(group.forward[peer as usize], bytes);
        self.counters.s2s_out.inc();
        self.counters.retransmissions.inc();
        self.log_event(
            out,
            format_args!("Retransmits to S{:02} for chat room #{room}", peer + 1),
        );
    }

    /// Retransmission timers of every stream.
    pub(super) fn group_timeout(&mut self, now: Duration, out: &mut Outbox) {
        let Some(group) = group_of_mut(&mut self.federation) else {
            return;
        };
        if group.next_timer.is_none_or(|t| now < t) {
            return;
        }
        group.next_timer = None;
        let mut resends: Vec<(u16, Name, Vec<u8>)> = Vec::new();
        let mut next: Option<Duration> = None;
        for (name, room) in &mut group.rooms {
            for (peer, link) in room.links.iter_mut().enumerate() {
                if let Some(bytes) = link.out.on_timer(now) {
                    resends.push((peer as u16, *name, bytes.to_vec()));
                }
                if let Some(t) = link.out.timer() {
                    next = Some(next.map_or(t, |n| n.min(t)));
                }
            }
        }
        group.next_timer = next;
        for (peer, room, bytes) in resends {
            self.retransmit(peer, room, &bytes, out);
        }
    }
}
