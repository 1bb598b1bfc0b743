//! Reconcile error paths against a mocked API server (a real HTTP server on loopback that
//! answers like kube-apiserver would): a failing API or an unreadable member list is an
//! error with backoff, and nothing is written; a deleted cluster's backoff starts over.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use parking_lot::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::*;
use crate::crd::CacheClusterSpec;

/// Every request the mock API received, as "METHOD path".
type Log = Arc<Mutex<Vec<String>>>;
/// How the mock answers a request (method, path).
type Answer = fn(&str, &str) -> (StatusCode, String);

/// Starts a mock API server; `answer` decides each response.
async fn mock_api(answer: Answer) -> (Client, Log) {
    let log: Log = Arc::default();
    let app = Router::new()
        .fallback(
            |State((log, answer)): State<(Log, Answer)>, request: Request| async move {
                let method = request.method().to_string();
                let path = request.uri().path().to_owned();
                log.lock().push(format!("{method} {path}"));
                let (status, body) = answer(&method, &path);
                (status, [("content-type", "application/json")], body).into_response()
            },
        )
        .with_state((log.clone(), answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (Client::try_from(config).unwrap(), log)
}

fn status_body(code: u16, reason: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": format!("mock: {reason}"), "reason": reason, "code": code
    })
    .to_string()
}

fn cache_cluster() -> Arc<CacheCluster> {
    let spec: CacheClusterSpec = serde_yaml::from_str("replicas: 3").unwrap();
    let mut cc = CacheCluster::new("demo", spec);
    cc.metadata.namespace = Some("shop".to_owned());
    cc.metadata.uid = Some("uid-1".to_owned());
    Arc::new(cc)
}

fn context(client: Client) -> Arc<Context> {
    Arc::new(Context::new(
        client,
        "kache/node:test".to_owned(),
        OperatorPods::default(),
        Metrics::default(),
        "test".to_owned(),
    ))
}

fn writes(log: &Log) -> Vec<String> {
    log.lock()
        .iter()
        .filter(|r| !r.starts_with("GET"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn an_api_error_fails_the_reconcile_and_writes_nothing() {
    let (client, log) = mock_api(|_, _| {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            status_body(500, "InternalError"),
        )
    })
    .await;
    let ctx = context(client);
    let error = reconcile(cache_cluster(), ctx.clone())
        .await
        .expect_err("the API failed");
    assert!(matches!(error, Error::Kube { .. }), "{error}");
    assert!(
        error.to_string().contains("read the member list"),
        "{error}"
    );
    assert_eq!(writes(&log), Vec::<String>::new());
}

#[tokio::test]
async fn an_unreadable_member_list_is_an_error_not_a_fresh_cluster() {
    // Treating a garbled list as "no list" would publish epoch 1 over a live cluster.
    let (client, log) = mock_api(|method, path| {
        if method == "GET" && path.ends_with("/configmaps/demo-members") {
            let cm = serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "demo-members", "namespace": "shop"},
                "data": {"members.yaml": "epoch: [not a number"}
            });
            return (StatusCode::OK, cm.to_string());
        }
        (StatusCode::NOT_FOUND, status_body(404, "NotFound"))
    })
    .await;
    let error = reconcile(cache_cluster(), context(client))
        .await
        .expect_err("garbled list");
    assert!(matches!(error, Error::MemberList(_)), "{error}");
    assert_eq!(writes(&log), Vec::<String>::new());
}

#[tokio::test]
async fn failures_back_off_exponentially_and_reset_on_success() {
    let (client, _log) =
        mock_api(|_, _| (StatusCode::INTERNAL_SERVER_ERROR, status_body(500, "x"))).await;
    let ctx = context(client);
    let cc = cache_cluster();
    let error = Error::MemberList("x".to_owned());
    let delays: Vec<Action> = (0..4)
        .map(|_| error_policy(cc.clone(), &error, ctx.clone()))
        .collect();
    assert_eq!(
        delays,
        [1, 2, 4, 8].map(|s| Action::requeue(Duration::from_secs(s)))
    );
    // What a successful reconcile does at its end.
    ctx.backoff.reset("shop/demo");
    assert_eq!(
        error_policy(cc.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(1))
    );
    assert_eq!(
        error_policy(cc.clone(), &error, ctx.clone()),
        Action::requeue(Duration::from_secs(2))
    );

    // A cluster being deleted is forgotten without asking the API anything.
    let mut deleted = (*cc).clone();
    deleted.metadata.deletion_timestamp = Some(Time(Timestamp::now()));
    let action = reconcile(Arc::new(deleted), ctx.clone()).await.unwrap();
    assert_eq!(action, Action::await_change());
    assert_eq!(
        error_policy(cc, &error, ctx),
        Action::requeue(Duration::from_secs(1))
    );
}

#[test]
fn the_rebalance_timeout_reads_seconds_minutes_and_hours() {
    let cases = [("90s", 90), ("10m", 600), ("2h", 7_200)];
    for (text, seconds) in cases {
        assert_eq!(
            parse_timeout(text),
            Ok(Duration::from_secs(seconds)),
            "{text}"
        );
    }
}

#[test]
fn a_rebalance_timeout_the_pattern_refuses_is_refused_not_defaulted() {
    for text in [
        "45",
        "",
        "m",
        "0s",
        "10 m",
        "1ms",
        "1d",
        "-5m",
        "99999999999999999999h",
    ] {
        assert_eq!(
            parse_timeout(text),
            Err(SettingsError::RebalanceTimeout(text.to_owned())),
            "{text}"
        );
    }
}
