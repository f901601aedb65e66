//! A home shard's table of client sessions, of every protocol, in order of last activity (an
//! intrusive doubly linked list over a slab). A session is named by a [`SessionId`]: its home
//! shard, its slot and the slot's generation, so an id that outlives its session (in a message
//! between shards, a waiting answer) never reaches the slot's next occupant. Requests find their
//! session by [`Key`]: the endpoint they came from and the protocol they speak.
//!
//! Every operation is O(1): touching a session moves it to the front, so the longest-silent
//! session is always at the back, which is what both expiry (pop from the back while too old) and
//! eviction of the longest-silent session when the table is full need; neither scans the table.
//!
//! Sessions are kept in one list per [`Standing`], so that a full table evicts the sessions that
//! never did more than log in (all that a flood of forged logins makes) before any that did,
//! and never one signed in to an account; expiry takes the longest-silent of all.

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

/// What a session has shown, which decides the order in which a full table evicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Standing {
    /// Began (a login, a first join) and did nothing since: what a forged source makes.
    Fresh,
    /// Made a request after the one that began it, or has shown it receives.
    Active,
    /// Signed in to an account: never evicted for a newcomer, who is anonymous.
    SignedIn,
}

impl Standing {
    const COUNT: usize = 3;
}

/// One standing's sessions, in order of activity.
#[derive(Clone, Copy)]
struct List {
    /// The most recently active session.
    newest: u32,
    /// The longest-silent session.
    oldest: u32,
}

const EMPTY: List = List {
    newest: NIL,
    oldest: NIL,
};

struct Entry<S> {
    key: Key,
    generation: u32,
    last_seen: Duration,
    standing: Standing,
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
    lists: [List; Standing::COUNT],
}

