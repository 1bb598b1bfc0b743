//! Proves that kache nodes form one cache over real processes and sockets: any node serves
//! any key, each key has RF copies, quorum writes survive a SIGKILLed replica, deletes are
//! never resurrected by older versions, too few replicas is a clear 503, peers on another
//! protocol version (or garbage) are refused without harm, a new member-list epoch is
//! followed, anti-entropy repairs replicas that missed writes until digests agree, a node
//! restarting during a scale-down pulls from the departing members, and a node in no
//! list (static `--members`) starts ready, owns nothing and forwards.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Node, free_ports};
use kache_node::cluster::wire::proto::{self, peer_client::PeerClient};
use reqwest::StatusCode;
use serde_json::Value as Json;

/// N nodes on loopback sharing a watched member file. Nodes are killed and the directory
/// removed on drop, so a failing test leaves nothing behind.
struct TestCluster {
    nodes: Vec<Node>,
    extra: Vec<String>,
    grpc_ports: Vec<u16>,
    members_file: PathBuf,
    dir: PathBuf,
}

impl TestCluster {
    fn start(size: usize, replication_factor: &str) -> Self {
        Self::start_with(size, replication_factor, &[])
    }

    fn start_with(size: usize, replication_factor: &str, extra: &[&str]) -> Self {
        let members: Vec<usize> = (0..size).collect();
        Self::start_members(size, replication_factor, &members, extra)
    }

