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

/// The writes of Secrets among them.
fn secret_writes(log: &Log) -> Vec<String> {
    writes(log)
        .into_iter()
        .filter(|w| w.contains("/secrets"))
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

    assert_eq!(
        secret_writes(&log),
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
    assert_eq!(
        secret_writes(&log),
        [
            "POST /api/v1/namespaces/shop/secrets",
            "PATCH /api/v1/namespaces/shop/secrets/demo-peer-tls",
            "POST /api/v1/namespaces/shop/secrets",
        ],
        "the CA, the peer Secret (ca.crt only: no pods yet) and the admin token"
    );
}

fn forbidden_body(verb: &str, resource: &str, namespace: &str) -> String {
    serde_json::json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
        "code": 403,
        "message": format!(
            "{resource} is forbidden: User \"system:serviceaccount:kache-system:kache-operator\" \
             cannot {verb} resource \"{resource}\" in the namespace \"{namespace}\""
        ),
    })
    .to_string()
}

#[tokio::test]
async fn a_refused_request_fails_the_reconcile_and_says_which_permission_is_missing() {
    let (client, log) = mock_api(|method, path| {
        if method == "POST" && path.ends_with("/events") {
            return (StatusCode::CREATED, "{}".to_owned());
        }
        (
            StatusCode::FORBIDDEN,
            forbidden_body("get", "configmaps", "shop"),
        )
    })
    .await;
    let error = reconcile(cache_cluster(), context(client))
        .await
        .expect_err("refused");
    let (action, message) = error.forbidden().expect("a 403 is a refusal");
    assert_eq!(action, "read the member list");
    assert!(
        message.contains("cannot get resource \"configmaps\""),
        "{message}"
    );
    assert_eq!(error.metric_label(), "forbidden");
    let events: Vec<String> = writes(&log);
    assert_eq!(
        events,
        ["POST /apis/events.k8s.io/v1/namespaces/shop/events"],
        "one Warning event on the CacheCluster, and nothing else written"
    );
}

/// A mock API server with two namespaces: in `locked` every request is refused (403), as
/// when the operator's Role is missing there; in `open` the CacheCluster `demo` is listed,
/// other lists are empty, watches stay open without events, and anything else is 404.
/// Records "METHOD path" of every request.
async fn two_namespaces_api() -> (Client, Log) {
    let log: Log = Arc::default();
    let app = Router::new()
        .fallback(|State(log): State<Log>, request: Request| async move {
            let method = request.method().to_string();
            let path = request.uri().path().to_owned();
            let watch = request.uri().query().unwrap_or("").contains("watch=true");
            log.lock().push(format!("{method} {path}"));
            let json = [("content-type", "application/json")];
            if path.contains("/namespaces/locked/") {
                let resource = path.rsplit('/').next().unwrap_or_default();
                let body = forbidden_body("list", resource, "locked");
                return (StatusCode::FORBIDDEN, json, body).into_response();
            }
            let collections = ["cacheclusters", "statefulsets", "configmaps", "pods"];
            let listed = collections
                .iter()
                .any(|c| path.ends_with(&format!("/namespaces/open/{c}")));
            if listed && watch {
                // An open watch on which nothing happens.
                let quiet = futures::stream::pending::<Result<String, std::io::Error>>();
                let body = axum::body::Body::from_stream(quiet);
                return (StatusCode::OK, json, body).into_response();
            }
            if listed {
                let mut items = Vec::new();
                if path.ends_with("/cacheclusters") {
                    let mut cc = (*cache_cluster()).clone();
                    cc.metadata.namespace = Some("open".to_owned());
                    cc.metadata.resource_version = Some("1".to_owned());
                    items.push(serde_json::to_value(cc).unwrap());
                }
                let list = serde_json::json!({
                    "apiVersion": "v1", "kind": "List",
                    "metadata": {"resourceVersion": "1"}, "items": items,
                });
                return (StatusCode::OK, json, list.to_string()).into_response();
            }
            let body = status_body(404, "NotFound");
            (StatusCode::NOT_FOUND, json, body).into_response()
        })
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = kube::Config::new(format!("http://{addr}").parse().unwrap());
    (Client::try_from(config).unwrap(), log)
}

