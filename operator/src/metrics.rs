//! Prometheus metrics of the operator: reconciliations, failures, and what each cluster's
//! status says, rendered in the text exposition format on `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::crd::{CacheClusterStatus, Phase};

/// A cheap handle over the shared metrics. One mutex: updates are a few per reconcile
/// and scrapes are rare, so contention does not matter; it is never held across `.await`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    reconciliations: u64,
    reconcile_seconds_sum: f64,
    failures: BTreeMap<&'static str, u64>,
    clusters: BTreeMap<String, ClusterGauges>,
    leader: bool,
}

#[derive(Debug, Clone, Default)]
struct ClusterGauges {
    epoch: u64,
    joined: i32,
    ready: i32,
    phase: Phase,
    rebalance_active: bool,
    partitions_moved: u64,
    partitions_total: u64,
    bytes_moved: u64,
    data_loss_incidents: u64,
    last_data_loss_seconds: i64,
}

/// A per-cluster gauge: name, help, and how to read it.
type Gauge = (&'static str, &'static str, fn(&ClusterGauges) -> String);

const PHASES: [Phase; 6] = [
    Phase::Creating,
    Phase::Available,
    Phase::Rebalancing,
    Phase::ScaleDownBlocked,
    Phase::Degraded,
    Phase::Invalid,
];

impl Metrics {
    pub fn observe(&self, cluster: &str, status: &CacheClusterStatus, took: Duration) {
        let mut inner = self.inner.lock();
        inner.reconciliations += 1;
        inner.reconcile_seconds_sum += took.as_secs_f64();
        let rebalance = status.rebalance.clone().unwrap_or_default();
        inner.clusters.insert(
            cluster.to_owned(),
            ClusterGauges {
                epoch: status.epoch,
                joined: status.replicas,
                ready: status.ready_replicas,
                phase: status.phase,
                rebalance_active: rebalance.active,
                partitions_moved: rebalance.partitions_moved,
                partitions_total: rebalance.partitions_total,
                bytes_moved: rebalance.bytes_moved,
                data_loss_incidents: status.data_loss_incidents,
                last_data_loss_seconds: status
                    .last_data_loss
                    .as_ref()
                    .map_or(0, |loss| loss.detected_at.0.as_second()),
            },
        );
    }

    /// Counts a failed reconcile by its cause.
    pub fn reconcile_failed(&self, reason: &'static str) {
        *self.inner.lock().failures.entry(reason).or_default() += 1;
    }

    pub fn forget(&self, cluster: &str) {
        self.inner.lock().clusters.remove(cluster);
    }

    pub fn set_leader(&self, leader: bool) {
        self.inner.lock().leader = leader;
    }

    pub fn render(&self) -> String {
        let inner = self.inner.lock();
        let mut out = String::new();
        inner.render_operator(&mut out);
        inner.render_clusters(&mut out);
        out
    }
}

impl Inner {
    /// The operator's own families: leadership and reconciliations.
    fn render_operator(&self, out: &mut String) {
        header(
            out,
            "kache_operator_leader",
            "gauge",
            "1 while this replica holds the leader lease.",
        );
        let _ = writeln!(out, "kache_operator_leader {}", u8::from(self.leader));
        header(
            out,
            "kache_operator_reconciliations_total",
            "counter",
            "Reconciliations that finished.",
        );
        let _ = writeln!(
            out,
            "kache_operator_reconciliations_total {}",
            self.reconciliations
        );
        header(
            out,
            "kache_operator_reconcile_seconds_total",
            "counter",
            "Time spent in finished reconciliations.",
        );
        let _ = writeln!(
            out,
            "kache_operator_reconcile_seconds_total {:.6}",
            self.reconcile_seconds_sum
        );
        header(
            out,
            "kache_operator_reconcile_failures_total",
            "counter",
            "Reconciliations that failed, by cause.",
        );
        for (reason, count) in &self.failures {
            let _ = writeln!(
                out,
                "kache_operator_reconcile_failures_total{{reason=\"{reason}\"}} {count}"
            );
        }
    }

