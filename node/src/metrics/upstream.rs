//! Read-through metrics, per upstream: requests by cache outcome, requests that waited
//! on another's upstream fetch, upstream latency by status class, failures by kind,
//! fetches in flight and the circuit breaker's state.
//!
//! The families are registered with the node's others; each upstream resolves its label
//! sets once, into an [`UpstreamMetrics`] of handles, so a request does no lookup by label.

use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::upstream::fetch::FailureKind;

type Labels = Vec<(&'static str, String)>;
type Histograms = Family<Labels, Histogram, fn() -> Histogram>;

/// How a read-through request was answered (the `X-Cache` header, and `error`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    Hit,
    Miss,
    Stale,
    Revalidated,
    /// No response: the upstream failed and nothing servable was cached.
    Error,
}

impl CacheOutcome {
    pub const ALL: [CacheOutcome; 5] = [
        CacheOutcome::Hit,
        CacheOutcome::Miss,
        CacheOutcome::Stale,
        CacheOutcome::Revalidated,
        CacheOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheOutcome::Hit => "hit",
            CacheOutcome::Miss => "miss",
            CacheOutcome::Stale => "stale",
            CacheOutcome::Revalidated => "revalidated",
            CacheOutcome::Error => "error",
        }
    }
}

/// Upstream answers by class, and none.
const FETCH_OUTCOMES: [&str; 5] = ["2xx", "3xx", "4xx", "5xx", "error"];

fn fetch_histogram() -> Histogram {
    // 1 ms to 60 s: an upstream API, not memory.
    Histogram::new([
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// The read-through families of the node's registry.
#[derive(Debug)]
pub struct UpstreamFamilies {
    requests: Family<Labels, Counter>,
    coalesced: Family<Labels, Counter>,
    fetch: Histograms,
    errors: Family<Labels, Counter>,
    in_flight: Family<Labels, Gauge>,
    circuit: Family<Labels, Gauge>,
}

impl UpstreamFamilies {
    pub fn register(registry: &mut Registry) -> Self {
        let families = Self {
            requests: Family::default(),
            coalesced: Family::default(),
            fetch: Family::new_with_constructor(fetch_histogram),
            errors: Family::default(),
            in_flight: Family::default(),
            circuit: Family::default(),
        };
        registry.register(
            "kache_upstream_requests",
            "Read-through requests this node answered, by upstream and cache outcome (hit, \
             miss, stale, revalidated, or error when the upstream failed and nothing \
             servable was cached)",
            families.requests.clone(),
        );
        registry.register(
            "kache_upstream_coalesced",
            "Read-through requests that waited for another request's upstream fetch \
             instead of making their own (on the key's owner)",
            families.coalesced.clone(),
        );
        registry.register(
            "kache_upstream_fetch_duration_seconds",
            "Requests this node made to an upstream, by upstream and outcome (the status \
             class, or error for no response)",
            families.fetch.clone(),
        );
        registry.register(
            "kache_upstream_fetch_errors",
            "Upstream requests that got no response, by upstream and kind (timeout, \
             connect, protocol, circuit_open, overloaded)",
            families.errors.clone(),
        );
        registry.register(
            "kache_upstream_in_flight",
            "Requests this node has in flight to an upstream",
            families.in_flight.clone(),
        );
        registry.register(
            "kache_upstream_circuit_open",
            "1 while the upstream's circuit breaker refuses requests, else 0",
            families.circuit.clone(),
        );
        families
    }

    /// The handles of `upstream`'s series.
    pub fn handles(&self, upstream: &str) -> UpstreamMetrics {
        let labels = |pairs: &[(&'static str, &str)]| -> Labels {
            std::iter::once(("upstream", upstream.to_owned()))
                .chain(pairs.iter().map(|(k, v)| (*k, (*v).to_owned())))
                .collect()
        };
        UpstreamMetrics {
            requests: CacheOutcome::ALL.map(|o| {
                self.requests
                    .get_or_create(&labels(&[("cache", o.as_str())]))
                    .clone()
            }),
            coalesced: self.coalesced.get_or_create(&labels(&[])).clone(),
            fetch: FETCH_OUTCOMES
                .map(|o| self.fetch.get_or_create(&labels(&[("outcome", o)])).clone()),
            errors: FailureKind::ALL.map(|k| {
                self.errors
                    .get_or_create(&labels(&[("kind", k.as_str())]))
                    .clone()
            }),
            in_flight: self.in_flight.get_or_create(&labels(&[])).clone(),
            circuit: self.circuit.get_or_create(&labels(&[])).clone(),
        }
    }
}

/// One upstream's series.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    requests: [Counter; 5],
    coalesced: Counter,
    fetch: [Histogram; 5],
    errors: [Counter; 5],
    in_flight: Gauge,
    circuit: Gauge,
}

impl UpstreamMetrics {
    pub fn answered(&self, outcome: CacheOutcome) {
        self.requests[outcome as usize].inc();
    }

    pub fn answers(&self, outcome: CacheOutcome) -> u64 {
        self.requests[outcome as usize].get()
    }

    pub fn coalesced(&self) {
        self.coalesced.inc();
    }

    pub fn coalesced_count(&self) -> u64 {
        self.coalesced.get()
    }

    /// An upstream request answered `status` (None: no response) after `took`.
    pub fn fetched(&self, status: Option<StatusCode>, took: Duration) {
        let class = status.map_or(4, |s| match s.as_u16() {
            200..=299 => 0,
            300..=399 => 1,
            400..=499 => 2,
            _ => 3,
        });
        self.fetch[class].observe(took.as_secs_f64());
    }

    pub fn fetch_error(&self, kind: FailureKind) {
        self.errors[kind.index()].inc();
    }

    pub fn in_flight(&self, change: i64) {
        self.in_flight.inc_by(change);
    }

    pub fn circuit(&self, open: bool) {
        self.circuit.set(i64::from(open));
    }
}
