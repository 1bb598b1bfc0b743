//! Locked doors on the real control plane: mutual TLS between members and tokens on the
//! client API, as the operator sets them up by default.
//!
//! - Outsiders on the peer port: a caller without a certificate, and one presenting a
//!   member certificate of *another* CacheCluster, call `Apply`, `StreamPartition` and
//!   `Release` over gRPC and `Apply` over the lean transport. Every call is refused and
//!   no key changes. (The caller runs on the host, which reaches pod IPs as a pod would;
//!   the process kubelet does not enforce NetworkPolicies, so this is the TLS layer
//!   alone.)
//! - The client API: 401 without or with a wrong token, 403 for a read token on PUT and
//!   DELETE, 2xx with the right token, and nothing changes on a refusal. The generated
//!   `<name>-auth` Secret's token works, and the status names it. RESP says NOAUTH and
//!   NOPERM to redis-cli.
//! - Certificate rotation (`kache.dev/rotate-certificates`) while a client loads the
//!   cluster: zero errors, and each pod then serves its new certificate.
//! - A cluster with client TLS and auth turned off: the operator reads its status over
//!   HTTPS, curl reaches it with the cluster's CA, and `kubectl get cc` shows it open.

use std::sync::Arc;

use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Secret;
use kache_node::cluster::peer::lean::{self, frame::Kind};
use kache_node::cluster::wire::proto::{self, peer_client::PeerClient};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use sha2::Digest;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tonic::transport::{Channel, Endpoint};

use super::*;

const PEER_PORT: u16 = 7071;
/// The read-only token every scenario's CacheCluster also accepts (Secret `e2e-reader`).
pub const READ_TOKEN: &str = "e2e-read-5b0e2c7f91d34a6e8f1b";

/// The Secrets the scenarios' CacheClusters list in `spec.auth.tokens`.
pub fn create_token_secrets() {
    for (secret, user, token) in [
        ("e2e-token", "e2e", TOKEN),
        ("e2e-reader", "reader", READ_TOKEN),
    ] {
        let literal = format!("--from-literal={user}={token}");
        let args = ["-n", NS, "create", "secret", "generic", secret, &literal];
        must("kubectl", &args, None);
    }
}

pub async fn secret_data(client: &Client, name: &str) -> BTreeMap<String, Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let secret = secrets.get(name).await.unwrap();
    secret
        .data
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k, v.0))
        .collect()
}

