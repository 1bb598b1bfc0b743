//! The status screen, checked as golden text (`src/status/golden/*.txt`) on fixtures of
//! a CacheCluster's status and its pods' `/v1/cluster` and `/v1/stats` answers. Set
//! `KACHE_UPDATE_GOLDEN=1` to rewrite the files after a deliberate change, then read the
//! diff.

use std::path::Path;

use k8s_openapi::jiff::Timestamp;
use kache_api::report::ClusterReport;
use kache_operator::crd::CacheCluster;
use serde_json::json;

use super::{Memory, PodView, render};

/// 12:00:00 UTC on the fixtures' day.
fn now() -> Timestamp {
    "2026-12-06T12:00:00Z".parse().expect("time")
}

/// A 3 -> 5 scale of `cache` in `shop`, 41 of 108 partitions moved.
fn rebalancing() -> CacheCluster {
    serde_json::from_value(json!({
        "apiVersion": "kache.dev/v1alpha1",
        "kind": "CacheCluster",
        "metadata": {"name": "cache", "namespace": "shop"},
        "spec": {"replicas": 5, "replicationFactor": 2, "partitions": 271},
        "status": {
            "phase": "Rebalancing",
            "epoch": 5,
            "replicas": 3,
            "readyReplicas": 5,
            "selector": "app.kubernetes.io/instance=cache",
            "auth": {"mode": "Tokens", "secretName": "cache-auth"},
            "tls": {"peer": "Operator", "client": "Disabled"},
            "members": [
                {"name": "cache-0", "role": "Member", "reachable": true, "settled": true, "epoch": 5, "ownedPartitions": 109},
                {"name": "cache-1", "role": "Member", "reachable": true, "settled": true, "epoch": 5, "ownedPartitions": 108},
                {"name": "cache-2", "role": "Member", "reachable": true, "settled": false, "epoch": 5, "ownedPartitions": 109, "heldNotOwned": 12},
                {"name": "cache-3", "role": "Member", "reachable": true, "settled": false, "epoch": 5, "ownedPartitions": 108},
                {"name": "cache-4", "role": "Member", "reachable": false, "settled": false, "epoch": 4, "ownedPartitions": 108}
            ],
            "rebalance": {
                "active": true, "fromEpoch": 4, "toEpoch": 5,
                "partitionsMoved": 41, "partitionsTotal": 108, "progress": "37%",
                "bytesMoved": 13_002_342, "recordsMoved": 48_120,
                "startedAt": "2026-12-06T11:58:48Z"
            },
            "conditions": [
                {"type": "Available", "status": "False", "reason": "Rebalancing", "message": "2 of 5 members still pull partitions", "lastTransitionTime": "2026-12-06T11:58:48Z"},
                {"type": "Progressing", "status": "True", "reason": "MovingPartitions", "message": "epoch 4 -> 5: 41 of 108 partitions moved", "lastTransitionTime": "2026-12-06T11:58:48Z"},
                {"type": "Degraded", "status": "False", "reason": "AllMembersHealthy", "message": "", "lastTransitionTime": "2026-12-06T09:00:00Z"}
            ]
        }
    }))
    .expect("fixture CacheCluster")
}

/// A node's `/v1/cluster` as the node writes it (the fields the screen reads, and some
/// it does not).
fn report(
    id: &str,
    owned: usize,
    pending: usize,
    held: usize,
    moving: Option<(usize, usize)>,
) -> ClusterReport {
    serde_json::from_value(json!({
        "protocolVersion": 3,
        "minProtocolVersion": 1,
        "node": {"id": id, "incarnation": "a1", "ready": true, "role": "member", "syncedEpoch": 5},
        "epoch": 5,
        "partitions": 271,
        "replicationFactor": 2,
        "members": [{"id": id, "isSelf": true}],
        "ownership": {"owned": owned, "pending": pending, "heldNotOwned": held},
        "rebalance": match moving {
            Some((done, total)) => json!({"active": true, "fromEpoch": 4, "toEpoch": 5, "partitionsTotal": total, "partitionsDone": done}),
            None => json!({"active": false, "fromEpoch": 4, "toEpoch": 5}),
        },
        "clock": {"offsetMs": 0, "maxOffsetMs": 500, "inBounds": true, "peersHeard": 4},
        "tls": {"peer": null, "client": null}
    }))
    .expect("fixture report")
}

