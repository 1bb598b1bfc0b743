//! kache's alert rules, the one source of truth for them: the operator's per-cluster
//! PrometheusRule (`resources::monitoring::prometheus_rule`) and the chart's rule file
//! (`charts/kache/files/prometheus-rules.yaml`, written by the `rulegen` bin) are both
//! rendered from [`alerts`]. `tests/monitoring/rules.test.yaml` fires each alert on
//! synthetic series with `promtool test rules`, and docs/operations.md has the runbook
//! each `runbook_url` points to (anchor = the alert name in lowercase).
//!
//! Two kinds of series are read:
//! - the nodes' own (`kache_ready`, `kache_memory_*`, ...), scraped by the ServiceMonitor or
//!   PodMonitor the operator creates, which adds the target label `cachecluster` (the
//!   CacheCluster's name) next to prometheus-operator's `namespace` and `pod`;
//! - the operator's per-cluster gauges (`kache_cachecluster_*{cluster="<namespace>/<name>"}`).
//!
//! A [`Scope`] picks the series: every kache cluster (the chart's rules, one rule set for
//! the whole Prometheus) or one cluster (the operator's, with its namespace and name in
//! every selector, so two clusters' PrometheusRules never alert twice on one series).

use serde_json::{Value, json};

/// Where each `runbook_url` points: the "Runbooks" section of docs/operations.md.
pub const RUNBOOK_BASE: &str = "https://github.com/kache-dev/kache/blob/main/docs/operations.md";

/// The target label the operator's ServiceMonitor and PodMonitor put on every node series:
/// the CacheCluster's name.
pub const CLUSTER_TARGET_LABEL: &str = "cachecluster";

/// The rule group name, in the chart's file and in each PrometheusRule.
pub const GROUP: &str = "kache";

/// Which clusters the rules watch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope<'a> {
    /// Every kache cluster the Prometheus scrapes (the chart's rules).
    All,
    /// One CacheCluster (the operator's PrometheusRule of that cluster).
    Cluster { namespace: &'a str, name: &'a str },
}

impl Scope<'_> {
    /// The matchers of a node series: `cachecluster` is set only by kache's monitors.
    fn node(&self) -> String {
        match self {
            Self::All => format!("{CLUSTER_TARGET_LABEL}!=\"\""),
            Self::Cluster { namespace, name } => {
                format!("namespace=\"{namespace}\",{CLUSTER_TARGET_LABEL}=\"{name}\"")
            }
        }
    }

    /// The matchers of an operator series about a cluster.
    fn operator(&self) -> String {
        match self {
            Self::All => "cluster!=\"\"".to_owned(),
            Self::Cluster { namespace, name } => format!("cluster=\"{namespace}/{name}\""),
        }
    }
}

/// How urgent an alert is (the `severity` label Alertmanager routes on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Someone should act now: requests are failing or a member is gone.
    Critical,
    /// Needs a look within hours.
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
        }
    }
}

/// One alerting rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The alert name; its lowercase is the runbook anchor.
    pub name: &'static str,
    pub expr: String,
    /// How long `expr` must hold before the alert fires (a Prometheus duration).
    pub for_: &'static str,
    pub severity: Severity,
    /// One line, with Prometheus template variables for the labels that say where.
    pub summary: &'static str,
    pub description: &'static str,
}

impl Alert {
    /// `docs/operations.md#<name in lowercase>`, the heading GitHub anchors.
    pub fn runbook_url(&self) -> String {
        format!("{RUNBOOK_BASE}#{}", self.name.to_ascii_lowercase())
    }

    /// The rule as Prometheus reads it in a rule group.
    pub fn rule(&self) -> Value {
        json!({
            "alert": self.name,
            "expr": self.expr,
            "for": self.for_,
            "labels": {"severity": self.severity.as_str()},
            "annotations": {
                "summary": self.summary,
                "description": self.description,
                "runbook_url": self.runbook_url(),
            },
        })
    }
}

/// Fraction of the memory bound above which `KacheMemoryNearBound` fires.
pub const MEMORY_NEAR_BOUND: f64 = 0.9;
/// Evictions per second per node above which `KacheHighEvictionRate` fires: a node that
/// evicts this much is too small for its working set (a starting point; tune it to the
/// write rate the cluster should absorb).
pub const HIGH_EVICTIONS_PER_SECOND: u32 = 100;
/// Fraction of `--max-clock-offset` above which `KacheClockOffsetNearLimit` fires.
pub const CLOCK_NEAR_LIMIT: f64 = 0.8;

