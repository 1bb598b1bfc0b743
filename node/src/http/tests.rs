//! The router, driven in memory with `oneshot`: every route, every bad input (each one a
//! clear JSON error that leaves the store unchanged), conditional requests and batches.

use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use http_body_util::BodyExt;
use serde_json::{Value as Json, json};
use tower::ServiceExt;
use tower::util::BoxCloneSyncService;

use super::*;
use crate::config::NodeConfig;
use crate::store::StoreStats;
use crate::test_support::small_config;

/// A small node: see [`small_config`].
fn config() -> NodeConfig {
    config_with(&[])
}

fn config_with(extra: &[&str]) -> NodeConfig {
    small_config(extra)
}

struct Api {
    app: BoxCloneSyncService<Request<Body>, axum::response::Response, std::convert::Infallible>,
    state: AppState,
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Json {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .expect("error code")
            .to_owned()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii"))
    }
}

impl Api {
    fn new(config: &NodeConfig) -> Self {
        let state = AppState::single_node(config);
        Self {
            app: BoxCloneSyncService::new(app(state.clone())),
            state,
        }
    }

    async fn call(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn send(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        self.call(
            Request::builder()
                .method(method)
                .uri(uri)
                .body(body.into())
                .expect("request"),
        )
        .await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, Body::empty()).await
    }

    async fn put(&self, uri: &str, body: &str) -> Reply {
        self.send(Method::PUT, uri, body.to_owned()).await
    }

    fn stats(&self) -> StoreStats {
        self.state.store().stats()
    }

    /// A cluster member that has no member list yet: it knows no owners, so every request
    /// that needs one fails with 503 and nothing acknowledged.
    fn member_without_list(config: &NodeConfig) -> Self {
        use crate::cluster::discovery::Discovery;
        use crate::cluster::membership::MemberList;
        use crate::cluster::wire::Identity;

        let cluster = crate::cluster::Cluster::new(
            Store::new(config.store.clone()),
            Identity::new("member".into()),
            MemberList::none(config.store.partitions),
            config.consistency,
            Discovery::from_list(),
        );
        let state = AppState::new(cluster, config);
        Self {
            app: BoxCloneSyncService::new(app(state.clone())),
            state,
        }
    }

    async fn post(&self, uri: &str, body: Json) -> Reply {
        self.send(Method::POST, uri, body.to_string()).await
    }
}

#[tokio::test]
async fn put_get_head_delete_round_trip() {
    let api = Api::new(&config());
    let put = api.put("/v1/keys/a", "hello").await;
    assert_eq!(put.status, StatusCode::CREATED);
    let etag = put.header("etag").expect("etag").to_owned();

    let got = api.get("/v1/keys/a").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, b"hello");
    assert_eq!(got.header("etag"), Some(etag.as_str()));
    assert_eq!(got.header("content-type"), Some("application/octet-stream"));
    assert_eq!(got.header("x-kache-ttl"), None, "no TTL, no header");

    let head = api.send(Method::HEAD, "/v1/keys/a", Body::empty()).await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("etag"), Some(etag.as_str()));

    let replaced = api.put("/v1/keys/a", "again").await;
    assert_eq!(replaced.status, StatusCode::NO_CONTENT);
    assert_ne!(replaced.header("etag"), Some(etag.as_str()));

    let deleted = api.send(Method::DELETE, "/v1/keys/a", Body::empty()).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/v1/keys/a").await.status, StatusCode::NOT_FOUND);
    let again = api.send(Method::DELETE, "/v1/keys/a", Body::empty()).await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.error_code(), "key_not_found");
}

#[tokio::test]
async fn binary_keys_round_trip_percent_encoded() {
    let api = Api::new(&config());
    assert_eq!(
        api.put("/v1/keys/%00%FF%2Fx", "bin").await.status,
        StatusCode::CREATED
    );
    assert_eq!(api.get("/v1/keys/%00%FF%2Fx").await.body, b"bin");
    assert!(
        api.state.store().get(b"\x00\xff/x").is_some(),
        "stored under the decoded bytes"
    );
    assert_eq!(
        api.put("/v1/keys/a/b", "slash").await.status,
        StatusCode::CREATED
    );
    assert!(
        api.state.store().get(b"a/b").is_some(),
        "unencoded slashes are part of the key"
    );
}

