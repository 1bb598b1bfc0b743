//! A restarted node tells what it came back without: `partitionsWithoutCopy` in its
//! report lists the owned partitions no other member held a live copy of when it
//! started (issue 10, item 7). The operator turns that into the DataLoss event,
//! condition and record; here the node's half is checked against real processes.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::time::Duration;

use common::StaticCluster;
use serde_json::Value as Json;

async fn report(cluster: &StaticCluster, i: usize) -> Json {
    let node = &cluster.nodes[i];
    node.get("/v1/cluster").await.json().await.unwrap()
}

fn without_copy(report: &Json) -> Vec<u64> {
    report["node"]["partitionsWithoutCopy"]
        .as_array()
        .map(|a| a.iter().filter_map(Json::as_u64).collect())
        .unwrap_or_default()
}

async fn restart(cluster: &mut StaticCluster, i: usize) {
    cluster.nodes[i].child.kill().unwrap();
    cluster.nodes[i].child.wait().unwrap();
    cluster.nodes[i] = cluster.launch(i);
    cluster.nodes[i].wait_ready(Duration::from_secs(30));
}

#[tokio::test]
async fn at_rf1_a_restart_lists_every_owned_partition_as_without_copy() {
    let mut cluster = StaticCluster::start(&[Vec::new(), Vec::new()], "1", &[]);
    let before = report(&cluster, 1).await;
    let owned = before["ownership"]["owned"].as_u64().unwrap();
    assert!(owned > 0);
    restart(&mut cluster, 1).await;
    let after = report(&cluster, 1).await;
    assert_ne!(after["node"]["incarnation"], before["node"]["incarnation"]);
    assert!(after["node"]["startedAtMs"].as_u64().unwrap_or(0) > 0);
    assert_eq!(
        without_copy(&after).len() as u64,
        owned,
        "nobody else held what node-1 owned: {after}"
    );
}

#[tokio::test]
async fn at_rf2_a_restart_finds_a_copy_of_everything() {
    let mut cluster = StaticCluster::start(&[Vec::new(), Vec::new(), Vec::new()], "2", &[]);
    restart(&mut cluster, 1).await;
    let after = report(&cluster, 1).await;
    assert!(after["ownership"]["owned"].as_u64().unwrap_or(0) > 0);
    assert!(
        without_copy(&after).is_empty(),
        "every partition had a live co-owner: {after}"
    );
}
