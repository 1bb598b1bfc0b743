//! What the operator reads from each cache node: `GET /v1/cluster` (its shape is in
//! docs/architecture.md). Progress and readiness come from here, never from StatefulSet
//! counts alone: a pod can be Running and Ready while its node still pulls partitions
//! of a move that its readiness probe does not cover.
//!
//! The report's types are [`kache_api::report`]'s, the ones the node serializes; whether
//! a member has joined or drained is decided there ([`ClusterReport::joined`],
//! [`ClusterReport::drained`]).

use std::time::Duration;

pub use kache_api::report::{
    ClusterReport, NodeReport, Ownership, Progress, RebalanceReport, Role, SyncReport,
};

/// The peer protocol this operator understands; a node on another one is reported, not
/// trusted.
pub const PROTOCOL_VERSION: u32 = 1;

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
    #[error("{url} speaks protocol {found}, this operator speaks {PROTOCOL_VERSION}")]
    Protocol { url: String, found: u32 },
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
    let url = format!("http://{host}:{http_port}/v1/cluster");
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
    if report.protocol_version != PROTOCOL_VERSION {
        return Err(ReportError::Protocol {
            url,
            found: report.protocol_version,
        });
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_counts_saturate_rather_than_wrap() {
        assert_eq!(partition_count(271), 271);
        assert_eq!(partition_count(usize::MAX), u32::MAX);
    }
}
