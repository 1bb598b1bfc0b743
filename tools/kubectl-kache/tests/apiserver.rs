//! `kubectl-kache` against a real kube-apiserver (and etcd), with a real node behind the
//! pod proxy: a missing CRD and a missing cluster get their messages, `status` renders
//! the CacheCluster and the node's own view, keys round-trip through
//! `/api/v1/.../pods/POD:PORT/proxy` with the generated admin token (so
//! `Kache-Authorization` reaches the node although the API server strips
//! `Authorization`), a user without `pods/proxy` is told which permission is missing, and
//! `watch` follows a rebalance written into the status until the cluster is idle.
//!
//! No kubelet: the Pod is an object whose status (Ready, the IP of the node's listener)
//! the test writes, which is all the proxy reads. The API server refuses to proxy to
//! loopback, so the node listens on this machine's outward address.
//!
//! Needs the control-plane binaries (tests/k8s/build-control-plane.sh caches them in
//! `~/.cache/kache/k8s/<version>/bin`; `KACHE_K8S_BIN` overrides): built only with
//! `--features apiserver`, which tests/e2e/run.sh passes.
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "the helpers set up the test; a step that fails should panic with its cause"
)]

use std::net::{IpAddr, SocketAddr, TcpListener as StdListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kache_node::config::Cli;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, SanType};
use serde_json::json;

const NS: &str = "shop";
const ADMIN_TOKEN: &str = "kache-admin-token-3f9c";

/// A child process killed when the test ends, however it ends.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn control_plane_bin() -> PathBuf {
    if let Some(dir) = std::env::var_os("KACHE_K8S_BIN") {
        return PathBuf::from(dir);
    }
    let cache = PathBuf::from(std::env::var_os("HOME").unwrap()).join(".cache/kache/k8s");
    std::fs::read_dir(&cache)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run tests/k8s/build-control-plane.sh",
                cache.display()
            )
        })
        .filter_map(Result::ok)
        .map(|entry| entry.path().join("bin"))
        .find(|bin| bin.join("kube-apiserver").exists())
        .expect("kube-apiserver in ~/.cache/kache/k8s/*/bin (tests/k8s/build-control-plane.sh)")
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// This machine's address on its default route: the API server proxies to no loopback.
fn outward_ip() -> IpAddr {
    let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
    socket
        .connect("192.0.2.1:9")
        .or_else(|_| socket.connect("10.255.255.254:9"))
        .expect("a default route (the API server proxies to no loopback address)");
    let ip = socket.local_addr().unwrap().ip();
    assert!(!ip.is_loopback(), "{ip}");
    ip
}

/// A CA, and a serving certificate of 127.0.0.1 signed by it: (ca.crt, tls.crt, tls.key).
fn certificates(dir: &Path) -> PathBuf {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_key = KeyPair::generate().unwrap();
    std::fs::write(dir.join("ca.crt"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let mut serving = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    serving
        .subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    let key = KeyPair::generate().unwrap();
    let cert = serving.signed_by(&key, &issuer).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    let sa = KeyPair::generate().unwrap();
    std::fs::write(dir.join("sa.key"), sa.serialize_pem()).unwrap();
    std::fs::write(dir.join("sa.pub"), sa.public_key_pem()).unwrap();
    dir.join("ca.crt")
}

struct ControlPlane {
    _etcd: Proc,
    _apiserver: Proc,
    kubeconfig: PathBuf,
}

async fn control_plane(dir: &Path) -> ControlPlane {
    let bin = control_plane_bin();
    let ca = certificates(dir);
    let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
    let log = |name: &str| std::fs::File::create(dir.join(name)).unwrap();
    let etcd = Proc(
        Command::new(bin.join("etcd"))
            .args(["--data-dir", &dir.join("etcd").display().to_string()])
            .args([
                "--listen-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
            ])
            .args([
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{etcd_port}"),
            ])
            .args([
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer_port}"),
            ])
            .stdout(Stdio::null())
            .stderr(log("etcd.log"))
            .spawn()
            .unwrap(),
    );
    std::fs::write(
        dir.join("tokens.csv"),
        "admin-token,admin,admin-uid,system:masters\ndev-token,dev,dev-uid,\n",
    )
    .unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let apiserver = Proc(
        Command::new(bin.join("kube-apiserver"))
            .arg(format!("--etcd-servers=http://127.0.0.1:{etcd_port}"))
            .arg(format!("--secure-port={api_port}"))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--tls-cert-file={}", path("tls.crt")))
            .arg(format!("--tls-private-key-file={}", path("tls.key")))
            .arg(format!("--token-auth-file={}", path("tokens.csv")))
            .arg("--authorization-mode=RBAC")
            .arg(format!("--service-account-key-file={}", path("sa.pub")))
            .arg(format!(
                "--service-account-signing-key-file={}",
                path("sa.key")
            ))
            .arg("--service-account-issuer=https://kubernetes.default.svc")
            .arg("--service-cluster-ip-range=10.233.0.0/24")
            .stdout(Stdio::null())
            .stderr(log("apiserver.log"))
            .spawn()
            .unwrap(),
    );
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{api_port}', certificate-authority: '{}'}}}}]\nusers: [{{name: admin, user: {{token: admin-token}}}}, {{name: dev, user: {{token: dev-token}}}}]\ncontexts: [{{name: admin, context: {{cluster: c, user: admin, namespace: {NS}}}}}, {{name: dev, context: {{cluster: c, user: dev, namespace: {NS}}}}}]\ncurrent-context: admin\n",
            ca.display()
        ),
    )
    .unwrap();
    ControlPlane {
        _etcd: etcd,
        _apiserver: apiserver,
        kubeconfig,
    }
}

