//! The store's vocabulary: what its operations take and return.

use std::time::Duration;

use bytes::Bytes;

use crate::clock::Version;

/// A live entry as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Value {
    pub data: Bytes,
    pub version: Version,
    /// Remaining time to live, if the entry expires.
    pub ttl: Option<Duration>,
}

/// A live entry lent by [`super::Store::read`], under its partition's lock: read it
/// without copying the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Found<'a> {
    pub data: &'a [u8],
    pub version: Version,
    /// Remaining time to live, if the entry expires.
    pub ttl: Option<Duration>,
}

impl Found<'_> {
    /// The entry as an owned [`Value`] (its data copied).
    pub fn to_value(&self) -> Value {
        Value {
            data: Bytes::copy_from_slice(self.data),
            version: self.version,
            ttl: self.ttl,
        }
    }
}

/// A write's condition on the current live entry, checked atomically with the write.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Precondition {
    #[default]
    None,
    /// `If-Match: *`
    Exists,
    /// `If-None-Match: *`
    Absent,
    /// `If-Match: <etags>`: the current version is one of these.
    VersionIn(Vec<Version>),
    /// `If-None-Match: <etags>`: absent, or the current version is none of these.
    VersionNotIn(Vec<Version>),
}

impl Precondition {
    pub fn check(&self, current: Option<Version>) -> Result<(), StoreError> {
        let holds = match (self, current) {
            (Self::None, _) => true,
            (Self::Exists, current) => current.is_some(),
            (Self::Absent, current) => current.is_none(),
            (Self::VersionIn(tags), Some(v)) => tags.contains(&v),
            (Self::VersionIn(_), None) => false,
            (Self::VersionNotIn(tags), Some(v)) => !tags.contains(&v),
            (Self::VersionNotIn(_), None) => true,
        };
        if holds {
            Ok(())
        } else {
            Err(StoreError::PreconditionFailed)
        }
    }
}

/// What [`Store::apply`] did with a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// It was newer than what the node held, and is now stored.
    Stored,
    /// The node already held the same or a newer version (or the record had expired).
    Stale,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub version: Version,
    /// No live entry existed before this write.
    pub created: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    #[error("the key's current version does not satisfy the request's precondition")]
    PreconditionFailed,
    #[error("key not found")]
    NotFound,
    #[error("entry needs {needed} bytes but max memory is {max_memory} bytes")]
    EntryTooLarge { needed: usize, max_memory: usize },
    #[error(
        "out of memory: {used} of {max_memory} bytes in use, {needed} more needed, and eviction {policy}"
    )]
    OutOfMemory {
        needed: usize,
        used: usize,
        max_memory: usize,
        policy: &'static str,
    },
    /// The data dir refuses writes (a full or failing disk); reads go on.
    #[error("{0}")]
    Disk(String),
}

impl From<super::persist::LogFailure> for StoreError {
    fn from(failure: super::persist::LogFailure) -> Self {
        Self::Disk(failure.to_string())
    }
}

/// Point-in-time counters, summed over partitions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    /// Entries that are not tombstones (expired entries not yet swept included).
    pub keys: u64,
    pub tombstones: u64,
    /// Bytes charged against `max_memory`: entries plus `buffer_bytes`.
    pub bytes: u64,
    /// Bytes charged for migration buffers in flight (partition chunks being streamed,
    /// pulled or handed off).
    pub buffer_bytes: u64,
    pub max_memory: u64,
    pub partitions: u64,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub expirations: u64,
}
