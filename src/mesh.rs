//! One shard's sending side of the mesh of queues between shards. A message whose queue is
//! full waits here, and every later message to that shard waits behind it, so order between
//! two shards is kept. Membership and requests that expect an answer (control) are never
//! dropped: they wait however long it takes, and while too many wait the shard stops reading
//! its socket (the kernel then drops at the socket, counted as `kernel_drops`), which bounds
//! them. Chat (data) that would have to wait behind too many is dropped and counted.
//!
//! The queue itself is the caller's (`push` hands a message back when it is full), so the
//! runtime's lock-free queues and the simulator's bounded ones share this logic.

use crate::engine::{Counters, DropReason, ShardMsg};
use std::collections::VecDeque;

/// Messages waiting for one shard before data is dropped.
pub const MAX_WAITING: usize = 4096;
/// Control messages waiting in all before the shard stops reading its socket.
pub const MAX_WAITING_CONTROL: usize = 16_384;

pub struct Outgoing {
    waiting: Vec<VecDeque<ShardMsg>>,
    /// Messages waiting in all, and control messages among them.
    total: usize,
    control: usize,
}

impl Outgoing {
    pub fn new(shards: usize) -> Self {
        Self {
            waiting: (0..shards).map(|_| VecDeque::new()).collect(),
            total: 0,
            control: 0,
        }
    }

    /// Sends `msg` to shard `to` through `push`, or keeps it waiting, or (data only) drops it.
    pub fn send<P>(&mut self, to: usize, msg: ShardMsg, push: &mut P, counters: &Counters)
    where
        P: FnMut(usize, ShardMsg) -> Option<ShardMsg>,
    {
        let msg = if self.waiting[to].is_empty() {
            match push(to, msg) {
                None => return,
                Some(msg) => msg,
            }
        } else {
            msg
        };
        if msg.is_control() {
            self.control += 1;
        } else if self.waiting[to].len() >= MAX_WAITING {
            return counters.dropped(DropReason::QueueFull);
        }
        self.waiting[to].push_back(msg);
        self.total += 1;
    }

    /// Hands waiting messages to their queues, oldest first, while there is room; returns how
    /// many went.
    pub fn retry<P>(&mut self, push: &mut P) -> usize
    where
        P: FnMut(usize, ShardMsg) -> Option<ShardMsg>,
    {
        if self.total == 0 {
            return 0;
        }
        let mut moved = 0;
        for (to, waiting) in self.waiting.iter_mut().enumerate() {
            while let Some(msg) = waiting.pop_front() {
                let control = msg.is_control();
                if let Some(msg) = push(to, msg) {
                    waiting.push_front(msg);
                    break;
                }
                self.control -= usize::from(control);
                self.total -= 1;
                moved += 1;
            }
        }
        moved
    }

    pub fn is_empty(&self) -> bool {
        debug_assert_eq!(
            self.total,
            self.waiting.iter().map(VecDeque::len).sum::<usize>()
        );
        self.total == 0
    }

    /// So many control messages wait that the shard must stop taking new work from its socket.
    pub fn backlogged(&self) -> bool {
        self.control >= MAX_WAITING_CONTROL
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Chat;
    use crate::proto::{Name, Text};

    /// A control message that says which it was.
    fn added(i: u16) -> ShardMsg {
        ShardMsg::ChannelAdded(Name::from(i.to_string().as_str()))
    }

    fn said() -> ShardMsg {
        ShardMsg::Said {
            channel: Name::from("c"),
            chat: Chat::Short {
                user: Name::from("u"),
                text: Text::from("hi"),
            },
            session: crate::engine::SessionId::for_tests(1),
        }
    }

    #[test]
    fn control_waits_in_order_and_data_is_dropped_only_behind_too_many() {
        let counters = Counters::default();
        let mut queue: Vec<ShardMsg> = Vec::new();
        let mut out = Outgoing::new(2);
        {
            // A queue with room for two.
            let mut push = |_to: usize, msg: ShardMsg| -> Option<ShardMsg> {
                if queue.len() < 2 {
                    queue.push(msg);
                    None
                } else {
                    Some(msg)
                }
            };
            for i in 0..10 {
                out.send(1, added(i), &mut push, &counters);
            }
            for _ in 0..MAX_WAITING + 10 {
                out.send(1, said(), &mut push, &counters);
            }
            assert_eq!(out.retry(&mut push), 0, "still no room");
        }
        // 2 went; 8 control messages wait, and data behind them up to MAX_WAITING in all.
        assert_eq!(counters.drops(DropReason::QueueFull), 18);
        assert!(!out.is_empty() && !out.backlogged());
        let mut push = |_to: usize, msg: ShardMsg| -> Option<ShardMsg> {
            queue.push(msg);
            None
        };
        assert_eq!(out.retry(&mut push), MAX_WAITING);
        assert!(out.is_empty());
        let controls: Vec<u16> = queue
            .iter()
            .filter_map(|m| match m {
                ShardMsg::ChannelAdded(name) => name.to_string().parse().ok(),
                _ => None,
            })
            .collect();
        assert_eq!(
            controls,
            (0..10).collect::<Vec<_>>(),
            "every control message, in order"
        );
    }

    #[test]
    fn too_much_waiting_control_stops_the_socket() {
        let counters = Counters::default();
        let mut out = Outgoing::new(1);
        let mut full = |_to: usize, msg: ShardMsg| -> Option<ShardMsg> { Some(msg) };
        for i in 0..MAX_WAITING_CONTROL {
            assert!(!out.backlogged());
            out.send(0, added(i as u16), &mut full, &counters);
        }
        assert!(out.backlogged());
        assert_eq!(
            counters.drops(DropReason::QueueFull),
            0,
            "control is never dropped"
        );
        let mut open = |_to: usize, _msg: ShardMsg| -> Option<ShardMsg> { None };
        out.retry(&mut open);
        assert!(!out.backlogged() && out.is_empty());
    }
}
