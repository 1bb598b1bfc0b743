//! The partitioned in-memory store: versions, TTLs, tombstones and a hard memory bound.
//!
//! Layout:
//! - [`entry`]: one entry packed into a single allocation.
//! - [`partition`]: one partition's map (dense slots plus a hash index).
//! - [`eviction`]: sampled LRU/LFU.
//! - [`expiry`]: the bounded background sweep that removes expired entries.
//! - [`buffer`]: partition data in flight (migration buffers), charged under the same bound.
//! - [`persist`]: the append-only log and snapshots of `--data-dir`, loaded at start.
//!
//! A key's partition is its Redis Cluster hash slot's ([`slot`]): protocol, the same on
//! every member. Partitions are the unit that moves between nodes. Each partition has its own lock, so with 271
//! partitions two cores almost never contend, and there is no global lock on the hot path.
//! The only shared atomic a write touches is the memory counter.

pub mod entry;
mod eviction;
mod expiry;
mod memory;
mod partition;
pub mod persist;
mod record;
pub mod slot;
mod types;

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};

use crate::clock::{Clock, Hlc, Version};
use entry::{Entry, EntryMeta};
pub use eviction::EvictionPolicy;
pub use expiry::ActiveExpiry;
pub use memory::{BufferGuard, NoBufferRoom};
use memory::{Removal, count_removal};
use partition::PartitionMap;
pub use partition::key_hash;
use persist::Log;
pub use record::{MAX_TTL, Record, RecordError, RecordLimits};
pub use types::{Applied, Found, Precondition, StoreError, StoreStats, Value, Written};
use xxhash_rust::xxh3::Xxh3;

/// Buckets per partition digest.
pub const DIGEST_BUCKETS: usize = 64;

/// The digest bucket of a key: bits of its hash independent of the partition number.
pub fn digest_bucket(hash: u64) -> usize {
    usize::try_from((hash >> 32) % DIGEST_BUCKETS as u64).unwrap_or(0)
}

/// How often a write looks again at its key after making room (the key can change
/// while the write waits unlocked for eviction).
const WRITE_ATTEMPTS: usize = 8;
/// Upper bound on entries evicted for one write (a 1 MiB value over 100-byte entries
/// needs about 6,000). Bounds the work one request can trigger.
const MAX_EVICTIONS_PER_WRITE: usize = 100_000;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub node_id: String,
    pub partitions: u32,
    /// Hard bound on the bytes charged for entries (see [`entry::ENTRY_OVERHEAD`]) and
    /// migration buffers in flight (see [`Store::reserve_buffer`]).
    pub max_memory: usize,
    pub eviction: EvictionPolicy,
    /// What a record may be (keys, values, TTLs, versions), and how long a delete's
    /// tombstone outlives it, so replicas cannot resurrect the key.
    pub limits: RecordLimits,
}

#[cfg(test)]
impl StoreConfig {
    /// A store for unit tests: 1 KiB keys, 1 MiB values, 60 s tombstones, and the default
    /// 500 ms clock bound.
    pub(crate) fn for_tests(
        node_id: &str,
        partitions: u32,
        max_memory: usize,
        eviction: EvictionPolicy,
    ) -> Self {
        Self {
            node_id: node_id.to_owned(),
            partitions,
            max_memory,
            eviction,
            limits: RecordLimits {
                max_key_bytes: 1024,
                max_value_bytes: 1 << 20,
                tombstone_ttl: Duration::from_secs(60),
                max_clock_offset: Duration::from_millis(500),
            },
        }
    }
}

/// A cheap, cloneable handle on the store.
#[derive(Debug, Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// A plain mutex per partition, never held across `.await`: reads update eviction
    /// metadata, so a read lock would not help, and critical sections are a hash probe
    /// and a copy.
    partitions: Box<[Mutex<PartitionMap>]>,
    /// Bytes charged against `max_memory`: entries and migration buffers.
    used_bytes: AtomicUsize,
    /// Of those, the bytes held by migration buffers in flight.
    buffer_bytes: AtomicUsize,
    config: StoreConfig,
    clock: Clock,
    hlc: Hlc,
    /// Per partition: an expired tombstone may be removed only if it expired at or
    /// before this time (Unix ms). `u64::MAX` (the default, and a single node's) purges
    /// at expiry; a cluster member holds them (0) until every co-owner is known to have
    /// no older copy left to resurrect (see `Store::hold_tombstones`).
    tombstone_horizons: Box<[AtomicU64]>,
    /// The append-only log of `--data-dir`, once loading is done (set once; a store
    /// without persistence never has one). Every change is appended under its
    /// partition's lock, so the log holds one partition's changes in the order made.
    log: OnceLock<Log>,
}

