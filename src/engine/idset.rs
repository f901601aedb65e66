//! Loop detection: the last `capacity` S2S_SAY ids, exactly, in memory fixed at start-up.
//!
//! A ring remembers insertion order (the oldest id is evicted when a new one arrives); an
//! open-addressed table with linear probing maps each remembered id to its ring slot, so a
//! lookup is one hash and a short probe. Being exact, it never mistakes a new message for a
//! duplicate (a false positive would drop a real message and cut a tree link).

pub struct IdSet {
    ring: Box<[u64]>,
    /// Ring slot + 1 per table cell; 0 marks an empty cell.
    table: Box<[u32]>,
    next: usize,
    len: usize,
    hasher: ahash::RandomState,
}

impl IdSet {
    /// Remembers the last `capacity` ids (rounded up to a power of two, at least 16).
    pub fn new(capacity: usize, hasher: ahash::RandomState) -> Self {
        let capacity = capacity.clamp(16, 1 << 30).next_power_of_two();
        Self {
            ring: vec![0; capacity].into_boxed_slice(),
            table: vec![0; capacity * 2].into_boxed_slice(),
            next: 0,
            len: 0,
            hasher,
        }
    }

    fn home(&self, id: u64) -> usize {
        self.hasher.hash_one(id) as usize & (self.table.len() - 1)
    }

    fn find(&self, id: u64) -> Result<usize, usize> {
        let mask = self.table.len() - 1;
        let mut i = self.home(id);
        loop {
            match self.table[i] {
                0 => return Err(i),
                slot if self.ring[slot as usize - 1] == id => return Ok(i),
                _ => i = (i + 1) & mask,
            }
        }
    }

    pub fn contains(&self, id: u64) -> bool {
        self.find(id).is_ok()
    }

    /// Remembers `id`; returns false (and changes nothing) when it was already remembered.
    pub fn insert(&mut self, id: u64) -> bool {
        self.insert_slot(id).is_ok()
    }

    /// How many ids it remembers: ring slots are `0..capacity()`.
    pub fn capacity(&self) -> usize {
        self.ring.len()
    }

    /// Remembers `id`: `Ok` with its ring slot when it is new (a caller may keep something
    /// about the id in a table of its own at that slot, until the id is evicted), `Err` with
    /// the slot it has when it was remembered already (nothing changes).
    pub fn insert_slot(&mut self, id: u64) -> Result<usize, usize> {
        if let Ok(cell) = self.find(id) {
            return Err(self.table[cell] as usize - 1);
        }
        if self.len == self.ring.len() {
            let oldest = self.ring[self.next];
            let found = self.find(oldest);
            debug_assert!(found.is_ok(), "the oldest id is in the table");
            if let Ok(cell) = found {
                self.remove_cell(cell);
            }
            self.len -= 1;
        }
        debug_assert!(self.len < self.ring.len(), "room for the new id");
        // Probe again: removal may have shifted cells.
        let Err(cell) = self.find(id) else {
            unreachable!("id was absent a moment ago")
        };
        let slot = self.next;
        self.ring[slot] = id;
        self.table[cell] = slot as u32 + 1;
        self.next = (self.next + 1) & (self.ring.len() - 1);
        self.len += 1;
        debug_assert_eq!(
            self.find(id),
            Ok(cell),
            "a new id is found where it was put"
        );
        debug_assert!(self.len <= self.ring.len());
        Ok(slot)
    }

    /// Backward-shift deletion: keeps every probe chain unbroken without tombstones.
    fn remove_cell(&mut self, mut hole: usize) {
        let mask = self.table.len() - 1;
        debug_assert!(self.table.len().is_power_of_two() && self.table[hole] != 0);
        let mut i = hole;
        loop {
            i = (i + 1) & mask;
            let slot = self.table[i];
            if slot == 0 {
                break;
            }
            let home = self.home(self.ring[slot as usize - 1]);
            // Move the entry back if its home is not cyclically within (hole, i].
            let distance_home = i.wrapping_sub(home) & mask;
            let distance_hole = i.wrapping_sub(hole) & mask;
            if distance_home >= distance_hole {
                self.table[hole] = slot;
                hole = i;
            }
        }
        self.table[hole] = 0;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Rng;
    use std::collections::{HashSet, VecDeque};

    #[test]
    fn detects_duplicates_and_forgets_the_oldest() {
        let mut set = IdSet::new(16, ahash::RandomState::with_seeds(1, 2, 3, 4));
        assert!(set.insert(0), "id 0 is an ordinary id");
        assert!(!set.insert(0));
        for id in 1..16 {
            assert!(set.insert(id));
        }
        assert_eq!(set.len(), 16);
        assert!(set.contains(0));
        assert!(set.insert(100)); // evicts 0
        assert!(!set.contains(0));
        assert!(set.contains(1) && set.contains(100));
    }

    #[test]
    fn matches_a_reference_model_under_random_traffic() {
        // Small id space so duplicates and evictions are frequent; a bad hasher seed
        // concentrates collisions to exercise backward-shift deletion.
        for seed in 0..20 {
            let mut rng = Rng::new(seed);
            let mut set = IdSet::new(32, ahash::RandomState::with_seeds(seed, 0, 0, 0));
            let mut order = VecDeque::new();
            let mut model = HashSet::new();
            for _ in 0..20_000 {
                let id = rng.below(100);
                let fresh = !model.contains(&id);
                assert_eq!(set.insert(id), fresh, "seed {seed} id {id}");
                if fresh {
                    if order.len() == 32 {
                        model.remove(&order.pop_front().unwrap());
                    }
                    order.push_back(id);
                    model.insert(id);
                }
                let probe = rng.below(100);
                assert_eq!(set.contains(probe), model.contains(&probe));
            }
        }
    }
}
