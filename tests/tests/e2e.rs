//! kache end to end on a real control plane with the process kubelet: the chart installs
//! the operator with its own RBAC, a CacheCluster comes up, scales 3 -> 5 -> 2 under a
//! continuous reader and writer with zero errors and zero misses, a config change rolls
//! the pods without losing a key, an invalid spec is refused, a SIGKILLed node at RF=2
//! restarts and re-syncs, one at RF=1 loses its keys and the status says so (DataLoss),
//! a persistent cluster comes back with its data after all its pods were deleted at once,
//! and a scale 3 -> 1 -> 3 brings back no deleted key and no old value, and deleting the
//! CacheCluster collects everything it owned (a persistent one's volumes stay). The
//! operator's ServiceAccount holds exactly the RBAC the chart README documents, and a
//! default CacheCluster gets its NetworkPolicy and placement defaults (`security`). Its
//! ServiceMonitor selects one Service and one port, and its PodMonitor and PrometheusRule
//! come and go with the spec (`monitoring`, on stand-in CRDs). A cluster whose peer
//! certificates come from cert-manager (a stand-in CRD and signer) runs on them
//! (`cert_manager`). `kubectl kache` shows the first scale's move and round-trips keys
//! through the pod proxy (`plugin`). A cluster with `spec.upstreams` reads through an
//! upstream HTTP API the test runs, one upstream request for the whole cluster per URL
//! (`readthrough`).
//!
//! Run by `tests/e2e/run.sh`, which starts the control plane and the kubelet and sets
//! KUBECONFIG; built only with `--features e2e`.

#![expect(
    clippy::unwrap_used,
    clippy::print_stderr,
    reason = "a test harness: a failed step should panic with its cause, and progress goes to stderr"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DynamicObject, ListParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Client, ResourceExt};
use parking_lot::Mutex;
use serde_json::Value as Json;

#[path = "e2e/cert_manager.rs"]
mod cert_manager;
#[path = "e2e/monitoring.rs"]
mod monitoring;
#[path = "e2e/plugin.rs"]
mod plugin;
#[path = "e2e/readthrough.rs"]
mod readthrough;
#[path = "e2e/security.rs"]
mod security;
#[path = "e2e/tls_auth.rs"]
mod tls_auth;

const NS: &str = "e2e";
const HTTP_PORT: u16 = 7070;
/// The admin token every scenario's clients send. It lives in the Secret `e2e-token`
/// (key `e2e`), which each CacheCluster lists in `spec.auth.tokens` (with a read token,
/// `tls_auth::READ_TOKEN`): auth is on by default, and the generated `<name>-auth`
/// Secret is checked by the `tls_auth` scenario.
const TOKEN: &str = "e2e-admin-7d1f0c9a2b4e4b8f9e3a6c5d";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn out_dir() -> PathBuf {
    let dir = std::env::var_os("KACHE_E2E_OUT")
        .map_or_else(|| repo_root().join("target/e2e"), PathBuf::from);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn log(message: &str) {
    eprintln!("[e2e {}] {message}", chrono_now());
}

fn chrono_now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%H:%M:%S")
        .to_string()
}

/// Runs `command` to its end with `stdin` written to it (none: no input), and returns
/// what it printed.
fn output(mut command: Command, stdin: Option<&str>) -> std::process::Output {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    child.wait_with_output().unwrap()
}

/// Runs a command; returns (success, stdout + stderr).
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut command = Command::new(program);
    command.args(args).current_dir(repo_root());
    let output = output(command, stdin);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

fn must(program: &str, args: &[&str], stdin: Option<&str>) -> String {
    let (ok, text) = run(program, args, stdin);
    assert!(ok, "{program} {args:?} failed:\n{text}");
    text
}

fn helm() -> String {
    std::env::var("HELM").unwrap_or_else(|_| "helm".to_owned())
}

/// Polls `check` every 500 ms until it returns Some or `timeout` passes.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn cache_clusters(client: &Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kache.dev", "v1alpha1", "CacheCluster"),
        "cacheclusters",
    );
    Api::namespaced_with(client.clone(), NS, &resource)
}

async fn cc_status(client: &Client, name: &str) -> Json {
    cache_clusters(client)
        .get(name)
        .await
        .map(|cc| cc.data["status"].clone())
        .unwrap_or(Json::Null)
}

/// Waits until the CacheCluster is Available with `replicas` joined members and the
/// StatefulSet has exactly that many pods.
async fn wait_available(client: &Client, name: &str, replicas: i64, timeout: Duration) -> Json {
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    eventually(
        &format!("{name} Available with {replicas} members"),
        timeout,
        || async {
            let status = cc_status(client, name).await;
            let ready = status["phase"] == "Available" && status["replicas"] == replicas;
            let size = sts.get(name).await.ok()?.spec?.replicas?;
            (ready && i64::from(size) == replicas).then_some(status)
        },
    )
    .await
}

/// Pod IPs of the CacheCluster's pods by ordinal.
async fn pod_ips(client: &Client, name: &str) -> BTreeMap<u32, String> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .unwrap();
    list.into_iter()
        .filter_map(|pod| {
            let ordinal = pod.name_any().rsplit('-').next()?.parse().ok()?;
            Some((ordinal, pod.status?.pod_ip?))
        })
        .collect()
}

fn url(ip: &str, key: &str) -> String {
    format!("http://{ip}:{HTTP_PORT}/v1/keys/{key}")
}

