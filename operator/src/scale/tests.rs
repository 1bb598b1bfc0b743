//! The state machine's paths: create, scale up, scale down, a blocked scale-down, a
//! change superseding one in progress, scaling to the same size, the first members
//! starting, and bad specs.

use super::*;
use crate::scale::fixtures::*;

#[test]
fn create_publishes_every_member_at_epoch_one() {
    let plan = plan(&desired(3, 2), &observed(None, vec![]));
    assert!(plan.publish);
    assert_eq!(plan.step, Step::Create);
    assert_eq!(plan.list.epoch, 1);
    assert_eq!(plan.list.member_ids().collect::<Vec<_>>(), ids(&[0, 1, 2]));
    assert_eq!(plan.list.replication_factor, ReplicationFactor::Count(2));
    assert_eq!(plan.statefulset_replicas, 3);
}

#[test]
fn a_joined_cluster_is_stable_and_publishes_nothing() {
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), joined(1, 4), joined(2, 4)],
    );
    let plan = plan(&desired(3, 1), &obs);
    assert_eq!(plan.step, Step::Stable);
    assert!(!plan.publish);
    assert_eq!(plan.list.epoch, 4);
    assert_eq!(plan.statefulset_replicas, 3);
    assert!(plan.members.iter().all(|m| m.settled && m.reachable));
}

#[test]
fn scaling_to_the_same_size_changes_nothing() {
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), joined(1, 4), joined(2, 4)],
    );
    let first = plan(&desired(3, 1), &obs);
    let again = plan(&desired(3, 1), &obs);
    assert_eq!(first, again);
    assert!(!again.publish, "no new epoch for an unchanged size");
}

#[test]
fn scale_up_grows_the_statefulset_then_adds_members_once_they_answer() {
    let d = desired(5, 1);
    // The new pods do not answer yet: grow the StatefulSet, publish nothing.
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), joined(1, 4), joined(2, 4)],
    );
    let waiting = plan(&d, &obs);
    assert_eq!(
        waiting.step,
        Step::WaitForPods {
            starting: ids(&[3, 4])
        }
    );
    assert!(!waiting.publish);
    assert_eq!(waiting.statefulset_replicas, 5);

    // They answer (not members yet, so they follow epoch 4 and own nothing): publish.
    let mut newcomers = (joined(3, 4), joined(4, 4));
    newcomers.0.ownership.owned = 0;
    newcomers.1.ownership.owned = 0;
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![
            joined(0, 4),
            joined(1, 4),
            joined(2, 4),
            newcomers.0,
            newcomers.1,
        ],
    );
    let publish = plan(&d, &obs);
    assert!(publish.publish);
    assert_eq!(publish.list.epoch, 5);
    assert_eq!(
        publish.list.member_ids().collect::<Vec<_>>(),
        ids(&[0, 1, 2, 3, 4])
    );
    assert!(publish.list.departing.is_empty());
    assert_eq!(publish.statefulset_replicas, 5);
    assert!(matches!(publish.step, Step::Rebalancing { .. }));

    // While the nodes move partitions: keep waiting, publish nothing.
    let obs = observed(
        Some(publish.list.clone()),
        vec![
            joined(0, 5),
            moving(1, 5),
            joined(2, 5),
            moving(3, 5),
            moving(4, 5),
        ],
    );
    let during = plan(&d, &obs);
    assert_eq!(
        during.step,
        Step::Rebalancing {
            waiting_for: ids(&[1, 3, 4])
        }
    );
    assert!(!during.publish);

    // Every member joined epoch 5: done.
    let obs = observed(Some(publish.list), (0..5).map(|i| joined(i, 5)).collect());
    assert_eq!(plan(&d, &obs).step, Step::Stable);
}

