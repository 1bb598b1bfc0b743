//! Migration buffers under the memory bound: partition data a node holds in flight.
//!
//! `--max-memory` is a hard bound on everything the node holds for the data it serves,
//! including the chunks of partition data on their way to or from a peer (a stream to a
//! new owner, a pull, a drain's hand-off). Such a buffer reserves its bytes from the same
//! budget as entries, with the same all-or-nothing reservation, evicting by the configured
//! policy when the budget is spent. The reservation lives in a [`BufferGuard`] and is
//! released when the guard drops, so a buffer that is dropped on any path (sent, applied,
//! an error, a receiver that went away) gives its bytes back.

use std::sync::atomic::Ordering;

use super::{Store, StoreError};

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
