//! The memory bound: the one budget every entry and buffer is charged against, and
//! eviction when it is spent.
//!
//! `--max-memory` is a hard bound on everything the node holds for the data it serves,
//! including the chunks of partition data on their way to or from a peer (a stream to a
//! new owner, a pull, a drain's hand-off). It is split in two shares:
//! - **Buffers** hold at most [`Store::buffer_cap`] together (1/8 of the bound, see
//!   there). A buffer reserves its bytes all or nothing in [`Store::reserve_buffer`] and
//!   **never evicts**: when the buffers' share is spent, the reservation is refused and
//!   the exchange fails (callers retry). The reservation lives in a [`BufferGuard`] and
//!   is released when the guard drops, so a buffer dropped on any path (sent, applied, an
//!   error, a receiver that went away) gives its bytes back.
//! - **Entries** take the rest. They claim their bytes with [`Store::try_reserve`] (all
//!   or nothing) and, when their share is spent, [`Store::evict_and_reserve`], which
//!   evicts by the configured policy. Entries never take the buffers' share, so a full
//!   cache can still move partitions, and no buffer, however many streams a peer opens,
//!   costs a live key. (One exception: a store holding no entries at all admits one entry
//!   as large as the whole bound, as before the split.)

use std::sync::atomic::Ordering;

use super::entry::Entry;
use super::eviction::{self, EvictionPolicy};
use super::partition::PartitionMap;
use super::{MAX_EVICTIONS_PER_WRITE, Store, StoreError};

/// The buffers' share is 1/8 of `--max-memory`...
const BUFFER_SHARE: usize = 8;
/// ...but at least 4 MiB (about 14 chunks of 284 KiB: a few partition streams of three
/// chunks each, and the pulls this node runs), and at least two of the largest records,
/// so that any record can move...
const BUFFER_FLOOR: usize = 4 << 20;
/// ...and at most 64 MiB (or the floor, if the records are that large): more buffers in
/// flight would only be more unread chunks. The share never exceeds half the bound.
const BUFFER_CEILING: usize = 64 << 20;

/// Bytes reserved for one buffer in flight; given back when dropped.
#[derive(Debug)]
#[must_use = "the reservation is released as soon as the guard drops"]
pub struct BufferGuard {
    store: Store,
    bytes: usize,
}

/// Why a buffer could not be reserved. Buffers never evict, so this is final for now;
/// the exchange fails and its caller retries.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "no room for a {needed}-byte buffer: buffers in flight hold {held} of their {cap}-byte \
     share of max memory ({used} of {max_memory} bytes in use); buffers never evict"
)]
pub struct NoBufferRoom {
    pub needed: usize,
    pub held: usize,
    pub cap: usize,
    pub used: usize,
    pub max_memory: usize,
}

impl Store {
    /// The most all buffers in flight may hold together: 1/8 of `--max-memory`, at least
    /// 4 MiB and two of the largest records, at most 64 MiB, never more than half the
    /// bound. Entries never take this share.
    pub fn buffer_cap(&self) -> usize {
        let config = &self.shared.config;
        let largest_record = config.limits.max_key_bytes + config.limits.max_value_bytes;
        let floor = BUFFER_FLOOR.max(largest_record.saturating_mul(2));
        (config.max_memory / BUFFER_SHARE)
            .clamp(floor, BUFFER_CEILING.max(floor))
            .min(config.max_memory / 2)
    }

    /// Reserves `bytes` for a transient buffer from the buffers' share, all or nothing.
    /// Never evicts: refused when the share (or, if an oversized entry took it, the
    /// bound) has no room for them.
    pub fn reserve_buffer(&self, bytes: usize) -> Result<BufferGuard, NoBufferRoom> {
        let cap = self.buffer_cap();
        let shared = &self.shared;
        // The share first, then the bound; the share is given back if the bound refuses.
        // Between the two, an entry may see the buffer counted in the share but not yet
        // in the bound, and overshoot the entries' share by these bytes; the bound holds.
        let within_share = shared
            .buffer_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |held| {
                held.checked_add(bytes).filter(|&total| total <= cap)
            })
            .is_ok();
        let max = shared.config.max_memory;
        if within_share {
            if self.claim(bytes, |total| total <= max) {
                return Ok(BufferGuard {
                    store: self.clone(),
                    bytes,
                });
            }
            shared.buffer_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
        Err(NoBufferRoom {
            needed: bytes,
            held: shared.buffer_bytes.load(Ordering::Relaxed),
            cap,
            used: shared.used_bytes.load(Ordering::Relaxed),
            max_memory: max,
        })
    }

    fn release_buffer(&self, bytes: usize) {
        if bytes > 0 {
            // The share before the bound: in between, entries see less room, not more.
            self.shared.buffer_bytes.fetch_sub(bytes, Ordering::Relaxed);
            self.release(bytes);
        }
    }
}

