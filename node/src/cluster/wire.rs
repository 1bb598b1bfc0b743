//! The ground floor of the peer protocol: the types generated from `proto/peer.proto`,
//! their conversions to and from the store's, and the conventions both ends share (the
//! protocol version, who a request is from, what "still syncing" looks like).
//!
//! Everything else in `cluster/` that speaks to peers builds on this module; it imports
//! nothing from them.

use tonic::Status;

use crate::clock::Version;
use crate::store::Record;

pub mod proto {
    // `allow`, not `expect`: which of these fire depends on the generator's version, and
    // an unfulfilled expectation would fail the build on generated code we don't write.
    #![allow(
        missing_debug_implementations,
        clippy::all,
        clippy::pedantic,
        reason = "generated code"
    )]
    tonic::include_proto!("kache.peer.v1");
}

/// The newest version of `proto/peer.proto` this build speaks. v2 added the epoch a
/// write's replicas were chosen on (`ApplyResponse.epoch_behind`), the list a moving node
/// moves from (`HelloResponse.prev_list`) and the version range. v3 places keys by their
/// Redis Cluster hash slot (`store::slot`) and adds `Sender.resp_port`.
pub const PROTOCOL_VERSION: u32 = 3;
/// The oldest version this build still speaks. Nodes whose ranges overlap run side by
/// side during a rolling upgrade; a v2 node puts keys in other partitions than a v3 node,
/// so the two must never exchange records, and v3 speaks v3 only.
pub const MIN_PROTOCOL_VERSION: u32 = 3;

/// Whether a peer that speaks versions `min..=max` (`min` 0: a v1 node, which sends
/// none) can talk with this node.
pub fn speaks_with(min: u32, max: u32) -> bool {
    let min = if min == 0 { max } else { min };
    min <= PROTOCOL_VERSION && max >= MIN_PROTOCOL_VERSION && min <= max
}

/// The message of the `UNAVAILABLE` status a node answers while it has not re-synced.
const SYNCING: &str = "syncing: this node has not re-synced the partitions it owns";

/// The refusal of a node that is not a source yet: it does not hold what it owns.
pub fn syncing() -> Status {
    Status::unavailable(SYNCING)
}

/// Whether a peer refused because it is still syncing (as opposed to being unreachable).
pub fn is_syncing(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message() == SYNCING
}

/// Who this node is, as it introduces itself to peers.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: String,
    /// Random per process start.
    pub incarnation: String,
    /// When this process started (wall clock, ms since the Unix epoch).
    pub started_at_ms: u64,
    /// The port this node serves RESP on (0: none), so peers can point Redis Cluster
    /// clients at it.
    pub resp_port: u16,
}

impl Identity {
    pub fn new(node_id: String) -> Self {
        Self {
            node_id,
            incarnation: format!("{:016x}", fastrand::u64(..)),
            started_at_ms: crate::clock::wall_ms(),
            resp_port: 0,
        }
    }

    /// The same identity, announcing RESP on `port`.
    #[must_use]
    pub fn with_resp_port(self, port: u16) -> Self {
        Self {
            resp_port: port,
            ..self
        }
    }

    /// This node as a request's sender, on `epoch`, holding `synced_epoch`, its clock
    /// reading `wall_ms`.
    pub fn sender(&self, epoch: u64, synced_epoch: u64, wall_ms: u64) -> proto::Sender {
        proto::Sender {
            protocol_version: PROTOCOL_VERSION,
            min_protocol_version: MIN_PROTOCOL_VERSION,
            node_id: self.node_id.clone(),
            incarnation: self.incarnation.clone(),
            epoch,
            synced_epoch,
            wall_ms,
            resp_port: u32::from(self.resp_port),
        }
    }
}

impl From<Record> for proto::Record {
    fn from(record: Record) -> Self {
        Self {
            key: record.key,
            value: record.value,
            hlc: record.version.hlc,
            writer: record.version.node,
            expires_at_ms: record.expires_at_ms,
            tombstone: record.tombstone,
        }
    }
}

impl From<proto::Record> for Record {
    fn from(record: proto::Record) -> Self {
        Self {
            key: record.key,
            value: record.value,
            version: Version {
                hlc: record.hlc,
                node: record.writer,
            },
            expires_at_ms: record.expires_at_ms,
            tombstone: record.tombstone,
        }
    }
}
