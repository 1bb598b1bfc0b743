//! A history-checking fault suite, in the spirit of Jepsen: concurrent clients record
//! every operation with when it was invoked, when it completed and how (acknowledged,
//! failed, or unknown: a timeout or a 5xx), while the nodes are SIGKILLed and restarted,
//! frozen past the tombstone TTL, cut off from each other (an iptables DROP on one peer
//! link, both ways) and run with a skewed clock, and a fourth node joins and leaves
//! through all of it. A checker then verifies
//! the history: every acknowledged write is what the final read returns unless a later
//! write superseded it (lost: none), no acknowledged delete comes back (resurrected:
//! none), and quorum reads never go backwards for a key.
//!
//! `KACHE_FAULT_ROUNDS=N` repeats the fault cycle N times (the soak); the default, one,
//! is what `scripts/test.sh` runs. `KACHE_FAULT_TLS=1` runs it with mutual TLS between
//! the nodes (`--peer-tls-dir`, as a CacheCluster runs by default). The figures are in
//! docs/reliability.md.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{LinkCut, Options, StaticCluster, is_root};
use reqwest::StatusCode;

const KEYS: usize = 8;
/// Keys from here on are probes: written once at `all` before a node is frozen, deleted
/// (at quorum) while it is frozen, and never written again. Nothing may bring them back.
const PROBES: usize = 100;
const CLIENTS: usize = 4;
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Put(String),
    Delete,
    Get,
}

#[derive(Debug, Clone, PartialEq)]
enum Outcome {
    /// Acknowledged; for a GET, what it read (value and version) or None for absent.
    Ok(Option<(String, (u64, u64))>),
    /// Definitely did nothing (a 4xx, such as a DELETE of an absent key).
    Fail,
    /// A timeout, a refused connection or a 5xx: it may or may not have happened.
    Unknown,
}

#[derive(Debug, Clone)]
struct Op {
    key: usize,
    /// The node's URL it went through.
    via: String,
    kind: Kind,
    invoked: f64,
    completed: f64,
    outcome: Outcome,
}

fn version_of(etag: &str) -> Option<(u64, u64)> {
    let inner = etag.trim_matches('"');
    let (hlc, node) = inner.split_once('-')?;
    Some((
        u64::from_str_radix(hlc, 16).ok()?,
        u64::from_str_radix(node, 16).ok()?,
    ))
}

/// Runs one operation through `base` (a node's URL) and records it.
async fn run_op(http: &reqwest::Client, base: &str, key: usize, kind: Kind, start: Instant) -> Op {
    let url = format!("{base}/v1/keys/f{key}");
    let invoked = start.elapsed().as_secs_f64();
    let request = match &kind {
        Kind::Put(value) => http.put(&url).body(value.clone()),
        Kind::Delete => http.delete(&url),
        Kind::Get => http.get(&url),
    };
    // Writes at `all` where that is what the probe keys need (see below); else defaults.
    let request = if key >= PROBES && matches!(kind, Kind::Put(_)) {
        request.header("x-kache-consistency", "all")
    } else {
        request
    };
    let sent = request.send().await;
    let outcome = match sent {
        Err(_) => Outcome::Unknown,
        Ok(response) => {
            let status = response.status();
            let etag = response
                .headers()
                .get("etag")
                .and_then(|v| v.to_str().ok())
                .and_then(version_of);
            match (&kind, status) {
                (Kind::Get, StatusCode::OK) => match (response.text().await, etag) {
                    (Ok(value), Some(version)) => Outcome::Ok(Some((value, version))),
                    _ => Outcome::Unknown,
                },
                (Kind::Get, StatusCode::NOT_FOUND) => Outcome::Ok(None),
                (_, s) if s.is_success() => Outcome::Ok(None),
                (_, s) if s.is_client_error() => Outcome::Fail,
                _ => Outcome::Unknown,
            }
        }
    };
    Op {
        key,
        via: base.to_owned(),
        kind,
        invoked,
        completed: start.elapsed().as_secs_f64(),
        outcome,
    }
}

