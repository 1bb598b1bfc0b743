//! The CacheCluster's kstatus-style conditions, one pure function each. What a condition
//! says follows from the plan alone (and, for Progressing, from whether the change
//! outlasted its deadline), so each is tested on its own; `conditions` then stamps them
//! with the generation and a transition time that moves only when a condition flips.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use super::{Context, SecurityView};
use crate::crd::{DataLossStatus, MemberRole, TlsSource};
use crate::scale::{Plan, Step};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const REBALANCING: &str = "Rebalancing";
pub const DEGRADED: &str = "Degraded";
pub const SCALE_DOWN_BLOCKED: &str = "ScaleDownBlocked";
pub const DATA_LOSS: &str = "DataLoss";
/// Peer mutual TLS and client auth are on and their Secrets are good.
pub const SECURED: &str = "Secured";

/// What one condition says, before it is stamped with the generation and a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Verdict {
    fn yes(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: true,
            reason,
            message: message.into(),
        }
    }

    fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: false,
            ..Self::yes(reason, message)
        }
    }
}

/// Every condition, in the order the status lists them. `overdue`: the change in
/// progress outlasted spec.rebalanceTimeout; `last_loss`: the last restart that lost data.
pub fn conditions(
    plan: &Plan,
    ctx: &Context<'_>,
    overdue: bool,
    last_loss: Option<&DataLossStatus>,
) -> Vec<Condition> {
    [
        (AVAILABLE, available(plan)),
        (
            PROGRESSING,
            progressing(plan, overdue.then_some(ctx.rebalance_timeout)),
        ),
        (REBALANCING, rebalancing(plan)),
        (DEGRADED, degraded(&plan.step)),
        (SCALE_DOWN_BLOCKED, scale_down_blocked(&plan.step)),
        (DATA_LOSS, data_loss(last_loss, ctx.now)),
    ]
    .into_iter()
    .chain(ctx.security.map(|view| (SECURED, secured(view))))
    .map(|(type_, verdict)| condition(ctx, type_, verdict))
    .collect()
}

/// Secured: members talk over mutual TLS, clients need a token, and every Secret the
/// pods mount is there and in the nodes' layout (with cert-manager: every Certificate
/// issued, or `CertificatePending` naming those that are not; `CertManagerUnavailable`
/// when its API is missing or refused). False says which of these is missing,
/// so an open cluster is visible in `kubectl get cc -o wide` (with the Auth column) and
/// in `kubectl describe`.
pub fn secured(view: SecurityView<'_>) -> Verdict {
    let security = view.security;
    if let Some(unavailable) = view.certificates.unavailable {
        return Verdict::no("CertManagerUnavailable", unavailable);
    }
    if !view.problems.is_empty() {
        return Verdict::no("SecretProblem", view.problems.join("; "));
    }
    if !view.certificates.pending.is_empty() {
        return Verdict::no(
            "CertificatePending",
            format!(
                "waiting for cert-manager; a pod starts only once its certificate is issued: {}",
                view.certificates.pending.join("; ")
            ),
        );
    }
    if security.auth.is_none() {
        return Verdict::no(
            "AuthDisabled",
            "no token is needed: anyone who reaches the client ports may read, write and flush; set spec.auth.enabled: true",
        );
    }
    let Some(peer) = &security.peer else {
        return Verdict::no(
            "PeerTlsDisabled",
            "members talk in plaintext: anyone who reaches the peer port may read or change data; set spec.tls.peer.enabled: true (docs/operations.md)",
        );
    };
    let source = |source: TlsSource| match source {
        TlsSource::Operator => "from the operator's CA",
        TlsSource::CertManager => "from cert-manager",
        TlsSource::Secret => "from the user's Secret",
        TlsSource::Disabled => "off",
    };
    let client = security
        .client
        .as_ref()
        .map_or("off", |mount| source(mount.source));
    Verdict::yes(
        "Secured",
        format!(
            "mutual TLS between members ({}), client TLS {client}, token auth on",
            source(peer.source)
        ),
    )
}

/// Available: every member holds the partitions it owns. Departing members do not
/// count; a cluster without a list is not available.
pub fn available(plan: &Plan) -> Verdict {
    let all_joined = plan
        .members
        .iter()
        .filter(|m| m.role == MemberRole::Member)
        .all(|m| m.settled);
    if all_joined && plan.list.epoch > 0 {
        let message = format!(
            "all {} members hold the partitions they own",
            plan.list.members.len()
        );
        Verdict::yes("AllMembersJoined", message)
    } else {
        Verdict::no(
            "MembersNotJoined",
            "some members do not hold every partition they own yet",
        )
    }
}

