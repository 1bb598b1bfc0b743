//! The `CacheCluster` custom resource (`kache.dev/v1alpha1`): what a user asks for (spec)
//! and what the operator observed (status).
//!
//! Validation lives in the schema so `kubectl apply` refuses a bad spec before the operator
//! ever sees it: bounds and patterns through schemars, cross-field rules (replication factor
//! against replicas, immutable partitions) as CEL `x-kubernetes-validations`. Every message
//! says what to change.

use k8s_openapi::api::core::v1::{
    Affinity, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::api::networking::v1::NetworkPolicyPeer;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Partitions a new cluster gets unless the spec says otherwise.
pub const DEFAULT_PARTITIONS: u32 = 271;

/// A kache cache cluster: a StatefulSet of cache nodes that reshard safely when it scales.
#[expect(
    clippy::duplicated_attributes,
    reason = "the printer columns repeat keys like `type_`, which clippy takes for duplicates"
)]
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "kache.dev",
    version = "v1alpha1",
    kind = "CacheCluster",
    plural = "cacheclusters",
    shortname = "cc",
    category = "kache",
    namespaced,
    status = "CacheClusterStatus",
    derive = "PartialEq",
    doc = "A kache distributed in-memory cache cluster.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(
        name = "Replicas",
        type_ = "integer",
        json_path = ".spec.replicas",
        description = "Members asked for"
    ),
    printcolumn(
        name = "Ready",
        type_ = "integer",
        json_path = ".status.replicas",
        description = "Members that fully joined the current epoch"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Rebalance",
        type_ = "string",
        json_path = ".status.rebalance.progress",
        description = "Partitions moved of the current move"
    ),
    printcolumn(
        name = "Auth",
        type_ = "string",
        json_path = ".status.auth.mode",
        description = "Tokens: clients need a token; Open: anyone who reaches the ports"
    ),
    printcolumn(
        name = "TLS",
        type_ = "string",
        json_path = ".status.tls.peer",
        description = "Where the peer certificates come from: Operator, CertManager, Secret or Disabled",
        priority = 1
    ),
    printcolumn(
        name = "Epoch",
        type_ = "integer",
        json_path = ".status.epoch",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.replicationFactor) || string(self.replicationFactor) == 'all' || (string(self.replicationFactor).matches('^[0-9]{1,5}$') && int(string(self.replicationFactor)) >= 1 && int(string(self.replicationFactor)) <= self.replicas)"
).message("replicationFactor must be a number from 1 to spec.replicas, or \"all\"; lower it or raise replicas first"))]
#[x_kube(validation = Rule::new(
    "!has(self.resources) || !has(self.resources.limits) || !('memory' in self.resources.limits) || isQuantity(string(self.resources.limits['memory']))"
).message("resources.limits.memory is not a Kubernetes quantity (e.g. 512Mi, 1.5Gi, 2G); maxMemory defaults to three quarters of it"))]
#[x_kube(validation = Rule::new(
    "!has(self.cacheContainer) || !has(self.cacheContainer.volumeMounts) || self.cacheContainer.volumeMounts.all(m, has(self.pod) && has(self.pod.volumes) && self.pod.volumes.exists(v, v.name == m.name))"
).message("every cacheContainer.volumeMounts[].name must name a volume in pod.volumes; add the volume or fix the name"))]
#[x_kube(validation = Rule::new(
    "!has(self.persistence) || !self.persistence.enabled || !has(self.pod) || !has(self.pod.volumes) || self.pod.volumes.all(v, v.name != 'data')"
).message("pod.volumes: the name 'data' is the persistence volume's (each member's PVC); rename the volume"))]
#[x_kube(validation = Rule::new(
    "!has(self.persistence) || !self.persistence.enabled || !has(self.cacheContainer) || !has(self.cacheContainer.volumeMounts) || self.cacheContainer.volumeMounts.all(m, m.mountPath != '/var/lib/kache')"
).message("cacheContainer.volumeMounts: /var/lib/kache is where the persistence volume is mounted; choose another mountPath"))]
#[x_kube(validation = Rule::new(
    "!has(self.pod) || !has(self.pod.volumes) || self.pod.volumes.all(v, !v.name.startsWith('kache-'))"
).message("pod.volumes: names starting with kache- are the operator's (certificates and tokens); rename the volume"))]
#[x_kube(validation = Rule::new(
    "!has(self.cacheContainer) || !has(self.cacheContainer.volumeMounts) || self.cacheContainer.volumeMounts.all(m, m.mountPath != '/etc/kache' && !m.mountPath.startsWith('/etc/kache/'))"
).message("cacheContainer.volumeMounts: /etc/kache is where the operator mounts certificates and tokens; choose another mountPath"))]
#[serde(rename_all = "camelCase")]
pub struct CacheClusterSpec {
    /// Members of the cluster. Scaling moves partitions before any pod is removed.
    #[schemars(range(min = 1, max = 512))]
    pub replicas: i32,