/// What the checker found.
#[derive(Debug, Default)]
struct Verdict {
    ops: usize,
    acknowledged: usize,
    unknown: usize,
    lost: Vec<String>,
    resurrected: Vec<String>,
    backwards: Vec<String>,
}

fn is_acked(op: &Op) -> bool {
    matches!(op.outcome, Outcome::Ok(_))
}

/// Checks the history of `key` against its final state (`final_value`: None for absent).
/// When `op` may still take effect: its completion, or never-ending for an unknown
/// outcome. A request the client gave up on may sit in a frozen node and land seconds
/// later, after writes the client made since (Jepsen's "info" operations).
fn ended(op: &Op) -> f64 {
    if op.outcome == Outcome::Unknown {
        f64::INFINITY
    } else {
        op.completed
    }
}

fn check_key(key: usize, ops: &[&Op], final_value: Option<&str>, verdict: &mut Verdict) {
    let writes: Vec<&Op> = ops
        .iter()
        .copied()
        .filter(|op| !matches!(op.kind, Kind::Get))
        .filter(|op| op.outcome != Outcome::Fail)
        .collect();
    // A write may be the final state only if no acknowledged write began after it ended.
    let superseded = |w: &Op| {
        writes
            .iter()
            .filter(|op| is_acked(op))
            .any(|later| later.invoked > ended(w))
    };
    let explained = match final_value {
        Some(value) => writes
            .iter()
            .any(|w| w.kind == Kind::Put(value.to_owned()) && !superseded(w)),
        None => {
            let initial_superseded = writes.iter().any(|op| is_acked(op));
            !initial_superseded
                || writes
                    .iter()
                    .any(|w| w.kind == Kind::Delete && !superseded(w))
        }
    };
    if !explained {
        let last_acked = writes
            .iter()
            .filter(|op| is_acked(op))
            .max_by(|a, b| a.completed.total_cmp(&b.completed));
        let what = format!("f{key}: final {final_value:?}, last acknowledged {last_acked:?}");
        match last_acked.map(|w| &w.kind) {
            Some(Kind::Delete) => verdict.resurrected.push(what),
            _ => verdict.lost.push(what),
        }
    }
    // No read returns a value that an acknowledged write had replaced before the read
    // began: a delete's key coming back, or an overwritten value.
    for read in ops.iter().filter(|op| op.kind == Kind::Get) {
        let Outcome::Ok(Some((value, _))) = &read.outcome else {
            continue;
        };
        let Some(source) = writes.iter().find(|w| w.kind == Kind::Put(value.clone())) else {
            verdict
                .lost
                .push(format!("f{key}: read {value:?}, which nobody wrote"));
            continue;
        };
        let replaced = writes
            .iter()
            .find(|w| is_acked(w) && w.invoked > ended(source) && w.completed < read.invoked);
        match replaced.map(|w| &w.kind) {
            Some(Kind::Delete) => verdict
                .resurrected
                .push(format!("f{key}: read {value:?} after {replaced:?}")),
            Some(_) => verdict
                .lost
                .push(format!("f{key}: read {value:?} after {replaced:?}")),
            None => {}
        }
    }
    // Quorum reads never go backwards: a read that began after another ended sees the
    // same version or a newer one.
    let reads: Vec<(f64, f64, (u64, u64))> = ops
        .iter()
        .filter_map(|op| match (&op.kind, &op.outcome) {
            (Kind::Get, Outcome::Ok(Some((_, version)))) => {
                Some((op.invoked, op.completed, *version))
            }
            _ => None,
        })
        .collect();
    for earlier in &reads {
        for later in &reads {
            if later.0 > earlier.1 && later.2 < earlier.2 {
                verdict
                    .backwards
                    .push(format!("f{key}: {earlier:?} then {later:?}"));
            }
        }
    }
}

