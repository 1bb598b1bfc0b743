//! The CacheCluster status, computed from the state machine's plan and the nodes' own
//! reports: phase, kstatus-style conditions, the members and the progress of the current
//! move. Pure, like the plan, so "status never lies" is unit-tested.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{CacheClusterStatus, MemberRole, Phase, RebalanceStatus};
use crate::scale::{Observed, Plan, Step, report_of};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REBALANCING: &str = "Rebalancing";
pub const DEGRADED: &str = "Degraded";
pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";

/// What the status depends on besides the plan.
#[derive(Debug, Clone)]
pub struct Context<'a> {
    pub name: &'a str,
    pub generation: Option<i64>,
    pub previous: Option<&'a CacheClusterStatus>,
    pub now: Timestamp,
    pub rebalance_timeout: Duration,
    pub selector: String,
    /// When the CacheCluster was created.
    pub created_at: Option<Timestamp>,
}

pub fn status(plan: &Plan, observed: &Observed, ctx: &Context<'_>) -> CacheClusterStatus {
    // Until every member joined once, members that have not joined are still starting.
    let still_creating =
        plan.list.epoch <= 1 && ctx.previous.is_none_or(|s| s.phase == Phase::Creating);
    // (Nodes that have not read the first list yet look like members of a move.)
    let creating = match &plan.step {
        Step::Degraded {
            not_joined: waiting,
        }
        | Step::Rebalancing {
            waiting_for: waiting,
        } if still_creating && !plan.publish => Some(Step::Starting {
            waiting_for: waiting.clone(),
        }),
        _ => None,
    };
    let plan = &Plan {
        step: creating.unwrap_or_else(|| plan.step.clone()),
        ..plan.clone()
    };
    let rebalance = rebalance(plan, observed, ctx);
    let past_deadline = |started: Timestamp| {
        let timeout =
            SignedDuration::try_from(ctx.rebalance_timeout).unwrap_or(SignedDuration::MAX);
        started
            .checked_add(timeout)
            .is_ok_and(|deadline| deadline < ctx.now)
    };
    // A move runs from its start; creating runs from the CacheCluster's creation.
    let overdue = match &plan.step {
        Step::Create | Step::Starting { .. } => ctx.created_at.is_some_and(past_deadline),
        _ => rebalance
            .as_ref()
            .is_some_and(|r| r.active && r.started_at.as_ref().is_some_and(|s| past_deadline(s.0))),
    };
    let conditions = conditions(plan, ctx, overdue);
    CacheClusterStatus {
        observed_generation: ctx.generation,
        phase: phase(&plan.step),
        conditions,
        replicas: count(
            plan.members
                .iter()
                .filter(|m| m.role == MemberRole::Member && m.settled),
        ),
        ready_replicas: count(observed.pods.values().filter(|p| p.ready)),
        epoch: plan.list.epoch,
        members: plan.members.clone(),
        rebalance,
        selector: ctx.selector.clone(),
    }
}

fn count<T>(items: impl Iterator<Item = T>) -> i32 {
    i32::try_from(items.count()).unwrap_or(i32::MAX)
}

pub fn phase(step: &Step) -> Phase {
    match step {
        Step::Create | Step::Starting { .. } => Phase::Creating,
        Step::WaitForPods { .. } | Step::Rebalancing { .. } | Step::HandingOff { .. } => {
            Phase::Rebalancing
        }
        Step::ScaleDownBlocked { .. } => Phase::ScaleDownBlocked,
        Step::Degraded { .. } => Phase::Degraded,
        Step::Stable => Phase::Available,
        Step::Invalid { .. } => Phase::Invalid,
    }
}

/// The current move (or the last one, once it completed). Creation is not a move.
fn rebalance(plan: &Plan, observed: &Observed, ctx: &Context<'_>) -> Option<RebalanceStatus> {
    let previous = ctx.previous.and_then(|s| s.rebalance.clone());
    if matches!(
        plan.step,
        Step::Create | Step::Starting { .. } | Step::Invalid { .. }
    ) {
        return previous;
    }
    let was_active = previous.as_ref().is_some_and(|r| r.active);
    let active = plan.step.is_change();
    if !active && !was_active {
        return previous;
    }
    let epoch = plan.list.epoch;
    // Every node reports its own part of the move to `epoch`: what it must pull and
    // what it pulled. Departing members pull nothing but are summed all the same.
    let involved = plan
        .list
        .member_ids()
        .chain(plan.list.departing_ids())
        .filter_map(|id| report_of(ctx.name, observed, id))
        .filter(|r| r.rebalance.progress.to_epoch == epoch);
    let (mut moved, mut total, mut bytes, mut records) = figures(involved);
    // Publishing the next step of a change: the nodes still report the step that just
    // finished, and will not once they move on, so take its figures now.
    if total == 0
        && plan.publish
        && let Some(finished) = &observed.list
    {
        let reports = finished
            .member_ids()
            .chain(finished.departing_ids())
            .filter_map(|id| report_of(ctx.name, observed, id))
            .filter(|r| r.rebalance.progress.to_epoch == finished.epoch);
        (moved, total, bytes, records) = figures(reports);
    }
    let continuing = previous.filter(|_| was_active);
    // A step of the same change that moves nothing (forgetting departed members) keeps
    // the figures of the step that moved the data.
    if total == 0
        && let Some(earlier) = &continuing
        && earlier.partitions_total > 0
    {
        (moved, total, bytes, records) = (
            earlier.partitions_moved,
            earlier.partitions_total,
            earlier.bytes_moved,
            earlier.records_moved,
        );
    }
    let started_at = continuing
        .as_ref()
        .and_then(|r| r.started_at.clone())
        .or(Some(Time(ctx.now)));
    let from_epoch = continuing
        .as_ref()
        .map_or_else(|| ctx.previous.map_or(0, |s| s.epoch), |r| r.from_epoch);
    let progress = if active {
        (moved * 100).checked_div(total).unwrap_or(0)
    } else {
        100
    };
    Some(RebalanceStatus {
        active,
        from_epoch,
        to_epoch: epoch,
        partitions_moved: moved,
        partitions_total: total,
        progress: format!("{progress}%"),
        bytes_moved: bytes,
        records_moved: records,
        started_at,
        completed_at: (!active).then_some(Time(ctx.now)),
    })
}

