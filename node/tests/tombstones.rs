//! Proves that an acknowledged delete never comes back, however long a replica was away:
//! a replica frozen (SIGSTOP) across a quorum DELETE for longer than the tombstone TTL
//! resumes with its old copies, and they do not come back through any node, while the
//! tombstones are still dropped once every replica has them.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Node, StaticCluster};
use reqwest::StatusCode;

const KEYS: usize = 20;

async fn get(node: &Node, key: &str, consistency: &str) -> StatusCode {
    node.http
        .get(node.url(&format!("/v1/keys/{key}")))
        .header("x-kache-consistency", consistency)
        .send()
        .await
        .unwrap()
        .status()
}

async fn tombstones(node: &Node) -> u64 {
    node.stats().await["tombstones"].as_u64().unwrap()
}

#[tokio::test]
async fn a_replica_frozen_past_the_tombstone_ttl_brings_nothing_back() {
    let cluster = StaticCluster::start(
        &[Vec::new(), Vec::new(), Vec::new()],
        "3",
        &["--tombstone-ttl", "2s", "--anti-entropy-interval", "300ms"],
    );
    let (coordinator, frozen) = (&cluster.nodes[0], &cluster.nodes[2]);
    for i in 0..KEYS {
        let written = coordinator
            .http
            .put(coordinator.url(&format!("/v1/keys/d{i}")))
            .header("x-kache-consistency", "all")
            .body("old")
            .send()
            .await
            .unwrap();
        assert!(written.status().is_success(), "{}", written.status());
    }

    frozen.signal("STOP");
    for i in 0..KEYS {
        let deleted = coordinator
            .http
            .delete(coordinator.url(&format!("/v1/keys/d{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            deleted.status(),
            StatusCode::NO_CONTENT,
            "a quorum of 2 of 3"
        );
    }
    // Well past the tombstone TTL, and many anti-entropy rounds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        tombstones(coordinator).await,
        KEYS as u64,
        "expired tombstones are held while a replica cannot confirm it has them"
    );
    frozen.signal("CONT");
    tokio::time::sleep(Duration::from_secs(3)).await;

    for node in &cluster.nodes {
        for i in 0..KEYS {
            let key = format!("d{i}");
            for level in ["one", "quorum", "all"] {
                assert_eq!(
                    get(node, &key, level).await,
                    StatusCode::NOT_FOUND,
                    "{key} came back through {} at {level}",
                    node.addr
                );
            }
        }
    }
    // Every replica has them now: they go, on every node.
    let deadline = Instant::now() + Duration::from_secs(20);
    for node in &cluster.nodes {
        while tombstones(node).await > 0 {
            assert!(
                Instant::now() < deadline,
                "tombstones never dropped on {}",
                node.addr
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for i in 0..KEYS {
        assert_eq!(
            get(coordinator, &format!("d{i}"), "all").await,
            StatusCode::NOT_FOUND
        );
    }
}