impl BufferGuard {
    /// The bytes still reserved.
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Gives back `bytes` of the reservation early: part of the buffer is gone (a record
    /// applied and dropped), the rest is still held.
    pub fn release(&mut self, bytes: usize) {
        let bytes = bytes.min(self.bytes);
        self.bytes -= bytes;
        self.store.release_buffer(bytes);
    }
}

impl Drop for BufferGuard {
    fn drop(&mut self) {
        self.store.release_buffer(self.bytes);
    }
}

/// The budget itself: claims, releases and eviction.
impl Store {
    /// Claims `bytes` of the entries' share if they fit, all or nothing. A store holding
    /// no entries admits one entry up to the whole bound, as long as the buffers in
    /// flight leave room for it.
    pub(super) fn try_reserve(&self, bytes: usize) -> bool {
        let max = self.shared.config.max_memory;
        let entries_max = max - self.buffer_cap();
        let buffers = &self.shared.buffer_bytes;
        self.claim(bytes, |total| {
            let entries = total.saturating_sub(buffers.load(Ordering::Relaxed));
            total <= max && (entries <= entries_max || entries == bytes)
        })
    }

    /// Adds `bytes` to the charged total if `fits(new total)`, all or nothing.
    fn claim(&self, bytes: usize, fits: impl Fn(usize) -> bool) -> bool {
        self.shared
            .used_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| fits(total))
            })
            .is_ok()
    }

    pub(super) fn release(&self, bytes: usize) {
        if bytes > 0 {
            self.shared.used_bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Evicts until `bytes` more fit, and claims them. Called with no partition lock
    /// held, so it may lock any partition.
    pub(super) fn evict_and_reserve(&self, bytes: usize) -> Result<(), StoreError> {
        if self.shared.config.eviction == EvictionPolicy::None {
            return Err(self.out_of_memory(bytes));
        }
        for _ in 0..MAX_EVICTIONS_PER_WRITE {
            if self.try_reserve(bytes) {
                return Ok(());
            }
            if !self.evict_one() {
                break;
            }
        }
        Err(self.out_of_memory(bytes))
    }

    /// Removes the least valuable of a few sampled entries, expired ones first.
    /// Returns false when the store is empty.
    ///
    /// The partition is the fuller of two random ones ("power of two choices"). Writes
    /// land in partitions in proportion to keys; evicting from one uniformly random
    /// partition would let partition sizes random-walk until some partition, and every
    /// hot key in it, is drained to nothing.
    fn evict_one(&self) -> bool {
        let partitions = self.shared.partitions.len();
        let policy = self.shared.config.eviction;
        let (a, b) = (fastrand::usize(..partitions), fastrand::usize(..partitions));
        let len = |p: usize| self.shared.partitions[p].lock().len();
        let start = if len(a) >= len(b) { a } else { b };
        for offset in 0..partitions {
            let index = (start + offset) % partitions;
            let mut part = self.shared.partitions[index].lock();
            if part.len() == 0 {
                continue;
            }
            let now = self.shared.clock.now_ms();
            let tick = part.tick();
            // Expired values and released tombstones go first, then the policy's pick
            // among values. A tombstone still needed is never evicted: removing it could
            // let an older copy on a replica that missed the delete come back.
            let score = |slot: usize| -> u64 {
                let entry = part.slot(slot);
                if self.removable(entry, index, now) {
                    0
                } else if entry.is_tombstone() {
                    u64::MAX
                } else {
                    // Never the sentinel above, whatever the policy scores.
                    policy
                        .keep_score(entry.eviction(), now, tick)
                        .saturating_add(1)
                        .min(u64::MAX - 1)
                }
            };
            let Some((victim, victim_score)) = (0..eviction::SAMPLES)
                .map(|_| fastrand::usize(..part.len()))
                .map(|slot| (slot, score(slot)))
                .min_by_key(|&(_, score)| score)
            else {
                continue;
            };
            if victim_score == u64::MAX {
                // Only deletes still needed in this sample: try another partition.
                continue;
            }
            let removed = part.remove(victim);
            let why = if removed.is_expired(now) {
                Removal::Expired
            } else {
                Removal::Evicted
            };
            count_removal(&mut part, &removed, why);
            drop(part);
            self.release(removed.charge());
            return true;
        }
        false
    }

    pub(super) fn out_of_memory(&self, needed: usize) -> StoreError {
        StoreError::OutOfMemory {
            needed,
            used: self.shared.used_bytes.load(Ordering::Relaxed),
            max_memory: self.shared.config.max_memory,
            policy: match self.shared.config.eviction {
                EvictionPolicy::None => "is off",
                EvictionPolicy::Lru | EvictionPolicy::Lfu => "could not free enough",
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum Removal {
    Expired,
    Evicted,
}

/// Keeps the partition's counters true after an entry leaves it.
pub(super) fn count_removal(part: &mut PartitionMap, removed: &Entry, why: Removal) {
    let counters = &mut part.counters;
    if removed.is_tombstone() {
        counters.tombstones -= 1;
        return;
    }
    match why {
        Removal::Expired => counters.expirations += 1,
        Removal::Evicted => counters.evictions += 1,
    }
}
