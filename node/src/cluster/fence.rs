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

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::RwLock;

#[derive(Debug, Default)]
pub struct DrainFence {
    /// Raised once, by [`DrainFence::close`]; never lowered.
    closed: AtomicBool,
    /// A parking_lot lock: held only around one synchronous store write (readers) or one
    /// flag store (the writer), never across an `.await`.
    gate: RwLock<()>,
}

impl DrainFence {
    /// Closes the fence, waiting out local writes in flight.
    pub fn close(&self) {
        let _closed = self.gate.write();
        self.closed.store(true, Ordering::Release);
    }

    /// Whether a write that `refused` (for its partition) must be refused now.
    pub fn refuses(&self, refused: impl FnOnce() -> bool) -> bool {
        self.closed.load(Ordering::Acquire) && refused()
    }

    /// Runs `write` unless the fence is closed and `refused` says the write's partition
    /// must not take it (None). The check and the write happen under the gate.
    pub fn admit<T>(&self, refused: impl FnOnce() -> bool, write: impl FnOnce() -> T) -> Option<T> {
        let _open = self.gate.read();
        (!self.refuses(refused)).then(write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_closed_fence_refuses_only_what_it_is_told_to() {
        let fence = DrainFence::default();
        assert_eq!(
            fence.admit(|| true, || 1),
            Some(1),
            "open: everything passes"
        );
        fence.close();
        assert_eq!(fence.admit(|| true, || 2), None);
        assert_eq!(fence.admit(|| false, || 3), Some(3));
        assert!(fence.refuses(|| true) && !fence.refuses(|| false));
    }
}
