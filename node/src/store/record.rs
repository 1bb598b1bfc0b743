//! The record: a versioned entry as replicas exchange it, and the one place records are
//! made.
//!
//! Every record that leaves a node is built here, by [`Record::put`] or
//! [`Record::tombstone`], from a version the store's hybrid logical clock minted (see
//! [`super::Store::new_put`]). The cluster routes records; it never builds one by hand.
//!
//! Every record that arrives from elsewhere is checked here too, by [`RecordLimits`]: the
//! same key, value, TTL and expiry limits the HTTP API applies, plus the clock bound on
//! its version. A peer's record is held to exactly what a client's request is.

use std::time::Duration;

use crate::clock::{Version, millis};

/// The longest TTL a record may have: ten years.
pub const MAX_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

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

/// What a record may be, wherever it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordLimits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    /// How long a delete's tombstone lives (`--tombstone-ttl`).
    pub tombstone_ttl: Duration,
    /// How far ahead of this node's clock a version may be (`--max-clock-offset`).
    pub max_clock_offset: Duration,
}

/// Why a record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("key must be 1 to {max} bytes, got {len}")]
    Key { len: usize, max: usize },
    #[error("value of {len} bytes exceeds the limit of {max}")]
    Value { len: usize, max: usize },
    #[error(
        "expiry is {ahead_ms} ms away, beyond the longest TTL ({max_ms} ms) plus the clock bound"
    )]
    Expiry { ahead_ms: u64, max_ms: u64 },
    #[error("a tombstone must expire, within the tombstone TTL ({max_ms} ms) plus the clock bound")]
    Tombstone { max_ms: u64 },
    #[error(
        "version is {ahead_ms} ms ahead of this node's clock, beyond the {max_ms} ms bound (--max-clock-offset)"
    )]
    VersionAhead { ahead_ms: u64, max_ms: u64 },
}

impl RecordLimits {
    pub fn check_key(&self, key: &[u8]) -> Result<(), RecordError> {
        if key.is_empty() || key.len() > self.max_key_bytes {
            return Err(RecordError::Key {
                len: key.len(),
                max: self.max_key_bytes,
            });
        }
        Ok(())
    }

    pub fn check_value(&self, len: usize) -> Result<(), RecordError> {
        if len > self.max_value_bytes {
            return Err(RecordError::Value {
                len,
                max: self.max_value_bytes,
            });
        }
        Ok(())
    }

    /// A version from elsewhere may be at most the clock bound ahead of `now_ms`.
    pub fn check_version(&self, version: Version, now_ms: u64) -> Result<(), RecordError> {
        let max_ms = millis(self.max_clock_offset);
        let ahead_ms = version.physical_ms().saturating_sub(now_ms);
        if ahead_ms > max_ms {
            return Err(RecordError::VersionAhead { ahead_ms, max_ms });
        }
        Ok(())
    }

    /// Everything about a record from elsewhere, at `now_ms`.
    pub fn check(&self, record: &Record, now_ms: u64) -> Result<(), RecordError> {
        self.check_key(&record.key)?;
        self.check_value(record.value.len())?;
        self.check_version(record.version, now_ms)?;
        let offset_ms = millis(self.max_clock_offset);
        let ahead_ms = record.expires_at_ms.saturating_sub(now_ms);
        if record.tombstone {
            let max_ms = millis(self.tombstone_ttl).max(1).saturating_add(offset_ms);
            if record.expires_at_ms == 0 || ahead_ms > max_ms {
                return Err(RecordError::Tombstone { max_ms });
            }
        } else {
            let max_ms = millis(MAX_TTL).saturating_add(offset_ms);
            if ahead_ms > max_ms {
                return Err(RecordError::Expiry { ahead_ms, max_ms });
            }
        }
        Ok(())
    }
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

    #[test]
    fn records_from_elsewhere_are_held_to_the_same_limits() {
        let limits = RecordLimits {
            max_key_bytes: 8,
            max_value_bytes: 4,
            tombstone_ttl: Duration::from_secs(60),
            max_clock_offset: Duration::from_millis(500),
        };
        let now = 1_000_000;
        let at = |ms: u64| Version {
            hlc: ms << 16,
            node: 1,
        };
        let good = Record::put(b"k", b"v", at(now), Some(Duration::from_secs(5)), now);
        assert_eq!(limits.check(&good, now), Ok(()));
        let long_key = Record::put(&[b'k'; 9], b"v", at(now), None, now);
        assert!(matches!(
            limits.check(&long_key, now),
            Err(RecordError::Key { len: 9, .. })
        ));
        assert!(matches!(
            limits.check(
                &Record {
                    key: Vec::new(),
                    ..good.clone()
                },
                now
            ),
            Err(RecordError::Key { len: 0, .. })
        ));
        let big = Record::put(b"k", b"12345", at(now), None, now);
        assert!(matches!(
            limits.check(&big, now),
            Err(RecordError::Value { .. })
        ));
        let ahead_ok = Record::put(b"k", b"v", at(now + 500), None, now);
        assert_eq!(limits.check(&ahead_ok, now), Ok(()));
        let forged = Record {
            version: Version {
                hlc: u64::MAX,
                node: 1,
            },
            ..good.clone()
        };
        assert!(matches!(
            limits.check(&forged, now),
            Err(RecordError::VersionAhead { .. })
        ));
        let ages = Record {
            expires_at_ms: now + millis(MAX_TTL) + 10_000,
            ..good
        };
        assert!(matches!(
            limits.check(&ages, now),
            Err(RecordError::Expiry { .. })
        ));
        let immortal = Record {
            expires_at_ms: 0,
            ..Record::tombstone(b"k", at(now), now, Duration::from_secs(60))
        };
        assert!(matches!(
            limits.check(&immortal, now),
            Err(RecordError::Tombstone { .. })
        ));
        let tombstone = Record::tombstone(b"k", at(now), now, Duration::from_secs(60));
        assert_eq!(limits.check(&tombstone, now), Ok(()));
        let far_tombstone = Record {
            expires_at_ms: now + 3_600_000,
            ..tombstone
        };
        assert!(limits.check(&far_tombstone, now).is_err());
    }
}