/// What a write decides after seeing the current entry.
enum Decision {
    Write(EntryMeta),
    /// Leave the entry as it is; it holds this version.
    Keep(Version),
}

struct WriteOutcome {
    version: Version,
    /// A live entry was there before.
    replaced_live: bool,
    /// False when the write decided to keep the current entry.
    stored: bool,
}

impl Store {
    pub fn new(config: StoreConfig) -> Self {
        // Configuration refuses more partitions than slots; clamped here as well, since a
        // partition past the last slot could never hold a key.
        let count = config.partitions.clamp(1, u32::from(slot::SLOTS));
        let partitions = (0..count)
            .map(|_| Mutex::new(PartitionMap::default()))
            .collect();
        let tombstone_horizons = (0..count).map(|_| AtomicU64::new(u64::MAX)).collect();
        let hlc = Hlc::new(&config.node_id);
        Self {
            shared: Arc::new(Shared {
                partitions,
                used_bytes: AtomicUsize::new(0),
                buffer_bytes: AtomicUsize::new(0),
                config,
                clock: Clock::new(),
                hlc,
                tombstone_horizons,
                log: OnceLock::new(),
            }),
        }
    }

    pub fn config(&self) -> &StoreConfig {
        &self.shared.config
    }

    /// How many partitions the store has.
    pub fn partition_count(&self) -> u32 {
        u32::try_from(self.shared.partitions.len()).unwrap_or(u32::MAX)
    }

    /// Logs every change from now on to `log` (once the data dir is loaded). A second
    /// log is ignored.
    pub fn attach_log(&self, log: Log) {
        let _ = self.shared.log.set(log);
    }

    fn log(&self) -> Option<&Log> {
        self.shared.log.get()
    }

    /// Completes once the changes this store made so far are as durable as the fsync
    /// policy promises before an acknowledgement (on disk under `always`); at once
    /// without persistence. A write is acknowledged only after this succeeds.
    pub async fn durable(&self) -> Result<(), StoreError> {
        match self.log() {
            Some(log) => log.durable().await.map_err(StoreError::from),
            None => Ok(()),
        }
    }

    /// Like [`Store::durable`], whatever the policy: written, and synced if the policy
    /// syncs at all. For hand-offs, whose source drops its copy afterwards.
    pub async fn flushed(&self) -> Result<(), StoreError> {
        match self.log() {
            Some(log) => log.flushed().await.map_err(StoreError::from),
            None => Ok(()),
        }
    }

    /// Refuses a change while the data dir cannot take it.
    fn check_writable(&self) -> Result<(), StoreError> {
        match self.log() {
            Some(log) => log.writable().map_err(StoreError::from),
            None => Ok(()),
        }
    }

    /// The store's clock: Unix ms, monotonic.
    pub fn now_ms(&self) -> u64 {
        self.shared.clock.now_ms()
    }

    /// A fresh version from this node's hybrid logical clock.
    pub fn next_version(&self) -> Version {
        self.shared.hlc.next(self.now_ms())
    }

    /// A new write of `value` under `key`, versioned by this node's clock, for replicas.
    pub fn new_put(&self, key: &[u8], value: &[u8], ttl: Option<Duration>) -> Record {
        let now = self.now_ms();
        Record::put(key, value, self.shared.hlc.next(now), ttl, now)
    }

    /// What a record may be.
    pub fn limits(&self) -> &RecordLimits {
        &self.shared.config.limits
    }

    /// Checks a record from elsewhere (a peer's write, a pulled chunk) against the same
    /// limits a client's request meets, and its version against the clock bound.
    pub fn check_record(&self, record: &Record) -> Result<(), RecordError> {
        self.shared.config.limits.check(record, self.now_ms())
    }

    /// Folds a version seen elsewhere (a replica's answer) into this node's clock, so the
    /// next write orders after it; a version beyond the clock bound is refused instead.
    pub fn observe_version(&self, version: Version) -> Result<(), RecordError> {
        self.shared
            .config
            .limits
            .check_version(version, self.now_ms())?;
        self.shared.hlc.observe(version);
        Ok(())
    }

