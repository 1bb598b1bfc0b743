//! The memory bound: the one budget every entry and buffer is charged against, and
//! eviction when it is spent.
//!
//! Entries claim their bytes with [`Store::try_reserve`] (all or nothing) and, when the
//! budget is spent, [`Store::evict_and_reserve`], which evicts by the configured policy.
//!
//! `--max-memory` is a hard bound on everything the node holds for the data it serves,
//! including the chunks of partition data on their way to or from a peer (a stream to a
//! new owner, a pull, a drain's hand-off). Such a buffer reserves its bytes from the same
//! budget as entries, with the same all-or-nothing reservation, evicting by the configured
//! policy when the budget is spent. The reservation lives in a [`BufferGuard`] and is
//! released when the guard drops, so a buffer that is dropped on any path (sent, applied,
//! an error, a receiver that went away) gives its bytes back.

use std::sync::atomic::Ordering;

use super::entry::Entry;
use super::eviction::{self, EvictionPolicy};
use super::partition::PartitionMap;
use super::{MAX_EVICTIONS_PER_WRITE, Store, StoreError};

/// Bytes reserved for one buffer in flight; given back when dropped.
#[derive(Debug)]
#[must_use = "the reservation is released as soon as the guard drops"]
pub struct BufferGuard {
    store: Store,
    bytes: usize,
}

impl Store {
    /// Reserves `bytes` for a transient buffer under the same bound as entries: evicting
    /// by the configured policy if they do not fit, refused with
    /// [`StoreError::OutOfMemory`] when eviction is off or cannot free enough. A buffer
    /// larger than the whole bound is refused without evicting anything.
    pub fn reserve_buffer(&self, bytes: usize) -> Result<BufferGuard, StoreError> {
        if bytes > self.shared.config.max_memory {
            return Err(self.out_of_memory(bytes));
        }
        if bytes > 0 && !self.try_reserve(bytes) {
            self.evict_and_reserve(bytes)?;
        }
        self.shared.buffer_bytes.fetch_add(bytes, Ordering::Relaxed);
        Ok(BufferGuard {
            store: self.clone(),
            bytes,
        })
    }

    fn release_buffer(&self, bytes: usize) {
        if bytes > 0 {
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
    /// Claims `bytes` of the budget if they fit, all or nothing.
    pub(super) fn try_reserve(&self, bytes: usize) -> bool {
        let max = self.shared.config.max_memory;
        self.shared
            .used_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                used.checked_add(bytes).filter(|&total| total <= max)
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
            let mut part = self.shared.partitions[(start + offset) % partitions].lock();
            if part.len() == 0 {
                continue;
            }
            let now = self.shared.clock.now_ms();
            let tick = part.tick();
            let victim = (0..eviction::SAMPLES)
                .map(|_| fastrand::usize(..part.len()))
                .min_by_key(|&slot| {
                    let entry = part.slot(slot);
                    if entry.is_expired(now) {
                        0
                    } else {
                        1 + policy.keep_score(entry.eviction(), now, tick)
                    }
                })
                .unwrap_or(0);
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
