//! The drain fence: once a drain starts, no write lands in a partition the hand-off may
//! already have passed.
//!
//! A drain reads partitions this node alone owns and pushes them to other members. A
//! write stored in such a partition after the hand-off read it would leave with the
//! process, acknowledged and lost. So every local store write runs through
//! [`DrainFence::admit`]: it holds the gate for read across "may I?" and the write, and
//! [`DrainFence::close`] takes it for write to raise `closed`. No write that passed the
//! check is still on its way into the store when the hand-off starts reading; later ones
//! fail with a retryable 503, never vanish.

use std::collections::BTreeSet;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

#[derive(Debug, Default)]
pub struct DrainFence {
    /// Raised once, by [`DrainFence::close`]; never lowered.
    closed: AtomicBool,
    /// Partitions whose last live copy is here (their other owners are down), refused
    /// like the partitions this node alone owns. Set once, by [`DrainFence::close`].
    last_copies: OnceLock<BTreeSet<u32>>,
    /// A parking_lot lock: held only around one synchronous store write (readers) or one
    /// flag store (the writer), never across an `.await`.
    gate: RwLock<()>,
}

impl DrainFence {
    /// Closes the fence, waiting out local writes in flight. `last_copies` are refused
    /// too, whoever owns them.
    pub fn close(&self, last_copies: BTreeSet<u32>) {
        let _closed = self.gate.write();
        let _ = self.last_copies.set(last_copies);
        self.closed.store(true, Ordering::Release);
    }

    /// Whether a write to `partition`, which `refused` says this node alone owns, must be
    /// refused now.
    pub fn refuses(&self, partition: u32, refused: impl FnOnce() -> bool) -> bool {
        self.closed.load(Ordering::Acquire)
            && (self
                .last_copies
                .get()
                .is_some_and(|last| last.contains(&partition))
                || refused())
    }

    /// Runs `write` unless the fence is closed and `refused` says the write's partition
    /// must not take it (None). The check and the write happen under the gate.
    pub fn admit<T>(
        &self,
        partition: u32,
        refused: impl FnOnce() -> bool,
        write: impl FnOnce() -> T,
    ) -> Option<T> {
        let _open = self.gate.read();
        (!self.refuses(partition, refused)).then(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_fence_refuses_only_what_it_is_told_to() {
        let fence = DrainFence::default();
        assert_eq!(
            fence.admit(7, || true, || 1),
            Some(1),
            "open: everything passes"
        );
        fence.close(BTreeSet::from([9]));
        assert_eq!(fence.admit(7, || true, || 2), None);
        assert_eq!(fence.admit(7, || false, || 3), Some(3));
        assert_eq!(fence.admit(9, || false, || 4), None, "a last live copy");
        assert!(fence.refuses(7, || true) && !fence.refuses(7, || false));
    }
}