/// SHA-256 (hex) of the DER of the first certificate in `pem`, as `/v1/cluster` reports it.
pub fn fingerprint(pem: &[u8]) -> String {
    let der = CertificateDer::from_pem_slice(pem).unwrap();
    sha2::Sha256::digest(der.as_ref())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What `/v1/cluster` says the pod at `ip` serves on its peer port.
pub async fn served_peer_fingerprint(http: &reqwest::Client, ip: &str) -> Option<String> {
    let report: Json = http
        .get(format!("http://{ip}:{HTTP_PORT}/v1/cluster"))
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    report["tls"]["peer"]["sha256"].as_str().map(str::to_owned)
}

/// The whole scenario, on `name` (a running 3-member cluster at RF=2 holding `acked`),
/// with `other`, another running CacheCluster, as the source of a foreign certificate.
/// Returns every key acknowledged, `acked` included.
pub async fn locked_doors(
    client: &Client,
    http: &reqwest::Client,
    name: &str,
    other: &str,
    acked: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    log(&format!("locked doors on cc/{name}"));
    let ips = pod_ips(client, name).await;
    let status = cc_status(client, name).await;
    assert_eq!(status["auth"]["mode"], "Tokens", "{status}");
    assert_eq!(status["tls"]["peer"], "Operator", "{status}");
    client_api_refuses_without_the_right_token(client, http, name, &ips).await;
    peer_port_refuses_outsiders(client, http, name, other, &ips, &acked).await;
    let acked = rotation_under_load(client, http, name, acked).await;
    for ip in pod_ips(client, name).await.values() {
        check_all(http, ip, &acked).await;
    }
    acked
}

async fn client_api_refuses_without_the_right_token(
    client: &Client,
    http: &reqwest::Client,
    name: &str,
    ips: &BTreeMap<u32, String>,
) {
    let ip = &ips[&0];
    let key = "doors-key";
    put(http, ip, key, "kept").await.unwrap();
    let anonymous = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let with = |token: &str| {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .default_headers(bearer(token))
            .build()
            .unwrap()
    };
    let (wrong, reader) = (with("not-a-token"), with(READ_TOKEN));
    let status = |r: reqwest::Response| r.status().as_u16();
    let target = url(ip, key);

    let refused = anonymous.get(&target).send().await.unwrap();
    assert_eq!(
        refused.headers()["www-authenticate"],
        "Bearer realm=\"kache\""
    );
    assert_eq!(status(refused), 401, "GET without a token");
    let put_anonymous = anonymous.put(&target).body("anon").send().await.unwrap();
    assert_eq!(status(put_anonymous), 401, "PUT without a token");
    let put_wrong = wrong.put(&target).body("wrong").send().await.unwrap();
    assert_eq!(status(put_wrong), 401, "PUT with a wrong token");
    let delete_wrong = wrong.delete(&target).send().await.unwrap();
    assert_eq!(status(delete_wrong), 401, "DELETE with a wrong token");
    let put_reader = reader.put(&target).body("reader").send().await.unwrap();
    assert_eq!(status(put_reader), 403, "PUT with a read token");
    let delete_reader = reader.delete(&target).send().await.unwrap();
    assert_eq!(status(delete_reader), 403, "DELETE with a read token");
    let got = reader.get(&target).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200, "GET with a read token");
    assert_eq!(
        got.text().await.unwrap(),
        "kept",
        "a refused request changed the key"
    );
    for ip in ips.values() {
        assert_eq!(
            get(http, ip, key).await,
            Ok(Some("kept".to_owned())),
            "{ip}"
        );
    }

    // The generated admin token works, and the status names its Secret.
    let status = cc_status(client, name).await;
    let generated = format!("{name}-auth");
    assert_eq!(status["auth"]["secretName"], generated.as_str(), "{status}");
    let admin = secret_data(client, &generated).await;
    let admin = String::from_utf8(admin["admin"].clone()).unwrap();
    let written = with(&admin)
        .put(&target)
        .body("by-admin")
        .send()
        .await
        .unwrap();
    assert_eq!(
        written.status().as_u16(),
        204,
        "PUT with the generated admin token"
    );
    assert_eq!(get(http, ip, key).await, Ok(Some("by-admin".to_owned())));
    delete(http, ip, key).await.unwrap();

    // RESP, through redis-cli: NOAUTH before AUTH, NOPERM for a read token's SET.
    let (_, noauth) = run("redis-cli", &["-h", ip, "-p", "6379", "GET", key], None);
    assert!(
        noauth.contains("NOAUTH"),
        "redis-cli without a token: {noauth}"
    );
    let (_, noperm) = run(
        "redis-cli",
        &[
            "-h",
            ip,
            "-p",
            "6379",
            "--user",
            "reader",
            "--pass",
            READ_TOKEN,
            "--no-auth-warning",
            "SET",
            key,
            "x",
        ],
        None,
    );
    assert!(
        noperm.contains("NOPERM"),
        "redis-cli SET with a read token: {noperm}"
    );
    assert_eq!(
        get(http, ip, key).await,
        Ok(None),
        "a refused SET wrote the key"
    );
    log("client API: 401 without or with a wrong token, 403 for a read token, nothing changed");
}

/// Accepts any server certificate: the outsider wants to reach the server's checks of
/// *its* certificate, not to check the server's.
#[derive(Debug)]
struct AnyServer(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS client presenting `identity` (certificate and key PEM) if any, offering `alpn`.
fn outsider_tls(identity: Option<(&[u8], &[u8])>, alpn: &[u8]) -> TlsConnector {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServer(provider)));
    let mut config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![CertificateDer::from_pem_slice(cert).unwrap()],
                PrivateKeyDer::from_pem_slice(key).unwrap(),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