/// Every kache alert, in the order of the runbooks.
pub fn alerts(scope: Scope<'_>) -> Vec<Alert> {
    let node = scope.node();
    let op = scope.operator();
    let by_cluster = format!("namespace, {CLUSTER_TARGET_LABEL}");
    vec![
        Alert {
            name: "KacheMemberDown",
            expr: format!("kache_ready{{{node}}} == 0 or up{{{node}}} == 0"),
            for_: "5m",
            severity: Severity::Critical,
            summary: "kache member {{ $labels.namespace }}/{{ $labels.pod }} is down or not ready",
            description: "The pod has not served /metrics, or has reported itself not ready, for 5 minutes. \
                Its partitions are served by fewer copies until it is back.",
        },
        Alert {
            name: "KacheMembersMissing",
            expr: format!(
                "kache_cachecluster_pods_ready{{{op}}} < kache_cachecluster_replicas_desired{{{op}}}"
            ),
            for_: "15m",
            severity: Severity::Warning,
            summary: "CacheCluster {{ $labels.cluster }} has fewer ready pods than spec.replicas",
            description: "Fewer cache pods pass their readiness probe than the spec asks for, and have for \
                15 minutes: a pod that is Pending (no node, no volume) has no metrics of its own, so \
                KacheMemberDown cannot see it.",
        },
        Alert {
            name: "KacheClusterDegraded",
            expr: format!(
                "kache_cachecluster_condition{{{op},type=\"Degraded\",status=\"True\"}} == 1"
            ),
            for_: "10m",
            severity: Severity::Warning,
            summary: "CacheCluster {{ $labels.cluster }} has been Degraded for 10 minutes",
            description: "The operator reports the Degraded condition: members are missing, unreachable \
                or behind. `kubectl describe cachecluster` shows the reason.",
        },
        Alert {
            name: "KacheScaleDownBlocked",
            expr: format!(
                "kache_cachecluster_condition{{{op},type=\"ScaleDownBlocked\",status=\"True\"}} == 1"
            ),
            for_: "15m",
            severity: Severity::Warning,
            summary: "CacheCluster {{ $labels.cluster }} cannot scale down (15 minutes)",
            description: "Members that are to leave may still hold data and do not answer: their pods \
                stay until they hand off. The condition's message names them.",
        },
        Alert {
            name: "KacheRebalanceStuck",
            expr: format!(
                "(time() - kache_cachecluster_rebalance_started_timestamp_seconds{{{op}}} \
                 > kache_cachecluster_rebalance_timeout_seconds{{{op}}}) \
                 and kache_cachecluster_rebalance_started_timestamp_seconds{{{op}}} > 0"
            ),
            for_: "1m",
            severity: Severity::Warning,
            summary: "The rebalance of {{ $labels.cluster }} has outlasted spec.rebalanceTimeout",
            description: "Partitions are still moving after the rebalance timeout. The move goes on, but a \
                member that does not finish its pulls holds the cluster in a mixed epoch.",
        },
        Alert {
            name: "KacheMemoryNearBound",
            expr: format!(
                "kache_memory_used_bytes{{{node}}} / (kache_memory_max_bytes{{{node}}} > 0) > {MEMORY_NEAR_BOUND}"
            ),
            for_: "10m",
            severity: Severity::Warning,
            summary: "kache member {{ $labels.namespace }}/{{ $labels.pod }} uses {{ $value | humanizePercentage }} of its memory bound",
            description: "The node is close to maxMemory: it evicts (lru, lfu) or refuses writes (eviction: none).",
        },
        Alert {
            name: "KacheHighEvictionRate",
            expr: format!(
                "rate(kache_evictions_total{{{node}}}[5m]) > {HIGH_EVICTIONS_PER_SECOND}"
            ),
            for_: "15m",
            severity: Severity::Warning,
            summary: "kache member {{ $labels.namespace }}/{{ $labels.pod }} evicts {{ $value | humanize }} keys/s",
            description: "Keys are evicted to make room faster than the threshold: the working set does not fit \
                and the hit ratio suffers.",
        },
        Alert {
            name: "KacheQuorumFailures",
            expr: format!(
                "sum by ({by_cluster}) (rate(kache_quorum_failures_total{{{node}}}[2m])) > 0"
            ),
            for_: "5m",
            severity: Severity::Critical,
            summary: "CacheCluster {{ $labels.namespace }}/{{ $labels.cachecluster }} fails reads or writes for want of a quorum",
            description: "Requests get 503 replicas_unavailable: too few owners of a partition answer. A write \
                that failed this way may or may not be stored.",
        },
        Alert {
            name: "KacheClockOffsetNearLimit",
            expr: format!(
                "abs(kache_clock_offset_seconds{{{node}}}) > {CLOCK_NEAR_LIMIT} * (kache_clock_max_offset_seconds{{{node}}} > 0)"
            ),
            for_: "5m",
            severity: Severity::Warning,
            summary: "The clock of kache member {{ $labels.namespace }}/{{ $labels.pod }} is {{ $value | humanizeDuration }} off its peers'",
            description: "The offset is near spec.maxClockOffset. Past it the node refuses writes until the \
                clocks agree again.",
        },
        Alert {
            name: "KacheClockOutOfBounds",
            expr: format!("kache_clock_in_bounds{{{node}}} == 0"),
            for_: "1m",
            severity: Severity::Critical,
            summary: "kache member {{ $labels.namespace }}/{{ $labels.pod }} refuses writes: its clock is out of bounds",
            description: "The node's clock is further than spec.maxClockOffset from most of its peers'; it takes \
                no writes until they agree.",
        },
        Alert {
            name: "KacheUpstreamCircuitOpen",
            expr: format!(
                "max by ({by_cluster}, upstream) (kache_upstream_circuit_open{{{node}}}) == 1"
            ),
            for_: "5m",
            severity: Severity::Warning,
            summary: "CacheCluster {{ $labels.namespace }}/{{ $labels.cachecluster }} has stopped calling upstream {{ $labels.upstream }}",
            description: "The read-through upstream failed failureThreshold times in a row and its circuit \
                breaker keeps refusing requests: misses answer 502 upstream_circuit_open unless a stale \
                copy may be served.",
        },
    ]
}

