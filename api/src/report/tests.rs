//! The report's JSON: the documented example parses, what a node writes reads back the
//! same, and the joined/drained judgements need every part they name.

use super::*;

/// The example in docs/architecture.md, as a node sends it.
const DOCUMENTED: &str = r#"{
  "protocolVersion": 1,
  "node": {"id": "node-3", "incarnation": "5b0c9e1f2a7d3c11", "ready": true,
           "role": "member", "syncedEpoch": 2},
  "epoch": 2, "partitions": 271, "replicationFactor": 2,
  "members": [{"id": "node-0", "address": "127.0.0.1:7071", "isSelf": false}],
  "departing": [{"id": "node-4", "address": "127.0.0.1:7111", "isSelf": false}],
  "ownership": {"owned": 136, "pending": 0, "heldNotOwned": 0},
  "rebalance": {"active": false, "fromEpoch": 1, "toEpoch": 2, "startedAtMs": 1795243958750,
                "completedAtMs": 1795243959031, "partitionsTotal": 129, "partitionsDone": 129,
                "recordsMoved": 95556, "bytesMoved": 10511160, "partitionsDropped": 0},
  "sync": {"antiEntropyRounds": 0, "recordsRepaired": 95556, "recordsPulled": 95556,
           "bytesPulled": 10511160, "failures": 0}
}"#;

fn documented() -> ClusterReport {
    serde_json::from_str(DOCUMENTED).expect("the documented report parses")
}

#[test]
fn parses_the_documented_report() {
    let report = documented();
    assert_eq!(report.node.id, "node-3");
    assert_eq!(report.node.role, Role::Member);
    assert_eq!(report.replication_factor, ReplicationFactor::Count(2));
    assert_eq!(report.ownership.owned, 136);
    assert_eq!(report.rebalance.progress.partitions_done, 129);
    assert_eq!(
        report.rebalance.progress.completed_at_ms,
        Some(1_795_243_959_031)
    );
    assert_eq!(report.departing[0].address, "127.0.0.1:7111".parse().ok());
    assert_eq!(report.sync.records_pulled, 95556);
    assert!(report.joined(2));
    assert!(
        !report.joined(3),
        "a member on an older epoch has not joined"
    );
}

#[test]
fn what_a_node_writes_reads_back_the_same() {
    let mut report = documented();
    report.rebalance.active = true;
    report.rebalance.progress.completed_at_ms = None;
    report.rebalance.progress.waiting_for = Some("member node-0 has not learned epoch 2".into());
    report.members[0].address = None;
    let json = serde_json::to_value(&report).expect("serialize");
    // Optional fields are left out, not written as null.
    assert!(json["rebalance"].get("completedAtMs").is_none(), "{json}");
    assert!(json["members"][0].get("address").is_none(), "{json}");
    // The progress is flattened into `rebalance`, as documented.
    assert_eq!(
        json["rebalance"]["waitingFor"],
        "member node-0 has not learned epoch 2"
    );
    assert_eq!(json["rebalance"]["active"], true);
    assert_eq!(json["departing"][0]["isSelf"], false);
    let back: ClusterReport = serde_json::from_value(json).expect("deserialize");
    assert_eq!(back, report);
}

#[test]
fn the_operator_reads_reports_that_lack_what_it_does_not_decide_on() {
    // A node may omit (or add) fields the operator does not decide on.
    let minimal = r#"{"protocolVersion": 1, "node": {"id": "n", "ready": true, "future": 1},
        "epoch": 1, "partitions": 16, "replicationFactor": "all",
        "ownership": {"owned": 16, "pending": 0, "heldNotOwned": 0},
        "rebalance": {}, "surprise": [1, 2]}"#;
    let report: ClusterReport = serde_json::from_str(minimal).expect("lenient");
    assert_eq!(report.node.role, Role::Absent);
    assert_eq!(report.replication_factor, ReplicationFactor::ALL);
    assert_eq!(report.rebalance, RebalanceReport::default());
    assert!(report.members.is_empty() && report.departing.is_empty());
    assert!(report.joined(1));
    // ... but never one without what it decides on.
    for missing in ["\"ownership\"", "\"epoch\"", "\"ready\""] {
        let broken = minimal.replacen(missing, "\"unrelated\"", 1);
        assert!(
            serde_json::from_str::<ClusterReport>(&broken).is_err(),
            "without {missing}: {broken}"
        );
    }
}

#[test]
fn joined_needs_every_part() {
    let base = documented();
    let mut r = base.clone();
    r.node.ready = false;
    assert!(!r.joined(2));
    let mut r = base.clone();
    r.rebalance.active = true;
    assert!(!r.joined(2));
    let mut r = base.clone();
    r.ownership.pending = 1;
    assert!(!r.joined(2));
    let mut r = base;
    r.ownership.held_not_owned = 1;
    assert!(!r.joined(2));
}

#[test]
fn drained_means_owning_and_holding_nothing_after_the_move() {
    let mut r = documented();
    assert!(!r.drained(2), "it still owns partitions");
    r.ownership.owned = 0;
    assert!(r.drained(2));
    r.ownership.held_not_owned = 3;
    assert!(!r.drained(2), "it still holds partitions");
    r.ownership.held_not_owned = 0;
    r.rebalance.active = true;
    assert!(!r.drained(2), "the move is still running");
    r.rebalance.active = false;
    assert!(!r.drained(3), "it has not seen the newest list");
}
