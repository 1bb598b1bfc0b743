//! The server side of the peer protocol: what a node answers other members, from its own
//! store.
//!
//! Every request names its sender and protocol version. A peer on another version is
//! refused with `FAILED_PRECONDITION` and logged, never answered with a guess. A node
//! that has not re-synced what it owns refuses to be a source (reads, digests, streams).

use tonic::{Request, Response, Status};

use crate::cluster::Cluster;
use crate::cluster::chunk::{self, ChunkStream};
use crate::cluster::wire::{PROTOCOL_VERSION, proto, syncing};
use crate::store::{Applied, DIGEST_BUCKETS, Record, RecordError, Store};
use proto::peer_server::Peer;

/// The server side: answers other nodes from this node's own store.
#[derive(Debug, Clone)]
pub struct PeerService {
    cluster: Cluster,
}

impl PeerService {
    /// Answers from `cluster`'s store, holding peers' records to its limits.
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    pub fn into_server(self) -> proto::peer_server::PeerServer<Self> {
        proto::peer_server::PeerServer::new(self)
    }

    fn store(&self) -> &Store {
        self.cluster.store()
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    type StreamPartitionStream = ChunkStream;

    async fn release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        let request = request.into_inner();
        self.check_sender(request.sender.as_ref())?;
        let partition = self.partition(request.partition)?;
        let dropped = self.cluster.release(partition);
        Ok(Response::new(proto::ReleaseResponse { dropped }))
    }

    async fn partition_digest(
        &self,
        request: Request<proto::DigestRequest>,
    ) -> Result<Response<proto::DigestResponse>, Status> {
        let request = request.into_inner();
        self.check_sender(request.sender.as_ref())?;
        self.check_synced()?;
        let partition = self.partition(request.partition)?;
        Ok(Response::new(proto::DigestResponse {
            buckets: self.store().partition_digest(partition).to_vec(),
        }))
    }

    async fn stream_partition(
        &self,
        request: Request<proto::StreamRequest>,
    ) -> Result<Response<Self::StreamPartitionStream>, Status> {
        let request = request.into_inner();
        self.check_sender(request.sender.as_ref())?;
        self.check_synced()?;
        let partition = self.partition(request.partition)?;
        let buckets = if request.buckets.is_empty() {
            None
        } else {
            let mut wanted = [false; DIGEST_BUCKETS];
            for bucket in request.buckets {
                let slot = wanted.get_mut(bucket as usize).ok_or_else(|| {
                    Status::invalid_argument(format!("no digest bucket {bucket}"))
                })?;
                *slot = true;
            }
            Some(wanted)
        };
        Ok(Response::new(chunk::stream_partition(
            self.store().clone(),
            partition,
            buckets,
        )))
    }

    async fn hello(
        &self,
        request: Request<proto::HelloRequest>,
    ) -> Result<Response<proto::HelloResponse>, Status> {
        self.check_sender(request.get_ref().sender.as_ref())?;
        Ok(Response::new(proto::HelloResponse {
            sender: Some(self.cluster.sender()),
        }))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let request = request.into_inner();
        self.check_sender(request.sender.as_ref())?;
        self.check_synced()?;
        self.store()
            .limits()
            .check_key(&request.key)
            .map_err(|err| Status::invalid_argument(err.to_string()))?;
        let partition = self.store().partition_of(&request.key);
        let record = self
            .store()
            .get_record(&request.key)
            .map(proto::Record::from);
        Ok(Response::new(proto::GetResponse {
            record,
            authoritative: self.cluster.holds_completely(partition),
            wall_ms: self.store().now_ms(),
        }))
    }

