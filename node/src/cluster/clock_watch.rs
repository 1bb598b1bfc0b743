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
//! A reading is the peer's clock when it sent minus ours when the message is handled, so
//! it is the true offset minus the time the message spent in transit and in queues, never
//! plus. On a loaded node that delay reached hundreds of milliseconds (the RESP client
//! tests fenced a node at "839 ms off" with every node on one machine, one clock). So the
//! offset taken for each peer is its largest reading of the last 5 to 10 seconds: the
//! least delayed one, as NTP keeps the sample with the least delay. A clock that steps
//! back is noticed up to 10 seconds later; one that steps ahead, at once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

pub use kache_api::report::ClockReport;

use crate::clock::millis;

/// Readings older than this no longer count: the peer may be gone or fixed.
const FRESH: Duration = Duration::from_secs(60);
/// The offset of a peer is its best reading of the current window and the one before.
const WINDOW: Duration = Duration::from_secs(5);

/// One peer's readings: the largest (least delayed) of the current window, and of the
/// previous one.
#[derive(Debug, Clone, Copy)]
struct Reading {
    best: i64,
    previous_best: Option<i64>,
    window_start: Instant,
    heard: Instant,
}

impl Reading {
    fn new(offset: i64) -> Self {
        let now = Instant::now();
        Self {
            best: offset,
            previous_best: None,
            window_start: now,
            heard: now,
        }
    }

    fn offset(&self) -> i64 {
        self.previous_best.map_or(self.best, |p| p.max(self.best))
    }

    fn add(&mut self, offset: i64) {
        let now = Instant::now();
        if now.duration_since(self.window_start) >= WINDOW {
            // A window with no reading leaves nothing to carry over.
            let just_ended = now.duration_since(self.window_start) < WINDOW * 2;
            self.previous_best = just_ended.then_some(self.best);
            self.best = offset;
            self.window_start = now;
        } else {
            self.best = self.best.max(offset);
        }
        self.heard = now;
    }
}

#[derive(Debug)]
pub struct ClockWatch {
    max_offset_ms: u64,
    /// Peer id → its readings (its clock minus ours). A parking_lot mutex held only to
    /// insert or scan a handful of entries, never across an `.await`.
    peers: Mutex<HashMap<String, Reading>>,
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
                    let before = reading.offset();
                    reading.add(offset);
                    far(before) != far(reading.offset())
                }
                None => {
                    peers.insert(peer.to_owned(), Reading::new(offset));
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
            peers.retain(|_, reading| reading.heard.elapsed() < FRESH);
            peers.values().map(Reading::offset).collect()
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

    #[tokio::test(start_paused = true)]
    async fn queueing_delay_is_not_skew_but_a_step_back_is_seen_within_two_windows() {
        let watch = ClockWatch::new(Duration::from_millis(500));
        // Same clocks; messages that waited 900 ms in queues read as 900 ms behind.
        watch.observe("b", 10_000, 10_020);
        watch.observe("c", 10_000, 10_010);
        for delayed in [900, 700, 1_200] {
            watch.observe("b", 20_000, 20_000 + delayed);
            watch.observe("c", 20_000, 20_000 + delayed);
            assert!(watch.in_bounds(), "a delay of {delayed} ms is not skew");
        }
        // Peer clocks that really stepped an hour back: seen once the windows that held
        // good readings have passed.
        for _ in 0..4 {
            tokio::time::advance(WINDOW).await;
            watch.observe("b", 1_000, 3_601_000);
            watch.observe("c", 1_000, 3_601_000);
        }
        assert!(!watch.in_bounds());
        // A step ahead is seen at once.
        let ahead = ClockWatch::new(Duration::from_millis(500));
        ahead.observe("b", 1_000, 1_000);
        ahead.observe("b", 3_601_000, 1_000);
        assert!(!ahead.in_bounds());
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
