//! A home shard's table of client sessions, of every protocol, in order of last activity (an
//! intrusive doubly linked list over a slab). A session is named by a [`SessionId`]: its home
//! shard, its slot and the slot's generation, so an id that outlives its session (in a message
//! between shards, a waiting answer) never reaches the slot's next occupant. Requests find their
//! session by [`Key`]: the endpoint they came from and the protocol they speak.
//!
//! Every operation is O(1): touching a session moves it to the front, so the longest-silent
//! session is always at the back, which is what both expiry (pop from the back while too old) and
//! eviction of the longest-silent session when the table is full need; neither scans the table.

use super::frontend::Protocol;
use super::Endpoint;
use ahash::AHashMap;
use std::time::Duration;

/// One session, on every shard: the slot on its home shard and the slot's generation then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId {
    pub home: u16,
    slot: u32,
    generation: u32,
}

#[cfg(test)]
impl SessionId {
    /// An id of shard 0 for tests outside the engine.
    pub fn for_tests(slot: u16) -> Self {
        Self {
            home: 0,
            slot: u32::from(slot),
            generation: 0,
        }
    }
}

/// How a request finds its session.
pub type Key = (Endpoint, Protocol);

const NIL: u32 = u32::MAX;

struct Entry<S> {
    key: Key,
    generation: u32,
    last_seen: Duration,
    /// Towards the most recently active session.
    newer: u32,
    /// Towards the longest-silent session.
    older: u32,
    session: Option<S>,
}

pub(super) struct Sessions<S> {
    home: u16,
    index: AHashMap<Key, u32>,
    slots: Vec<Entry<S>>,
    free: Vec<u32>,
    /// The most recently active session.
    newest: u32,
    /// The longest-silent session.
    oldest: u32,
}

