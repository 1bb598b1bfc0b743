//! What the operator reads from each cache node: `GET /v1/cluster` (its shape is in
//! docs/architecture.md). Progress and readiness come from here, never from StatefulSet
//! counts alone: a pod can be Running and Ready while its node still pulls partitions
//! of a move that its readiness probe does not cover.
//!
//! With `spec.tls.client` the port serves HTTPS only: [`tls_client`] trusts nothing but
//! the cluster's client CA (`ca.crt` of the Secret the pod mounts) and reaches each pod
//! by the DNS name its certificate carries (`<pod>.<name>-peers.<ns>.svc`), at the pod's
//! IP. `/v1/cluster` needs no token (docs/security.md, "What stays open").
//!
//! The report's types are [`kache_api::report`]'s, the ones the node serializes; whether
//! a member has joined or drained is decided there ([`ClusterReport::joined`],
//! [`ClusterReport::drained`]).

use std::net::SocketAddr;
use std::time::Duration;

pub use kache_api::report::{
    ClusterReport, NodeReport, Ownership, Progress, RebalanceReport, Role, SyncReport,
};

/// The node report versions (the peer protocol's) this operator understands; a node that
/// speaks none of them is reported, not trusted. The report's shape is the same for all
/// three (v3 changed where keys live, not what a node reports).
pub const PROTOCOL_VERSIONS: std::ops::RangeInclusive<u32> = 1..=3;

