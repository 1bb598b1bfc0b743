//! The Grafana dashboard and the alert rules read only metrics kache exports, through
//! queries Prometheus parses: the dashboard's structure (its variables, the data source and
//! cluster selectors of every query, rate windows), every dashboard query and alert
//! expression through `promtool check rules`, and every metric name they reference against
//! `tests/monitoring/metric-names.txt`, the list a scrape of real processes is compared to.
#![expect(
    clippy::unwrap_used,
    reason = "the helpers read committed files and run promtool; a failure there is a failed test"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use kache_operator::alerts::{self, Scope};
use serde_json::{Value, json};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("charts/kache/dashboards/kache.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

/// (panel title, expr) of every query.
fn queries(dashboard: &Value) -> Vec<(String, String)> {
    panels(dashboard)
        .into_iter()
        .flat_map(|panel| {
            let title = panel["title"].as_str().unwrap().to_owned();
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(move |t| (title.clone(), t["expr"].as_str().unwrap().to_owned()))
        })
        .collect()
}

/// name -> type, from tests/monitoring/metric-names.txt.
fn exported() -> BTreeMap<String, String> {
    listed(None)
}

/// name -> type, from tests/monitoring/metric-names.txt: every section, or only `section`
/// (`[node]`, `[operator]`).
fn listed(section: Option<&str>) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(root().join("tests/monitoring/metric-names.txt")).unwrap();
    let mut current = None;
    text.lines()
        .map(str::trim)
        .filter(|l| {
            if l.starts_with('[') {
                current = Some(*l);
            }
            section.is_none_or(|wanted| current == Some(wanted))
        })
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            let mut fields = l.split_whitespace();
            let name = fields.next().unwrap().to_owned();
            let kind = fields.next().unwrap_or_else(|| panic!("no type: {l}"));
            assert!(
                ["counter", "gauge", "histogram"].contains(&kind),
                "{l}: unknown type"
            );
            (name, kind.to_owned())
        })
        .collect()
}

/// The metric names an expression reads: identifiers outside strings that name kache's,
/// the process collector's or Prometheus's `up` series. (Label names, functions and
/// keywords never start with `kache_` or `process_`.)
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut in_string = false;
    let mut word = String::new();
    let mut previous = ' ';
    let mut flush = |word: &mut String, next: char| {
        if (word.starts_with("kache_") || word.starts_with("process_") || word == "up")
            && next != '('
        {
            names.insert(std::mem::take(word));
        }
        word.clear();
    };
    for c in expr.chars().chain([' ']) {
        if in_string {
            in_string = !(c == '"' && previous != '\\');
        } else if c == '"' {
            in_string = true;
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            word.push(c);
        } else {
            flush(&mut word, c);
        }
        previous = c;
    }
    names
}

/// Checks `name` (as a query writes it) against the exported families: a histogram's
/// series are its name plus `_bucket`, `_sum` or `_count`.
fn is_exported(name: &str, exported: &BTreeMap<String, String>) -> bool {
    if name == "up" || exported.get(name).is_some_and(|kind| kind != "histogram") {
        return true;
    }
    ["_bucket", "_sum", "_count"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|base| exported.get(base).map(String::as_str) == Some("histogram"))
    })
}

#[test]
fn the_dashboard_selects_one_cluster_through_its_variables_and_data_source() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "kache-cluster");
    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(variables["datasource"]["type"], "datasource");
    assert_eq!(variables["datasource"]["query"], "prometheus");
    for name in ["namespace", "cluster"] {
        assert_eq!(variables[name]["type"], "query");
        assert_eq!(variables[name]["datasource"]["uid"], "${datasource}");
    }
    assert!(
        variables["cluster"]["definition"]
            .as_str()
            .unwrap()
            .contains("cachecluster)"),
        "the cluster variable lists the monitors' cachecluster label"
    );

    let all = panels(&dashboard);
    let ids: BTreeSet<_> = all.iter().map(|p| p["id"].as_u64().unwrap()).collect();
    assert_eq!(ids.len(), all.len(), "panel ids are unique");
    for panel in &all {
        let grid = &panel["gridPos"];
        assert!(
            grid["x"].as_u64().unwrap() + grid["w"].as_u64().unwrap() <= 24,
            "{} is wider than the dashboard",
            panel["title"]
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"],
            json!({"type": "prometheus", "uid": "${datasource}"}),
            "{}: the data source variable",
            panel["title"]
        );
        assert!(!panel["description"].as_str().unwrap_or("").is_empty());
        assert!(
            !panel["fieldConfig"]["defaults"]["unit"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{} has no unit",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${datasource}");
        }
    }

    for (title, expr) in queries(&dashboard) {
        // Every selector names this cluster first: the nodes' by namespace and the
        // monitors' `cachecluster` label, the operator's by its `cluster` label (further
        // matchers may follow, such as a read-through outcome).
        for selector in expr.split('{').skip(1) {
            let selector = selector.split('}').next().unwrap();
            let node = "namespace=\"$namespace\", cachecluster=\"$cluster\"";
            assert!(
                selector == node
                    || selector.starts_with(&format!("{node}, "))
                    || selector == "cluster=\"$namespace/$cluster\"",
                "{title}: selector {{{selector}}} in {expr}"
            );
        }
        assert!(
            !expr.contains("{}") && expr.contains('{'),
            "{title}: {expr}"
        );
        // Rate windows follow Grafana's interval and the scrape interval.
        for window in expr.split('[').skip(1) {
            assert!(
                window.starts_with("$__rate_interval]"),
                "{title}: [{window} in {expr}"
            );
        }
    }
}

