//! Events: one Kubernetes event per transition (a new member list, a phase change), so
//! `kubectl describe` tells the story of a change. What each event says is a pure
//! function of the plan and the statuses before and after; only `emit` talks to the API.

use kube::Resource;
use kube::runtime::events::{Event, EventType};

use super::Context;
use crate::crd::{CacheCluster, CacheClusterStatus, Phase};
use crate::members::MemberList;
use crate::scale::{Plan, Step};
use crate::status;
use crate::status::data_loss::Loss;

/// Records the events of this reconcile: the list it published, the phase it entered,
/// and every member restart that lost data.
pub(super) async fn publish(
    cc: &CacheCluster,
    ctx: &Context,
    plan: &Plan,
    previous: Option<&CacheClusterStatus>,
    status: &CacheClusterStatus,
    losses: &[Loss],
) {
    for loss in losses {
        // One series per restart: the action names the incarnation.
        let action = format!("Restart{}", loss.incarnation);
        emit(
            ctx,
            cc,
            EventType::Warning,
            "DataLoss",
            &action,
            loss.describe(),
        )
        .await;
    }
    if plan.publish {
        // The recorder folds events with the same reason and action into one series that
        // keeps the first note, so the action names the epoch.
        let action = format!("PublishEpoch{}", plan.list.epoch);
        let note = members_published(&plan.list);
        emit(
            ctx,
            cc,
            EventType::Normal,
            "MembersPublished",
            &action,
            note,
        )
        .await;
    }
    if let Some((type_, note)) = phase_changed(&plan.step, previous, status) {
        let action = format!("Epoch{}", status.epoch);
        emit(ctx, cc, type_, status.phase.as_str(), &action, note).await;
    }
    if let Some((type_, reason, note)) = security_changed(previous, status) {
        emit(ctx, cc, type_, &reason, "Secure", note).await;
    }
}

/// A Warning that the API server refused the operator a request for this cluster:
/// `action` is the failed step, `message` the server's words, which name the account, the
/// verb, the resource and the namespace, so the note says which grant is missing.
pub(super) async fn forbidden(cc: &CacheCluster, ctx: &Context, action: &str, message: &str) {
    emit(
        ctx,
        cc,
        EventType::Warning,
        "Forbidden",
        "Reconcile",
        forbidden_note(action, message),
    )
    .await;
}

fn forbidden_note(action: &str, message: &str) -> String {
    format!(
        "{action}: the operator's RBAC does not allow it ({message}). Check the operator's \
         Role in this namespace (chart: watchNamespaces) and the chart README's RBAC table"
    )
}

/// The event of a change of the Secured condition (an open cluster, a bad Secret, or
/// all good again): its type, reason and note. The note names Secrets, never content.
fn security_changed(
    previous: Option<&CacheClusterStatus>,
    status: &CacheClusterStatus,
) -> Option<(EventType, String, String)> {
    let find = |s: &CacheClusterStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == status::SECURED)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let now = find(status)?;
    if previous.and_then(find).as_ref() == Some(&now) {
        return None;
    }
    let (state, reason, message) = now;
    let type_ = if state == "True" {
        EventType::Normal
    } else {
        EventType::Warning
    };
    Some((type_, reason, message))
}

/// The note of a newly published list: its epoch, members and departing members.
fn members_published(list: &MemberList) -> String {
    let departing: Vec<&str> = list.departing_ids().collect();
    format!(
        "epoch {}: members {}{}",
        list.epoch,
        list.member_ids().collect::<Vec<_>>().join(", "),
        if departing.is_empty() {
            String::new()
        } else {
            format!("; handing off: {}", departing.join(", "))
        }
    )
}

/// The event of entering a new phase, if the phase changed: its type and note.
fn phase_changed(
    step: &Step,
    previous: Option<&CacheClusterStatus>,
    status: &CacheClusterStatus,
) -> Option<(EventType, String)> {
    if previous.map(|s| s.phase) == Some(status.phase) {
        return None;
    }
    Some(match (step, status.phase) {
        (_, Phase::Available) => (
            EventType::Normal,
            format!(
                "every member holds its partitions at epoch {}{}",
                status.epoch,
                move_took(previous, status)
            ),
        ),
        (Step::ScaleDownBlocked { unreachable }, _) => (
            EventType::Warning,
            format!(
                "{} do not answer and may hold data; keeping their pods",
                unreachable.join(", ")
            ),
        ),
        (Step::Invalid { reason }, _) => (EventType::Warning, reason.clone()),
        (Step::Degraded { not_joined }, _) => (
            EventType::Warning,
            format!(
                "{} not ready or not holding their partitions",
                not_joined.join(", ")
            ),
        ),
        _ => (
            EventType::Normal,
            format!("phase {}", status.phase.as_str()),
        ),
    })
}

/// " (the move took 12.3s)" when a move was in progress and just completed, else "".
fn move_took(previous: Option<&CacheClusterStatus>, status: &CacheClusterStatus) -> String {
    let moved = previous
        .and_then(|s| s.rebalance.as_ref())
        .is_some_and(|r| r.active);
    status
        .rebalance
        .as_ref()
        .and_then(|r| {
            Some(
                r.completed_at
                    .as_ref()?
                    .0
                    .duration_since(r.started_at.as_ref()?.0),
            )
        })
        .filter(|_| moved)
        .map(|d| format!(" (the move took {:.1}s)", d.as_secs_f64()))
        .unwrap_or_default()
}

