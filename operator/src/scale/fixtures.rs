//! Observations for the tests of the plan, the status and the controller: a cluster
//! named `demo`, its member lists, and node reports in each state a node can be in.

use crate::members::{Member, MemberList, ReplicationFactor};
use crate::report::{
    ClusterReport, NodeReport, Ownership, Progress, RebalanceReport, Role, SyncReport,
};
use crate::scale::{Desired, Observed, PodView, member_id, ordinal_of};

const NAME: &str = "demo";

pub(crate) fn desired(replicas: u32, rf: u16) -> Desired {
    Desired {
        name: NAME.to_owned(),
        replicas,
        replication_factor: ReplicationFactor::Count(rf),
        partitions: 271,
    }
}

pub(crate) fn list(epoch: u64, members: &[u32], departing: &[u32]) -> MemberList {
    let ids = |ordinals: &[u32]| {
        ordinals
            .iter()
            .map(|&i| Member::new(member_id(NAME, i)))
            .collect()
    };
    MemberList {
        epoch,
        partitions: 271,
        replication_factor: ReplicationFactor::Count(1),
        members: ids(members),
        departing: ids(departing),
    }
}

/// A member that fully joined `epoch`.
pub(crate) fn joined(ordinal: u32, epoch: u64) -> ClusterReport {
    ClusterReport {
        protocol_version: 1,
        min_protocol_version: 0,
        node: NodeReport {
            id: member_id(NAME, ordinal),
            incarnation: "i".to_owned(),
            ready: true,
            role: Role::Member,
            synced_epoch: epoch,
            started_at_ms: 0,
            partitions_without_copy: Vec::new(),
        },
        epoch,
        partitions: 271,
        replication_factor: ReplicationFactor::Count(1),
        members: Vec::new(),
        departing: Vec::new(),
        ownership: Ownership {
            owned: 90,
            pending: 0,
            held_not_owned: 0,
        },
        rebalance: RebalanceReport {
            active: false,
            progress: Progress {
                to_epoch: epoch,
                ..Progress::default()
            },
        },
        sync: SyncReport::default(),
        clock: kache_api::report::ClockReport::default(),
        tls: kache_api::report::TlsReport::default(),
    }
}

/// A member still moving partitions into `epoch`.
pub(crate) fn moving(ordinal: u32, epoch: u64) -> ClusterReport {
    let mut report = joined(ordinal, epoch);
    report.rebalance.active = true;
    report.ownership.pending = 12;
    report
}

/// A departing member that still holds partitions.
pub(crate) fn holding(ordinal: u32, epoch: u64) -> ClusterReport {
    let mut report = joined(ordinal, epoch);
    report.ownership.owned = 0;
    report.ownership.held_not_owned = 40;
    report
}

/// A departing member that handed everything off.
pub(crate) fn drained(ordinal: u32, epoch: u64) -> ClusterReport {
    let mut report = holding(ordinal, epoch);
    report.ownership.held_not_owned = 0;
    report
}

pub(crate) fn observed(list: Option<MemberList>, reports: Vec<ClusterReport>) -> Observed {
    let mut observed = Observed {
        list,
        ..Observed::default()
    };
    for report in reports {
        let ordinal = ordinal_of(NAME, &report.node.id).unwrap();
        observed.pods.insert(
            ordinal,
            PodView {
                ip: Some(format!("10.88.1.{}", ordinal + 10)),
                ready: report.node.ready,
            },
        );
        observed.reports.insert(ordinal, report);
        observed.discoverable.insert(ordinal);
    }
    observed
}

pub(crate) fn ids(ordinals: &[u32]) -> Vec<String> {
    ordinals.iter().map(|&i| member_id(NAME, i)).collect()
}
