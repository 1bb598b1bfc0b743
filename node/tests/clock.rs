//! Proves that clocks cannot lose or invent data, on real processes with real clock skew
//! (libfaketime): under skew within `--max-clock-offset` every acknowledged PUT, DELETE
//! and conditional PUT takes effect; a node whose clock is beyond the bound stops taking
//! writes and no acknowledged write is lost; and the peer protocol refuses forged
//! versions and whatever else the HTTP API refuses (long keys, TTLs of millennia,
//! tombstones that never expire), leaving the data as it was.

#![expect(
    clippy::unwrap_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Node, StaticCluster};
use kache_node::cluster::wire::proto;
use reqwest::StatusCode;
use serde_json::Value as Json;

/// libfaketime, as Debian's `faketime` package installs it.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// Nodes `node-i` on loopback; node i's clock is shifted by libfaketime
/// (`FAKETIME=skews[i]`, e.g. `+1h`) when that is given.
fn skewed(skews: &[Option<&str>], replication_factor: &str) -> StaticCluster {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "these tests need libfaketime: apt-get install faketime"
    );
    let envs: Vec<Vec<(&str, &str)>> = skews
        .iter()
        .map(|skew| match skew {
            Some(skew) => vec![("LD_PRELOAD", LIBFAKETIME), ("FAKETIME", *skew)],
            None => Vec::new(),
        })
        .collect();
    StaticCluster::start(
        &envs,
        replication_factor,
        &["--anti-entropy-interval", "1s"],
    )
}

async fn put(node: &Node, key: &str, value: &str, if_match: Option<&str>) -> reqwest::Response {
    node.put_key(key, value, if_match.map(|v| ("if-match", v)))
        .await
}

async fn get(node: &Node, key: &str) -> (StatusCode, String) {
    node.get_key(key).await
}

async fn cluster_report(node: &Node) -> Json {
    node.get("/v1/cluster").await.json().await.unwrap()
}

#[tokio::test]
async fn under_skew_within_the_bound_every_acknowledged_write_takes_effect() {
    // node-0's clock runs 400 ms ahead, inside the default 500 ms bound: its versions are
    // newer than any node-1 makes at the same moment.
    let cluster = skewed(&[Some("+0.4"), None], "1");
    let (ahead, behind) = (&cluster.nodes[0], &cluster.nodes[1]);
    let keys = cluster.keys_owned_by("node-0", 12).await;
    for key in &keys[..4] {
        assert!(put(ahead, key, "old", None).await.status().is_success());
        let overwrite = put(behind, key, "new", None).await;
        assert!(overwrite.status().is_success(), "{}", overwrite.status());
        assert_eq!(
            get(behind, key).await,
            (StatusCode::OK, "new".into()),
            "{key}"
        );
        assert_eq!(
            get(ahead, key).await,
            (StatusCode::OK, "new".into()),
            "{key}"
        );
    }
    for key in &keys[4..8] {
        assert!(put(ahead, key, "old", None).await.status().is_success());
        let deleted = behind
            .http
            .delete(behind.url(&format!("/v1/keys/{key}")))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
        assert_eq!(
            get(ahead, key).await.0,
            StatusCode::NOT_FOUND,
            "{key} came back"
        );
    }
    for key in &keys[8..] {
        let written = put(ahead, key, "old", None).await;
        let tag = written.headers()["etag"].to_str().unwrap().to_owned();
        let conditional = put(behind, key, "new", Some(&tag)).await;
        assert!(
            conditional.status().is_success(),
            "{}",
            conditional.status()
        );
        assert_eq!(
            get(ahead, key).await,
            (StatusCode::OK, "new".into()),
            "{key}"
        );
        let stale_tag = put(behind, key, "newer", Some(&tag)).await;
        assert_eq!(stale_tag.status(), StatusCode::PRECONDITION_FAILED);
    }
    for node in &cluster.nodes {
        let clock = &cluster_report(node).await["clock"];
        assert_eq!(clock["inBounds"], true, "{clock}");
    }
}

