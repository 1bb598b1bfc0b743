//! A node's report, `GET /v1/cluster`: its view of the cluster, what it owns and holds,
//! and how the current (or last) membership move is going. The node serializes it; the
//! operator deserializes it and decides from it whether a member has joined or drained.
//! Its shape is in docs/architecture.md.
//!
//! Compatibility: unknown fields are ignored, so a node may add to the report without
//! breaking an older operator. The fields the operator decides on are required (a report
//! without them is refused, not guessed at); every other field defaults when absent.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::members::ReplicationFactor;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// The newest peer protocol the node speaks; an operator that understands none of
    /// `minProtocolVersion..=protocolVersion` does not trust it.
    pub protocol_version: u32,
    /// The oldest peer protocol the node speaks (absent from v1 nodes: v1 only).
    #[serde(default)]
    pub min_protocol_version: u32,
    pub node: NodeReport,
    pub epoch: u64,
    pub partitions: u32,
    pub replication_factor: ReplicationFactor,
    #[serde(default)]
    pub members: Vec<MemberReport>,
    /// Members on their way out: they own nothing and hand off what they hold.
    #[serde(default)]
    pub departing: Vec<MemberReport>,
    pub ownership: Ownership,
    pub rebalance: RebalanceReport,
    #[serde(default)]
    pub sync: SyncReport,
    /// How the node's clock compares with its peers'.
    #[serde(default)]
    pub clock: ClockReport,
    /// The certificates the node serves now (absent from nodes before TLS).
    #[serde(default)]
    pub tls: TlsReport,
}

/// The certificates a node serves on its ports, as loaded now (they change on rotation).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TlsReport {
    /// The peer port's certificate; null without `--peer-tls-dir` (plaintext).
    pub peer: Option<CertReport>,
    /// The HTTP and RESP ports' certificate; null without `--client-tls-dir`.
    pub client: Option<CertReport>,
}

/// One served certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CertReport {
    /// SHA-256 of the DER certificate, lower-case hex.
    pub sha256: String,
    /// When it expires (RFC 3339, UTC).
    pub not_after: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub id: String,
    /// Fresh on every start: a changed incarnation is a restart.
    #[serde(default)]
    pub incarnation: String,
    pub ready: bool,
    /// Where this node stands in the list in force: `member`, `departing`, or `absent`
    /// (not added yet, removed, or no list yet).
    #[serde(default)]
    pub role: Role,
    /// The newest epoch whose partitions this node fully holds (0 before its startup sync).
    #[serde(default)]
    pub synced_epoch: u64,
    /// When this incarnation started (ms since the Unix epoch; 0 from older nodes).
    #[serde(default)]
    pub started_at_ms: u64,
    /// Owned partitions the startup sync found no live copy of on any other member:
    /// nobody else held them when this incarnation started. After a restart, whatever
    /// this node held of them before is lost; on a new cluster or a new member it means
    /// nothing (there was nothing to hold yet). Empty until the startup sync finished.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub partitions_without_copy: Vec<u32>,
}

/// Where a node stands in a member list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// In `members`: owns partitions.
    Member,
    /// In `departing`: owns nothing, may still hold data being handed off.
    Departing,
    /// In neither (not added yet, or already removed): owns nothing.
    #[default]
    Absent,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberReport {
    pub id: String,
    /// The peer address in use (from discovery); absent while none is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    #[serde(default)]
    pub is_self: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ownership {
    /// Partitions this node owns in the current epoch (0 when departing or absent).
    pub owned: usize,
    /// Owned partitions this node does not hold completely yet (startup sync or move).
    pub pending: usize,
    /// Partitions holding data this node does not own (dropped when a move completes).
    pub held_not_owned: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RebalanceReport {
    /// A move is in progress (from `fromEpoch` to `toEpoch`).
    pub active: bool,
    #[serde(flatten)]
    pub progress: Progress,
}

/// The move towards one epoch, as a node tracks it.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Progress {
    pub from_epoch: u64,
    pub to_epoch: u64,
    pub started_at_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completed_at_ms: Option<u64>,
    /// Partitions this node gains in the move.
    pub partitions_total: usize,
    /// Of those, pulled so far.
    pub partitions_done: usize,
    /// Records and key/value bytes streamed to this node for the move.
    pub records_moved: u64,
    pub bytes_moved: u64,
    /// Partitions this node dropped when the move completed.
    pub partitions_dropped: usize,
    /// What the move waits for, when it waits.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SyncReport {
    pub anti_entropy_rounds: u64,
    /// Records pulled from peers that were newer than what this node held.
    pub records_repaired: u64,
    pub records_pulled: u64,
    pub bytes_pulled: u64,
    /// Digest or stream exchanges with peers that failed.
    pub failures: u64,
}

/// How a node's clock compares with its peers' (`--max-clock-offset`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ClockReport {
    /// The node's clock minus its peers' (the median over recent readings), in ms.
    pub offset_ms: i64,
    pub max_offset_ms: u64,
    /// False while most recently heard peers are further away than the bound: the node
    /// takes no writes then.
    pub in_bounds: bool,
    pub peers_heard: usize,
    /// Versions refused because they were too far ahead of the node's clock.
    pub refused_versions: u64,
}

impl ClusterReport {
    /// The member has fully joined `epoch`: it follows that list, is ready, and holds
    /// exactly the partitions it owns.
    pub fn joined(&self, epoch: u64) -> bool {
        self.epoch == epoch
            && self.node.ready
            && !self.rebalance.active
            && self.ownership.pending == 0
            && self.ownership.held_not_owned == 0
    }

    /// A removed member has handed everything off under `epoch`: the move finished and
    /// it holds no partition it does not own (it owns none).
    pub fn drained(&self, epoch: u64) -> bool {
        self.epoch == epoch
            && !self.rebalance.active
            && self.ownership.owned == 0
            && self.ownership.held_not_owned == 0
    }
}

#[cfg(test)]
mod tests;