/// A gRPC peer client of `ip`: over TLS with `tls`, or in plaintext without.
fn grpc_client(ip: &str, tls: Option<TlsConnector>) -> PeerClient<Channel> {
    let address: std::net::IpAddr = ip.parse().unwrap();
    let connector = tower::service_fn(move |_: tonic::transport::Uri| {
        let tls = tls.clone();
        async move {
            let tcp = TcpStream::connect((address, PEER_PORT)).await?;
            let stream: Box<dyn Io> = match tls {
                Some(tls) => Box::new(
                    tls.connect(ServerName::IpAddress(address.into()), tcp)
                        .await?,
                ),
                None => Box::new(tcp),
            };
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    let channel = Endpoint::from_shared(format!("http://{ip}:{PEER_PORT}"))
        .unwrap()
        .timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(connector);
    PeerClient::new(channel)
}

trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Io for T {}

fn sender(member: &str) -> proto::Sender {
    proto::Sender {
        protocol_version: kache_node::cluster::wire::PROTOCOL_VERSION,
        node_id: member.into(),
        incarnation: "0".into(),
        epoch: 1,
        synced_epoch: 1,
        wall_ms: kache_node::clock::wall_ms(),
        min_protocol_version: 0,
        resp_port: 0,
    }
}

/// A write of `key` far in the future, as a member would replicate it.
fn planted(member: &str, key: &str) -> proto::ApplyRequest {
    proto::ApplyRequest {
        sender: Some(sender(member)),
        hint: false,
        request_id: String::new(),
        records: vec![proto::Record {
            key: key.as_bytes().to_vec(),
            value: b"planted".to_vec(),
            hlc: (kache_node::clock::wall_ms() + 3_600_000) << 16,
            writer: 9,
            expires_at_ms: 0,
            tombstone: false,
        }],
    }
}

/// Calls the four peer operations on `ip` as an outsider; returns the ones answered.
async fn outsider_calls(
    ip: &str,
    member: &str,
    identity: Option<(&[u8], &[u8])>,
    key: &str,
) -> Vec<&'static str> {
    let mut answered = Vec::new();
    let tls = identity.map(|id| outsider_tls(Some(id), b"h2"));
    let plaintext = identity.is_none();
    // Without a certificate: both plaintext and TLS without a client certificate.
    let clients = if plaintext {
        vec![
            grpc_client(ip, None),
            grpc_client(ip, Some(outsider_tls(None, b"h2"))),
        ]
    } else {
        vec![grpc_client(ip, tls)]
    };
    for mut peer in clients {
        if peer.apply(planted(member, key)).await.is_ok() {
            answered.push("Apply");
        }
        let stream = peer
            .stream_partition(proto::StreamRequest {
                sender: Some(sender(member)),
                partition: 0,
                buckets: Vec::new(),
            })
            .await;
        if let Ok(stream) = stream
            && stream.into_inner().message().await.is_ok()
        {
            answered.push("StreamPartition");
        }
        let release = proto::ReleaseRequest {
            sender: Some(sender(member)),
            partition: 0,
        };
        if peer.release(release).await.is_ok() {
            answered.push("Release");
        }
    }
    let address = format!("{ip}:{PEER_PORT}").parse().unwrap();
    let lean_tls = Some(outsider_tls(identity, b"kache-lean/1"));
    let connection = lean::Connection::open(address, 4 << 20, lean_tls);
    let lean_apply = connection
        .call::<proto::ApplyResponse>(Kind::Apply, &planted(member, key))
        .await;
    if lean_apply.is_ok() {
        answered.push("lean Apply");
    }
    answered
}

async fn peer_port_refuses_outsiders(
    client: &Client,
    http: &reqwest::Client,
    name: &str,
    other: &str,
    ips: &BTreeMap<u32, String>,
    acked: &BTreeMap<String, String>,
) {
    let (existing, value) = acked.iter().next().unwrap();
    let foreign = secret_data(client, &format!("{other}-peer-tls")).await;
    let (cert, key) = (
        &foreign[&format!("{other}-0.crt")],
        &foreign[&format!("{other}-0.key")],
    );
    let member = format!("{name}-1");
    for (ordinal, ip) in ips {
        let without = outsider_calls(ip, &member, None, existing).await;
        assert!(
            without.is_empty(),
            "{name}-{ordinal} answered a caller without a certificate: {without:?}"
        );
        let foreign_calls = outsider_calls(ip, &member, Some((cert, key)), "doors-planted").await;
        assert!(
            foreign_calls.is_empty(),
            "{name}-{ordinal} answered a caller with cc/{other}'s certificate: {foreign_calls:?}"
        );
    }
    for ip in ips.values() {
        assert_eq!(
            get(http, ip, existing).await,
            Ok(Some(value.clone())),
            "{existing} via {ip}"
        );
        assert_eq!(
            get(http, ip, "doors-planted").await,
            Ok(None),
            "planted key via {ip}"
        );
        check_all(http, ip, acked).await;
    }
    log(
        "peer port: no certificate and another cluster's certificate refused on all four calls, no key changed",
    );
}

async fn rotation_under_load(
    client: &Client,
    http: &reqwest::Client,
    name: &str,
    acked: BTreeMap<String, String>,
) -> BTreeMap<String, String> {
    let secret = format!("{name}-peer-tls");
    let before = secret_data(client, &secret).await;
    let ips = pod_ips(client, name).await;
    let targets: Targets = Arc::new(Mutex::new(ips.values().cloned().collect()));
    let load = Load::start(http.clone(), targets, acked, "rotate");
    tokio::time::sleep(Duration::from_secs(2)).await;
    log(&format!(
        "annotate cc/{name} kache.dev/rotate-certificates=e2e-1"
    ));
    must(
        "kubectl",
        &[
            "-n",
            NS,
            "annotate",
            "cc",
            name,
            "kache.dev/rotate-certificates=e2e-1",
            "--overwrite",
        ],
        None,
    );
    let after = eventually(
        "the operator reissued the peer certificates",
        Duration::from_secs(60),
        || async {
            let now = secret_data(client, &secret).await;
            let changed = ips.keys().all(|o| {
                let file = format!("{name}-{o}.crt");
                now.get(&file).is_some_and(|c| Some(c) != before.get(&file))
            });
            changed.then_some(now)
        },
    )
    .await;
    for (ordinal, ip) in &ips {
        let expected = fingerprint(&after[&format!("{name}-{ordinal}.crt")]);
        let old = fingerprint(&before[&format!("{name}-{ordinal}.crt")]);
        eventually(
            &format!("{name}-{ordinal} serves its new certificate"),
            Duration::from_secs(90),
            || async {
                let served = served_peer_fingerprint(http, ip).await?;
                assert!(
                    served == expected || served == old,
                    "{name}-{ordinal} serves {served}"
                );
                (served == expected).then_some(())
            },
        )
        .await;
    }
    // A while longer on the new certificates: new connections use them.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let keys = load.finish("certificate rotation", false).await;
    log("certificates rotated under load: zero errors, every pod serves its new certificate");
    keys
}

/// A one-member cluster with client TLS and auth off: Available means the operator read
/// its `/v1/cluster` over HTTPS; curl reaches it with the cluster's CA and no token; the
/// status and `kubectl get cc` say it is open.
pub async fn client_tls_and_open_cluster(client: &Client) {
    let name = "open";
    log("a cluster with client TLS and auth off");
    apply(&format!(
        "apiVersion: kache.dev/v1alpha1\nkind: CacheCluster\nmetadata: {{name: {name}, namespace: {NS}}}\nspec:\n  replicas: 1\n  maxMemory: 64MiB\n  auth: {{enabled: false}}\n  tls: {{client: {{enabled: true}}}}\n"
    ));
    wait_available(client, name, 1, Duration::from_secs(180)).await;
    let status = cc_status(client, name).await;
    assert_eq!(status["auth"]["mode"], "Open", "{status}");
    assert_eq!(status["tls"]["client"], "Operator", "{status}");
    let table = must("kubectl", &["-n", NS, "get", "cc", name], None);
    assert!(
        table.contains("Open"),
        "kubectl get cc does not show the open cluster:\n{table}"
    );

    let ip = pod_ips(client, name).await[&0].clone();
    let tls = secret_data(client, &format!("{name}-client-tls")).await;
    let dir = out_dir().join("open-client-tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ca = dir.join("ca.crt");
    std::fs::write(&ca, &tls["ca.crt"]).unwrap();
    // The certificate names the pod's DNS names, not its IP: curl resolves one to the IP.
    let host = format!("{name}-0.{name}-peers.{NS}.svc");
    let resolve = format!("{host}:{HTTP_PORT}:{ip}");
    let https = format!("https://{host}:{HTTP_PORT}/v1/keys/tls-key");
    let ca = ca.to_str().unwrap();
    let curl = |extra: &[&str]| {
        let mut args = vec!["-sS", "--fail", "--cacert", ca, "--resolve", &resolve];
        args.extend_from_slice(extra);
        must("curl", &args, None)
    };
    curl(&["-X", "PUT", "--data", "over-tls", &https]);
    assert_eq!(curl(&[&https]), "over-tls");
    let plain = format!("http://{ip}:{HTTP_PORT}/v1/keys/tls-key");
    let (ok, _) = run("curl", &["-sS", "--fail", "--max-time", "5", &plain], None);
    assert!(!ok, "plain HTTP reached a client-TLS port");
    log("client TLS: curl with the cluster's CA reads and writes; plain HTTP refused; open shows");
    must(
        "kubectl",
        &["-n", NS, "delete", "cc", name, "--wait=true"],
        None,
    );
}
