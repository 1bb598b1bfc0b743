//! The server side of the peer protocol: what a node answers other members, from its own
//! store, and the transport limits it answers them under.
//!
//! Every request names its sender and protocol version. A peer on another version is
//! refused with `FAILED_PRECONDITION` and logged, never answered with a guess. A node
//! that has not re-synced what it owns refuses to be a source (reads, digests, streams).
//!
//! What a peer can make the server hold, whatever it reads or does not read, is bounded
//! here (see "Memory bound and eviction" in docs/architecture.md):
//! - HTTP/2: at most [`MAX_CONCURRENT_STREAMS`] requests per connection, messages up to
//!   [`chunk::max_message_bytes`] each way, and a connection whose peer stops answering
//!   pings (HTTP/2 and TCP keepalive) is closed.
//! - Partition streams: at most [`MAX_PARTITION_STREAMS`] at once on the whole node
//!   (more are refused with `RESOURCE_EXHAUSTED`, and callers retry). Each charges its
//!   queued chunks to the buffers' share of `--max-memory`, never evicting, and gives them
//!   back after [`chunk::STREAM_IDLE`] without a chunk taken.
//!
//! Not bounded here: an unread stream also holds about one encoded chunk in the HTTP/2
//! transport until the peer reads, resets it or its connection closes (tonic exposes no
//! limit on that buffer), and it keeps its place among the partition streams meanwhile.
//! A node's own pulls reset their stream at their idle deadline; a peer that keeps streams
//! unread on a live connection holds those places, and their transport buffers, until it
//! goes away.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};

use super::authorize::Authorizer;
use super::stream::PeerConnectInfo;
use crate::cluster::chunk::{self, ChunkStream};
use crate::cluster::wire::{MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, proto, speaks_with, syncing};
use crate::cluster::{Admission, Cluster};
use crate::store::{Applied, DIGEST_BUCKETS, Record, RecordError, Store};
use crate::tls::identity::PeerName;
use crate::upstream::ReadThrough;
use proto::peer_server::Peer;

/// Concurrent requests (HTTP/2 streams) on one peer connection. A member forwards every
/// client request it does not own over one connection per peer, so this is about the
/// client concurrency a node sustains through one peer (50 in the benchmarks).
pub const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Partition streams the node serves at once; more are refused with
/// `RESOURCE_EXHAUSTED` and retried by their callers. A member pulls from one source at a
/// time (its move, its startup sync and anti-entropy each walk partitions in turn), so
/// this lets four peers pull at once; a fifth is refused and retries (its next poll, or
/// the next anti-entropy round): moves and repairs slow down, data is unaffected. Each
/// unread stream holds about one encoded chunk in the transport. Measured with 55 MiB of
/// entries on a 64 MiB node (RSS 78 MiB filled) and 3,000 unread streams attempted over 1
/// and over 30 connections (`node/tests/peer_overload.rs`): 16 peaked at 93-94 and
/// 98-106 MiB, over the 96 MiB bound on 30 connections (streams that outran the buffers'
/// share were cut and reopened, about 950 of them, and the churn fragmented the heap); 8
/// at 90 and 92-97 MiB, too close to the bound (97 once, with the suite's other tests
/// running); 4 at 85-86 and 86-89 MiB.
pub const MAX_PARTITION_STREAMS: usize = 4;
/// HTTP/2 pings on an idle-looking connection, and how long an answer may take: a peer
/// that is gone without a FIN (a half-open connection) is dropped within 30 s.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// TCP keepalive: the kernel's own probe, which also reaps a connection that never got
/// as far as HTTP/2.
pub const TCP_KEEPALIVE: Duration = Duration::from_secs(30);

/// The peer server with the transport limits above; add the [`PeerService`] to it.
pub fn transport() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .concurrency_limit_per_connection(MAX_CONCURRENT_STREAMS as usize)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
}

/// Accepted peer connections from `listener`, with TCP keepalive and `TCP_NODELAY` (the
/// builder's own settings apply only to listeners it binds itself; without NODELAY every
/// peer call waited ~20-40 ms on Nagle and delayed ACKs).
pub fn incoming(listener: TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener)
        .with_nodelay(Some(true))
        .with_keepalive(Some(TCP_KEEPALIVE))
}

/// The server side: answers other nodes from this node's own store.
#[derive(Debug, Clone)]
pub struct PeerService {
    cluster: Cluster,
    /// Places for the partition streams served at once.
    streams: Arc<Semaphore>,
    /// Under mutual TLS: checks each call's caller against the member list. `None` on
    /// a plaintext port, where nothing is checked.
    authorizer: Option<Authorizer>,
    /// Read-through: fills and purges asked by other nodes (none: `NOT_FOUND`).
    read_through: Option<ReadThrough>,
}