#[test]
fn the_dashboard_has_the_panels_the_issue_asks_for() {
    let dashboard = dashboard();
    let queries = queries(&dashboard);
    let has = |needle: &str| queries.iter().any(|(_, expr)| expr.contains(needle));
    // Throughput and latency by route.
    assert!(has(
        "sum by (route, method) (rate(kache_http_request_duration_seconds_count"
    ));
    assert!(has(
        "histogram_quantile(0.99, sum by (route, le) (rate(kache_http_request_duration_seconds_bucket"
    ));
    // Hit ratio, memory against the bound, members and epoch, rebalance progress, peer errors.
    for needle in [
        "kache_hits_total",
        "kache_misses_total",
        "kache_memory_max_bytes",
        "kache_memory_used_bytes",
        "kache_members",
        "kache_cluster_epoch",
        "kache_cachecluster_rebalance_partitions_moved",
        "kache_rebalance_partitions_pending",
        "kache_peer_rpc_errors_total",
    ] {
        assert!(has(needle), "no panel reads {needle}");
    }
}

#[test]
fn the_dashboard_and_the_alerts_read_only_exported_metrics() {
    let exported = exported();
    let dashboard = dashboard();
    let mut read = Vec::new();
    for (title, expr) in queries(&dashboard) {
        read.push((format!("dashboard: {title}"), expr));
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if variable["type"] == "query" {
            let definition = variable["definition"].as_str().unwrap().to_owned();
            read.push((format!("variable {}", variable["name"]), definition));
        }
    }
    for alert in alerts::alerts(Scope::All) {
        read.push((format!("alert {}", alert.name), alert.expr));
    }
    let mut unknown = Vec::new();
    for (what, expr) in &read {
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{what} reads no metric: {expr}");
        for name in names {
            if !is_exported(&name, &exported) {
                unknown.push(format!("{what}: {name}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "not in tests/monitoring/metric-names.txt:\n{}",
        unknown.join("\n")
    );
    // The extraction itself: names inside strings or before a parenthesis are not metrics.
    assert_eq!(
        metric_names(
            r#"histogram_quantile(0.9, sum by (le) (rate(kache_x_bucket{a="kache_y"}[5m]))) / up"#
        ),
        BTreeSet::from(["kache_x_bucket".to_owned(), "up".to_owned()])
    );
}

/// promtool, built from the Go module proxy once (scripts/go-tool.sh), or `$PROMTOOL`.
fn promtool() -> PathBuf {
    if let Some(path) = std::env::var_os("PROMTOOL") {
        return path.into();
    }
    let output = Command::new("bash")
        .arg(root().join("scripts/go-tool.sh"))
        .arg("promtool")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "scripts/go-tool.sh promtool: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8(output.stdout).unwrap().trim())
}

/// Runs `promtool check rules` on `groups`, written to a temporary file.
fn check_rules(groups: &Value, file: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(file);
    std::fs::write(&path, serde_yaml::to_string(groups).unwrap()).unwrap();
    let output = Command::new(promtool())
        .args(["check", "rules"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "promtool check rules {file}:\n{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn promtool_parses_every_dashboard_query_and_both_scopes_of_the_alerts() {
    // Grafana's variables become what they stand for in one cluster.
    let rules: Vec<Value> = queries(&dashboard())
        .into_iter()
        .enumerate()
        .map(|(i, (_, expr))| {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$namespace", "shop")
                .replace("$cluster", "demo");
            json!({"record": format!("kache:dashboard_query_{i}"), "expr": expr})
        })
        .collect();
    check_rules(
        &json!({"groups": [{"name": "dashboard", "rules": rules}]}),
        "dashboard-queries.yaml",
    );
    check_rules(&alerts::groups(Scope::All), "all-clusters.yaml");
    check_rules(
        &alerts::groups(Scope::Cluster {
            namespace: "shop",
            name: "demo",
        }),
        "one-cluster.yaml",
    );
}

#[test]
fn the_charts_rule_file_is_what_rulegen_writes_from_the_alerts() {
    let text =
        std::fs::read_to_string(root().join("charts/kache/files/prometheus-rules.yaml")).unwrap();
    let committed: Value = serde_yaml::from_str(&text).unwrap();
    assert_eq!(
        committed,
        alerts::groups(Scope::All),
        "run `cargo run -p kache-operator --bin rulegen`"
    );
}

/// The `[operator]` section of `tests/monitoring/metric-names.txt` is exactly what the
/// operator's `/metrics` declares once it has reconciled a cluster and counted a failure:
/// nothing listed is missing, nothing exported is unlisted, each with the listed type. (The
/// `[node]` section is compared with a real node's scrape in node/tests/metrics.rs.)
#[test]
fn the_operator_exports_exactly_the_families_listed() {
    use kache_operator::crd::CacheClusterStatus;
    use kache_operator::metrics::{ClusterSpec, Metrics};

    let metrics = Metrics::default();
    metrics.observe(
        "shop/demo",
        ClusterSpec::default(),
        &CacheClusterStatus::default(),
        std::time::Duration::from_millis(5),
    );
    metrics.reconcile_failed("kube");
    let text = metrics.render();
    let declared: BTreeMap<String, String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|declared| {
            let (name, kind) = declared.split_once(' ').unwrap();
            let name = match kind {
                "counter" => format!("{name}_total"),
                _ => name.to_owned(),
            };
            (name, kind.to_owned())
        })
        .collect();
    let listed = listed(Some("[operator]"));
    assert!(listed.len() > 10, "{listed:?}");
    assert_eq!(
        listed, declared,
        "tests/monitoring/metric-names.txt [operator] (left) and the operator's /metrics (right) differ"
    );
}
