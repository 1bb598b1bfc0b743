//! The CacheCluster status, computed from the state machine's plan and the nodes' own
//! reports: phase, kstatus-style conditions, the members and the progress of the current
//! move. Pure, like the plan, so "status never lies" is unit-tested. The step comes from
//! the plan as it is: the status reports the decision, it never makes one.
//!
//! - `conditions`: one function per condition.
//! - `data_loss`: members that restarted with no live copy of what they owned.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{CacheClusterStatus, MemberRole, MemberStatus, Phase, RebalanceStatus};
use crate::members::MemberList;
use crate::scale::{Observed, Plan, Step, report_of};

pub mod conditions;
pub mod data_loss;

pub use conditions::{
    AVAILABLE, DATA_LOSS, DEGRADED, PROGRESSING, REBALANCING, SCALE_DOWN_BLOCKED, SECURED,
};

/// TLS and auth as the pods run them, and what is wrong with their Secrets.
#[derive(Debug, Clone, Copy)]
pub struct SecurityView<'a> {
    pub security: &'a crate::resources::security::Security,
    /// One line per problem, naming Secrets and keys, never content.
    pub problems: &'a [String],
    /// How the cert-manager Certificates stand (empty without `issuerRef`).
    pub certificates: CertificatesView<'a>,
}

/// The cert-manager Certificates of the peer port, for the Secured condition.
#[derive(Debug, Clone, Copy, Default)]
pub struct CertificatesView<'a> {
    /// The Certificate API is missing or refused: why, and what to do.
    pub unavailable: Option<&'a str>,
    /// One line per Certificate not issued yet: its name and why.
    pub pending: &'a [String],
}

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
    /// TLS and auth; None leaves them out of the status (and the Secured condition).
    pub security: Option<SecurityView<'a>>,
}

pub fn status(plan: &Plan, observed: &Observed, ctx: &Context<'_>) -> CacheClusterStatus {
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
    let losses = data_loss::losses(ctx.name, observed, ctx.previous);
    let last_data_loss = data_loss::last(&losses, ctx.previous, ctx.now);
    let members = plan
        .members
        .iter()
        .map(|m| MemberStatus {
            incarnation: data_loss::incarnation(ctx.name, observed, ctx.previous, &m.name),
            ..m.clone()
        })
        .collect();
    CacheClusterStatus {
        observed_generation: ctx.generation,
        phase: phase(&plan.step),
        conditions: conditions::conditions(plan, ctx, overdue, last_data_loss.as_ref()),
        replicas: count(
            plan.members
                .iter()
                .filter(|m| m.role == MemberRole::Member && m.settled),
        ),
        ready_replicas: count(observed.pods.values().filter(|p| p.ready)),
        epoch: plan.list.epoch,
        members,
        rebalance,
        selector: ctx.selector.clone(),
        data_loss_incidents: ctx.previous.map_or(0, |s| s.data_loss_incidents)
            + losses.len() as u64,
        last_data_loss,
        auth: ctx.security.map(|s| s.security.auth_status()),
        tls: ctx.security.map(|s| s.security.tls_status()),
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
    let continuing = previous.filter(|_| was_active);
    let figures = move_figures(plan, observed, ctx, continuing.as_ref());
    let started_at = continuing
        .as_ref()
        .and_then(|r| r.started_at.clone())
        .or(Some(Time(ctx.now)));
    let from_epoch = continuing
        .as_ref()
        .map_or_else(|| ctx.previous.map_or(0, |s| s.epoch), |r| r.from_epoch);
    let progress = if active {
        (figures.moved * 100)
            .checked_div(figures.total)
            .unwrap_or(0)
    } else {
        100
    };
    Some(RebalanceStatus {
        active,
        from_epoch,
        to_epoch: plan.list.epoch,
        partitions_moved: figures.moved,
        partitions_total: figures.total,
        progress: format!("{progress}%"),
        bytes_moved: figures.bytes,
        records_moved: figures.records,
        started_at,
        completed_at: (!active).then_some(Time(ctx.now)),
    })
}

/// Partitions moved and to move, bytes and records of one move.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Figures {
    moved: u64,
    total: u64,
    bytes: u64,
    records: u64,
}

/// The figures of the move to the plan's epoch, or of the step of the same change that
/// moved the data when this one moves nothing. `continuing` is the move in progress.
fn move_figures(
    plan: &Plan,
    observed: &Observed,
    ctx: &Context<'_>,
    continuing: Option<&RebalanceStatus>,
) -> Figures {
    // Every node reports its own part of the move to `epoch`: what it must pull and
    // what it pulled. Departing members pull nothing but are summed all the same.
    let mut figures = reported_figures(ctx.name, observed, &plan.list);
    // Publishing the next step of a change: the nodes still report the step that just
    // finished, and will not once they move on, so take its figures now.
    if figures.total == 0
        && plan.publish
        && let Some(finished) = &observed.list
    {
        figures = reported_figures(ctx.name, observed, finished);
    }
    // A step of the same change that moves nothing (forgetting departed members) keeps
    // the figures of the step that moved the data.
    if figures.total == 0
        && let Some(earlier) = continuing
        && earlier.partitions_total > 0
    {
        figures = Figures {
            moved: earlier.partitions_moved,
            total: earlier.partitions_total,
            bytes: earlier.bytes_moved,
            records: earlier.records_moved,
        };
    }
    figures
}

/// The figures of the move to `list`'s epoch, summed over the reports of its members
/// and departing members.
fn reported_figures(name: &str, observed: &Observed, list: &MemberList) -> Figures {
    list.member_ids()
        .chain(list.departing_ids())
        .filter_map(|id| report_of(name, observed, id))
        .filter(|r| r.rebalance.progress.to_epoch == list.epoch)
        .fold(Figures::default(), |sum, r| Figures {
            moved: sum.moved + r.rebalance.progress.partitions_done as u64,
            total: sum.total + r.rebalance.progress.partitions_total as u64,
            bytes: sum.bytes + r.rebalance.progress.bytes_moved,
            records: sum.records + r.rebalance.progress.records_moved,
        })
}

#[cfg(test)]
mod tests;
