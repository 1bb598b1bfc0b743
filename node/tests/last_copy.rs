//! Proves that a clean shutdown never drops the last live copy of a partition: at RF=2,
//! with the other owner already SIGKILLed, a node stopped with SIGTERM hands off the
//! partitions it then alone holds, and every acknowledged key is readable once both
//! owners are back (issue 10, item 8: suspected, proven here).

mod common;

use std::time::Duration;

use common::StaticCluster;
use reqwest::StatusCode;

const KEYS: usize = 300;

#[tokio::test]
async fn sigterm_with_the_other_owner_down_hands_off_what_only_it_holds() {
    let mut cluster = StaticCluster::start(&[Vec::new(), Vec::new(), Vec::new()], "2", &[]);
    let writer = &cluster.nodes[2];
    for i in 0..KEYS {
        let written = writer
            .http
            .put(writer.url(&format!("/v1/keys/l{i}")))
            .header("x-kache-consistency", "all")
            .body(format!("v{i}"))
            .send()
            .await
            .unwrap();
        assert!(written.status().is_success(), "{}", written.status());
    }
    // node-1 dies; then node-0, which shares partitions with it, is stopped cleanly.
    cluster.nodes[1].child.kill().unwrap();
    cluster.nodes[1].child.wait().unwrap();
    cluster.nodes[0].signal("TERM");
    assert!(
        cluster.nodes[0]
            .wait_exit(Duration::from_secs(30))
            .success()
    );
    assert!(cluster.nodes[0].saw_log("drained"), "the drain ran");

    // Both come back empty and sync from what is left.
    for i in [0, 1] {
        cluster.nodes[i] = cluster.launch(i);
    }
    for node in &cluster.nodes {
        node.wait_ready(Duration::from_secs(30));
    }
    let mut missing = Vec::new();
    for i in 0..KEYS {
        let key = format!("l{i}");
        let read = cluster.nodes[2]
            .http
            .get(cluster.nodes[2].url(&format!("/v1/keys/{key}")))
            .header("x-kache-consistency", "all")
            .send()
            .await
            .unwrap();
        if read.status() != StatusCode::OK {
            missing.push(key);
        } else {
            assert_eq!(read.text().await.unwrap(), format!("v{i}"));
        }
    }
    assert!(
        missing.is_empty(),
        "{} acknowledged keys lost: {missing:?}",
        missing.len()
    );
}
