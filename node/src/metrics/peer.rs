//! Calls this node makes to its peers: latency by peer, method and outcome, and failures
//! by status code.
//!
//! Peers are not known when the node starts (they come with member lists), so each peer's
//! table is made the first time it is called and kept: a peer's series stay after it
//! leaves, like any counter's. The lookup is a read lock on a small map, next to a network
//! round trip.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use tonic::Status;

use super::histogram::Histogram;

/// The peer protocol's methods (proto/peer.proto), as the gRPC service names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerMethod {
    Hello,
    Get,
    Apply,
    PartitionDigest,
    StreamPartition,
    Release,
    Fill,
    Purge,
}

impl PeerMethod {
    const ALL: [PeerMethod; 8] = [
        PeerMethod::Hello,
        PeerMethod::Get,
        PeerMethod::Apply,
        PeerMethod::PartitionDigest,
        PeerMethod::StreamPartition,
        PeerMethod::Release,
        PeerMethod::Fill,
        PeerMethod::Purge,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PeerMethod::Hello => "Hello",
            PeerMethod::Get => "Get",
            PeerMethod::Apply => "Apply",
            PeerMethod::PartitionDigest => "PartitionDigest",
            PeerMethod::StreamPartition => "StreamPartition",
            PeerMethod::Release => "Release",
            PeerMethod::Fill => "Fill",
            PeerMethod::Purge => "Purge",
        }
    }
}

/// gRPC status codes by number, as tonic names them.
const CODES: [&str; 17] = [
    "Ok",
    "Cancelled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// One peer's calls.
#[derive(Debug, Default)]
struct PeerCells {
    /// `[method][ok, error]`.
    latency: [[Histogram; 2]; PeerMethod::ALL.len()],
    /// `[method][code]`.
    errors: [[AtomicU64; CODES.len()]; PeerMethod::ALL.len()],
}

/// Every peer's calls, by member id. A parking_lot RwLock: reads on every call, a write
/// only the first time a peer is called; never held across an `.await`.
#[derive(Debug, Default)]
pub struct PeerRpcs {
    peers: RwLock<BTreeMap<String, Arc<PeerCells>>>,
}

impl PeerRpcs {
    /// A call of `method` to `peer` took `took` and ended in `failed` (None: it succeeded).
    pub fn observe(&self, peer: &str, method: PeerMethod, took: Duration, failed: Option<&Status>) {
        let known = self.peers.read().get(peer).cloned();
        let cells = known.unwrap_or_else(|| {
            self.peers
                .write()
                .entry(peer.to_owned())
                .or_default()
                .clone()
        });
        let method = method as usize;
        cells.latency[method][usize::from(failed.is_some())].observe(took);
        if let Some(status) = failed {
            let code = usize::try_from(status.code() as i32).unwrap_or(2);
            let code = code.min(CODES.len() - 1);
            cells.errors[method][code].fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
impl PeerRpcs {
    /// Calls of `method` to `peer` that failed with `code`, and all its calls so far.
    pub fn counts(&self, peer: &str, method: PeerMethod, code: tonic::Code) -> (u64, u64) {
        let peers = self.peers.read();
        let Some(cells) = peers.get(peer) else {
            return (0, 0);
        };
        let method = method as usize;
        let code = usize::try_from(code as i32).unwrap_or(2);
        let failed = cells.errors[method][code].load(Ordering::Relaxed);
        let calls = cells.latency[method].iter().map(|h| h.count()).sum();
        (failed, calls)
    }
}

/// `kache_peer_rpc_duration_seconds`.
#[derive(Debug)]
pub struct Latency(pub Arc<PeerRpcs>);

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (peer, cells) in self.0.peers.read().iter() {
            for method in PeerMethod::ALL {
                let by_outcome = &cells.latency[method as usize];
                for (outcome, histogram) in ["ok", "error"].into_iter().zip(by_outcome) {
                    if histogram.count() > 0 {
                        let labels = [
                            ("peer", peer.as_str()),
                            ("method", method.as_str()),
                            ("outcome", outcome),
                        ];
                        histogram.encode(encoder.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// `kache_peer_rpc_errors_total`.
#[derive(Debug)]
pub struct Errors(pub Arc<PeerRpcs>);

impl EncodeMetric for Errors {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        for (peer, cells) in self.0.peers.read().iter() {
            for method in PeerMethod::ALL {
                for (code, count) in CODES.iter().zip(&cells.errors[method as usize]) {
                    let count = count.load(Ordering::Relaxed);
                    if count > 0 {
                        let labels = [
                            ("peer", peer.as_str()),
                            ("method", method.as_str()),
                            ("code", *code),
                        ];
                        ConstCounter::new(count).encode(encoder.encode_family(&labels)?)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Counter
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_call_counts_its_code_and_its_latency_as_an_error() {
        let rpcs = PeerRpcs::default();
        let took = Duration::from_millis(2);
        rpcs.observe("b", PeerMethod::Apply, took, None);
        rpcs.observe(
            "b",
            PeerMethod::Apply,
            took,
            Some(&Status::unavailable("down")),
        );
        let peers = rpcs.peers.read();
        let cells = peers.get("b").expect("b was called");
        let apply = PeerMethod::Apply as usize;
        assert_eq!(cells.latency[apply][0].count(), 1);
        assert_eq!(cells.latency[apply][1].count(), 1);
        assert_eq!(cells.errors[apply][14].load(Ordering::Relaxed), 1);
        assert_eq!(CODES[tonic::Code::Unavailable as usize], "Unavailable");
        assert_eq!(
            CODES[tonic::Code::Unauthenticated as usize],
            "Unauthenticated"
        );
    }
}