fn check(history: &[Op], finals: &BTreeMap<usize, Option<String>>) -> Verdict {
    let mut verdict = Verdict {
        ops: history.len(),
        acknowledged: history
            .iter()
            .filter(|op| matches!(op.outcome, Outcome::Ok(_)))
            .count(),
        unknown: history
            .iter()
            .filter(|op| op.outcome == Outcome::Unknown)
            .count(),
        ..Verdict::default()
    };
    for (&key, final_value) in finals {
        let ops: Vec<&Op> = history.iter().filter(|op| op.key == key).collect();
        check_key(key, &ops, final_value.as_deref(), &mut verdict);
    }
    verdict
}

/// One client: random operations on random keys through random nodes until `stop`.
async fn client(
    id: usize,
    bases: Vec<String>,
    start: Instant,
    stop: Arc<Mutex<bool>>,
    history: Arc<Mutex<Vec<Op>>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap_or_default();
    // Bounded: the stop flag ends it within seconds; the cap is a safety net.
    for n in 0..100_000 {
        if *stop
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
        {
            return;
        }
        let key = fastrand::usize(..KEYS);
        let kind = match fastrand::u8(..10) {
            0..=4 => Kind::Put(format!("c{id}-{n}")),
            5..=6 => Kind::Delete,
            _ => Kind::Get,
        };
        let base = &bases[fastrand::usize(..bases.len())];
        let op = run_op(&http, base, key, kind, start).await;
        history
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(op);
    }
}

/// Puts the probes `keys` (at `all`, through node-0), so every replica holds them.
async fn put_probes(http: &reqwest::Client, base: &str, keys: &[usize], start: Instant) -> Vec<Op> {
    let mut ops = Vec::new();
    for &key in keys {
        ops.push(run_op(http, base, key, Kind::Put(format!("probe{key}")), start).await);
    }
    ops
}

/// Reads every probe through every node once the fault is over.
async fn read_probes(
    http: &reqwest::Client,
    bases: &[String],
    keys: &[usize],
    start: Instant,
) -> Vec<Op> {
    let mut ops = Vec::new();
    for &key in keys {
        for base in bases {
            ops.push(run_op(http, base, key, Kind::Get, start).await);
        }
    }
    ops
}

/// Certificates for node-0..node-3 of the cluster "faults", readable by the users the
/// nodes run as (each its own, for the link cut).
#[expect(
    clippy::expect_used,
    reason = "test setup: a failed step fails the test"
)]
fn peer_tls_dir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().expect("a temporary directory");
    let ca = common::certs::Ca::new("faults");
    ca.write_member_dir(
        dir.path(),
        "faults",
        &["node-0", "node-1", "node-2", "node-3"],
    );
    let readable = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .expect("chmod a certificate file");
    };
    readable(dir.path(), 0o755);
    let files = std::fs::read_dir(dir.path()).expect("list the certificates");
    for file in files {
        readable(&file.expect("a directory entry").path(), 0o644);
    }
    dir
}

