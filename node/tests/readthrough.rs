//! Read-through on real node processes against a real upstream HTTP server that this
//! test runs and that counts every request it gets: cluster-wide coalescing (1,000
//! concurrent requests for one cold URL make one upstream request), RFC 9111 freshness,
//! revalidation, what is never stored, Vary, stale-if-error and the errors after it, the
//! circuit breaker, purges, a slow upstream beside fast hits, and a 3 -> 5 -> 2 scale
//! under read-through traffic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed step fails the test"
)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use common::{Node, Options, StaticCluster};
use parking_lot::Mutex;
use serde_json::Value as Json;

/// The upstream: what each path answers, and how many requests each path got.
#[derive(Default)]
struct Upstream {
    counts: Mutex<HashMap<String, usize>>,
    /// Requests answered 304.
    not_modified: AtomicUsize,
    /// `/flaky/...` hangs past every timeout while set.
    down: AtomicBool,
}

impl Upstream {
    fn count(&self, path: &str) -> usize {
        self.counts.lock().get(path).copied().unwrap_or(0)
    }

    fn total(&self) -> usize {
        self.counts.lock().values().sum()
    }
}

async fn answer(State(up): State<Arc<Upstream>>, request: Request) -> Response {
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |pq| pq.as_str())
        .to_owned();
    let n = {
        let mut counts = up.counts.lock();
        let n = counts.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let headers = request.headers();
    let section = path.split('/').nth(1).unwrap_or_default().to_owned();
    let reply = |status: u16, pairs: &[(&str, String)], body: String| {
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = StatusCode::from_u16(status).unwrap();
        for (name, value) in pairs {
            response.headers_mut().append(
                axum::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        response
    };
    let body = format!("{path} #{n}");
    let long = ("cache-control", "max-age=600".to_owned());
    match section.as_str() {
        "slow" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reply(200, &[long], body)
        }
        "hang" => {
            tokio::time::sleep(Duration::from_secs(3)).await;
            reply(200, &[long], body)
        }
        "short" => reply(200, &[("cache-control", "max-age=1".into())], body),
        "etag" => {
            let tag = "\"v1\"".to_owned();
            let cc = ("cache-control", "max-age=1".to_owned());
            if headers.get("if-none-match").is_some_and(|v| v == "\"v1\"") {
                up.not_modified.fetch_add(1, Ordering::SeqCst);
                reply(304, &[cc, ("etag", tag)], String::new())
            } else {
                reply(200, &[cc, ("etag", tag)], body)
            }
        }
        "swr" => reply(
            200,
            &[(
                "cache-control",
                "max-age=1, stale-while-revalidate=30".into(),
            )],
            body,
        ),
        "nostore" => reply(200, &[("cache-control", "no-store".into())], body),
        "private" => reply(
            200,
            &[("cache-control", "private, max-age=600".into())],
            body,
        ),
        "cookie" => reply(200, &[("set-cookie", format!("session={n}"))], body),
        "vary" => {
            let lang = headers
                .get("accept-language")
                .map_or("none".to_owned(), |v| v.to_str().unwrap().to_owned());
            reply(
                200,
                &[long, ("vary", "Accept-Language".into())],
                format!("{lang} #{n}"),
            )
        }
        "big" => reply(200, &[long], format!("{path} #{n} {}", "x".repeat(2 << 20))),
        "missing" => reply(404, &[], body),
        "error" => reply(500, &[("cache-control", "max-age=600".into())], body),
        "failing" => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            reply(500, &[], body)
        }
        "flaky" => {
            if up.down.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            reply(
                200,
                &[("cache-control", "max-age=1, stale-if-error=3".into())],
                body,
            )
        }
        _ => reply(200, &[long], body),
    }
}

