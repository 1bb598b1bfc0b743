//! What the operator reads from each cache node: `GET /v1/cluster` (its shape is in
//! docs/architecture.md). Progress and readiness come from here, never from StatefulSet
//! counts alone: a pod can be Running and Ready while its node still pulls partitions
//! of a move that its readiness probe does not cover.
//!
//! With `spec.tls.client` the port serves HTTPS only: [`tls_client`] trusts nothing but
//! the cluster's client CA (`ca.crt` of the Secret the pod mounts) and reaches each pod
//! by the DNS name its certificate carries (`<pod>.<name>-peers.<ns>.svc`), at the pod's
//! IP. `/v1/cluster` needs no token (plan/security-contract.md).
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

    #[test]
    fn partition_counts_saturate_rather_than_wrap() {
        assert_eq!(partition_count(271), 271);
        assert_eq!(partition_count(usize::MAX), u32::MAX);
    }
}