/// Node `i`'s failed peer exchanges so far (`sync.failures` in its report).
async fn sync_failures(cluster: &StaticCluster, i: usize) -> u64 {
    let node = &cluster.nodes[i];
    let report: Option<serde_json::Value> = node.get("/v1/cluster").await.json().await.ok();
    // 0 when unreadable: the caller compares before and after, and fails.
    report
        .and_then(|r| r["sync"]["failures"].as_u64())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kills_pauses_cuts_skew_and_moves() {
    assert!(
        std::path::Path::new(LIBFAKETIME).exists(),
        "this test needs libfaketime: apt-get install faketime"
    );
    assert!(
        is_root()
            && std::process::Command::new("iptables")
                .arg("--version")
                .output()
                .is_ok(),
        "this test cuts a peer link with iptables, as root: apt-get install iptables"
    );
    let rounds: usize = std::env::var("KACHE_FAULT_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1);
    // node-0's clock runs 300 ms ahead (within the 500 ms bound) the whole time. node-3
    // is not a member at first: it joins and leaves in every round. Each node runs as
    // its own user, so that one peer link can be cut.
    let tls = std::env::var("KACHE_FAULT_TLS")
        .is_ok_and(|v| v == "1")
        .then(peer_tls_dir);
    let tls_dir = tls.as_ref().map(|dir| dir.path().display().to_string());
    let mut extra = vec!["--tombstone-ttl", "1s", "--anti-entropy-interval", "300ms"];
    if let Some(dir) = &tls_dir {
        extra.extend(["--peer-tls-dir", dir.as_str(), "--cluster-id", "faults"]);
    }
    let mut cluster = StaticCluster::start_with(
        &[
            vec![("LD_PRELOAD", LIBFAKETIME), ("FAKETIME", "+0.3")],
            Vec::new(),
            Vec::new(),
            Vec::new(),
        ],
        "3",
        &Options {
            extra: &extra,
            first_uid: Some(46_100),
            listed: Some(3),
        },
    );
    let bases: Vec<String> = cluster.nodes[..3].iter().map(|n| n.url("")).collect();
    let start = Instant::now();
    let stop = Arc::new(Mutex::new(false));
    let history = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|id| {
            tokio::spawn(client(
                id,
                bases.clone(),
                start,
                stop.clone(),
                history.clone(),
            ))
        })
        .collect();

    let mut faults = 0;
    let mut epoch = 1;
    // When each fault began and ended, for the report of a failed run.
    let mut timeline: Vec<(f64, String)> = Vec::new();
    let mut mark = |what: String| timeline.push((start.elapsed().as_secs_f64(), what));
    for round in 0..rounds {
        tokio::time::sleep(Duration::from_secs(2)).await;
        // node-3 joins: partitions move to it while the faults below happen.
        epoch += 1;
        cluster.write_list(epoch, &[0, 1, 2, 3], &[]);
        mark(format!("epoch {epoch}: node-3 joins"));
        faults += 1;
        // SIGKILL a node and restart it (it comes back empty and re-syncs).
        let victim = 1 + round % 2;
        cluster.nodes[victim].child.kill().ok();
        cluster.nodes[victim].child.wait().ok();
        mark(format!("node-{victim} killed"));
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster.nodes[victim] = cluster.launch(victim);
        mark(format!("node-{victim} restarted"));
        faults += 1;
        let restarted = &cluster.nodes[victim];
        let deadline = Instant::now() + Duration::from_secs(30);
        while !restarted.is_ready() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        // Freeze another node for three tombstone TTLs, deleting the probes meanwhile,
        // then let it go.
        let probes: Vec<usize> = (0..5).map(|i| PROBES + round * 10 + i).collect();
        let http = reqwest::Client::new();
        let record = |op: Op| history.lock().unwrap().push(op);
        let record_all = |ops: Vec<Op>| history.lock().unwrap().extend(ops);
        record_all(put_probes(&http, &bases[0], &probes, start).await);
        let frozen = 3 - victim;
        cluster.nodes[frozen].signal("STOP");
        mark(format!("node-{frozen} frozen"));
        for &key in &probes {
            record(run_op(&http, &bases[0], key, Kind::Delete, start).await);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        cluster.nodes[frozen].signal("CONT");
        mark(format!("node-{frozen} thawed"));
        faults += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        record_all(read_probes(&http, &bases, &probes, start).await);

        // Cut the link between node-1 and node-2 both ways for three tombstone TTLs,
        // deleting another set of probes meanwhile (through node-0, which reaches both).
        let cut_probes: Vec<usize> = (5..10).map(|i| PROBES + round * 10 + i).collect();
        record_all(put_probes(&http, &bases[0], &cut_probes, start).await);
        let cut = LinkCut::between(
            cluster.uid(1).unwrap(),
            cluster.grpc_ports[1],
            cluster.uid(2).unwrap(),
            cluster.grpc_ports[2],
        );
        mark("link node-1 <-> node-2 cut".to_owned());
        let failures_before = sync_failures(&cluster, 1).await;
        for &key in &cut_probes {
            record(run_op(&http, &bases[0], key, Kind::Delete, start).await);
        }
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(
            sync_failures(&cluster, 1).await > failures_before,
            "the cut stopped node-1's exchanges with node-2"
        );
        drop(cut);
        mark("link node-1 <-> node-2 healed".to_owned());
        faults += 1;
        tokio::time::sleep(Duration::from_secs(1)).await;
        record_all(read_probes(&http, &bases, &cut_probes, start).await);

        // node-3 leaves: it hands off what it holds, then the list forgets it.
        epoch += 1;
        cluster.write_list(epoch, &[0, 1, 2], &[3]);
        mark(format!("epoch {epoch}: node-3 departing"));
        for i in 0..4 {
            cluster.wait_settled(i, epoch).await;
        }
        epoch += 1;
        cluster.write_list(epoch, &[0, 1, 2], &[]);
        mark(format!("epoch {epoch}: node-3 forgotten"));
        faults += 1;
    }
    for i in 0..3 {
        cluster.wait_settled(i, epoch).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    *stop.lock().unwrap() = true;
    for client in clients {
        client.await.unwrap();
    }
    // Let anti-entropy settle, then read every key from all owners.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let http = reqwest::Client::new();
    let mut finals = BTreeMap::new();
    let keys: std::collections::BTreeSet<usize> =
        history.lock().unwrap().iter().map(|op| op.key).collect();
    for key in keys {
        let url = cluster.nodes[0].url(&format!("/v1/keys/f{key}"));
        let mut value = None;
        for _ in 0..50 {
            let read = http
                .get(&url)
                .header("x-kache-consistency", "all")
                .send()
                .await
                .unwrap();
            match read.status() {
                StatusCode::OK => {
                    value = Some(Some(read.text().await.unwrap()));
                    break;
                }
                StatusCode::NOT_FOUND => {
                    value = Some(None);
                    break;
                }
                _ => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
        finals.insert(
            key,
            value.expect("every key answers once the cluster is whole"),
        );
    }
    let history = history.lock().unwrap().clone();
    let verdict = check(&history, &finals);
    if !(verdict.lost.is_empty() && verdict.resurrected.is_empty() && verdict.backwards.is_empty())
    {
        report_failure(&history, &timeline, &finals);
    }
    println!(
        "fault suite ({} peers): {} ops, {} acknowledged, {} unknown, {faults} faults, {} lost, {} resurrected, {} reads backwards",
        if tls.is_some() {
            "mutual TLS"
        } else {
            "plaintext"
        },
        verdict.ops,
        verdict.acknowledged,
        verdict.unknown,
        verdict.lost.len(),
        verdict.resurrected.len(),
        verdict.backwards.len()
    );
    assert!(verdict.ops > 100, "the clients ran: {verdict:?}");
    assert!(verdict.lost.is_empty(), "lost: {:#?}", verdict.lost);
    assert!(
        verdict.resurrected.is_empty(),
        "resurrected: {:#?}",
        verdict.resurrected
    );
    assert!(
        verdict.backwards.is_empty(),
        "backwards: {:#?}",
        verdict.backwards
    );
}

/// Writes the fault timeline, the whole history in time order and the final values to
/// `target/fault-history.txt` for a failed run.
fn report_failure(
    history: &[Op],
    timeline: &[(f64, String)],
    finals: &BTreeMap<usize, Option<String>>,
) {
    let mut lines: Vec<(f64, String)> = timeline
        .iter()
        .map(|(at, what)| (*at, format!("{at:9.3}           FAULT {what}")))
        .collect();
    lines.extend(history.iter().map(|op| {
        (
            op.invoked,
            format!(
                "{:9.3}-{:9.3} f{} {:?} via {} -> {:?}",
                op.invoked, op.completed, op.key, op.kind, op.via, op.outcome
            ),
        )
    }));
    lines.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut text: Vec<String> = lines.into_iter().map(|(_, line)| line).collect();
    text.extend(
        finals
            .iter()
            .map(|(key, value)| format!("final f{key} = {value:?}")),
    );
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/fault-history.txt");
    if std::fs::write(&path, text.join("\n")).is_ok() {
        println!("the history and the faults are in {}", path.display());
    }
}

/// The checker itself must catch what it is for.
#[test]
fn the_checker_finds_lost_writes_resurrections_and_backward_reads() {
    let op = |key, kind, invoked, completed, outcome| Op {
        key,
        via: String::new(),
        kind,
        invoked,
        completed,
        outcome,
    };
    let put = |v: &str| Kind::Put(v.to_owned());
    let read = |v: &str, hlc| Outcome::Ok(Some((v.to_owned(), (hlc, 0))));
    let history = vec![
        // f0: "b" was acknowledged after "a", but the final state is "a": lost.
        op(0, put("a"), 0.0, 0.1, Outcome::Ok(None)),
        op(0, put("b"), 0.2, 0.3, Outcome::Ok(None)),
        // f1: an acknowledged delete, then "x" comes back: resurrected.
        op(1, put("x"), 0.0, 0.1, Outcome::Ok(None)),
        op(1, Kind::Delete, 0.2, 0.3, Outcome::Ok(None)),
        // f2: concurrent writes: either may win; an unknown write may win too.
        op(2, put("p"), 0.0, 0.5, Outcome::Ok(None)),
        op(2, put("q"), 0.1, 0.4, Outcome::Ok(None)),
        op(2, put("u"), 0.6, 0.9, Outcome::Unknown),
        // f3: reads go backwards (the writes behind them are of unknown outcome).
        op(3, put("n"), 0.0, 0.05, Outcome::Unknown),
        op(3, put("o"), 0.0, 0.05, Outcome::Unknown),
        op(3, Kind::Get, 0.06, 0.1, read("n", 9)),
        op(3, Kind::Get, 0.2, 0.3, read("o", 3)),
        // f4: a read returns what an acknowledged delete had removed before it began.
        op(4, put("r"), 0.0, 0.1, Outcome::Ok(None)),
        op(4, Kind::Delete, 0.2, 0.3, Outcome::Ok(None)),
        op(4, Kind::Get, 0.4, 0.5, read("r", 1)),
        // f5: a write the client gave up on lands late, after an acknowledged delete:
        // legal (it may take effect any time after it was invoked), both as a read and
        // as the final state.
        op(5, put("late"), 0.0, 2.0, Outcome::Unknown),
        op(5, Kind::Delete, 2.1, 2.2, Outcome::Ok(None)),
        op(5, Kind::Get, 3.0, 3.1, read("late", 7)),
    ];
    let mut finals: BTreeMap<usize, Option<String>> = (0..KEYS).map(|k| (k, None)).collect();
    finals.insert(0, Some("a".into()));
    finals.insert(1, Some("x".into()));
    finals.insert(2, Some("u".into()));
    finals.insert(5, Some("late".into()));
    let verdict = check(&history, &finals);
    assert_eq!(verdict.lost.len(), 1, "{verdict:?}");
    assert!(verdict.lost[0].starts_with("f0"));
    assert_eq!(verdict.resurrected.len(), 2, "{verdict:?}");
    assert!(verdict.resurrected[0].starts_with("f1"));
    assert!(verdict.resurrected[1].starts_with("f4"));
    assert_eq!(verdict.backwards.len(), 1, "{verdict:?}");
    // A final value nobody wrote is invented: counted as lost too.
    let mut only_f3 = finals.clone();
    only_f3.insert(0, Some("b".into()));
    only_f3.insert(1, None);
    only_f3.insert(3, Some("z".into()));
    let verdict = check(&history, &only_f3);
    assert_eq!(verdict.lost.len(), 1, "{verdict:?}");
    assert!(verdict.lost[0].starts_with("f3"));
}
