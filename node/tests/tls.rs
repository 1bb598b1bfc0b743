//! Proves TLS on real processes and sockets: a cluster with peer mutual TLS replicates and
//! grows; callers without a certificate, with another CA's, with another cluster's, or
//! not in the member list are refused on gRPC (`Apply`, `StreamPartition`, `Release`)
//! and on the lean transport, and no data changes; certificates replaced under load
//! cause no error and the new one is served; HTTP and RESP serve TLS to curl and
//! redis-cli, within the connection cap and the header timeout.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::certs::{Ca, Leaf};
use common::{Node, Options, StaticCluster};
use hyper_util::rt::TokioIo;
use kache_node::cluster::peer::lean::{self, frame::Kind};
use kache_node::cluster::wire::proto::{self, peer_client::PeerClient};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value as Json;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

const CLUSTER: &str = "uid-a";

/// A peer TLS directory for `node-0..node-{n-1}` of [`CLUSTER`], and its CA.
fn member_dir(n: usize) -> (tempfile::TempDir, Ca) {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("cluster-a");
    let ids: Vec<String> = (0..n).map(|i| format!("node-{i}")).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
    ca.write_member_dir(dir.path(), CLUSTER, &ids);
    (dir, ca)
}

fn start_cluster(dir: &Path, nodes: usize, listed: Option<usize>) -> StaticCluster {
    let dir = dir.display().to_string();
    let extra = ["--peer-tls-dir", &dir, "--cluster-id", CLUSTER];
    StaticCluster::start_with(
        &vec![Vec::new(); nodes],
        "2",
        &Options {
            extra: &extra,
            listed,
            ..Options::default()
        },
    )
}

/// A TLS 1.3 client trusting `ca`, presenting `identity` if any, offering `alpn`.
fn client_tls(ca: &Ca, identity: Option<&Leaf>, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(ca.pem().as_bytes()).unwrap())
        .unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match identity {
        Some(leaf) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()],
                PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A gRPC peer client of the node on `port`, over TLS with `tls` (an `h2` connector).
fn grpc_client(port: u16, tls: TlsConnector) -> PeerClient<Channel> {
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
            let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
            let stream = tls.connect(name, tcp).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(connector);
    PeerClient::new(channel)
}

fn sender(id: &str) -> proto::Sender {
    proto::Sender {
        protocol_version: kache_node::cluster::wire::PROTOCOL_VERSION,
        node_id: id.into(),
        incarnation: "0".into(),
        epoch: 1,
        synced_epoch: 1,
        wall_ms: kache_node::clock::wall_ms(),
        min_protocol_version: 0,
        resp_port: 0,
    }
}

/// A write of `key` a member would replicate.
fn apply(key: &str) -> proto::ApplyRequest {
    proto::ApplyRequest {
        sender: Some(sender("node-1")),
        hint: false,
        request_id: String::new(),
        records: vec![proto::Record {
            key: key.as_bytes().to_vec(),
            value: b"planted".to_vec(),
            hlc: kache_node::clock::wall_ms() << 16,
            writer: 9,
            expires_at_ms: 0,
            tombstone: false,
        }],
    }
}

async fn json(node: &Node, path: &str) -> Json {
    node.get(path).await.json().await.unwrap()
}

async fn keys_held(cluster: &StaticCluster) -> Vec<u64> {
    let mut held = Vec::new();
    for node in &cluster.nodes {
        held.push(json(node, "/v1/stats").await["keys"].as_u64().unwrap());
    }
    held
}

/// What one caller achieved against node-0: which calls were answered.
#[derive(Debug, Default)]
struct Attempt {
    apply: bool,
    stream: bool,
    release: bool,
    lean_apply: bool,
    /// The status of the gRPC Apply's refusal.
    apply_code: Option<tonic::Code>,
}