    /// Starts `size` nodes of which only `members` are in the first member list.
    fn start_members(
        size: usize,
        replication_factor: &str,
        members: &[usize],
        extra: &[&str],
    ) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kache-cluster-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let members_file = dir.join("members.yaml");
        let grpc_ports = free_ports(size);
        let mut cluster = Self {
            nodes: Vec::new(),
            extra: extra.iter().map(|s| (*s).to_owned()).collect(),
            grpc_ports,
            members_file,
            dir,
        };
        cluster.write_members(1, replication_factor, members);
        for i in 0..size {
            let node = cluster.spawn(i);
            cluster.nodes.push(node);
        }
        for node in &cluster.nodes {
            node.wait_ready(Duration::from_secs(20));
        }
        cluster
    }

    /// Starts node `i` with its fixed id, gRPC port and the shared member file.
    fn spawn(&self, i: usize) -> Node {
        let grpc = format!("127.0.0.1:{}", self.grpc_ports[i]);
        let id = format!("node-{i}");
        let file = self.members_file.to_str().unwrap().to_owned();
        let mut args = vec!["--node-id", id.as_str(), "--members-file", file.as_str()];
        args.extend(self.extra.iter().map(String::as_str));
        Node::start_with(
            &[
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                &grpc,
                "--resp-addr",
                "127.0.0.1:0",
            ],
            &args,
        )
    }

    fn write_members(&self, epoch: u64, replication_factor: &str, members: &[usize]) {
        self.write_list(epoch, replication_factor, members, &[]);
    }

    /// Writes a list with `members` and the `departing` members of a scale-down.
    fn write_list(
        &self,
        epoch: u64,
        replication_factor: &str,
        members: &[usize],
        departing: &[usize],
    ) {
        let mut yaml =
            format!("epoch: {epoch}\npartitions: 271\nreplicationFactor: {replication_factor}\n");
        for (section, nodes) in [("members", members), ("departing", departing)] {
            if nodes.is_empty() {
                continue;
            }
            yaml.push_str(&format!("{section}:\n"));
            for &i in nodes {
                let port = self.grpc_ports[i];
                yaml.push_str(&format!(
                    "  - id: node-{i}\n    address: 127.0.0.1:{port}\n"
                ));
            }
        }
        // Write then rename, so a node never reads half a file.
        let tmp = self.dir.join("members.yaml.tmp");
        std::fs::write(&tmp, yaml).unwrap();
        std::fs::rename(tmp, &self.members_file).unwrap();
    }

    async fn peer(&self, i: usize) -> PeerClient<tonic::transport::Channel> {
        PeerClient::connect(format!("http://127.0.0.1:{}", self.grpc_ports[i]))
            .await
            .unwrap()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.nodes.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn put(node: &Node, key: &str, value: &str, consistency: Option<&str>) -> reqwest::Response {
    node.put_key(key, value, consistency.map(|v| ("x-kache-consistency", v)))
        .await
}

async fn get(node: &Node, key: &str) -> (StatusCode, String) {
    node.get_key(key).await
}

#[tokio::test]
async fn any_node_serves_any_key_and_each_key_has_rf_copies() {
    let cluster = TestCluster::start(3, "2");
    for i in 0..300 {
        let response = put(
            &cluster.nodes[i % 3],
            &format!("k{i}"),
            &format!("v{i}"),
            None,
        )
        .await;
        assert!(
            response.status().is_success(),
            "write {i}: {}",
            response.status()
        );
    }
    for node in &cluster.nodes {
        for i in 0..300 {
            assert_eq!(
                get(node, &format!("k{i}")).await,
                (StatusCode::OK, format!("v{i}"))
            );
        }
    }
    let mut copies = 0;
    let mut owned = 0;
    for node in &cluster.nodes {
        copies += node.stats().await["keys"].as_u64().unwrap();
        let report: Json = node.get("/v1/cluster").await.json().await.unwrap();
        assert_eq!(report["epoch"], 1);
        assert_eq!(report["members"].as_array().unwrap().len(), 3);
        assert_eq!(report["ownership"]["heldNotOwned"], 0, "{report}");
        owned += report["ownership"]["owned"].as_u64().unwrap();
    }
    assert_eq!(copies, 600, "every key is held by exactly two nodes");
    assert_eq!(owned, 271 * 2);
}

#[tokio::test]
async fn quorum_writes_survive_a_sigkilled_replica() {
    let mut cluster = TestCluster::start(3, "3");
    for i in 0..200 {
        assert!(
            put(&cluster.nodes[0], &format!("k{i}"), "before", None)
                .await
                .status()
                .is_success()
        );
    }
    let mut victim = cluster.nodes.remove(2);
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    for i in 200..400 {
        let response = put(&cluster.nodes[0], &format!("k{i}"), "after", None).await;
        assert!(
            response.status().is_success(),
            "write {i} with a replica down: {}",
            response.status()
        );
    }
    for i in 0..400 {
        let (status, body) = get(&cluster.nodes[1], &format!("k{i}")).await;
        assert_eq!(status, StatusCode::OK, "k{i}");
        assert_eq!(body, if i < 200 { "before" } else { "after" });
    }
}

#[tokio::test]
async fn too_few_replicas_is_a_clear_503_and_lower_levels_still_work() {
    let mut cluster = TestCluster::start(2, "2");
    let mut down = cluster.nodes.remove(1);
    down.child.kill().unwrap();
    down.child.wait().unwrap();
    let node = &cluster.nodes[0];
    let refused = put(node, "k", "v", Some("all")).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Json = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "replicas_unavailable");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("node-1"),
        "{body}"
    );
    assert!(put(node, "k", "v", Some("one")).await.status().is_success());
    let read = node
        .http
        .get(node.url("/v1/keys/k"))
        .header("x-kache-consistency", "one")
        .send()
        .await
        .unwrap();
    assert_eq!(read.text().await.unwrap(), "v");
    let bad = put(node, "k", "v", Some("most")).await;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn deleted_keys_are_not_resurrected_by_older_versions() {
    let cluster = TestCluster::start(2, "2");
    assert!(
        put(&cluster.nodes[0], "k", "v", None)
            .await
            .status()
            .is_success()
    );
    let deleted = cluster.nodes[1]
        .http
        .delete(cluster.nodes[1].url("/v1/keys/k"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    for node in &cluster.nodes {
        assert_eq!(get(node, "k").await.0, StatusCode::NOT_FOUND);
    }
    // A peer replays an old write of the key, as a partitioned replica would.
    let stale = proto::ApplyRequest {
        sender: Some(current()),
        hint: false,
        request_id: String::new(),
        records: vec![proto::Record {
            key: b"k".to_vec(),
            value: b"old".to_vec(),
            hlc: 1,
            writer: 1,
            expires_at_ms: 0,
            tombstone: false,
        }],
    };
    let reply = cluster
        .peer(0)
        .await
        .apply(stale)
        .await
        .unwrap()
        .into_inner();
    assert_eq!((reply.applied, reply.stale), (0, 1));
    for node in &cluster.nodes {
        assert_eq!(
            get(node, "k").await.0,
            StatusCode::NOT_FOUND,
            "nothing stale comes back"
        );
    }
    // The same record sent twice (a write re-sent to a newer member list's replicas) is
    // taken both times, never "beaten" by itself: a coordinator told so would decide the
    // write again and read its own copy back.
    let newest = proto::ApplyRequest {
        sender: Some(current()),
        hint: false,
        request_id: String::new(),
        records: vec![proto::Record {
            key: b"again".to_vec(),
            value: b"v".to_vec(),
            hlc: u64::from(u32::MAX),
            writer: 7,
            expires_at_ms: 0,
            tombstone: false,
        }],
    };
    for attempt in 1..=2 {
        let reply = cluster
            .peer(0)
            .await
            .apply(newest.clone())
            .await
            .unwrap()
            .into_inner();
        assert_eq!((reply.applied, reply.stale), (1, 0), "attempt {attempt}");
    }
}

fn sender(protocol_version: u32) -> proto::Sender {
    proto::Sender {
        protocol_version,
        node_id: "test-peer".into(),
        incarnation: "0".into(),
        epoch: 1,
        synced_epoch: 0,
        wall_ms: 0,
        min_protocol_version: 0,
        resp_port: 0,
    }
}

/// A peer on this build's protocol version.
fn current() -> proto::Sender {
    sender(kache_node::cluster::wire::PROTOCOL_VERSION)
}

#[tokio::test]
async fn wrong_protocol_versions_and_garbage_are_refused_without_harm() {
    let cluster = TestCluster::start(2, "2");
    assert!(
        put(&cluster.nodes[0], "k", "v", None)
            .await
            .status()
            .is_success()
    );
    let mut peer = cluster.peer(0).await;

    let refused = peer
        .hello(proto::HelloRequest {
            sender: Some(sender(99)),
        })
        .await
        .expect_err("another protocol version is refused");
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("v99") && refused.message().contains("v3"),
        "{}",
        refused.message()
    );
    // A v2 node places keys in other partitions (v3 moved them to hash slots): refused,
    // as a v1 node (which sends no range) is.
    let write = proto::ApplyRequest {
        sender: Some(sender(2)),
        hint: false,
        request_id: String::new(),
        records: vec![proto::Record {
            key: b"k".to_vec(),
            value: b"x".to_vec(),
            hlc: u64::MAX,
            writer: 1,
            expires_at_ms: 0,
            tombstone: false,
        }],
    };
    assert_eq!(
        peer.apply(write).await.unwrap_err().code(),
        tonic::Code::FailedPrecondition
    );
    let anonymous = proto::GetRequest {
        sender: None,
        key: b"k".to_vec(),
        request_id: String::new(),
    };
    assert_eq!(
        peer.get(anonymous).await.unwrap_err().code(),
        tonic::Code::InvalidArgument
    );
    assert!(
        cluster.nodes[0].saw_log("refused a peer on another protocol version"),
        "the refusal is logged"
    );

    // Garbage on the gRPC port: the connection fails, the node does not.
    {
        use std::io::Write;
        let mut raw = std::net::TcpStream::connect(("127.0.0.1", cluster.grpc_ports[0])).unwrap();
        let garbage: Vec<u8> = (0..4096).map(|_| fastrand::u8(..)).collect();
        let _ = raw.write_all(&garbage);
    }
    let v1 = peer
        .hello(proto::HelloRequest {
            sender: Some(sender(1)),
        })
        .await
        .expect_err("a v1 node is refused");
    assert_eq!(v1.code(), tonic::Code::FailedPrecondition);
    // A node on this version and a future node that still speaks it are peers: that is
    // what lets a rolling upgrade run old and new nodes side by side.
    let hello = peer
        .hello(proto::HelloRequest {
            sender: Some(current()),
        })
        .await
        .unwrap();
    let answer = hello.into_inner().sender.unwrap();
    assert_eq!(answer.node_id, "node-0");
    assert_eq!(
        (answer.min_protocol_version, answer.protocol_version),
        (3, 3)
    );
    peer.hello(proto::HelloRequest {
        sender: Some(proto::Sender {
            min_protocol_version: 3,
            ..sender(5)
        }),
    })
    .await
    .expect("v3..v5 overlaps v3..v3");
    for node in &cluster.nodes {
        assert_eq!(
            get(node, "k").await,
            (StatusCode::OK, "v".to_owned()),
            "data unaffected"
        );
    }
}

#[tokio::test]
async fn nodes_follow_a_new_member_list_epoch() {
    let cluster = TestCluster::start(2, "1");
    cluster.write_members(2, "2", &[0, 1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    for node in &cluster.nodes {
        loop {
            let report: Json = node.get("/v1/cluster").await.json().await.unwrap();
            if report["epoch"] == 2 {
                assert_eq!(report["replicationFactor"], 2);
                assert_eq!(
                    report["ownership"]["owned"], 271,
                    "RF=2 of 2: every partition"
                );
                break;
            }
            assert!(Instant::now() < deadline, "epoch 2 not installed: {report}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn digests(cluster: &TestCluster, node: usize) -> Vec<Vec<u64>> {
    let mut peer = cluster.peer(node).await;
    let mut all = Vec::new();
    for partition in 0..271 {
        let request = proto::DigestRequest {
            sender: Some(current()),
            partition,
        };
        all.push(
            peer.partition_digest(request)
                .await
                .unwrap()
                .into_inner()
                .buckets,
        );
    }
    all
}

#[tokio::test]
async fn anti_entropy_repairs_a_replica_that_missed_writes() {
    let cluster = TestCluster::start_with(2, "2", &["--anti-entropy-interval", "1s"]);
    // Records reach node-0 only, as if node-1 had been down for them.
    let records = (0..200)
        .map(|i| proto::Record {
            key: format!("k{i}").into_bytes(),
            value: format!("v{i}").into_bytes(),
            hlc: 1_000 + i,
            writer: 7,
            expires_at_ms: 0,
            tombstone: false,
        })
        .collect();
    let applied = cluster
        .peer(0)
        .await
        .apply(proto::ApplyRequest {
            sender: Some(current()),
            records,
            hint: false,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(applied.applied, 200);
    // (node-1 may already be repairing: its 1 s round can start at any moment. That all
    // 200 records reached it through anti-entropy is checked by `recordsRepaired` below.)

    let deadline = Instant::now() + Duration::from_secs(20);
    let report = loop {
        let report: Json = cluster.nodes[1]
            .get("/v1/cluster")
            .await
            .json()
            .await
            .unwrap();
        let keys = cluster.nodes[1].stats().await["keys"].clone();
        if keys == 200 && report["sync"]["recordsRepaired"].as_u64() >= Some(200) {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "node-1 not repaired: {keys} keys, {report}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(report["sync"]["recordsRepaired"], 200, "{report}");
    assert_eq!(digests(&cluster, 0).await, digests(&cluster, 1).await);
    let read = cluster.nodes[1]
        .http
        .get(cluster.nodes[1].url("/v1/keys/k42"))
        .header("x-kache-consistency", "one")
        .send()
        .await
        .unwrap();
    assert_eq!(
        read.text().await.unwrap(),
        "v42",
        "served from node-1's own copy"
    );
}

#[tokio::test]
async fn a_frozen_replica_converges_after_it_resumes() {
    let cluster = TestCluster::start_with(3, "3", &["--anti-entropy-interval", "1s"]);
    cluster.nodes[2].signal("STOP");
    for i in 0..300 {
        let response = put(&cluster.nodes[0], &format!("k{i}"), &format!("v{i}"), None).await;
        assert!(
            response.status().is_success(),
            "quorum write {i} while a replica is frozen"
        );
    }
    // Let the writes to the frozen replica time out, then thaw it.
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.nodes[2].signal("CONT");

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reference = digests(&cluster, 0).await;
        if digests(&cluster, 1).await == reference && digests(&cluster, 2).await == reference {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "replicas did not converge within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for node in &cluster.nodes {
        assert_eq!(node.stats().await["keys"], 300);
    }
}

#[tokio::test]
async fn a_sigkilled_node_restarts_empty_and_resyncs_before_it_is_ready() {
    // Anti-entropy off: the restarted node must get its data from its startup sync.
    let mut cluster = TestCluster::start_with(3, "2", &["--anti-entropy-interval", "0"]);
    let mut acknowledged = Vec::new();
    for i in 0..200 {
        if put(&cluster.nodes[0], &format!("k{i}"), &format!("v{i}"), None)
            .await
            .status()
            .is_success()
        {
            acknowledged.push(i);
        }
    }
    assert_eq!(
        acknowledged.len(),
        200,
        "all writes succeed while every node is up"
    );

    cluster.nodes[2].child.kill().unwrap();
    cluster.nodes[2].child.wait().unwrap();
    let mut refused = 0;
    for i in 200..400 {
        let response = put(&cluster.nodes[0], &format!("k{i}"), &format!("v{i}"), None).await;
        if response.status().is_success() {
            acknowledged.push(i);
        } else {
            // RF=2 and W=quorum: a partition whose other owner is down refuses writes.
            assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
            refused += 1;
        }
    }
    assert!(
        refused > 0 && refused < 200,
        "{refused} writes refused with a node down"
    );

    // Restart empty (same id and address), and watch it become ready.
    let restarted = cluster.spawn(2);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ready = restarted.is_ready();
        let report: Json = restarted.get("/v1/cluster").await.json().await.unwrap();
        if ready {
            assert_eq!(
                report["ownership"]["pending"], 0,
                "ready only once synced: {report}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node never became ready: {report}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.nodes[2] = restarted;

    for &i in &acknowledged {
        for node in &cluster.nodes {
            let read = node
                .http
                .get(node.url(&format!("/v1/keys/k{i}")))
                .header("x-kache-consistency", "one")
                .send()
                .await
                .unwrap();
            assert_eq!(
                read.status(),
                StatusCode::OK,
                "acknowledged k{i} via {}",
                node.addr
            );
            assert_eq!(read.text().await.unwrap(), format!("v{i}"));
        }
    }
}

/// Waits until every node in `nodes` reports `epoch` with no move in progress and no
/// partition held that it does not own.
async fn wait_settled(cluster: &TestCluster, nodes: &[usize], epoch: u64) -> Duration {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(60);
    for &i in nodes {
        loop {
            let report: Json = cluster.nodes[i]
                .get("/v1/cluster")
                .await
                .json()
                .await
                .unwrap();
            let settled = report["epoch"] == epoch
                && report["rebalance"]["active"] == false
                && report["ownership"]["heldNotOwned"] == 0
                && report["ownership"]["pending"] == 0;
            if settled {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node-{i} did not settle at epoch {epoch}: {report}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    started.elapsed()
}

#[derive(Default)]
struct Checks {
    reads: u64,
    /// Reads made while a membership move was in progress.
    during_moves: u64,
    misses: u64,
    wrong: u64,
    failed: u64,
    acknowledged: Vec<usize>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaling_3_to_5_to_2_loses_nothing_and_never_misses() {
    // RF=1, anti-entropy off: only the rebalancer can move data.
    let cluster = std::sync::Arc::new(TestCluster::start_members(
        5,
        "1",
        &[0, 1, 2],
        &["--anti-entropy-interval", "0"],
    ));
    const KEYS: usize = 5_000;
    for batch in 0..KEYS / 100 {
        let items: Vec<Json> = (batch * 100..(batch + 1) * 100)
            .map(|i| serde_json::json!({"key": format!("k{i}"), "value": format!("v{i}")}))
            .collect();
        let node = &cluster.nodes[batch % 3];
        let reply = node.batch_put(items).await;
        assert!(reply.iter().all(|i| i["status"].as_u64().unwrap() < 300));
    }

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let moving = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (cluster, stop, moving) = (cluster.clone(), stop.clone(), moving.clone());
        tokio::spawn(async move {
            let mut checks = Checks::default();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let node = &cluster.nodes[i % 5];
                let key = i % KEYS;
                match node
                    .http
                    .get(node.url(&format!("/v1/keys/k{key}")))
                    .send()
                    .await
                {
                    Ok(r) if r.status() == StatusCode::OK => {
                        if r.text().await.unwrap() != format!("v{key}") {
                            checks.wrong += 1;
                        }
                    }
                    Ok(r) if r.status() == StatusCode::NOT_FOUND => checks.misses += 1,
                    _ => checks.failed += 1,
                }
                checks.reads += 1;
                if moving.load(std::sync::atomic::Ordering::Relaxed) {
                    checks.during_moves += 1;
                }
                i += 7;
            }
            checks
        })
    };
    let writer = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            let mut checks = Checks::default();
            let mut i = 0usize;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let node = &cluster.nodes[i % 5];
                match put(node, &format!("new{i}"), &format!("n{i}"), None)
                    .await
                    .status()
                {
                    s if s.is_success() => checks.acknowledged.push(i),
                    _ => checks.failed += 1,
                }
                i += 1;
            }
            checks
        })
    };

    tokio::time::sleep(Duration::from_millis(500)).await;
    moving.store(true, std::sync::atomic::Ordering::Relaxed);
    cluster.write_members(2, "1", &[0, 1, 2, 3, 4]);
    let grow = wait_settled(&cluster, &[0, 1, 2, 3, 4], 2).await;
    cluster.write_members(3, "1", &[0, 1]);
    let shrink = wait_settled(&cluster, &[0, 1, 2, 3, 4], 3).await;
    moving.store(false, std::sync::atomic::Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let reads = reader.await.unwrap();
    let writes = writer.await.unwrap();
    println!(
        "grow 3->5 settled in {grow:?}, shrink 5->2 in {shrink:?}; {} reads ({} during the moves), {} writes acknowledged",
        reads.reads,
        reads.during_moves,
        writes.acknowledged.len()
    );
    assert!(
        reads.during_moves > 100,
        "the reader ran during the moves ({} reads)",
        reads.during_moves
    );
    assert_eq!(
        (reads.misses, reads.wrong, reads.failed),
        (0, 0, 0),
        "reads during the moves"
    );
    assert_eq!(writes.failed, 0, "writes during the moves");

    // The removed nodes hold nothing now; stop them and check everything on the two left.
    let cluster = std::sync::Arc::try_unwrap(cluster)
        .ok()
        .expect("tasks finished");
    let mut cluster = cluster;
    for _ in 2..5 {
        let mut node = cluster.nodes.pop().unwrap();
        let report: Json = node.get("/v1/cluster").await.json().await.unwrap();
        assert_eq!(
            node.stats().await["keys"],
            0,
            "a removed node handed everything off: {report}"
        );
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    }
    let mut total = 0;
    for node in &cluster.nodes {
        total += node.stats().await["keys"].as_u64().unwrap();
    }
    assert_eq!(
        usize::try_from(total).unwrap(),
        KEYS + writes.acknowledged.len(),
        "one copy of every key (RF=1)"
    );
    for key in 0..KEYS {
        assert_eq!(
            get(&cluster.nodes[key % 2], &format!("k{key}")).await,
            (StatusCode::OK, format!("v{key}"))
        );
    }
    for &i in &writes.acknowledged {
        assert_eq!(
            get(&cluster.nodes[i % 2], &format!("new{i}")).await,
            (StatusCode::OK, format!("n{i}"))
        );
    }
}

async fn load(cluster: &TestCluster, keys: usize) {
    for batch in 0..keys / 100 {
        let items: Vec<Json> = (batch * 100..(batch + 1) * 100)
            .map(|i| serde_json::json!({"key": format!("k{i}"), "value": format!("v{i}")}))
            .collect();
        let reply = cluster.nodes[0].batch_put(items).await;
        assert!(reply.iter().all(|i| i["status"].as_u64().unwrap() < 300));
    }
}

async fn wait_ready(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !node.is_ready() {
        assert!(
            Instant::now() < deadline,
            "node {} never became ready",
            node.addr
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn all_present(cluster: &TestCluster, via: usize, keys: usize) {
    for key in 0..keys {
        assert_eq!(
            get(&cluster.nodes[via], &format!("k{key}")).await,
            (StatusCode::OK, format!("v{key}")),
            "k{key} via node-{via}"
        );
    }
}

#[tokio::test]
async fn a_rolling_restart_at_rf1_with_drain_loses_nothing() {
    const KEYS: usize = 3_000;
    let mut cluster = TestCluster::start_with(
        3,
        "1",
        &["--anti-entropy-interval", "0", "--shutdown-grace", "10s"],
    );
    load(&cluster, KEYS).await;
    for i in 0..3 {
        // SIGTERM: the node drains (hands off what it alone owns), then exits 0.
        cluster.nodes[i].signal("TERM");
        let status = cluster.nodes[i].wait_exit(Duration::from_secs(20));
        assert_eq!(status.code(), Some(0));
        let restarted = cluster.spawn(i);
        wait_ready(&restarted).await;
        cluster.nodes[i] = restarted;
        all_present(&cluster, (i + 1) % 3, KEYS).await;
    }
    // The hand-offs were pulled back and released: exactly one copy of each key, each on
    // its owner.
    let mut copies = 0;
    for node in &cluster.nodes {
        let report: Json = node.get("/v1/cluster").await.json().await.unwrap();
        assert_eq!(report["ownership"]["heldNotOwned"], 0, "{report}");
        copies += node.stats().await["keys"].as_u64().unwrap();
    }
    assert_eq!(copies, KEYS as u64);
}

#[tokio::test]
async fn writes_during_a_drain_are_refused_or_kept_never_lost() {
    // RF=1: a write that lands on a partition after its hand-off started would leave with
    // the process. The drain fences such writes (a 503 the client sees) instead.
    let mut cluster = TestCluster::start_with(
        3,
        "1",
        &["--anti-entropy-interval", "0", "--shutdown-grace", "10s"],
    );
    load(&cluster, 1_000).await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, http) = (stop.clone(), cluster.nodes[1].http.clone());
        // Through the draining node itself (its own partitions take the local path)
        // and through another node.
        let bases = [
            format!("http://{}", cluster.nodes[0].addr),
            format!("http://{}", cluster.nodes[1].addr),
        ];
        tokio::spawn(async move {
            let mut acked = Vec::new();
            // Bounded: the test stops it once the drained node is back.
            for i in 0..200_000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let base = &bases[i % 2];
                let reply = http
                    .put(format!("{base}/v1/keys/w{i}"))
                    .body(format!("v{i}"))
                    .send()
                    .await;
                if reply.is_ok_and(|r| r.status().is_success()) {
                    acked.push(i);
                }
            }
            acked
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.nodes[0].signal("TERM");
    let status = cluster.nodes[0].wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    let restarted = cluster.spawn(0);
    wait_ready(&restarted).await;
    cluster.nodes[0] = restarted;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Release);
    let acked = writer.await.unwrap();
    assert!(
        acked.len() > 100,
        "the writer made progress: {}",
        acked.len()
    );
    let mut lost = Vec::new();
    for i in &acked {
        let (status, value) = get(&cluster.nodes[2], &format!("w{i}")).await;
        if status != StatusCode::OK || value != format!("v{i}") {
            lost.push(*i);
        }
    }
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged writes lost, e.g. {:?}",
        lost.len(),
        acked.len(),
        &lost[..lost.len().min(5)]
    );
    all_present(&cluster, 2, 1_000).await;
}

#[tokio::test]
async fn a_rolling_restart_at_rf2_without_drain_loses_nothing() {
    const KEYS: usize = 3_000;
    let mut cluster = TestCluster::start_with(3, "2", &["--anti-entropy-interval", "0"]);
    load(&cluster, KEYS).await;
    for i in 0..3 {
        cluster.nodes[i].child.kill().unwrap();
        cluster.nodes[i].child.wait().unwrap();
        let restarted = cluster.spawn(i);
        wait_ready(&restarted).await;
        cluster.nodes[i] = restarted;
    }
    for via in 0..3 {
        all_present(&cluster, via, KEYS).await;
    }
    let mut copies = 0;
    for node in &cluster.nodes {
        copies += node.stats().await["keys"].as_u64().unwrap();
    }
    assert_eq!(copies, 2 * KEYS as u64, "two copies of every key");
}

#[tokio::test]
async fn a_replica_with_old_versions_rejoins_without_resurrecting_anything() {
    let cluster = TestCluster::start_with(3, "3", &["--anti-entropy-interval", "1s"]);
    for i in 0..100 {
        assert!(
            put(&cluster.nodes[0], &format!("k{i}"), "old", None)
                .await
                .status()
                .is_success()
        );
    }
    // node-2 misses every change below: it keeps the old versions and no tombstones.
    cluster.nodes[2].signal("STOP");
    for i in 0..100 {
        let node = &cluster.nodes[0];
        let response = if i % 2 == 0 {
            put(node, &format!("k{i}"), "new", None).await
        } else {
            node.http
                .delete(node.url(&format!("/v1/keys/k{i}")))
                .send()
                .await
                .unwrap()
        };
        assert!(
            response.status().is_success(),
            "change {i} with a replica frozen"
        );
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.nodes[2].signal("CONT");

    // Straight away, through every node (the stale one too), quorum reads see only the
    // newest versions: the old ones lose to newer versions and tombstones.
    for node in &cluster.nodes {
        for i in 0..100 {
            let expected = if i % 2 == 0 {
                (StatusCode::OK, "new".to_owned())
            } else {
                (StatusCode::NOT_FOUND, String::new())
            };
            let (status, body) = get(node, &format!("k{i}")).await;
            let body = if status == StatusCode::OK {
                body
            } else {
                String::new()
            };
            assert_eq!((status, body), expected, "k{i} via {}", node.addr);
        }
    }
    // And node-2's own copy converges: single-replica reads from it agree.
    let deadline = Instant::now() + Duration::from_secs(30);
    'converge: loop {
        let stale = &cluster.nodes[2];
        let mut all_fresh = true;
        for i in 0..100 {
            let read = stale
                .http
                .get(stale.url(&format!("/v1/keys/k{i}")))
                .header("x-kache-consistency", "one")
                .send()
                .await
                .unwrap();
            let fresh = if i % 2 == 0 {
                read.status() == StatusCode::OK && read.text().await.unwrap() == "new"
            } else {
                read.status() == StatusCode::NOT_FOUND
            };
            all_fresh &= fresh;
        }
        if all_fresh {
            break 'converge;
        }
        assert!(
            Instant::now() < deadline,
            "node-2 still serves old versions"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn report(node: &Node) -> Json {
    node.get("/v1/cluster").await.json().await.unwrap()
}

#[tokio::test]
async fn a_node_restarting_during_a_scale_down_pulls_from_the_departing_members() {
    const KEYS: usize = 3_000;
    // RF=1, anti-entropy off: only the startup sync and the rebalancer move data.
    let mut cluster = TestCluster::start_with(
        3,
        "1",
        &["--anti-entropy-interval", "0", "--shutdown-grace", "10s"],
    );
    load(&cluster, KEYS).await;

    // node-0 restarts (SIGTERM: it hands what it alone owns to node-1 and node-2) while
    // the operator scales down: node-2 leaves the members and is listed as departing.
    cluster.nodes[0].signal("TERM");
    let status = cluster.nodes[0].wait_exit(Duration::from_secs(20));
    assert_eq!(status.code(), Some(0));
    cluster.write_list(2, "1", &[0, 1], &[2]);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let report = report(&cluster.nodes[2]).await;
        if report["epoch"] == 2 {
            // node-0 is down, so the move cannot complete: node-2 still holds its data.
            assert_eq!(report["rebalance"]["active"], true, "{report}");
            assert_eq!(report["node"]["role"], "departing", "{report}");
            assert_eq!(report["ownership"]["owned"], 0, "{report}");
            assert!(report["ownership"]["heldNotOwned"].as_u64().unwrap() > 0);
            break;
        }
        assert!(Instant::now() < deadline, "node-2 never saw epoch 2");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // node-0 starts empty at epoch 2. Part of what it owns (its hand-offs to node-2, and
    // node-2's partitions it gains) is only on node-2, which is no longer a member.
    let restarted = cluster.spawn(0);
    wait_ready(&restarted).await;
    cluster.nodes[0] = restarted;
    wait_settled(&cluster, &[0, 1, 2], 2).await;

    let departed = report(&cluster.nodes[2]).await;
    assert_eq!(departed["ownership"]["owned"], 0, "{departed}");
    assert_eq!(departed["node"]["role"], "departing", "{departed}");
    assert_eq!(
        cluster.nodes[2].stats().await["keys"],
        0,
        "node-2 handed everything off: {departed}"
    );
    let mut copies = 0;
    for node in &cluster.nodes[..2] {
        copies += node.stats().await["keys"].as_u64().unwrap();
    }
    assert_eq!(copies, KEYS as u64, "one copy of every key on the members");
    for via in 0..2 {
        all_present(&cluster, via, KEYS).await;
    }
}

#[tokio::test]
async fn a_node_in_no_list_starts_ready_owns_nothing_and_forwards() {
    let ports = free_ports(3);
    let members = format!(
        "node-0=127.0.0.1:{},node-1=127.0.0.1:{}",
        ports[0], ports[1]
    );
    let nodes: Vec<Node> = (0..3)
        .map(|i| {
            let grpc = format!("127.0.0.1:{}", ports[i]);
            let id = format!("node-{i}");
            Node::start_with(
                &[
                    "--http-addr",
                    "127.0.0.1:0",
                    "--grpc-addr",
                    &grpc,
                    "--resp-addr",
                    "127.0.0.1:0",
                ],
                &[
                    "--node-id",
                    &id,
                    "--members",
                    &members,
                    "--replication-factor",
                    "2",
                ],
            )
        })
        .collect();
    for node in &nodes {
        wait_ready(node).await;
    }
    // A pod the operator has not added yet: ready (it holds all it owns: nothing), and
    // honest about it.
    let outsider = report(&nodes[2]).await;
    assert_eq!(outsider["epoch"], 1, "{outsider}");
    assert_eq!(outsider["node"]["role"], "absent", "{outsider}");
    assert_eq!(outsider["node"]["ready"], true, "{outsider}");
    assert_eq!(outsider["ownership"]["owned"], 0, "{outsider}");
    assert_eq!(report(&nodes[0]).await["node"]["role"], "member");

    // It forwards: writes through it land on the two members, reads through it find them.
    for i in 0..50 {
        let response = put(&nodes[2], &format!("k{i}"), &format!("v{i}"), None).await;
        assert!(response.status().is_success(), "write {i} via the outsider");
    }
    assert_eq!(
        nodes[2].stats().await["keys"],
        0,
        "the outsider stores nothing"
    );
    for i in 0..50 {
        assert_eq!(
            get(&nodes[2], &format!("k{i}")).await,
            (StatusCode::OK, format!("v{i}"))
        );
    }
    for node in &nodes[..2] {
        assert_eq!(node.stats().await["keys"], 50, "RF=2 over two members");
    }
}

/// How to start the ghost member `node-2` of [`hold_move_open`] again.
struct Ghost {
    grpc: String,
}

impl Ghost {
    fn start(&self, members_file: &std::path::Path) -> Node {
        Node::start_with(
            &[
                "--http-addr",
                "127.0.0.1:0",
                "--grpc-addr",
                &self.grpc,
                "--resp-addr",
                "127.0.0.1:0",
            ],
            &[
                "--node-id",
                "node-2",
                "--members-file",
                members_file.to_str().unwrap(),
            ],
        )
    }
}

/// Publishes epoch 2 (`members` plus `node-2`, RF 1) and holds the move to it open: the
/// ghost `node-2` reports epoch 2 but never finishes its startup sync, because its own
/// list names a member that does not exist, which it waits for. Start it again with the
/// shared list ([`Ghost::start`]) to let the move complete.
fn hold_move_open(cluster: &TestCluster, members: &[usize]) -> (Node, Ghost) {
    let ports = free_ports(2);
    let ghost = Ghost {
        grpc: format!("127.0.0.1:{}", ports[0]),
    };
    let list = |extra: &str| {
        let mut yaml = "epoch: 2\npartitions: 271\nreplicationFactor: 1\nmembers:\n".to_owned();
        for &i in members {
            yaml.push_str(&format!(
                "- {{id: node-{i}, address: 127.0.0.1:{}}}\n",
                cluster.grpc_ports[i]
            ));
        }
        yaml.push_str(&format!(
            "- {{id: node-2, address: {}}}\n{extra}",
            ghost.grpc
        ));
        yaml
    };
    let ghost_file = cluster.dir.join("ghost.yaml");
    let phantom = format!("- {{id: phantom, address: 127.0.0.1:{}}}\n", ports[1]);
    std::fs::write(&ghost_file, list(&phantom)).unwrap();
    let node = ghost.start(&ghost_file);
    let tmp = cluster.dir.join("members.yaml.tmp");
    std::fs::write(&tmp, list("")).unwrap();
    std::fs::rename(&tmp, &cluster.members_file).unwrap();
    (node, ghost)
}

/// A node restarted in the middle of a move routes as its peers do. Before, it took its
/// first list for a settled one: at RF 1 it wrote a key of a moving partition to the new
/// owner alone, acknowledged it, and the old owner, still the one reads count, answered
/// 404. The fault suite found it (a 10-round soak); this pins it.
#[tokio::test]
async fn a_node_restarted_during_a_move_writes_where_its_peers_read() {
    let mut cluster = TestCluster::start_members(2, "1", &[0, 1], &[]);
    let owner = async |cluster: &TestCluster, key: &str| -> Json {
        let placement: Json = cluster.nodes[0]
            .get(&format!("/v1/cluster/keys/{key}"))
            .await
            .json()
            .await
            .unwrap();
        placement["owners"][0].clone()
    };
    // Keys node-0 owns at epoch 1 ...
    let mut owned_by_0 = Vec::new();
    for i in 0..300 {
        let key = format!("m{i}");
        if owner(&cluster, &key).await == "node-0" {
            owned_by_0.push(key);
        }
    }
    let (ghost, _) = hold_move_open(&cluster, &[0, 1]);
    // node-0 is moving (its report says so) when node-1 restarts.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report: Json = cluster.nodes[0]
            .get("/v1/cluster")
            .await
            .json()
            .await
            .unwrap();
        if report["epoch"] == 2 && report["rebalance"]["active"] == true {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-0 did not start the move: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    cluster.nodes[1].child.kill().unwrap();
    cluster.nodes[1].child.wait().unwrap();
    cluster.nodes[1] = cluster.spawn(1);
    wait_ready(&cluster.nodes[1]).await;
    // ... and node-2 owns at epoch 2.
    let mut moving = Vec::new();
    for key in owned_by_0 {
        if owner(&cluster, &key).await == "node-2" && moving.len() < 5 {
            moving.push(key);
        }
    }
    assert_eq!(moving.len(), 5, "keys moving from node-0 to node-2");
    for key in &moving {
        let written = put(&cluster.nodes[1], key, "new", None).await;
        assert!(
            written.status().is_success(),
            "{key}: both owners are up: {}",
            written.status()
        );
        let (status, body) = get(&cluster.nodes[0], key).await;
        assert_eq!(
            (status, body.as_str()),
            (StatusCode::OK, "new"),
            "{key}: acknowledged through node-1, then read through node-0"
        );
    }
    drop(ghost);
}

/// Issue 10, item 8 (suspected, proven and fixed here): a write from a coordinator still
/// on the old epoch that reaches the old owner *after* the new owner's catch-up must not
/// be acknowledged and then dropped when the move completes.
///
/// The move 1 -> 2 (node-1 joins, taking partitions from node-0) is held open after
/// node-1 caught up: the third member, node-2, reports epoch 2 but never finishes its
/// startup sync (its own list names a member that does not exist, which it waits for).
/// In that window a raw `Apply` on epoch 1 reaches node-0. Then node-2 is started
/// normally, the move completes, and node-0 drops what it handed off. Whatever node-0
/// acknowledged must be readable afterwards.
#[tokio::test]
async fn a_late_write_on_the_old_epoch_is_refused_not_lost() {
    let cluster = TestCluster::start_members(2, "1", &[0], &[]);
    let (mut ghost, ghost_args) = hold_move_open(&cluster, &[0, 1]);

    // node-1 caught up (synced epoch 2) while the move stays open (node-2 is not synced).
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let report: Json = cluster.nodes[1]
            .get("/v1/cluster")
            .await
            .json()
            .await
            .unwrap();
        if report["node"]["syncedEpoch"] == 2 {
            assert_eq!(report["rebalance"]["active"], true, "{report}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node-1 did not catch up: {report}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A key that moves from node-0 to node-1.
    let mut key = None;
    for i in 0..10_000 {
        let candidate = format!("late-{i}");
        let placement: Json = cluster.nodes[1]
            .get(&format!("/v1/cluster/keys/{candidate}"))
            .await
            .json()
            .await
            .unwrap();
        if placement["owners"][0] == "node-1" {
            key = Some(candidate);
            break;
        }
    }
    let key = key.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    let now_ms = u64::try_from(now_ms).unwrap();
    let reply = cluster
        .peer(0)
        .await
        .apply(proto::ApplyRequest {
            sender: Some(proto::Sender {
                node_id: "node-1".into(),
                ..sender(kache_node::cluster::wire::PROTOCOL_VERSION)
            }),
            records: vec![proto::Record {
                key: key.clone().into_bytes(),
                value: b"late".to_vec(),
                hlc: now_ms << 16,
                writer: 7,
                expires_at_ms: 0,
                tombstone: false,
            }],
            hint: false,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let acknowledged = reply.applied > 0 || reply.not_owner > 0;

    // Let the move complete: node-2 comes back with the real list and syncs.
    ghost.child.kill().unwrap();
    ghost.child.wait().unwrap();
    ghost = ghost_args.start(&cluster.members_file);
    ghost.wait_ready(Duration::from_secs(30));
    wait_settled(&cluster, &[0, 1], 2).await;
    let (status, body) = get(&cluster.nodes[1], &key).await;
    assert!(
        !acknowledged || (status == StatusCode::OK && body == "late"),
        "node-0 acknowledged a write on the old epoch ({reply:?}), and after the move it reads {status} {body:?}"
    );
    assert!(
        reply.epoch_behind > 0,
        "the old owner tells the coordinator it is behind: {reply:?}"
    );
    drop(ghost);
}
