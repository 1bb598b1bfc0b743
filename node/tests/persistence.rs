//! `--data-dir` on real processes: a node SIGKILLed under a recorded write load comes back
//! with every acknowledged write (`--fsync always`), or all but the last second's
//! (`everysec`, measured); a damaged log tail is cut off; a full disk answers 507, keeps
//! serving reads and loses nothing acknowledged; a million keys reload within the memory
//! bound; and a whole 3-node cluster SIGKILLed at once comes back with nothing
//! acknowledged lost and no deleted key back.
//!
//! Histories are checked the way Jepsen checks them: every operation and its outcome is
//! recorded, a timeout, a 5xx or a refused connection is an unknown outcome (the write may
//! or may not have landed), and each key has one writer, so what a key may hold after the
//! restart is exact: its last acknowledged write, or a write with an unknown outcome made
//! after it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Node, Options, StaticCluster, is_root};
use serde_json::json;

/// What a key may hold after a restart, by its single writer's history.
#[derive(Debug, Clone, Default)]
struct KeyHistory {
    /// The last acknowledged state (`None`: deleted or never written), and when.
    acked: Option<(Option<String>, Instant)>,
    /// States written after it with an unknown outcome.
    unknown: Vec<Option<String>>,
}

#[derive(Debug, Default, Clone)]
struct History {
    keys: HashMap<String, KeyHistory>,
    ops: u64,
    acked: u64,
    unknown: u64,
}