/// Calls Apply, StreamPartition and Release over gRPC, and Apply over the lean
/// transport, on the node at `port` as the caller `identity` (trusting `ca` for the
/// server). `key` is written; `partition` is streamed and released.
async fn attempt(
    port: u16,
    ca: &Ca,
    identity: Option<&Leaf>,
    key: &str,
    partition: u32,
) -> Attempt {
    let mut client = grpc_client(port, client_tls(ca, identity, b"h2"));
    let applied = client.apply(apply(key)).await;
    let apply_code = applied.as_ref().err().map(tonic::Status::code);
    let stream = match client
        .stream_partition(proto::StreamRequest {
            sender: Some(sender("node-1")),
            partition,
            buckets: Vec::new(),
        })
        .await
    {
        // A stream that opens but yields nothing would not be a read either.
        Ok(stream) => stream
            .into_inner()
            .message()
            .await
            .is_ok_and(|m| m.is_some()),
        Err(_) => false,
    };
    let release = client
        .release(proto::ReleaseRequest {
            sender: Some(sender("node-1")),
            partition,
        })
        .await
        .is_ok();
    let address = format!("127.0.0.1:{port}").parse().unwrap();
    let connection = lean::Connection::open(
        address,
        4 << 20,
        Some(client_tls(ca, identity, b"kache-lean/1")),
    );
    let lean_apply = connection
        .call::<proto::ApplyResponse>(Kind::Apply, &apply(&format!("{key}-lean")))
        .await
        .is_ok();
    Attempt {
        apply: applied.is_ok(),
        stream,
        release,
        lean_apply,
        apply_code,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_tls_cluster_replicates_grows_and_refuses_every_outsider() {
    let (dir, ca) = member_dir(4);
    let cluster = start_cluster(dir.path(), 4, Some(3));
    let (a, b) = (&cluster.nodes[0], &cluster.nodes[2]);
    for i in 0..40 {
        let put = a.put_key(&format!("k{i}"), &format!("v{i}"), None).await;
        assert!(put.status().is_success(), "{}", put.status());
    }
    for i in 0..40 {
        assert_eq!(b.get_key(&format!("k{i}")).await.1, format!("v{i}"));
    }
    let report = json(a, "/v1/cluster").await;
    assert_eq!(report["tls"]["peer"]["sha256"].as_str().unwrap().len(), 64);
    assert!(report["tls"]["client"].is_null(), "{report}");

    // node-3 joins at epoch 2; everything moves over mutual TLS.
    cluster.write_list(2, &[0, 1, 2, 3], &[]);
    for i in 0..4 {
        cluster.wait_settled(i, 2).await;
    }
    for i in 0..40 {
        let (status, value) = cluster.nodes[3].get_key(&format!("k{i}")).await;
        assert_eq!((status.as_u16(), value), (200, format!("v{i}")));
    }
    // A partition node-0 holds a copy of, so that streaming or releasing it would show.
    let mut partition = None;
    for i in 0..40 {
        let placement = json(a, &format!("/v1/cluster/keys/k{i}")).await;
        if placement["owners"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "node-0")
        {
            partition = placement["partition"].as_u64();
            break;
        }
    }
    let partition = u32::try_from(partition.expect("node-0 owns some key")).unwrap();
    let port = cluster.grpc_ports[0];
    let before = keys_held(&cluster).await;

    let other_ca = Ca::new("cluster-b");
    let outsiders = [
        ("no certificate", &ca, None),
        (
            "another CA",
            &ca,
            Some(other_ca.leaf(&[&format!("kache://{CLUSTER}/node-1")])),
        ),
        (
            "another cluster id",
            &ca,
            Some(ca.leaf(&["kache://uid-b/node-1"])),
        ),
        (
            "a member not in the list",
            &ca,
            Some(ca.leaf(&[&format!("kache://{CLUSTER}/node-9")])),
        ),
    ];
    for (who, trust, identity) in &outsiders {
        let started = Instant::now();
        let got = attempt(port, trust, identity.as_ref(), "stolen", partition).await;
        assert!(
            !got.apply && !got.stream && !got.release && !got.lean_apply,
            "{who}: {got:?}"
        );
        if *who == "a member not in the list" {
            assert_eq!(got.apply_code, Some(tonic::Code::PermissionDenied), "{who}");
            assert!(
                started.elapsed() >= Duration::from_secs(2),
                "{who}: waited for a newer list first"
            );
        }
    }
    assert_eq!(keys_held(&cluster).await, before, "no data changed");
    for node in &cluster.nodes {
        assert_eq!(node.get_key("stolen").await.0.as_u16(), 404);
        assert_eq!(node.get_key("stolen-lean").await.0.as_u16(), 404);
    }
    assert!(a.saw_log("refused a peer"), "refusals are logged");

    // The same calls with a member's certificate are answered: the refusals above are
    // the certificates', not the test client's.
    let member = Leaf {
        cert: std::fs::read_to_string(dir.path().join("node-1.crt")).unwrap(),
        key: std::fs::read_to_string(dir.path().join("node-1.key")).unwrap(),
    };
    let got = attempt(port, &ca, Some(&member), "planted", partition).await;
    assert!(
        got.apply && got.stream && got.release && got.lean_apply,
        "{got:?}"
    );
}

/// Replaces every member's certificate and key in `dir` (same CA, new keys).
fn rotate(dir: &Path, ca: &Ca, nodes: usize) {
    for i in 0..nodes {
        let id = format!("node-{i}");
        ca.leaf(&[&format!("kache://{CLUSTER}/{id}")])
            .write(dir, &id);
    }
}

async fn peer_fingerprint(node: &Node) -> String {
    json(node, "/v1/cluster").await["tls"]["peer"]["sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// The fingerprint of the certificate the peer port at `port` presents in a new
/// handshake (as node-1).
async fn presented(port: u16, ca: &Ca, member: &Leaf) -> String {
    use sha2::Digest;
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::IpAddress(std::net::IpAddr::from([127, 0, 0, 1]).into());
    let stream = client_tls(ca, Some(member), b"h2")
        .connect(name, tcp)
        .await
        .unwrap();
    let leaf = &stream.get_ref().1.peer_certificates().unwrap()[0];
    sha2::Sha256::digest(leaf.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_replaced_under_load_cause_no_error_and_are_served() {
    let (dir, ca) = member_dir(3);
    let cluster = Arc::new(start_cluster(dir.path(), 3, None));
    let mut before = Vec::new();
    for node in &cluster.nodes {
        before.push(peer_fingerprint(node).await);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (done, errors) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for worker in 0..3 {
        let (cluster, stop, done, errors) =
            (cluster.clone(), stop.clone(), done.clone(), errors.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let node = &cluster.nodes[usize::try_from(i % 3).unwrap()];
                let key = format!("w{worker}-{}", i % 200);
                let value = format!("{i}");
                let ok = node.put_key(&key, &value, None).await.status().is_success()
                    && cluster.nodes[usize::try_from((i + 1) % 3).unwrap()]
                        .get_key(&key)
                        .await
                        == (reqwest::StatusCode::OK, value);
                if ok {
                    done.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    rotate(dir.path(), &ca, 3);
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, node) in cluster.nodes.iter().enumerate() {
        while peer_fingerprint(node).await == before[i] {
            assert!(Instant::now() < deadline, "node-{i} never reloaded");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // Keep loading a while on the new certificates (new connections use them).
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for worker in load {
        worker.await.unwrap();
    }
    assert_eq!(errors.load(Ordering::Relaxed), 0, "no request failed");
    assert!(done.load(Ordering::Relaxed) > 100, "the load ran");
    let member = Leaf {
        cert: std::fs::read_to_string(dir.path().join("node-1.crt")).unwrap(),
        key: std::fs::read_to_string(dir.path().join("node-1.key")).unwrap(),
    };
    for (i, node) in cluster.nodes.iter().enumerate() {
        assert_eq!(
            presented(cluster.grpc_ports[i], &ca, &member).await,
            peer_fingerprint(node).await,
            "node-{i} serves the certificate /v1/cluster shows"
        );
    }
}

/// A single node serving HTTP and RESP over TLS from `dir`.
fn client_tls_node(dir: &Path, extra: &[&str]) -> Node {
    let dir = dir.display().to_string();
    let mut args = vec!["--client-tls-dir", dir.as_str()];
    args.extend_from_slice(extra);
    Node::start(&args)
}

fn curl(ca: &Path, args: &[&str]) -> std::process::Output {
    Command::new("curl")
        .args(["-sS", "--max-time", "5", "--cacert"])
        .arg(ca)
        .args(args)
        .output()
        .expect("curl runs")
}

fn redis_cli(ca: &Path, port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["--tls", "--cacert"])
        .arg(ca)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (apt-get install redis-tools)");
    String::from_utf8_lossy(&out.stdout).trim().to_owned() + &String::from_utf8_lossy(&out.stderr)
}

#[tokio::test]
async fn http_and_resp_serve_tls_to_curl_and_redis_cli() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new("clients");
    let ca_file = dir.path().join("ca.crt");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    ca.leaf(&[]).write(dir.path(), "tls");
    let node = client_tls_node(
        dir.path(),
        &["--http-header-timeout", "1s", "--max-connections", "2"],
    );
    let https = format!("https://{}", node.addr);
    let resp = node.resp.unwrap().port();

    let put = curl(
        &ca_file,
        &[
            "-X",
            "PUT",
            "--data",
            "v1",
            &format!("{https}/v1/keys/a"),
            "-w",
            "%{http_code}",
        ],
    );
    assert!(
        String::from_utf8_lossy(&put.stdout).starts_with('2'),
        "{put:?}"
    );
    let got = curl(&ca_file, &[&format!("{https}/v1/keys/a")]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "v1", "{got:?}");
    assert_eq!(redis_cli(&ca_file, resp, &["GET", "a"]), "v1");
    assert_eq!(redis_cli(&ca_file, resp, &["SET", "b", "v2"]), "OK");
    let got = curl(&ca_file, &[&format!("{https}/v1/keys/b")]);
    assert_eq!(String::from_utf8_lossy(&got.stdout), "v2");

    // Plaintext is not served on either port.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "3",
            &format!("http://{}/healthz", node.addr),
        ])
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plain HTTP is refused: {plain:?}");
    let plain = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &resp.to_string(), "PING"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&plain.stdout).contains("PONG"),
        "plain RESP is refused: {plain:?}"
    );

    // A connection that never handshakes is closed at the header timeout, and counted.
    let silent_closed = |port: u16| {
        use std::io::Read;
        let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = Instant::now();
        let read = tcp.read(&mut [0; 16]);
        (matches!(read, Ok(0)) || read.is_err(), started.elapsed())
    };
    for port in [node.addr.port(), resp] {
        let (closed, after) = silent_closed(port);
        assert!(
            closed && after >= Duration::from_millis(900) && after < Duration::from_secs(4),
            "port {port}: closed {closed} after {after:?}"
        );
    }
    let metrics = curl(&ca_file, &[&format!("{https}/metrics")]);
    let metrics = String::from_utf8_lossy(&metrics.stdout).into_owned();
    assert!(
        metrics.contains("kache_http_header_timeouts_total 1"),
        "the handshake timeout counts as a header timeout"
    );

    // The cap holds with TLS: two silent connections fill it, a third is closed at once.
    let hold: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(node.addr).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let (closed, after) = silent_closed(node.addr.port());
    assert!(
        closed && after < Duration::from_millis(500),
        "over the cap: {after:?}"
    );
    drop(hold);

    // A replaced client certificate is served to new connections.
    let first = json_over_curl(&ca_file, &https).await;
    ca.leaf(&[]).write(dir.path(), "tls");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = json_over_curl(&ca_file, &https).await;
        if now["tls"]["client"]["sha256"] != first["tls"]["client"]["sha256"] {
            assert!(now["tls"]["peer"].is_null(), "no peer TLS: {now}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the new certificate never showed"
        );
    }
    assert_eq!(redis_cli(&ca_file, resp, &["GET", "b"]), "v2");
}

async fn json_over_curl(ca: &Path, https: &str) -> Json {
    let out = curl(ca, &[&format!("{https}/v1/cluster")]);
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{out:?}"))
}
