//! One stored entry, packed into a single heap allocation.
//!
//! Memory per key is a product goal (within 1.5x of Redis), so an entry is one boxed
//! byte slice: a fixed 32-byte header, then the key, then the value. A struct of
//! `Bytes` + `Box<[u8]>` + fields would cost three allocations and about 80 bytes more.
//!
//! Header layout (little endian):
//!
//! | bytes  | field                                                 |
//! |--------|-------------------------------------------------------|
//! | 0..8   | version HLC                                           |
//! | 8..16  | version node tag                                      |
//! | 16..24 | expiry, Unix ms (0 = never)                           |
//! | 24..28 | eviction metadata (LRU clock or LFU counter)          |
//! | 28..30 | key length                                            |
//! | 30     | flags (bit 0: tombstone)                              |
//! | 31     | reserved                                              |

use crate::clock::Version;

const HEADER: usize = 32;
const FLAG_TOMBSTONE: u8 = 1;

/// Bytes charged per entry on top of its allocation: its slot in the partition's
/// vector (16), its index bucket (4 + 1 control byte, at a load factor of 7/8 or less),
/// and the allocator's per-chunk header and rounding (about 16).
pub const ENTRY_OVERHEAD: usize = 40;

/// The longest key the header can describe.
pub const MAX_KEY_LEN: usize = u16::MAX as usize;

#[derive(Debug)]
pub struct Entry(Box<[u8]>);

impl Entry {
    /// Builds an entry. The key must be at most [`MAX_KEY_LEN`] bytes; the config layer
    /// guarantees that for every key that reaches the store.
    pub fn new(key: &[u8], value: &[u8], meta: EntryMeta) -> Self {
        let key_len = u16::try_from(key.len()).unwrap_or(u16::MAX);
        let mut buf = Vec::with_capacity(HEADER + key.len() + value.len());
        buf.extend_from_slice(&meta.version.hlc.to_le_bytes());
        buf.extend_from_slice(&meta.version.node.to_le_bytes());
        buf.extend_from_slice(&meta.expires_at_ms.to_le_bytes());
        buf.extend_from_slice(&meta.eviction.to_le_bytes());
        buf.extend_from_slice(&key_len.to_le_bytes());
        buf.push(if meta.tombstone { FLAG_TOMBSTONE } else { 0 });
        buf.push(0);
        buf.extend_from_slice(&key[..usize::from(key_len)]);
        buf.extend_from_slice(value);
        Self(buf.into_boxed_slice())
    }

    /// The bytes this entry is charged against `max_memory`.
    pub fn charge(&self) -> usize {
        Self::charge_for(self.key().len(), self.value().len())
    }

    pub fn charge_for(key_len: usize, value_len: usize) -> usize {
        HEADER + key_len + value_len + ENTRY_OVERHEAD
    }

    pub fn key(&self) -> &[u8] {
        &self.0[HEADER..HEADER + self.key_len()]
    }

    pub fn value(&self) -> &[u8] {
        &self.0[HEADER + self.key_len()..]
    }

    pub fn version(&self) -> Version {
        Version {
            hlc: self.u64_at(0),
            node: self.u64_at(8),
        }
    }

    /// Unix ms after which the entry is gone, if it expires.
    pub fn expires_at_ms(&self) -> Option<u64> {
        match self.u64_at(16) {
            0 => None,
            at => Some(at),
        }
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms().is_some_and(|at| at <= now_ms)
    }

    pub fn is_tombstone(&self) -> bool {
        self.0[30] & FLAG_TOMBSTONE != 0
    }

    /// Present for reads: neither a tombstone nor expired.
    pub fn is_live(&self, now_ms: u64) -> bool {
        !self.is_tombstone() && !self.is_expired(now_ms)
    }

    pub fn eviction(&self) -> u32 {
        let mut raw = [0; 4];
        raw.copy_from_slice(&self.0[24..28]);
        u32::from_le_bytes(raw)
    }

    pub fn set_eviction(&mut self, value: u32) {
        self.0[24..28].copy_from_slice(&value.to_le_bytes());
    }

    fn key_len(&self) -> usize {
        usize::from(u16::from_le_bytes([self.0[28], self.0[29]]))
    }

    fn u64_at(&self, at: usize) -> u64 {
        let mut raw = [0; 8];
        raw.copy_from_slice(&self.0[at..at + 8]);
        u64::from_le_bytes(raw)
    }
}

/// Everything about an entry except its key and value.
#[derive(Debug, Clone, Copy)]
pub struct EntryMeta {
    pub version: Version,
    /// Unix ms; 0 means the entry never expires.
    pub expires_at_ms: u64,
    pub eviction: u32,
    pub tombstone: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let version = Version { hlc: 42, node: 7 };
        let entry = Entry::new(
            b"key",
            b"value",
            EntryMeta {
                version,
                expires_at_ms: 1_000,
                eviction: 9,
                tombstone: false,
            },
        );
        assert_eq!(entry.key(), b"key");
        assert_eq!(entry.value(), b"value");
        assert_eq!(entry.version(), version);
        assert_eq!(entry.expires_at_ms(), Some(1_000));
        assert_eq!(entry.eviction(), 9);
        assert!(entry.is_live(999));
        assert!(!entry.is_live(1_000));
        assert_eq!(entry.charge(), HEADER + 3 + 5 + ENTRY_OVERHEAD);
    }

    #[test]
    fn tombstones_are_never_live() {
        let entry = Entry::new(
            b"k",
            b"",
            EntryMeta {
                version: Version { hlc: 1, node: 1 },
                expires_at_ms: 0,
                eviction: 0,
                tombstone: true,
            },
        );
        assert!(entry.is_tombstone());
        assert!(!entry.is_live(0));
        assert_eq!(entry.expires_at_ms(), None);
    }

    #[test]
    fn eviction_metadata_is_mutable_in_place() {
        let mut entry = Entry::new(
            b"k",
            b"v",
            EntryMeta {
                version: Version { hlc: 1, node: 1 },
                expires_at_ms: 0,
                eviction: 1,
                tombstone: false,
            },
        );
        entry.set_eviction(u32::MAX);
        assert_eq!(entry.eviction(), u32::MAX);
        assert_eq!(entry.value(), b"v");
    }
}