/// Records one event on the CacheCluster; a failure is logged, never fatal.
pub(super) async fn emit(
    ctx: &Context,
    cc: &CacheCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cc.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not record an event");
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

    use super::*;

    fn with_secured(state: &str, reason: &str, message: &str) -> CacheClusterStatus {
        CacheClusterStatus {
            conditions: vec![Condition {
                type_: status::SECURED.to_owned(),
                status: state.to_owned(),
                reason: reason.to_owned(),
                message: message.to_owned(),
                observed_generation: None,
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            ..CacheClusterStatus::default()
        }
    }

    #[test]
    fn an_open_cluster_or_a_bad_secret_is_one_warning_until_it_changes() {
        let open = with_secured("False", "AuthDisabled", "no token is needed");
        let (type_, reason, _) = security_changed(None, &open).expect("first time");
        assert_eq!(
            (type_, reason.as_str()),
            (EventType::Warning, "AuthDisabled")
        );
        assert_eq!(security_changed(Some(&open), &open), None, "once");
        let bad = with_secured("False", "SecretProblem", "Secret x has no ca.crt");
        let (_, _, note) = security_changed(Some(&open), &bad).expect("a new problem");
        assert_eq!(note, "Secret x has no ca.crt");
        let good = with_secured("True", "Secured", "mutual TLS");
        let (type_, _, _) = security_changed(Some(&bad), &good).expect("fixed");
        assert_eq!(type_, EventType::Normal);
        assert_eq!(security_changed(None, &CacheClusterStatus::default()), None);
    }
    use crate::crd::RebalanceStatus;
    use crate::scale::fixtures::{ids, list};

    fn status(phase: Phase, epoch: u64) -> CacheClusterStatus {
        CacheClusterStatus {
            phase,
            epoch,
            ..CacheClusterStatus::default()
        }
    }

    #[test]
    fn a_published_list_names_its_members_and_who_hands_off() {
        assert_eq!(
            members_published(&list(3, &[0, 1], &[])),
            "epoch 3: members demo-0, demo-1"
        );
        assert_eq!(
            members_published(&list(4, &[0], &[1, 2])),
            "epoch 4: members demo-0; handing off: demo-1, demo-2"
        );
    }

    #[test]
    fn only_a_new_phase_is_an_event() {
        let creating = status(Phase::Creating, 1);
        assert_eq!(
            phase_changed(&Step::Create, Some(&creating), &creating),
            None
        );
        assert_eq!(
            phase_changed(&Step::Create, None, &creating),
            Some((EventType::Normal, "phase Creating".to_owned()))
        );
    }

    #[test]
    fn trouble_is_a_warning_that_says_who() {
        let previous = status(Phase::Available, 5);
        let blocked = Step::ScaleDownBlocked {
            unreachable: ids(&[2, 3]),
        };
        let (type_, note) = phase_changed(
            &blocked,
            Some(&previous),
            &status(Phase::ScaleDownBlocked, 6),
        )
        .unwrap();
        assert_eq!(type_, EventType::Warning);
        assert_eq!(
            note,
            "demo-2, demo-3 do not answer and may hold data; keeping their pods"
        );
        let degraded = Step::Degraded {
            not_joined: ids(&[1]),
        };
        let (type_, note) =
            phase_changed(&degraded, Some(&previous), &status(Phase::Degraded, 5)).unwrap();
        assert_eq!(type_, EventType::Warning);
        assert_eq!(note, "demo-1 not ready or not holding their partitions");
    }

    #[test]
    fn becoming_available_after_a_move_says_how_long_it_took() {
        let t0: k8s_openapi::jiff::Timestamp = "2026-11-21T10:00:00Z".parse().unwrap();
        let started = Time(t0);
        let previous = CacheClusterStatus {
            rebalance: Some(RebalanceStatus {
                active: true,
                started_at: Some(started.clone()),
                ..RebalanceStatus::default()
            }),
            ..status(Phase::Rebalancing, 6)
        };
        let done = CacheClusterStatus {
            rebalance: Some(RebalanceStatus {
                active: false,
                started_at: Some(started),
                completed_at: Some(Time(
                    t0 + k8s_openapi::jiff::SignedDuration::from_millis(12_340),
                )),
                ..RebalanceStatus::default()
            }),
            ..status(Phase::Available, 6)
        };
        assert_eq!(
            phase_changed(&Step::Stable, Some(&previous), &done),
            Some((
                EventType::Normal,
                "every member holds its partitions at epoch 6 (the move took 12.3s)".to_owned()
            ))
        );
        // Without a move in progress before, there is nothing to time.
        let (_, note) = phase_changed(&Step::Stable, None, &done).unwrap();
        assert_eq!(note, "every member holds its partitions at epoch 6");
    }

    #[test]
    fn a_refusal_names_the_step_and_quotes_the_missing_permission() {
        let message = "statefulsets.apps \"demo\" is forbidden: User \"system:serviceaccount:kache-system:kache-operator\" cannot patch resource \"statefulsets\" in API group \"apps\" in the namespace \"shop\"";
        let note = forbidden_note("apply the StatefulSet", message);
        assert!(note.starts_with("apply the StatefulSet: "), "{note}");
        assert!(note.contains(message), "{note}");
        assert!(note.contains("watchNamespaces"), "{note}");
    }
}
