//! The plugin reads what a real node serves: `GET /v1/cluster`, `GET /v1/stats` and
//! `GET /v1/cluster/keys/{key}` of a running one-member node parse into the plugin's
//! types, the status screen shows its memory and ownership, and `locate` renders its
//! placement.

use clap::Parser;
use k8s_openapi::jiff::Timestamp;
use kache_api::report::ClusterReport;
use kache_node::config::Cli;
use kache_operator::crd::CacheCluster;
use kubectl_kache::keys::{Placement, render_placement};
use kubectl_kache::proxy::key_path;
use kubectl_kache::status::{Memory, PodView, render};

#[tokio::test]
async fn the_plugin_reads_a_real_nodes_answers() {
    let config = Cli::try_parse_from([
        "kache-node",
        "--node-id",
        "demo-0",
        "--members",
        "demo-0=127.0.0.1:1",
        "--max-memory",
        "48MiB",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", http.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(kache_node::run(
        kache_node::Listeners {
            http,
            grpc,
            resp: None,
        },
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let mut report = None;
    // Bounded: a one-member cluster is ready at once; allow it five seconds.
    for _ in 0..50 {
        if let Ok(response) = client.get(format!("{base}/v1/cluster")).send().await {
            let parsed: ClusterReport = response.json().await.expect("a ClusterReport");
            if parsed.node.ready {
                report = Some(parsed);
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let report = report.expect("the node became ready");

    let key = "user/1 é";
    let put = client
        .put(format!("{base}{}", key_path("/v1/keys/", key).unwrap()))
        .body("alice")
        .send()
        .await
        .unwrap();
    assert!(put.status().is_success(), "{}", put.status());
    let memory: Memory = client
        .get(format!("{base}/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("the plugin's Memory from /v1/stats");
    assert_eq!(memory.max, 48 * 1024 * 1024);
    assert!(memory.used > 0, "the key is charged: {memory:?}");

    let placement: Placement = client
        .get(format!(
            "{base}{}",
            key_path("/v1/cluster/keys/", key).unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .expect("the plugin's Placement");
    assert_eq!(placement.owners, ["demo-0"]);
    let text = render_placement(key, &placement, 271);
    assert!(text.contains("owners     demo-0 (primary)\n"), "{text}");

    let cc: CacheCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kache.dev/v1alpha1",
        "kind": "CacheCluster",
        "metadata": {"name": "demo", "namespace": "default"},
        "spec": {"replicas": 1},
        "status": {"phase": "Available", "epoch": 1, "replicas": 1, "readyReplicas": 1}
    }))
    .unwrap();
    let view = PodView {
        pod: "demo-0".to_owned(),
        report: Ok(report),
        memory: Ok(memory),
    };
    let screen = render(&cc, &[view], Timestamp::now());
    let row = screen
        .lines()
        .find(|l| l.starts_with("demo-0"))
        .expect("a row for the pod");
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &cells[..6],
        ["demo-0", "demo-0", "member", "1", "271", "0"],
        "{row}"
    );
    assert!(
        row.contains("/ 48.0 MiB") && row.ends_with("ready"),
        "{row}"
    );

    let _ = stop.send(());
    let _ = node.await;
}