async fn client(kubeconfig: &Path) -> Client {
    let config = Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    let client = Client::try_from(config).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = client
            .request_text(http::Request::get("/readyz").body(Vec::new()).unwrap())
            .await;
        if ready.is_ok() {
            return client;
        }
        assert!(
            Instant::now() < deadline,
            "kube-apiserver not ready: {ready:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// `kubectl-kache ARGS`: (exit code, stdout, stderr).
fn plugin(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_kubectl-kache"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env_remove("KACHE_TOKEN")
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(input) = stdin {
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn apply<K>(api: &Api<K>, name: &str, object: serde_json::Value)
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    api.patch(
        name,
        &PatchParams::apply("test").force(),
        &Patch::Apply(object),
    )
    .await
    .unwrap_or_else(|e| panic!("apply {name}: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plugin_works_through_a_real_api_server() {
    let dir = tempfile::tempdir().unwrap();
    let plane = control_plane(dir.path()).await;
    let kubeconfig = plane.kubeconfig.clone();
    let client = client(&kubeconfig).await;
    let kache = |args: &[&str]| plugin(&kubeconfig, args, None);

    // Without the CRD: how to install it.
    let (code, _, stderr) = kache(&["status", "demo"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("the CacheCluster CRD is not installed")
            && stderr.contains("helm install kache"),
        "{stderr}"
    );

    let crd: CustomResourceDefinition = serde_yaml::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../crds/cachecluster.yaml"),
        )
        .unwrap(),
    )
    .unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let namespaces: Api<Namespace> = Api::all(client.clone());
    apply(
        &namespaces,
        NS,
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .await;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    apply(
        &accounts,
        "default",
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}),
    )
    .await;
    // The CRD is served a moment after it is created.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, _, stderr) = kache(&["status", "demo"]);
        if stderr.contains("no CacheCluster \"demo\" in namespace \"shop\"") {
            assert!(stderr.contains("kubectl get cachecluster -A"), "{stderr}");
            break;
        }
        assert!(Instant::now() < deadline, "{stderr}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // A real node with auth on, listening where the Pod object says it is.
    let auth = dir.path().join("auth/admin/demo-auth");
    std::fs::create_dir_all(&auth).unwrap();
    std::fs::write(auth.join("admin"), ADMIN_TOKEN).unwrap();
    let ip = outward_ip();
    let http = tokio::net::TcpListener::bind(SocketAddr::new(ip, 0))
        .await
        .unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = http.local_addr().unwrap().port();
    let config = Cli::try_parse_from([
        "kache-node",
        "--node-id",
        "demo-0",
        "--members",
        &format!("demo-0={}", grpc.local_addr().unwrap()),
        "--max-memory",
        "48MiB",
        "--auth-dir",
        &dir.path().join("auth").display().to_string(),
    ])
    .unwrap()
    .into_config()
    .unwrap();
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

    let ccs: Api<kache_operator::crd::CacheCluster> = Api::namespaced(client.clone(), NS);
    apply(
        &ccs,
        "demo",
        json!({
            "apiVersion": "kache.dev/v1alpha1", "kind": "CacheCluster",
            "metadata": {"name": "demo"},
            "spec": {"replicas": 1, "service": {"httpPort": port, "grpcPort": 1, "respPort": 2}}
        }),
    )
    .await;
    let status = |status: serde_json::Value| {
        let ccs = ccs.clone();
        async move {
            ccs.patch_status(
                "demo",
                &PatchParams::default(),
                &Patch::Merge(json!({"status": status})),
            )
            .await
            .unwrap();
        }
    };
    status(json!({
        "phase": "Available", "epoch": 1, "replicas": 1, "readyReplicas": 1,
        "auth": {"mode": "Tokens", "secretName": "demo-auth"},
        "tls": {"peer": "Disabled", "client": "Disabled"},
        "members": [{"name": "demo-0", "role": "Member", "reachable": true, "settled": true, "epoch": 1, "ownedPartitions": 271}]
    }))
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    apply(&secrets, "demo-auth", json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "demo-auth"}, "stringData": {"admin": ADMIN_TOKEN}})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    apply(&pods, "demo-0", json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "demo-0", "labels": {"app.kubernetes.io/name": "kache", "app.kubernetes.io/instance": "demo", "app.kubernetes.io/component": "cache"}},
        "spec": {"automountServiceAccountToken": false, "containers": [{"name": "cache", "image": "kache/node:0.1.0"}]}
    }))
    .await;
    pods.patch_status(
        "demo-0",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {
            "phase": "Running", "podIP": ip.to_string(), "podIPs": [{"ip": ip.to_string()}],
            "conditions": [{"type": "Ready", "status": "True"}]
        }})),
    )
    .await
    .unwrap();

    // status: the operator's status and the node's own view, memory included (a token).
    let (code, screen, stderr) = kache(&["status", "demo"]);
    assert_eq!(code, 0, "{stderr}");
    let row = screen
        .lines()
        .find(|l| l.starts_with("demo-0"))
        .unwrap_or_else(|| panic!("{screen}"));
    assert!(
        row.contains("demo-0  member  1      271")
            && row.contains("/ 48.0 MiB")
            && row.ends_with("ready"),
        "{screen}"
    );
    assert!(!screen.contains("! "), "no pod failed to answer:\n{screen}");

    // Keys through the proxy, with the generated token.
    let key = "user/1 é";
    assert_eq!(kache(&["put", "demo", key, "alice"]).0, 0);
    assert_eq!(kache(&["get", "demo", key]).1, "alice");
    let (code, _, stderr) = plugin(
        &kubeconfig,
        &["put", "demo", "piped", "--ttl", "60"],
        Some("from stdin"),
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(kache(&["get", "demo", "piped"]).1, "from stdin");
    let (code, placement, _) = kache(&["locate", "demo", key]);
    assert_eq!(code, 0);
    assert!(
        placement.contains("partition  ") && placement.contains("owners     demo-0 (primary)"),
        "{placement}"
    );
    assert_eq!(kache(&["del", "demo", key]).0, 0);
    let (code, _, stderr) = kache(&["get", "demo", key]);
    assert_eq!(
        (code, stderr.trim()),
        (1, "error: key \"user/1 é\" not found")
    );
    let (code, _, stderr) = kache(&["--token", "wrong", "get", "demo", "piped"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("pod demo-0 refused the token (the token is not valid)"),
        "{stderr}"
    );

    // A user who may read the CacheCluster, pods and Secrets, but not proxy to pods.
    let role = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "dev"},
        "rules": [{"apiGroups": ["kache.dev"], "resources": ["cacheclusters"], "verbs": ["get", "watch", "list"]},
                  {"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "list"]}]});
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "dev"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "dev"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "dev"}]});
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(client.clone(), NS);
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(client.clone(), NS);
    apply(&roles, "dev", role).await;
    apply(&bindings, "dev", binding).await;
    let (code, _, stderr) = kache(&["--context", "dev", "get", "demo", "piped"]);
    assert_eq!(code, 2);
    assert!(
        stderr.contains("forbidden: you may not get pods/proxy in namespace \"shop\""),
        "{stderr}"
    );

    // watch: a rebalance written into the status, followed to its end.
    let mut watch = Proc(
        Command::new(env!("CARGO_BIN_EXE_kubectl-kache"))
            .args(["watch", "demo", "--timeout", "60s"])
            .env("KUBECONFIG", &kubeconfig)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let moving = |moved: u64| {
        json!({"phase": "Rebalancing", "epoch": 2, "rebalance": {
        "active": true, "fromEpoch": 1, "toEpoch": 2, "partitionsMoved": moved, "partitionsTotal": 180,
        "progress": "", "bytesMoved": 1_048_576, "recordsMoved": 100, "startedAt": "2026-12-06T12:00:00Z"}})
    };
    for moved in [10, 90, 180] {
        status(moving(moved)).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    let (code, screen, _) = kache(&["status", "demo"]);
    assert_eq!(code, 0);
    assert!(
        screen.contains("Rebalancing epoch 1 -> 2: 180/180 partitions moved (100%)"),
        "{screen}"
    );
    status(json!({"phase": "Available", "rebalance": {"active": false, "completedAt": "2026-12-06T12:00:14Z"}})).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while watch.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "watch did not end once the cluster was idle"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut transcript = String::new();
    use std::io::Read;
    watch
        .0
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut transcript)
        .unwrap();
    assert!(watch.0.wait().unwrap().success(), "{transcript}");
    for expected in [
        "Available  (epoch 1, 1 of 1 members joined)",
        "Available -> Rebalancing  (epoch 2",
        "epoch 1 -> 2: 10/180 partitions moved (5%)",
        "epoch 1 -> 2: 180/180 partitions moved (100%)",
        "Rebalancing -> Available",
        "done: epoch 1 -> 2, 180 partitions moved in 14s (1.0 MiB and 100 records streamed)",
    ] {
        assert!(
            transcript.contains(expected),
            "{expected:?} in:\n{transcript}"
        );
    }

    let _ = stop.send(());
    let _ = node.await;
}
