//! A member list with O(1) insert, lookup and removal (a dense vector plus a position index,
//! removal by swap-remove), so joining, leaving and expiring cost the same in a channel of ten
//! members as in one of a hundred thousand, and fan-out still walks a contiguous vector.

use ahash::AHashMap;
use std::net::SocketAddr;

pub(super) struct Members<V> {
    list: Vec<(SocketAddr, V)>,
    index: AHashMap<SocketAddr, u32>,
}

impl<V> Default for Members<V> {
    fn default() -> Self {
        Self {
            list: Vec::new(),
            index: AHashMap::new(),
        }
    }
}

impl<V> Members<V> {
    pub(super) fn len(&self) -> usize {
        self.list.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    pub(super) fn get_mut(&mut self, addr: &SocketAddr) -> Option<&mut V> {
        let &i = self.index.get(addr)?;
        Some(&mut self.list[i as usize].1)
    }

    /// Adds `addr` unless it is a member already; true when it was added.
    pub(super) fn insert(&mut self, addr: SocketAddr, value: V) -> bool {
        if self.index.contains_key(&addr) {
            return false;
        }
        self.index.insert(addr, self.list.len() as u32);
        self.list.push((addr, value));
        true
    }

    /// The member's value, if `addr` was a member.
    pub(super) fn remove(&mut self, addr: &SocketAddr) -> Option<V> {
        let i = self.index.remove(addr)? as usize;
        let (_, value) = self.list.swap_remove(i);
        if let Some((moved, _)) = self.list.get(i) {
            self.index.insert(*moved, i as u32);
        }
        debug_assert_eq!(self.index.len(), self.list.len());
        Some(value)
    }

    pub(super) fn addrs(&self) -> impl Iterator<Item = SocketAddr> + '_ {
        self.list.iter().map(|(a, _)| *a)
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
        let a = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
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
