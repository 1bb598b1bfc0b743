//! The CacheCluster's status: what the operator observed, from the nodes' own reports.
//! Computed by `crate::status`; these are only its types, as the CRD's schema shows them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use serde::{Deserialize, Serialize};

/// What the operator observed, from the nodes' own reports.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheClusterStatus {
    /// The spec generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// One word for where the cluster is: Creating, Available, Rebalancing,
    /// ScaleDownBlocked, Degraded or Invalid. The conditions say why.
    #[serde(default)]
    pub phase: Phase,
    /// Available (every member holds its partitions and its pod is Ready), Progressing
    /// (a membership change is under way; False once it exceeded rebalanceTimeout),
    /// Rebalancing, ScaleDownBlocked, Degraded (something needs attention) and DataLoss,
    /// each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Members that fully joined the current epoch: ready, holding every partition they
    /// own and nothing else.
    #[serde(default)]
    pub replicas: i32,
    /// Cache pods whose readiness probe passes.
    #[serde(default)]
    pub ready_replicas: i32,
    /// Epoch of the published member list.
    #[serde(default)]
    pub epoch: u64,
    /// Every pod that is or was a member, as its node reports itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<MemberStatus>,
    /// The current or last membership change: which epochs and how far it got.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebalance: Option<RebalanceStatus>,
    /// Label selector of the cache pods (for the /scale subresource and HPAs).
    #[serde(default)]
    pub selector: String,
    /// The most recent member restart that lost data: the member came back with no live
    /// copy of some partitions it owned anywhere in the cluster (at replicationFactor 1,
    /// or with every other owner down too), so whatever keys they held are gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_data_loss: Option<DataLossStatus>,
    /// How many such restarts the operator has recorded for this cluster.
    #[serde(default)]
    pub data_loss_incidents: u64,
    /// Whether clients need a token, and the Secret with the generated admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<AuthStatus>,
    /// Where the certificates the pods run with come from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsStatus>,
}

/// Client authentication as the pods run it. Never holds a token.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthStatus {
    /// Tokens (every request but the open endpoints needs a token) or Open.
    pub mode: AuthMode,
    /// The Secret holding the generated admin token (key `admin`), when auth is on:
    /// `kubectl get secret <secretName> -o jsonpath='{.data.admin}' | base64 -d`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum AuthMode {
    /// Clients authenticate with a token.
    Tokens,
    /// Anyone who reaches the client ports may read, write and flush.
    Open,
}

/// The certificates of the peer and client ports.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsStatus {
    /// Where the peer certificates come from: Operator (its CA, `<name>-peer-tls`),
    /// Secret (spec.tls.peer.secretName) or Disabled (plaintext between members).
    pub peer: TlsSource,
    /// The same for the client ports.
    pub client: TlsSource,
    /// The Secret with the peer certificates the pods mount, when peer TLS is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer_secret_name: Option<String>,
    /// The Secret with the client-port certificates, when client TLS is on; clients
    /// trust its `ca.crt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret_name: Option<String>,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum TlsSource {
    /// Certificates from the CacheCluster's own CA, kept by the operator.
    Operator,
    /// Certificates cert-manager issues (`spec.tls.peer.issuerRef`), which the operator
    /// copies into the Secret the pods mount.
    CertManager,
    /// Certificates from a Secret the user manages.
    Secret,
    /// No TLS.
    Disabled,
}

/// Where the cluster is, in one word.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum Phase {
    /// Objects are being created and no member has joined yet.
    #[default]
    Creating,
    /// Every member holds the partitions it owns; no change is in progress.
    Available,
    /// Membership is changing and partitions are moving.
    Rebalancing,
    /// A scale-down cannot finish: a leaving member may still hold data, so its pod stays.
    ScaleDownBlocked,
    /// No change is in progress but some member is not ready or not reachable.
    Degraded,
    /// The spec cannot be acted on; see the Degraded condition.
    Invalid,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Creating => "Creating",
            Self::Available => "Available",
            Self::Rebalancing => "Rebalancing",
            Self::ScaleDownBlocked => "ScaleDownBlocked",
            Self::Degraded => "Degraded",
            Self::Invalid => "Invalid",
        }
    }
}

/// One pod that is or was a member, as its node reports itself.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    /// The pod's name, which is the member id.
    pub name: String,
    /// Member, Departing or Joining.
    pub role: MemberRole,
    /// Whether the node answered GET /v1/cluster.
    pub reachable: bool,
    /// Whether it fully joined the current epoch (members) or handed off everything
    /// (departing).
    pub settled: bool,
    /// The member-list epoch the node runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<u64>,
    /// Partitions the member owns in the current epoch.
    #[serde(default)]
    pub owned_partitions: u32,
    /// Partitions it still holds but no longer owns (waiting for the new owners).
    #[serde(default)]
    pub held_not_owned: u32,
    /// The node's incarnation, recorded once it finished its startup sync: a member
    /// reporting another one later has restarted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<String>,
}

/// A pod's part in the membership.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum MemberRole {
    /// In the member list: owns partitions.
    #[default]
    Member,
    /// Removed from the list; its pod stays until it holds nothing.
    Departing,
    /// A pod not in the list yet (scale-up waits for it to start).
    Joining,
}

/// A membership change: partitions moving from the old owners to the new.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceStatus {
    /// Whether the move is still running.
    pub active: bool,
    /// The epoch the move started from.
    pub from_epoch: u64,
    /// The epoch it moves to.
    pub to_epoch: u64,
    /// Partitions the members pulled for this move, of those they must pull.
    pub partitions_moved: u64,
    /// Partitions the members must pull for this move.
    pub partitions_total: u64,
    /// partitionsMoved of partitionsTotal, as "42%".
    pub progress: String,
    /// Bytes streamed between members for this move.
    pub bytes_moved: u64,
    /// Records streamed between members for this move.
    pub records_moved: u64,
    /// When the move started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When every member had pulled what it must.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Time>,
}

/// One member restart that lost data.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataLossStatus {
    /// The member (pod) that restarted.
    pub member: String,
    /// The incarnation it restarted as.
    pub incarnation: String,
    /// The partitions it owns and came back with no live copy of (at most the first
    /// 1024; `partitionCount` has them all).
    pub partitions: Vec<u32>,
    /// How many partitions it came back with no live copy of.
    pub partition_count: u32,
    /// When the restarted node started, as it reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restarted_at: Option<Time>,
    /// When the operator noticed.
    pub detected_at: Time,
}
