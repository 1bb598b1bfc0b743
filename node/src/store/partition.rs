//! One partition's map: a dense vector of entries plus a hash index into it.
//!
//! The vector makes uniform random sampling (for eviction) and resumable sweeps (for
//! active expiry, and later for streaming a partition to a new owner) cheap: both are
//! index arithmetic. The index stores 4-byte slot numbers, not entries, so it adds about
//! 5 bytes per key. Removal swaps the last slot into the hole and repoints its index entry.

use hashbrown::HashTable;

use super::entry::Entry;

/// The hash used both to pick a partition and to index within it. `xxh3_64` is protocol.
pub fn key_hash(key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(key)
}

#[derive(Debug, Default)]
pub struct PartitionMap {
    index: HashTable<u32>,
    slots: Vec<Entry>,
    /// Counters kept under the partition lock, so the hot path touches no shared atomics.
    pub counters: PartitionCounters,
    /// Counts reads and writes; the LRU policy's clock.
    access_tick: u32,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct PartitionCounters {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
    pub tombstones: u64,
}

impl PartitionMap {
    /// Advances and returns the partition's access counter.
    pub fn next_tick(&mut self) -> u32 {
        self.access_tick = self.access_tick.wrapping_add(1);
        self.access_tick
    }

    pub fn tick(&self) -> u32 {
        self.access_tick
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn find(&self, hash: u64, key: &[u8]) -> Option<usize> {
        let slots = &self.slots;
        self.index
            .find(hash, |&slot| slots[slot as usize].key() == key)
            .map(|&slot| slot as usize)
    }

    pub fn slot(&self, slot: usize) -> &Entry {
        &self.slots[slot]
    }

    pub fn slot_mut(&mut self, slot: usize) -> &mut Entry {
        &mut self.slots[slot]
    }

    /// Inserts an entry whose key is not present.
    pub fn insert_new(&mut self, hash: u64, entry: Entry) {
        let slot = slot_number(self.slots.len());
        self.slots.push(entry);
        let slots = &self.slots;
        self.index
            .insert_unique(hash, slot, |&s| key_hash(slots[s as usize].key()));
    }

    /// Swaps in a new entry for the same key and returns the old one.
    pub fn replace(&mut self, slot: usize, entry: Entry) -> Entry {
        std::mem::replace(&mut self.slots[slot], entry)
    }

    /// Removes the entry in `slot`. The last entry moves into `slot`.
    pub fn remove(&mut self, slot: usize) -> Entry {
        let hash = key_hash(self.slots[slot].key());
        let wanted = slot_number(slot);
        if let Ok(found) = self.index.find_entry(hash, |&s| s == wanted) {
            found.remove();
        }
        let last = self.slots.len() - 1;
        let removed = self.slots.swap_remove(slot);
        if slot != last {
            let moved_hash = key_hash(self.slots[slot].key());
            let last = slot_number(last);
            if let Some(index_slot) = self.index.find_mut(moved_hash, |&s| s == last) {
                *index_slot = wanted;
            }
        }
        self.shrink_if_sparse();
        removed
    }

    /// Removes every entry; returns their charged bytes and how many were tombstones.
    pub fn clear(&mut self) -> (usize, u64) {
        let bytes = self.slots.iter().map(Entry::charge).sum();
        let tombstones = self.slots.iter().filter(|e| e.is_tombstone()).count() as u64;
        self.slots = Vec::new();
        self.index = HashTable::new();
        (bytes, tombstones)
    }

    /// Returns memory after mass removal (eviction, expiry) instead of holding the peak.
    fn shrink_if_sparse(&mut self) {
        let len = self.slots.len();
        if self.slots.capacity() > 64 && len < self.slots.capacity() / 4 {
            self.slots.shrink_to(len * 2);
            let slots = &self.slots;
            self.index
                .shrink_to(len * 2, |&s| key_hash(slots[s as usize].key()));
        }
    }
}

/// Slot numbers are u32 to keep the index small. A partition cannot hold 2^32 entries:
/// each one is charged at least 72 bytes against `max_memory`, so that would be 300 GB.
#[expect(
    clippy::cast_possible_truncation,
    reason = "a partition never holds 2^32 entries (see above)"
)]
fn slot_number(slot: usize) -> u32 {
    slot as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Version;
    use crate::store::entry::EntryMeta;

    fn entry(key: &str) -> Entry {
        Entry::new(
            key.as_bytes(),
            key.as_bytes(),
            EntryMeta {
                version: Version { hlc: 1, node: 1 },
                expires_at_ms: 0,
                eviction: 0,
                tombstone: false,
            },
        )
    }

    fn insert(map: &mut PartitionMap, key: &str) {
        map.insert_new(key_hash(key.as_bytes()), entry(key));
    }

    fn find(map: &PartitionMap, key: &str) -> Option<usize> {
        map.find(key_hash(key.as_bytes()), key.as_bytes())
    }

    #[test]
    fn removal_keeps_every_other_key_findable() {
        let mut map = PartitionMap::default();
        let keys: Vec<String> = (0..1_000).map(|i| format!("k{i}")).collect();
        for key in &keys {
            insert(&mut map, key);
        }
        for key in keys.iter().step_by(3) {
            let slot = find(&map, key).expect("inserted");
            assert_eq!(map.remove(slot).key(), key.as_bytes());
        }
        for (i, key) in keys.iter().enumerate() {
            let found = find(&map, key).map(|slot| map.slot(slot).value().to_vec());
            if i % 3 == 0 {
                assert_eq!(found, None, "{key} was removed");
            } else {
                assert_eq!(found.as_deref(), Some(key.as_bytes()), "{key} survives");
            }
        }
        assert_eq!(map.len(), 666);
    }

    #[test]
    fn removing_everything_shrinks_and_stays_consistent() {
        let mut map = PartitionMap::default();
        for i in 0..5_000 {
            insert(&mut map, &format!("k{i}"));
        }
        while map.len() > 10 {
            map.remove(0);
        }
        assert!(
            map.slots.capacity() < 100,
            "capacity {}",
            map.slots.capacity()
        );
        for slot in 0..map.len() {
            let key = String::from_utf8(map.slot(slot).key().to_vec()).expect("utf8");
            assert_eq!(find(&map, &key), Some(slot));
        }
    }

    #[test]
    fn replace_returns_the_previous_entry() {
        let mut map = PartitionMap::default();
        insert(&mut map, "a");
        let slot = find(&map, "a").expect("inserted");
        let old = map.replace(slot, entry("a"));
        assert_eq!(old.key(), b"a");
        assert_eq!(map.len(), 1);
    }
}