impl PeerService {
    /// Answers from `cluster`'s store, holding peers' records to its limits.
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            streams: Arc::new(Semaphore::new(MAX_PARTITION_STREAMS)),
            authorizer: None,
            read_through: None,
        }
    }

    /// Answers `Fill` and `Purge` with `read_through`.
    #[must_use]
    pub fn with_read_through(mut self, read_through: ReadThrough) -> Self {
        self.read_through = Some(read_through);
        self
    }

    fn read_through(&self) -> Result<&ReadThrough, Status> {
        self.read_through
            .as_ref()
            .ok_or_else(|| Status::not_found("this node has no read-through upstreams"))
    }

    /// Requires every call to come from a listed member, named by its certificate
    /// (the peer port serves mutual TLS).
    #[must_use]
    pub fn authenticated(mut self) -> Self {
        self.authorizer = Some(Authorizer::new(self.cluster.clone()));
        self
    }

    /// Admits one call from `caller` (see [`super::authorize`]); on a plaintext port
    /// every call is admitted.
    pub async fn admit(&self, caller: &PeerName) -> Result<(), Status> {
        match &self.authorizer {
            Some(authorizer) => authorizer.admit(caller).await,
            None => Ok(()),
        }
    }

    /// Admits a gRPC call by the caller its connection carries.
    async fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(authorizer) = &self.authorizer else {
            return Ok(());
        };
        let caller = request
            .extensions()
            .get::<PeerConnectInfo>()
            .and_then(|info| info.caller.as_deref())
            .ok_or_else(|| Status::unauthenticated("the connection carries no peer certificate"))?;
        authorizer.admit(caller).await
    }

    /// The generated server, with message sizes bounded by the node's record limits.
    pub fn into_server(self) -> proto::peer_server::PeerServer<Self> {
        let max_message = self.max_message();
        proto::peer_server::PeerServer::new(self)
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(max_message)
    }

    /// The largest message this node sends or accepts from a peer, on either transport.
    pub fn max_message(&self) -> usize {
        chunk::max_message_bytes(self.store().limits())
    }

    pub(crate) fn store(&self) -> &Store {
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
        self.authorize(&request).await?;
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
        self.authorize(&request).await?;
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
        self.authorize(&request).await?;
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
        let slot = Arc::clone(&self.streams).try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "this node already serves {MAX_PARTITION_STREAMS} partition streams"
            ))
        })?;
        let stream = chunk::stream_partition(self.store().clone(), partition, buckets);
        Ok(Response::new(stream.holding(slot)))
    }

    async fn hello(
        &self,
        request: Request<proto::HelloRequest>,
    ) -> Result<Response<proto::HelloResponse>, Status> {
        self.authorize(&request).await?;
        self.check_sender(request.get_ref().sender.as_ref())?;
        let routing = self.cluster.routing();
        let prev_list = if routing.moving() {
            routing.prev.list.to_yaml()
        } else {
            String::new()
        };
        Ok(Response::new(proto::HelloResponse {
            sender: Some(self.cluster.sender()),
            prev_list,
        }))
    }

    async fn fill(
        &self,
        request: Request<proto::FillRequest>,
    ) -> Result<Response<proto::FillResponse>, Status> {
        self.authorize(&request).await?;
        let request = request.into_inner();
        self.check_sender(request.sender.as_ref())?;
        let read_through = self.read_through()?.clone();
        let id = crate::request_id::RequestId::parse(&request.request_id);
        let background = request.background;
        let fill = async move {
            let fill = read_through.serve_fill(request);
            match id {
                Some(id) => crate::request_id::scope(id, fill).await,
                None => fill.await,
            }
        };
        if background {
            // A stale-while-revalidate refresh: the caller does not wait.
            tokio::spawn(fill);
            return Ok(Response::new(proto::FillResponse::default()));
        }
        fill.await.map(Response::new)
    }

    async fn purge(
        &self,
        request: Request<proto::PurgeRequest>,
    ) -> Result<Response<proto::PurgeResponse>, Status> {
        self.authorize(&request).await?;
        let request = request.into_inner();
        self.check_sender(request.sender.as_ref())?;
        let purged = self.read_through()?.purge_here(&request.upstream);
        Ok(Response::new(proto::PurgeResponse { purged }))
    }

    async fn get(
        &self,
        request: Request<proto::GetRequest>,
    ) -> Result<Response<proto::GetResponse>, Status> {
        self.authorize(&request).await?;
        self.serve_get(request.get_ref()).map(Response::new)
    }

    async fn apply(
        &self,
        request: Request<proto::ApplyRequest>,
    ) -> Result<Response<proto::ApplyResponse>, Status> {
        self.authorize(&request).await?;
        let reply = self.serve_apply(request.into_inner())?;
        if reply.applied > 0 {
            // Under `--fsync always`, acknowledged only once on disk.
            self.store()
                .durable()
                .await
                .map_err(|err| Status::unavailable(err.to_string()))?;
        }
        Ok(Response::new(reply))
    }
}

