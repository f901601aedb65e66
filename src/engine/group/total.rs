//! ISIS total order for one room at one server. A message is known by its id (origin server,
//! the origin's counter for the room), never by its text. Each server proposes
//! `max(proposed, agreed) + 1` for each message it receives (the origin for its own as well);
//! the origin takes the largest (priority, proposer) of all N proposals as agreed; every server
//! keeps its hold-back queue sorted by (priority, proposer) and delivers only from the head,
//! and only what is agreed.
//!
//! A server that is excluded (crashed, or silent too long) stops being waited for: the
//! origin agrees once every server still in the cluster has proposed, and what the excluded
//! server itself had started is resolved by the survivors together ([`super`]): a message that
//! one of them saw agreed is delivered at that priority by all, the others by none.
//!
//! FIFO-total: a server receives each origin's messages in the order the origin sent them (the
//! stream between two servers is in order) and proposes in that order, so its proposals for one
//! origin increase; the maximum over all servers then increases too, and a client's messages
//! are delivered in the order it sent them even though the network reorders.

use super::super::Chat;
use ahash::AHashMap;
use std::collections::BTreeMap;

/// (origin server, origin's counter).
pub type MsgId = (u16, u64);

/// Hold-back order: (priority, proposer) decides; the id only breaks ties between a final and a
/// tentative priority that happen to be equal, so the order is a total one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    priority: u64,
    proposer: u16,
    id: MsgId,
}

struct Held {
    deliverable: bool,
    chat: Chat,
}

/// Proposals gathered for one of this server's own messages.
struct Gathering {
    /// A bit per server that was sent the message (this one included) and is still in the
    /// cluster: they must all propose.
    expect: u64,
    from: u64,
    best: (u64, u16),
}

impl Gathering {
    fn complete(&self) -> bool {
        self.from & self.expect == self.expect
    }
}

pub struct TotalOrder {
    me: u16,
    proposed: u64,
    agreed: u64,
    holdback: BTreeMap<Key, Held>,
    tentative: AHashMap<MsgId, Key>,
    gathering: AHashMap<u64, Gathering>,
}

/// The most servers a cluster may have (one bit each in [`Gathering`]).
pub const MAX_SERVERS: usize = crate::proto::group::MAX_SERVERS;
/// Messages a room holds back at most: a peer that sends messages and never agrees them is
/// refused beyond this (an honest origin is bounded by its stream window long before).
pub const MAX_HELD: usize = 16 * super::stream::WINDOW;

impl TotalOrder {
    pub fn new(me: u16) -> Self {
        assert!((me as usize) < MAX_SERVERS);
        Self {
            me,
            proposed: 0,
            agreed: 0,
            holdback: BTreeMap::new(),
            tentative: AHashMap::new(),
            gathering: AHashMap::new(),
        }
    }

    /// A message arrives (or is sent, when `id.0` is this server, to the servers in `expect`):
    /// holds it back and returns this server's proposal. `None` for an id already held, or
    /// when the room holds all it may.
    pub fn receive(&mut self, id: MsgId, chat: Chat, expect: u64) -> Option<u64> {
        if self.tentative.contains_key(&id) || self.holdback.len() >= MAX_HELD {
            return None;
        }
        let priority = self.proposed.max(self.agreed) + 1;
        self.proposed = priority;
        let key = Key {
            priority,
            proposer: self.me,
            id,
        };
        self.tentative.insert(id, key);
        self.holdback.insert(
            key,
            Held {
                deliverable: false,
                chat,
            },
        );
        if id.0 == self.me {
            self.gathering.insert(
                id.1,
                Gathering {
                    expect: expect | 1 << self.me,
                    from: 0,
                    best: (0, 0),
                },
            );
        }
        Some(priority)
    }

    /// A proposal for this server's message `counter` (its own included). Returns the agreed
    /// (priority, proposer) once every server has proposed.
    pub fn propose(&mut self, counter: u64, priority: u64, proposer: u16) -> Option<(u64, u16)> {
        let g = self.gathering.get_mut(&counter)?;
        let bit = 1u64.checked_shl(u32::from(proposer))?;
        if g.expect & bit == 0 || g.from & bit != 0 {
            return None;
        }
        g.from |= bit;
        g.best = g.best.max((priority, proposer));
        if !g.complete() {
            return None;
        }
        let best = g.best;
        self.gathering.remove(&counter);
        Some(best)
    }

    /// `server` left the cluster: its proposals are waited for no more. Returns the messages
    /// of this server that are now agreed (counter, priority, proposer).
    pub fn exclude(&mut self, server: u16) -> Vec<(u64, u64, u16)> {
        let mut agreed = Vec::new();
        self.gathering.retain(|&counter, g| {
            g.expect &= !(1 << server);
            if g.complete() {
                agreed.push((counter, g.best.0, g.best.1));
                return false;
            }
            true
        });
        agreed.sort_unstable();
        agreed
    }

    /// The survivors have resolved what excluded `origin` started: its messages not agreed by
    /// now are delivered by none. Whatever that unblocks goes to `ready`, in order.
    pub fn forget_origin(&mut self, origin: u16, ready: &mut Vec<(MsgId, Chat)>) {
        self.tentative.retain(|id, key| {
            if id.0 != origin {
                return true;
            }
            self.holdback.remove(key);
            false
        });
        self.deliver_from_head(ready);
    }