    /// One gauge family per figure of each cluster's status, and its phase.
    fn render_clusters(&self, out: &mut String) {
        let gauges: [Gauge; 7] = [
            (
                "kache_cachecluster_epoch",
                "Epoch of the published member list.",
                |g| g.epoch.to_string(),
            ),
            (
                "kache_cachecluster_members_joined",
                "Members that fully joined the current epoch.",
                |g| g.joined.to_string(),
            ),
            (
                "kache_cachecluster_pods_ready",
                "Cache pods passing their readiness probe.",
                |g| g.ready.to_string(),
            ),
            (
                "kache_cachecluster_rebalance_active",
                "1 while partitions are moving.",
                |g| u8::from(g.rebalance_active).to_string(),
            ),
            (
                "kache_cachecluster_rebalance_partitions_moved",
                "Partitions moved in the current or last move.",
                |g| g.partitions_moved.to_string(),
            ),
            (
                "kache_cachecluster_rebalance_partitions_total",
                "Partitions to move in the current or last move.",
                |g| g.partitions_total.to_string(),
            ),
            (
                "kache_cachecluster_rebalance_bytes_moved",
                "Bytes moved in the current or last move.",
                |g| g.bytes_moved.to_string(),
            ),
        ];
        for gauge in gauges {
            self.render_family(out, "gauge", gauge);
        }
        self.render_data_loss(out);
        header(
            out,
            "kache_cachecluster_phase",
            "gauge",
            "1 for the phase each cluster is in.",
        );
        for (cluster, g) in &self.clusters {
            for phase in PHASES {
                let _ = writeln!(
                    out,
                    "kache_cachecluster_phase{{cluster=\"{cluster}\",phase=\"{}\"}} {}",
                    phase.as_str(),
                    u8::from(g.phase == phase)
                );
            }
        }
    }

    /// The data-loss families, from the status, so they survive an operator restart: a
    /// counter an alert can take the increase() of, and when the last loss was seen.
    fn render_data_loss(&self, out: &mut String) {
        self.render_family(
            out,
            "counter",
            (
                "kache_cachecluster_data_loss_incidents_total",
                "Member restarts that came back with no live copy of partitions they own.",
                |g| g.data_loss_incidents.to_string(),
            ),
        );
        self.render_family(
            out,
            "gauge",
            (
                "kache_cachecluster_last_data_loss_timestamp_seconds",
                "When the last data loss was detected (Unix seconds; 0 if never).",
                |g| g.last_data_loss_seconds.to_string(),
            ),
        );
    }

    /// One family with a sample per cluster.
    fn render_family(&self, out: &mut String, kind: &str, (name, help, value): Gauge) {
        header(out, name, kind, help);
        for (cluster, g) in &self.clusters {
            let _ = writeln!(out, "{name}{{cluster=\"{cluster}\"}} {}", value(g));
        }
    }
}

/// The `# HELP` and `# TYPE` lines that open a metric family.
fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_what_was_observed() {
        let metrics = Metrics::default();
        let status = CacheClusterStatus {
            epoch: 5,
            replicas: 3,
            phase: Phase::Rebalancing,
            data_loss_incidents: 2,
            ..CacheClusterStatus::default()
        };
        metrics.observe("shop/demo", &status, Duration::from_millis(20));
        metrics.reconcile_failed("kube");
        metrics.reconcile_failed("kube");
        let text = metrics.render();
        assert!(
            text.contains("kache_cachecluster_epoch{cluster=\"shop/demo\"} 5"),
            "{text}"
        );
        assert!(text.contains("kache_cachecluster_members_joined{cluster=\"shop/demo\"} 3"));
        assert!(
            text.contains(
                "kache_cachecluster_phase{cluster=\"shop/demo\",phase=\"Rebalancing\"} 1"
            )
        );
        assert!(
            text.contains("kache_cachecluster_phase{cluster=\"shop/demo\",phase=\"Available\"} 0")
        );
        assert!(text.contains("kache_operator_reconcile_failures_total{reason=\"kube\"} 2"));
        assert!(text.contains("kache_operator_reconciliations_total 1"));
        assert!(
            text.contains("kache_cachecluster_data_loss_incidents_total{cluster=\"shop/demo\"} 2")
        );
        assert!(text.contains(
            "kache_cachecluster_last_data_loss_timestamp_seconds{cluster=\"shop/demo\"} 0"
        ));
        assert!(text.contains("# TYPE kache_operator_reconcile_failures_total counter"));
        assert!(text.contains("# TYPE kache_cachecluster_phase gauge"));
        assert!(
            text.contains(
                "# HELP kache_operator_leader 1 while this replica holds the leader lease."
            )
        );
        metrics.forget("shop/demo");
        assert!(!metrics.render().contains("shop/demo"));
    }
}