impl<S> Sessions<S> {
    pub(super) fn new(home: u16) -> Self {
        Self {
            home,
            index: AHashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            newest: NIL,
            oldest: NIL,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.index.len()
    }

    /// The session of `key`, if there is one.
    pub(super) fn find(&self, key: &Key) -> Option<SessionId> {
        let &slot = self.index.get(key)?;
        Some(self.id(slot))
    }

    fn id(&self, slot: u32) -> SessionId {
        SessionId {
            home: self.home,
            slot,
            generation: self.slots[slot as usize].generation,
        }
    }

    /// The live entry `id` names: none for another shard's id or an old generation.
    fn entry(&self, id: SessionId) -> Option<&Entry<S>> {
        let e = self.slots.get(id.slot as usize)?;
        let live = id.home == self.home && e.generation == id.generation && e.session.is_some();
        live.then_some(e)
    }

    pub(super) fn get(&self, id: SessionId) -> Option<&S> {
        self.entry(id)?.session.as_ref()
    }

    /// The session without counting this as activity.
    pub(super) fn get_mut(&mut self, id: SessionId) -> Option<&mut S> {
        self.entry(id)?;
        self.slots[id.slot as usize].session.as_mut()
    }

    pub(super) fn key(&self, id: SessionId) -> Option<Key> {
        Some(self.entry(id)?.key)
    }

    /// Marks the session active at `now` (it moves to the front of the activity order).
    pub(super) fn touch(&mut self, id: SessionId, now: Duration) {
        if self.entry(id).is_none() {
            return;
        }
        self.unlink(id.slot);
        self.push_newest(id.slot);
        self.slots[id.slot as usize].last_seen = now;
    }

    /// Adds a session for a key that has none; the caller keeps the table within its limit.
    pub(super) fn insert(&mut self, key: Key, now: Duration, session: S) -> SessionId {
        debug_assert!(!self.index.contains_key(&key), "{key:?} has a session");
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                assert!(self.slots.len() < NIL as usize, "session slots exhausted");
                self.slots.push(Entry {
                    key,
                    generation: 0,
                    last_seen: now,
                    newer: NIL,
                    older: NIL,
                    session: None,
                });
                (self.slots.len() - 1) as u32
            }
        };
        let entry = &mut self.slots[slot as usize];
        debug_assert!(entry.session.is_none(), "a free slot holds a session");
        entry.key = key;
        entry.last_seen = now;
        entry.session = Some(session);
        self.index.insert(key, slot);
        self.push_newest(slot);
        self.id(slot)
    }

    /// Finds the session by `key` from now on (its id stays); false when `key` has one already.
    pub(super) fn rekey(&mut self, id: SessionId, key: Key) -> bool {
        if self.entry(id).is_none() || self.index.contains_key(&key) {
            return false;
        }
        let entry = &mut self.slots[id.slot as usize];
        self.index.remove(&entry.key);
        entry.key = key;
        self.index.insert(key, id.slot);
        true
    }

    /// Forgets the session; its slot's next occupant gets a new generation.
    pub(super) fn remove(&mut self, id: SessionId) -> Option<(Key, S)> {
        self.entry(id)?;
        let entry = &mut self.slots[id.slot as usize];
        let session = entry.session.take()?;
        let key = entry.key;
        entry.generation = entry.generation.wrapping_add(1);
        self.index.remove(&key);
        self.unlink(id.slot);
        self.free.push(id.slot);
        Some((key, session))
    }

    /// The longest-silent session and when it was last active.
    pub(super) fn oldest(&self) -> Option<(SessionId, Duration)> {
        (self.oldest != NIL).then(|| {
            let seen = self.slots[self.oldest as usize].last_seen;
            (self.id(self.oldest), seen)
        })
    }

    /// Every live session (for checks and counts, never on a hot path).
    pub(super) fn iter(&self) -> impl Iterator<Item = (SessionId, &S)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| Some((self.id(slot as u32), e.session.as_ref()?)))
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
    use std::net::SocketAddr;

    fn key(port: u16) -> Key {
        (
            Endpoint::Udp(SocketAddr::from(([127, 0, 0, 1], port))),
            Protocol::DuckChat,
        )
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The sessions from longest-silent to newest, walking the list both ways.
    fn order(t: &Sessions<u16>) -> Vec<u16> {
        let mut forward = Vec::new();
        let mut slot = t.oldest;
        while slot != NIL {
            forward.push(t.slots[slot as usize].session.unwrap());
            slot = t.slots[slot as usize].newer;
        }
        let mut backward = Vec::new();
        let mut slot = t.newest;
        while slot != NIL {
            backward.push(t.slots[slot as usize].session.unwrap());
            slot = t.slots[slot as usize].older;
        }
        backward.reverse();
        assert_eq!(forward, backward, "the two directions of the list disagree");
        assert_eq!(forward.len(), t.len());
        forward
    }

    #[test]
    fn activity_order_follows_touches_inserts_and_removals() {
        let mut t = Sessions::new(0);
        let ids: Vec<SessionId> = (1..=4)
            .map(|p| t.insert(key(p), secs(p.into()), p))
            .collect();
        assert_eq!(order(&t), [1, 2, 3, 4]);
        t.touch(ids[1], secs(10));
        assert_eq!(order(&t), [1, 3, 4, 2]);
        assert_eq!(t.oldest(), Some((ids[0], secs(1))));
        assert_eq!(t.remove(ids[0]), Some((key(1), 1)));
        assert_eq!(order(&t), [3, 4, 2]);
        assert_eq!(t.remove(ids[1]), Some((key(2), 2)));
        assert_eq!(order(&t), [3, 4]);
        // A freed slot is reused and the new session is the newest.
        let nine = t.insert(key(9), secs(11), 9);
        assert_eq!(order(&t), [3, 4, 9]);
        assert_eq!(t.slots.len(), 4);
        assert_eq!(t.find(&key(9)), Some(nine));
        assert_eq!(t.find(&key(7)), None);
        for id in [ids[2], ids[3], nine] {
            t.remove(id);
        }
        assert_eq!(order(&t), Vec::<u16>::new());
        assert_eq!(t.oldest(), None);
    }

    #[test]
    fn an_old_id_never_reaches_the_slots_next_session() {
        let mut t = Sessions::new(3);
        let old = t.insert(key(1), secs(1), 1u16);
        t.remove(old);
        let new = t.insert(key(2), secs(2), 2);
        assert_eq!(
            (old.slot, old.home),
            (new.slot, new.home),
            "the slot is reused"
        );
        assert_ne!(old, new);
        assert_eq!(t.get(old), None);
        assert_eq!(t.get_mut(old), None);
        assert_eq!(t.remove(old), None);
        t.touch(old, secs(9));
        assert_eq!(
            t.oldest(),
            Some((new, secs(2))),
            "touching an old id moves nothing"
        );
        assert_eq!(t.get(new), Some(&2));
        let elsewhere = SessionId { home: 4, ..new };
        assert_eq!(t.get(elsewhere), None, "another shard's id");
    }

    #[test]
    fn get_mut_is_not_activity() {
        let mut t = Sessions::new(0);
        let one = t.insert(key(1), secs(1), 1u16);
        t.insert(key(2), secs(2), 2);
        *t.get_mut(one).unwrap() = 5;
        assert_eq!(order(&t), [5, 2]);
        assert_eq!(t.get(one), Some(&5));
    }
}