impl PeerService {
    /// A peer's `Get`: this node's record of the key, and whether it holds the key's
    /// partition completely (so that its "absent" means absent). Both transports (gRPC
    /// and [`super::lean`]) answer with this.
    pub fn serve_get(&self, request: &proto::GetRequest) -> Result<proto::GetResponse, Status> {
        let _span = request_span("Get", &request.request_id, request.sender.as_ref());
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
        tracing::debug!(
            target: crate::request_id::TARGET,
            found = record.is_some(),
            "answered a peer get"
        );
        Ok(proto::GetResponse {
            record,
            authoritative: self.cluster.holds_completely(partition),
            wall_ms: self.store().now_ms(),
        })
    }

    /// A peer's `Apply`: a replicated write (one record) or a drain's hinted hand-off
    /// batch, validated whole before any of it is stored. Both transports answer with this.
    pub fn serve_apply(
        &self,
        request: proto::ApplyRequest,
    ) -> Result<proto::ApplyResponse, Status> {
        let _span = request_span("Apply", &request.request_id, request.sender.as_ref());
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
        tracing::debug!(
            target: crate::request_id::TARGET,
            applied = reply.applied,
            stale = reply.stale,
            not_owner = reply.not_owner,
            epoch_behind = reply.epoch_behind,
            "applied a peer write"
        );
        Ok(reply)
    }

    /// Refuses requests without a sender or on another protocol version; notes how far
    /// the sender's clock is from this node's.
    fn check_sender<'a>(
        &self,
        sender: Option<&'a proto::Sender>,
    ) -> Result<&'a proto::Sender, Status> {
        let sender = sender.ok_or_else(|| Status::invalid_argument("request names no sender"))?;
        if !speaks_with(sender.min_protocol_version, sender.protocol_version) {
            tracing::warn!(
                peer = %sender.node_id,
                peer_version = sender.protocol_version,
                peer_min_version = sender.min_protocol_version,
                version = PROTOCOL_VERSION,
                "refused a peer on another protocol version"
            );
            let peer_min = match sender.min_protocol_version {
                0 => sender.protocol_version,
                min => min,
            };
            return Err(Status::failed_precondition(format!(
                "peer '{}' speaks kache peer protocol v{peer_min}..v{}, this node speaks v{MIN_PROTOCOL_VERSION}..v{PROTOCOL_VERSION}",
                sender.node_id, sender.protocol_version
            )));
        }
        self.cluster.observe_clock(&sender.node_id, sender.wall_ms);
        self.cluster
            .observe_resp_port(&sender.node_id, sender.resp_port);
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
        let applied = if hint {
            Some(self.store().apply(record))
        } else {
            match self
                .cluster
                .admit(partition, sender_epoch, || self.store().apply(record))
            {
                Admission::Done(applied) => applied,
                Admission::Behind { epoch } => {
                    reply.epoch_behind += 1;
                    reply.epoch = reply.epoch.max(epoch);
                    return Ok(());
                }
                // A coordinator that has not yet seen a move complete still writes to
                // this old owner; the new owners get the write too. Storing it here
                // would bring back a partition this node has handed off.
                Admission::NotOwner => {
                    reply.not_owner += 1;
                    return Ok(());
                }
            }
        };
        match applied {
            Some(Ok(Applied::Stored)) => reply.applied += 1,
            Some(Ok(Applied::Stale)) => {
                let held = self.store().get_record(&record.key);
                if held.as_ref().is_some_and(|h| h.version == record.version) {
                    // This very version is here already (a write re-sent after its
                    // replicas changed): taken, not beaten. Counting it as beaten made the
                    // coordinator decide again, read its own write, and answer a DELETE
                    // of a key that existed with "not found".
                    reply.applied += 1;
                } else {
                    // Tell the sender what beat its record, so it can write after it.
                    reply.stale += 1;
                    reply.newer_hlc = reply.newer_hlc.max(held.map_or(0, |r| r.version.hlc));
                }
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

/// The span of a peer call made for a client request (`request_id` set): its log lines
/// carry the coordinator's request id. Entered for the synchronous handler only; `None`
/// for background calls.
fn request_span(
    method: &'static str,
    request_id: &str,
    sender: Option<&proto::Sender>,
) -> Option<tracing::span::EnteredSpan> {
    let from = sender.map_or("", |sender| sender.node_id.as_str());
    crate::request_id::peer_span(method, request_id, from).map(tracing::Span::entered)
}

#[cfg(test)]
mod tests;
