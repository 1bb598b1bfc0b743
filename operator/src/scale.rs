//! The membership state machine: how the operator moves a cluster from one member list to
//! the next without losing data. A pure function of (spec, published list, pods, node
//! reports, the last reported phase), so every path is unit-tested without a cluster.
//! The plan decides every step; the status only reports it.
//!
//! - **Create**: publish every member at epoch 1 and start all pods at once. Until the
//!   cluster was available once, members that have not joined are `Starting`, not a
//!   failure.
//! - **Scale up**: grow the StatefulSet; once every new pod answers `GET /v1/cluster`,
//!   publish a list with the new members (epoch + 1); the nodes move partitions to them.
//! - **Scale down**: publish a list without the leaving ordinals, which become `departing`
//!   (epoch + 1). The nodes move their partitions away. Only when every remaining member
//!   fully joined the epoch and every departing one reports owning and holding nothing,
//!   publish the list without them (epoch + 1) and shrink the StatefulSet.
//! - A leaving or remaining node that does not answer blocks the scale-down: the pods
//!   stay, the cluster keeps serving, and the status says who and why.
//! - A newer spec always supersedes a change in progress: the next list is computed from
//!   the published one, so nothing that may still hold data is ever dropped.
//! - The StatefulSet never shrinks below the highest ordinal that is a member or departing.

use std::collections::{BTreeMap, BTreeSet};

use crate::crd::{MemberRole, MemberStatus, Phase};
use crate::members::{Member, MemberList, ReplicationFactor};
use crate::report::{ClusterReport, partition_count};

/// What the spec asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Desired {
    /// The CacheCluster's name: members are `<name>-<ordinal>`.
    pub name: String,
    pub replicas: u32,
    pub replication_factor: ReplicationFactor,
    pub partitions: u32,
}

/// A cache pod as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodView {
    pub ip: Option<String>,
    pub ready: bool,
}

/// Everything the decision depends on, keyed by pod ordinal.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// The published member list, if there is one.
    pub list: Option<MemberList>,
    pub pods: BTreeMap<u32, PodView>,
    /// Reports of the nodes that answered; a missing ordinal did not.
    pub reports: BTreeMap<u32, ClusterReport>,
    /// Pods listed in the peer Service's EndpointSlices: the nodes can find them.
    pub discoverable: BTreeSet<u32>,
    /// The phase the status last reported, None before the first status. It is the
    /// plan's only memory: whether every member has joined once since creation.
    pub last_phase: Option<Phase>,
}

/// What the cluster is doing, which decides the phase and conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// The first member list was just published.
    Create,
    /// The first members are starting: the list is the first one (epoch 1) and the
    /// status never left Creating, so members that have not joined are no failure yet.
    Starting { waiting_for: Vec<String> },
    /// Scale-up: the new pods do not answer yet, so they are not members yet.
    WaitForPods { starting: Vec<String> },
    /// A list was published and members are still moving partitions.
    Rebalancing { waiting_for: Vec<String> },
    /// Departing members still hold data they are handing off.
    HandingOff { waiting_for: Vec<String> },
    /// A scale-down cannot finish: these nodes do not answer and may hold data.
    ScaleDownBlocked { unreachable: Vec<String> },
    /// Nothing is changing, but these members have not fully joined.
    Degraded { not_joined: Vec<String> },
    /// Every member holds what it owns; no change is in progress.
    Stable,
    /// The spec cannot be acted on.
    Invalid { reason: String },
}

impl Step {
    /// A membership change is in progress.
    pub fn is_change(&self) -> bool {
        matches!(
            self,
            Self::Create
                | Self::Starting { .. }
                | Self::WaitForPods { .. }
                | Self::Rebalancing { .. }
                | Self::HandingOff { .. }
                | Self::ScaleDownBlocked { .. }
        )
    }
}

