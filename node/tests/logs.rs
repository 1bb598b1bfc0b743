//! Proves, over real processes, that `--log-format json` writes nothing but JSON lines, and
//! that one client request's `X-Request-Id` is echoed and appears in the log lines of the
//! node that took the request and of the replicas it wrote to (single writes and batches).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{BIN, Node, StaticCluster};
use serde_json::{Value as Json, json};

/// The request spans and their lines (the coordinator's `served`, the replicas' `applied
/// a peer write`), which are off at info: the one directive docs/operations.md gives.
const FILTER: &str = "info,kache_node::request=debug";

/// Each line as a JSON object; panics naming the first line that is not one.
fn parse_all<'a>(who: &str, lines: impl IntoIterator<Item = &'a String>) -> Vec<Json> {
    lines
        .into_iter()
        .map(|line| match serde_json::from_str::<Json>(line) {
            Ok(object @ Json::Object(_)) => object,
            other => panic!("{who} wrote a line that is not a JSON object ({other:?}): {line}"),
        })
        .collect()
}

/// The lines `node` logged since it last was asked, waiting up to `within` for one that
/// `wanted` accepts. Returns every line read (each checked to be JSON).
fn lines_until(
    node: &Node,
    who: &str,
    within: Duration,
    wanted: impl Fn(&Json) -> bool,
) -> Vec<Json> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let logs = node.logs.lock().unwrap();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = logs.recv_timeout(left.min(Duration::from_millis(100))) else {
            if Instant::now() >= deadline {
                return seen;
            }
            continue;
        };
        let object = parse_all(who, [&line]).remove(0);
        let found = wanted(&object);
        seen.push(object);
        if found {
            return seen;
        }
    }
}

fn request_id_of(line: &Json) -> Option<&str> {
    line["span"]["request_id"].as_str()
}

fn carries(line: &Json, id: &str, span: &str) -> bool {
    request_id_of(line) == Some(id) && line["span"]["name"] == span
}

#[tokio::test]
async fn one_request_id_is_in_the_json_logs_of_the_coordinator_and_its_replicas() {
    let env = vec![("RUST_LOG", FILTER)];
    let cluster = StaticCluster::start(
        &[env.clone(), env.clone(), env],
        "3",
        &["--log-format", "json"],
    );
    for (i, node) in cluster.nodes.iter().enumerate() {
        parse_all(&format!("node-{i} at startup"), &node.startup_logs);
    }
    let coordinator = &cluster.nodes[0];

    let id = format!("it-logs-{:016x}", fastrand::u64(..));
    let response = coordinator
        .put_key("traced", "v", Some(("X-Request-Id", &id)))
        .await;
    let status = response.status();
    assert!(status.is_success(), "{status}");
    assert_eq!(
        response.headers()["x-request-id"].to_str().unwrap(),
        id,
        "the client's id is echoed"
    );

    // The coordinator's span: its `served` line has the id, the method and the route
    // template (never the key).
    let lines = lines_until(coordinator, "node-0", Duration::from_secs(5), |line| {
        carries(line, &id, "request") && line["message"] == "served"
    });
    let served = lines.last().expect("lines");
    assert_eq!(
        served["message"], "served",
        "node-0 logged no served line for {id}"
    );
    assert_eq!(served["span"]["method"], "PUT");
    assert_eq!(served["span"]["route"], "/v1/keys/{key}");
    assert_eq!(served["status"], status.as_u16());

    // Every replica took the write (RF 3); at least the one in the quorum has logged it
    // by now, and the other within moments.
    for (i, replica) in cluster.nodes.iter().enumerate().skip(1) {
        let lines = lines_until(
            replica,
            &format!("node-{i}"),
            Duration::from_secs(5),
            |line| carries(line, &id, "peer"),
        );
        let applied = lines
            .last()
            .filter(|line| carries(line, &id, "peer"))
            .unwrap_or_else(|| panic!("node-{i} logged nothing with request id {id}"));
        assert_eq!(applied["message"], "applied a peer write");
        assert_eq!(applied["span"]["method"], "Apply");
        assert_eq!(applied["span"]["from"], "node-0");
        assert_eq!(applied["applied"], 1);
    }

    // A batch's writes run on tasks of their own: they carry the request's id too.
    let batch_id = format!("it-batch-{:016x}", fastrand::u64(..));
    let response = coordinator
        .http
        .post(coordinator.url("/v1/batch/put"))
        .header("X-Request-Id", &batch_id)
        .json(&json!({ "items": [{ "key": "b1", "value": "1" }, { "key": "b2", "value": "2" }] }))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let replica = &cluster.nodes[1];
    let lines = lines_until(replica, "node-1", Duration::from_secs(5), |line| {
        carries(line, &batch_id, "peer")
    });
    assert!(
        lines
            .last()
            .is_some_and(|line| carries(line, &batch_id, "peer")),
        "node-1 logged no write of batch {batch_id}"
    );

    // Without a valid id of its own, a request gets a generated one, logged the same way.
    let response = coordinator
        .put_key("untraced", "v", Some(("X-Request-Id", "not a valid id")))
        .await;
    let generated = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated.len(), 16, "{generated}");
    let lines = lines_until(coordinator, "node-0", Duration::from_secs(5), |line| {
        carries(line, &generated, "request")
    });
    assert!(
        lines
            .last()
            .is_some_and(|line| carries(line, &generated, "request"))
    );
}

/// Reads a pipe's lines on a thread of its own.
fn collect(pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<String>> {
    std::thread::spawn(move || BufReader::new(pipe).lines().map_while(Result::ok).collect())
}

#[tokio::test]
async fn a_json_node_writes_only_json_lines_on_stdout_and_stderr() {
    // Everything at debug, the libraries' lines included, and a clean shutdown: every
    // line the process writes, whoever writes it, must be one JSON object.
    let mut child = Command::new(BIN)
        .args([
            "--log-format",
            "json",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--resp-addr",
            "off",
            "--node-id",
            "json-only",
        ])
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn kache-node");
    let stdout = collect(child.stdout.take().unwrap());
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut lines = Vec::new();
    let addr = loop {
        let line = stderr.next().expect("a listening line").expect("utf-8");
        let addr = serde_json::from_str::<Json>(&line).ok().and_then(|line| {
            line["http_addr"]
                .as_str()?
                .parse::<std::net::SocketAddr>()
                .ok()
        });
        lines.push(line);
        if let Some(addr) = addr {
            break addr;
        }
    };
    let stderr = std::thread::spawn(move || stderr.map_while(Result::ok).collect::<Vec<_>>());

    let http = reqwest::Client::new();
    let url = |path: &str| format!("http://{addr}{path}");
    let put = http.put(url("/v1/keys/k")).body("v").send().await.unwrap();
    assert_eq!(put.status(), 201);
    assert_eq!(
        http.get(url("/v1/keys/k")).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        http.get(url("/v1/keys/none"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    let bad = http
        .put(url("/v1/keys/k?ttl=soon"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let pid = child.id().to_string();
    let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(killed.success());
    let exited = child.wait().unwrap();
    assert!(exited.success(), "a clean shutdown: {exited}");

    lines.extend(stderr.join().unwrap());
    let objects = parse_all("stderr", &lines);
    assert!(
        objects.iter().any(|line| line["message"] == "served"),
        "the debug lines were written too"
    );
    for line in &objects {
        assert!(
            line["timestamp"].is_string() && line["level"].is_string(),
            "{line}"
        );
    }
    parse_all("stdout", &stdout.join().unwrap());
}