/// How long one node may take to answer before it counts as unreachable.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// A node's partition count as the status records it: a `u32`, like `spec.partitions`,
/// which bounds it.
pub fn partition_count(partitions: usize) -> u32 {
    u32::try_from(partitions).unwrap_or(u32::MAX)
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("GET {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("GET {url} answered {status}")]
    Status {
        url: String,
        status: reqwest::StatusCode,
    },
    #[error("{url} speaks protocol v{min}..v{max}, this operator understands v1..v3")]
    Protocol { url: String, min: u32, max: u32 },
    #[error("the client CA of Secret {secret} cannot be used: {reason}")]
    Ca { secret: String, reason: String },
}

/// A client of the nodes' HTTPS port that trusts only the CA certificates in `ca_pem`,
/// and reaches `host` at `addr` for every (host, addr) of `pods` (the port of `addr` is
/// ignored: the URL's counts). `secret` names where the CA came from, for errors.
pub fn tls_client(
    secret: &str,
    ca_pem: &[u8],
    pods: &[(String, SocketAddr)],
) -> Result<reqwest::Client, ReportError> {
    let refused = |reason: String| ReportError::Ca {
        secret: secret.to_owned(),
        reason,
    };
    let roots =
        reqwest::Certificate::from_pem_bundle(ca_pem).map_err(|e| refused(e.to_string()))?;
    if roots.is_empty() {
        return Err(refused("ca.crt holds no certificate".to_owned()));
    }
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .https_only(true);
    for root in roots {
        builder = builder.add_root_certificate(root);
    }
    for (host, addr) in pods {
        builder = builder.resolve(host, *addr);
    }
    builder.build().map_err(|e| refused(e.to_string()))
}

/// Reads the report of the pod a [`tls_client`] resolves `host` to.
pub async fn fetch_tls(
    client: &reqwest::Client,
    host: &str,
    http_port: i32,
) -> Result<ClusterReport, ReportError> {
    fetch_url(client, format!("https://{host}:{http_port}/v1/cluster")).await
}

/// Reads one node's report.
pub async fn fetch(
    client: &reqwest::Client,
    ip: &str,
    http_port: i32,
) -> Result<ClusterReport, ReportError> {
    let host = if ip.contains(':') {
        format!("[{ip}]")
    } else {
        ip.to_owned()
    };
    fetch_url(client, format!("http://{host}:{http_port}/v1/cluster")).await
}

async fn fetch_url(client: &reqwest::Client, url: String) -> Result<ClusterReport, ReportError> {
    let response = client
        .get(&url)
        .timeout(REPORT_TIMEOUT)
        .send()
        .await
        .map_err(|source| ReportError::Http {
            url: url.clone(),
            source,
        })?;
    if !response.status().is_success() {
        return Err(ReportError::Status {
            url,
            status: response.status(),
        });
    }
    let report: ClusterReport = response.json().await.map_err(|source| ReportError::Http {
        url: url.clone(),
        source,
    })?;
    check_protocol(url, report)
}

/// The report, if its node speaks a protocol version this operator understands.
fn check_protocol(url: String, report: ClusterReport) -> Result<ClusterReport, ReportError> {
    let max = report.protocol_version;
    let min = match report.min_protocol_version {
        0 => max,
        min => min,
    };
    if min > *PROTOCOL_VERSIONS.end() || max < *PROTOCOL_VERSIONS.start() {
        return Err(ReportError::Protocol { url, min, max });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_of_either_version_of_a_rolling_upgrade_are_trusted_others_not() {
        let node = |min, max| {
            let mut report = crate::scale::fixtures::joined(0, 1);
            report.min_protocol_version = min;
            report.protocol_version = max;
            check_protocol("http://n".to_owned(), report)
        };
        assert!(node(0, 1).is_ok(), "a v1 node (no range)");
        assert!(node(1, 2).is_ok(), "the previous release's nodes");
        assert!(node(3, 3).is_ok(), "this release's nodes");
        assert!(node(3, 5).is_ok(), "a later node that still speaks v3");
        let refused = node(4, 5).expect_err("nothing in common");
        assert_eq!(
            refused.to_string(),
            "http://n speaks protocol v4..v5, this operator understands v1..v3"
        );
        assert!(node(0, 4).is_err(), "a v4-only node");
    }

    /// Serves `body` once over TLS with `leaf` on a loopback port; returns the port.
    async fn tls_node(leaf: crate::resources::certs::Leaf, body: String) -> u16 {
        use rustls_pki_types::pem::PemObject;
        use rustls_pki_types::{CertificateDer, PrivateKeyDer};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let chain = vec![CertificateDer::from_pem_slice(leaf.cert_pem.as_bytes()).unwrap()];
        let key = PrivateKeyDer::from_pem_slice(leaf.key_pem.as_bytes()).unwrap();
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    continue;
                };
                let mut request = [0u8; 4096];
                let _ = tls.read(&mut request).await;
                let response = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            }
        });
        port
    }

    #[tokio::test]
    async fn a_tls_node_is_read_when_its_certificate_chains_to_the_cluster_ca_only() {
        use crate::resources::{Names, certs};
        use k8s_openapi::jiff::Timestamp;
        let names = Names {
            cluster: "demo".to_owned(),
            namespace: "shop".to_owned(),
        };
        let now = Timestamp::now();
        let ca = certs::new_ca(&names, "uid-1", now).unwrap();
        let leaf = certs::issue(&ca, &certs::client_leaf_spec(&names, "demo-0"), now).unwrap();
        let report = crate::scale::fixtures::joined(0, 1);
        let port = tls_node(leaf, serde_json::to_string(&report).unwrap()).await;
        let host = certs::pod_host(&names, "demo-0");
        let target = vec![(host.clone(), SocketAddr::from(([127, 0, 0, 1], port)))];
        let port = i32::from(port);

        let client = tls_client("demo-client-tls", ca.cert_pem.as_bytes(), &target).unwrap();
        let read = fetch_tls(&client, &host, port).await.expect("trusted");
        assert_eq!(read, report);

        let other = certs::new_ca(&names, "uid-1", now).unwrap();
        let distrusting = tls_client("x", other.cert_pem.as_bytes(), &target).unwrap();
        let refused = fetch_tls(&distrusting, &host, port).await;
        assert!(refused.is_err(), "another CA's client trusts nothing here");
        // The pod's own name is checked: demo-1's name does not fit demo-0's certificate.
        let wrong = certs::pod_host(&names, "demo-1");
        let misnamed = vec![(wrong.clone(), target[0].1)];
        let client = tls_client("demo-client-tls", ca.cert_pem.as_bytes(), &misnamed).unwrap();
        assert!(fetch_tls(&client, &wrong, port).await.is_err());
        assert!(matches!(
            tls_client("s", b"no certificate", &target),
            Err(ReportError::Ca { .. })
        ));
    }

    #[test]
    fn partition_counts_saturate_rather_than_wrap() {
        assert_eq!(partition_count(271), 271);
        assert_eq!(partition_count(usize::MAX), u32::MAX);
    }
}