/// The decision: the list to publish, the StatefulSet size, and what is going on.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub list: MemberList,
    /// `list` differs from the published one and must be written.
    pub publish: bool,
    pub statefulset_replicas: u32,
    pub step: Step,
    pub members: Vec<MemberStatus>,
}

pub fn member_id(name: &str, ordinal: u32) -> String {
    format!("{name}-{ordinal}")
}

/// The ordinal of `id` if it is one of `name`'s pods.
pub fn ordinal_of(name: &str, id: &str) -> Option<u32> {
    id.strip_prefix(name)?.strip_prefix('-')?.parse().ok()
}

/// Decides the next step. Pure: the same inputs always give the same plan.
pub fn plan(desired: &Desired, observed: &Observed) -> Plan {
    if let Some(reason) = invalid_replication_factor(desired) {
        // The CRD's CEL rule refuses this; an object written before the rule existed
        // must still change nothing.
        return invalid(desired, observed, reason);
    }
    let Some(current) = &observed.list else {
        return create(desired, observed);
    };
    if current.partitions != desired.partitions {
        let reason = format!(
            "spec.partitions is {} but the cluster was created with {}; partitions never change",
            desired.partitions, current.partitions
        );
        return hold(desired, observed, current, Step::Invalid { reason });
    }
    let target = target_members(desired);
    let members_match = current.member_ids().eq(target.iter().map(String::as_str));
    if !members_match || current.replication_factor != desired.replication_factor {
        return change(desired, observed, current, target);
    }
    if !current.departing.is_empty() {
        return hand_off(desired, observed, current);
    }
    settle(desired, observed, current)
}

/// Why the replication factor cannot be acted on, if it cannot.
fn invalid_replication_factor(desired: &Desired) -> Option<String> {
    let ReplicationFactor::Count(copies) = desired.replication_factor else {
        return None;
    };
    (copies == 0 || u32::from(copies) > desired.replicas).then(|| {
        format!(
            "replicationFactor {copies} must be between 1 and replicas ({})",
            desired.replicas
        )
    })
}

/// An invalid spec and no list yet: nothing is published and no pod is started.
fn refuse(desired: &Desired, reason: String) -> Plan {
    Plan {
        list: MemberList {
            epoch: 0,
            partitions: desired.partitions,
            replication_factor: desired.replication_factor,
            members: Vec::new(),
            departing: Vec::new(),
        },
        publish: false,
        statefulset_replicas: 0,
        step: Step::Invalid { reason },
        members: Vec::new(),
    }
}

/// The members the spec asks for, in ordinal order.
fn target_members(desired: &Desired) -> Vec<String> {
    (0..desired.replicas)
        .map(|i| member_id(&desired.name, i))
        .collect()
}

/// The spec asks for other members or another replication factor: once every new pod
/// can take part, publish the target members (epoch + 1); whoever leaves is departing.
fn change(
    desired: &Desired,
    observed: &Observed,
    current: &MemberList,
    target: Vec<String>,
) -> Plan {
    let current_members: BTreeSet<&str> = current.member_ids().collect();
    let starting: Vec<String> = target
        .iter()
        .filter(|id| !current_members.contains(id.as_str()))
        // A new member must answer, and be in the EndpointSlices the nodes discover
        // peers through: writes to it fail until every node knows its address.
        .filter(|id| !reachable(desired, observed, id) || !discoverable(desired, observed, id))
        .cloned()
        .collect();
    if !starting.is_empty() {
        return hold(desired, observed, current, Step::WaitForPods { starting });
    }
    let target_set: BTreeSet<&str> = target.iter().map(String::as_str).collect();
    let departing: BTreeSet<String> = current
        .member_ids()
        .chain(current.departing_ids())
        .filter(|id| !target_set.contains(id))
        .map(str::to_owned)
        .collect();
    let next = MemberList {
        epoch: current.epoch + 1,
        partitions: current.partitions,
        replication_factor: desired.replication_factor,
        members: target.iter().map(|id| Member::new(id.clone())).collect(),
        departing: by_ordinal(&desired.name, departing),
    };
    let waiting_for = target;
    publish(desired, observed, next, Step::Rebalancing { waiting_for })
}

