//! The retry backoff of failed reconciles: per CacheCluster, the count of failures in a
//! row, and the delay it calls for (1 s, doubling, at most 256 s). A success or the
//! cluster's deletion starts it over. It is its own handle, not part of the metrics: the
//! metrics count failures by cause, this decides when to try again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// The first delay; each failure in a row doubles it.
const FIRST: Duration = Duration::from_secs(1);
/// The most doublings: 1 s << 8 = 256 s, a little over four minutes.
const MAX_DOUBLINGS: u32 = 8;
/// A bound on the delay whatever the doublings.
const LONGEST: Duration = Duration::from_secs(300);

/// A cheap handle over the failure counts. One mutex: it is touched once per reconcile
/// and never held across `.await`.
#[derive(Debug, Clone, Default)]
pub struct Backoff {
    failing: Arc<Mutex<BTreeMap<String, u32>>>,
}

impl Backoff {
    /// Counts a failed reconcile of `cluster`; returns how many in a row it has had.
    pub fn fail(&self, cluster: &str) -> u32 {
        let mut failing = self.failing.lock();
        let count = failing.entry(cluster.to_owned()).or_default();
        *count = count.saturating_add(1);
        *count
    }

    /// `cluster` reconciled, or is gone: its next failure waits the shortest delay.
    pub fn reset(&self, cluster: &str) {
        self.failing.lock().remove(cluster);
    }
}

/// How long to wait after `failures` failures in a row.
pub fn delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(MAX_DOUBLINGS);
    (FIRST * (1 << doublings)).min(LONGEST)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_delay_doubles_up_to_a_bound() {
        let delays: Vec<u64> = (0..=11).map(|n| delay(n).as_secs()).collect();
        assert_eq!(delays, [1, 1, 2, 4, 8, 16, 32, 64, 128, 256, 256, 256]);
        assert_eq!(delay(u32::MAX), Duration::from_secs(256));
    }

    #[test]
    fn failures_count_per_cluster_until_a_reset() {
        let backoff = Backoff::default();
        assert_eq!(backoff.fail("shop/a"), 1);
        assert_eq!(backoff.fail("shop/a"), 2);
        assert_eq!(backoff.fail("shop/b"), 1, "another cluster counts apart");
        let clone = backoff.clone();
        assert_eq!(clone.fail("shop/a"), 3, "clones share the counts");
        backoff.reset("shop/a");
        assert_eq!(backoff.fail("shop/a"), 1);
        assert_eq!(backoff.fail("shop/b"), 2);
    }
}
