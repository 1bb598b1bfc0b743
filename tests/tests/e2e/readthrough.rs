//! Read-through on the real control plane, against an upstream HTTP API this test runs
//! on the pods' gateway (the bridge's host-side address) and that counts the requests it
//! gets: `curl` through one pod misses and through another hits, with one upstream
//! request between them; 200 concurrent requests for one cold URL over the 3 pods make
//! one upstream request; the operator delivers `spec.upstreams` as the ConfigMap
//! `<name>-upstreams` and deletes it when the list goes; an upstream that is not
//! http(s) is refused at `kubectl apply` with the CEL rule's message.
//!
//! The curls and the applied YAML are written to `target/e2e/readthrough.txt`, which
//! README.md quotes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;

use super::*;

const NAME: &str = "readthrough";

/// The upstream API: every path answers 200 with a body naming it. Counts by path.
#[derive(Default)]
struct Upstream {
    requests: Mutex<HashMap<String, u64>>,
}

impl Upstream {
    fn requests(&self, path: &str) -> u64 {
        self.requests.lock().get(path).copied().unwrap_or(0)
    }
}

async fn answer(State(upstream): State<Arc<Upstream>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let n = {
        let mut requests = upstream.requests.lock();
        let n = requests.entry(path.clone()).or_default();
        *n += 1;
        *n
    };
    let body = serde_json::json!({ "path": path, "upstreamRequest": n }).to_string();
    let mut response = Response::new(Body::from(body));
    let headers = response.headers_mut();
    headers.insert("cache-control", "max-age=300".parse().unwrap());
    headers.insert("content-type", "application/json".parse().unwrap());
    response
}

/// The address the pods reach the host at: the bridge's own address, their gateway
/// (`KACHE_K8S_BRIDGE_CIDR`, which tests/e2e/run.sh exports; its default there).
fn gateway() -> String {
    let cidr = std::env::var("KACHE_K8S_BRIDGE_CIDR").unwrap_or_else(|_| "10.89.0.1/16".into());
    cidr.split('/').next().unwrap().to_owned()
}