/// A scale-down in progress: forget the departing members once every member joined and
/// every departing one handed everything off; until then say who is waited for.
fn hand_off(desired: &Desired, observed: &Observed, current: &MemberList) -> Plan {
    let epoch = current.epoch;
    let not_joined = not_joined(desired, observed, current);
    let holding: Vec<String> = current
        .departing_ids()
        .filter(|id| !report_of(&desired.name, observed, id).is_some_and(|r| r.drained(epoch)))
        .map(str::to_owned)
        .collect();
    if not_joined.is_empty() && holding.is_empty() {
        // Every departing member handed everything off: forget them, then shrink.
        let next = MemberList {
            epoch: epoch + 1,
            departing: Vec::new(),
            ..current.clone()
        };
        let waiting_for = current.member_ids().map(str::to_owned).collect();
        return publish(desired, observed, next, Step::Rebalancing { waiting_for });
    }
    let unreachable: Vec<String> = current
        .member_ids()
        .chain(current.departing_ids())
        .filter(|id| !reachable(desired, observed, id))
        .map(str::to_owned)
        .collect();
    if !unreachable.is_empty() {
        let step = Step::ScaleDownBlocked { unreachable };
        return hold(desired, observed, current, step);
    }
    let waiting_for = not_joined.into_iter().chain(holding).collect();
    hold(desired, observed, current, Step::HandingOff { waiting_for })
}

/// The published list is the one the spec asks for: stable once every member joined;
/// otherwise still starting, still moving partitions, or degraded.
fn settle(desired: &Desired, observed: &Observed, current: &MemberList) -> Plan {
    let not_joined = not_joined(desired, observed, current);
    if not_joined.is_empty() {
        return hold(desired, observed, current, Step::Stable);
    }
    // Until every member joined once, members that have not joined are still starting
    // (nodes that have not read the first list yet look like members of a move).
    let still_creating = current.epoch <= 1
        && observed
            .last_phase
            .is_none_or(|phase| phase == Phase::Creating);
    let moving = current.member_ids().any(|id| {
        report_of(&desired.name, observed, id)
            .is_some_and(|r| r.epoch < current.epoch || r.rebalance.active)
    });
    let step = if still_creating {
        Step::Starting {
            waiting_for: not_joined,
        }
    } else if moving {
        Step::Rebalancing {
            waiting_for: not_joined,
        }
    } else {
        Step::Degraded { not_joined }
    };
    hold(desired, observed, current, step)
}

/// A spec that cannot be acted on, for `reason`: nothing is published or applied, and the
/// status says why (phase Invalid, Degraded=True with the reason).
pub fn invalid(desired: &Desired, observed: &Observed, reason: String) -> Plan {
    match &observed.list {
        None => refuse(desired, reason),
        Some(current) => hold(desired, observed, current, Step::Invalid { reason }),
    }
}

/// The members of `current` that have not fully joined its epoch.
fn not_joined(desired: &Desired, observed: &Observed, current: &MemberList) -> Vec<String> {
    current
        .member_ids()
        .filter(|id| !has_joined(desired, observed, id, current.epoch))
        .map(str::to_owned)
        .collect()
}

/// A member has joined `epoch` when its node says so and Kubernetes agrees its pod is
/// Ready: only then does the Service route clients to it. (The node turns ready a
/// readiness-probe period before its pod does.)
fn has_joined(desired: &Desired, observed: &Observed, id: &str, epoch: u64) -> bool {
    let pod_ready = ordinal_of(&desired.name, id)
        .and_then(|ordinal| observed.pods.get(&ordinal))
        .is_some_and(|pod| pod.ready);
    pod_ready && report_of(&desired.name, observed, id).is_some_and(|r| r.joined(epoch))
}