    /// A new delete of `key`, versioned by this node's clock, for replicas: a tombstone
    /// that lives `--tombstone-ttl`.
    pub fn new_tombstone(&self, key: &[u8]) -> Record {
        let now = self.now_ms();
        let version = self.shared.hlc.next(now);
        Record::tombstone(key, version, now, self.shared.config.limits.tombstone_ttl)
    }

    /// Keeps every expired tombstone until [`Store::release_tombstones`] lets it go: a
    /// cluster member's deletes must outlive every older copy on a replica that was
    /// paused, partitioned or stopped longer than the tombstone TTL, or that copy would
    /// come back. Until released, an expired tombstone no longer counts in digests or
    /// client reads, but it still shadows older versions and travels to replicas that
    /// hold one.
    pub fn hold_tombstones(&self) {
        for horizon in &self.shared.tombstone_horizons {
            horizon.store(0, Ordering::Relaxed);
        }
    }

    /// Lets `partition`'s tombstones that expired at or before `expired_by` (Unix ms) be
    /// removed: every owner is known to hold no older copy of their keys.
    pub fn release_tombstones(&self, partition: u32, expired_by: u64) {
        if let Some(horizon) = self.shared.tombstone_horizons.get(partition as usize) {
            horizon.fetch_max(expired_by, Ordering::Relaxed);
        }
    }

    /// Whether `entry`, in partition index `partition`, may be removed as expired at `now`.
    fn removable(&self, entry: &Entry, partition: usize, now: u64) -> bool {
        if !entry.is_expired(now) {
            return false;
        }
        if !entry.is_tombstone() {
            return true;
        }
        let horizon = self.shared.tombstone_horizons[partition].load(Ordering::Relaxed);
        entry.expires_at_ms().is_some_and(|at| at <= horizon)
    }

    /// The partition's digest: [`DIGEST_BUCKETS`] order-independent sums over its
    /// unexpired entries (tombstones included).
    pub fn partition_digest(&self, partition: u32) -> [u64; DIGEST_BUCKETS] {
        let mut buckets = [0u64; DIGEST_BUCKETS];
        let Some(part) = self.shared.partitions.get(partition as usize) else {
            return buckets;
        };
        let now = self.now_ms();
        let part = part.lock();
        for slot in 0..part.len() {
            let entry = part.slot(slot);
            if entry.is_expired(now) {
                continue;
            }
            let hash = key_hash(entry.key());
            let version = entry.version();
            let mut summary = Xxh3::new();
            summary.update(&hash.to_le_bytes());
            summary.update(&version.hlc.to_le_bytes());
            summary.update(&version.node.to_le_bytes());
            summary.update(&[u8::from(entry.is_tombstone())]);
            let bucket = &mut buckets[digest_bucket(hash)];
            *bucket = bucket.wrapping_add(summary.digest());
        }
        buckets
    }

    /// Up to `limit` records (or about `max_bytes`) of `partition`, scanning slots downward
    /// from `cursor` (`None` starts at the end). Returns the records and where to resume.
    ///
    /// Scanning downward is what makes the scan miss no entry that existed when it began:
    /// removal moves the last entry into the hole, which is either a slot already scanned
    /// or one still ahead. Entries added during the scan may be missed (the writes that
    /// add them reach every owner anyway), and an entry may be seen twice (harmless: LWW).
    pub fn partition_chunk(
        &self,
        partition: u32,
        buckets: Option<&[bool; DIGEST_BUCKETS]>,
        cursor: Option<usize>,
        limit: usize,
        max_bytes: usize,
    ) -> (Vec<Record>, Option<usize>) {
        let Some(part) = self.shared.partitions.get(partition as usize) else {
            return (Vec::new(), None);
        };
        let now = self.now_ms();
        let part = part.lock();
        let mut next = cursor.unwrap_or(part.len()).min(part.len());
        let mut records = Vec::new();
        let mut bytes = 0;
        while next > 0 && records.len() < limit && bytes < max_bytes {
            next -= 1;
            let entry = part.slot(next);
            // Expired tombstones still held travel: they shadow older copies elsewhere.
            if entry.is_expired(now) && !entry.is_tombstone() {
                continue;
            }
            if buckets.is_some_and(|wanted| !wanted[digest_bucket(key_hash(entry.key()))]) {
                continue;
            }
            bytes += entry.key().len() + entry.value().len();
            records.push(Record {
                key: entry.key().to_vec(),
                value: entry.value().to_vec(),
                version: entry.version(),
                expires_at_ms: entry.expires_at_ms().unwrap_or(0),
                tombstone: entry.is_tombstone(),
            });
        }
        (records, (next > 0).then_some(next))
    }

