//! What message `k` of the schedule is: who sends it, its datagram, and how many deliveries it
//! must cause. Clients take turns (client `j % n` sends its message `j / n`). With neighbor
//! servers, every other message is instead an S2S_SAY that neighbor `j % K` injects for a
//! remote user, cycling through the channels; every [`REPEAT_EVERY`]th of those is sent twice
//! with the same id, which the router must answer with S2S_LEAVE and never deliver.
//!
//! Churn runs beside it: a pool of extra clients (sockets after the clients' and neighbors')
//! cycle through LOGIN, JOIN of a chat channel, LEAVE and LOGOUT, so member lists change under
//! load. Churn operation `k` is step `(k / pool) % 4` of pool client `k % pool`; each cycle
//! joins the next channel.

use crate::plan::{channel_name, Plan};
use crate::stamp::Stamp;
use chat_router::proto::duckchat::{Inbound, S2sSay, SayLayout};
use chat_router::rng::Rng;

pub const REPEAT_EVERY: u64 = 100;

/// Churn's settings. What churn clients receive is counted apart from the chat's accounting.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Churn {
    /// Operations per second.
    pub rate: f64,
    pub pool: usize,
}

pub struct Traffic<'a> {
    plan: &'a Plan,
    neighbors: u64,
    channels: Vec<String>,
    /// Remote users, one per neighbor.
    users: Vec<String>,
    /// Churn clients' names, one per pool member.
    churners: Vec<String>,
    ids: Rng,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Index of the sending socket: clients first, then neighbors.
    pub socket: usize,
    pub len: usize,
    /// Deliveries it must cause: channel members, plus every neighbor but its sender.
    pub expected: u64,
    /// Send it a second time, unchanged (a duplicate S2S id).
    pub repeat: bool,
    /// Its channel and text, for a client that sends them as JSON (a browser).
    pub channel: usize,
    pub stamp: arrayvec::ArrayString<64>,
}

impl<'a> Traffic<'a> {
    /// The name of channel `i`.
    pub fn channel_name(&self, i: usize) -> &str {
        &self.channels[i]
    }

    pub fn new(plan: &'a Plan, neighbors: usize, churners: usize, seed: u64) -> Self {
        Self {
            plan,
            neighbors: neighbors as u64,
            channels: (0..plan.members.len() as u32).map(channel_name).collect(),
            users: (0..neighbors).map(|i| format!("n{i}")).collect(),
            churners: (0..churners).map(|i| format!("z{i}")).collect(),
            ids: Rng::new(seed),
        }
    }

    /// Encodes churn operation `k` into `buf`; returns the churn client's index in the pool
    /// and the length.
    pub fn churn_operation(&self, k: u64, buf: &mut [u8]) -> Option<(usize, usize)> {
        let pool = self.churners.len().max(1) as u64;
        let client = (k % pool) as usize;
        let step = k / pool;
        let channels = self.channels.len() as u64;
        let channel = &self.channels[((client as u64 * 7 + step / 4) % channels) as usize];
        let request = match step % 4 {
            0 => Inbound::Login {
                user: self.churners.get(client)?.as_bytes(),
            },
            1 => Inbound::Join {
                channel: channel.as_bytes(),
            },
            2 => Inbound::Leave {
                channel: channel.as_bytes(),
            },
            _ => Inbound::Logout,
        };
        Some((client, request.encode(buf, SayLayout::UserFirst).ok()?))
    }

    /// Encodes message `k` (intended at `intended_ns`) into `buf`.
    pub fn message(&mut self, k: u64, intended_ns: u64, buf: &mut [u8]) -> Option<Message> {
        if self.neighbors == 0 {
            return self.local(k, intended_ns, buf);
        }
        if k.is_multiple_of(2) {
            self.local(k / 2, intended_ns, buf)
        } else {
            self.remote(k / 2, intended_ns, buf)
        }
    }

    fn local(&self, j: u64, intended_ns: u64, buf: &mut [u8]) -> Option<Message> {
        let n = self.plan.clients() as u64;
        let client = (j % n) as u32;
        let stamp = Stamp {
            sender: client,
            seq: j / n,
            intended_ns,
        }
        .encode();
        let channel = self.plan.channel_of[client as usize] as usize;
        let say = Inbound::Say {
            channel: self.channels[channel].as_bytes(),
            text: stamp.as_bytes(),
        };
        Some(Message {
            socket: client as usize,
            len: say.encode(buf, SayLayout::UserFirst).ok()?,
            expected: self.plan.fanout_of(client) + self.neighbors,
            repeat: false,
            channel,
            stamp,
        })
    }

