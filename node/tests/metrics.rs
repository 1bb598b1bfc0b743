//! Proves that `/metrics` of a real node is OpenMetrics text that promtool parses with no
//! unexplained lint problem, that the request histograms count exactly the requests served
//! (HTTP by route, method and status class; RESP by command and outcome), and that in a
//! two-node cluster a request for a key the node holds no copy of is counted as
//! forwarded, with the peer calls behind it, ok and failed, counted by peer and method.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Node, StaticCluster};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// promtool: `$PROMTOOL`, or the one `scripts/go-tool.sh` builds (once) and caches.
fn promtool() -> PathBuf {
    if let Ok(path) = std::env::var("PROMTOOL") {
        return path.into();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/go-tool.sh");
    let built = Command::new("bash")
        .arg(script)
        .arg("promtool")
        .output()
        .expect("run scripts/go-tool.sh");
    assert!(
        built.status.success(),
        "scripts/go-tool.sh promtool: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    PathBuf::from(String::from_utf8(built.stdout).unwrap().trim())
}

/// Runs `promtool check metrics` on `text`. It must parse (exit 1 is a parse error), and
/// each lint problem (exit 3) must be one explained here:
/// - promtool reads the classic text format, where a counter's HELP names the `_total`
///   sample; OpenMetrics names the family without it, so each counter reads as
///   "`<family>_total` no help text";
/// - `kache_clock_offset_abs_ms` keeps the name dashboards already use (its seconds
///   twin is `kache_clock_offset_seconds`).
fn promtool_check(text: &str) {
    let mut check = Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = check.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        matches!(output.status.code(), Some(0 | 3)),
        "promtool could not read /metrics ({:?}): {said}\n{text}",
        output.status
    );
    for problem in said.lines().filter(|line| !line.trim().is_empty()) {
        let counter_help = problem
            .strip_suffix(" no help text")
            .and_then(|sample| sample.strip_suffix("_total"))
            .is_some_and(|family| text.contains(&format!("# TYPE {family} counter\n")));
        let kept_name = problem
            == "kache_clock_offset_abs_ms metric names should not contain abbreviated units";
        assert!(counter_help || kept_name, "promtool: {problem}\n{text}");
    }
}

async fn scrape(node: &Node) -> String {
    let response = node.get("/metrics").await;
    assert_eq!(
        response.headers()["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = response.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    text
}

/// The value of the sample `series` (name and labels, as written), 0 when absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.parse().unwrap())
}

/// A RESP connection that reads single-line and bulk replies.
struct Resp(BufReader<TcpStream>);

impl Resp {
    async fn connect(addr: SocketAddr) -> Self {
        Self(BufReader::new(TcpStream::connect(addr).await.unwrap()))
    }

    /// Sends a command; its reply's first line (a bulk reply's data instead).
    async fn call(&mut self, args: &[&str]) -> String {
        let mut request = format!("*{}\r\n", args.len());
        for arg in args {
            request.push_str(&format!("${}\r\n{arg}\r\n", arg.len()));
        }
        self.0
            .get_mut()
            .write_all(request.as_bytes())
            .await
            .unwrap();
        let mut line = String::new();
        tokio::time::timeout(Duration::from_secs(10), self.0.read_line(&mut line))
            .await
            .expect("a reply in time")
            .unwrap();
        let line = line.trim_end().to_owned();
        match line
            .strip_prefix('$')
            .map(|len| len.parse::<i64>().unwrap())
        {
            Some(len) if len >= 0 => {
                let mut data = vec![0; usize::try_from(len).unwrap() + 2];
                self.0.read_exact(&mut data).await.unwrap();
                String::from_utf8_lossy(&data[..data.len() - 2]).into_owned()
            }
            _ => line,
        }
    }
}

#[tokio::test]
async fn a_scrape_passes_promtool_and_the_histograms_count_every_request_served() {
    let node = Node::start(&[]);
    node.wait_ready(Duration::from_secs(10));
    let before = scrape(&node).await;
    promtool_check(&before);

    for i in 0..5 {
        assert!(
            node.put_key(&format!("m{i}"), "v", None)
                .await
                .status()
                .is_success()
        );
        assert_eq!(node.get_key(&format!("m{i}")).await.0, 200);
    }
    for i in 0..3 {
        assert_eq!(node.get_key(&format!("absent{i}")).await.0, 404);
    }
    let mut resp = Resp::connect(node.resp.unwrap()).await;
    for _ in 0..3 {
        assert_eq!(resp.call(&["GET", "m0"]).await, "v");
    }
    assert!(
        resp.call(&["FOO"])
            .await
            .starts_with("-ERR unknown command")
    );
    assert!(resp.call(&["GET"]).await.starts_with("-ERR wrong number"));

    let after = scrape(&node).await;
    promtool_check(&after);
    let moved = |series: &str| value(&after, series) - value(&before, series);
    let keys = |method: &str, outcome: &str| {
        format!(
            "kache_http_request_duration_seconds_count{{route=\"/v1/keys/{{key}}\",method=\"{method}\",outcome=\"{outcome}\"}}"
        )
    };
    assert_eq!(moved(&keys("PUT", "2xx")), 5.0, "{after}");
    assert_eq!(moved(&keys("GET", "2xx")), 5.0, "{after}");
    assert_eq!(moved(&keys("GET", "4xx")), 3.0, "{after}");
    // The first scrape is counted once it was answered.
    assert_eq!(
        moved(
            "kache_http_request_duration_seconds_count{route=\"/metrics\",method=\"GET\",outcome=\"2xx\"}"
        ),
        1.0
    );
    assert_eq!(
        moved("kache_http_responses_total{class=\"2xx\"}"),
        11.0,
        "the responses counter is the histograms' counts: 5 PUT, 5 GET, 1 scrape"
    );
    let resp_count = |command: &str, outcome: &str| {
        format!(
            "kache_resp_command_duration_seconds_count{{command=\"{command}\",outcome=\"{outcome}\"}}"
        )
    };
    assert_eq!(moved(&resp_count("get", "ok")), 3.0, "{after}");
    assert_eq!(moved(&resp_count("get", "error")), 1.0, "arity error");
    assert_eq!(moved(&resp_count("other", "error")), 1.0, "unknown command");
    assert_eq!(
        value(
            &after,
            "kache_http_request_duration_seconds_bucket{le=\"+Inf\",route=\"/v1/keys/{key}\",method=\"GET\",outcome=\"2xx\"}"
        ),
        value(&after, &keys("GET", "2xx")),
        "+Inf holds every observation"
    );
    // 8 hits (5 HTTP, 3 RESP) and 3 misses.
    let ratio = value(&after, "kache_hit_ratio");
    assert!((ratio - 8.0 / 11.0).abs() < 1e-9, "{ratio}");
    assert_eq!(value(&after, "kache_members"), 1.0);
    assert_eq!(
        value(&after, "kache_partitions_owned"),
        value(&after, "kache_partitions")
    );
}

#[tokio::test]
async fn forwarded_requests_and_the_peer_calls_behind_them_are_counted() {
    let mut cluster = StaticCluster::start(&[vec![], vec![]], "1", &[]);
    let keys = cluster.keys_owned_by("node-1", 3).await;
    let coordinator = &cluster.nodes[0];
    let before = scrape(coordinator).await;
    for key in &keys {
        assert!(
            coordinator
                .put_key(key, "v", None)
                .await
                .status()
                .is_success()
        );
        assert_eq!(
            coordinator.get_key(key).await,
            (reqwest::StatusCode::OK, "v".into())
        );
    }
    let mut resp = Resp::connect(coordinator.resp.unwrap()).await;
    assert_eq!(resp.call(&["GET", &keys[0]]).await, "v");

    let after = scrape(coordinator).await;
    promtool_check(&after);
    let moved = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(
        moved("kache_forwarded_requests_total{protocol=\"http\",outcome=\"ok\"}"),
        6.0,
        "3 PUT and 3 GET of keys node-1 alone holds: {after}"
    );
    assert_eq!(
        moved("kache_forwarded_requests_total{protocol=\"resp\",outcome=\"ok\"}"),
        1.0
    );
    let calls = |method: &str, outcome: &str| {
        format!(
            "kache_peer_rpc_duration_seconds_count{{peer=\"node-1\",method=\"{method}\",outcome=\"{outcome}\"}}"
        )
    };
    assert_eq!(moved(&calls("Apply", "ok")), 3.0, "{after}");
    assert_eq!(moved(&calls("Get", "ok")), 4.0, "{after}");
    assert_eq!(
        value(&after, "kache_members"),
        2.0,
        "both nodes are in the list"
    );

    // The owner is gone: the forwarded read fails, and so do the calls behind it.
    cluster.nodes[1].child.kill().unwrap();
    cluster.nodes[1].child.wait().unwrap();
    let coordinator = &cluster.nodes[0];
    assert_eq!(coordinator.get_key(&keys[0]).await.0, 503);
    let failed = scrape(coordinator).await;
    promtool_check(&failed);
    assert_eq!(
        value(
            &failed,
            "kache_forwarded_requests_total{protocol=\"http\",outcome=\"error\"}"
        ),
        1.0,
        "{failed}"
    );
    assert_eq!(
        value(&failed, "kache_quorum_failures_total")
            - value(&after, "kache_quorum_failures_total"),
        1.0,
        "the 503 is a quorum failure: {failed}"
    );
    assert!(value(&failed, &calls("Get", "error")) >= 1.0, "{failed}");
    let errors: f64 = failed
        .lines()
        .filter(|line| {
            line.starts_with("kache_peer_rpc_errors_total{peer=\"node-1\",method=\"Get\",code=")
        })
        .map(|line| line.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(
        errors,
        value(&failed, &calls("Get", "error")),
        "every failed call has its code counted: {failed}"
    );
}

/// `tests/monitoring/metric-names.txt`'s `[node]` section: name -> type, as a scrape
/// names them (a counter with its `_total`).
fn listed_node_families() -> std::collections::BTreeMap<String, String> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/monitoring/metric-names.txt");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(str::trim)
        .skip_while(|line| *line != "[node]")
        .skip(1)
        .take_while(|line| !line.starts_with('['))
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let mut fields = line.split_whitespace();
            (
                fields.next().unwrap().to_owned(),
                fields.next().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The families a scrape declares (`# TYPE` lines): name -> type, a counter with its `_total`.
fn scraped_families(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|declared| {
            let (name, kind) = declared.split_once(' ').unwrap();
            let name = if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            };
            (name, kind.to_owned())
        })
        .collect()
}

/// The list the alerts and the dashboard are checked against (operator/tests/monitoring.rs)
/// is exactly what a node with a data dir and an upstream exports: nothing listed is missing, nothing
/// exported is unlisted, and each has the listed type.
#[tokio::test]
async fn a_node_exports_exactly_the_families_the_alerts_and_the_dashboard_are_checked_against() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    // An upstream (never called) brings the read-through families.
    let node = Node::start(&[
        "--data-dir",
        &data_dir,
        "--upstream",
        "api=http://127.0.0.1:9",
    ]);
    node.wait_ready(Duration::from_secs(10));
    assert!(node.put_key("k", "v", None).await.status().is_success());
    let scraped = scraped_families(&scrape(&node).await);
    let listed = listed_node_families();
    assert!(listed.len() > 40, "{listed:?}");
    let differences: Vec<String> = listed
        .iter()
        .filter(|(name, kind)| scraped.get(*name) != Some(kind))
        .map(|(name, kind)| format!("listed {name} {kind}, scraped {:?}", scraped.get(name)))
        .chain(
            scraped
                .iter()
                .filter(|(name, _)| !listed.contains_key(*name))
                .map(|(name, kind)| format!("scraped {name} {kind}, not listed")),
        )
        .collect();
    assert!(
        differences.is_empty(),
        "tests/monitoring/metric-names.txt [node] and a real scrape differ:\n{}",
        differences.join("\n")
    );
}
