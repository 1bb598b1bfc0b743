//! Prometheus metrics of the operator: reconciliations, failures, and what each cluster's
//! status says, in the OpenMetrics text format (prometheus-client) on `/metrics`.
//!
//! The operator's own families (leadership, reconciliations, their duration and
//! failures) are registered once and updated as reconciles finish. The per-cluster
//! families are the last status each cluster was given, kept in a map and written at
//! scrape time by [`ClusterFamilies`], so a deleted cluster's series go with it
//! ([`Metrics::forget`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::crd::{CacheClusterStatus, Phase};

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A cheap handle over the shared metrics. The registry is built once; the families in
/// it update through their own atomics (the duration histogram through its mutex: a few
/// observations a minute).
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    registry: Registry,
    leader: Gauge,
    reconciliations: Counter,
    reconcile_duration: Histogram,
    failures: Family<[(&'static str, &'static str); 1], Counter>,
    /// The last status of each cluster, by `namespace/name`. One mutex: a few updates
    /// per reconcile and rare scrapes; never held across `.await`.
    clusters: Arc<Mutex<BTreeMap<String, ClusterGauges>>>,
}

/// The figures of a cluster's spec the families report.
#[derive(Debug, Clone, Copy, Default)]
pub struct ClusterSpec {
    pub replicas_desired: i32,
    pub rebalance_timeout: Duration,
}

/// What the operator knows of one cluster: its spec's figures, and its last status.
#[derive(Debug, Clone, Default)]
struct ClusterGauges {
    spec: ClusterSpec,
    epoch: u64,
    joined: i32,
    ready: i32,
    phase: Phase,
    /// Each condition's type and status ("True", "False", "Unknown").
    conditions: Vec<(String, String)>,
    rebalance_active: bool,
    rebalance_started_seconds: i64,
    partitions_moved: u64,
    partitions_total: u64,
    bytes_moved: u64,
    data_loss_incidents: u64,
    last_data_loss_seconds: i64,
}

const PHASES: [Phase; 6] = [
    Phase::Creating,
    Phase::Available,
    Phase::Rebalancing,
    Phase::ScaleDownBlocked,
    Phase::Degraded,
    Phase::Invalid,
];

const CONDITION_STATUSES: [&str; 3] = ["True", "False", "Unknown"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let leader = Gauge::default();
        registry.register(
            "kache_operator_leader",
            "1 while this replica holds the leader lease",
            leader.clone(),
        );
        let reconciliations = Counter::default();
        registry.register(
            "kache_operator_reconciliations",
            "Reconciliations that finished",
            reconciliations.clone(),
        );
        // 5 ms to about 80 s: a settled cluster's reconcile is a few API reads; one
        // that applies objects and polls every node takes seconds.
        let reconcile_duration = Histogram::new(exponential_buckets(0.005, 2.0, 15));
        registry.register(
            "kache_operator_reconcile_duration_seconds",
            "How long finished reconciliations took (replaces the \
             kache_operator_reconcile_seconds_total counter: its _sum)",
            reconcile_duration.clone(),
        );
        let failures = Family::default();
        registry.register(
            "kache_operator_reconcile_failures",
            "Reconciliations that failed, by cause",
            failures.clone(),
        );
        let clusters = Arc::new(Mutex::new(BTreeMap::new()));
        registry.register_collector(Box::new(ClusterFamilies(clusters.clone())));
        Self {
            inner: Arc::new(Inner {
                registry,
                leader,
                reconciliations,
                reconcile_duration,
                failures,
                clusters,
            }),
        }
    }

    /// A reconcile of `cluster` finished after `took`, with `status`; `spec` carries
    /// the figures of its spec the families report.
    pub fn observe(
        &self,
        cluster: &str,
        spec: ClusterSpec,
        status: &CacheClusterStatus,
        took: Duration,
    ) {
        self.inner.reconciliations.inc();
        self.inner.reconcile_duration.observe(took.as_secs_f64());
        let rebalance = status.rebalance.clone().unwrap_or_default();
        let gauges = ClusterGauges {
            spec,
            epoch: status.epoch,
            joined: status.replicas,
            ready: status.ready_replicas,
            phase: status.phase,
            conditions: status
                .conditions
                .iter()
                .map(|c| (c.type_.clone(), c.status.clone()))
                .collect(),
            rebalance_active: rebalance.active,
            rebalance_started_seconds: rebalance
                .started_at
                .as_ref()
                .filter(|_| rebalance.active)
                .map_or(0, |at| at.0.as_second()),
            partitions_moved: rebalance.partitions_moved,
            partitions_total: rebalance.partitions_total,
            bytes_moved: rebalance.bytes_moved,
            data_loss_incidents: status.data_loss_incidents,
            last_data_loss_seconds: status
                .last_data_loss
                .as_ref()
                .map_or(0, |loss| loss.detected_at.0.as_second()),
        };
        self.inner
            .clusters
            .lock()
            .insert(cluster.to_owned(), gauges);
    }

    /// Counts a failed reconcile by its cause.
    pub fn reconcile_failed(&self, reason: &'static str) {
        self.inner
            .failures
            .get_or_create(&[("reason", reason)])
            .inc();
    }

    pub fn forget(&self, cluster: &str) {
        self.inner.clusters.lock().remove(cluster);
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner.leader.set(i64::from(leader));
    }

    /// The exposition, ending in `# EOF`.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail, and every encoder here only writes.
        let _ = encode(&mut out, &self.inner.registry);
        out
    }
}