    /// Removes every entry of `partition` (its new owners hold it now).
    pub fn drop_partition(&self, partition: u32) {
        let Some(part) = self.shared.partitions.get(partition as usize) else {
            return;
        };
        let mut part = part.lock();
        if let Some(log) = self.log() {
            log.append_drop(partition);
        }
        let (bytes, tombstones) = part.clear();
        part.counters.tombstones -= tombstones;
        drop(part);
        self.release(bytes);
    }

    /// Keys that are not tombstones (expired ones not yet swept included) in `partitions`.
    pub fn live_keys_in(&self, partitions: impl Iterator<Item = u32>) -> u64 {
        partitions
            .filter_map(|p| self.shared.partitions.get(p as usize))
            .map(|part| {
                let part = part.lock();
                (part.len() as u64).saturating_sub(part.counters.tombstones)
            })
            .sum()
    }

    /// The live keys that start with `prefix`, in every partition (a read-through purge
    /// of one upstream). Each partition's lock is held while it is scanned.
    pub fn keys_with_prefix(&self, prefix: &[u8]) -> Vec<Vec<u8>> {
        let now = self.now_ms();
        let mut keys = Vec::new();
        for part in &self.shared.partitions {
            let part = part.lock();
            for slot in 0..part.len() {
                let entry = part.slot(slot);
                if entry.is_live(now) && entry.key().starts_with(prefix) {
                    keys.push(entry.key().to_vec());
                }
            }
        }
        keys
    }

    /// Partitions that hold at least one entry (tombstones included).
    pub fn partitions_holding_data(&self) -> Vec<u32> {
        (0..self.shared.partitions.len())
            .filter(|&p| self.shared.partitions[p].lock().len() > 0)
            .map(|p| u32::try_from(p).unwrap_or(u32::MAX))
            .collect()
    }

    /// The partition a key lives in. Protocol: never change this function.
    pub fn partition_of(&self, key: &[u8]) -> u32 {
        // Fewer than 2^32 partitions by construction (the count is a u32).
        u32::try_from(self.partition_index(key)).unwrap_or(u32::MAX)
    }

    pub fn get(&self, key: &[u8]) -> Option<Value> {
        self.read(key, |found| found.map(|found| found.to_value()))
    }

