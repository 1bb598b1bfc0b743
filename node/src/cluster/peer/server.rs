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
use crate::store::entry::MAX_KEY_LEN;
use crate::store::{Applied, DIGEST_BUCKETS, Record, Store};
use proto::peer_server::Peer;

/// The server side: answers other nodes from this node's own store.
#[derive(Debug, Clone)]
pub struct PeerService {
    cluster: Cluster,
    max_value_bytes: usize,
}

impl PeerService {
    pub fn new(cluster: Cluster, max_value_bytes: usize) -> Self {
        Self {
            cluster,
            max_value_bytes,
        }
    }

    pub fn into_server(self) -> proto::peer_server::PeerServer<Self> {
        proto::peer_server::PeerServer::new(self)
    }

    fn store(&self) -> &Store {
        self.cluster.store()
    }
}

/// Refuses requests without a sender or on another protocol version.
fn check_sender(sender: Option<&proto::Sender>) -> Result<&proto::Sender, Status> {
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
    Ok(sender)
}

#[tonic::async_trait]
impl Peer for PeerService {
    type StreamPartitionStream = ChunkStream;

    async fn release(
        &self,
        request: Request<proto::ReleaseRequest>,
    ) -> Result<Response<proto::ReleaseResponse>, Status> {
        let request = request.into_inner();
        check_sender(request.sender.as_ref())?;
        let partition = self.partition(request.partition)?;
        let dropped = self.cluster.release(partition);
        Ok(Response::new(proto::ReleaseResponse { dropped }))
    }

    async fn partition_digest(
        &self,
        request: Request<proto::DigestRequest>,
    ) -> Result<Response<proto::DigestResponse>, Status> {
        let request = request.into_inner();
        check_sender(request.sender.as_ref())?;
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
        check_sender(request.sender.as_ref())?;
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
        check_sender(request.get_ref().sender.as_ref())?;
        Ok(Response::new(proto::HelloResponse {
            sender: Some(self.cluster.sender()),
        }))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        let request = request.into_inner();
        check_sender(request.sender.as_ref())?;
        self.check_synced()?;
        check_key(&request.key)?;
        let partition = self.store().partition_of(&request.key);
        let record = self
            .store()
            .get_record(&request.key)
            .map(proto::Record::from);
        Ok(Response::new(proto::GetResponse {
            record,
            authoritative: self.cluster.holds_completely(partition),
        }))
    }

    async fn apply(
        &self,
        request: Request<proto::ApplyRequest>,
    ) -> Result<Response<proto::ApplyResponse>, Status> {
        let request = request.into_inner();
        let sender = check_sender(request.sender.as_ref())?;
        let charge = chunk::chunk_charge(&request.records);
        // Validate the whole batch first, so a bad record changes nothing.
        let records = request
            .records
            .into_iter()
            .map(|record| self.record_from_proto(record))
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
        let mut reply = proto::ApplyResponse::default();
        for record in &records {
            let partition = self.store().partition_of(&record.key);
            if !request.hint && !self.cluster.accepts_writes_for(partition, sender.epoch) {
                // A coordinator that has not yet seen a move complete still writes to
                // this old owner; the new owners get the write too. Storing it here would
                // bring back a partition this node has handed off.
                reply.stale += 1;
                continue;
            }
            let applied = if request.hint {
                Some(self.store().apply(record))
            } else {
                self.cluster
                    .fenced(partition, || self.store().apply(record))
            };
            match applied {
                Some(Ok(Applied::Stored)) => reply.applied += 1,
                Some(Ok(Applied::Stale)) => reply.stale += 1,
                Some(Err(err)) => return Err(Status::resource_exhausted(err.to_string())),
                None => {
                    return Err(Status::unavailable(format!(
                        "draining: partition {partition} is being handed off"
                    )));
                }
            }
        }
        Ok(Response::new(reply))
    }
}

impl PeerService {
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

    fn record_from_proto(&self, record: proto::Record) -> Result<Record, Status> {
        check_key(&record.key)?;
        if record.value.len() > self.max_value_bytes {
            return Err(Status::invalid_argument(format!(
                "value of {} bytes exceeds this node's limit of {}",
                record.value.len(),
                self.max_value_bytes
            )));
        }
        Ok(Record::from(record))
    }
}

fn check_key(key: &[u8]) -> Result<(), Status> {
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(Status::invalid_argument(format!(
            "key must be 1 to {MAX_KEY_LEN} bytes, got {}",
            key.len()
        )));
    }
    Ok(())
}