/// The per-cluster families, read from the last status of each cluster at scrape time.
#[derive(Debug)]
struct ClusterFamilies(Arc<Mutex<BTreeMap<String, ClusterGauges>>>);

/// A per-cluster family: name as exposed, help, and how to read it.
type PerCluster = (&'static str, &'static str, fn(&ClusterGauges) -> Value);

#[derive(Debug, Clone, Copy)]
enum Value {
    Gauge(i64),
    GaugeF64(f64),
    Counter(u64),
}

const PER_CLUSTER: [PerCluster; 11] = [
    (
        "kache_cachecluster_epoch",
        "Epoch of the published member list.",
        |g| Value::Gauge(i64::try_from(g.epoch).unwrap_or(i64::MAX)),
    ),
    (
        "kache_cachecluster_replicas_desired",
        "Members the spec asks for (spec.replicas).",
        |g| Value::Gauge(g.spec.replicas_desired.into()),
    ),
    (
        "kache_cachecluster_members_joined",
        "Members that fully joined the current epoch.",
        |g| Value::Gauge(g.joined.into()),
    ),
    (
        "kache_cachecluster_pods_ready",
        "Cache pods passing their readiness probe.",
        |g| Value::Gauge(g.ready.into()),
    ),
    (
        "kache_cachecluster_rebalance_active",
        "1 while partitions are moving.",
        |g| Value::Gauge(g.rebalance_active.into()),
    ),
    (
        "kache_cachecluster_rebalance_started_timestamp_seconds",
        "When the move in progress started (Unix seconds; 0 when none is).",
        |g| Value::Gauge(g.rebalance_started_seconds),
    ),
    (
        "kache_cachecluster_rebalance_timeout_seconds",
        "How long a move may take before Progressing turns False (spec.rebalanceTimeout).",
        |g| Value::GaugeF64(g.spec.rebalance_timeout.as_secs_f64()),
    ),
    (
        "kache_cachecluster_rebalance_partitions_moved",
        "Partitions moved in the current or last move.",
        |g| Value::Gauge(i64::try_from(g.partitions_moved).unwrap_or(i64::MAX)),
    ),
    (
        "kache_cachecluster_rebalance_partitions_total",
        "Partitions to move in the current or last move.",
        |g| Value::Gauge(i64::try_from(g.partitions_total).unwrap_or(i64::MAX)),
    ),
    (
        "kache_cachecluster_rebalance_bytes_moved",
        "Bytes moved in the current or last move.",
        |g| Value::Gauge(i64::try_from(g.bytes_moved).unwrap_or(i64::MAX)),
    ),
    // From the status, so they survive an operator restart: a counter an alert can take
    // the increase() of, and when the last loss was seen.
    (
        "kache_cachecluster_data_loss_incidents_total",
        "Member restarts that came back with no live copy of partitions they own.",
        |g| Value::Counter(g.data_loss_incidents),
    ),
];

const LAST_DATA_LOSS: PerCluster = (
    "kache_cachecluster_last_data_loss_timestamp_seconds",
    "When the last data loss was detected (Unix seconds; 0 if never).",
    |g| Value::Gauge(g.last_data_loss_seconds),
);