#[test]
fn scale_down_hands_off_before_the_statefulset_shrinks() {
    let d = desired(2, 1);
    let obs = observed(
        Some(list(5, &[0, 1, 2, 3, 4], &[])),
        (0..5).map(|i| joined(i, 5)).collect(),
    );
    let publish = plan(&d, &obs);
    assert!(publish.publish);
    assert_eq!(publish.list.epoch, 6);
    assert_eq!(publish.list.member_ids().collect::<Vec<_>>(), ids(&[0, 1]));
    assert_eq!(
        publish.list.departing_ids().collect::<Vec<_>>(),
        ids(&[2, 3, 4])
    );
    assert_eq!(
        publish.statefulset_replicas, 5,
        "no pod goes before it hands off"
    );

    // Remaining members joined, but demo-3 still holds data: wait, keep every pod.
    let obs = observed(
        Some(publish.list.clone()),
        vec![
            joined(0, 6),
            joined(1, 6),
            drained(2, 6),
            holding(3, 6),
            drained(4, 6),
        ],
    );
    let handing_off = plan(&d, &obs);
    assert_eq!(
        handing_off.step,
        Step::HandingOff {
            waiting_for: ids(&[3])
        }
    );
    assert!(!handing_off.publish);
    assert_eq!(handing_off.statefulset_replicas, 5);

    // Everything handed off: forget the departing members and shrink.
    let obs = observed(
        Some(publish.list),
        vec![
            joined(0, 6),
            joined(1, 6),
            drained(2, 6),
            drained(3, 6),
            drained(4, 6),
        ],
    );
    let shrink = plan(&d, &obs);
    assert!(shrink.publish);
    assert_eq!(shrink.list.epoch, 7);
    assert!(shrink.list.departing.is_empty());
    assert_eq!(shrink.statefulset_replicas, 2);
}

#[test]
fn a_departing_member_on_an_older_epoch_has_not_handed_off() {
    let d = desired(2, 1);
    let obs = observed(
        Some(list(6, &[0, 1], &[2])),
        vec![joined(0, 6), joined(1, 6), drained(2, 5)],
    );
    let plan = plan(&d, &obs);
    assert_eq!(
        plan.step,
        Step::HandingOff {
            waiting_for: ids(&[2])
        }
    );
    assert_eq!(plan.statefulset_replicas, 3);
}

#[test]
fn scale_down_with_an_unreachable_node_is_blocked_and_keeps_every_pod() {
    let d = desired(2, 1);
    // demo-3 (leaving) does not answer: it may hold the only copy of its partitions.
    let obs = observed(
        Some(list(6, &[0, 1], &[2, 3, 4])),
        vec![joined(0, 6), joined(1, 6), drained(2, 6), drained(4, 6)],
    );
    let blocked = plan(&d, &obs);
    assert_eq!(
        blocked.step,
        Step::ScaleDownBlocked {
            unreachable: ids(&[3])
        }
    );
    assert!(!blocked.publish);
    assert_eq!(blocked.statefulset_replicas, 5);
    let row = blocked.members.iter().find(|m| m.name == "demo-3").unwrap();
    assert!(!row.reachable && !row.settled);
    assert_eq!(row.role, MemberRole::Departing);

    // A remaining member that does not answer blocks it too: the move cannot complete.
    let obs = observed(
        Some(list(6, &[0, 1], &[2])),
        vec![joined(0, 6), holding(2, 6)],
    );
    let blocked = plan(&d, &obs);
    assert_eq!(
        blocked.step,
        Step::ScaleDownBlocked {
            unreachable: ids(&[1])
        }
    );
    assert_eq!(blocked.statefulset_replicas, 3);
}

#[test]
fn a_report_from_another_node_at_that_address_does_not_count() {
    let d = desired(2, 1);
    let mut impostor = drained(3, 6);
    impostor.node.id = "other-0".to_owned();
    let mut obs = observed(
        Some(list(6, &[0, 1], &[2, 3])),
        vec![joined(0, 6), joined(1, 6), drained(2, 6)],
    );
    obs.reports.insert(3, impostor);
    let plan = plan(&d, &obs);
    assert_eq!(
        plan.step,
        Step::ScaleDownBlocked {
            unreachable: ids(&[3])
        }
    );
    assert_eq!(plan.statefulset_replicas, 4);
}

