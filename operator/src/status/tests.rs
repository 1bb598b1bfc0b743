//! Status is computed from node reports: the phase, conditions and progress say what the
//! nodes say, and the timestamps move only on real transitions.

use super::*;
use crate::scale::fixtures::{desired, drained, holding, joined, list, moving, observed};
use crate::scale::plan;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::jiff::ToSpan;

fn ctx<'a>(previous: Option<&'a CacheClusterStatus>, now: Timestamp) -> Context<'a> {
    Context {
        name: "demo",
        generation: Some(7),
        previous,
        now,
        rebalance_timeout: Duration::from_secs(600),
        selector: "app=kache".to_owned(),
        created_at: Some(now - 1.minutes()),
        security: None,
    }
}

fn t0() -> Timestamp {
    "2026-11-21T10:00:00Z".parse().unwrap()
}

fn condition<'a>(status: &'a CacheClusterStatus, type_: &str) -> &'a Condition {
    status.conditions.iter().find(|c| c.type_ == type_).unwrap()
}

#[test]
fn a_joined_cluster_is_available() {
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), joined(1, 4), joined(2, 4)],
    );
    let status = status(&plan(&desired(3, 1), &obs), &obs, &ctx(None, t0()));
    assert_eq!(status.phase, Phase::Available);
    assert_eq!(status.replicas, 3);
    assert_eq!(status.ready_replicas, 3);
    assert_eq!(status.observed_generation, Some(7));
    assert_eq!(condition(&status, AVAILABLE).status, "True");
    assert_eq!(condition(&status, PROGRESSING).status, "False");
    assert_eq!(condition(&status, DEGRADED).status, "False");
    assert!(status.rebalance.is_none(), "no move has happened");
}

#[test]
fn progress_is_summed_from_the_nodes_and_completion_is_recorded() {
    let d = desired(4, 1);
    let mut a = moving(3, 5);
    a.rebalance.progress.partitions_total = 60;
    a.rebalance.progress.partitions_done = 15;
    a.rebalance.progress.bytes_moved = 1_000;
    let mut b = joined(0, 5);
    b.rebalance.progress.partitions_total = 0;
    let obs = observed(
        Some(list(5, &[0, 1, 2, 3], &[])),
        vec![b, joined(1, 5), joined(2, 5), a],
    );
    let previous = CacheClusterStatus {
        epoch: 4,
        ..CacheClusterStatus::default()
    };
    let during = status(&plan(&d, &obs), &obs, &ctx(Some(&previous), t0()));
    assert_eq!(during.phase, Phase::Rebalancing);
    assert_eq!(during.replicas, 3, "demo-3 has not joined yet");
    assert_eq!(condition(&during, AVAILABLE).status, "False");
    assert_eq!(condition(&during, REBALANCING).status, "True");
    let rebalance = during.rebalance.clone().unwrap();
    assert!(rebalance.active);
    assert_eq!(
        (rebalance.partitions_moved, rebalance.partitions_total),
        (15, 60)
    );
    assert_eq!(rebalance.progress, "25%");
    assert_eq!(rebalance.bytes_moved, 1_000);
    assert_eq!((rebalance.from_epoch, rebalance.to_epoch), (4, 5));
    assert_eq!(rebalance.started_at, Some(Time(t0())));

    let later = t0() + 30.seconds();
    let mut done = joined(3, 5);
    done.rebalance.progress.partitions_total = 60;
    done.rebalance.progress.partitions_done = 60;
    let obs = observed(
        Some(list(5, &[0, 1, 2, 3], &[])),
        vec![joined(0, 5), joined(1, 5), joined(2, 5), done],
    );
    let after = status(&plan(&d, &obs), &obs, &ctx(Some(&during), later));
    assert_eq!(after.phase, Phase::Available);
    let rebalance = after.rebalance.clone().unwrap();
    assert!(!rebalance.active);
    assert_eq!(rebalance.progress, "100%");
    assert_eq!(rebalance.started_at, Some(Time(t0())), "the start is kept");
    assert_eq!(rebalance.completed_at, Some(Time(later)));
    let since = |s: &CacheClusterStatus| condition(s, AVAILABLE).last_transition_time.clone();
    assert_eq!(since(&after), Time(later), "Available turned True now");
}