/// Starts the upstream on the gateway address; it stops with the test's runtime.
async fn start_upstream() -> (Arc<Upstream>, SocketAddr) {
    let upstream = Arc::new(Upstream::default());
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(upstream.clone());
    let listener = tokio::net::TcpListener::bind((gateway(), 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (upstream, addr)
}

/// What a user sees of `curl -si`: the status line, the headers that tell the cache's
/// story, and the body.
fn curl_shown(output: &str) -> String {
    let (head, body) = output
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no end of headers in:\n{output}"));
    let mut lines = head.lines();
    let mut shown = vec![lines.next().unwrap_or_default().to_owned()];
    shown.extend(
        lines
            .filter(|line| {
                let name = line.split(':').next().unwrap_or_default().to_lowercase();
                ["x-cache", "age", "cache-control", "content-type"].contains(&name.as_str())
            })
            .map(str::to_owned),
    );
    format!("{}\n\n{body}", shown.join("\n"))
}

/// The value of header `name` in `curl -si` output.
fn header<'a>(output: &'a str, name: &str) -> Option<&'a str> {
    output.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// `curl -si` of `path` on upstream `api` through `ip`, with the read token in
/// `$KACHE_TOKEN`: (the command line, what curl printed).
fn curl(ip: &str, path: &str) -> (String, String) {
    let command = format!(
        "curl -si -H \"Authorization: Bearer $KACHE_TOKEN\" http://{ip}:{HTTP_PORT}/v1/upstreams/api{path}"
    );
    let mut shell = Command::new("sh");
    shell
        .args(["-c", &command])
        .env("KACHE_TOKEN", tls_auth::READ_TOKEN);
    let out = super::output(shell, None);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (command, text)
}

/// The read-through scenario on a 3-member cluster at RF 2; deletes it at the end.
pub async fn reads_through(client: &Client, http: &reqwest::Client) {
    let (upstream, addr) = start_upstream().await;
    log(&format!(
        "read-through: a counting upstream on {addr} (the pods' gateway)"
    ));
    let mut transcript = String::new();

    // An upstream the API server refuses: CEL names the field and what to fix.
    let invalid = cache_cluster_yaml(
        "readthrough-invalid",
        3,
        1,
        "  upstreams:\n  - {name: api, url: ftp://x}\n",
    );
    let (ok, text) = run("kubectl", &["apply", "-f", "-"], Some(&invalid));
    assert!(!ok, "an ftp:// upstream was accepted:\n{text}");
    assert!(
        text.contains("upstreams[].url must be http:// or https:// with a host"),
        "{text}"
    );
    log("an ftp:// upstream refused by the API server (CEL)");

    let yaml = cache_cluster_yaml(
        NAME,
        3,
        2,
        &format!("  upstreams:\n  - {{name: api, url: http://{addr}}}\n"),
    );
    let applied = must("kubectl", &["apply", "-f", "-"], Some(&yaml));
    let _ = write!(
        transcript,
        "$ kubectl apply -f - <<EOF\n{yaml}EOF\n{applied}"
    );
    log(&format!(
        "apply cc/{NAME}: 3 replicas, RF 2, upstream api -> http://{addr}"
    ));
    wait_available(client, NAME, 3, Duration::from_secs(180)).await;

    // <name>-upstreams carries the list the pods read.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let file = config_maps
        .get(&format!("{NAME}-upstreams"))
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .remove("upstreams.yaml")
        .unwrap_or_default();
    assert!(
        file.contains("name: api") && file.contains(&format!("url: http://{addr}")),
        "{NAME}-upstreams/upstreams.yaml:\n{file}"
    );

    // A miss through one pod, a hit through another, one upstream request between them.
    let ips = pod_ips(client, NAME).await;
    let (first, text) = curl(&ips[&0], "/items/42");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert_eq!(header(&text, "x-cache"), Some("MISS"), "{text}");
    let miss = curl_shown(&text);
    let (second, text) = curl(&ips[&1], "/items/42");
    assert_eq!(header(&text, "x-cache"), Some("HIT"), "{text}");
    let hit = curl_shown(&text);
    assert_eq!(
        miss.split_once("\n\n").map(|(_, body)| body),
        hit.split_once("\n\n").map(|(_, body)| body),
        "the hit serves the stored body"
    );
    assert_eq!(upstream.requests("/items/42"), 1);
    let _ = write!(
        transcript,
        "\n$ {first}        # {NAME}-0\n{miss}\n$ {second}        # {NAME}-1\n{hit}\n"
    );
    std::fs::write(out_dir().join("readthrough.txt"), &transcript).unwrap();
    log(&format!(
        "curl via {NAME}-0: MISS, via {NAME}-1: HIT; 1 upstream request:\n{transcript}"
    ));

    // 200 concurrent requests for one cold URL, spread over the pods: one upstream request.
    let ips: Vec<String> = ips.into_values().collect();
    let requests = (0..200).map(|i| {
        let url = format!(
            "http://{}:{HTTP_PORT}/v1/upstreams/api/items/cold",
            ips[i % ips.len()]
        );
        let http = http.clone();
        tokio::spawn(async move {
            let response = http.get(&url).send().await.unwrap();
            let status = response.status().as_u16();
            let cache = response
                .headers()
                .get("x-cache")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            (status, cache, response.text().await.unwrap())
        })
    });
    let mut by_cache: BTreeMap<String, u32> = BTreeMap::new();
    let mut bodies = BTreeSet::new();
    for request in requests.collect::<Vec<_>>() {
        let (status, cache, body) = request.await.unwrap();
        assert_eq!(status, 200, "{cache} {body}");
        *by_cache.entry(cache).or_default() += 1;
        bodies.insert(body);
    }
    assert_eq!(upstream.requests("/items/cold"), 1, "{by_cache:?}");
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    log(&format!(
        "200 concurrent GETs of a cold URL over 3 pods: 1 upstream request; X-Cache {by_cache:?}"
    ));

    // Without upstreams, the pods roll and then the ConfigMap goes.
    must(
        "kubectl",
        &[
            "-n",
            NS,
            "patch",
            "cc",
            NAME,
            "--type",
            "json",
            "-p",
            r#"[{"op":"remove","path":"/spec/upstreams"}]"#,
        ],
        None,
    );
    // The change rolls the pods (the nodes read the file at start); the new ones have no
    // upstream to read through.
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    eventually(
        "the StatefulSet rolled every pod",
        Duration::from_secs(180),
        || async {
            let set = sts.get(NAME).await.ok()?;
            let status = set.status?;
            // Judged on the patched spec, not on a status from before it.
            let rolled = status.observed_generation == set.metadata.generation
                && status.current_revision == status.update_revision
                && status.updated_replicas == Some(3)
                && status.ready_replicas == Some(3);
            rolled.then_some(())
        },
    )
    .await;
    // Only then is the ConfigMap deleted: a pod of the old revision recreated during
    // the roll would still mount it.
    eventually(
        &format!("{NAME}-upstreams deleted"),
        Duration::from_secs(120),
        || async {
            (!exists::<ConfigMap>(client, &format!("{NAME}-upstreams")).await).then_some(())
        },
    )
    .await;
    wait_available(client, NAME, 3, Duration::from_secs(120)).await;
    for (ordinal, ip) in pod_ips(client, NAME).await {
        let response = http
            .get(format!("http://{ip}:{HTTP_PORT}/v1/upstreams/api/items/42"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 404, "{NAME}-{ordinal}");
        let error: Json = response.json().await.unwrap();
        assert_eq!(error["error"]["code"], "no_upstream", "{NAME}-{ordinal}");
    }
    log(&format!(
        "upstreams removed from the spec: {NAME}-upstreams deleted, the pods rolled, \
         /v1/upstreams/api/... answers 404 no_upstream on each"
    ));

    must(
        "kubectl",
        &["-n", NS, "delete", "cc", NAME, "--wait=true"],
        None,
    );
}