impl History {
    fn record(&mut self, key: &str, state: Option<String>, outcome: Outcome) {
        self.ops += 1;
        let entry = self.keys.entry(key.to_owned()).or_default();
        match outcome {
            Outcome::Acked => {
                self.acked += 1;
                entry.acked = Some((state, Instant::now()));
                entry.unknown.clear();
            }
            Outcome::Unknown => {
                self.unknown += 1;
                entry.unknown.push(state);
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Acked,
    Unknown,
}

/// What the check found.
#[derive(Debug, Default)]
struct Verdict {
    checked: usize,
    /// Keys holding neither their last acknowledged state nor a later unknown one, with
    /// how long before the kill the lost acknowledgement came.
    lost: Vec<(String, Option<String>, Option<String>, Duration)>,
}

/// Reads every key of `history` through `node` and compares.
async fn check(history: &History, node: &Node, killed_at: Instant) -> Verdict {
    let mut verdict = Verdict::default();
    for (key, kh) in &history.keys {
        let (status, body) = node.get_key(key).await;
        let found = match status.as_u16() {
            200 => Some(body),
            404 => None,
            other => panic!("reading {key} after the restart: {other} {body}"),
        };
        verdict.checked += 1;
        let Some((acked, at)) = &kh.acked else {
            continue;
        };
        if &found == acked || kh.unknown.contains(&found) {
            continue;
        }
        verdict.lost.push((
            key.clone(),
            acked.clone(),
            found,
            killed_at.saturating_duration_since(*at),
        ));
    }
    verdict
}

/// Prints what the check of `history` found; fails if anything acknowledged was lost
/// (a deleted key that is back counts as lost).
fn assert_nothing_lost(label: &str, history: &History, verdict: &Verdict) {
    println!(
        "{label}: {} ops, {} acknowledged, {} unknown, {} keys checked, {} lost",
        history.ops,
        history.acked,
        history.unknown,
        verdict.checked,
        verdict.lost.len()
    );
    assert!(
        verdict.lost.is_empty(),
        "{label}: acknowledged writes lost: {:?}",
        verdict.lost
    );
}

/// Each node's environment: its own data dir, `--fsync always`.
fn persistent_envs(dirs: &[DataDir]) -> Vec<Vec<(&str, &str)>> {
    dirs.iter()
        .map(|d| vec![("KACHE_DATA_DIR", d.path()), ("KACHE_FSYNC", "always")])
        .collect()
}

/// One writer per key group: PUTs (and one DELETE in eight) through `targets` in turn,
/// recording each outcome, until `stop` is set or `max_ops` are done.
async fn writer(
    worker: usize,
    targets: Vec<String>,
    history: Arc<Mutex<History>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    max_ops: usize,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    for op in 0..max_ops {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let key = format!("w{worker}-k{}", op % 25);
        let base = &targets[op % targets.len()];
        let url = format!("{base}/v1/keys/{key}");
        let (state, sent) = if op % 8 == 7 {
            (None, http.delete(&url).send().await)
        } else {
            let value = format!("w{worker}-op{op}");
            (Some(value.clone()), http.put(&url).body(value).send().await)
        };
        let outcome = match sent {
            Ok(response) if response.status().is_success() => Outcome::Acked,
            // Deleting a key that is not there: it is absent, as the delete wanted.
            Ok(response) if state.is_none() && response.status() == 404 => Outcome::Acked,
            Ok(response) if response.status().is_client_error() => {
                panic!("{key}: {}", response.status())
            }
            // 5xx (503 unavailable, 507 a full disk after the write was applied),
            // timeouts and refused connections: unknown.
            Ok(_) | Err(_) => Outcome::Unknown,
        };
        history.lock().unwrap().record(&key, state, outcome);
    }
}

/// Runs `workers` writers against `targets` for `load_for`, then calls `kill` while they
/// run, then stops them. Returns the history and when the kill happened.
async fn load_then_kill(
    targets: Vec<String>,
    workers: usize,
    load_for: Duration,
    kill: impl FnOnce(),
) -> (History, Instant) {
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            tokio::spawn(writer(
                w,
                targets.clone(),
                history.clone(),
                stop.clone(),
                100_000,
            ))
        })
        .collect();
    tokio::time::sleep(load_for).await;
    // The writers send nothing new after the kill; what is in flight then fails (an
    // unknown outcome: it may have landed before the kill).
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    kill();
    let killed_at = Instant::now();
    for task in tasks {
        task.await.unwrap();
    }
    let history = history.lock().unwrap().clone();
    (history, killed_at)
}

/// A temporary data dir, removed on drop.
struct DataDir(PathBuf);

impl DataDir {
    fn new(label: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kache-persist-{label}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn single(dir: &DataDir, fsync: &str, extra: &[&str]) -> Node {
    let mut args = vec!["--data-dir", dir.path(), "--fsync", fsync];
    args.extend_from_slice(extra);
    let node = Node::start(&args);
    node.wait_ready(Duration::from_secs(60));
    node
}

fn sigkill(node: &mut Node) {
    node.signal("KILL");
    node.wait_exit(Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_fsync_always_loses_no_acknowledged_write() {
    let dir = DataDir::new("always");
    let mut node = single(&dir, "always", &[]);
    let target = vec![node.url("")];
    let (history, killed_at) = load_then_kill(target, 8, Duration::from_millis(2500), || {
        node.signal("KILL");
    })
    .await;
    node.wait_exit(Duration::from_secs(10));
    assert!(
        history.acked > 500,
        "too little load to mean anything: {history:?}"
    );
    let node = single(&dir, "always", &[]);
    let verdict = check(&history, &node, killed_at).await;
    assert_nothing_lost("fsync always", &history, &verdict);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_with_fsync_everysec_loses_at_most_the_last_second() {
    let dir = DataDir::new("everysec");
    let mut node = single(&dir, "everysec", &[]);
    let target = vec![node.url("")];
    let (history, killed_at) = load_then_kill(target, 8, Duration::from_millis(2500), || {
        node.signal("KILL");
    })
    .await;
    node.wait_exit(Duration::from_secs(10));
    let node = single(&dir, "everysec", &[]);
    let verdict = check(&history, &node, killed_at).await;
    let oldest_loss = verdict.lost.iter().map(|l| l.3).max();
    // What this measures: a SIGKILL loses what the flusher had not yet handed to the
    // kernel (it writes within milliseconds of a write); a power loss could lose what the
    // kernel had not synced, up to a second, which no test here can cut power to show.
    println!(
        "fsync everysec: {} ops, {} acknowledged, {} lost to SIGKILL (oldest acknowledged {:?} before the kill)",
        history.ops,
        history.acked,
        verdict.lost.len(),
        oldest_loss
    );
    assert!(
        verdict
            .lost
            .iter()
            .all(|(_, _, _, before)| *before < Duration::from_secs(1)),
        "a write acknowledged more than a second before the kill was lost: {:?}",
        verdict.lost
    );
}

#[tokio::test]
async fn a_damaged_log_tail_is_cut_off_at_the_last_good_write() {
    let dir = DataDir::new("torn");
    let mut node = single(&dir, "always", &[]);
    for i in 0..20 {
        assert_eq!(
            node.put_key(&format!("k{i}"), "v", None).await.status(),
            201
        );
    }
    sigkill(&mut node);
    let log = last_log(&dir.0);
    let mut bytes = std::fs::read(&log).unwrap();
    // Half a frame of garbage after the last good one, as a crash mid-write leaves.
    bytes.extend_from_slice(&[200, 0, 0, 0, 7, 7, 7, 7, 1, 2]);
    std::fs::write(&log, bytes).unwrap();
    let node = single(&dir, "always", &[]);
    for i in 0..20 {
        assert_eq!(node.get_key(&format!("k{i}")).await.0, 200);
    }
    let stats = node.stats().await;
    assert_eq!(stats["persistence"]["torn_tails"], 1, "{stats}");
    assert_eq!(stats["persistence"]["truncated_bytes"], 10, "{stats}");
}

fn last_log(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "kal"))
        .collect();
    logs.sort();
    logs.pop().expect("a log file")
}

/// A tmpfs of its own, unmounted (and removed) on drop.
struct SmallDisk {
    dir: DataDir,
}

impl SmallDisk {
    fn mount(size: &str) -> Self {
        let dir = DataDir::new("full");
        let status = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                dir.path(),
            ])
            .status()
            .unwrap();
        assert!(status.success(), "mount a tmpfs");
        Self { dir }
    }

    fn resize(&self, size: &str) {
        let status = std::process::Command::new("mount")
            .args(["-o", &format!("remount,size={size}"), self.dir.path()])
            .status()
            .unwrap();
        assert!(status.success(), "remount the tmpfs");
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .args(["-l", self.dir.path()])
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_answers_507_keeps_reads_and_loses_nothing_acknowledged() {
    assert!(
        is_root(),
        "this test mounts a small tmpfs to fill, as root (CI runs as root)"
    );
    let disk = SmallDisk::mount("256k");
    let args = ["--snapshot-interval", "1h"];
    let mut node = single(&disk.dir, "always", &args);
    let value = "x".repeat(4096);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..200 {
        let key = format!("k{i}");
        let response = node.put_key(&key, &value, None).await;
        match response.status().as_u16() {
            201 => acked.push(key),
            507 => {
                let body: serde_json::Value = response.json().await.unwrap();
                refused = Some(body);
                break;
            }
            other => panic!("{key}: {other}"),
        }
    }
    let refused = refused.expect("the disk filled within 200 writes of 4 KiB");
    assert_eq!(
        refused["error"]["code"], "insufficient_storage",
        "{refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("data dir"),
        "{refused}"
    );
    assert!(acked.len() > 10, "the disk took some writes first");
    // Writes stay refused, reads go on.
    let again = node.put_key("another", "v", None).await;
    assert_eq!(again.status(), 507);
    assert_eq!(
        node.get_key("another").await.0,
        404,
        "a refused write changes nothing"
    );
    for key in &acked {
        assert_eq!(node.get_key(key).await.0, 200, "{key} reads on a full disk");
    }
    let stats = node.stats().await;
    assert!(stats["persistence"]["failure"].is_string(), "{stats}");
    assert!(
        node.is_ready(),
        "a full disk does not take the node out of service"
    );

    // Room again: the log catches up by itself and writes are taken.
    disk.resize("8m");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if node.put_key("after", "v", None).await.status() == 201 {
            acked.push("after".to_owned());
            break;
        }
        assert!(Instant::now() < deadline, "writes never resumed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sigkill(&mut node);
    let node = single(&disk.dir, "always", &args);
    for key in &acked {
        assert_eq!(
            node.get_key(key).await.0,
            200,
            "{key} survived the full disk"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_million_keys_reload_within_the_memory_bound() {
    let dir = DataDir::new("million");
    const KEYS: usize = 1_000_000;
    const BATCH: usize = 1_000;
    let mut node = single(&dir, "no", &["--max-memory", "1GiB", "--resp-addr", "off"]);
    let value = "v".repeat(100);
    let started = Instant::now();
    for batch in 0..KEYS / BATCH {
        let items = (0..BATCH)
            .map(|i| json!({ "key": format!("key-{}", batch * BATCH + i), "value": value }))
            .collect();
        let reply = node.batch_put(items).await;
        assert!(
            reply.iter().all(|item| item["status"] == 201),
            "{:?}",
            reply.first()
        );
    }
    println!("wrote {KEYS} keys in {:?}", started.elapsed());
    node.signal("TERM");
    node.wait_exit(Duration::from_secs(60));

    // Back with room for all of them.
    let started = Instant::now();
    let mut node = single(&dir, "no", &["--max-memory", "1GiB", "--resp-addr", "off"]);
    let ready_after = started.elapsed();
    let stats = node.stats().await;
    assert_eq!(stats["keys"], KEYS, "{stats}");
    assert_eq!(node.get_key("key-123456").await.1, value);
    println!(
        "reloaded {KEYS} keys: ready after {ready_after:?}, loading took {} ms, {} bytes charged",
        stats["persistence"]["load_ms"], stats["bytes"]
    );
    node.signal("TERM");
    node.wait_exit(Duration::from_secs(60));

    // Back with room for a fraction: the bound holds while loading.
    let bound: u64 = 64 << 20;
    let node = single(&dir, "no", &["--max-memory", "64MiB", "--resp-addr", "off"]);
    let stats = node.stats().await;
    let charged = stats["bytes"].as_u64().unwrap();
    assert!(
        charged <= bound,
        "{charged} bytes charged over the {bound}-byte bound"
    );
    assert!(stats["evictions"].as_u64().unwrap() > 0, "{stats}");
    let rss = stats["resident_memory_bytes"].as_u64().unwrap_or(0);
    println!("reloaded into 64 MiB: {charged} bytes charged, {rss} bytes resident");
    assert!(
        rss < bound * 3,
        "resident memory {rss} is far beyond the bound: loading buffers are not bounded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_whole_cluster_sigkilled_at_once_comes_back_with_every_acknowledged_write() {
    let dirs: Vec<DataDir> = (0..3)
        .map(|i| DataDir::new(&format!("cluster{i}")))
        .collect();
    let envs = persistent_envs(&dirs);
    let mut cluster = StaticCluster::start(&envs, "2", &["--anti-entropy-interval", "1s"]);
    let targets: Vec<String> = cluster.nodes.iter().map(|n| n.url("")).collect();
    let (history, killed_at) = {
        let nodes = &cluster.nodes;
        load_then_kill(targets, 6, Duration::from_millis(2500), || {
            for node in nodes {
                node.signal("KILL");
            }
        })
        .await
    };
    for node in &mut cluster.nodes {
        node.wait_exit(Duration::from_secs(10));
    }
    assert!(history.acked > 300, "too little load: {history:?}");
    let restarted: Vec<Node> = (0..3).map(|i| cluster.launch(i)).collect();
    cluster.nodes = restarted;
    for node in &cluster.nodes {
        node.wait_ready(Duration::from_secs(60));
    }
    // Each loaded its own dir whole: nothing is reported lost.
    for node in &cluster.nodes {
        let report: serde_json::Value = node.get("/v1/cluster").await.json().await.unwrap();
        // Absent when empty.
        assert!(
            report["node"]["partitionsWithoutCopy"]
                .as_array()
                .is_none_or(Vec::is_empty),
            "a member that loaded its own dir reports no partition lost: {}",
            report["node"]
        );
    }
    // Quorum reads through every node: each sees what was acknowledged.
    for node in &cluster.nodes {
        let verdict = check(&history, node, killed_at).await;
        assert_nothing_lost("whole-cluster SIGKILL", &history, &verdict);
    }
}

/// One RESP connection writing pipelines of 16 SETs to its own keys until the node dies
/// or `stop` is set; every reply read is an acknowledgement, the rest of a pipeline is an
/// unknown outcome.
async fn resp_writer(
    worker: usize,
    addr: std::net::SocketAddr,
    history: Arc<Mutex<History>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let Ok(stream) = tokio::net::TcpStream::connect(addr).await else {
        return;
    };
    let mut stream = BufReader::new(stream);
    for round in 0..100_000usize {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let sent: Vec<(String, String)> = (0..16)
            .map(|i| (format!("r{worker}-k{i}"), format!("r{worker}-round{round}")))
            .collect();
        let mut pipeline = Vec::new();
        for (key, value) in &sent {
            pipeline.extend_from_slice(
                format!(
                    "*3\r\n$3\r\nSET\r\n${}\r\n{key}\r\n${}\r\n{value}\r\n",
                    key.len(),
                    value.len()
                )
                .as_bytes(),
            );
        }
        let mut broken = stream.get_mut().write_all(&pipeline).await.is_err();
        let mut line = String::new();
        for (key, value) in sent {
            line.clear();
            broken = broken || !matches!(stream.read_line(&mut line).await, Ok(n) if n > 0);
            let outcome = if broken {
                Outcome::Unknown
            } else {
                assert_eq!(line, "+OK\r\n", "SET {key}");
                Outcome::Acked
            };
            history.lock().unwrap().record(&key, Some(value), outcome);
        }
        if broken {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resp_pipelines_with_fsync_always_lose_no_acknowledged_write_to_sigkill() {
    let dir = DataDir::new("resp");
    let mut node = single(&dir, "always", &[]);
    let addr = node.resp.expect("a RESP listener");
    let history = Arc::new(Mutex::new(History::default()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks: Vec<_> = (0..8)
        .map(|w| tokio::spawn(resp_writer(w, addr, history.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(2000)).await;
    // Killed mid-pipeline: replies that came out before the kill are acknowledgements.
    node.signal("KILL");
    let killed_at = Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in tasks {
        task.await.unwrap();
    }
    node.wait_exit(Duration::from_secs(10));
    let history = history.lock().unwrap().clone();
    assert!(history.acked > 1000, "too little load: {history:?}");
    let node = single(&dir, "always", &[]);
    let verdict = check(&history, &node, killed_at).await;
    assert_nothing_lost("RESP pipelines, fsync always", &history, &verdict);
}

/// Tombstones (1 s) purged everywhere after anti-entropy agreed.
async fn wait_no_tombstones(node: &Node) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = node.stats().await;
        if stats["tombstones"] == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "tombstones never purged: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_that_left_never_brings_its_old_data_back() {
    let dirs: Vec<DataDir> = (0..3).map(|i| DataDir::new(&format!("left{i}"))).collect();
    let envs = persistent_envs(&dirs);
    let mut cluster = StaticCluster::start_with(
        &envs,
        "2",
        &Options {
            // Deletes are forgotten quickly once every owner agrees: the old copies on
            // node-2's disk would then have no tombstone left to lose to.
            extra: &["--tombstone-ttl", "1s", "--anti-entropy-interval", "500ms"],
            listed: Some(3),
            ..Options::default()
        },
    );
    for i in 0..60 {
        let put = cluster.nodes[0]
            .put_key(&format!("k{i}"), "old", None)
            .await;
        assert!(put.status().is_success(), "{}", put.status());
    }
    // node-2 leaves as the operator makes it leave: departing, handed off, dropped from
    // the list, then stopped.
    cluster.write_list(2, &[0, 1], &[2]);
    for i in 0..3 {
        cluster.wait_settled(i, 2).await;
    }
    cluster.write_list(3, &[0, 1], &[]);
    for i in 0..2 {
        cluster.wait_settled(i, 3).await;
    }
    cluster.nodes[2].signal("TERM");
    cluster.nodes[2].wait_exit(Duration::from_secs(30));
    assert!(
        dirs[2].0.join("departed").exists(),
        "a member that handed off everything and left marks its data dir"
    );
    // Meanwhile the cluster deletes and overwrites, and forgets the deletes.
    for i in 0..30 {
        let deleted = cluster.nodes[0]
            .http
            .delete(cluster.nodes[0].url(&format!("/v1/keys/k{i}")))
            .send()
            .await
            .unwrap();
        assert_eq!(deleted.status(), 204);
    }
    for i in 30..60 {
        let put = cluster.nodes[0]
            .put_key(&format!("k{i}"), "new", None)
            .await;
        assert!(put.status().is_success(), "{}", put.status());
    }
    for i in 0..2 {
        wait_no_tombstones(&cluster.nodes[i]).await;
    }
    // node-2 joins again, with its old dir.
    cluster.write_list(4, &[0, 1, 2], &[]);
    cluster.nodes[2] = cluster.launch(2);
    cluster.nodes[2].wait_ready(Duration::from_secs(60));
    for i in 0..3 {
        cluster.wait_settled(i, 4).await;
    }
    // Two things keep its old data out: its log ends with the drops of its hand-off, and
    // its dir is marked departed (which also covers a member stopped mid-hand-off, whose
    // drain pushed its partitions without dropping them). The mark made the start discard
    // the dir.
    let stats = cluster.nodes[2].stats().await;
    assert_eq!(stats["persistence"]["discarded"], 1, "{stats}");
    // A few anti-entropy rounds, where an old copy would spread if it were loaded.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in &cluster.nodes {
        for i in 0..30 {
            assert_eq!(
                node.get_key(&format!("k{i}")).await.0,
                404,
                "k{i} came back"
            );
        }
        for i in 30..60 {
            assert_eq!(node.get_key(&format!("k{i}")).await.1, "new");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hints_held_through_a_whole_cluster_restart_go_back_to_their_owners() {
    let dirs: Vec<DataDir> = (0..3).map(|i| DataDir::new(&format!("hints{i}"))).collect();
    let envs = persistent_envs(&dirs);
    let mut cluster = StaticCluster::start_with(
        &envs,
        "2",
        &Options {
            listed: Some(3),
            ..Options::default()
        },
    );
    for i in 0..200 {
        let put = cluster.nodes[0].put_key(&format!("k{i}"), "v", None).await;
        assert!(put.status().is_success(), "{}", put.status());
    }
    // Stopped one after another, as a rollout of every pod may stop them: node-1 drains
    // with node-2 gone, so the partitions they share have their last copy on node-1,
    // which pushes them to node-0 as hints.
    for i in [2, 1, 0] {
        cluster.nodes[i].signal("TERM");
        cluster.nodes[i].wait_exit(Duration::from_secs(30));
    }
    // Every member back at once, each with its data dir: nobody is a sync source.
    let restarted: Vec<Node> = (0..3).map(|i| cluster.launch(i)).collect();
    cluster.nodes = restarted;
    for node in &cluster.nodes {
        node.wait_ready(Duration::from_secs(60));
    }
    // Settled: no node holds data it does not own (node-0 gave the hints back).
    for i in 0..3 {
        cluster.wait_settled(i, 1).await;
    }
    for node in &cluster.nodes {
        for i in 0..200 {
            assert_eq!(node.get_key(&format!("k{i}")).await.1, "v", "k{i}");
        }
    }
}
