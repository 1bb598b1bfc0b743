//! `GET /v1/cluster`: this node's view of the cluster, what it owns and holds, and how
//! the current (or last) membership move is going. The operator reads it to report
//! resharding progress; its shape is in docs/architecture.md.

use std::collections::BTreeSet;
use std::net::SocketAddr;

use serde::Serialize;

use super::clock_watch::ClockReport;
use super::membership::ReplicationFactor;
use super::rebalance::Progress;
use super::wire::PROTOCOL_VERSION;
use super::{Cluster, Role};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub protocol_version: u32,
    pub node: NodeReport,
    pub epoch: u64,
    pub partitions: u32,
    pub replication_factor: ReplicationFactor,
    pub members: Vec<MemberReport>,
    /// Members on their way out: they own nothing and hand off what they hold.
    pub departing: Vec<MemberReport>,
    pub ownership: Ownership,
    pub rebalance: RebalanceReport,
    pub sync: SyncReport,
    /// How this node's clock compares with its peers' (see `clock_watch`).
    pub clock: ClockReport,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub id: String,
    pub incarnation: String,
    pub ready: bool,
    /// Where this node stands in the list in force: `member`, `departing`, or `absent`
    /// (not added yet, removed, or no list yet).
    pub role: Role,
    /// The newest epoch whose partitions this node fully holds (0 before its startup sync).
    pub synced_epoch: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberReport {
    pub id: String,
    /// The peer address in use (from discovery); absent while none is known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    pub is_self: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ownership {
    /// Partitions this node owns in the current epoch (0 when departing or absent).
    pub owned: usize,
    /// Owned partitions this node does not hold completely yet (startup sync or move).
    pub pending: usize,
    /// Partitions holding data this node does not own (dropped when a move completes).
    pub held_not_owned: usize,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RebalanceReport {
    /// A move is in progress (from `fromEpoch` to `toEpoch`).
    pub active: bool,
    #[serde(flatten)]
    pub progress: Progress,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub anti_entropy_rounds: u64,
    /// Records pulled from peers that were newer than what this node held.
    pub records_repaired: u64,
    pub records_pulled: u64,
    pub bytes_pulled: u64,
    /// Digest or stream exchanges with peers that failed.
    pub failures: u64,
}

impl Cluster {
    /// What `GET /v1/cluster` says; `ready` is the node's lifecycle, read here.
    pub fn report(&self) -> ClusterReport {
        let routing = self.routing();
        let view = &routing.next;
        let owned: BTreeSet<u32> = view.owned().into_iter().collect();
        let pending = owned.iter().filter(|&&p| !self.holds_completely(p)).count();
        let node_id = self.inner.identity.node_id.as_str();
        let member_report = |m: &super::membership::Member| MemberReport {
            id: m.id.clone(),
            address: self.inner.replicator.peers().address(m),
            is_self: m.id == node_id,
        };
        let held_not_owned = self
            .inner
            .store
            .partitions_holding_data()
            .into_iter()
            .filter(|p| !owned.contains(p))
            .count();
        ClusterReport {
            protocol_version: PROTOCOL_VERSION,
            node: NodeReport {
                id: self.inner.identity.node_id.clone(),
                incarnation: self.inner.identity.incarnation.clone(),
                ready: self.lifecycle().is_ready(),
                role: view.role_of(node_id),
                synced_epoch: self.synced_epoch(),
            },
            epoch: view.epoch(),
            partitions: view.list.partitions,
            replication_factor: view.list.replication_factor,
            members: view.list.members.iter().map(member_report).collect(),
            departing: view.list.departing.iter().map(member_report).collect(),
            ownership: Ownership {
                owned: owned.len(),
                pending,
                held_not_owned,
            },
            rebalance: RebalanceReport {
                active: routing.moving(),
                progress: self.inner.sync.progress(),
            },
            sync: self.sync_report(),
            clock: self.clock_report(),
        }
    }

    /// The sync counters alone: cheap, for metrics scrapes.
    pub fn sync_report(&self) -> SyncReport {
        self.inner.sync.report()
    }
}
