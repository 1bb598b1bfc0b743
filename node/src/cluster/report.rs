//! `GET /v1/cluster`: this node's view of the cluster, what it owns and holds, and how
//! the current (or last) membership move is going. The operator reads it to report
//! resharding progress; its shape is in docs/architecture.md.
//!
//! The types are [`kache_api::report`]'s, the ones the operator deserializes; this module
//! fills them in from the node's state.

use std::collections::BTreeSet;

use kache_api::report::{
    ClusterReport, MemberReport, NodeReport, Ownership, RebalanceReport, SyncReport,
};

use super::Cluster;
use super::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};

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
            min_protocol_version: MIN_PROTOCOL_VERSION,
            node: NodeReport {
                id: self.inner.identity.node_id.clone(),
                incarnation: self.inner.identity.incarnation.clone(),
                ready: self.lifecycle().is_ready(),
                role: view.role_of(node_id),
                synced_epoch: self.synced_epoch(),
                started_at_ms: self.inner.identity.started_at_ms,
                partitions_without_copy: self.inner.sync.without_copy(),
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
            // The certificates are the HTTP layer's to add (it holds the reloaders).
            tls: Default::default(),
        }
    }

    /// The progress of the current (or last) membership move, for metrics scrapes.
    pub fn move_progress(&self) -> kache_api::report::Progress {
        self.inner.sync.progress()
    }

    /// The sync counters alone: cheap, for metrics scrapes.
    pub fn sync_report(&self) -> SyncReport {
        self.inner.sync.report()
    }
}