/// The rule groups of `scope` as Prometheus and a PrometheusRule's spec read them.
pub fn groups(scope: Scope<'_>) -> Value {
    let rules: Vec<Value> = alerts(scope).iter().map(Alert::rule).collect();
    json!({"groups": [{"name": GROUP, "rules": rules}]})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_scope_puts_the_clusters_namespace_and_name_in_every_selector() {
        let scope = Scope::Cluster {
            namespace: "shop",
            name: "demo",
        };
        for alert in alerts(scope) {
            let node = alert
                .expr
                .matches("namespace=\"shop\",cachecluster=\"demo\"")
                .count();
            let op = alert.expr.matches("cluster=\"shop/demo\"").count();
            let selectors = alert.expr.matches('{').count();
            assert_eq!(
                node + op,
                selectors,
                "{}: every selector names the cluster: {}",
                alert.name,
                alert.expr
            );
            assert!(!alert.expr.contains("!=\"\""), "{}", alert.expr);
        }
        for alert in alerts(Scope::All) {
            assert!(!alert.expr.contains("shop"), "{}", alert.expr);
        }
    }

    #[test]
    fn every_alert_has_a_unique_name_a_runbook_and_a_severity() {
        let alerts = alerts(Scope::All);
        let mut names: Vec<_> = alerts.iter().map(|a| a.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), alerts.len());
        for alert in &alerts {
            let rule = alert.rule();
            assert_eq!(
                rule["annotations"]["runbook_url"],
                format!("{RUNBOOK_BASE}#{}", alert.name.to_lowercase())
            );
            assert!(matches!(
                rule["labels"]["severity"].as_str(),
                Some("critical" | "warning")
            ));
            assert!(alert.for_.ends_with('m'), "{}", alert.for_);
        }
    }

    #[test]
    fn the_runbooks_exist_in_docs_operations() {
        let docs = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/operations.md"
        ))
        .unwrap();
        for alert in alerts(Scope::All) {
            assert!(
                docs.lines().any(|line| line.starts_with('#')
                    && line.trim_start_matches('#').trim() == alert.name),
                "docs/operations.md has no heading {} for its runbook_url",
                alert.name
            );
        }
    }
}