#[test]
fn a_blocked_scale_down_says_who_and_is_not_available_as_done() {
    let obs = observed(
        Some(list(6, &[0, 1], &[2, 3])),
        vec![joined(0, 6), joined(1, 6), drained(2, 6)],
    );
    let status = status(&plan(&desired(2, 1), &obs), &obs, &ctx(None, t0()));
    assert_eq!(status.phase, Phase::ScaleDownBlocked);
    let blocked = condition(&status, SCALE_DOWN_BLOCKED);
    assert_eq!(blocked.status, "True");
    assert_eq!(blocked.reason, "MemberUnreachable");
    assert!(blocked.message.contains("demo-3"), "{}", blocked.message);
    assert_eq!(condition(&status, DEGRADED).status, "True");
    // Both remaining members did join: Available is about owners holding their data.
    assert_eq!(condition(&status, AVAILABLE).status, "True");
    assert_eq!(status.replicas, 2);
}

#[test]
fn a_move_past_its_deadline_stops_progressing_but_keeps_going() {
    let obs = observed(
        Some(list(6, &[0, 1], &[2])),
        vec![joined(0, 6), joined(1, 6), holding(2, 6)],
    );
    let p = plan(&desired(2, 1), &obs);
    let first = status(&p, &obs, &ctx(None, t0()));
    assert_eq!(condition(&first, PROGRESSING).status, "True");
    let late = status(&p, &obs, &ctx(Some(&first), t0() + 11.minutes()));
    let progressing = condition(&late, PROGRESSING);
    assert_eq!(progressing.status, "False");
    assert_eq!(progressing.reason, "ProgressDeadlineExceeded");
    assert_eq!(
        late.phase,
        Phase::Rebalancing,
        "the hand-off is still waited for"
    );
}

#[test]
fn transition_times_move_only_when_the_status_flips() {
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), joined(1, 4), joined(2, 4)],
    );
    let p = plan(&desired(3, 1), &obs);
    let first = status(&p, &obs, &ctx(None, t0()));
    let second = status(&p, &obs, &ctx(Some(&first), t0() + 5.minutes()));
    assert_eq!(
        condition(&second, AVAILABLE).last_transition_time,
        Time(t0())
    );
}

#[test]
fn a_new_cluster_is_creating_until_every_member_joined_once() {
    // demo-1 has not read the first list yet: it reports epoch 0.
    let mut unaware = joined(1, 0);
    unaware.node.ready = false;
    let before_list = observed(Some(list(1, &[0, 1, 2], &[])), vec![joined(0, 1), unaware]);
    let p = plan(&desired(3, 1), &before_list);
    assert!(matches!(p.step, Step::Starting { .. }), "{:?}", p.step);
    let first = status(&p, &before_list, &ctx(None, t0()));
    assert_eq!(first.phase, Phase::Creating);
    assert!(first.rebalance.is_none(), "creating is not a move");

    let mut starting = observed(Some(list(1, &[0, 1, 2], &[])), vec![joined(0, 1)]);
    starting.last_phase = Some(first.phase);
    let p = plan(&desired(3, 1), &starting);
    let first = status(&p, &starting, &ctx(Some(&first), t0()));
    assert_eq!(first.phase, Phase::Creating);
    assert_eq!(condition(&first, DEGRADED).status, "False");
    assert_eq!(condition(&first, PROGRESSING).reason, "Creating");

    let mut up = observed(
        Some(list(1, &[0, 1, 2], &[])),
        vec![joined(0, 1), joined(1, 1), joined(2, 1)],
    );
    up.last_phase = Some(first.phase);
    let available = status(&plan(&desired(3, 1), &up), &up, &ctx(Some(&first), t0()));
    assert_eq!(available.phase, Phase::Available);

    // Once it was available, a member that stops answering makes it Degraded.
    starting.last_phase = Some(available.phase);
    let later = plan(&desired(3, 1), &starting);
    let degraded = status(&later, &starting, &ctx(Some(&available), t0()));
    assert_eq!(degraded.phase, Phase::Degraded);
    assert_eq!(condition(&degraded, DEGRADED).status, "True");
}

