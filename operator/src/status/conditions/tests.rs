//! Each condition on its own: what it says for every step, and that a transition time
//! moves only when the condition flips.

use k8s_openapi::jiff::{Timestamp, ToSpan};

use super::*;
use crate::crd::{CacheClusterStatus, MemberStatus};
use crate::scale::fixtures::{ids, list};

fn member(ordinal: u32, role: MemberRole, settled: bool) -> MemberStatus {
    MemberStatus {
        name: format!("demo-{ordinal}"),
        role,
        reachable: true,
        settled,
        ..MemberStatus::default()
    }
}

/// A plan at epoch 5 with members demo-0 and demo-1 (settled) and `step`.
fn plan(step: Step) -> Plan {
    Plan {
        list: list(5, &[0, 1], &[]),
        publish: false,
        statefulset_replicas: 2,
        step,
        members: vec![
            member(0, MemberRole::Member, true),
            member(1, MemberRole::Member, true),
        ],
    }
}

/// One of every step, naming demo-1 wherever a step names members.
fn every_step() -> Vec<Step> {
    vec![
        Step::Create,
        Step::Starting {
            waiting_for: ids(&[1]),
        },
        Step::WaitForPods {
            starting: ids(&[1]),
        },
        Step::Rebalancing {
            waiting_for: ids(&[1]),
        },
        Step::HandingOff {
            waiting_for: ids(&[1]),
        },
        Step::ScaleDownBlocked {
            unreachable: ids(&[1]),
        },
        Step::Degraded {
            not_joined: ids(&[1]),
        },
        Step::Stable,
        Step::Invalid {
            reason: "bad spec".to_owned(),
        },
    ]
}

/// Status and reason of `verdict`, for compact tables.
fn said(verdict: &Verdict) -> (bool, &'static str) {
    (verdict.status, verdict.reason)
}

#[test]
fn available_means_every_member_holds_its_partitions() {
    assert_eq!(
        said(&available(&plan(Step::Stable))),
        (true, "AllMembersJoined")
    );
    assert_eq!(
        available(&plan(Step::Stable)).message,
        "all 2 members hold the partitions they own"
    );

    let mut one_missing = plan(Step::Stable);
    one_missing.members[1].settled = false;
    assert_eq!(said(&available(&one_missing)), (false, "MembersNotJoined"));

    // A departing member still handing off does not make the members any less joined.
    let mut departing = plan(Step::Stable);
    departing
        .members
        .push(member(2, MemberRole::Departing, false));
    assert!(available(&departing).status);

    let mut no_list = plan(Step::Stable);
    no_list.list.epoch = 0;
    assert!(!available(&no_list).status, "nothing was published yet");
}

#[test]
fn progressing_says_which_change_waits_for_whom() {
    let expected = [
        (true, "Creating", "publishing the first member list"),
        (true, "Creating", "waiting for demo-1 to start and join"),
        (
            true,
            "WaitingForPods",
            "waiting for demo-1 to start before adding them",
        ),
        (
            true,
            "PartitionsMoving",
            "epoch 5: waiting for demo-1 to join",
        ),
        (
            true,
            "HandingOff",
            "epoch 5: waiting for demo-1 to hand off",
        ),
        (true, "ScaleDownBlocked", "waiting for demo-1 to answer"),
        (false, "Idle", "no membership change in progress"),
        (false, "Idle", "no membership change in progress"),
        (false, "InvalidSpec", "bad spec"),
    ];
    for (step, (status, reason, message)) in every_step().into_iter().zip(expected) {
        let verdict = progressing(&plan(step.clone()), None);
        assert_eq!(said(&verdict), (status, reason), "{step:?}");
        assert_eq!(verdict.message, message, "{step:?}");
    }
}

#[test]
fn progressing_past_the_deadline_is_false_whatever_the_step() {
    for step in every_step() {
        let verdict = progressing(&plan(step.clone()), Some(Duration::from_secs(600)));
        assert_eq!(
            said(&verdict),
            (false, "ProgressDeadlineExceeded"),
            "{step:?}"
        );
        assert!(verdict.message.contains("(600s)"), "{}", verdict.message);
    }
}

#[test]
fn rebalancing_only_while_partitions_move() {
    for step in every_step() {
        let moving = matches!(
            step,
            Step::Rebalancing { .. } | Step::HandingOff { .. } | Step::ScaleDownBlocked { .. }
        );
        let verdict = rebalancing(&plan(step.clone()));
        if moving {
            assert_eq!(said(&verdict), (true, "PartitionsMoving"), "{step:?}");
            assert_eq!(verdict.message, "partitions are moving to epoch 5");
        } else {
            assert_eq!(said(&verdict), (false, "NoMove"), "{step:?}");
        }
    }
}