impl<S> Sessions<S> {
    pub(super) fn new(home: u16) -> Self {
        Self {
            home,
            index: AHashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            lists: [EMPTY; Standing::COUNT],
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

    /// Raises the session's standing to `standing` (never lowers it).
    pub(super) fn raise(&mut self, id: SessionId, standing: Standing) {
        let Some(entry) = self.entry(id) else {
            return;
        };
        if entry.standing >= standing {
            return;
        }
        self.unlink(id.slot);
        self.slots[id.slot as usize].standing = standing;
        self.push_newest(id.slot);
    }

    /// Adds a session for a key that has none; the caller keeps the table within its limit.
    pub(super) fn insert(
        &mut self,
        key: Key,
        now: Duration,
        standing: Standing,
        session: S,
    ) -> SessionId {
        debug_assert!(!self.index.contains_key(&key), "{key:?} has a session");
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                assert!(self.slots.len() < NIL as usize, "session slots exhausted");
                self.slots.push(Entry {
                    key,
                    generation: 0,
                    last_seen: now,
                    standing,
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
        entry.standing = standing;
        entry.session = Some(session);
        let replaced = self.index.insert(key, slot);
        debug_assert!(replaced.is_none(), "two sessions for one key");
        self.push_newest(slot);
        debug_assert_eq!(
            self.lists[standing as usize].newest, slot,
            "the newest session"
        );
        debug_assert!(
            self.free.len() + self.len() == self.slots.len(),
            "slots leak"
        );
        self.id(slot)
    }

    /// Finds the session by `key` from now on (its id stays); false when `key` has one already.
    pub(super) fn rekey(&mut self, id: SessionId, key: Key) -> bool {
        if self.entry(id).is_none() || self.index.contains_key(&key) {
            return false;
        }
        let entry = &mut self.slots[id.slot as usize];
        let removed = self.index.remove(&entry.key);
        debug_assert_eq!(removed, Some(id.slot), "a session's key finds its slot");
        entry.key = key;
        self.index.insert(key, id.slot);
        true
    }

    /// Forgets the session; its slot's next occupant gets a new generation.
    pub(super) fn remove(&mut self, id: SessionId) -> Option<(Key, S)> {
        let before = self.len();
        self.entry(id)?;
        let entry = &mut self.slots[id.slot as usize];
        let session = entry.session.take()?;
        let key = entry.key;
        entry.generation = entry.generation.wrapping_add(1);
        let removed = self.index.remove(&key);
        debug_assert_eq!(removed, Some(id.slot), "a session's key finds its slot");
        self.unlink(id.slot);
        self.free.push(id.slot);
        debug_assert_eq!(self.len() + 1, before, "one session fewer");
        debug_assert!(
            self.free.len() + self.len() == self.slots.len(),
            "slots leak"
        );
        Some((key, session))
    }

    /// The longest-silent session of any standing and when it was last active (for expiry).
    pub(super) fn oldest(&self) -> Option<(SessionId, Duration)> {
        self.lists
            .iter()
            .filter(|l| l.oldest != NIL)
            .map(|l| (self.id(l.oldest), self.slots[l.oldest as usize].last_seen))
            .min_by_key(|&(_, seen)| seen)
    }

    /// The session a full table evicts for an anonymous newcomer: the longest-silent of the
    /// lowest standing there is, never one signed in.
    pub(super) fn evictable(&self) -> Option<SessionId> {
        [Standing::Fresh, Standing::Active]
            .into_iter()
            .map(|s| self.lists[s as usize].oldest)
            .find(|&slot| slot != NIL)
            .map(|slot| self.id(slot))
    }

    /// Every live session (for checks and counts, never on a hot path).
    pub(super) fn iter(&self) -> impl Iterator<Item = (SessionId, &S)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(slot, e)| Some((self.id(slot as u32), e.session.as_ref()?)))
    }

    fn unlink(&mut self, slot: u32) {
        let (newer, older, standing) = {
            let e = &self.slots[slot as usize];
            (e.newer, e.older, e.standing)
        };
        let list = &mut self.lists[standing as usize];
        debug_assert!(
            list.newest != NIL && list.oldest != NIL,
            "unlinked from an empty list"
        );
        match newer {
            NIL => list.newest = older,
            n => self.slots[n as usize].older = older,
        }
        match older {
            NIL => list.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
    }

    fn push_newest(&mut self, slot: u32) {
        let standing = self.slots[slot as usize].standing;
        let list = &mut self.lists[standing as usize];
        let previous = list.newest;
        list.newest = slot;
        if previous == NIL {
            list.oldest = slot;
        }
        debug_assert!(previous != slot, "a session listed twice");
        let e = &mut self.slots[slot as usize];
        e.newer = NIL;
        e.older = previous;
        if previous != NIL {
            self.slots[previous as usize].newer = slot;
        }
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

    /// The sessions of one standing from longest-silent to newest, walking its list both ways.
    fn order_of(t: &Sessions<u16>, standing: Standing) -> Vec<u16> {
        let list = t.lists[standing as usize];
        let mut forward = Vec::new();
        let mut slot = list.oldest;
        while slot != NIL {
            forward.push(t.slots[slot as usize].session.unwrap());
            slot = t.slots[slot as usize].newer;
        }
        let mut backward = Vec::new();
        let mut slot = list.newest;
        while slot != NIL {
            backward.push(t.slots[slot as usize].session.unwrap());
            slot = t.slots[slot as usize].older;
        }
        backward.reverse();
        assert_eq!(forward, backward, "the two directions of the list disagree");
        forward
    }

    /// The fresh sessions in order (the tests insert only those), checking that no session is
    /// in another list.
    fn order(t: &Sessions<u16>) -> Vec<u16> {
        let fresh = order_of(t, Standing::Fresh);
        assert_eq!(fresh.len(), t.len());
        fresh
    }

    #[test]
    fn a_full_table_evicts_the_fresh_first_and_never_the_signed_in() {
        let mut t = Sessions::new(0);
        let real = t.insert(key(1), secs(1), Standing::Fresh, 1u16);
        t.touch(real, secs(2));
        t.raise(real, Standing::Active);
        let owner = t.insert(key(2), secs(3), Standing::Fresh, 2);
        t.raise(owner, Standing::SignedIn);
        let forged: Vec<SessionId> = (10..14)
            .map(|p| t.insert(key(p), secs(p.into()), Standing::Fresh, p))
            .collect();
        assert_eq!(order_of(&t, Standing::Active), [1]);
        assert_eq!(order_of(&t, Standing::SignedIn), [2]);
        assert_eq!(
            t.oldest(),
            Some((real, secs(2))),
            "expiry looks at every standing"
        );
        for &f in &forged {
            assert_eq!(t.evictable(), Some(f), "the longest-silent fresh one");
            t.remove(f);
        }
        assert_eq!(t.evictable(), Some(real), "then the active ones");
        t.remove(real);
        assert_eq!(t.evictable(), None, "never one signed in");
        t.raise(owner, Standing::Fresh);
        assert_eq!(
            order_of(&t, Standing::SignedIn),
            [2],
            "a standing is never lowered"
        );
    }

    #[test]
    fn activity_order_follows_touches_inserts_and_removals() {
        let mut t = Sessions::new(0);
        let ids: Vec<SessionId> = (1..=4)
            .map(|p| t.insert(key(p), secs(p.into()), Standing::Fresh, p))
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
        let nine = t.insert(key(9), secs(11), Standing::Fresh, 9);
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
        let old = t.insert(key(1), secs(1), Standing::Fresh, 1u16);
        t.remove(old);
        let new = t.insert(key(2), secs(2), Standing::Fresh, 2);
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
        let one = t.insert(key(1), secs(1), Standing::Fresh, 1u16);
        t.insert(key(2), secs(2), Standing::Fresh, 2);
        *t.get_mut(one).unwrap() = 5;
        assert_eq!(order(&t), [5, 2]);
        assert_eq!(t.get(one), Some(&5));
    }
}