/// Starts the upstream on 127.0.0.1:0; it stops with the test's runtime.
async fn upstream() -> (Arc<Upstream>, SocketAddr) {
    let up = Arc::new(Upstream::default());
    let app = axum::Router::new().fallback(answer).with_state(up.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (up, addr)
}

/// An upstreams file in a temp dir, removed on drop.
struct Config {
    dir: PathBuf,
    file: String,
}

impl Config {
    fn write(yaml: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "kache-readthrough-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("upstreams.yaml");
        std::fs::write(&file, yaml).unwrap();
        Self {
            file: file.display().to_string(),
            dir,
        }
    }
}

impl Drop for Config {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Upstream `api` at `addr` with a 1 s timeout, and `extra` fields.
fn api(addr: SocketAddr, extra: &str) -> Config {
    api_timeout(addr, "1s", extra)
}

fn api_timeout(addr: SocketAddr, timeout: &str, extra: &str) -> Config {
    Config::write(&format!(
        "upstreams:\n- name: api\n  url: http://{addr}\n  timeout: {timeout}\n  forwardHeaders: [Accept-Language]\n{extra}"
    ))
}

fn cluster(config: &Config, size: usize) -> StaticCluster {
    let envs = vec![Vec::new(); size];
    StaticCluster::start(&envs, "2", &["--upstreams-file", &config.file])
}

/// `GET /v1/upstreams/api{path}` on `node`: status, `X-Cache`, body.
async fn get(node: &Node, path: &str) -> (u16, String, String) {
    get_with(node, path, &[]).await
}

async fn get_with(node: &Node, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    let mut request = node.http.get(node.url(&format!("/v1/upstreams/api{path}")));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request.send().await.expect("GET");
    let status = response.status().as_u16();
    let cache = response
        .headers()
        .get("x-cache")
        .map_or(String::new(), |v| v.to_str().unwrap().to_owned());
    (status, cache, response.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cold_requests_across_nodes_make_one_upstream_request_per_url() {
    let (up, addr) = upstream().await;
    let config = api(addr, "");
    let cluster = cluster(&config, 3);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1000)
        .build()
        .unwrap();
    let urls: Vec<String> = cluster
        .nodes
        .iter()
        .map(|n| n.url("/v1/upstreams/api"))
        .collect();

    // 1,000 at once for one cold URL (the upstream takes 300 ms), round robin over 3 nodes.
    let run = |paths: Vec<String>| {
        let client = client.clone();
        let urls = urls.clone();
        async move {
            let calls = paths.iter().enumerate().map(|(i, path)| {
                let url = format!("{}{path}", urls[i % urls.len()]);
                let client = client.clone();
                async move {
                    let response = client.get(url).send().await.expect("GET");
                    let status = response.status().as_u16();
                    let cache = response.headers()["x-cache"].to_str().unwrap().to_owned();
                    (status, cache, response.text().await.unwrap())
                }
            });
            futures::future::join_all(calls).await
        }
    };
    let answers = run(vec!["/slow/one".to_owned(); 1000]).await;
    assert!(
        answers.iter().all(|(status, _, _)| *status == 200),
        "every request answered 200"
    );
    assert!(
        answers.iter().all(|(_, _, body)| body == "/slow/one #1"),
        "every request got the one upstream response"
    );
    assert_eq!(
        up.count("/slow/one"),
        1,
        "1,000 concurrent requests, one upstream request"
    );
    let misses = answers
        .iter()
        .filter(|(_, cache, _)| cache == "MISS")
        .count();
    assert!(misses >= 1, "the first requests were misses");

    // 100 distinct cold URLs, 10 requests each, all at once: 100 upstream requests.
    let paths: Vec<String> = (0..1000).map(|i| format!("/slow/u{}", i % 100)).collect();
    let answers = run(paths).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 200));
    for u in 0..100 {
        assert_eq!(up.count(&format!("/slow/u{u}")), 1, "/slow/u{u}");
    }
    assert_eq!(up.total(), 101);

    // A 5xx is not stored but is shared by the requests waiting on it; a private
    // response goes to one of them, and each of the others fetches its own.
    let answers = run(vec!["/failing/herd".to_owned(); 200]).await;
    assert!(answers.iter().all(|(status, _, _)| *status == 500));
    assert_eq!(
        up.count("/failing/herd"),
        1,
        "a failing upstream, one request per key"
    );
    let answers = run(vec!["/private/herd".to_owned(); 20]).await;
    let mut bodies: Vec<&str> = answers.iter().map(|(_, _, body)| body.as_str()).collect();
    bodies.sort_unstable();
    bodies.dedup();
    assert_eq!(bodies.len(), 20, "each client its own private response");
    let before = up.total();

    // Hits from every node afterwards, and the stats say so.
    for node in &cluster.nodes {
        let (status, cache, body) = get(node, "/slow/one").await;
        assert_eq!(
            (status, cache.as_str(), body.as_str()),
            (200, "HIT", "/slow/one #1")
        );
    }
    let stats = cluster.nodes[0].stats().await;
    let api = &stats["read_through"]["upstreams"][0];
    assert_eq!(api["name"], "api", "{stats}");
    assert!(api["hits"].as_u64().unwrap() >= 1, "{stats}");
    assert!(stats["read_through"]["hit_ratio"].as_f64().unwrap() > 0.0);
    let metrics = cluster.nodes[0].get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("kache_upstream_requests_total{upstream=\"api\",cache=\"hit\"}"),
        "{metrics}"
    );
    assert_eq!(up.total(), before, "hits reach nobody");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn freshness_revalidation_and_what_is_never_stored() {
    let (up, addr) = upstream().await;
    let config = api(addr, "");
    let cluster = cluster(&config, 3);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);

    // max-age=1: a hit within the second, fetched again after it.
    assert_eq!(get(a, "/short/x").await.1, "MISS");
    let (_, cache, body) = get(b, "/short/x").await;
    assert_eq!((cache.as_str(), body.as_str()), ("HIT", "/short/x #1"));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, cache, body) = get(b, "/short/x").await;
    assert_eq!((cache.as_str(), body.as_str()), ("MISS", "/short/x #2"));

    // An ETag: past max-age the owner revalidates, the upstream answers 304, and the
    // stored body is served again (and fresh again).
    assert_eq!(get(a, "/etag/x").await.1, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, cache, body) = get(b, "/etag/x").await;
    assert_eq!(
        (status, cache.as_str(), body.as_str()),
        (200, "REVALIDATED", "/etag/x #1")
    );
    assert_eq!(up.not_modified.load(Ordering::SeqCst), 1);
    assert_eq!(get(a, "/etag/x").await.1, "HIT");

    // stale-while-revalidate: past max-age the stale response is served at once while
    // the owner refreshes it in the background; then the refreshed one is a hit.
    assert_eq!(get(a, "/swr/x").await.1, "MISS");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, cache, body) = get(b, "/swr/x").await;
    assert_eq!((cache.as_str(), body.as_str()), ("STALE", "/swr/x #1"));
    let mut refreshed = false;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if get(a, "/swr/x").await == (200, "HIT".into(), "/swr/x #2".into()) {
            refreshed = true;
            break;
        }
    }
    assert!(refreshed, "the background refresh stored the new response");
    assert_eq!(up.count("/swr/x"), 2);

    // no-store, private and a Set-Cookie without public are never stored.
    for path in ["/nostore/x", "/private/x", "/cookie/x"] {
        for n in 1..=2 {
            let (status, cache, body) = get(a, path).await;
            assert_eq!((status, cache.as_str()), (200, "MISS"), "{path}");
            assert_eq!(body, format!("{path} #{n}"));
        }
    }
    let response = a.get("/v1/upstreams/api/cookie/y").await;
    assert!(
        response.headers().get("set-cookie").is_some(),
        "passed through to its client"
    );

    // A 404 is cached briefly (negativeTtl); a 500 never.
    assert_eq!(get(a, "/missing/x").await.0, 404);
    assert_eq!(
        get(b, "/missing/x").await,
        (404, "HIT".into(), "/missing/x #1".into())
    );
    assert_eq!(
        get(a, "/error/x").await,
        (500, "MISS".into(), "/error/x #1".into())
    );
    assert_eq!(
        get(a, "/error/x").await,
        (500, "MISS".into(), "/error/x #2".into())
    );

    // Vary: a response is only for requests with the same Accept-Language.
    let en = [("accept-language", "en")];
    let de = [("accept-language", "de")];
    assert_eq!(
        get_with(a, "/vary/x", &en).await,
        (200, "MISS".into(), "en #1".into())
    );
    assert_eq!(
        get_with(b, "/vary/x", &en).await,
        (200, "HIT".into(), "en #1".into())
    );
    let (_, _, body) = get_with(b, "/vary/x", &de).await;
    assert_eq!(body, "de #2", "never the other language's response");
    let (_, _, body) = get_with(a, "/vary/x", &de).await;
    assert_eq!(body, "de #2");
    let (_, _, body) = get_with(a, "/vary/x", &en).await;
    assert!(body.starts_with("en #"), "{body}");

    // Age on a hit; equivalent queries share an entry.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = a.get("/v1/upstreams/api/fresh/q?b=2&a=1").await;
    assert_eq!(response.headers()["x-cache"], "MISS");
    let response = b.get("/v1/upstreams/api/fresh/q?a=1&b=2").await;
    assert_eq!(response.headers()["x-cache"], "HIT");
    assert_eq!(up.count("/fresh/q?a=1&b=2"), 1, "sent upstream normalised");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let response = b.get("/v1/upstreams/api/fresh/q?a=1&b=2").await;
    let age: u64 = response.headers()["age"].to_str().unwrap().parse().unwrap();
    assert!(age >= 1, "age {age}");

    // A HEAD is answered from the GET's entry.
    let head = a
        .http
        .head(a.url("/v1/upstreams/api/fresh/q?a=1&b=2"))
        .send()
        .await
        .unwrap();
    assert_eq!(head.headers()["x-cache"], "HIT");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_upstream_serves_stale_within_stale_if_error_then_a_clear_504() {
    let (up, addr) = upstream().await;
    let config = api(addr, "  circuitBreaker: {failureThreshold: 1000}\n");
    let cluster = cluster(&config, 3);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    assert_eq!(get(a, "/flaky/x").await.1, "MISS");
    up.down.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    // Stale by now; the upstream hangs past the 1 s timeout; stale-if-error=3 allows it.
    let (status, cache, body) = get(b, "/flaky/x").await;
    assert_eq!(
        (status, cache.as_str(), body.as_str()),
        (200, "STALE", "/flaky/x #1")
    );
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let response = a.get("/v1/upstreams/api/flaky/x").await;
    assert_eq!(response.status(), 504);
    let error: Json = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "upstream_timeout", "{error}");
    assert_eq!(error["error"]["upstream"], "api", "{error}");
    assert_eq!(error["error"]["failure"], "timeout", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'api'"),
        "{error}"
    );
    up.down.store(false, Ordering::SeqCst);
    let (status, cache, _) = get(a, "/flaky/x").await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_opens_the_circuit_and_fails_fast() {
    // A port nothing listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let config = api(
        closed,
        "  circuitBreaker: {failureThreshold: 2, openFor: 60s}\n",
    );
    let node = Node::start(&["--upstreams-file", &config.file]);
    for _ in 0..2 {
        let response = node.get("/v1/upstreams/api/a").await;
        assert_eq!(response.status(), 502);
        let error: Json = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "upstream_unreachable", "{error}");
    }
    let response = node.get("/v1/upstreams/api/b").await;
    assert_eq!(response.status(), 502);
    let error: Json = response.json().await.unwrap();
    assert_eq!(error["error"]["code"], "upstream_circuit_open", "{error}");
    assert_eq!(error["error"]["failure"], "circuit_open", "{error}");
    let metrics = node.get("/metrics").await.text().await.unwrap();
    assert!(
        metrics.contains("kache_upstream_circuit_open{upstream=\"api\"} 1"),
        "{metrics}"
    );

    // Bad input: an unknown upstream, a path that escapes, a method it does not serve.
    let response = node.get("/v1/upstreams/nope/a").await;
    assert_eq!(response.status(), 404);
    let error: Json = response.json().await.unwrap();
    assert!(
        error["error"]["message"].as_str().unwrap().contains("api"),
        "{error}"
    );
    assert_eq!(node.get("/v1/upstreams/api/a/..%2Fb").await.status(), 400);
    let post = node
        .http
        .post(node.url("/v1/upstreams/api/a"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_request_does_not_hold_up_hits_on_other_keys() {
    let (up, addr) = upstream().await;
    let config = api_timeout(addr, "10s", "");
    let cluster = cluster(&config, 3);
    let node = &cluster.nodes[0];
    for i in 0..20 {
        get(node, &format!("/fresh/{i}")).await;
    }
    // Twenty requests for keys whose upstream takes 3 s, in flight at once...
    let slow: Vec<_> = (0..20)
        .map(|i| {
            let url = node.url(&format!("/v1/upstreams/api/hang/{i}"));
            let http = node.http.clone();
            tokio::spawn(async move { http.get(url).send().await.unwrap().status() })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    // ...while 200 hits on the other keys are answered, all before any slow one is.
    for round in 0..10 {
        for i in 0..20 {
            let (status, cache, _) = get(&cluster.nodes[round % 3], &format!("/fresh/{i}")).await;
            assert_eq!((status, cache.as_str()), (200, "HIT"));
        }
    }
    assert!(
        slow.iter().all(|task| !task.is_finished()),
        "the hits finished while the slow fills were still waiting on the upstream"
    );
    for task in slow {
        assert_eq!(task.await.unwrap(), 200);
    }
    assert_eq!(up.count("/hang/0"), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purges_remove_one_url_or_a_whole_upstream_from_every_replica() {
    let (up, addr) = upstream().await;
    let config = api(addr, "");
    let cluster = cluster(&config, 3);
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[1]);
    for i in 0..10 {
        get(a, &format!("/fresh/{i}")).await;
    }
    assert_eq!(get(b, "/fresh/0").await.1, "HIT");
    let purge = a
        .http
        .delete(a.url("/v1/upstreams/api/fresh/0"))
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    assert_eq!(purge.json::<Json>().await.unwrap()["purged"], true);
    for node in &cluster.nodes {
        assert_ne!(get(node, "/fresh/1").await.1, "MISS");
    }
    let (_, cache, body) = get(b, "/fresh/0").await;
    assert_eq!((cache.as_str(), body.as_str()), ("MISS", "/fresh/0 #2"));

    let purge = b
        .http
        .delete(b.url("/v1/upstreams/api"))
        .send()
        .await
        .unwrap();
    assert_eq!(purge.status(), 200);
    let purged: Json = purge.json().await.unwrap();
    assert_eq!(purged["members"], 3, "{purged}");
    assert!(
        purged["purged"].as_u64().unwrap() >= 20,
        "10 entries, 2 copies each: {purged}"
    );
    for i in 1..10 {
        let node = &cluster.nodes[i % 3];
        let (_, cache, body) = get(node, &format!("/fresh/{i}")).await;
        assert_eq!(cache, "MISS", "/fresh/{i} after the purge");
        assert_eq!(body, format!("/fresh/{i} #2"));
    }
    assert_eq!(up.count("/fresh/5"), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaling_3_to_5_to_2_under_read_through_traffic_errs_never_and_fills_each_key_once() {
    let (up, addr) = upstream().await;
    let config = api_timeout(addr, "5s", "");
    let envs = vec![Vec::new(); 5];
    let cluster = Arc::new(StaticCluster::start_with(
        &envs,
        "2",
        &Options {
            extra: &["--upstreams-file", &config.file],
            listed: Some(3),
            ..Options::default()
        },
    ));
    let warm: Vec<String> = (0..200).map(|i| format!("/fresh/w{i}")).collect();
    for (i, path) in warm.iter().enumerate() {
        assert_eq!(get(&cluster.nodes[i % 3], path).await.0, 200);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(AtomicUsize::new(3));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let served = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..8 {
        let (cluster, stop, live, failures, served, warm) = (
            cluster.clone(),
            stop.clone(),
            live.clone(),
            failures.clone(),
            served.clone(),
            warm.clone(),
        );
        workers.push(tokio::spawn(async move {
            // Bounded: stops when asked, or after 100,000 requests.
            for n in 0..100_000usize {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let node = &cluster.nodes[(w + n) % live.load(Ordering::SeqCst)];
                let path = &warm[fastrand::usize(..warm.len())];
                let (status, cache, body) = get(node, path).await;
                if status != 200 || !body.starts_with(path.as_str()) {
                    failures
                        .lock()
                        .push(format!("{path}: {status} {cache} {body}"));
                }
                served.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    // Cold keys during the scale, each asked twice, on two nodes, one after the other.
    let cold = {
        let (cluster, stop, live, failures) = (
            cluster.clone(),
            stop.clone(),
            live.clone(),
            failures.clone(),
        );
        tokio::spawn(async move {
            let mut asked = 0;
            for n in 0..10_000usize {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let path = format!("/fresh/c{n}");
                for k in 0..2 {
                    let node = &cluster.nodes[(n + k) % live.load(Ordering::SeqCst)];
                    let (status, _, body) = get(node, &path).await;
                    if status != 200 || body != format!("{path} #1") {
                        failures.lock().push(format!("{path}: {status} {body}"));
                    }
                }
                asked += 1;
            }
            asked
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.write_list(2, &[0, 1, 2, 3, 4], &[]);
    live.store(5, Ordering::SeqCst);
    for i in 0..5 {
        cluster.wait_settled(i, 2).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    live.store(2, Ordering::SeqCst);
    cluster.write_list(3, &[0, 1], &[2, 3, 4]);
    for i in 0..5 {
        cluster.wait_settled(i, 3).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    for worker in workers {
        worker.await.unwrap();
    }
    let cold_asked = cold.await.unwrap();
    let failures = failures.lock().clone();
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    assert!(
        served.load(Ordering::SeqCst) > 1000,
        "traffic ran through the scale"
    );
    assert!(cold_asked > 10, "cold keys were asked during the scale");
    for path in &warm {
        assert_eq!(up.count(path), 1, "{path} was filled again after moving");
    }
    for n in 0..cold_asked {
        let path = format!("/fresh/c{n}");
        assert_eq!(up.count(&path), 1, "{path}");
    }
    // After the scale the two remaining nodes still hit every warm key.
    for (i, path) in warm.iter().enumerate() {
        assert_eq!(get(&cluster.nodes[i % 2], path).await.1, "HIT", "{path}");
    }
}

#[test]
fn invalid_upstream_files_stop_the_node_with_the_reason() {
    let config = Config::write("upstreams:\n- name: api\n  url: ftp://x\n");
    let output = std::process::Command::new(common::BIN)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
            "--resp-addr",
            "off",
        ])
        .args(["--upstreams-file", &config.file])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("http:// or https://"), "{stderr}");
    let output = std::process::Command::new(common::BIN)
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--resp-addr",
            "off",
            "--upstream",
            "noequals",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("NAME=URL"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_object_size_are_passed_through_whole_and_never_stored() {
    let (up, addr) = upstream().await;
    let config = api_timeout(addr, "10s", "  maxObjectSize: 1MiB\n");
    let cluster = cluster(&config, 3);
    for round in 0..2 {
        for node in &cluster.nodes {
            let (status, cache, body) = get(node, "/big/x").await;
            assert_eq!((status, cache.as_str()), (200, "MISS"), "round {round}");
            let tail = body.split(' ').nth(2).unwrap_or_default();
            assert_eq!(tail.len(), 2 << 20, "the whole body");
        }
    }
    // Never stored, so each request fetches; one asked of a node that is not the key's
    // owner fetches twice (the owner's response is too large to send between nodes).
    let fetched = up.count("/big/x");
    assert!((6..=12).contains(&fetched), "{fetched}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_concurrency_wait_for_a_slot_then_fail_with_overloaded() {
    let (_up, addr) = upstream().await;
    // One slot, a 1 s timeout, and /hang takes 3 s: the first request holds the slot
    // until 1 s, the second gets it then and holds it until 2 s, so the third (asked at
    // 0.2 s) waits its whole second for a slot.
    let config = api(
        addr,
        "  maxConcurrency: 1\n  circuitBreaker: {failureThreshold: 1000}\n",
    );
    let node = Node::start(&["--upstreams-file", &config.file]);
    let mut asked = Vec::new();
    for i in 0..3 {
        let (http, url) = (
            node.http.clone(),
            node.url(&format!("/v1/upstreams/api/hang/{i}")),
        );
        asked.push(tokio::spawn(async move {
            let response = http.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            let error: Json = response.json().await.unwrap();
            let code = error["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (status, code)
        }));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut answers = Vec::new();
    for task in asked {
        answers.push(task.await.unwrap());
    }
    assert_eq!(answers[0], (504, "upstream_timeout".to_owned()));
    assert_eq!(answers[1], (504, "upstream_timeout".to_owned()));
    assert_eq!(answers[2], (504, "upstream_overloaded".to_owned()));
}
