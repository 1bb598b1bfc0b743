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
use crate::resources;

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

/// A Secret as the mock API returns it: `name` with `data` (key → plain text).
fn secret_body(name: &str, data: &[(&str, &str)]) -> String {
    use base64::Engine as _;
    let data: serde_json::Map<String, serde_json::Value> = data
        .iter()
        .map(|(k, v)| {
            let encoded = base64::engine::general_purpose::STANDARD.encode(v);
            ((*k).to_owned(), serde_json::Value::String(encoded))
        })
        .collect();
    serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": name, "namespace": "shop"},
        "data": data
    })
    .to_string()
}

/// The mock API of `the_secrets_pass_*`: the admin token and a user's peer Secret
/// (without certificates) exist, nothing else does; writes succeed.
fn secrets_api(method: &str, path: &str) -> (StatusCode, String) {
    match (method, path.rsplit('/').next().unwrap_or_default()) {
        ("GET", "demo-auth") => (
            StatusCode::OK,
            secret_body("demo-auth", &[("admin", "kept-token")]),
        ),
        ("GET", "my-peer") => (
            StatusCode::OK,
            secret_body("my-peer", &[("ca.crt", "not a certificate")]),
        ),
        ("POST", _) => (StatusCode::CREATED, secret_body("created", &[])),
        ("PATCH", name) => (StatusCode::OK, secret_body(name, &[])),
        _ => (StatusCode::NOT_FOUND, status_body(404, "NotFound")),
    }
}

#[tokio::test]
async fn the_secrets_pass_creates_the_ca_issues_leaves_and_never_writes_what_exists() {
    let (client, log) = mock_api(secrets_api).await;
    let ctx = context(client);
    let spec: CacheClusterSpec = serde_yaml::from_str(
        "replicas: 2\ntls: {peer: {secretName: my-peer}, client: {enabled: true}}",
    )
    .unwrap();
    let mut cc = CacheCluster::new("demo", spec);
    cc.metadata.namespace = Some("shop".to_owned());
    cc.metadata.uid = Some("uid-1".to_owned());
    let security = resources::security::resolve(&cc, None);
    let pods = ["demo-0".to_owned(), "demo-1".to_owned()];
    let findings = secrets::ensure(&cc, &ctx, &security, &pods, Timestamp::now())
        .await
        .unwrap();

    let secret_writes: Vec<String> = writes(&log)
        .into_iter()
        .filter(|w| w.contains("/secrets"))
        .collect();
    assert_eq!(
        secret_writes,
        [
            "POST /api/v1/namespaces/shop/secrets",
            "PATCH /api/v1/namespaces/shop/secrets/demo-client-tls",
        ],
        "the CA created, the client leaves applied; the user's Secret and the existing \
         token untouched"
    );
    assert_eq!(findings.problems.len(), 1, "{:?}", findings.problems);
    let problem = &findings.problems[0];
    assert!(
        problem.contains("spec.tls.peer.secretName: Secret my-peer")
            && problem.contains("ca.crt holds no PEM certificate"),
        "{problem}"
    );
    assert!(
        !problem.contains("not a certificate"),
        "no content: {problem}"
    );
}

#[tokio::test]
async fn the_admin_token_is_created_when_missing() {
    let (client, log) = mock_api(|method, path| match method {
        "POST" if path.ends_with("/secrets") => {
            (StatusCode::CREATED, secret_body("demo-auth", &[]))
        }
        "PATCH" => (StatusCode::OK, secret_body("demo-peer-tls", &[])),
        _ => (StatusCode::NOT_FOUND, status_body(404, "NotFound")),
    })
    .await;
    let ctx = context(client);
    let cc = cache_cluster();
    let security = resources::security::resolve(
        &cc,
        Some(resources::security::Running {
            peer_tls: false,
            auth: false,
        }),
    );
    assert!(security.auth.is_none(), "a running open cluster stays open");
    let findings = secrets::ensure(&cc, &ctx, &security, &[], Timestamp::now())
        .await
        .unwrap();
    assert_eq!(findings, secrets::Findings::default());
    assert!(
        writes(&log).is_empty(),
        "nothing to write: {:?}",
        writes(&log)
    );

    let security = resources::security::resolve(&cc, None);
    secrets::ensure(&cc, &ctx, &security, &[], Timestamp::now())
        .await
        .unwrap();
    let secret_writes: Vec<String> = writes(&log)
        .into_iter()
        .filter(|w| w.contains("/secrets"))
        .collect();
    assert_eq!(
        secret_writes,
        [
            "POST /api/v1/namespaces/shop/secrets",
            "PATCH /api/v1/namespaces/shop/secrets/demo-peer-tls",
            "POST /api/v1/namespaces/shop/secrets",
        ],
        "the CA, the peer Secret (ca.crt only: no pods yet) and the admin token"
    );
}