#[test]
fn a_scale_down_in_the_middle_of_a_scale_up_supersedes_it() {
    // Epoch 5 added demo-3 and demo-4; they are still pulling when the spec says 2.
    let obs = observed(
        Some(list(5, &[0, 1, 2, 3, 4], &[])),
        vec![
            joined(0, 5),
            joined(1, 5),
            joined(2, 5),
            moving(3, 5),
            moving(4, 5),
        ],
    );
    let plan = plan(&desired(2, 1), &obs);
    assert!(plan.publish, "a newer spec does not wait for the old move");
    assert_eq!(plan.list.epoch, 6);
    assert_eq!(plan.list.member_ids().collect::<Vec<_>>(), ids(&[0, 1]));
    assert_eq!(
        plan.list.departing_ids().collect::<Vec<_>>(),
        ids(&[2, 3, 4])
    );
    assert_eq!(plan.statefulset_replicas, 5);
}

#[test]
fn a_scale_up_in_the_middle_of_a_scale_down_brings_departing_members_back() {
    let obs = observed(
        Some(list(6, &[0, 1], &[2, 3, 4])),
        vec![
            joined(0, 6),
            joined(1, 6),
            holding(2, 6),
            holding(3, 6),
            holding(4, 6),
        ],
    );
    let plan = plan(&desired(4, 1), &obs);
    assert!(plan.publish);
    assert_eq!(plan.list.epoch, 7);
    assert_eq!(
        plan.list.member_ids().collect::<Vec<_>>(),
        ids(&[0, 1, 2, 3])
    );
    assert_eq!(plan.list.departing_ids().collect::<Vec<_>>(), ids(&[4]));
    assert_eq!(plan.statefulset_replicas, 5);
}

#[test]
fn a_scale_up_that_never_started_is_dropped_by_a_scale_down() {
    // The StatefulSet grew to 5 for a scale-up, but demo-3/demo-4 never answered.
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), joined(1, 4), joined(2, 4)],
    );
    let plan = plan(&desired(3, 1), &obs);
    assert_eq!(plan.step, Step::Stable);
    assert_eq!(
        plan.statefulset_replicas, 3,
        "the pods that never joined go"
    );
}

#[test]
fn the_first_members_are_starting_until_the_cluster_was_available_once() {
    // demo-1 has not read the first list yet: it reports epoch 0, like a member of a move.
    let mut unaware = joined(1, 0);
    unaware.node.ready = false;
    let slow = vec![joined(0, 1)];
    let behind = vec![joined(0, 1), unaware];
    let waiting = || ids(&[1, 2]);
    let starting = || Step::Starting {
        waiting_for: waiting(),
    };
    let degraded = || Step::Degraded {
        not_joined: waiting(),
    };
    let rebalancing = || Step::Rebalancing {
        waiting_for: waiting(),
    };
    let all = vec![joined(0, 1), joined(1, 1), joined(2, 1)];
    let cases = [
        // (epoch, last phase, reports, step)
        (1, None, slow.clone(), starting()),
        (1, Some(Phase::Creating), slow.clone(), starting()),
        (1, None, behind.clone(), starting()),
        (1, Some(Phase::Creating), behind.clone(), starting()),
        // Once the cluster was available, the same reports are a failure or a move.
        (1, Some(Phase::Available), slow, degraded()),
        (1, Some(Phase::Degraded), behind, rebalancing()),
        // A later epoch is never the creation, whatever the status said.
        (2, None, vec![joined(0, 2)], degraded()),
        (1, None, all, Step::Stable),
    ];
    for (epoch, last_phase, reports, step) in cases {
        let mut obs = observed(Some(list(epoch, &[0, 1, 2], &[])), reports);
        obs.last_phase = last_phase;
        let plan = plan(&desired(3, 1), &obs);
        assert_eq!(plan.step, step, "epoch {epoch}, last phase {last_phase:?}");
        assert!(!plan.publish, "starting publishes nothing new");
        assert_eq!(plan.statefulset_replicas, 3);
    }
}

