//! A latency histogram of atomics, for the request paths.
//!
//! prometheus-client's `Histogram` takes a mutex per observation; a GET served from memory
//! takes a few microseconds end to end, and every worker thread would queue on the one
//! histogram of its route. This one is a bucket counter and a nanosecond sum, each a
//! relaxed `fetch_add`: two atomic adds per observation, no lock, no allocation. The count
//! is the sum of the buckets, read at scrape time, so `_count` always equals the `+Inf`
//! bucket.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;

/// Upper bounds of the latency buckets, in nanoseconds: 25 µs (a GET answered from
/// memory on loopback) to 10 s (past every peer timeout).
const BOUNDS_NANOS: [u64; 18] = [
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
    10_000_000_000,
];

/// Observations of one label set; the buckets are [`BOUNDS_NANOS`] and `+Inf`.
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative (the encoder adds them up).
    buckets: [AtomicU64; BOUNDS_NANOS.len() + 1],
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, took: Duration) {
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let bucket = BOUNDS_NANOS.partition_point(|&bound| bound < nanos);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets
            .iter()
            .map(|bucket| bucket.load(Ordering::Relaxed))
            .sum()
    }
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::with_capacity(BOUNDS_NANOS.len() + 1);
        let mut count = 0;
        for (at, bucket) in self.buckets.iter().enumerate() {
            let observed = bucket.load(Ordering::Relaxed);
            count += observed;
            let bound = BOUNDS_NANOS
                .get(at)
                .map_or(f64::INFINITY, |&nanos| nanos as f64 / 1e9);
            buckets.push((bound, observed));
        }
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_lands_in_the_first_bucket_whose_bound_it_does_not_exceed() {
        let histogram = Histogram::default();
        histogram.observe(Duration::from_micros(25));
        histogram.observe(Duration::from_micros(26));
        histogram.observe(Duration::from_secs(60));
        let load = |at: usize| histogram.buckets[at].load(Ordering::Relaxed);
        assert_eq!(load(0), 1, "25 µs is within the 25 µs bound");
        assert_eq!(load(1), 1, "26 µs is the next bucket's");
        assert_eq!(load(BOUNDS_NANOS.len()), 1, "past the last bound: +Inf");
        assert_eq!(histogram.count(), 3);
        assert_eq!(
            histogram.sum_nanos.load(Ordering::Relaxed),
            25_000 + 26_000 + 60_000_000_000
        );
    }
}