impl Collector for ClusterFamilies {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let clusters = self.0.lock();
        for (name, help, read) in PER_CLUSTER.into_iter().chain([LAST_DATA_LOSS]) {
            let kind = match read(&ClusterGauges::default()) {
                Value::Counter(_) => MetricType::Counter,
                Value::Gauge(_) | Value::GaugeF64(_) => MetricType::Gauge,
            };
            // OpenMetrics names a counter's family without the `_total` its sample has. A
            // gauge keeps its whole name (`..._partitions_total` is a gauge: the size of a move).
            let family_name = match kind {
                MetricType::Counter => name.strip_suffix("_total").unwrap_or(name),
                _ => name,
            };
            let mut family = encoder.encode_descriptor(family_name, help, None, kind)?;
            for (cluster, gauges) in clusters.iter() {
                let labels = [("cluster", cluster.as_str())];
                let metric = family.encode_family(&labels)?;
                match read(gauges) {
                    Value::Gauge(v) => ConstGauge::new(v).encode(metric)?,
                    Value::GaugeF64(v) => ConstGauge::new(v).encode(metric)?,
                    Value::Counter(v) => ConstCounter::new(v).encode(metric)?,
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "kache_cachecluster_phase",
            "1 for the phase each cluster is in.",
            None,
            MetricType::Gauge,
        )?;
        for (cluster, gauges) in clusters.iter() {
            for phase in PHASES {
                let labels = [("cluster", cluster.as_str()), ("phase", phase.as_str())];
                ConstGauge::new(i64::from(gauges.phase == phase))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "kache_cachecluster_condition",
            "1 for the status (True, False, Unknown) each condition of each cluster has.",
            None,
            MetricType::Gauge,
        )?;
        for (cluster, gauges) in clusters.iter() {
            for (kind, current) in &gauges.conditions {
                for status in CONDITION_STATUSES {
                    let labels = [
                        ("cluster", cluster.as_str()),
                        ("type", kind.as_str()),
                        ("status", status),
                    ];
                    ConstGauge::new(i64::from(current == status))
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;
    use crate::crd::RebalanceStatus;

    fn condition(kind: &str, status: &str) -> Condition {
        Condition {
            type_: kind.into(),
            status: status.into(),
            reason: "Test".into(),
            message: String::new(),
            last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            observed_generation: None,
        }
    }

    #[test]
    fn renders_what_was_observed() {
        let metrics = Metrics::default();
        let status = CacheClusterStatus {
            epoch: 5,
            replicas: 3,
            phase: Phase::Rebalancing,
            data_loss_incidents: 2,
            conditions: vec![
                condition("Available", "False"),
                condition("Rebalancing", "True"),
            ],
            rebalance: Some(RebalanceStatus {
                active: true,
                started_at: Some(Time(
                    k8s_openapi::jiff::Timestamp::from_second(1_700_000_000).expect("timestamp"),
                )),
                ..RebalanceStatus::default()
            }),
            ..CacheClusterStatus::default()
        };
        let spec = ClusterSpec {
            replicas_desired: 4,
            rebalance_timeout: Duration::from_secs(1800),
        };
        metrics.observe("shop/demo", spec, &status, Duration::from_millis(20));
        metrics.reconcile_failed("kube");
        metrics.reconcile_failed("kube");
        metrics.set_leader(true);
        let text = metrics.render();
        for line in [
            "kache_cachecluster_epoch{cluster=\"shop/demo\"} 5\n",
            "kache_cachecluster_members_joined{cluster=\"shop/demo\"} 3\n",
            "kache_cachecluster_replicas_desired{cluster=\"shop/demo\"} 4\n",
            // A gauge whose name ends in `_total` keeps it (only counters' families drop it).
            "# TYPE kache_cachecluster_rebalance_partitions_total gauge\n",
            "kache_cachecluster_rebalance_partitions_total{cluster=\"shop/demo\"} 0\n",
            "kache_cachecluster_rebalance_started_timestamp_seconds{cluster=\"shop/demo\"} 1700000000\n",
            "kache_cachecluster_rebalance_timeout_seconds{cluster=\"shop/demo\"} 1800.0\n",
            "kache_cachecluster_phase{cluster=\"shop/demo\",phase=\"Rebalancing\"} 1\n",
            "kache_cachecluster_phase{cluster=\"shop/demo\",phase=\"Available\"} 0\n",
            "kache_cachecluster_condition{cluster=\"shop/demo\",type=\"Available\",status=\"False\"} 1\n",
            "kache_cachecluster_condition{cluster=\"shop/demo\",type=\"Available\",status=\"True\"} 0\n",
            "kache_cachecluster_condition{cluster=\"shop/demo\",type=\"Rebalancing\",status=\"True\"} 1\n",
            "kache_operator_reconcile_failures_total{reason=\"kube\"} 2\n",
            "kache_operator_reconciliations_total 1\n",
            "kache_operator_reconcile_duration_seconds_count 1\n",
            "kache_operator_reconcile_duration_seconds_bucket{le=\"0.04\"} 1\n",
            "kache_operator_reconcile_duration_seconds_bucket{le=\"0.01\"} 0\n",
            "kache_operator_leader 1\n",
            "kache_cachecluster_data_loss_incidents_total{cluster=\"shop/demo\"} 2\n",
            "kache_cachecluster_last_data_loss_timestamp_seconds{cluster=\"shop/demo\"} 0\n",
            "# TYPE kache_operator_reconcile_failures counter\n",
            "# TYPE kache_operator_reconcile_duration_seconds histogram\n",
            "# TYPE kache_cachecluster_data_loss_incidents counter\n",
            "# TYPE kache_cachecluster_phase gauge\n",
            "# HELP kache_operator_leader 1 while this replica holds the leader lease.\n",
        ] {
            assert!(text.contains(line), "{line}: {text}");
        }
        assert!(text.ends_with("# EOF\n"), "{text}");
        assert!(
            !text
                .lines()
                .any(|line| line.starts_with("kache_operator_reconcile_seconds")),
            "the counter the histogram replaced is gone"
        );
        metrics.forget("shop/demo");
        assert!(!metrics.render().contains("shop/demo"));
    }
}