#[test]
fn a_member_that_restarted_makes_the_cluster_degraded_not_rebalancing() {
    let mut restarted = joined(1, 4);
    restarted.node.ready = false;
    restarted.ownership.pending = 90;
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), restarted, joined(2, 4)],
    );
    let plan = plan(&desired(3, 1), &obs);
    assert_eq!(
        plan.step,
        Step::Degraded {
            not_joined: ids(&[1])
        }
    );
    assert!(!plan.publish, "a restart is not a membership change");
}

#[test]
fn changing_the_replication_factor_publishes_the_same_members_at_a_new_epoch() {
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), joined(1, 4), joined(2, 4)],
    );
    let plan = plan(&desired(3, 2), &obs);
    assert!(plan.publish);
    assert_eq!(plan.list.epoch, 5);
    assert_eq!(plan.list.replication_factor, ReplicationFactor::Count(2));
    assert_eq!(plan.list.member_ids().collect::<Vec<_>>(), ids(&[0, 1, 2]));
}

#[test]
fn a_bad_spec_changes_nothing() {
    let obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), joined(1, 4), joined(2, 4)],
    );
    let too_many_copies = plan(&desired(2, 3), &obs);
    assert!(matches!(too_many_copies.step, Step::Invalid { .. }));
    assert!(!too_many_copies.publish);
    assert_eq!(too_many_copies.statefulset_replicas, 3);

    let mut other_partitions = desired(3, 1);
    other_partitions.partitions = 64;
    let plan_ = plan(&other_partitions, &obs);
    assert!(matches!(plan_.step, Step::Invalid { ref reason } if reason.contains("partitions")));
    assert!(!plan_.publish);
    assert_eq!(plan_.list, list(4, &[0, 1, 2], &[]));

    // A setting the operator cannot read (the controller's check): even a scale-up the
    // spec asks for waits until it is fixed.
    let unreadable = invalid(
        &desired(5, 1),
        &obs,
        "spec.rebalanceTimeout \"10\" needs a unit".to_owned(),
    );
    assert!(
        matches!(unreadable.step, Step::Invalid { ref reason } if reason.contains("rebalanceTimeout"))
    );
    assert!(!unreadable.publish);
    assert_eq!(unreadable.list, list(4, &[0, 1, 2], &[]), "no member added");

    let fresh = plan(&desired(1, 2), &observed(None, vec![]));
    assert!(matches!(fresh.step, Step::Invalid { .. }));
    assert!(!fresh.publish);
    assert_eq!(
        fresh.statefulset_replicas, 0,
        "nothing is created for a bad spec"
    );
}

#[test]
fn ordinals_come_only_from_this_clusters_pods() {
    assert_eq!(ordinal_of("demo", "demo-12"), Some(12));
    assert_eq!(ordinal_of("demo", "demo-x"), None);
    assert_eq!(ordinal_of("demo", "demo2-1"), None);
    assert_eq!(ordinal_of("demo", "other-1"), None);
}

#[test]
fn a_new_pod_becomes_a_member_only_once_its_peers_can_discover_it() {
    let mut newcomer = joined(3, 4);
    newcomer.ownership.owned = 0;
    let mut obs = observed(
        Some(list(4, &[0, 1, 2], &[])),
        vec![joined(0, 4), joined(1, 4), joined(2, 4), newcomer],
    );
    obs.discoverable.remove(&3);
    let waiting = plan(&desired(4, 1), &obs);
    assert_eq!(
        waiting.step,
        Step::WaitForPods {
            starting: ids(&[3])
        }
    );
    assert!(!waiting.publish);
    obs.discoverable.insert(3);
    assert!(plan(&desired(4, 1), &obs).publish);
}