    fn remote(&mut self, j: u64, intended_ns: u64, buf: &mut [u8]) -> Option<Message> {
        let n = self.plan.clients();
        let neighbor = (j % self.neighbors) as usize;
        let seq = j / self.neighbors;
        let channels = self.channels.len() as u64;
        let channel = ((seq + neighbor as u64) % channels) as usize;
        // DuckChat orders messages within a channel only, so each (neighbor, channel) pair is
        // a sender of its own for the receivers' accounting: the other neighbor gets this
        // neighbor's messages of all channels, through different owner shards.
        let stamp = Stamp {
            sender: (n + neighbor * channels as usize + channel) as u32,
            seq: seq / channels,
            intended_ns,
        }
        .encode();
        let say = Inbound::S2sSay(S2sSay {
            id: self.ids.next_u64(),
            user: self.users[neighbor].as_bytes(),
            channel: self.channels[channel].as_bytes(),
            text: stamp.as_bytes(),
        });
        Some(Message {
            socket: n + neighbor,
            len: say.encode(buf, SayLayout::UserFirst).ok()?,
            expected: self.plan.members[channel].len() as u64 + self.neighbors - 1,
            repeat: seq % REPEAT_EVERY == REPEAT_EVERY - 1,
            channel,
            stamp,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Membership;
    use chat_router::proto::duckchat::decode_inbound;

    #[test]
    fn churn_cycles_login_join_leave_logout_through_the_channels() {
        let plan = Plan::new(40, Membership::Fixed { members: 10 }, 1);
        let churn = Traffic::new(&plan, 0, 3, 1);
        let mut buf = [0u8; 256];
        let ops: Vec<(usize, Inbound<'static>)> = (0..15)
            .map(|k| {
                let (client, len) = churn.churn_operation(k, &mut buf).unwrap();
                let op = match decode_inbound(&buf[..len], SayLayout::UserFirst).unwrap() {
                    Inbound::Login { .. } => Inbound::Login { user: b"" },
                    Inbound::Join { channel } => Inbound::Join {
                        channel: if channel == b"c0" { b"c0" } else { b"other" },
                    },
                    Inbound::Leave { .. } => Inbound::Leave { channel: b"" },
                    Inbound::Logout => Inbound::Logout,
                    other => panic!("{other:?}"),
                };
                (client, op)
            })
            .collect();
        // Client 0: login (k=0), join c0 (k=3), leave (k=6), logout (k=9), login again (k=12).
        let client0: Vec<&Inbound> = ops.iter().filter(|o| o.0 == 0).map(|o| &o.1).collect();
        assert_eq!(client0.len(), 5);
        assert!(matches!(client0[0], Inbound::Login { .. }));
        assert_eq!(client0[1], &Inbound::Join { channel: b"c0" });
        assert!(matches!(client0[2], Inbound::Leave { .. }));
        assert_eq!(client0[3], &Inbound::Logout);
        assert!(matches!(client0[4], Inbound::Login { .. }));
    }

    #[test]
    fn clients_take_turns_without_neighbors() {
        let plan = Plan::new(4, Membership::Fixed { members: 2 }, 1);
        let mut t = Traffic::new(&plan, 0, 0, 1);
        let mut buf = [0u8; 256];
        let sockets: Vec<usize> = (0..8)
            .map(|k| t.message(k, 0, &mut buf).unwrap().socket)
            .collect();
        assert_eq!(sockets, vec![0, 1, 2, 3, 0, 1, 2, 3]);
        let m = t.message(5, 77, &mut buf).unwrap();
        assert_eq!((m.expected, m.repeat), (2, false));
        let Ok(Inbound::Say { channel, text }) =
            decode_inbound(&buf[..m.len], SayLayout::UserFirst)
        else {
            panic!("not a SAY");
        };
        assert_eq!(channel, b"c0");
        let stamp = Stamp::parse(text).unwrap();
        assert_eq!((stamp.sender, stamp.seq, stamp.intended_ns), (1, 1, 77));
    }

    #[test]
    fn neighbors_inject_every_other_message_and_repeat_some_ids() {
        let plan = Plan::new(4, Membership::Fixed { members: 2 }, 1);
        let mut t = Traffic::new(&plan, 3, 0, 1);
        let mut buf = [0u8; 256];
        // Local messages still fan out to every neighbor.
        let local = t.message(0, 0, &mut buf).unwrap();
        assert_eq!((local.socket, local.expected), (0, 2 + 3));
        let remote = t.message(1, 5, &mut buf).unwrap();
        assert_eq!((remote.socket, remote.expected), (4, 2 + 2));
        let Ok(Inbound::S2sSay(say)) = decode_inbound(&buf[..remote.len], SayLayout::UserFirst)
        else {
            panic!("not an S2S_SAY");
        };
        assert_eq!(say.user, b"n0");
        // The first remote sender id: neighbor 0 in channel 0 (clients are 0..4).
        assert_eq!(Stamp::parse(say.text).unwrap().sender, 4);
        let repeats = (0..2 * 3 * REPEAT_EVERY)
            .filter(|&k| t.message(k, 0, &mut buf).unwrap().repeat)
            .count();
        assert_eq!(
            repeats, 3,
            "one per neighbor per {REPEAT_EVERY} of its messages"
        );
    }
}
