//! A member list with O(1) insert, lookup and removal (a dense vector plus a position index,
//! removal by swap-remove), so joining, leaving and expiring cost the same in a channel of ten
//! members as in one of a hundred thousand, and fan-out still walks a contiguous vector.

use ahash::AHashMap;
use std::hash::Hash;

pub(super) struct Members<K, V> {
    list: Vec<(K, V)>,
    index: AHashMap<K, u32>,
}

impl<K, V> Default for Members<K, V> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            index: AHashMap::new(),
        }
    }
}

impl<K: Copy + Eq + Hash, V> Members<K, V> {
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(super) fn get(&self, key: &K) -> Option<&V> {
        let &i = self.index.get(key)?;
        Some(&self.list[i as usize].1)
    }

    pub(super) fn get_mut(&mut self, key: &K) -> Option<&mut V> {
        let &i = self.index.get(key)?;
        Some(&mut self.list[i as usize].1)
    }

    /// Adds `key` unless it is a member already; true when it was added.
    pub(super) fn insert(&mut self, key: K, value: V) -> bool {
        if self.index.contains_key(&key) {
            return false;
        }
        self.index.insert(key, self.list.len() as u32);
        self.list.push((key, value));
        debug_assert_eq!(self.index.len(), self.list.len());
        debug_assert!(
            self.list.len() < u32::MAX as usize,
            "members indexed by u32"
        );
        true
    }

    /// The member's value, if `key` was a member.
    pub(super) fn remove(&mut self, key: &K) -> Option<V> {
        let i = self.index.remove(key)? as usize;
        let (_, value) = self.list.swap_remove(i);
        if let Some((moved, _)) = self.list.get(i) {
            self.index.insert(*moved, i as u32);
        }
        debug_assert_eq!(self.index.len(), self.list.len());
        Some(value)
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = &(K, V)> {
        self.list.iter()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &V> {
        self.list.iter().map(|(_, v)| v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn swap_remove_keeps_the_index_right() {
        let mut m = Members::default();
        let a = |p: u16| u32::from(p) * 7;
        for p in 1..=5 {
            assert!(m.insert(a(p), p));
        }
        assert!(!m.insert(a(3), 30), "a member is not added twice");
        assert_eq!(m.remove(&a(1)), Some(1));
        assert_eq!(m.remove(&a(1)), None);
        assert_eq!(m.remove(&a(3)), Some(3));
        assert_eq!(m.len(), 3);
        for p in [2, 4, 5] {
            assert_eq!(m.get_mut(&a(p)), Some(&mut p.clone()));
        }
        let mut left: Vec<u16> = m.values().copied().collect();
        left.sort();
        assert_eq!(left, [2, 4, 5]);
        for p in [2, 4, 5] {
            assert_eq!(m.remove(&a(p)), Some(p));
        }
        assert!(m.is_empty());
    }
}