async fn put(http: &reqwest::Client, ip: &str, key: &str, value: &str) -> Result<(), String> {
    let response = http
        .put(url(ip, key))
        .body(value.to_owned())
        .send()
        .await
        .map_err(|e| format!("PUT {key} via {ip}: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("PUT {key} via {ip}: {}", response.status()))
    }
}

/// Ok(Some(value)), Ok(None) for a miss, Err for a failed request.
async fn get(http: &reqwest::Client, ip: &str, key: &str) -> Result<Option<String>, String> {
    let response = http
        .get(url(ip, key))
        .send()
        .await
        .map_err(|e| format!("GET {key} via {ip}: {e}"))?;
    match response.status().as_u16() {
        200 => Ok(Some(response.text().await.map_err(|e| e.to_string())?)),
        404 => Ok(None),
        status => Err(format!("GET {key} via {ip}: {status}")),
    }
}

async fn delete(http: &reqwest::Client, ip: &str, key: &str) -> Result<(), String> {
    let response = http
        .delete(url(ip, key))
        .send()
        .await
        .map_err(|e| format!("DELETE {key} via {ip}: {e}"))?;
    if response.status().as_u16() == 204 {
        Ok(())
    } else {
        Err(format!("DELETE {key} via {ip}: {}", response.status()))
    }
}

/// `redis-cli -h ip -p 6379` with the scenarios' admin token, then `args`; must succeed.
fn redis_cli(ip: &str, args: &[&str]) -> String {
    let mut all = vec!["-h", ip, "-p", "6379", "-a", TOKEN, "--no-auth-warning"];
    all.extend_from_slice(args);
    must("redis-cli", &all, None)
}

/// The Redis protocol, through a client nobody here wrote: `redis-cli -c` (following the
/// slot map) reads keys written over HTTP through every pod, a key it writes reads back
/// over HTTP, and `CLUSTER SLOTS` lists every pod at its RESP port.
async fn resp_agrees_with_http(
    http: &reqwest::Client,
    ips: &BTreeMap<u32, String>,
    keys: &BTreeMap<String, String>,
) {
    for (n, (key, value)) in keys.iter().take(12).enumerate() {
        let ip = ips.values().nth(n % ips.len()).unwrap();
        let got = redis_cli(ip, &["-c", "GET", key]);
        assert_eq!(got.trim_end(), value, "redis-cli -c GET {key} via {ip}");
    }
    for (ordinal, ip) in ips {
        let key = format!("resp-{}-{ordinal}", ips.len());
        let set = redis_cli(ip, &["-c", "SET", &key, ip]);
        assert_eq!(set.trim_end(), "OK");
        assert_eq!(get(http, ip, &key).await, Ok(Some(ip.clone())), "{key}");
    }
    let first = ips.values().next().unwrap();
    let slots = redis_cli(first, &["CLUSTER", "SLOTS"]);
    for ip in ips.values() {
        assert!(
            slots.contains(ip.as_str()),
            "CLUSTER SLOTS lacks {ip}:\n{slots}"
        );
    }
    let info = redis_cli(first, &["CLUSTER", "INFO"]);
    assert!(info.contains("cluster_state:ok"), "{info}");
    log(&format!(
        "RESP: redis-cli -c agrees with HTTP on {} pods",
        ips.len()
    ));
}

/// Checks that every key in `keys` reads back its value through `ip`.
async fn check_all(http: &reqwest::Client, ip: &str, keys: &BTreeMap<String, String>) {
    let mut missing = Vec::new();
    for (key, value) in keys {
        match get(http, ip, key).await {
            Ok(Some(found)) if &found == value => {}
            other => missing.push(format!("{key}: {other:?}")),
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} keys wrong through {ip}, e.g. {:?}",
        missing.len(),
        keys.len(),
        &missing[..missing.len().min(5)]
    );
}

/// A client that writes new keys and reads known ones continuously through the pods
/// that stay (ordinals 0 and 1), counting every failure, miss and wrong value.
struct Load {
    stop: Arc<AtomicBool>,
    written: Arc<Mutex<BTreeMap<String, String>>>,
    errors: Arc<Mutex<Vec<String>>>,
    misses: Arc<AtomicU64>,
    reads: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Load {
    fn start(
        http: reqwest::Client,
        targets: Targets,
        seed: BTreeMap<String, String>,
        tag: &str,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let written = Arc::new(Mutex::new(seed));
        let errors = Arc::new(Mutex::new(Vec::new()));
        let misses = Arc::new(AtomicU64::new(0));
        let reads = Arc::new(AtomicU64::new(0));
        let task = {
            let (stop, written, errors, misses, reads) = (
                stop.clone(),
                written.clone(),
                errors.clone(),
                misses.clone(),
                reads.clone(),
            );
            let tag = tag.to_owned();
            tokio::spawn(async move {
                // Bounded: at most a million rounds, far more than any scenario needs.
                for round in 0..1_000_000u64 {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let next = {
                        let targets = targets.lock();
                        (!targets.is_empty()).then(|| {
                            targets[usize::try_from(round).unwrap() % targets.len()].clone()
                        })
                    };
                    let Some(ip) = next else {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    };
                    let ip = &ip;
                    let key = format!("{tag}-{round}");
                    let value = format!("v{round}");
                    match put(&http, ip, &key, &value).await {
                        Ok(()) => {
                            written.lock().insert(key, value);
                        }
                        Err(e) => errors.lock().push(e),
                    }
                    let probe = {
                        let written = written.lock();
                        let n = written.len();
                        (n > 0).then(|| {
                            let index =
                                usize::try_from(round.wrapping_mul(2_654_435_761)).unwrap() % n;
                            written
                                .iter()
                                .nth(index)
                                .map(|(k, v)| (k.clone(), v.clone()))
                        })
                    };
                    if let Some(Some((key, expected))) = probe {
                        reads.fetch_add(1, Ordering::Relaxed);
                        match get(&http, ip, &key).await {
                            Ok(Some(found)) if found == expected => {}
                            Ok(Some(found)) => {
                                errors.lock().push(format!("{key}: {found} != {expected}"));
                            }
                            Ok(None) => {
                                misses.fetch_add(1, Ordering::Relaxed);
                                errors.lock().push(format!("miss: {key} via {ip}"));
                            }
                            Err(e) => errors.lock().push(e),
                        }
                    }
                }
            })
        };
        Self {
            stop,
            written,
            errors,
            misses,
            reads,
            task,
        }
    }

    /// Stops the client and returns every acknowledged key. A rolling restart may fail
    /// requests to a restarting owner (at RF=1 it is the only one); nothing else may.
    async fn finish(self, what: &str, allow_errors: bool) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Release);
        self.task.await.unwrap();
        let errors = self.errors.lock().clone();
        let misses = self.misses.load(Ordering::Relaxed);
        let written = self.written.lock().clone();
        log(&format!(
            "{what}: {} keys acknowledged, {} reads, {misses} misses, {} errors",
            written.len(),
            self.reads.load(Ordering::Relaxed),
            errors.len()
        ));
        let missed: Vec<&String> = errors.iter().filter(|e| e.starts_with("miss")).collect();
        assert!(
            missed.is_empty(),
            "{what}: reads of acknowledged keys missed: {missed:?}"
        );
        let wrong: Vec<&String> = errors.iter().filter(|e| e.contains("!=")).collect();
        assert!(wrong.is_empty(), "{what}: wrong values: {wrong:?}");
        assert!(
            allow_errors || errors.is_empty(),
            "{what}: {} client errors, e.g. {:?}",
            errors.len(),
            &errors[..errors.len().min(5)]
        );
        assert_eq!(misses, 0, "{what}: reads of existing keys missed");
        written
    }
}