fn memory(used_mib: u64) -> Result<Memory, String> {
    let body = json!({"node_id": "x", "uptime_seconds": 60, "keys": 10, "tombstones": 0,
        "bytes": used_mib * 1024 * 1024, "buffer_bytes": 0, "max_memory": 48 * 1024 * 1024,
        "partitions": 100, "hits": 0, "misses": 0, "evictions": 0, "expirations": 0});
    Ok(serde_json::from_value(body).expect("stats"))
}

fn views() -> Vec<PodView> {
    let view = |pod: &str, report, memory| PodView {
        pod: pod.to_owned(),
        report,
        memory,
    };
    vec![
        view("cache-0", Ok(report("cache-0", 109, 0, 0, None)), memory(12)),
        view("cache-1", Ok(report("cache-1", 108, 0, 0, None)), memory(11)),
        view("cache-2", Ok(report("cache-2", 109, 0, 12, None)), memory(14)),
        view("cache-3", Ok(report("cache-3", 108, 67, 0, Some((41, 108)))), memory(4)),
        view(
            "cache-4",
            Err("the API server could not reach pod cache-4 (503 Service Unavailable: connection refused); the pod may be restarting, try again".to_owned()),
            Err("not asked".to_owned()),
        ),
    ]
}

fn golden(name: &str, actual: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/status/golden")
        .join(name);
    if std::env::var_os("KACHE_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("write golden");
    }
    let expected = std::fs::read_to_string(&path).expect("golden file");
    assert_eq!(
        actual,
        expected,
        "{} differs; the screen now:\n{actual}",
        path.display()
    );
}

#[test]
fn a_rebalancing_cluster_shows_the_move_and_every_member() {
    let screen = render(&rebalancing(), &views(), now());
    golden("rebalancing.txt", &screen);
    assert!(screen.contains("Rebalancing epoch 4 -> 5: 41/108 partitions moved (37%)"));
}

#[test]
fn an_idle_cluster_shows_its_last_move() {
    let mut cc = rebalancing();
    let status = cc.status.as_mut().expect("status");
    status.phase = kache_operator::crd::Phase::Available;
    status.replicas = 5;
    status.conditions.truncate(1);
    status.conditions[0].status = "True".to_owned();
    status.conditions[0].reason = "AllMembersJoined".to_owned();
    status.conditions[0].message = "5 of 5 members hold their partitions".to_owned();
    let rebalance = status.rebalance.as_mut().expect("rebalance");
    rebalance.active = false;
    rebalance.partitions_moved = 108;
    rebalance.completed_at = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
        "2026-12-06T11:59:30Z".parse().expect("time"),
    ));
    let views: Vec<PodView> = (0..5)
        .map(|i| PodView {
            pod: format!("cache-{i}"),
            report: Ok(report(&format!("cache-{i}"), 108, 0, 0, None)),
            memory: memory(10),
        })
        .collect();
    golden("available.txt", &render(&cc, &views, now()));
}

#[test]
fn without_views_the_operator_status_still_fills_the_table() {
    let screen = render(&rebalancing(), &[], now());
    let row = screen
        .lines()
        .find(|line| line.starts_with("cache-4"))
        .expect("a row for cache-4");
    assert!(row.contains("unreachable"), "{row}");
    assert!(row.contains("108"), "the operator's ownership count: {row}");
}

#[test]
fn a_move_not_counted_yet_says_so_instead_of_0_of_0_done() {
    let mut cc = rebalancing();
    let rebalance = cc
        .status
        .as_mut()
        .and_then(|status| status.rebalance.as_mut())
        .expect("rebalance");
    rebalance.partitions_moved = 0;
    rebalance.partitions_total = 0;
    let screen = render(&cc, &views(), now());
    assert!(
        screen.contains("Rebalancing epoch 4 -> 5: partitions not counted yet"),
        "{screen}"
    );
    assert!(!screen.contains("0/0"), "{screen}");
}