/// Partitions moved and to move, bytes and records, summed over node reports.
fn figures<'a>(
    reports: impl Iterator<Item = &'a crate::report::ClusterReport>,
) -> (u64, u64, u64, u64) {
    reports.fold((0, 0, 0, 0), |(moved, total, bytes, records), r| {
        let progress = &r.rebalance.progress;
        (
            moved + progress.partitions_done as u64,
            total + progress.partitions_total as u64,
            bytes + progress.bytes_moved,
            records + progress.records_moved,
        )
    })
}

fn conditions(plan: &Plan, ctx: &Context<'_>, overdue: bool) -> Vec<Condition> {
    let names = |ids: &[String]| ids.join(", ");
    let all_joined = plan
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Member)
        .all(|m| m.settled);
    let (available, available_reason, available_message) = if all_joined && plan.list.epoch > 0 {
        (
            true,
            "AllMembersJoined",
            format!(
                "all {} members hold the partitions they own",
                plan.list.members.len()
            ),
        )
    } else {
        (
            false,
            "MembersNotJoined",
            "some members do not hold every partition they own yet".to_owned(),
        )
    };
    let (progressing, progressing_reason, progressing_message) = match &plan.step {
        _ if overdue => (
            false,
            "ProgressDeadlineExceeded",
            format!(
                "the change did not finish within spec.rebalanceTimeout ({}s); see the Degraded condition and the members' status",
                ctx.rebalance_timeout.as_secs()
            ),
        ),
        Step::Create => (
            true,
            "Creating",
            "publishing the first member list".to_owned(),
        ),
        Step::Starting { waiting_for } => (
            true,
            "Creating",
            format!("waiting for {} to start and join", names(waiting_for)),
        ),
        Step::WaitForPods { starting } => (
            true,
            "WaitingForPods",
            format!(
                "waiting for {} to start before adding them",
                names(starting)
            ),
        ),
        Step::Rebalancing { waiting_for } => (
            true,
            "PartitionsMoving",
            format!(
                "epoch {}: waiting for {} to join",
                plan.list.epoch,
                names(waiting_for)
            ),
        ),
        Step::HandingOff { waiting_for } => (
            true,
            "HandingOff",
            format!(
                "epoch {}: waiting for {} to hand off",
                plan.list.epoch,
                names(waiting_for)
            ),
        ),
        Step::ScaleDownBlocked { unreachable } => (
            true,
            "ScaleDownBlocked",
            format!("waiting for {} to answer", names(unreachable)),
        ),
        Step::Degraded { .. } | Step::Stable => {
            (false, "Idle", "no membership change in progress".to_owned())
        }
        Step::Invalid { reason } => (false, "InvalidSpec", reason.clone()),
    };
    let rebalancing = matches!(
        plan.step,
        Step::Rebalancing { .. } | Step::HandingOff { .. } | Step::ScaleDownBlocked { .. }
    );
    let (degraded, degraded_reason, degraded_message) = match &plan.step {
        Step::Degraded { not_joined } => (
            true,
            "MembersNotJoined",
            format!(
                "{} not ready or not holding their partitions",
                names(not_joined)
            ),
        ),
        Step::ScaleDownBlocked { unreachable } => (
            true,
            "MemberUnreachable",
            format!("{} do not answer GET /v1/cluster", names(unreachable)),
        ),
        Step::Invalid { reason } => (true, "InvalidSpec", reason.clone()),
        _ => (
            false,
            "AsExpected",
            "every reachable member reports as expected".to_owned(),
        ),
    };
    let (blocked, blocked_reason, blocked_message) = match &plan.step {
        Step::ScaleDownBlocked { unreachable } => (
            true,
            "MemberUnreachable",
            format!(
                "{} may still hold data and do not answer; their pods stay until they hand off (no data is dropped)",
                names(unreachable)
            ),
        ),
        _ => (false, "NotBlocked", "no scale-down is blocked".to_owned()),
    };
    vec![
        condition(
            ctx,
            AVAILABLE,
            available,
            available_reason,
            available_message,
        ),
        condition(
            ctx,
            PROGRESSING,
            progressing,
            progressing_reason,
            progressing_message,
        ),
        condition(
            ctx,
            REBALANCING,
            rebalancing,
            if rebalancing {
                "PartitionsMoving"
            } else {
                "NoMove"
            },
            if rebalancing {
                format!("partitions are moving to epoch {}", plan.list.epoch)
            } else {
                "no partitions are moving".to_owned()
            },
        ),
        condition(ctx, DEGRADED, degraded, degraded_reason, degraded_message),
        condition(
            ctx,
            SCALE_DOWN_BLOCKED,
            blocked,
            blocked_reason,
            blocked_message,
        ),
    ]
}

/// A condition whose lastTransitionTime moves only when its status changes.
fn condition(
    ctx: &Context<'_>,
    type_: &str,
    value: bool,
    reason: &str,
    message: String,
) -> Condition {
    let status = if value { "True" } else { "False" };
    let since = ctx
        .previous
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map_or_else(|| Time(ctx.now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: ctx.generation,
        last_transition_time: since,
    }
}

#[cfg(test)]
#[path = "status_tests.rs"]
mod tests;