    /// The agreed priority of message `id`: it moves to its final place and becomes deliverable.
    /// Whatever can now be delivered from the head goes to `ready`, in order. False when `id` is
    /// not held (a duplicate or a confused peer).
    pub fn agree(
        &mut self,
        id: MsgId,
        priority: u64,
        proposer: u16,
        ready: &mut Vec<(MsgId, Chat)>,
    ) -> bool {
        let Some(old) = self.tentative.remove(&id) else {
            return false;
        };
        let Some(mut held) = self.holdback.remove(&old) else {
            return false;
        };
        self.agreed = self.agreed.max(priority);
        debug_assert!(!held.deliverable, "agreed twice");
        held.deliverable = true;
        self.holdback.insert(
            Key {
                priority,
                proposer,
                id,
            },
            held,
        );
        self.deliver_from_head(ready);
        true
    }

    fn deliver_from_head(&mut self, ready: &mut Vec<(MsgId, Chat)>) {
        let mut last: Option<(u64, u16)> = None;
        while let Some(entry) = self.holdback.first_entry() {
            if !entry.get().deliverable {
                break;
            }
            let key = entry.key();
            // Total order: priorities (and proposers among equals) never go back.
            debug_assert!(last.is_none_or(|l| l <= (key.priority, key.proposer)));
            last = Some((key.priority, key.proposer));
            let id = key.id;
            ready.push((id, entry.remove().chat));
        }
        debug_assert!(
            self.holdback
                .first_key_value()
                .is_none_or(|(_, h)| !h.deliverable),
            "a deliverable message left at the head"
        );
    }

    /// Messages held back (tentative and agreed but blocked).
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.holdback.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(t: &str) -> Chat {
        Chat::new(b"u", t.as_bytes())
    }

    fn texts(ready: &[(MsgId, Chat)]) -> Vec<String> {
        ready
            .iter()
            .map(|(_, c)| String::from_utf8_lossy(c.text()).into_owned())
            .collect()
    }

    #[test]
    fn delivers_only_from_the_head() {
        // Server 0 of 2 holds a (from server 1) and its own b.
        let mut t = TotalOrder::new(0);
        assert_eq!(t.receive((1, 1), chat("a"), 0), Some(1));
        assert_eq!(t.receive((0, 1), chat("b"), 0b10), Some(2));
        assert_eq!(t.receive((0, 1), chat("b"), 0b10), None, "held already");
        assert_eq!(t.propose(1, 2, 0), None, "own proposal counts, one missing");
        assert_eq!(
            t.propose(1, 2, 0),
            None,
            "a repeated proposer does not count twice"
        );
        assert_eq!(t.propose(1, 1, 1), Some((2, 0)));
        let mut ready = Vec::new();
        assert!(t.agree((0, 1), 2, 0, &mut ready));
        assert!(
            ready.is_empty(),
            "b is deliverable but a (tentative 1) is the head"
        );
        assert!(t.agree((1, 1), 3, 1, &mut ready));
        assert_eq!(
            texts(&ready),
            ["b", "a"],
            "a's final priority 3 sorts after b's 2"
        );
        assert_eq!(t.held(), 0);
        assert!(!t.agree((1, 1), 3, 1, &mut ready));
    }

    #[test]
    fn ties_on_priority_break_by_proposer_not_origin() {
        let mut t = TotalOrder::new(2);
        t.receive((0, 1), chat("x"), 0);
        t.receive((1, 1), chat("y"), 0);
        let mut ready = Vec::new();
        // Both agreed at priority 5; y's proposer (0) sorts before x's proposer (2).
        t.agree((0, 1), 5, 2, &mut ready);
        t.agree((1, 1), 5, 0, &mut ready);
        assert_eq!(texts(&ready), ["y", "x"]);
    }

    #[test]
    fn proposals_follow_the_largest_agreed_priority() {
        let mut t = TotalOrder::new(1);
        t.receive((0, 1), chat("x"), 0);
        let mut ready = Vec::new();
        t.agree((0, 1), 40, 0, &mut ready);
        assert_eq!(t.receive((0, 2), chat("y"), 0), Some(41));
        assert_eq!(t.propose(9, 1, 0), None, "unknown counter");
        assert_eq!(t.propose(1, 1, 7), None, "not sent to that server");
        assert_eq!(t.propose(1, 1, 900), None, "no such server");
    }

    #[test]
    fn an_excluded_server_is_waited_for_no_more_and_its_open_messages_go() {
        // Server 0 of 3 sent its message 1 to 1 and 2; 2 crashes before proposing.
        let mut t = TotalOrder::new(0);
        t.receive((0, 1), chat("mine"), 0b110);
        t.receive((2, 1), chat("theirs"), 0);
        assert_eq!(t.propose(1, 1, 0), None);
        assert_eq!(t.propose(1, 3, 1), None, "2 has not proposed");
        assert_eq!(t.exclude(2), vec![(1, 3, 1)]);
        let mut ready = Vec::new();
        t.agree((0, 1), 3, 1, &mut ready);
        assert!(
            ready.is_empty(),
            "2's open message (tentative 2) blocks the head"
        );
        t.forget_origin(2, &mut ready);
        assert_eq!(texts(&ready), ["mine"]);
        assert_eq!(t.held(), 0);
    }

    #[test]
    fn a_room_holds_a_bounded_number_of_messages() {
        let mut t = TotalOrder::new(0);
        for c in 0..MAX_HELD as u64 {
            assert!(t.receive((1, c), chat("x"), 0).is_some());
        }
        assert_eq!(t.receive((1, u64::MAX), chat("x"), 0), None);
    }
}