    async fn apply(
        &self,
        request: Request<proto::ApplyRequest>,
    ) -> Result<Response<proto::ApplyResponse>, Status> {
        let request = request.into_inner();
        let sender = self.check_sender(request.sender.as_ref())?;
        let charge = chunk::chunk_charge(&request.records);
        // Validate the whole batch first, so a bad record changes nothing.
        let records = request
            .records
            .into_iter()
            .map(|record| self.record_from_proto(&sender.node_id, record))
            .collect::<Result<Vec<_>, _>>()?;
        // A hinted batch is a drain's hand-off chunk: partition data in flight, charged
        // until it is stored. (A replicated write is one record, a request body like any
        // client's, and is not.)
        let _reserved = if request.hint {
            Some(chunk::reserve_chunk(self.store(), charge, || {
                format!("hinted records from '{}'", sender.node_id)
            })?)
        } else {
            None
        };
        if !request.hint {
            // A node whose clock is off most of its peers' takes no writes (hand-offs
            // still land: they carry versions other nodes made).
            self.cluster
                .check_clock()
                .map_err(|err| Status::unavailable(err.to_string()))?;
        }
        let mut reply = proto::ApplyResponse::default();
        for record in &records {
            self.apply_one(record, request.hint, sender.epoch, &mut reply)?;
        }
        reply.wall_ms = self.store().now_ms();
        Ok(Response::new(reply))
    }
}

impl PeerService {
    /// Refuses requests without a sender or on another protocol version; notes how far
    /// the sender's clock is from this node's.
    fn check_sender<'a>(
        &self,
        sender: Option<&'a proto::Sender>,
    ) -> Result<&'a proto::Sender, Status> {
        let sender = sender.ok_or_else(|| Status::invalid_argument("request names no sender"))?;
        if sender.protocol_version != PROTOCOL_VERSION {
            tracing::warn!(
                peer = %sender.node_id,
                peer_version = sender.protocol_version,
                version = PROTOCOL_VERSION,
                "refused a peer on another protocol version"
            );
            return Err(Status::failed_precondition(format!(
                "peer '{}' speaks kache peer protocol v{}, this node speaks v{}",
                sender.node_id, sender.protocol_version, PROTOCOL_VERSION
            )));
        }
        self.cluster.observe_clock(&sender.node_id, sender.wall_ms);
        Ok(sender)
    }

    /// Applies one record of an `Apply` from a sender on `sender_epoch`, counting the
    /// outcome in `reply`.
    fn apply_one(
        &self,
        record: &Record,
        hint: bool,
        sender_epoch: u64,
        reply: &mut proto::ApplyResponse,
    ) -> Result<(), Status> {
        let partition = self.store().partition_of(&record.key);
        if !hint && !self.cluster.accepts_writes_for(partition, sender_epoch) {
            // A coordinator that has not yet seen a move complete still writes to this
            // old owner; the new owners get the write too. Storing it here would bring
            // back a partition this node has handed off.
            reply.not_owner += 1;
            return Ok(());
        }
        let applied = if hint {
            Some(self.store().apply(record))
        } else {
            self.cluster
                .fenced(partition, || self.store().apply(record))
        };
        match applied {
            Some(Ok(Applied::Stored)) => reply.applied += 1,
            Some(Ok(Applied::Stale)) => {
                // Tell the sender what beat its record, so it can write after it.
                reply.stale += 1;
                let newer = self.store().get_record(&record.key);
                reply.newer_hlc = reply.newer_hlc.max(newer.map_or(0, |r| r.version.hlc));
            }
            Some(Err(err)) => return Err(Status::resource_exhausted(err.to_string())),
            None => {
                return Err(Status::unavailable(format!(
                    "draining: partition {partition} is being handed off"
                )));
            }
        }
        Ok(())
    }

    /// Refuses to act as a source (reads, digests, streams) before the startup sync.
    fn check_synced(&self) -> Result<(), Status> {
        if self.cluster.is_synced() {
            Ok(())
        } else {
            Err(syncing())
        }
    }

    fn partition(&self, partition: u32) -> Result<u32, Status> {
        let partitions = self.store().config().partitions;
        if partition >= partitions {
            return Err(Status::invalid_argument(format!(
                "partition {partition} does not exist; this node has {partitions}"
            )));
        }
        Ok(partition)
    }

    /// A peer's record, held to the limits a client's request meets (key, value, TTL,
    /// tombstone expiry) and to the clock bound on its version.
    fn record_from_proto(&self, from: &str, record: proto::Record) -> Result<Record, Status> {
        let record = Record::from(record);
        if let Err(err) = self.store().check_record(&record) {
            if matches!(err, RecordError::VersionAhead { .. }) {
                self.cluster.refused_version(from, &err);
            }
            return Err(Status::invalid_argument(err.to_string()));
        }
        Ok(record)
    }
}