#[test]
fn forgetting_departed_members_keeps_the_figures_of_the_move() {
    // Epoch 6 moved the data away from demo-2; epoch 7 only forgets it.
    let d = desired(2, 1);
    let mut pulled = joined(0, 6);
    pulled.rebalance.progress.partitions_total = 90;
    pulled.rebalance.progress.partitions_done = 90;
    pulled.rebalance.progress.bytes_moved = 4_096;
    let obs = observed(
        Some(list(6, &[0, 1], &[2])),
        vec![pulled.clone(), joined(1, 6), holding(2, 6)],
    );
    let moved = status(&plan(&d, &obs), &obs, &ctx(None, t0()));
    assert_eq!(moved.rebalance.as_ref().unwrap().partitions_total, 90);
    // demo-2 handed off: the operator publishes epoch 7 in the same reconcile.
    let obs = observed(
        Some(list(6, &[0, 1], &[2])),
        vec![pulled, joined(1, 6), drained(2, 6)],
    );
    let p = plan(&d, &obs);
    assert_eq!(p.list.epoch, 7);
    let moved = status(&p, &obs, &ctx(Some(&moved), t0()));
    assert_eq!(moved.rebalance.as_ref().unwrap().partitions_total, 90);

    let obs = observed(
        Some(list(7, &[0, 1], &[])),
        vec![joined(0, 7), joined(1, 7)],
    );
    for _ in 0..2 {
        let done = status(&plan(&d, &obs), &obs, &ctx(Some(&moved), t0()));
        let rebalance = done.rebalance.unwrap();
        assert!(!rebalance.active);
        assert_eq!(
            (rebalance.partitions_moved, rebalance.bytes_moved),
            (90, 4_096)
        );
    }
}

#[test]
fn a_step_that_finished_between_two_looks_keeps_its_figures() {
    // The whole hand-off to epoch 6 happened between two reconciles: the operator never
    // saw it in progress, and now publishes epoch 7.
    let d = desired(2, 1);
    let mut pulled = joined(0, 6);
    pulled.rebalance.progress.partitions_total = 70;
    pulled.rebalance.progress.partitions_done = 70;
    let obs = observed(
        Some(list(6, &[0, 1], &[2])),
        vec![pulled, joined(1, 6), drained(2, 6)],
    );
    let p = plan(&d, &obs);
    assert!(p.publish && p.list.epoch == 7);
    let previous = CacheClusterStatus {
        epoch: 6,
        phase: Phase::Rebalancing,
        rebalance: Some(RebalanceStatus {
            active: true,
            from_epoch: 5,
            to_epoch: 6,
            ..RebalanceStatus::default()
        }),
        ..CacheClusterStatus::default()
    };
    let status = status(&p, &obs, &ctx(Some(&previous), t0()));
    let rebalance = status.rebalance.unwrap();
    assert_eq!(
        (rebalance.partitions_moved, rebalance.partitions_total),
        (70, 70)
    );
    assert_eq!(rebalance.from_epoch, 5);
}