/// The first list: every desired member at epoch 1, all pods at once. Nodes that start
/// together with nothing to sync do not wait for each other.
fn create(desired: &Desired, observed: &Observed) -> Plan {
    let list = MemberList {
        epoch: 1,
        partitions: desired.partitions,
        replication_factor: desired.replication_factor,
        members: (0..desired.replicas)
            .map(|i| Member::new(member_id(&desired.name, i)))
            .collect(),
        departing: Vec::new(),
    };
    publish(desired, observed, list, Step::Create)
}

fn publish(desired: &Desired, observed: &Observed, list: MemberList, step: Step) -> Plan {
    Plan {
        statefulset_replicas: statefulset_replicas(desired, &list),
        members: member_statuses(desired, observed, &list),
        list,
        publish: true,
        step,
    }
}

fn hold(desired: &Desired, observed: &Observed, current: &MemberList, step: Step) -> Plan {
    Plan {
        statefulset_replicas: statefulset_replicas(desired, current),
        members: member_statuses(desired, observed, current),
        list: current.clone(),
        publish: false,
        step,
    }
}

/// The desired size, but never below a pod that is a member or may still hold data.
fn statefulset_replicas(desired: &Desired, list: &MemberList) -> u32 {
    list.member_ids()
        .chain(list.departing_ids())
        .filter_map(|id| ordinal_of(&desired.name, id))
        .map(|ordinal| ordinal + 1)
        .fold(desired.replicas, u32::max)
}

pub(crate) fn report_of<'a>(
    name: &str,
    observed: &'a Observed,
    id: &str,
) -> Option<&'a ClusterReport> {
    let report = observed.reports.get(&ordinal_of(name, id)?)?;
    // A report from another node (an IP reused by another pod) is not this member's.
    (report.node.id == id).then_some(report)
}

fn reachable(desired: &Desired, observed: &Observed, id: &str) -> bool {
    report_of(&desired.name, observed, id).is_some()
}

fn discoverable(desired: &Desired, observed: &Observed, id: &str) -> bool {
    ordinal_of(&desired.name, id).is_some_and(|ordinal| observed.discoverable.contains(&ordinal))
}

fn by_ordinal(name: &str, ids: BTreeSet<String>) -> Vec<Member> {
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort_by_key(|id| (ordinal_of(name, id), id.clone()));
    ids.into_iter().map(Member::new).collect()
}

/// One line per member, departing member and pod that is neither yet.
fn member_statuses(desired: &Desired, observed: &Observed, list: &MemberList) -> Vec<MemberStatus> {
    let mut rows: Vec<(String, MemberRole)> = list
        .member_ids()
        .map(|id| (id.to_owned(), MemberRole::Member))
        .chain(
            list.departing_ids()
                .map(|id| (id.to_owned(), MemberRole::Departing)),
        )
        .collect();
    for ordinal in observed.pods.keys() {
        let id = member_id(&desired.name, *ordinal);
        if !rows.iter().any(|(known, _)| *known == id) {
            rows.push((id, MemberRole::Joining));
        }
    }
    rows.sort_by_key(|(id, _)| ordinal_of(&desired.name, id));
    rows.into_iter()
        .map(|(name, role)| {
            let report = report_of(&desired.name, observed, &name);
            let settled = match role {
                MemberRole::Member => has_joined(desired, observed, &name, list.epoch),
                MemberRole::Departing => report.is_some_and(|r| r.drained(list.epoch)),
                MemberRole::Joining => false,
            };
            MemberStatus {
                reachable: report.is_some(),
                settled,
                epoch: report.map(|r| r.epoch),
                owned_partitions: report.map_or(0, |r| partition_count(r.ownership.owned)),
                held_not_owned: report.map_or(0, |r| partition_count(r.ownership.held_not_owned)),
                name,
                role,
                // The status fills it in: it needs the incarnation recorded before.
                incarnation: None,
            }
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixtures;
#[cfg(test)]
mod tests;