#[tokio::test]
async fn a_namespace_the_operator_may_not_watch_does_not_stop_the_others() {
    let (client, log) = two_namespaces_api().await;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let shutdown = futures::FutureExt::shared(Box::pin(async move {
        let mut stopped = stopped;
        let _ = stopped.wait_for(|stop| *stop).await;
    }));
    let scope = WatchScope::parse("locked,open").unwrap();
    let ctx = context(client);
    let controllers = tokio::spawn(async move { run(ctx, &scope, shutdown).await });

    let count = |request: &str| log.lock().iter().filter(|r| *r == request).count();
    let locked_list = "GET /apis/kache.dev/v1alpha1/namespaces/locked/cacheclusters";
    // The first thing a reconcile of open/demo reads.
    let open_reconcile = "GET /api/v1/namespaces/open/configmaps/demo-members";
    let deadline = Instant::now() + Duration::from_secs(20);
    // (The refused watches are retried with kube-runtime's shared backoff, seconds apart.)
    while count(open_reconcile) == 0 || count(locked_list) == 0 {
        assert!(
            Instant::now() < deadline,
            "open/demo reconciled {} times, the refused list in locked tried {} times: {:?}",
            count(open_reconcile),
            count(locked_list),
            log.lock()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cluster_wide: Vec<String> = log
        .lock()
        .iter()
        .filter(|r| !r.contains("/namespaces/open/") && !r.contains("/namespaces/locked/"))
        .cloned()
        .collect();
    assert_eq!(
        cluster_wide,
        Vec::<String>::new(),
        "with a list of namespaces every request is namespaced"
    );

    stop.send(true).unwrap();
    tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_secs(5), controllers)
        .await
        .expect("every controller stops on shutdown, the refused one too")
        .unwrap();
}

#[test]
fn a_refused_watch_is_logged_with_the_permission_and_where_it_comes_from() {
    let refused = |namespace: &str| {
        let status: kube::core::Status =
            serde_json::from_str(&forbidden_body("list", "cacheclusters", namespace)).unwrap();
        watcher::Error::InitialListFailed(kube::Error::Api(Box::new(status)))
    };
    let line = watch_failure(Some("locked"), &refused("locked"));
    assert!(line.contains("may not watch in namespace locked"), "{line}");
    assert!(
        line.contains("cannot list resource \"cacheclusters\" in the namespace \"locked\""),
        "{line}"
    );
    assert!(line.contains("watchNamespaces"), "{line}");
    let line = watch_failure(None, &refused(""));
    assert!(line.contains("may not watch cluster-wide"), "{line}");
    assert!(line.contains("watchAllNamespaces=true"), "{line}");
    let other = watcher::Error::NoResourceVersion;
    let line = watch_failure(Some("open"), &other);
    assert!(
        line.starts_with("a watch in namespace open failed"),
        "{line}"
    );
}

/// An API server without the prometheus-operator CRDs: their paths are 404.
fn no_prometheus_operator(_method: &str, path: &str) -> (StatusCode, String) {
    if path.starts_with("/apis/monitoring.coreos.com/") {
        return (StatusCode::NOT_FOUND, status_body(404, "NotFound"));
    }
    (StatusCode::CREATED, "{}".to_owned())
}

/// The writes to prometheus-operator objects, and the events recorded.
fn monitoring_writes(log: &Log) -> (Vec<String>, usize) {
    let writes = writes(log);
    let events = writes
        .iter()
        .filter(|w| w.starts_with("POST") && w.ends_with("/events"))
        .count();
    let objects = writes
        .into_iter()
        .filter(|w| w.contains("/apis/monitoring.coreos.com/v1/namespaces/shop/"))
        .map(|w| w.replace("/apis/monitoring.coreos.com/v1/namespaces/shop/", " "))
        .collect();
    (objects, events)
}

#[tokio::test]
async fn without_prometheus_operator_the_objects_asked_for_are_warnings_and_the_others_deleted() {
    let (client, log) = mock_api(no_prometheus_operator).await;
    let ctx = context(client);
    let mut cc = (*cache_cluster()).clone();
    cc.spec.monitoring =
        serde_yaml::from_str("{serviceMonitor: true, prometheusRule: {enabled: true}}").unwrap();
    let security = resources::security::resolve(&cc, None);
    // Returns nothing to fail on: a missing CRD never fails the reconcile.
    apply::monitoring(&cc, &ctx, &security).await;
    let (objects, events) = monitoring_writes(&log);
    assert_eq!(
        objects,
        [
            "PATCH  servicemonitors/demo",
            "DELETE  podmonitors/demo",
            "PATCH  prometheusrules/demo"
        ]
    );
    assert_eq!(
        events, 2,
        "a warning for each object asked for, none for the one turned off"
    );

    // All off: each is deleted (a 404 is fine) and nothing is worth a warning.
    let (client, log) = mock_api(no_prometheus_operator).await;
    let ctx = context(client);
    let cc = cache_cluster();
    apply::monitoring(&cc, &ctx, &resources::security::resolve(&cc, None)).await;
    let (objects, events) = monitoring_writes(&log);
    assert_eq!(
        objects,
        [
            "DELETE  servicemonitors/demo",
            "DELETE  podmonitors/demo",
            "DELETE  prometheusrules/demo"
        ]
    );
    assert_eq!(events, 0);
}

/// The mock API of `upstreams_*`: every apply succeeds (answered with an empty object of
/// its kind; a StatefulSet whose rollout is complete), every delete finds nothing.
fn objects_api(method: &str, path: &str) -> (StatusCode, String) {
    objects_api_rolling(method, path, "rev-1")
}

/// [`objects_api`], with the StatefulSet still rolling out (pods on another revision).
fn objects_api_mid_rollout(method: &str, path: &str) -> (StatusCode, String) {
    objects_api_rolling(method, path, "rev-2")
}

fn objects_api_rolling(method: &str, path: &str, update_revision: &str) -> (StatusCode, String) {
    let kinds = [
        ("serviceaccounts", "v1", "ServiceAccount"),
        (
            "rolebindings",
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
        ),
        ("roles", "rbac.authorization.k8s.io/v1", "Role"),
        ("services", "v1", "Service"),
        ("configmaps", "v1", "ConfigMap"),
        ("statefulsets", "apps/v1", "StatefulSet"),
        ("poddisruptionbudgets", "policy/v1", "PodDisruptionBudget"),
        ("networkpolicies", "networking.k8s.io/v1", "NetworkPolicy"),
    ];
    let found = kinds
        .iter()
        .find(|(plural, _, _)| path.contains(&format!("/{plural}/")));
    match (method, found) {
        ("PATCH", Some((_, api_version, "StatefulSet"))) => (
            StatusCode::OK,
            serde_json::json!({
                "apiVersion": api_version, "kind": "StatefulSet",
                "metadata": {"generation": 2},
                "spec": {"replicas": 3, "selector": {}, "serviceName": "demo-peers", "template": {}},
                "status": {"replicas": 3, "observedGeneration": 2, "updatedReplicas": 3,
                    "currentRevision": "rev-1", "updateRevision": update_revision},
            })
            .to_string(),
        ),
        ("PATCH", Some((_, api_version, kind))) => (
            StatusCode::OK,
            serde_json::json!({"apiVersion": api_version, "kind": kind, "metadata": {}})
                .to_string(),
        ),
        _ => (StatusCode::NOT_FOUND, status_body(404, "NotFound")),
    }
}

/// The writes of ConfigMaps and the StatefulSet, in order, without the API prefix.
async fn apply_writes(spec: &str) -> Vec<String> {
    apply_writes_with(spec, objects_api).await
}

async fn apply_writes_with(spec: &str, api: Answer) -> Vec<String> {
    let (client, log) = mock_api(api).await;
    let ctx = context(client);
    let mut cc = CacheCluster::new("demo", serde_yaml::from_str(spec).unwrap());
    cc.metadata.namespace = Some("shop".to_owned());
    cc.metadata.uid = Some("uid-1".to_owned());
    let plan = scale::plan(&desired(&cc), &scale::Observed::default());
    let security = resources::security::resolve(&cc, None);
    apply::objects(&cc, &ctx, &plan, 3, None, &security)
        .await
        .unwrap();
    writes(&log)
        .into_iter()
        .filter(|w| w.contains("/configmaps/") || w.contains("/statefulsets/"))
        .map(|w| {
            w.replace("/api/v1/namespaces/shop/", " ")
                .replace("/apis/apps/v1/namespaces/shop/", " ")
        })
        .collect()
}

#[tokio::test]
async fn upstreams_are_written_before_the_pods_that_read_them_and_deleted_after() {
    assert_eq!(
        apply_writes("replicas: 3\nupstreams: [{name: api, url: 'http://api'}]").await,
        [
            "PATCH  configmaps/demo-config",
            "PATCH  configmaps/demo-members",
            "PATCH  configmaps/demo-upstreams",
            "PATCH  statefulsets/demo",
        ]
    );
    assert_eq!(
        apply_writes("replicas: 3").await,
        [
            "PATCH  configmaps/demo-config",
            "PATCH  configmaps/demo-members",
            "PATCH  statefulsets/demo",
            "DELETE  configmaps/demo-upstreams",
        ],
        "none listed: the StatefulSet stops mounting it first"
    );
    assert_eq!(
        apply_writes_with("replicas: 3", objects_api_mid_rollout).await,
        [
            "PATCH  configmaps/demo-config",
            "PATCH  configmaps/demo-members",
            "PATCH  statefulsets/demo",
        ],
        "kept while a pod of the old revision may still mount it"
    );
}

#[tokio::test]
async fn an_upstream_the_nodes_would_refuse_applies_nothing() {
    // A spec CEL would refuse (stored before the rule, say). `reconcile_cluster` checks
    // the settings before it applies anything (the plan turns Invalid, with this message);
    // `apply::objects` itself stops before any ConfigMap or the StatefulSet as well.
    let mut cc = (*cache_cluster()).clone();
    cc.spec.upstreams =
        serde_yaml::from_str("[{name: api, url: 'http://a'}, {name: api, url: 'http://b'}]")
            .unwrap();
    let error = resources::config::node_settings(&cc).expect_err("duplicate names");
    assert_eq!(
        error.to_string(),
        "spec.upstreams: upstream 'api' is listed twice; names must be unique"
    );
    let (client, log) = mock_api(objects_api).await;
    let ctx = context(client);
    let plan = scale::plan(&desired(&cc), &scale::Observed::default());
    let result = apply::objects(
        &cc,
        &ctx,
        &plan,
        3,
        None,
        &resources::security::resolve(&cc, None),
    )
    .await;
    assert!(matches!(result, Err(Error::Settings(_))), "{result:?}");
    assert!(
        !writes(&log)
            .iter()
            .any(|w| w.contains("configmaps") || w.contains("statefulsets")),
        "{:?}",
        writes(&log)
    );
}