    /// Reads `key` and hands `read` the live entry, if any, without copying its value (the
    /// RESP listener writes it straight into its reply). `read` runs under the partition's
    /// lock: it must be short and must not touch the store.
    pub fn read<R>(&self, key: &[u8], read: impl FnOnce(Option<Found<'_>>) -> R) -> R {
        let hash = key_hash(key);
        let now = self.shared.clock.now_ms();
        let policy = self.shared.config.eviction;
        let partition = self.partition_index(key);
        let mut part = self.shared.partitions[partition].lock();
        let Some(slot) = part.find(hash, key) else {
            part.counters.misses += 1;
            return read(None);
        };
        let tick = part.next_tick();
        let entry = part.slot_mut(slot);
        if entry.is_live(now) {
            entry.set_eviction(policy.on_access(entry.eviction(), now, tick));
            let found = Found {
                data: entry.value(),
                version: entry.version(),
                ttl: entry
                    .expires_at_ms()
                    .map(|at| Duration::from_millis(at - now)),
            };
            let answer = read(Some(found));
            part.counters.hits += 1;
            return answer;
        }
        let expired = self.removable(entry, partition, now);
        part.counters.misses += 1;
        if expired {
            let removed = part.remove(slot);
            count_removal(&mut part, &removed, Removal::Expired);
            drop(part);
            self.release(removed.charge());
        }
        read(None)
    }

    /// Writes `value` under `key` if `precondition` holds, evicting if the policy allows.
    pub fn put(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        precondition: &Precondition,
    ) -> Result<Written, StoreError> {
        let policy = self.shared.config.eviction;
        let outcome = self.write(key, value, |current, now, tick| {
            precondition.check(current.filter(|e| e.is_live(now)).map(Entry::version))?;
            Ok(Decision::Write(EntryMeta {
                version: self.shared.hlc.next(now),
                expires_at_ms: record::expiry(now, ttl),
                eviction: policy.on_insert(now, tick),
                tombstone: false,
            }))
        })?;
        Ok(Written {
            version: outcome.version,
            created: !outcome.replaced_live,
        })
    }

    /// The key's record as replicas exchange it: tombstones included (expired ones still
    /// held too: they shadow older copies), expired values not.
    pub fn get_record(&self, key: &[u8]) -> Option<Record> {
        let hash = key_hash(key);
        let now = self.shared.clock.now_ms();
        let part = self.lock(key);
        let entry = part.slot(part.find(hash, key)?);
        if entry.is_expired(now) && !entry.is_tombstone() {
            return None;
        }
        Some(Record {
            key: key.to_vec(),
            value: entry.value().to_vec(),
            version: entry.version(),
            expires_at_ms: entry.expires_at_ms().unwrap_or(0),
            tombstone: entry.is_tombstone(),
        })
    }

    /// Stores a record from another node if it is newer than what this node holds (last
    /// writer wins, tombstones included). Idempotent: applying it twice changes nothing.
    pub fn apply(&self, record: &Record) -> Result<Applied, StoreError> {
        self.apply_record(record, false)
    }

    /// Stores a record loaded from the data dir: as [`Store::apply`], except that an
    /// expired tombstone is kept even with nothing to shadow yet. The load is in log
    /// order, and a cluster member holds expired tombstones until its co-owners are known
    /// to have no older copy (see [`Store::hold_tombstones`]): dropping them at load
    /// would let such a copy come back.
    pub fn restore(&self, record: &Record) -> Result<Applied, StoreError> {
        self.apply_record(record, true)
    }

    fn apply_record(
        &self,
        record: &Record,
        keep_expired_tombstone: bool,
    ) -> Result<Applied, StoreError> {
        self.shared.hlc.observe(record.version);
        let now = self.shared.clock.now_ms();
        let expired = record.expires_at_ms != 0 && record.expires_at_ms <= now;
        if expired && !record.tombstone {
            return Ok(Applied::Stale);
        }
        let expired = expired && !keep_expired_tombstone;
        let policy = self.shared.config.eviction;
        let outcome = self.write(&record.key, &record.value, |current, now, tick| {
            Ok(match current {
                Some(held) if held.version() >= record.version => Decision::Keep(held.version()),
                // An expired tombstone is stored only to shadow an older copy held here;
                // with nothing to shadow there is nothing to keep.
                None if expired => Decision::Keep(record.version),
                _ => Decision::Write(EntryMeta {
                    version: record.version,
                    expires_at_ms: record.expires_at_ms,
                    eviction: policy.on_insert(now, tick),
                    tombstone: record.tombstone,
                }),
            })
        })?;
        Ok(if outcome.stored {
            Applied::Stored
        } else {
            Applied::Stale
        })
    }

    /// The one write path: under the partition lock, `decide` sees the current entry and
    /// says what to store. Reserves memory for the net growth, evicting (with no lock held)
    /// when the policy allows.
    fn write(
        &self,
        key: &[u8],
        value: &[u8],
        mut decide: impl FnMut(Option<&Entry>, u64, u32) -> Result<Decision, StoreError>,
    ) -> Result<WriteOutcome, StoreError> {
        self.check_writable()?;
        let hash = key_hash(key);
        let charge = Entry::charge_for(key.len(), value.len());
        let max_memory = self.shared.config.max_memory;
        if charge > max_memory {
            return Err(StoreError::EntryTooLarge {
                needed: charge,
                max_memory,
            });
        }
        // Bytes already added to `used_bytes` for this write. Held across retries, so
        // room that eviction made for this write cannot be taken by another one.
        let mut reserved = 0;
        for _ in 0..WRITE_ATTEMPTS {
            let now = self.shared.clock.now_ms();
            let mut part = self.lock(key);
            let found = part.find(hash, key);
            let tick = part.next_tick();
            let meta = match decide(found.map(|slot| part.slot(slot)), now, tick) {
                Ok(Decision::Write(meta)) => meta,
                Ok(Decision::Keep(version)) => {
                    drop(part);
                    self.release(reserved);
                    return Ok(WriteOutcome {
                        version,
                        replaced_live: true,
                        stored: false,
                    });
                }
                Err(err) => {
                    drop(part);
                    self.release(reserved);
                    return Err(err);
                }
            };
            let freed = found.map_or(0, |slot| part.slot(slot).charge());
            let needed = charge.saturating_sub(freed);
            if needed > reserved {
                if self.try_reserve(needed - reserved) {
                    reserved = needed;
                } else {
                    drop(part);
                    if let Err(err) = self.evict_and_reserve(needed - reserved) {
                        self.release(reserved);
                        return Err(err);
                    }
                    reserved = needed;
                    // The key may have changed while unlocked: look again.
                    continue;
                }
            }
            let replaced_live = found.is_some_and(|slot| part.slot(slot).is_live(now));
            let entry = Entry::new(key, value, meta);
            match found {
                Some(slot) => {
                    let old = part.replace(slot, entry);
                    if !replaced_live {
                        count_removal(&mut part, &old, Removal::Expired);
                    }
                }
                None => part.insert_new(hash, entry),
            }
            if meta.tombstone {
                part.counters.tombstones += 1;
            }
            if let Some(log) = self.log() {
                log.append_record(key, value, meta.version, meta.expires_at_ms, meta.tombstone);
            }
            drop(part);
            // Net effect on `used_bytes`: exactly `charge - freed`.
            self.release(reserved - needed + freed.saturating_sub(charge));
            return Ok(WriteOutcome {
                version: meta.version,
                replaced_live,
                stored: true,
            });
        }
        self.release(reserved);
        Err(self.out_of_memory(charge))
    }

    /// Deletes a live key, leaving a tombstone for the configured grace period.
    pub fn delete(&self, key: &[u8], precondition: &Precondition) -> Result<Version, StoreError> {
        self.check_writable()?;
        let hash = key_hash(key);
        let now = self.shared.clock.now_ms();
        let mut part = self.lock(key);
        let found = part.find(hash, key);
        let live = found
            .map(|slot| part.slot(slot))
            .filter(|entry| entry.is_live(now))
            .map(Entry::version);
        precondition.check(live)?;
        let (Some(slot), Some(_)) = (found, live) else {
            return Err(StoreError::NotFound);
        };
        let version = self.shared.hlc.next(now);
        let lifetime = self.shared.config.limits.tombstone_ttl;
        let expires_at_ms = record::tombstone_expiry(now, lifetime);
        if let Some(log) = self.log() {
            log.append_record(key, &[], version, expires_at_ms, true);
        }
        let (old, kept) = if lifetime.is_zero() {
            (part.remove(slot), 0)
        } else {
            let tombstone = Entry::new(
                key,
                &[],
                EntryMeta {
                    version,
                    expires_at_ms,
                    eviction: self.shared.config.eviction.on_insert(now, part.tick()),
                    tombstone: true,
                },
            );
            let kept = tombstone.charge();
            part.counters.tombstones += 1;
            (part.replace(slot, tombstone), kept)
        };
        drop(part);
        self.release(old.charge() - kept);
        Ok(version)
    }

    pub fn stats(&self) -> StoreStats {
        let mut stats = StoreStats {
            bytes: self.shared.used_bytes.load(Ordering::Relaxed) as u64,
            buffer_bytes: self.shared.buffer_bytes.load(Ordering::Relaxed) as u64,
            max_memory: self.shared.config.max_memory as u64,
            partitions: self.shared.partitions.len() as u64,
            ..StoreStats::default()
        };
        for part in &self.shared.partitions {
            let part = part.lock();
            let c = part.counters;
            stats.keys += part.len() as u64 - c.tombstones;
            stats.tombstones += c.tombstones;
            stats.hits += c.hits;
            stats.misses += c.misses;
            stats.evictions += c.evictions;
            stats.expirations += c.expirations;
        }
        stats
    }

    fn partition_index(&self, key: &[u8]) -> usize {
        // At most `slot::SLOTS` partitions (see `Store::new`), so every index is in range.
        let partitions = u32::try_from(self.shared.partitions.len()).unwrap_or(u32::MAX);
        slot::partition_of_slot(slot::slot_of(key), partitions) as usize
    }

    fn lock(&self, key: &[u8]) -> MutexGuard<'_, PartitionMap> {
        self.shared.partitions[self.partition_index(key)].lock()
    }
}

#[cfg(test)]
mod tests;