/// The pod IPs a load client sends to; a refresher may replace them.
type Targets = Arc<Mutex<Vec<String>>>;

/// Keeps `targets` at the IPs of the cluster's ready pods, like a Service would.
fn follow_ready_pods(
    client: Client,
    name: &'static str,
    targets: Targets,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let pods: Api<Pod> = Api::namespaced(client, NS);
        // Bounded: the scenario stops it long before an hour passes.
        for _ in 0..7_200 {
            if let Ok(list) = pods
                .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
                .await
            {
                let ready: Vec<String> = list
                    .into_iter()
                    .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                    .filter_map(|pod| {
                        let status = pod.status?;
                        let ready = status
                            .conditions?
                            .iter()
                            .any(|c| c.type_ == "Ready" && c.status == "True");
                        ready.then_some(status.pod_ip?)
                    })
                    .collect();
                *targets.lock() = ready;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Records `kubectl get cc -w` into a file while a scenario runs.
struct Transcript {
    child: std::process::Child,
    path: PathBuf,
}

impl Transcript {
    fn start(name: &str, file: &str) -> Self {
        let path = out_dir().join(file);
        let out = std::fs::File::create(&path).unwrap();
        let child = Command::new("kubectl")
            .args(["-n", NS, "get", "cc", name, "-w", "-o", "wide"])
            .stdout(out)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Self { child, path }
    }

    fn finish(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }
}

impl Drop for Transcript {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Default headers carrying `token` as a bearer token.
fn bearer(token: &str) -> reqwest::header::HeaderMap {
    let mut headers = reqwest::header::HeaderMap::new();
    let value = format!("Bearer {token}").parse().unwrap();
    headers.insert(reqwest::header::AUTHORIZATION, value);
    headers
}

fn apply(yaml: &str) {
    must("kubectl", &["apply", "-f", "-"], Some(yaml));
}

fn cache_cluster_yaml(name: &str, replicas: u32, rf: u32, extra: &str) -> String {
    format!(
        "apiVersion: kache.dev/v1alpha1\nkind: CacheCluster\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  replicas: {replicas}\n  replicationFactor: {rf}\n  maxMemory: 64MiB\n  auth:\n    tokens: [{{secretName: e2e-token, role: admin}}, {{secretName: e2e-reader, role: read}}]\n{extra}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kache_on_a_real_control_plane() {
    let client = Client::try_default()
        .await
        .expect("KUBECONFIG points at the e2e cluster");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .default_headers(bearer(TOKEN))
        .build()
        .unwrap();

    // 1. The chart installs the operator, which then works with only the chart's RBAC.
    //    It watches NS only: its Role lives there, so NS exists first.
    plugin::says_the_crd_is_missing();
    log("helm install the chart");
    must("kubectl", &["create", "namespace", NS], None);
    must(
        &helm(),
        &[
            "upgrade",
            "--install",
            "kache",
            "charts/kache",
            "--namespace",
            "kache-system",
            "--create-namespace",
            "--set",
            &format!("watchNamespaces={{{NS}}}"),
            // For the cert-manager scenario (a stand-in CRD and signer, at the end).
            "--set",
            "rbac.certManager=true",
            "--wait",
            "--timeout",
            "180s",
        ],
        None,
    );
    tls_auth::create_token_secrets();
    // The Certificate CRD first: `kubectl auth can-i` answers no for an unknown resource.
    cert_manager::install_crd();
    monitoring::install_crds();
    security::operator_rbac_is_as_documented().await;

    // 2. A 3-member cluster becomes Available; keys written through one pod are readable
    //    through every pod.
    log("apply a CacheCluster with 3 replicas, RF 1");
    apply(&cache_cluster_yaml("scale", 3, 1, ""));
    let started = Instant::now();
    wait_available(&client, "scale", 3, Duration::from_secs(180)).await;
    log(&format!(
        "Available after {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    assert_runs_from_images(&client).await;
    security::defaults_are_locked_down(&client, "scale").await;
    monitoring::scraped_once(&client, "scale").await;
    let ips = pod_ips(&client, "scale").await;
    let mut seed = BTreeMap::new();
    for i in 0..2_000 {
        let (key, value) = (format!("seed-{i}"), format!("value-{i}"));
        put(&http, &ips[&0], &key, &value).await.unwrap();
        seed.insert(key, value);
    }
    for ip in ips.values() {
        check_all(&http, ip, &seed).await;
    }

    // 3. Scale 3 -> 5 -> 2 under load: zero errors, zero misses, every key present.
    let transcript = Transcript::start("scale", "scale-3-5-2.txt");
    // Ordinals 0 and 1 stay through both moves, so the client talks to them only.
    let stayers: Targets = Arc::new(Mutex::new(vec![ips[&0].clone(), ips[&1].clone()]));
    let mut keys = seed;
    for (from, to) in [(3, 5), (5, 2)] {
        let load = Load::start(
            http.clone(),
            stayers.clone(),
            keys.clone(),
            &format!("scale{from}to{to}"),
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
        log(&format!("kubectl scale cc/scale --replicas={to}"));
        let epoch_before = cc_status(&client, "scale").await["epoch"].as_i64().unwrap();
        // `kubectl kache status` and `watch` follow the first move (the plugin scenario).
        let plugin = (from == 3).then(|| plugin::DuringScale::start("scale"));
        let started = Instant::now();
        must(
            "kubectl",
            &["-n", NS, "scale", "cc/scale", &format!("--replicas={to}")],
            None,
        );
        let status = wait_available(&client, "scale", to, Duration::from_secs(300)).await;
        let took = started.elapsed();
        if let Some(plugin) = plugin {
            tokio::task::spawn_blocking(move || plugin.finish())
                .await
                .unwrap();
        }
        assert!(
            status["epoch"].as_i64().unwrap() > epoch_before,
            "a new epoch was published"
        );
        let rebalance = &status["rebalance"];
        log(&format!(
            "{from} -> {to}: Available after {:.1}s; epoch {} ; moved {} partitions, {} records, {} bytes",
            took.as_secs_f64(),
            status["epoch"],
            rebalance["partitionsMoved"],
            rebalance["recordsMoved"],
            rebalance["bytesMoved"]
        ));
        keys = load.finish(&format!("scale {from} -> {to}"), false).await;
        // Departed pods serve clients for half their grace period (10 s) after their
        // hand-off, for Redis Cluster clients to refresh their slot maps; then they go.
        let wanted = usize::try_from(to).unwrap();
        let ips = eventually("only the remaining pods", Duration::from_secs(90), || {
            let client = client.clone();
            async move {
                let ips = pod_ips(&client, "scale").await;
                (ips.len() == wanted).then_some(ips)
            }
        })
        .await;
        for ip in ips.values() {
            check_all(&http, ip, &keys).await;
        }
        resp_agrees_with_http(&http, &ips, &keys).await;
    }
    let text = transcript.finish();
    log(&format!("kubectl get cc -w during 3 -> 5 -> 2:\n{text}"));
    assert!(
        text.contains("Rebalancing"),
        "the status showed the move:\n{text}"
    );
    plugin::keys_round_trip(&client, "scale").await;

    // 4. A config change rolls the pods one by one, and no key is lost.
    log("config change: maxMemory 64MiB -> 96MiB rolls the pods");
    let sts: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    let revision_before = sts
        .get("scale")
        .await
        .unwrap()
        .status
        .unwrap()
        .update_revision;
    let targets: Targets = Arc::default();
    let refresher = follow_ready_pods(client.clone(), "scale", targets.clone());
    let load = Load::start(http.clone(), targets, keys.clone(), "roll");
    must(
        "kubectl",
        &[
            "-n",
            NS,
            "patch",
            "cc",
            "scale",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"maxMemory":"96MiB"}}"#,
        ],
        None,
    );
    let rolled = eventually(
        "the StatefulSet rolled every pod",
        Duration::from_secs(300),
        || async {
            let status = sts.get("scale").await.ok()?.status?;
            let done = status.update_revision != revision_before
                && status.current_revision == status.update_revision
                && status.updated_replicas == Some(2)
                && status.ready_replicas == Some(2);
            done.then_some(status)
        },
    )
    .await;
    log(&format!("rolled to revision {:?}", rolled.update_revision));
    wait_available(&client, "scale", 2, Duration::from_secs(120)).await;
    keys = load.finish("rolling config change", true).await;
    refresher.abort();
    let ips = pod_ips(&client, "scale").await;
    for ip in ips.values() {
        check_all(&http, ip, &keys).await;
    }

    // 5. An invalid CacheCluster is refused with a message that says what to fix.
    let (ok, text) = run(
        "kubectl",
        &["apply", "-f", "-"],
        Some(&cache_cluster_yaml("invalid", 3, 5, "")),
    );
    assert!(!ok, "an RF above replicas was accepted:\n{text}");
    assert!(
        text.contains("replicationFactor must be a number from 1 to spec.replicas"),
        "{text}"
    );
    let (ok, text) = run(
        "kubectl",
        &["-n", NS, "scale", "cc/scale", "--replicas=0"],
        None,
    );
    assert!(!ok, "scaling to zero was accepted:\n{text}");

    // 6. SIGKILL of a node process at RF=2: the pod restarts, re-syncs, no key is lost.
    //    The cluster's pods are customised (spec.pod, spec.cacheContainer) as a user would.
    log("RF=2 cluster with customised pods: SIGKILL one node");
    apply(CUSTOM_POD_OBJECTS);
    apply(&cache_cluster_yaml("kill", 3, 2, CUSTOM_POD));
    wait_available(&client, "kill", 3, Duration::from_secs(180)).await;
    assert_customised(&client, "kill").await;
    let ips = pod_ips(&client, "kill").await;
    let mut acked = BTreeMap::new();
    for i in 0..2_000 {
        let (key, value) = (format!("kill-{i}"), format!("value-{i}"));
        put(&http, &ips[&(i % 3)], &key, &value).await.unwrap();
        acked.insert(key, value);
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let restarts = |pod: &Pod| {
        pod.status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map_or(0, |c| c[0].restart_count)
    };
    let before = restarts(&pods.get("kill-1").await.unwrap());
    let pid = node_pid("kill-1");
    log(&format!("kill -KILL {pid} (kill-1)"));
    must("kill", &["-KILL", &pid.to_string()], None);
    // Restarted, and Ready again: a node reports ready only once it re-synced what it
    // owns. (Until then, reads at R=quorum of its partitions answer 503, not a miss.)
    eventually(
        "kill-1 restarted and re-synced",
        Duration::from_secs(120),
        || async {
            let pod = pods.get("kill-1").await.ok()?;
            let ready = pod
                .status
                .as_ref()?
                .conditions
                .as_ref()?
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            (restarts(&pod) > before && ready).then_some(())
        },
    )
    .await;
    wait_available(&client, "kill", 3, Duration::from_secs(180)).await;
    let ips = pod_ips(&client, "kill").await;
    for ip in ips.values() {
        check_all(&http, ip, &acked).await;
    }
    // At RF=2 the restarted member found a live copy of everything: no loss recorded.
    let status = cc_status(&client, "kill").await;
    assert_eq!(status["dataLossIncidents"], 0, "{status}");
    assert!(status.get("lastDataLoss").is_none(), "{status}");

    // 6a. Locked doors on cc/kill (cc/scale provides a foreign certificate): outsiders
    //     refused on the peer port, tokens and roles on the client API, certificates
    //     rotated under load; then a cluster with client TLS and auth off.
    let acked = tls_auth::locked_doors(&client, &http, "kill", "scale", acked).await;
    tls_auth::client_tls_and_open_cluster(&client).await;

    // 6b. SIGKILL at RF=1 loses the keys the member held: the status says so.
    data_loss_at_rf1(&client, &http).await;

    // 6c. helm upgrade to a new image tag rolls the operator and then the cache pods, at
    //     RF=2 under a reader and a writer: no acknowledged key lost, no miss.
    helm_upgrade_rolls_the_pods(&client, &http, &acked).await;

    // 6d. A persistent cluster survives the deletion of all its pods at once, and a scale
    //     3 -> 1 -> 3 resurrects nothing.
    persistence(&client, &http).await;

    // 7. Deleting a CacheCluster garbage-collects everything it owned.
    log("delete cc/kill");
    must(
        "kubectl",
        &["-n", NS, "delete", "cc", "kill", "--wait=true"],
        None,
    );
    eventually(
        "everything cc/kill owned is gone",
        Duration::from_secs(120),
        || async {
            let gone = !exists::<StatefulSet>(&client, "kill").await
                && !exists::<Service>(&client, "kill").await
                && !exists::<Service>(&client, "kill-peers").await
                && !exists::<ConfigMap>(&client, "kill-config").await
                && !exists::<ConfigMap>(&client, "kill-members").await
                && !exists::<ServiceAccount>(&client, "kill-node").await
                && !exists::<Role>(&client, "kill-node").await
                && !exists::<RoleBinding>(&client, "kill-node").await
                && !exists::<PodDisruptionBudget>(&client, "kill").await
                && !exists::<NetworkPolicy>(&client, "kill").await;
            gone.then_some(())
        },
    )
    .await;

    // 8. Read-through: a 3-member cluster with an upstream misses once and then hits on
    //    any pod, 200 concurrent requests for a cold URL make one upstream request, and
    //    the upstreams' ConfigMap follows the spec.
    readthrough::reads_through(&client, &http).await;

    // 9. cert-manager (a stand-in CRD and signer) issues the peer certificates of a
    //    2-member cluster: it serves, replicates, and presents what the stand-in issued.
    cert_manager::issued_by_cert_manager(&client, &http).await;
    log("all scenarios passed");
}

/// Pod customisations: env, an extra volume mounted into the cache container and a
/// sidecar, an image pull secret, a longer termination grace (the node's drain follows).
/// The sidecar runs the node image standalone: the process kubelet runs only images it has.
const CUSTOM_POD: &str = "  pod:
    imagePullSecrets: [{name: regcred}]
    serviceAccountName: kill-custom
    securityContext: {runAsUser: 65532, runAsGroup: 65532, fsGroup: 65532}
    terminationGracePeriodSeconds: 90
    volumes:
      - {name: scratch, emptyDir: {}}
    sidecars:
      - name: helper
        image: kache/node:0.1.0
        args: [--http-addr, \"127.0.0.1:7170\", --grpc-addr, \"127.0.0.1:7171\", --resp-addr, \"127.0.0.1:7172\", --node-id, helper]
        volumeMounts: [{name: scratch, mountPath: /scratch}]
  cacheContainer:
    env: [{name: RUST_LOG, value: \"info,kache_node=debug\"}]
    envFrom: [{configMapRef: {name: kill-extra-env}}]
    securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true}
    volumeMounts: [{name: scratch, mountPath: /scratch}]
";

/// What [`CUSTOM_POD`] refers to and a user creates first: its service account and the
/// ConfigMap its `envFrom` reads.
const CUSTOM_POD_OBJECTS: &str = "apiVersion: v1
kind: ServiceAccount
metadata: {name: kill-custom, namespace: e2e}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: kill-extra-env, namespace: e2e}
data: {EXTRA_SETTING: from-env-from}
";

/// The customisations of [`CUSTOM_POD`] are in every pod of `name`, and the node's
/// shutdown grace follows the termination grace.
async fn assert_customised(client: &Client, name: &str) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let list = pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .unwrap();
    assert!(!list.items.is_empty());
    for pod in list {
        let spec = pod.spec.clone().unwrap();
        let pod_name = pod.name_any();
        assert_eq!(
            spec.termination_grace_period_seconds,
            Some(90),
            "{pod_name}"
        );
        let secrets: Vec<String> = spec
            .image_pull_secrets
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(secrets, ["regcred"], "{pod_name}");
        assert_eq!(
            spec.service_account_name.as_deref(),
            Some("kill-custom"),
            "{pod_name}"
        );
        assert_eq!(
            spec.security_context.as_ref().and_then(|s| s.fs_group),
            Some(65532),
            "{pod_name}: pod securityContext"
        );
        let names: Vec<&str> = spec.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["kache", "helper"], "{pod_name}");
        let cache = &spec.containers[0];
        assert!(
            cache.env.iter().flatten().any(
                |e| e.name == "RUST_LOG" && e.value.as_deref() == Some("info,kache_node=debug")
            ),
            "{pod_name}: RUST_LOG"
        );
        assert!(
            cache.env_from.iter().flatten().any(|e| e
                .config_map_ref
                .as_ref()
                .is_some_and(|c| c.name == "kill-extra-env")),
            "{pod_name}: envFrom"
        );
        let context = cache.security_context.clone().unwrap_or_default();
        assert_eq!(
            (
                context.allow_privilege_escalation,
                context.read_only_root_filesystem
            ),
            (Some(false), Some(true)),
            "{pod_name}: container securityContext"
        );
        for container in &spec.containers {
            assert!(
                container
                    .volume_mounts
                    .iter()
                    .flatten()
                    .any(|m| m.name == "scratch" && m.mount_path == "/scratch"),
                "{pod_name}/{}: /scratch",
                container.name
            );
        }
        let running = pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
            .iter()
            .filter(|c| c.ready)
            .count();
        assert_eq!(running, 2, "{pod_name}: both containers ready");
    }
    let config: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let settings = config
        .get(&format!("{name}-config"))
        .await
        .unwrap()
        .data
        .unwrap();
    assert_eq!(
        settings.get("KACHE_SHUTDOWN_GRACE").map(String::as_str),
        Some("80s"),
        "the drain fits in the termination grace"
    );
    log(
        "customised pods: env, envFrom, volume, sidecar, pull secret, service account, \
         security contexts, 90 s grace (drain 80 s)",
    );
}

/// A member SIGKILLed at RF=1 restarts empty: what it held is lost (expected at RF=1),
/// and the status must say so: a DataLoss condition and Event naming the member and the
/// partitions, `status.lastDataLoss`, and the operator's data-loss counter.
async fn data_loss_at_rf1(client: &Client, http: &reqwest::Client) {
    log("RF=1 cluster: SIGKILL one node, which loses what it held");
    apply(&cache_cluster_yaml("lossy", 2, 1, ""));
    wait_available(client, "lossy", 2, Duration::from_secs(180)).await;
    // The member's incarnation is recorded once it synced; only then is a new one a restart.
    eventually(
        "lossy-1's incarnation recorded",
        Duration::from_secs(60),
        || async {
            let status = cc_status(client, "lossy").await;
            let members = status["members"].as_array()?.clone();
            members
                .iter()
                .all(|m| m["incarnation"].is_string())
                .then_some(())
        },
    )
    .await;
    let ips = pod_ips(client, "lossy").await;
    let mut acked = BTreeMap::new();
    for i in 0..500 {
        let (key, value) = (format!("lossy-{i}"), format!("value-{i}"));
        put(http, &ips[&0], &key, &value).await.unwrap();
        acked.insert(key, value);
    }
    let pid = node_pid("lossy-1");
    log(&format!("kill -KILL {pid} (lossy-1)"));
    must("kill", &["-KILL", &pid.to_string()], None);
    let status = eventually("the loss recorded", Duration::from_secs(120), || async {
        let status = cc_status(client, "lossy").await;
        (status["lastDataLoss"]["member"] == "lossy-1").then_some(status)
    })
    .await;
    let record = &status["lastDataLoss"];
    let lost_partitions = record["partitionCount"].as_u64().unwrap();
    assert!(lost_partitions > 0, "{record}");
    assert_eq!(
        record["partitions"].as_array().unwrap().len() as u64,
        lost_partitions
    );
    assert_eq!(status["dataLossIncidents"], 1, "{status}");
    let condition = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "DataLoss")
        .cloned()
        .unwrap();
    assert_eq!(condition["status"], "True", "{condition}");
    assert_eq!(condition["reason"], "PartitionsLost", "{condition}");
    assert!(condition["message"].as_str().unwrap().contains("lossy-1"));
    let events = must(
        "kubectl",
        &[
            "-n",
            NS,
            "get",
            "events",
            "--field-selector",
            "reason=DataLoss,involvedObject.name=lossy",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        None,
    );
    assert!(events.contains("lossy-1 restarted"), "events: {events}");
    log(&format!("DataLoss event: {events}"));
    // The keys really are gone (some of them): the status did not cry wolf.
    wait_available(client, "lossy", 2, Duration::from_secs(120)).await;
    let ips = pod_ips(client, "lossy").await;
    let mut missing = 0;
    for key in acked.keys() {
        if get(http, &ips[&0], key).await.unwrap().is_none() {
            missing += 1;
        }
    }
    log(&format!(
        "{missing} of {} keys lost with {lost_partitions} partitions",
        acked.len()
    ));
    assert!(missing > 0, "nothing was lost, yet a loss was recorded");
    let metrics = operator_metrics(client, http).await;
    assert!(
        metrics.contains(&format!(
            "kache_cachecluster_data_loss_incidents_total{{cluster=\"{NS}/lossy\"}} 1"
        )),
        "{metrics}"
    );
    must(
        "kubectl",
        &["-n", NS, "delete", "cc", "lossy", "--wait=true"],
        None,
    );
}

/// The operator's and the cache's pods run the shipped images, not host binaries: the
/// kubelet reports each container's image by digest, as a runtime does.
async fn assert_runs_from_images(client: &Client) {
    for (namespace, image) in [
        ("kache-system", "kache/operator@sha256:"),
        (NS, "kache/node@sha256:"),
    ] {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        let list = pods.list(&ListParams::default()).await.unwrap();
        assert!(!list.items.is_empty(), "no pods in {namespace}");
        for pod in list {
            let statuses = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            for status in statuses {
                assert!(
                    status.image_id.contains(image),
                    "{} runs {:?}, not an image from the store",
                    status.name,
                    status.image_id
                );
            }
        }
    }
    log("every pod runs from the kache images");
}

/// `helm upgrade` to the images tagged `0.1.0-upgrade` (tests/e2e/run.sh builds them: the
/// same source with another version label) rolls the operator, whose new node image rolls
/// the StatefulSet of cc/kill one pod at a time, while a client writes and reads. At RF=2 a
/// write needs both owners, so requests to a restarting owner may fail (unknown outcomes);
/// none may miss, and every acknowledged key is there afterwards.
async fn helm_upgrade_rolls_the_pods(
    client: &Client,
    http: &reqwest::Client,
    acked: &BTreeMap<String, String>,
) {
    const TAG: &str = "0.1.0-upgrade";
    log(&format!("helm upgrade to the {TAG} images under load"));
    let targets: Targets = Arc::default();
    let refresher = follow_ready_pods(client.clone(), "kill", targets.clone());
    let load = Load::start(http.clone(), targets, acked.clone(), "upgrade");
    tokio::time::sleep(Duration::from_secs(2)).await;
    must(
        &helm(),
        &[
            "upgrade",
            "kache",
            "charts/kache",
            "--namespace",
            "kache-system",
            "--reuse-values",
            "--set",
            &format!("image.tag={TAG}"),
            "--set",
            &format!("nodeImage=kache/node:{TAG}"),
            "--wait",
            "--timeout",
            "180s",
        ],
        None,
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let new_image = format!("kache/node:{TAG}");
    eventually(
        "every kill pod runs the new image and is Ready",
        Duration::from_secs(300),
        || async {
            let list = pods
                .list(&ListParams::default().labels("app.kubernetes.io/instance=kill"))
                .await
                .ok()?;
            let upgraded = list.items.len() == 3
                && list.items.iter().all(|pod| {
                    let spec_image = pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.first())
                        .and_then(|c| c.image.clone());
                    let ready = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    spec_image.as_deref() == Some(new_image.as_str()) && ready
                });
            upgraded.then_some(())
        },
    )
    .await;
    wait_available(client, "kill", 3, Duration::from_secs(180)).await;
    let keys = load.finish("helm upgrade", true).await;
    refresher.abort();
    let ips = pod_ips(client, "kill").await;
    for ip in ips.values() {
        check_all(http, ip, &keys).await;
    }
    log(&format!(
        "upgraded to {TAG}: {} keys all present",
        keys.len()
    ));
}

/// The operator's `/metrics`, read from its pod.
async fn operator_metrics(client: &Client, http: &reqwest::Client) -> String {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kache-system");
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/component=operator"))
        .await
        .unwrap();
    let mut text = String::new();
    for pod in list {
        let Some(ip) = pod.status.and_then(|s| s.pod_ip) else {
            continue;
        };
        if let Ok(response) = http.get(format!("http://{ip}:8080/metrics")).send().await {
            text.push_str(&response.text().await.unwrap_or_default());
        }
    }
    text
}

async fn exists<K>(client: &Client, name: &str) -> bool
where
    K: kube::Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(client.clone(), NS)
        .get_opt(name)
        .await
        .map(|o| o.is_some())
        .unwrap_or(true)
}

/// The host PID of a pod's node process, found through its environment (the kubelet
/// runs containers as host processes).
fn node_pid(pod: &str) -> u32 {
    let wanted = format!("KACHE_NODE_ID={pod}");
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(exe) = std::fs::read_link(entry.path().join("exe")) else {
            continue;
        };
        if !exe.to_string_lossy().contains("kache-node") {
            continue;
        }
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        if environ
            .split(|b| *b == 0)
            .any(|var| var == wanted.as_bytes())
        {
            return pid;
        }
    }
    panic!("no kache-node process for {pod}");
}

/// `spec.persistence` of the persistent scenario: every acknowledged write is on disk
/// before it is acknowledged, and snapshots come often enough that a restart loads a
/// snapshot and the log after it.
const PERSISTENCE: &str = "  persistence:
    enabled: true
    size: 64Mi
    fsync: always
    snapshotInterval: 5s
";

/// A persistent cluster (3 members, RF 2, `fsync: always`): every pod deleted at once comes
/// back with every live key and no deleted one, and the status returns to Available with
/// no data loss recorded. Scaled 3 -> 1 -> 3, the scale-down deletes the leaving members'
/// claims (`whenScaled: Delete`) and nothing old comes back with the new members. Deleted,
/// the CacheCluster leaves its claims behind (`whenDeleted: Retain`).
async fn persistence(client: &Client, http: &reqwest::Client) {
    const NAME: &str = "persist";
    log("persistent cluster: 3 members, RF 2, fsync always");
    apply(&cache_cluster_yaml(NAME, 3, 2, PERSISTENCE));
    wait_available(client, NAME, 3, Duration::from_secs(240)).await;
    let claims = bound_claims(client, NAME, &[0, 1, 2]).await;
    assert_persistent_settings(client, NAME).await;

    let ips = pod_ips(client, NAME).await;
    let via = |i: usize| ips.values().nth(i % ips.len()).unwrap().clone();
    let mut live = BTreeMap::new();
    for i in 0..300 {
        let (key, value) = (format!("persist-{i}"), format!("value-{i}"));
        put(http, &via(i), &key, &value).await.unwrap();
        live.insert(key, value);
    }
    let mut deleted = BTreeSet::new();
    for i in (0..300).step_by(6) {
        let key = format!("persist-{i}");
        delete(http, &via(i + 1), &key).await.unwrap();
        live.remove(&key);
        deleted.insert(key);
    }
    assert_eq!((live.len(), deleted.len()), (250, 50));

    // Every pod at once: a whole-cluster restart. The nodes load their own data.
    let incarnations = recorded_incarnations(client, NAME, 3).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    let selector = format!("app.kubernetes.io/instance={NAME}");
    let old_pods: BTreeSet<String> = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|pod| pod.metadata.uid)
        .collect();
    log("kubectl delete pod -l app.kubernetes.io/instance=persist (all 3 at once)");
    must(
        "kubectl",
        &["-n", NS, "delete", "pod", "-l", &selector, "--wait=false"],
        None,
    );
    let started = Instant::now();
    eventually(
        "3 new persist pods, all Ready",
        Duration::from_secs(300),
        || async {
            let list = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let replaced = list.items.len() == 3
                && list.items.iter().all(|pod| {
                    let new = pod
                        .metadata
                        .uid
                        .as_ref()
                        .is_some_and(|uid| !old_pods.contains(uid));
                    let ready = pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| {
                            c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                    new && ready
                });
            replaced.then_some(())
        },
    )
    .await;
    // Available again, as judged on the new nodes: every member's incarnation changed.
    let status = eventually(
        "persist Available on the restarted nodes",
        Duration::from_secs(180),
        || async {
            let status = cc_status(client, NAME).await;
            let restarted = status["members"].as_array()?.iter().all(|m| {
                m["incarnation"]
                    .as_str()
                    .is_some_and(|i| !incarnations.contains(i))
            });
            (status["phase"] == "Available" && status["replicas"] == 3 && restarted)
                .then_some(status)
        },
    )
    .await;
    log(&format!(
        "every pod deleted at once: Available again after {:.1}s",
        started.elapsed().as_secs_f64()
    ));
    let ips = pod_ips(client, NAME).await;
    for ip in ips.values() {
        check_all(http, ip, &live).await;
        check_absent(http, ip, &deleted).await;
    }
    assert_eq!(
        status["dataLossIncidents"], 0,
        "the nodes loaded their data, nothing was lost: {status}"
    );
    assert_eq!(
        bound_claims(client, NAME, &[0, 1, 2]).await,
        claims,
        "the restarted pods use the same claims"
    );
    log(&format!(
        "after the restart: {} keys back, {} deleted keys still deleted",
        live.len(),
        deleted.len()
    ));

    // Changes the leaving members' volumes hold the old state of: overwritten values and
    // deleted keys. Then 3 -> 1 (RF 1: at most the replica count) and back to 3 at RF 2.
    let via = |i: usize| ips.values().nth(i % ips.len()).unwrap().clone();
    for i in (1..300).step_by(6) {
        let (key, value) = (format!("persist-{i}"), format!("overwritten-{i}"));
        put(http, &via(i), &key, &value).await.unwrap();
        live.insert(key, value);
    }
    for i in (2..300).step_by(12) {
        let key = format!("persist-{i}");
        delete(http, &via(i), &key).await.unwrap();
        live.remove(&key);
        deleted.insert(key);
    }
    log("scale persist 3 -> 1 (replicationFactor 1)");
    scale(NAME, 1, 1);
    wait_available(client, NAME, 1, Duration::from_secs(300)).await;
    eventually(
        "the claims of persist-1 and persist-2 deleted with their pods (whenScaled: Delete)",
        Duration::from_secs(180),
        || async { (claim_names(client, NAME).await == ["data-persist-0"]).then_some(()) },
    )
    .await;
    let ips = pod_ips(client, NAME).await;
    check_all(http, &ips[&0], &live).await;
    check_absent(http, &ips[&0], &deleted).await;

    log("scale persist 1 -> 3 (replicationFactor 2)");
    scale(NAME, 3, 2);
    wait_available(client, NAME, 3, Duration::from_secs(300)).await;
    let fresh = bound_claims(client, NAME, &[0, 1, 2]).await;
    assert_eq!(fresh["data-persist-0"], claims["data-persist-0"]);
    for claim in ["data-persist-1", "data-persist-2"] {
        assert_ne!(fresh[claim], claims[claim], "{claim} is a new claim");
    }
    let ips = pod_ips(client, NAME).await;
    for ip in ips.values() {
        check_all(http, ip, &live).await;
        check_absent(http, ip, &deleted).await;
    }
    log(&format!(
        "3 -> 1 -> 3: the new members' claims are new; {} keys with their latest values, \
         none of {} deleted keys back",
        live.len(),
        deleted.len()
    ));

    // Deleting the CacheCluster leaves its claims (whenDeleted: Retain, the default).
    log("delete cc/persist: its claims stay");
    must(
        "kubectl",
        &["-n", NS, "delete", "cc", NAME, "--wait=true"],
        None,
    );
    eventually(
        "the StatefulSet and pods of persist gone",
        Duration::from_secs(120),
        || async {
            let pods_left = pods
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?
                .items
                .len();
            (!exists::<StatefulSet>(client, NAME).await && pods_left == 0).then_some(())
        },
    )
    .await;
    let retained = bound_claims(client, NAME, &[0, 1, 2]).await;
    assert_eq!(retained, fresh, "the claims outlived the CacheCluster");
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    for claim in claim_api
        .list(&ListParams::default().labels(&selector))
        .await
        .unwrap()
    {
        assert!(
            claim.owner_references().is_empty(),
            "{} has an owner that could collect it",
            claim.name_any()
        );
    }
    log(&format!(
        "retained claims: {:?}",
        retained.keys().collect::<Vec<_>>()
    ));
    must(
        "kubectl",
        &["-n", NS, "delete", "pvc", "-l", &selector, "--wait=true"],
        None,
    );
    let volumes: Api<PersistentVolume> = Api::all(client.clone());
    eventually(
        "the claims and their volumes gone",
        Duration::from_secs(120),
        || async {
            let volumes_left = volumes
                .list(&ListParams::default())
                .await
                .ok()?
                .into_iter()
                .filter(|pv| {
                    pv.spec
                        .as_ref()
                        .and_then(|s| s.claim_ref.as_ref())
                        .is_some_and(|c| {
                            c.namespace.as_deref() == Some(NS)
                                && c.name
                                    .as_deref()
                                    .is_some_and(|n| n.starts_with("data-persist-"))
                        })
                })
                .count();
            (claim_names(client, NAME).await.is_empty() && volumes_left == 0).then_some(())
        },
    )
    .await;
}

/// `kubectl patch` of replicas and replication factor together: CEL refuses a replication
/// factor above the replica count, so a scale below it must lower both at once.
fn scale(name: &str, replicas: u32, rf: u32) {
    must(
        "kubectl",
        &[
            "-n",
            NS,
            "patch",
            "cc",
            name,
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{{"replicas":{replicas},"replicationFactor":{rf}}}}}"#),
        ],
        None,
    );
}

/// Checks that no key in `keys` reads back through `ip`.
async fn check_absent(http: &reqwest::Client, ip: &str, keys: &BTreeSet<String>) {
    let mut back = Vec::new();
    for key in keys {
        match get(http, ip, key).await {
            Ok(None) => {}
            other => back.push(format!("{key}: {other:?}")),
        }
    }
    assert!(
        back.is_empty(),
        "{} of {} deleted keys not absent through {ip}, e.g. {:?}",
        back.len(),
        keys.len(),
        &back[..back.len().min(5)]
    );
}

/// The names of the cluster's claims, sorted.
async fn claim_names(client: &Client, name: &str) -> Vec<String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let mut names: Vec<String> = claims
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .map(|list| list.into_iter().map(|c| c.name_any()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Waits until the cluster's claims are exactly `data-<name>-<ordinal>` for `ordinals`, all
/// Bound, and returns their UIDs by name.
async fn bound_claims(client: &Client, name: &str, ordinals: &[u32]) -> BTreeMap<String, String> {
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), NS);
    let wanted: BTreeSet<String> = ordinals
        .iter()
        .map(|ordinal| format!("data-{name}-{ordinal}"))
        .collect();
    let selector = format!("app.kubernetes.io/instance={name}");
    eventually(
        &format!("claims {wanted:?} Bound"),
        Duration::from_secs(120),
        || async {
            let list = claims
                .list(&ListParams::default().labels(&selector))
                .await
                .ok()?;
            let bound: BTreeMap<String, String> = list
                .into_iter()
                .filter(|c| {
                    c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound")
                        && c.metadata.deletion_timestamp.is_none()
                })
                .filter_map(|c| Some((c.name_any(), c.metadata.uid?)))
                .collect();
            (bound.keys().cloned().collect::<BTreeSet<_>>() == wanted).then_some(bound)
        },
    )
    .await
}

/// The settings a persistent cluster's nodes get, and its claim mounted in every pod.
async fn assert_persistent_settings(client: &Client, name: &str) {
    let uid = cache_clusters(client)
        .get(name)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let config: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let settings = config
        .get(&format!("{name}-config"))
        .await
        .unwrap()
        .data
        .unwrap();
    for (variable, value) in [
        ("KACHE_DATA_DIR", "/var/lib/kache/data"),
        ("KACHE_FSYNC", "always"),
        ("KACHE_SNAPSHOT_INTERVAL", "5s"),
        ("KACHE_CLUSTER_ID", uid.as_str()),
    ] {
        assert_eq!(
            settings.get(variable).map(String::as_str),
            Some(value),
            "{variable}"
        );
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    for pod in pods
        .list(&ListParams::default().labels(&format!("app.kubernetes.io/instance={name}")))
        .await
        .unwrap()
    {
        let pod_name = pod.name_any();
        let spec = pod.spec.unwrap();
        let claim = spec
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == "data")
            .and_then(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone());
        assert_eq!(claim, Some(format!("data-{pod_name}")), "{pod_name}");
        assert!(
            spec.containers[0]
                .volume_mounts
                .iter()
                .flatten()
                .any(|m| m.name == "data" && m.mount_path == "/var/lib/kache"),
            "{pod_name}: the claim at /var/lib/kache"
        );
    }
    log("persist: settings, claims and mounts as specified");
}

/// Waits until the status records an incarnation for each of `members` members, and
/// returns them.
async fn recorded_incarnations(client: &Client, name: &str, members: usize) -> BTreeSet<String> {
    eventually(
        &format!("{name}'s incarnations recorded"),
        Duration::from_secs(60),
        || async {
            let status = cc_status(client, name).await;
            let recorded: BTreeSet<String> = status["members"]
                .as_array()?
                .iter()
                .filter_map(|m| m["incarnation"].as_str().map(str::to_owned))
                .collect();
            (recorded.len() == members).then_some(recorded)
        },
    )
    .await
}