    /// Cache node image; defaults to the operator's `--node-image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Image pull policy of the cache containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_pull_policy: Option<PullPolicy>,

    /// CPU and memory of each cache container. maxMemory defaults to 75% of the memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// Copies of each partition: a number from 1 to replicas, or "all" (every member
    /// holds everything). Unset: 2 when replicas is 2 or more (a node lost without
    /// warning loses no acknowledged write), 1 for a single member. It then follows
    /// replicas: scaling 1 -> 3 makes it 2, back to 1 makes it 1. Set 1 to halve the
    /// memory when the data can be refilled from its source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "replication_factor_schema")]
    pub replication_factor: Option<IntOrString>,

    /// Number of partitions, the unit of movement: each is a contiguous range of the
    /// 16384 Redis Cluster hash slots. Fixed at creation.
    #[serde(default = "default_partitions")]
    #[schemars(range(min = 1, max = 16384))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("partitions is immutable: it fixes which partition every key lives in; create a new CacheCluster to change it"))]
    pub partitions: u32,

    /// Replicas a read asks when the client does not say.
    #[serde(default)]
    pub read_consistency: Consistency,

    /// Acknowledgements a write waits for when the client does not say.
    #[serde(default)]
    pub write_consistency: Consistency,

    /// Hard bound on the bytes a node stores, e.g. 512MiB or 2GiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,15}(B|KiB|MiB|GiB|TiB|Ki|Mi|Gi|Ti|KB|MB|GB|TB)?$"))]
    pub max_memory: Option<String>,

    /// What a full node does with a new write: evict (lru, lfu) or refuse (none).
    #[serde(default)]
    pub eviction: Eviction,

    /// Time to live of writes that do not set one, e.g. 30s, 5m, 1h; unset means none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,9}(ms|s|m|h|d)$"))]
    pub default_ttl: Option<String>,

    /// How far ahead of a node's clock a peer's version may be, e.g. 500ms (the
    /// default). Further ahead is refused; a node whose clock is that far from most of
    /// its peers' takes no writes until the clocks agree. Keep the nodes' clocks in sync
    /// (NTP) well within it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(ms|s)$"))]
    pub max_clock_offset: Option<String>,

    /// Disk persistence: an append-only log and snapshots on a PersistentVolumeClaim per
    /// member, so a restart of every member at once loses nothing.
    #[serde(default)]
    pub persistence: Persistence,

    /// The client and peer Services.
    #[serde(default)]
    pub service: ServiceSpec,

    /// Where cache pods may run.
    #[serde(default)]
    pub placement: Placement,

    /// The PodDisruptionBudget of the cache pods.
    #[serde(default)]
    pub pod_disruption_budget: PdbSpec,

    /// Prometheus scraping (a ServiceMonitor or a PodMonitor) and alerts (a
    /// PrometheusRule), through prometheus-operator. docs/operations.md, "Monitoring".
    #[serde(default)]
    pub monitoring: Monitoring,

    /// The NetworkPolicy of the cache pods, on by default: only members reach the peer
    /// port; the client ports are open to the CacheCluster's namespace unless
    /// `clients` says otherwise.
    #[serde(default)]
    pub network_policy: NetworkPolicySpec,

    /// TLS: mutual TLS between members (on by default, from a CA the operator keeps) and
    /// optionally on the client ports. docs/security.md.
    #[serde(default)]
    pub tls: TlsSpec,

    /// Client authentication: tokens from Secrets, each with a role. On by default, with
    /// a generated admin token in `<name>-auth` (status.auth.secretName).
    #[serde(default)]
    pub auth: AuthSpec,

    /// Pod-level settings of the cache pods: image pull secrets, ServiceAccount,
    /// security context, grace periods, extra volumes and sidecars.
    #[serde(default)]
    pub pod: PodOverrides,

    /// Settings of the cache container itself: extra env and envFrom, security
    /// context, volume mounts.
    #[serde(default)]
    pub cache_container: CacheContainerOverrides,

    /// How long a membership change may take before Progressing turns False: a whole
    /// number with a unit, s, m or h (e.g. 90s, 10m, 2h).
    #[serde(default = "default_rebalance_timeout")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,8}(s|m|h)$"))]
    pub rebalance_timeout: String,

