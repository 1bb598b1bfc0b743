//! Sync state: how far this node holds what it owns, and what syncing has done.
//!
//! Startup sync, rebalancing and anti-entropy all pull partitions from peers. This module
//! owns what they have to show for it: the node's [`Lifecycle`] (a node is a source only
//! once it is synced), the newest epoch whose partitions it fully holds, the counters
//! `GET /v1/cluster` and `/metrics` report, and the progress of the current move.
//! Counters are relaxed atomics: each is a monotonic tally read for reporting only.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use super::rebalance::Progress;
use crate::lifecycle::{Lifecycle, Phase};
use kache_api::report::SyncReport;

#[derive(Debug)]
pub struct SyncState {
    lifecycle: Lifecycle,
    /// The newest epoch whose partitions this node fully holds, once synced.
    synced_epoch: AtomicU64,
    anti_entropy_rounds: AtomicU64,
    /// Records pulled from peers that were newer than what this node held.
    repaired: AtomicU64,
    records_pulled: AtomicU64,
    bytes_pulled: AtomicU64,
    /// Digest or stream exchanges that failed (peer down, timeout).
    failures: AtomicU64,
    /// The move in progress (or the last one). A parking_lot mutex, never held across an
    /// `.await`: the rebalancer updates it between pulls.
    progress: Mutex<Progress>,
    /// Owned partitions the startup sync found no live copy of, anywhere.
    without_copy: Mutex<Vec<u32>>,
}

impl SyncState {
    pub fn new(lifecycle: Lifecycle, epoch: u64) -> Self {
        Self {
            lifecycle,
            synced_epoch: AtomicU64::new(epoch),
            anti_entropy_rounds: AtomicU64::new(0),
            repaired: AtomicU64::new(0),
            records_pulled: AtomicU64::new(0),
            bytes_pulled: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            progress: Mutex::new(Progress::default()),
            without_copy: Mutex::new(Vec::new()),
        }
    }

    pub fn lifecycle(&self) -> &Lifecycle {
        &self.lifecycle
    }

    /// Whether the startup sync has finished (and the node not stopped since).
    pub fn is_synced(&self) -> bool {
        self.lifecycle.is_synced()
    }

    /// The newest epoch whose partitions this node fully holds; 0 before its startup sync.
    pub fn synced_epoch(&self) -> u64 {
        self.holding().unwrap_or(0)
    }

    /// Like [`Self::synced_epoch`], but None before the startup sync.
    pub fn holding(&self) -> Option<u64> {
        self.is_synced()
            .then(|| self.synced_epoch.load(Ordering::Relaxed))
    }

    /// The epoch this node last caught up with, synced or not.
    pub fn caught_up_to(&self) -> u64 {
        self.synced_epoch.load(Ordering::Relaxed)
    }

    /// This node holds every partition of `epoch` (a move's catch-up finished).
    pub fn caught_up(&self, epoch: u64) {
        self.synced_epoch.store(epoch, Ordering::Relaxed);
    }

    /// The startup sync has a member list and starts pulling.
    pub fn start_startup(&self) {
        self.lifecycle.advance(Phase::Syncing);
    }

    /// The startup sync finished: the node holds `epoch` and is Ready, unless it started
    /// draining meanwhile (then it stays a non-source). `without_copy`: the owned
    /// partitions it found no live copy of.
    pub fn finish_startup(&self, epoch: u64, without_copy: Vec<u32>) {
        *self.without_copy.lock() = without_copy;
        self.synced_epoch.store(epoch, Ordering::Relaxed);
        self.lifecycle.advance(Phase::Ready);
    }

    /// The owned partitions the startup sync found no live copy of (empty before it
    /// finished).
    pub fn without_copy(&self) -> Vec<u32> {
        self.without_copy.lock().clone()
    }

    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_round(&self) {
        self.anti_entropy_rounds.fetch_add(1, Ordering::Relaxed);
    }

    /// A record arrived from a peer with `bytes` of key and value; `newer` if it was
    /// newer than what this node held.
    pub fn record_pulled(&self, bytes: usize, newer: bool) {
        self.records_pulled.fetch_add(1, Ordering::Relaxed);
        self.bytes_pulled.fetch_add(bytes as u64, Ordering::Relaxed);
        if newer {
            self.repaired.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records and bytes pulled so far, to measure one pull by difference.
    pub fn pulled_totals(&self) -> (u64, u64) {
        (
            self.records_pulled.load(Ordering::Relaxed),
            self.bytes_pulled.load(Ordering::Relaxed),
        )
    }

    /// The progress of the current (or last) move.
    pub fn progress(&self) -> Progress {
        self.progress.lock().clone()
    }

    /// Updates the move's progress in place.
    pub fn update_progress<T>(&self, update: impl FnOnce(&mut Progress) -> T) -> T {
        update(&mut self.progress.lock())
    }

    /// The counters alone: cheap, for metrics scrapes.
    pub fn report(&self) -> SyncReport {
        SyncReport {
            anti_entropy_rounds: self.anti_entropy_rounds.load(Ordering::Relaxed),
            records_repaired: self.repaired.load(Ordering::Relaxed),
            records_pulled: self.records_pulled.load(Ordering::Relaxed),
            bytes_pulled: self.bytes_pulled.load(Ordering::Relaxed),
            failures: self.failures.load(Ordering::Relaxed),
        }
    }
}
