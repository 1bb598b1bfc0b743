//! The clock watch: how far this node's clock is from its peers', and whether it is
//! within `--max-clock-offset`.
//!
//! Last-writer-wins is only as good as the clocks behind the versions: a node whose clock
//! runs ahead writes versions that beat later writes from everyone else. So every peer
//! request and answer carries the sender's wall clock, and each node keeps the offset of
//! every peer it heard from recently. A node is out of bounds when most of those peers
//! are further from it than the bound: then it is the odd one out, and it stops taking
//! writes (clients get 503 `clock_out_of_bounds`) until its clock is back. With two
//! members neither can tell which clock is wrong, so both stop: unavailable, never
//! corrupt. Versions further ahead than the bound are refused wherever they arrive (see
//! `RecordLimits::check_version`), and counted here.
//!
//! The offset ignores the network's transit time, which on a cluster network is far
//! below the bound's hundreds of milliseconds.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

pub use kache_api::report::ClockReport;

use crate::clock::millis;

/// Readings older than this no longer count: the peer may be gone or fixed.
const FRESH: Duration = Duration::from_secs(60);

#[derive(Debug)]
pub struct ClockWatch {
    max_offset_ms: u64,
    /// Peer id → (its clock minus ours, when measured). A parking_lot mutex held only to
    /// insert or scan a handful of entries, never across an `.await`.
    peers: Mutex<HashMap<String, (i64, Instant)>>,
    /// Versions refused for being too far ahead.
    refused: AtomicU64,
    /// The last verdict, so a write checks one atomic. Recomputed whenever a peer's
    /// reading crosses the bound (or a new peer is heard), and on every report; an
    /// out-of-bounds verdict is recomputed on every check, so old readings age out.
    in_bounds: AtomicBool,
}

impl ClockWatch {
    pub fn new(max_offset: Duration) -> Self {
        Self {
            max_offset_ms: millis(max_offset),
            peers: Mutex::default(),
            refused: AtomicU64::new(0),
            in_bounds: AtomicBool::new(true),
        }
    }

    /// `peer`'s clock read `peer_wall_ms` when ours read `now_ms`. 0 means "not said".
    pub fn observe(&self, peer: &str, peer_wall_ms: u64, now_ms: u64) {
        if peer_wall_ms == 0 {
            return;
        }
        let offset =
            i64::try_from(i128::from(peer_wall_ms) - i128::from(now_ms)).unwrap_or(i64::MAX);
        let far = |offset: i64| offset.unsigned_abs() > self.max_offset_ms;
        let crossed = {
            let mut peers = self.peers.lock();
            match peers.get_mut(peer) {
                Some(reading) => {
                    let crossed = far(reading.0) != far(offset);
                    *reading = (offset, Instant::now());
                    crossed
                }
                None => {
                    peers.insert(peer.to_owned(), (offset, Instant::now()));
                    true
                }
            }
        };
        if crossed {
            self.report();
        }
    }

    pub fn record_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether this node's clock is within the bound of most peers heard recently: one
    /// atomic load on the write path while it is.
    pub fn in_bounds(&self) -> bool {
        self.in_bounds.load(Ordering::Relaxed) || self.report().in_bounds
    }

    pub fn report(&self) -> ClockReport {
        let mut offsets: Vec<i64> = {
            let mut peers = self.peers.lock();
            peers.retain(|_, (_, at)| at.elapsed() < FRESH);
            peers.values().map(|&(offset, _)| offset).collect()
        };
        offsets.sort_unstable();
        let far = offsets
            .iter()
            .filter(|offset| offset.unsigned_abs() > self.max_offset_ms)
            .count();
        // Peers' clocks minus ours; ours minus theirs is the negation.
        let median = offsets
            .get(offsets.len() / 2)
            .map_or(0, |m| m.saturating_neg());
        let in_bounds = far * 2 <= offsets.len();
        self.in_bounds.store(in_bounds, Ordering::Relaxed);
        ClockReport {
            offset_ms: median,
            max_offset_ms: self.max_offset_ms,
            in_bounds,
            peers_heard: offsets.len(),
            refused_versions: self.refused.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_odd_clock_out_is_out_of_bounds_and_recovers() {
        let watch = ClockWatch::new(Duration::from_millis(500));
        assert!(watch.in_bounds(), "nobody heard: nothing to compare with");
        // Two peers an hour behind this node: this node is the odd one out.
        watch.observe("b", 1_000, 3_601_000);
        watch.observe("c", 1_200, 3_601_000);
        let report = watch.report();
        assert!(!report.in_bounds);
        assert_eq!(report.peers_heard, 2);
        assert!(report.offset_ms > 3_599_000, "{report:?}");
        // One of them turns out close: one of two far is not "most".
        watch.observe("c", 3_600_900, 3_601_000);
        assert!(watch.in_bounds());
        // Old readings stop counting.
        watch.observe("c", 1, 3_601_000);
        tokio::time::advance(FRESH + Duration::from_secs(1)).await;
        assert!(watch.in_bounds());
        assert_eq!(watch.report().peers_heard, 0);
        watch.observe("b", 0, 5);
        assert_eq!(
            watch.report().peers_heard,
            0,
            "0 means the peer did not say"
        );
    }

    #[test]
    fn with_two_members_both_stop() {
        let watch = ClockWatch::new(Duration::from_millis(500));
        watch.observe("b", 10_000, 1_000);
        assert!(
            !watch.in_bounds(),
            "one far peer of one: cannot tell who is wrong"
        );
        watch.record_refused();
        assert_eq!(watch.report().refused_versions, 1);
    }
}