    /// The cache nodes' log format and filter.
    #[serde(default)]
    pub logging: Logging,

    /// Upstream HTTP APIs the cluster reads through: a GET of
    /// `/v1/upstreams/{name}/{path}` on any node is answered from the cache, or fetched
    /// from the upstream's url + path on a miss (docs/readthrough.md). At most 32. A
    /// change rolls the pods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "upstreams::list_schema")]
    #[x_kube(validation = upstreams::unique_names())]
    pub upstreams: Vec<Upstream>,

    /// Extra labels for every object the operator creates (and the pods).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,

    /// Extra annotations for every object the operator creates (and the pods).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl CacheClusterSpec {
    /// The replication factor as the nodes see it. A count written as a string ("2")
    /// is that count; anything else the schema refuses counts as zero copies (invalid).
    pub fn replication_factor(&self) -> crate::members::ReplicationFactor {
        use crate::members::ReplicationFactor;
        match &self.replication_factor {
            None => ReplicationFactor::Count(if self.replicas >= 2 {
                DEFAULT_REPLICATION_FACTOR
            } else {
                1
            }),
            Some(IntOrString::Int(n)) => ReplicationFactor::Count(u16::try_from(*n).unwrap_or(0)),
            Some(IntOrString::String(s)) if s == "all" => ReplicationFactor::ALL,
            Some(IntOrString::String(s)) => ReplicationFactor::Count(s.parse().unwrap_or(0)),
        }
    }
}

/// Copies of each partition when the spec does not say and there are enough members:
/// two, so a node lost without warning (SIGKILL, a node failure) loses no acknowledged
/// write at W = quorum (DESIGN.md invariant 2). It costs twice the memory of one copy.
pub const DEFAULT_REPLICATION_FACTOR: u16 = 2;

fn default_partitions() -> u32 {
    DEFAULT_PARTITIONS
}

fn default_rebalance_timeout() -> String {
    "10m".to_owned()
}

/// An int-or-string. Which ints and strings are allowed is a CEL rule on the spec, since
/// it depends on `replicas` and a structural schema cannot constrain both types. No
/// schema default: unset is derived from replicas (`CacheClusterSpec::replication_factor`).
/// Objects stored while the schema defaulted it to 1 keep their 1.
fn replication_factor_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "nullable": false
    })
}

/// When the kubelet pulls the cache image.
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    One,
    #[default]
    Quorum,
    All,
}

impl Consistency {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::One => "one",
            Self::Quorum => "quorum",
            Self::All => "all",
        }
    }
}

#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Eviction {
    #[default]
    Lru,
    Lfu,
    None,
}

impl Eviction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Lru => "lru",
            Self::Lfu => "lfu",
            Self::None => "none",
        }
    }
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "self.httpPort != self.grpcPort && self.httpPort != self.respPort && self.grpcPort != self.respPort"
).message("service.httpPort, grpcPort and respPort must be three different ports"))]
pub struct ServiceSpec {
    /// Type of the client Service.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Client HTTP port.
    #[serde(default = "default_http_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub http_port: i32,
    /// Peer gRPC port.
    #[serde(default = "default_grpc_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub grpc_port: i32,
    /// Client RESP (Redis protocol) port.
    #[serde(default = "default_resp_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub resp_port: i32,
    /// Annotations for the client Service (e.g. for a cloud load balancer).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            type_: ServiceType::default(),
            http_port: default_http_port(),
            grpc_port: default_grpc_port(),
            resp_port: default_resp_port(),
            annotations: BTreeMap::new(),
        }
    }
}

fn default_http_port() -> i32 {
    7070
}

fn default_grpc_port() -> i32 {
    7071
}

fn default_resp_port() -> i32 {
    6379
}

#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Where the cache pods may run: the usual pod scheduling fields.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// Node affinity and pod (anti-)affinity of the cache pods. By default the pods
    /// prefer nodes without another pod of this cluster (a preferred pod anti-affinity
    /// on kubernetes.io/hostname). A podAntiAffinity set here replaces that default
    /// (`podAntiAffinity: {}` turns it off); nodeAffinity and podAffinity are added.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// Taints the cache pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node labels a node must have for a cache pod to run on it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// How the cache pods spread across zones or nodes. Default: one constraint,
    /// maxSkew 1 over topology.kubernetes.io/zone, whenUnsatisfiable ScheduleAnyway.
    /// A list set here replaces it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of the cache pods, so a busy node preempts others before them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PdbSpec {
    /// Create the PodDisruptionBudget, so a node drain never evicts more cache pods at
    /// once than the replication factor can lose.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Pods that may be down at once; derived from the replication factor when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_unavailable: Option<i32>,
}