/// Progressing: a membership change is under way, and who it waits for. `overdue` is
/// the deadline (spec.rebalanceTimeout) the change outlasted, if it did: then it is
/// False whatever the step, while the change itself goes on.
pub fn progressing(plan: &Plan, overdue: Option<Duration>) -> Verdict {
    if let Some(timeout) = overdue {
        let message = format!(
            "the change did not finish within spec.rebalanceTimeout ({}s); see the Degraded condition and the members' status",
            timeout.as_secs()
        );
        return Verdict::no("ProgressDeadlineExceeded", message);
    }
    let epoch = plan.list.epoch;
    match &plan.step {
        Step::Create => Verdict::yes("Creating", "publishing the first member list"),
        Step::Starting { waiting_for } => Verdict::yes(
            "Creating",
            format!("waiting for {} to start and join", names(waiting_for)),
        ),
        Step::WaitForPods { starting } => Verdict::yes(
            "WaitingForPods",
            format!(
                "waiting for {} to start before adding them",
                names(starting)
            ),
        ),
        Step::Rebalancing { waiting_for } => Verdict::yes(
            "PartitionsMoving",
            format!("epoch {epoch}: waiting for {} to join", names(waiting_for)),
        ),
        Step::HandingOff { waiting_for } => Verdict::yes(
            "HandingOff",
            format!(
                "epoch {epoch}: waiting for {} to hand off",
                names(waiting_for)
            ),
        ),
        Step::ScaleDownBlocked { unreachable } => Verdict::yes(
            "ScaleDownBlocked",
            format!("waiting for {} to answer", names(unreachable)),
        ),
        Step::Degraded { .. } | Step::Stable => {
            Verdict::no("Idle", "no membership change in progress")
        }
        Step::Invalid { reason } => Verdict::no("InvalidSpec", reason.clone()),
    }
}

/// Rebalancing: partitions are moving between members (not while creating or waiting
/// for new pods, when nothing moves yet).
pub fn rebalancing(plan: &Plan) -> Verdict {
    match plan.step {
        Step::Rebalancing { .. } | Step::HandingOff { .. } | Step::ScaleDownBlocked { .. } => {
            Verdict::yes(
                "PartitionsMoving",
                format!("partitions are moving to epoch {}", plan.list.epoch),
            )
        }
        _ => Verdict::no("NoMove", "no partitions are moving"),
    }
}

/// Degraded: with no change under way, members do not hold their partitions; or nodes
/// that may hold data do not answer; or the spec cannot be acted on. A cluster that is
/// still starting is not degraded.
pub fn degraded(step: &Step) -> Verdict {
    match step {
        Step::Degraded { not_joined } => Verdict::yes(
            "MembersNotJoined",
            format!(
                "{} not ready or not holding their partitions",
                names(not_joined)
            ),
        ),
        Step::ScaleDownBlocked { unreachable } => Verdict::yes(
            "MemberUnreachable",
            format!("{} do not answer GET /v1/cluster", names(unreachable)),
        ),
        Step::Invalid { reason } => Verdict::yes("InvalidSpec", reason.clone()),
        _ => Verdict::no("AsExpected", "every reachable member reports as expected"),
    }
}

/// ScaleDownBlocked: nodes that may still hold data do not answer, so their pods stay.
pub fn scale_down_blocked(step: &Step) -> Verdict {
    match step {
        Step::ScaleDownBlocked { unreachable } => Verdict::yes(
            "MemberUnreachable",
            format!(
                "{} may still hold data and do not answer; their pods stay until they hand off (no data is dropped)",
                names(unreachable)
            ),
        ),
        _ => Verdict::no("NotBlocked", "no scale-down is blocked"),
    }
}

/// DataLoss: a member restarted with no live copy of partitions it owns, within the
/// last hour ([`super::data_loss::RECENT`]). The record stays in `status.lastDataLoss`.
pub fn data_loss(last: Option<&DataLossStatus>, now: Timestamp) -> Verdict {
    match last {
        Some(loss) if super::data_loss::is_recent(loss, now) => {
            let when = loss
                .restarted_at
                .as_ref()
                .map(|t| format!(" at {}", t.0))
                .unwrap_or_default();
            Verdict::yes(
                "PartitionsLost",
                format!(
                    "{} restarted{when} with no live copy of {} partitions it owns; the keys they held are lost (status.lastDataLoss lists them)",
                    loss.member, loss.partition_count
                ),
            )
        }
        Some(loss) => Verdict::no(
            "NoRecentLoss",
            format!(
                "no data lost in the last hour; the last loss was {} at {}",
                loss.member, loss.detected_at.0
            ),
        ),
        None => Verdict::no(
            "NoLoss",
            "no member restarted without a live copy of its data",
        ),
    }
}

fn names(ids: &[String]) -> String {
    ids.join(", ")
}

/// A condition whose lastTransitionTime moves only when its status changes.
fn condition(ctx: &Context<'_>, type_: &str, verdict: Verdict) -> Condition {
    let status = if verdict.status { "True" } else { "False" };
    let since = ctx
        .previous
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .filter(|c| c.status == status)
        .map_or_else(|| Time(ctx.now), |c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: verdict.reason.to_owned(),
        message: verdict.message,
        observed_generation: ctx.generation,
        last_transition_time: since,
    }
}

#[cfg(test)]
mod tests;
