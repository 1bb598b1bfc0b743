//! The record: a versioned entry as replicas exchange it, and the one place records are
//! made.
//!
//! Every record that leaves a node is built here, by [`Record::put`] or
//! [`Record::tombstone`], from a version the store's hybrid logical clock minted (see
//! [`super::Store::new_put`]). The cluster routes records; it never builds one by hand.

use std::time::Duration;

use crate::clock::{Version, millis};

/// A versioned entry as replicas exchange it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub version: Version,
    /// Unix ms; 0 means never.
    pub expires_at_ms: u64,
    pub tombstone: bool,
}

impl Record {
    /// A write of `value` under `key` at `version`, expiring `ttl` after `now_ms`.
    pub fn put(
        key: &[u8],
        value: &[u8],
        version: Version,
        ttl: Option<Duration>,
        now_ms: u64,
    ) -> Self {
        Self {
            key: key.to_vec(),
            value: value.to_vec(),
            version,
            expires_at_ms: expiry(now_ms, ttl),
            tombstone: false,
        }
    }

    /// A delete of `key` at `version`: a tombstone that shadows older copies for
    /// `lifetime` after `now_ms`. It lives at least a millisecond even when `lifetime` is
    /// zero: a record sent to replicas must be a tombstone, or an older copy elsewhere
    /// would win. (With `--tombstone-ttl 0` a local delete removes the entry outright; see
    /// [`super::Store::delete`].)
    pub fn tombstone(key: &[u8], version: Version, now_ms: u64, lifetime: Duration) -> Self {
        Self {
            key: key.to_vec(),
            value: Vec::new(),
            version,
            expires_at_ms: tombstone_expiry(now_ms, lifetime),
            tombstone: true,
        }
    }

    /// What is left of the record's TTL at `now_ms`, if it expires.
    pub fn ttl_at(&self, now_ms: u64) -> Option<Duration> {
        (self.expires_at_ms != 0)
            .then(|| Duration::from_millis(self.expires_at_ms.saturating_sub(now_ms)))
    }
}

/// Unix ms at which an entry written at `now_ms` with `ttl` expires; 0 for never.
pub fn expiry(now_ms: u64, ttl: Option<Duration>) -> u64 {
    ttl.map_or(0, |ttl| now_ms.saturating_add(millis(ttl)))
}

/// Unix ms at which a tombstone made at `now_ms` expires (at least 1 ms later).
pub fn tombstone_expiry(now_ms: u64, lifetime: Duration) -> u64 {
    now_ms.saturating_add(millis(lifetime).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_carry_their_expiry() {
        let version = Version { hlc: 9, node: 1 };
        let put = Record::put(b"k", b"v", version, Some(Duration::from_secs(2)), 1_000);
        assert_eq!((put.expires_at_ms, put.tombstone), (3_000, false));
        assert_eq!(put.ttl_at(2_500), Some(Duration::from_millis(500)));
        let forever = Record::put(b"k", b"v", version, None, 1_000);
        assert_eq!((forever.expires_at_ms, forever.ttl_at(5)), (0, None));
        let gone = Record::tombstone(b"k", version, 1_000, Duration::ZERO);
        assert!(gone.tombstone && gone.value.is_empty());
        assert_eq!(
            gone.expires_at_ms, 1_001,
            "a replicated tombstone always exists"
        );
        let kept = Record::tombstone(b"k", version, 1_000, Duration::from_secs(60));
        assert_eq!(kept.expires_at_ms, 61_000);
    }
}