#[test]
fn degraded_only_when_members_fail_nodes_vanish_or_the_spec_is_bad() {
    for step in every_step() {
        let verdict = degraded(&step);
        let expected = match step {
            Step::Degraded { .. } => (true, "MembersNotJoined"),
            Step::ScaleDownBlocked { .. } => (true, "MemberUnreachable"),
            Step::Invalid { .. } => (true, "InvalidSpec"),
            // Starting members are not a failure, however long they take.
            _ => (false, "AsExpected"),
        };
        assert_eq!(said(&verdict), expected, "{step:?}");
    }
    let verdict = degraded(&Step::ScaleDownBlocked {
        unreachable: ids(&[2, 3]),
    });
    assert_eq!(
        verdict.message,
        "demo-2, demo-3 do not answer GET /v1/cluster"
    );
}

#[test]
fn a_scale_down_is_blocked_only_by_nodes_that_do_not_answer() {
    for step in every_step() {
        let blocked = matches!(step, Step::ScaleDownBlocked { .. });
        let verdict = scale_down_blocked(&step);
        assert_eq!(verdict.status, blocked, "{step:?}");
        if blocked {
            assert_eq!(verdict.reason, "MemberUnreachable");
            assert!(verdict.message.starts_with("demo-1 may still hold data"));
        } else {
            assert_eq!(verdict.reason, "NotBlocked");
        }
    }
}

#[test]
fn a_transition_time_moves_only_when_the_condition_flips() {
    let t0: Timestamp = "2026-11-21T10:00:00Z".parse().unwrap();
    let ctx = |previous, now| Context {
        name: "demo",
        generation: Some(2),
        previous,
        now,
        rebalance_timeout: Duration::from_secs(600),
        selector: String::new(),
        created_at: None,
        security: None,
    };
    let first = condition(&ctx(None, t0), AVAILABLE, Verdict::no("A", "a"));
    assert_eq!(first.last_transition_time, Time(t0));
    assert_eq!(first.observed_generation, Some(2));
    let previous = CacheClusterStatus {
        conditions: vec![first],
        ..CacheClusterStatus::default()
    };
    let later = t0 + 1.minutes();
    let same = condition(
        &ctx(Some(&previous), later),
        AVAILABLE,
        Verdict::no("B", "b"),
    );
    assert_eq!(same.last_transition_time, Time(t0), "still False");
    assert_eq!(same.reason, "B", "the reason follows the verdict");
    let flipped = condition(
        &ctx(Some(&previous), later),
        AVAILABLE,
        Verdict::yes("C", "c"),
    );
    assert_eq!(flipped.last_transition_time, Time(later));
}

/// A cluster secured by cert-manager, with client TLS off and tokens on.
fn cert_manager_security() -> crate::resources::security::Security {
    crate::resources::security::resolve(
        &crate::resources::names::tests::cache_cluster(
            "replicas: 3\ntls: {peer: {issuerRef: {name: corp-ca}}}",
        ),
        None,
    )
}

#[test]
fn secured_says_which_certificate_cert_manager_has_not_issued_and_when_it_cannot() {
    let security = cert_manager_security();
    let view = |problems, certificates| SecurityView {
        security: &security,
        problems,
        certificates,
    };
    let all_issued = secured(view(&[], crate::status::CertificatesView::default()));
    assert_eq!(said(&all_issued), (true, "Secured"));
    assert!(
        all_issued.message.contains("from cert-manager"),
        "{}",
        all_issued.message
    );

    let pending = vec!["Certificate demo-peer-2: Secret demo-peer-2 does not exist yet".to_owned()];
    let waiting = secured(view(
        &[],
        crate::status::CertificatesView {
            unavailable: None,
            pending: &pending,
        },
    ));
    assert_eq!(said(&waiting), (false, "CertificatePending"));
    assert!(
        waiting.message.contains("demo-peer-2"),
        "{}",
        waiting.message
    );

    // A missing API outranks a bad Secret, which outranks a pending Certificate.
    let problems = vec!["spec.auth.tokens: Secret app does not exist".to_owned()];
    let bad = secured(view(
        &problems,
        crate::status::CertificatesView {
            unavailable: None,
            pending: &pending,
        },
    ));
    assert_eq!(said(&bad), (false, "SecretProblem"));
    let missing = secured(view(
        &problems,
        crate::status::CertificatesView {
            unavailable: Some("the cert-manager Certificate API is not installed here"),
            pending: &pending,
        },
    ));
    assert_eq!(said(&missing), (false, "CertManagerUnavailable"));
    assert!(
        missing.message.contains("not installed"),
        "{}",
        missing.message
    );
}