#[test]
fn a_creation_that_never_finishes_stops_progressing_at_the_deadline() {
    let starting = observed(Some(list(1, &[0, 1, 2], &[])), vec![joined(0, 1)]);
    let p = plan(&desired(3, 1), &starting);
    let mut context = ctx(None, t0());
    let early = status(&p, &starting, &context);
    assert_eq!(condition(&early, PROGRESSING).status, "True");
    context.created_at = Some(t0() - 11.minutes());
    let late = status(&p, &starting, &context);
    assert_eq!(late.phase, Phase::Creating);
    let progressing = condition(&late, PROGRESSING);
    assert_eq!(progressing.status, "False");
    assert_eq!(progressing.reason, "ProgressDeadlineExceeded");
}

#[test]
fn a_member_that_restarted_without_a_copy_is_recorded_and_shown_for_an_hour() {
    let members = list(4, &[0, 1], &[]);
    let first = observed(Some(members.clone()), vec![joined(0, 4), joined(1, 4)]);
    let settled = status(&plan(&desired(2, 1), &first), &first, &ctx(None, t0()));
    assert_eq!(settled.members[1].incarnation.as_deref(), Some("i"));
    assert_eq!(condition(&settled, DATA_LOSS).reason, "NoLoss");

    // demo-1 comes back as another incarnation that found no copy of two partitions.
    let mut back = joined(1, 4);
    back.node.incarnation = "j".to_owned();
    back.node.partitions_without_copy = vec![3, 8];
    let restarted = observed(Some(members), vec![joined(0, 4), back]);
    let now = t0() + 1.minutes();
    let lost = status(
        &plan(&desired(2, 1), &restarted),
        &restarted,
        &ctx(Some(&settled), now),
    );
    assert_eq!(lost.phase, Phase::Available, "the cluster serves again");
    assert_eq!(lost.data_loss_incidents, 1);
    let record = lost.last_data_loss.as_ref().unwrap();
    assert_eq!(
        (record.member.as_str(), record.incarnation.as_str()),
        ("demo-1", "j")
    );
    assert_eq!(record.partitions, vec![3, 8]);
    let shown = condition(&lost, DATA_LOSS);
    assert_eq!(
        (shown.status.as_str(), shown.reason.as_str()),
        ("True", "PartitionsLost")
    );
    assert!(
        shown.message.starts_with("demo-1 restarted"),
        "{}",
        shown.message
    );
    assert_eq!(lost.members[1].incarnation.as_deref(), Some("j"));

    // The next reconcile sees the same incarnation: no second incident.
    let later = status(
        &plan(&desired(2, 1), &restarted),
        &restarted,
        &ctx(Some(&lost), now + 30.minutes()),
    );
    assert_eq!(later.data_loss_incidents, 1);
    assert_eq!(condition(&later, DATA_LOSS).status, "True");
    // An hour on, the condition clears; the record stays.
    let cleared = status(
        &plan(&desired(2, 1), &restarted),
        &restarted,
        &ctx(Some(&later), now + 61.minutes()),
    );
    assert_eq!(condition(&cleared, DATA_LOSS).reason, "NoRecentLoss");
    assert_eq!(cleared.last_data_loss, later.last_data_loss);
}

#[test]
fn a_member_whose_pod_is_not_ready_yet_is_not_available() {
    let mut obs = observed(
        Some(list(4, &[0, 1], &[])),
        vec![joined(0, 4), joined(1, 4)],
    );
    // The node reports joined, but its pod's readiness probe has not passed yet: the
    // Service does not route to it.
    obs.pods.get_mut(&1).unwrap().ready = false;
    let status = status(&plan(&desired(2, 1), &obs), &obs, &ctx(None, t0()));
    assert_ne!(status.phase, Phase::Available);
    assert_eq!(condition(&status, AVAILABLE).status, "False");
    assert_eq!(status.replicas, 1);
    obs.pods.get_mut(&1).unwrap().ready = true;
    let status = status_of(&obs);
    assert_eq!(status.phase, Phase::Available);
}

fn status_of(obs: &crate::scale::Observed) -> CacheClusterStatus {
    status(&plan(&desired(2, 1), obs), obs, &ctx(None, t0()))
}