#[tokio::test(start_paused = true)]
async fn ttl_is_reported_and_enforced() {
    let api = Api::new(&config());
    assert_eq!(
        api.put("/v1/keys/t?ttl=30", "v").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.get("/v1/keys/t").await.header("x-kache-ttl"),
        Some("30")
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    assert_eq!(api.get("/v1/keys/t").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test(start_paused = true)]
async fn default_ttl_applies_when_the_request_sets_none() {
    let api = Api::new(&config_with(&["--default-ttl", "10s"]));
    api.put("/v1/keys/d", "v").await;
    assert_eq!(
        api.get("/v1/keys/d").await.header("x-kache-ttl"),
        Some("10")
    );
}

#[tokio::test]
async fn conditional_writes_use_etags() {
    let api = Api::new(&config());
    let create = |tag: &'static str| {
        Request::put("/v1/keys/c")
            .header(header::IF_NONE_MATCH, tag)
            .body(Body::from("1"))
            .expect("request")
    };
    let first = api.call(create("*")).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let etag = first.header("etag").expect("etag").to_owned();
    let second = api.call(create("*")).await;
    assert_eq!(second.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(second.error_code(), "precondition_failed");

    let if_match = |tag: &str, body: &'static str| {
        Request::put("/v1/keys/c")
            .header(header::IF_MATCH, tag)
            .body(Body::from(body))
            .expect("request")
    };
    let stale = "\"0000000000000001-0000000000000001\"";
    assert_eq!(
        api.call(if_match(stale, "x")).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        api.get("/v1/keys/c").await.body,
        b"1",
        "a failed condition changes nothing"
    );
    assert_eq!(
        api.call(if_match(&etag, "2")).await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(api.get("/v1/keys/c").await.body, b"2");

    let missing = Request::put("/v1/keys/never")
        .header(header::IF_MATCH, "*")
        .body(Body::from("x"))
        .expect("request");
    assert_eq!(
        api.call(missing).await.status,
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(
        api.get("/v1/keys/never").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn get_with_matching_if_none_match_is_not_modified() {
    let api = Api::new(&config());
    let etag = api
        .put("/v1/keys/n", "v")
        .await
        .header("etag")
        .expect("etag")
        .to_owned();
    let request = Request::get("/v1/keys/n")
        .header(header::IF_NONE_MATCH, &etag)
        .body(Body::empty())
        .expect("request");
    let reply = api.call(request).await;
    assert_eq!(reply.status, StatusCode::NOT_MODIFIED);
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn bad_input_gets_a_clear_error_and_changes_nothing() {
    let api = Api::new(&config());
    api.put("/v1/keys/keep", "v").await;
    let before = api.stats();
    let long_key = format!("/v1/keys/{}", "k".repeat(17));
    let cases: Vec<(Method, String, Body, StatusCode, &str)> = vec![
        (
            Method::PUT,
            "/v1/keys/".into(),
            "v".into(),
            StatusCode::BAD_REQUEST,
            "empty_key",
        ),
        (
            Method::GET,
            "/v1/keys/".into(),
            Body::empty(),
            StatusCode::BAD_REQUEST,
            "empty_key",
        ),
        (
            Method::PUT,
            long_key.clone(),
            "v".into(),
            StatusCode::URI_TOO_LONG,
            "key_too_long",
        ),
        (
            Method::GET,
            long_key,
            Body::empty(),
            StatusCode::URI_TOO_LONG,
            "key_too_long",
        ),
        (
            Method::PUT,
            "/v1/keys/big".into(),
            "v".repeat(65).into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Method::PUT,
            "/v1/keys/t?ttl=0".into(),
            "v".into(),
            StatusCode::BAD_REQUEST,
            "bad_ttl",
        ),
        (
            Method::PUT,
            "/v1/keys/t?ttl=-5".into(),
            "v".into(),
            StatusCode::BAD_REQUEST,
            "bad_ttl",
        ),
        (
            Method::PUT,
            "/v1/keys/t?ttl=1.5".into(),
            "v".into(),
            StatusCode::BAD_REQUEST,
            "bad_ttl",
        ),
        (
            Method::PUT,
            "/v1/keys/t?expire=5".into(),
            "v".into(),
            StatusCode::BAD_REQUEST,
            "unknown_parameter",
        ),
        (
            Method::GET,
            "/v1/nothing".into(),
            Body::empty(),
            StatusCode::NOT_FOUND,
            "no_route",
        ),
        (
            Method::PATCH,
            "/v1/keys/keep".into(),
            "v".into(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::GET,
            "/v1/batch/get".into(),
            Body::empty(),
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            Method::POST,
            "/v1/batch/put".into(),
            "{not json".into(),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            Method::POST,
            "/v1/batch/put".into(),
            r#"{"items":[{"key":"a","value":"1"},{"key":"","value":"2"}]}"#.into(),
            StatusCode::BAD_REQUEST,
            "empty_key",
        ),
        (
            Method::POST,
            "/v1/batch/put".into(),
            r#"{"items":[{"key":"a","value":"1","ttl":0}]}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_ttl",
        ),
        (
            Method::POST,
            "/v1/batch/put".into(),
            format!(
                r#"{{"items":[{{"key":"a","value":"1"}},{{"key":"b","value":"{}"}}]}}"#,
                "x".repeat(65)
            )
            .into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
        (
            Method::POST,
            "/v1/batch/put".into(),
            r#"{"items":[{"key":"a","value":"%%%"}],"encoding":"base64"}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_base64",
        ),
        (
            Method::POST,
            "/v1/batch/put".into(),
            r#"{"items":[],"extra":1}"#.into(),
            StatusCode::BAD_REQUEST,
            "bad_json",
        ),
        (
            Method::POST,
            "/v1/batch/get".into(),
            "x".repeat(5000).into(),
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
        ),
    ];
    for (method, uri, body, status, code) in cases {
        let label = format!("{method} {uri}");
        let reply = api.send(method, &uri, body).await;
        assert_eq!(reply.status, status, "{label}");
        assert_eq!(reply.error_code(), code, "{label}");
        assert!(
            !reply.json()["error"]["message"]
                .as_str()
                .expect("message")
                .is_empty(),
            "{label}"
        );
    }
    let after = api.stats();
    assert_eq!(
        (after.keys, after.bytes),
        (before.keys, before.bytes),
        "nothing changed"
    );
    assert_eq!(api.get("/v1/keys/keep").await.body, b"v");
}

#[tokio::test]
async fn a_full_node_without_eviction_answers_507() {
    let api = Api::new(&config_with(&[
        "--max-memory",
        "1KiB",
        "--eviction",
        "none",
    ]));
    let value = "v".repeat(60);
    let mut status = StatusCode::CREATED;
    for i in 0..20 {
        status = api.put(&format!("/v1/keys/k{i}"), &value).await.status;
        if status != StatusCode::CREATED {
            break;
        }
    }
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE);
    let before = api.stats();
    let refused = api.put("/v1/keys/more", &value).await;
    assert_eq!(refused.error_code(), "insufficient_storage");
    assert_eq!(api.stats(), before);
}

#[tokio::test]
async fn batch_put_then_get_in_utf8_and_base64() {
    let api = Api::new(&config());
    let put = api
        .send(
            Method::POST,
            "/v1/batch/put",
            json!({"items": [{"key": "a", "value": "1"}, {"key": "b", "value": "2", "ttl": 60}]})
                .to_string(),
        )
        .await;
    assert_eq!(put.status, StatusCode::OK);
    let items = put.json()["items"].clone();
    assert_eq!(items[0]["status"], 201);
    assert!(items[1]["etag"].as_str().is_some());

    let binary = api
        .send(
            Method::POST,
            "/v1/batch/put",
            json!({"items": [{"key": "AP8=", "value": "AAEC"}], "encoding": "base64"}).to_string(),
        )
        .await;
    assert_eq!(binary.status, StatusCode::OK);
    assert_eq!(
        api.state
            .store()
            .get(b"\x00\xff")
            .expect("stored")
            .data
            .as_ref(),
        b"\x00\x01\x02"
    );

    let got = api
        .send(
            Method::POST,
            "/v1/batch/get",
            json!({"keys": ["a", "b", "zz"]}).to_string(),
        )
        .await
        .json();
    assert_eq!(got["items"][0]["value"], "1");
    assert_eq!(got["items"][1]["ttl"], 60);
    assert_eq!(got["items"][2]["found"], false);

    let got = api
        .send(
            Method::POST,
            "/v1/batch/get",
            json!({"keys": ["AP8="], "encoding": "base64"}).to_string(),
        )
        .await
        .json();
    assert_eq!(got["items"][0]["value"], "AAEC");
    let not_text = api
        .send(
            Method::POST,
            "/v1/batch/get",
            json!({"keys": ["\u{0}\u{ff}"]}).to_string(),
        )
        .await
        .json();
    // "\u{ff}" is two UTF-8 bytes, so this is a different key: absent.
    assert_eq!(not_text["items"][0]["found"], false);
}

#[tokio::test]
async fn batches_are_limited_in_item_count() {
    let api = Api::new(&config_with(&["--max-batch-bytes", "1MiB"]));
    let keys: Vec<String> = (0..1_001).map(|i| i.to_string()).collect();
    let reply = api
        .send(
            Method::POST,
            "/v1/batch/get",
            json!({ "keys": keys }).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "too_many_items");
    assert!(
        reply.json()["error"]["message"]
            .as_str()
            .is_some_and(|m| m.ends_with("got 1001")),
        "the true count, though items past the limit are not parsed"
    );
    let items: Vec<Json> = (0..5_000)
        .map(|i| json!({"key": i.to_string(), "value": "v"}))
        .collect();
    let reply = api
        .send(
            Method::POST,
            "/v1/batch/put",
            json!({ "items": items }).to_string(),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.error_code(), "too_many_items");
    assert_eq!(api.stats().keys, 0, "nothing written");
}

#[tokio::test]
async fn stats_and_metrics_count_migration_buffers_in_the_charged_bytes() {
    let api = Api::new(&config());
    api.put("/v1/keys/a", "v").await;
    let entries = api.stats().bytes;
    let chunk = api.state.store().reserve_buffer(10_000).expect("fits");
    let stats = api.get("/v1/stats").await.json();
    assert_eq!(stats["buffer_bytes"], 10_000);
    assert_eq!(
        stats["bytes"],
        entries + 10_000,
        "charged bytes include the buffer"
    );
    let metrics = String::from_utf8(api.get("/metrics").await.body).expect("text");
    assert!(
        metrics.contains("kache_memory_buffer_bytes 10000\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!("kache_memory_used_bytes {}\n", entries + 10_000)),
        "{metrics}"
    );
    drop(chunk);
    let stats = api.get("/v1/stats").await.json();
    assert_eq!(
        (stats["buffer_bytes"].as_u64(), stats["bytes"].as_u64()),
        (Some(0), Some(entries))
    );
}

#[tokio::test]
async fn stats_metrics_health_and_readiness() {
    let api = Api::new(&config());
    api.put("/v1/keys/a", "v").await;
    api.get("/v1/keys/a").await;
    api.get("/v1/keys/missing").await;
    let stats = api.get("/v1/stats").await.json();
    assert_eq!(stats["keys"], 1);
    assert_eq!(stats["hits"], 1);
    assert_eq!(stats["misses"], 1);
    assert_eq!(stats["node_id"], "test");

    let scrape = api.get("/metrics").await;
    assert_eq!(
        scrape.header("content-type"),
        Some("application/openmetrics-text; version=1.0.0; charset=utf-8")
    );
    let metrics = String::from_utf8(scrape.body).expect("text");
    assert!(metrics.contains("kache_keys 1\n"), "{metrics}");
    assert!(metrics.contains("kache_misses_total 1\n"), "{metrics}");
    assert!(
        metrics.contains("kache_http_responses_total{class=\"4xx\"} 1\n"),
        "{metrics}"
    );
    for cluster_metric in [
        "kache_cluster_epoch 0\n",
        "kache_anti_entropy_rounds_total 0\n",
        "kache_records_pulled_total 0\n",
        "kache_sync_failures_total 0\n",
        "# TYPE kache_hits counter\n",
        "# TYPE kache_http_request_duration_seconds histogram\n",
        // The PUT, the GET that hit, and the GET that missed; the route's template, not the key.
        "kache_http_request_duration_seconds_count{route=\"/v1/keys/{key}\",method=\"GET\",outcome=\"2xx\"} 1\n",
        "kache_http_request_duration_seconds_count{route=\"/v1/keys/{key}\",method=\"GET\",outcome=\"4xx\"} 1\n",
        "kache_http_request_duration_seconds_count{route=\"/v1/stats\",method=\"GET\",outcome=\"2xx\"} 1\n",
        "kache_hit_ratio 0.5\n",
        "kache_members 1\n",
        "kache_partitions_owned 8\n",
        "kache_rebalance_partitions_pending 0\n",
        "kache_clock_offset_seconds 0.0\n",
        "# EOF\n",
    ] {
        assert!(
            metrics.contains(cluster_metric),
            "{cluster_metric}: {metrics}"
        );
    }

    let placement = api.get("/v1/cluster/keys/a").await.json();
    assert_eq!(placement["owners"], json!(["test"]));
    // Redis Cluster's slot for "a", and the partition of 8 that holds it: 15495 × 8 / 16384.
    assert_eq!(placement["slot"], 15495);
    assert_eq!(placement["partition"], 7);
    let report = api.get("/v1/cluster").await.json();
    assert_eq!(
        report["ownership"]["owned"], 8,
        "a single node owns every partition"
    );
    assert_eq!(report["rebalance"]["active"], false);

    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(api.get("/readyz").await.status, StatusCode::OK);
    api.state.cluster.lifecycle().start_draining();
    let not_ready = api.get("/readyz").await;
    assert_eq!(not_ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(not_ready.error_code(), "shutting_down");
}

#[tokio::test]
async fn readiness_follows_the_lifecycle_of_a_member_that_has_not_synced() {
    use crate::lifecycle::Phase;

    let api = Api::member_without_list(&config());
    let cluster = api.state.cluster.clone();
    for phase in [Phase::Starting, Phase::Syncing] {
        cluster.lifecycle().advance(phase);
        let syncing = api.get("/readyz").await;
        assert_eq!(syncing.status, StatusCode::SERVICE_UNAVAILABLE, "{phase:?}");
        assert_eq!(syncing.error_code(), "syncing");
        let report = api.get("/v1/cluster").await.json();
        assert_eq!(report["node"]["ready"], false);
    }
    cluster.lifecycle().start_draining();
    assert_eq!(api.get("/readyz").await.error_code(), "shutting_down");
    assert!(!cluster.is_synced(), "stopped mid-sync: never a source");
}

#[tokio::test]
async fn openapi_documents_every_route() {
    let api = Api::new(&config());
    let spec = api.get("/v1/openapi.json").await.json();
    assert_eq!(spec["openapi"], "3.1.0");
    let paths = spec["paths"].as_object().expect("paths");
    for (path, methods) in [
        ("/v1/keys/{key}", &["get", "head", "put", "delete"][..]),
        ("/v1/batch/get", &["post"]),
        ("/v1/batch/put", &["post"]),
        ("/v1/stats", &["get"]),
        ("/v1/cluster", &["get"]),
        ("/v1/cluster/keys/{key}", &["get"]),
        ("/metrics", &["get"]),
        ("/healthz", &["get"]),
        ("/readyz", &["get"]),
        ("/v1/openapi.json", &["get"]),
        ("/v1/upstreams/{name}/{path}", &["get", "head", "delete"]),
        ("/v1/upstreams/{name}", &["delete"]),
    ] {
        for method in methods {
            assert!(
                paths[path][method].is_object(),
                "{method} {path} is documented"
            );
            // The security the document states is the one `auth::required` enforces.
            let operation = &paths[path][method];
            let concrete = path
                .replace("{key}", "k")
                .replace("{name}", "api")
                .replace("{path}", "a");
            let verb = Method::from_bytes(method.to_ascii_uppercase().as_bytes()).expect("method");
            let label = format!("{method} {path}");
            match auth::required(&verb, &concrete).0 {
                crate::auth::Access::Open => {
                    assert_eq!(operation["security"], json!([]), "{label} is open");
                    assert!(operation["responses"]["401"].is_null(), "{label}");
                }
                crate::auth::Access::Needs(role) => {
                    assert!(
                        operation["security"].is_null(),
                        "{label}: the default applies"
                    );
                    assert_eq!(operation["x-kache-role"], role.name(), "{label}");
                    let refusals = &operation["responses"];
                    assert!(refusals["401"]["$ref"].is_string(), "{label} documents 401");
                    let forbidden = role > crate::auth::Role::Read;
                    assert_eq!(
                        refusals["403"]["$ref"].is_string(),
                        forbidden,
                        "{label}: 403"
                    );
                }
            }
        }
    }
    assert_eq!(spec["security"], json!([{ "bearer": [] }]));
    assert_eq!(
        spec["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    let challenge = &spec["components"]["responses"]["Unauthenticated"]["headers"];
    assert_eq!(
        challenge["WWW-Authenticate"]["schema"]["const"],
        r#"Bearer realm="kache""#
    );
}

#[tokio::test]
async fn the_cluster_report_shows_no_certificates_without_tls_and_the_spec_documents_them() {
    let api = Api::new(&config());
    let report = api.get("/v1/cluster").await.json();
    assert!(report["tls"]["peer"].is_null(), "{report}");
    assert!(report["tls"]["client"].is_null(), "{report}");
    let spec = api.get("/v1/openapi.json").await.json();
    let tls = &spec["paths"]["/v1/cluster"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"]["properties"]["tls"];
    assert_eq!(tls["required"], serde_json::json!(["peer", "client"]));
    let served = &spec["components"]["schemas"]["ServedCertificate"]["properties"];
    assert!(served["sha256"].is_object() && served["notAfter"].is_object());
}

#[tokio::test]
async fn a_percent_without_two_hex_digits_is_refused_so_each_key_has_one_spelling() {
    let api = Api::new(&config());
    for bad in ["%", "%4", "%zz", "a%2", "%%41"] {
        for (method, uri) in [
            (Method::PUT, format!("/v1/keys/{bad}")),
            (Method::GET, format!("/v1/keys/{bad}")),
            (Method::DELETE, format!("/v1/keys/{bad}")),
            (Method::GET, format!("/v1/cluster/keys/{bad}")),
        ] {
            let label = format!("{method} {uri}");
            let reply = api.send(method, &uri, "v").await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{label}");
            assert_eq!(reply.error_code(), "invalid_key_encoding", "{label}");
        }
    }
    assert_eq!(api.stats().keys, 0, "nothing was written");

    assert_eq!(
        api.put("/v1/keys/%25", "percent").await.status,
        StatusCode::CREATED
    );
    assert_eq!(
        api.state.store().get(b"%").expect("stored").data.as_ref(),
        b"percent",
        "%25 is the key '%'"
    );
    assert_eq!(api.get("/v1/keys/%25").await.body, b"percent");
    assert_eq!(
        api.get("/v1/keys/%").await.status,
        StatusCode::BAD_REQUEST,
        "a bare % does not name the key '%'"
    );
}

#[tokio::test]
async fn ttl_is_plain_digits_given_at_most_once() {
    let api = Api::new(&config());
    let etag = api
        .put("/v1/keys/t", "old")
        .await
        .header("etag")
        .expect("etag")
        .to_owned();
    // A raw space cannot be in a request target, so ` 5` arrives as %205.
    for (query, code) in [
        ("ttl=+5", "bad_ttl"),
        ("ttl=-1", "bad_ttl"),
        ("ttl=%205", "bad_ttl"),
        ("ttl=5%20", "bad_ttl"),
        ("ttl=%2B5", "bad_ttl"),
        ("ttl=5&ttl=6", "duplicate_parameter"),
        ("ttl=5&ttl=5", "duplicate_parameter"),
        ("ttl=5&&ttl=5", "duplicate_parameter"),
    ] {
        for key in ["t", "fresh"] {
            let reply = api.put(&format!("/v1/keys/{key}?{query}"), "new").await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{key}?{query}");
            assert_eq!(reply.error_code(), code, "{key}?{query}");
        }
    }
    let kept = api.get("/v1/keys/t").await;
    assert_eq!(kept.body, b"old", "a refused PUT changes nothing");
    assert_eq!(kept.header("etag"), Some(etag.as_str()));
    assert_eq!(kept.header("x-kache-ttl"), None);
    assert_eq!(
        api.get("/v1/keys/fresh").await.status,
        StatusCode::NOT_FOUND
    );

    assert_eq!(
        api.put("/v1/keys/t?ttl=5&", "new").await.status,
        StatusCode::NO_CONTENT,
        "empty pairs are still skipped"
    );
    assert_eq!(api.get("/v1/keys/t").await.header("x-kache-ttl"), Some("5"));
}

#[tokio::test]
async fn a_batch_put_that_repeats_a_key_is_refused_whole() {
    let api = Api::new(&config());
    for (body, repeated) in [
        (
            r#"{"items": [{"key": "a", "value": "1"}, {"key": "b", "value": "2"},
                          {"key": "a", "value": "3"}]}"#,
            r#"items[2].key "a" repeats items[0].key"#,
        ),
        // One key, two JSON spellings: the decoded bytes are compared.
        (
            r#"{"items": [{"key": "b", "value": "1"}, {"key": "\u0062", "value": "2"}]}"#,
            r#"items[1].key "b" repeats items[0].key"#,
        ),
        (
            r#"{"items": [{"key": "YQ==", "value": "MQ=="}, {"key": "Yg==", "value": "Mg=="},
                          {"key": "YQ==", "value": "Mw=="}], "encoding": "base64"}"#,
            r#"items[2].key "YQ==" repeats items[0].key"#,
        ),
    ] {
        let reply = api.send(Method::POST, "/v1/batch/put", body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{repeated}");
        assert_eq!(reply.error_code(), "duplicate_key", "{repeated}");
        let message = reply.json()["error"]["message"].clone();
        assert!(
            message.as_str().expect("message").contains(repeated),
            "{message}"
        );
    }
    assert_eq!(api.stats().keys, 0, "nothing was written");

    // Base64 has one spelling per key: unpadded text or stray bits are refused, not a
    // second name for "a".
    for other_spelling in ["YQ", "YR=="] {
        let reply = api
            .post(
                "/v1/batch/put",
                json!({"items": [{"key": other_spelling, "value": "MQ=="}], "encoding": "base64"}),
            )
            .await;
        assert_eq!(reply.error_code(), "bad_base64", "{other_spelling}");
    }

    api.put("/v1/keys/a", "1").await;
    let got = api
        .post("/v1/batch/get", json!({"keys": ["a", "zz", "a"]}))
        .await;
    assert_eq!(
        got.status,
        StatusCode::OK,
        "reading a key twice is harmless"
    );
    let items = got.json()["items"].clone();
    assert_eq!(items[0]["value"], "1");
    assert_eq!(items[1]["found"], false);
    assert_eq!(items[2]["value"], "1");
}

#[tokio::test]
async fn a_write_that_answers_503_says_its_outcome_is_indeterminate() {
    let api = Api::member_without_list(&config());
    let error_of = |reply: &Reply| {
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
        reply.json()["error"].clone()
    };

    let put = error_of(&api.put("/v1/keys/k", "v").await);
    assert_eq!(put["code"], "replicas_unavailable");
    assert_eq!(put["outcome"], "indeterminate");
    assert_eq!(
        (put["acked"].as_u64(), put["needed"].as_u64()),
        (Some(0), Some(1))
    );
    assert!(
        put["message"]
            .as_str()
            .expect("message")
            .contains("no member list")
    );

    // A conditional PUT and a DELETE read the owners first: a 503 from that read counts
    // answers, not stored copies, so no count is given.
    let conditional = Request::put("/v1/keys/k")
        .header(header::IF_NONE_MATCH, "*")
        .body(Body::from("v"))
        .expect("request");
    let delete = Request::delete("/v1/keys/k")
        .body(Body::empty())
        .expect("request");
    for request in [conditional, delete] {
        let label = format!("{} {}", request.method(), request.uri());
        let error = error_of(&api.call(request).await);
        assert_eq!(error["code"], "replicas_unavailable", "{label}");
        assert_eq!(error["outcome"], "indeterminate", "{label}");
        assert!(error.get("acked").is_none(), "{label}: {error}");
    }

    let read = error_of(&api.get("/v1/keys/k").await);
    assert_eq!(
        read.as_object().expect("object").keys().collect::<Vec<_>>(),
        ["code", "message"],
        "a read that fails changed nothing: just unavailable"
    );

    let batch = api
        .post(
            "/v1/batch/put",
            json!({"items": [{"key": "k", "value": "v"}]}),
        )
        .await;
    assert_eq!(batch.status, StatusCode::OK);
    let item = batch.json()["items"][0].clone();
    assert_eq!(item["status"], 503);
    assert_eq!(item["error"]["outcome"], "indeterminate");
    assert_eq!(item["error"]["acked"], 0);
    let got = api.post("/v1/batch/get", json!({"keys": ["k"]})).await;
    let error = got.json()["items"][0]["error"].clone();
    assert_eq!(error["code"], "replicas_unavailable");
    assert!(error.get("outcome").is_none(), "{error}");
}

/// A node whose `--auth-dir` holds `reader` (read), `writer` (readwrite) and `root`
/// (admin), with the tokens `r-token`, `w-token` and `a-token`.
fn api_with_auth() -> (Api, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    for (role, user, token) in [
        ("read", "reader", "r-token"),
        ("readwrite", "writer", "w-token"),
        ("admin", "root", "a-token\n"),
    ] {
        let secret = dir.path().join(role).join("tokens");
        std::fs::create_dir_all(&secret).expect("mkdir");
        std::fs::write(secret.join(user), token).expect("write");
    }
    let auth = crate::auth::Auth::load(dir.path().to_owned()).expect("load");
    let state = AppState::single_node(&config()).with_auth(auth);
    let api = Api {
        app: BoxCloneSyncService::new(app(state.clone())),
        state,
    };
    (api, dir)
}

impl Api {
    async fn send_as(&self, token: Option<&str>, method: Method, uri: &str, body: &str) -> Reply {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        self.call(request.body(Body::from(body.to_owned())).expect("request"))
            .await
    }
}

#[tokio::test]
async fn with_auth_each_route_needs_its_role_and_refusals_change_nothing() {
    let (api, _dir) = api_with_auth();
    let batch_put = json!({ "items": [{ "key": "b", "value": "1" }] }).to_string();
    let batch_get = json!({ "keys": ["b"] }).to_string();
    // (method, uri, body, least role that succeeds: 0 open, 1 read, 2 readwrite)
    let routes: [(Method, &str, &str, usize); 12] = [
        (Method::GET, "/healthz", "", 0),
        (Method::GET, "/readyz", "", 0),
        (Method::GET, "/metrics", "", 0),
        (Method::GET, "/v1/cluster", "", 0),
        (Method::GET, "/v1/openapi.json", "", 0),
        (Method::PUT, "/v1/keys/a", "v", 2),
        (Method::GET, "/v1/keys/a", "", 1),
        (Method::HEAD, "/v1/keys/a", "", 1),
        (Method::POST, "/v1/batch/put", &batch_put, 2),
        (Method::POST, "/v1/batch/get", &batch_get, 1),
        (Method::GET, "/v1/stats", "", 1),
        (Method::GET, "/v1/cluster/keys/a", "", 1),
    ];
    let tokens = [
        None,
        Some("wrong"),
        Some("r-token"),
        Some("w-token"),
        Some("a-token"),
    ];
    for (method, uri, body, least) in &routes {
        for (index, token) in tokens.iter().enumerate() {
            let label = format!("{method} {uri} as {token:?}");
            let keys_before = api.stats().keys;
            let reply = api.send_as(*token, method.clone(), uri, body).await;
            // tokens[2..] have roles 1 (read), 2 (readwrite), 3 (admin).
            let role = index.saturating_sub(1);
            if *least == 0 || (index >= 2 && role >= *least) {
                assert!(reply.status.is_success(), "{label}: {}", reply.status);
                continue;
            }
            assert_eq!(api.stats().keys, keys_before, "{label} changed nothing");
            if index < 2 {
                assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{label}");
                assert_eq!(
                    reply.header("www-authenticate"),
                    Some(r#"Bearer realm="kache""#)
                );
                if *method != Method::HEAD {
                    assert_eq!(reply.error_code(), "unauthenticated", "{label}");
                }
            } else {
                assert_eq!(reply.status, StatusCode::FORBIDDEN, "{label}");
                assert_eq!(reply.header("www-authenticate"), None, "{label}");
                let message = reply.json()["error"]["message"]
                    .as_str()
                    .expect("message")
                    .to_owned();
                assert_eq!(reply.error_code(), "forbidden", "{label}");
                assert!(
                    message.contains("reader") && message.contains("readwrite"),
                    "{message}"
                );
                assert!(!message.contains("r-token"), "{message}");
            }
        }
    }
    // An unknown path without a token says nothing of the routes; with one, 404.
    assert_eq!(
        api.get("/v1/nothing").await.status,
        StatusCode::UNAUTHORIZED
    );
    let reply = api
        .send_as(Some("r-token"), Method::GET, "/v1/nothing", "")
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);

    let metrics = String::from_utf8(api.get("/metrics").await.body).expect("text");
    assert!(metrics.contains("kache_auth_enabled 1\n"), "{metrics}");
    assert!(metrics.contains("kache_auth_users 3\n"), "{metrics}");
    // 7 routes needing a role, refused without a token and with a wrong one, plus the
    // unknown path; the 2 writing routes refused to the reader.
    assert!(
        metrics.contains(
            "kache_auth_refused_total{protocol=\"http\",reason=\"unauthenticated\"} 15\n"
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("kache_auth_refused_total{protocol=\"http\",reason=\"forbidden\"} 2\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("kache_auth_refused_total{protocol=\"resp\",reason=\"forbidden\"} 0\n")
    );
}

/// `kubectl kache` reaches a node through the API server's pod proxy, which strips
/// `Authorization`: `Kache-Authorization` passes the same checks with the same answers.
#[tokio::test]
async fn the_pod_proxy_header_is_checked_like_authorization() {
    let (api, _dir) = api_with_auth();
    let send = |token: &'static str, method: Method, uri: &'static str, body: &'static str| {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("kache-authorization", format!("Bearer {token}"))
            .body(Body::from(body))
            .expect("request");
        api.call(request)
    };
    let put = send("w-token", Method::PUT, "/v1/keys/proxied", "v").await;
    assert!(put.status.is_success(), "{}", put.status);
    let got = send("r-token", Method::GET, "/v1/keys/proxied", "").await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body, b"v");

    let wrong = send("wrong", Method::GET, "/v1/keys/proxied", "").await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.error_code(), "unauthenticated");
    let forbidden = send("r-token", Method::DELETE, "/v1/keys/proxied", "").await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);
    assert_eq!(forbidden.error_code(), "forbidden");
    assert_eq!(api.stats().keys, 1, "the refused delete changed nothing");
}

#[tokio::test]
async fn a_refused_request_is_answered_without_reading_its_body() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    let (api, _dir) = api_with_auth();
    for token in [None, Some("r-token")] {
        let polled = Arc::new(AtomicBool::new(false));
        let seen = polled.clone();
        let body = Body::from_stream(futures::stream::poll_fn(move |_| {
            seen.store(true, Ordering::SeqCst);
            std::task::Poll::Ready(Some(Ok::<_, std::io::Error>(bytes::Bytes::from("value"))))
        }));
        let mut request = Request::builder().method(Method::PUT).uri("/v1/keys/a");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let reply = api.call(request.body(body).expect("request")).await;
        assert!(
            reply.status.is_client_error(),
            "{token:?}: {}",
            reply.status
        );
        assert!(
            !polled.load(Ordering::SeqCst),
            "{token:?}: the body was read"
        );
    }
    assert_eq!(api.stats().keys, 0);
}

#[tokio::test]
async fn without_auth_every_route_answers_without_a_token() {
    let api = Api::new(&config());
    assert_eq!(api.put("/v1/keys/a", "v").await.status, StatusCode::CREATED);
    assert_eq!(api.get("/v1/stats").await.status, StatusCode::OK);
    let metrics = String::from_utf8(api.get("/metrics").await.body).expect("text");
    assert!(metrics.contains("kache_auth_enabled 0\n"), "{metrics}");
}

/// The route each path is counted under is the one the router matched it to.
#[tokio::test]
async fn every_route_template_is_what_the_router_matched() {
    use std::sync::{Arc, Mutex};

    use axum::extract::MatchedPath;

    let matched: Arc<Mutex<Option<String>>> = Arc::default();
    let seen = matched.clone();
    let state = AppState::single_node(&config());
    let router = router(state).route_layer(axum::middleware::from_fn(
        move |path: MatchedPath, request: axum::extract::Request, next: axum::middleware::Next| {
            let seen = seen.clone();
            async move {
                *seen.lock().expect("lock") = Some(path.as_str().to_owned());
                next.run(request).await
            }
        },
    ));
    for (method, path, route) in [
        (Method::GET, "/v1/keys/a/b", route::Route::Keys),
        (Method::PUT, "/v1/keys/", route::Route::EmptyKey),
        (Method::POST, "/v1/batch/get", route::Route::BatchGet),
        (Method::POST, "/v1/batch/put", route::Route::BatchPut),
        (Method::GET, "/v1/stats", route::Route::Stats),
        (Method::GET, "/v1/cluster", route::Route::Cluster),
        (
            Method::GET,
            "/v1/cluster/keys/a",
            route::Route::KeyPlacement,
        ),
        (Method::GET, "/v1/openapi.json", route::Route::OpenApi),
        (Method::GET, "/metrics", route::Route::Metrics),
        (Method::GET, "/healthz", route::Route::Healthz),
        (Method::GET, "/readyz", route::Route::Readyz),
        (
            Method::GET,
            "/v1/upstreams/api/a/b",
            route::Route::UpstreamPath,
        ),
        (Method::DELETE, "/v1/upstreams/api", route::Route::Upstream),
        (Method::GET, "/v1/nothing", route::Route::Unmatched),
    ] {
        *matched.lock().expect("lock") = None;
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .expect("request");
        router.clone().oneshot(request).await.expect("infallible");
        assert_eq!(route::Route::of(path), route, "{path}");
        let matched = matched.lock().expect("lock").clone();
        match route {
            route::Route::Unmatched => assert_eq!(matched, None, "{path}"),
            route => assert_eq!(
                matched.map(|m| m.replace("{*", "{")).as_deref(),
                Some(route.template()),
                "{path}"
            ),
        }
    }
    assert_eq!(route::Route::ALL.len(), 14, "a new route needs a row above");
}