#[tokio::test]
async fn a_node_beyond_the_bound_takes_no_writes_and_nothing_acknowledged_is_lost() {
    // node-2's clock is an hour ahead; the other two agree.
    let cluster = skewed(&[None, None, Some("+1h")], "3");
    let skewed = &cluster.nodes[2];
    let mut acknowledged = Vec::new();
    for i in 0..30 {
        let key = format!("w{i}");
        let via = &cluster.nodes[i % 2];
        let status = put(via, &key, &format!("v{i}"), None).await.status();
        // 503 is an unknown outcome, never a failure: only 2xx counts as acknowledged.
        if status.is_success() {
            acknowledged.push((key, format!("v{i}")));
        } else {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    assert!(acknowledged.len() >= 25, "the two good nodes form a quorum");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let clock = cluster_report(skewed).await["clock"].clone();
        if clock["inBounds"] == false {
            assert!(clock["offsetMs"].as_i64().unwrap() > 3_000_000, "{clock}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-2 never saw its clock is off: {clock}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let refused = put(skewed, "w0", "from-the-future", None).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.text().await.unwrap().contains("clock"));
    for node in &cluster.nodes[..2] {
        assert_eq!(cluster_report(node).await["clock"]["inBounds"], true);
        for (key, value) in &acknowledged {
            assert_eq!(
                get(node, key).await,
                (StatusCode::OK, value.clone()),
                "{key}"
            );
        }
    }
    let metrics = skewed.get("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("kache_clock_in_bounds 0"), "{metrics}");
}

fn sender() -> proto::Sender {
    proto::Sender {
        protocol_version: kache_node::cluster::wire::PROTOCOL_VERSION,
        node_id: "intruder".into(),
        incarnation: "0".into(),
        epoch: 1,
        synced_epoch: 0,
        wall_ms: 0,
        min_protocol_version: 0,
        resp_port: 0,
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

#[tokio::test]
async fn the_peer_protocol_refuses_forged_versions_and_what_http_refuses() {
    let cluster = skewed(&[None, None], "2");
    assert!(
        put(&cluster.nodes[0], "k", "v", None)
            .await
            .status()
            .is_success()
    );
    let mut peer = cluster.peer(0).await;
    let valid = proto::Record {
        key: b"k".to_vec(),
        value: b"forged".to_vec(),
        hlc: now_ms() << 16,
        writer: 1,
        expires_at_ms: 0,
        tombstone: false,
    };
    let year_ms: u64 = 365 * 24 * 3600 * 1000;
    let bad = [
        (
            "a version near 2^64",
            proto::Record {
                hlc: u64::MAX - 1,
                ..valid.clone()
            },
        ),
        (
            "a key of 65,535 bytes",
            proto::Record {
                key: vec![b'k'; 65_535],
                ..valid.clone()
            },
        ),
        (
            "a TTL of a thousand years",
            proto::Record {
                expires_at_ms: now_ms() + 1_000 * year_ms,
                ..valid.clone()
            },
        ),
        (
            "a tombstone that never expires",
            proto::Record {
                tombstone: true,
                value: Vec::new(),
                ..valid.clone()
            },
        ),
    ];
    for (what, record) in bad {
        let refused = peer
            .apply(proto::ApplyRequest {
                sender: Some(sender()),
                records: vec![record],
                hint: false,
                request_id: String::new(),
            })
            .await
            .expect_err(what);
        assert_eq!(
            refused.code(),
            tonic::Code::InvalidArgument,
            "{what}: {refused:?}"
        );
    }
    for node in &cluster.nodes {
        assert_eq!(
            get(node, "k").await,
            (StatusCode::OK, "v".into()),
            "nothing changed"
        );
    }
    // The forged version poisoned nothing: a later acknowledged write wins.
    assert!(
        put(&cluster.nodes[1], "k", "later", None)
            .await
            .status()
            .is_success()
    );
    for node in &cluster.nodes {
        assert_eq!(get(node, "k").await, (StatusCode::OK, "later".into()));
    }
    let metrics = cluster.nodes[0].get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("kache_clock_refused_versions_total 1"),
        "the forged version is counted: {metrics}"
    );
}
