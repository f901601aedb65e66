//! A home shard's table of client sessions for one protocol, keyed by source address and kept in
//! order of last activity (an intrusive doubly linked list over a slab). Every operation is O(1):
//! touching a session moves it to the front, so the longest-silent session is always at the back,
//! which is what both expiry (pop from the back while too old) and eviction of the longest-silent
//! session when the table is full need; neither ever scans the table.

use ahash::AHashMap;
use std::net::SocketAddr;
use std::time::Duration;

const NIL: u32 = u32::MAX;

struct Entry<S> {
    addr: SocketAddr,
    last_seen: Duration,
    /// Towards the most recently active session.
    newer: u32,
    /// Towards the longest-silent session.
    older: u32,
    session: Option<S>,
}

pub(super) struct Sessions<S> {
    index: AHashMap<SocketAddr, u32>,
    slots: Vec<Entry<S>>,
    free: Vec<u32>,
    /// The most recently active session.
    newest: u32,
    /// The longest-silent session.
    oldest: u32,
}

impl<S> Default for Sessions<S> {
    fn default() -> Self {
        Self {
            index: AHashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }
}

impl<S> Sessions<S> {
    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    pub(super) fn contains(&self, addr: &SocketAddr) -> bool {
        self.index.contains_key(addr)
    }

    pub(super) fn get(&self, addr: &SocketAddr) -> Option<&S> {
        let &slot = self.index.get(addr)?;
        self.slots[slot as usize].session.as_ref()
    }

    /// The session without counting this as activity.
    pub(super) fn get_mut(&mut self, addr: &SocketAddr) -> Option<&mut S> {
        let &slot = self.index.get(addr)?;
        self.slots[slot as usize].session.as_mut()
    }

    /// The session, marked active at `now` (it moves to the front of the activity order).
    pub(super) fn touch(&mut self, addr: &SocketAddr, now: Duration) -> Option<&mut S> {
        let &slot = self.index.get(addr)?;
        self.unlink(slot);
        self.push_newest(slot);
        let entry = &mut self.slots[slot as usize];
        entry.last_seen = now;
        entry.session.as_mut()
    }

    /// Adds a session for an address that has none; the caller keeps the table within its limit.
    pub(super) fn insert(&mut self, addr: SocketAddr, now: Duration, session: S) {
        debug_assert!(
            !self.index.contains_key(&addr),
            "{addr} already has a session"
        );
        let entry = Entry {
            addr,
            last_seen: now,
            newer: NIL,
            older: NIL,
            session: Some(session),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = entry;
                slot
            }
            None => {
                self.slots.push(entry);
                (self.slots.len() - 1) as u32
            }
        };
        self.index.insert(addr, slot);
        self.push_newest(slot);
    }

    pub(super) fn remove(&mut self, addr: &SocketAddr) -> Option<S> {
        let slot = self.index.remove(addr)?;
        self.unlink(slot);
        self.free.push(slot);
        self.slots[slot as usize].session.take()
    }

    /// The longest-silent session's address and when it was last active.
    pub(super) fn oldest(&self) -> Option<(SocketAddr, Duration)> {
        (self.oldest != NIL).then(|| {
            let entry = &self.slots[self.oldest as usize];
            (entry.addr, entry.last_seen)
        })
    }

    fn unlink(&mut self, slot: u32) {
        let (newer, older) = {
            let e = &self.slots[slot as usize];
            (e.newer, e.older)
        };
        match newer {
            NIL => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, slot: u32) {
        let previous = self.newest;
        {
            let e = &mut self.slots[slot as usize];
            e.newer = NIL;
            e.older = previous;
        }
        match previous {
            NIL => self.oldest = slot,
            p => self.slots[p as usize].newer = slot,
        }
        self.newest = slot;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The addresses from longest-silent to newest, walking the list both ways.
    fn order(t: &Sessions<u16>) -> Vec<u16> {
        let mut forward = Vec::new();
        let mut slot = t.oldest;
        while slot != NIL {
            forward.push(t.slots[slot as usize].addr.port());
            slot = t.slots[slot as usize].newer;
        }
        let mut backward = Vec::new();
        let mut slot = t.newest;
        while slot != NIL {
            backward.push(t.slots[slot as usize].addr.port());
            slot = t.slots[slot as usize].older;
        }
        backward.reverse();
        assert_eq!(forward, backward, "the two directions of the list disagree");
        assert_eq!(forward.len(), t.len());
        forward
    }

    #[test]
    fn activity_order_follows_touches_inserts_and_removals() {
        let mut t = Sessions::default();
        for p in 1..=4 {
            t.insert(addr(p), secs(p.into()), p);
        }
        assert_eq!(order(&t), [1, 2, 3, 4]);
        assert_eq!(t.touch(&addr(2), secs(10)), Some(&mut 2));
        assert_eq!(order(&t), [1, 3, 4, 2]);
        assert_eq!(t.oldest(), Some((addr(1), secs(1))));
        assert_eq!(t.remove(&addr(1)), Some(1));
        assert_eq!(order(&t), [3, 4, 2]);
        assert_eq!(t.remove(&addr(2)), Some(2));
        assert_eq!(order(&t), [3, 4]);
        // A freed slot is reused and the new session is the newest.
        t.insert(addr(9), secs(11), 9);
        assert_eq!(order(&t), [3, 4, 9]);
        assert_eq!(t.slots.len(), 4);
        assert_eq!(t.remove(&addr(7)), None);
        assert_eq!(t.touch(&addr(7), secs(12)), None);
        for p in [3, 4, 9] {
            t.remove(&addr(p));
        }
        assert_eq!(order(&t), Vec::<u16>::new());
        assert_eq!(t.oldest(), None);
    }

    #[test]
    fn get_mut_is_not_activity() {
        let mut t = Sessions::default();
        t.insert(addr(1), secs(1), 1u16);
        t.insert(addr(2), secs(2), 2);
        *t.get_mut(&addr(1)).unwrap() = 5;
        assert_eq!(order(&t), [1, 2]);
        assert_eq!(t.get(&addr(1)), Some(&5));
    }
}
