//! What the operator reads from each cache node: `GET /v1/cluster` (its shape is in
//! docs/architecture.md). Progress and readiness come from here, never from StatefulSet
//! counts alone: a pod can be Running and Ready while its node still pulls partitions
//! of a move that its readiness probe does not cover.

use std::time::Duration;

use serde::Deserialize;

/// The peer protocol this operator understands; a node on another one is reported, not
/// trusted.
pub const PROTOCOL_VERSION: u32 = 1;

/// How long one node may take to answer before it counts as unreachable.
pub const REPORT_TIMEOUT: Duration = Duration::from_secs(2);

/// The part of a node's cluster report the operator decides on. Unknown fields are
/// ignored so nodes can add to the report without breaking older operators.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub protocol_version: u32,
    pub node: NodeSelf,
    pub epoch: u64,
    pub ownership: Ownership,
    pub rebalance: Rebalance,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeSelf {
    pub id: String,
    #[serde(default)]
    pub incarnation: String,
    pub ready: bool,
    #[serde(default)]
    pub synced_epoch: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ownership {
    pub owned: u32,
    pub pending: u32,
    pub held_not_owned: u32,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Rebalance {
    pub active: bool,
    pub from_epoch: u64,
    pub to_epoch: u64,
    pub partitions_total: u64,
    pub partitions_done: u64,
    pub records_moved: u64,
    pub bytes_moved: u64,
}

impl NodeReport {
    /// The member has fully joined `epoch`: it follows that list, is ready, and holds
    /// exactly the partitions it owns.
    pub fn joined(&self, epoch: u64) -> bool {
        self.epoch == epoch
            && self.node.ready
            && !self.rebalance.active
            && self.ownership.pending == 0
            && self.ownership.held_not_owned == 0
    }

    /// A removed member has handed everything off under `epoch`: the move finished and
    /// it holds no partition it does not own (it owns none).
    pub fn drained(&self, epoch: u64) -> bool {
        self.epoch == epoch
            && !self.rebalance.active
            && self.ownership.owned == 0
            && self.ownership.held_not_owned == 0
    }
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
) -> Result<NodeReport, ReportError> {
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
    let report: NodeReport = response.json().await.map_err(|source| ReportError::Http {
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

    /// The example in docs/architecture.md, as a node sends it.
    const DOCUMENTED: &str = r#"{
      "protocolVersion": 1,
      "node": {"id": "node-3", "incarnation": "5b0c9e1f2a7d3c11", "ready": true, "syncedEpoch": 2},
      "epoch": 2, "partitions": 271, "replicationFactor": 2,
      "members": [{"id": "node-0", "address": "127.0.0.1:7071", "isSelf": false}],
      "ownership": {"owned": 136, "pending": 0, "heldNotOwned": 0},
      "rebalance": {"active": false, "fromEpoch": 1, "toEpoch": 2, "startedAtMs": 1795243958750,
                    "completedAtMs": 1795243959031, "partitionsTotal": 129, "partitionsDone": 129,
                    "recordsMoved": 95556, "bytesMoved": 10511160, "partitionsDropped": 0},
      "sync": {"antiEntropyRounds": 0, "recordsRepaired": 95556, "recordsPulled": 95556,
               "bytesPulled": 10511160, "failures": 0}
    }"#;

    #[test]
    fn parses_the_documented_report() {
        let report: NodeReport = serde_json::from_str(DOCUMENTED).unwrap();
        assert_eq!(report.node.id, "node-3");
        assert_eq!(report.ownership.owned, 136);
        assert_eq!(report.rebalance.partitions_done, 129);
        assert!(report.joined(2));
        assert!(
            !report.joined(3),
            "a member on an older epoch has not joined"
        );
    }

    #[test]
    fn joined_needs_every_part() {
        let base: NodeReport = serde_json::from_str(DOCUMENTED).unwrap();
        let mut r = base.clone();
        r.node.ready = false;
        assert!(!r.joined(2));
        let mut r = base.clone();
        r.rebalance.active = true;
        assert!(!r.joined(2));
        let mut r = base.clone();
        r.ownership.pending = 1;
        assert!(!r.joined(2));
        let mut r = base;
        r.ownership.held_not_owned = 1;
        assert!(!r.joined(2));
    }

    #[test]
    fn drained_means_owning_and_holding_nothing_after_the_move() {
        let mut r: NodeReport = serde_json::from_str(DOCUMENTED).unwrap();
        assert!(!r.drained(2), "it still owns partitions");
        r.ownership.owned = 0;
        assert!(r.drained(2));
        r.ownership.held_not_owned = 3;
        assert!(!r.drained(2), "it still holds partitions");
        r.ownership.held_not_owned = 0;
        r.rebalance.active = true;
        assert!(!r.drained(2), "the move is still running");
        r.rebalance.active = false;
        assert!(!r.drained(3), "it has not seen the newest list");
    }
}