impl Default for PdbSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            max_unavailable: None,
        }
    }
}

fn yes() -> bool {
    true
}

/// Prometheus scraping and alerting through prometheus-operator objects (docs/operations.md,
/// "Monitoring"). Each object is created when asked for and deleted when turned off; a
/// missing prometheus-operator CRD is a warning event, never a failed reconcile.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(
    "!(has(self.serviceMonitor) && self.serviceMonitor && has(self.podMonitor) && self.podMonitor)"
)
    .message("monitoring: set serviceMonitor or podMonitor, not both (each pod would be scraped twice)"))]
pub struct Monitoring {
    /// Create a prometheus-operator ServiceMonitor for the nodes' /metrics: one Service
    /// (the peer one), one port (`http`), so each pod is scraped once.
    #[serde(default)]
    pub service_monitor: bool,
    /// Create a prometheus-operator PodMonitor instead: the cache pods' `http` port.
    #[serde(default)]
    pub pod_monitor: bool,
    /// Scrape interval.
    #[serde(default = "default_scrape_interval")]
    #[schemars(regex(pattern = r"^[0-9]{1,6}(s|m)$"))]
    pub interval: String,
    /// Labels on the ServiceMonitor or PodMonitor, e.g. `release: prom` when your
    /// Prometheus selects monitors by that label. They go on the PrometheusRule too.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The alert rules of this cluster (docs/operations.md has a runbook per alert).
    #[serde(default)]
    pub prometheus_rule: PrometheusRuleSpec,
}

impl Default for Monitoring {
    fn default() -> Self {
        Self {
            service_monitor: false,
            pod_monitor: false,
            interval: default_scrape_interval(),
            labels: BTreeMap::new(),
            prometheus_rule: PrometheusRuleSpec::default(),
        }
    }
}

/// A prometheus-operator PrometheusRule with kache's alerts, scoped to this cluster.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusRuleSpec {
    /// Create the PrometheusRule. The alerts read the metrics a ServiceMonitor or
    /// PodMonitor of this cluster scrapes (and the operator's own).
    #[serde(default)]
    pub enabled: bool,
    /// Labels on the PrometheusRule on top of `monitoring.labels`, e.g. the
    /// `ruleSelector` labels of your Prometheus.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn default_scrape_interval() -> String {
    "30s".to_owned()
}

/// Who may reach the cache pods. docs/security.md says what this protects and what not.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NetworkPolicySpec {
    /// Create the NetworkPolicy (the default): only this cluster's pods reach the peer
    /// (gRPC) port, the `clients` reach the HTTP and RESP ports, and the operator's pods
    /// reach the HTTP port (it reads each node's GET /v1/cluster). It takes effect only
    /// where the cluster's network plugin enforces NetworkPolicies.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Who may reach the client ports (HTTP, with /metrics, and RESP), as NetworkPolicy
    /// `from` peers (podSelector, namespaceSelector, ipBlock). Unset: every pod in the
    /// CacheCluster's namespace. Set: exactly these peers; add `{podSelector: {}}` to keep
    /// the namespace, and your Prometheus's namespace to keep /metrics scraped. An empty
    /// list admits nobody but the operator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "client_peers_schema")]
    pub clients: Option<Vec<NetworkPolicyPeer>>,
}

impl Default for NetworkPolicySpec {
    fn default() -> Self {
        Self {
            enabled: true,
            clients: None,
        }
    }
}

fn client_peers_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<NetworkPolicyPeer>>();
    schema.insert("maxItems".to_owned(), 64.into());
    schema
}

mod logging;
pub mod persistence;
mod pod;
pub mod security;
mod status;
pub mod upstreams;

pub use logging::{LogFormat, Logging};
pub use persistence::{Fsync, Persistence, RetentionPolicy};
pub use pod::{CacheContainerOverrides, DEFAULT_SHUTDOWN_GRACE_SECONDS, PodOverrides};
pub use security::{
    AuthSpec, ClientTls, IssuerKind, IssuerRef, PeerTls, Role, TlsSpec, TokenSecret,
};
pub use status::{
    AuthMode, AuthStatus, CacheClusterStatus, DataLossStatus, MemberRole, MemberStatus, Phase,
    RebalanceStatus, TlsSource, TlsStatus,
};
pub use upstreams::{CircuitBreaker, Upstream};

#[cfg(test)]
mod tests;
