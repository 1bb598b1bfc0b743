//! The peer protocol (`proto/peer.proto`) over tonic: the server side a node exposes on
//! `--grpc-addr`, and the client pool it uses to reach other members.
//!
//! Every request names its sender and protocol version. A peer on another version is
//! refused with `FAILED_PRECONDITION` and logged, never answered with a guess; a failed
//! peer call is an error to the caller, never an empty result.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use super::Cluster;
use super::chunk::{self, ChunkStream};
use super::discovery::Discovery;
use super::membership::Member;
use crate::clock::Version;
use crate::store::entry::MAX_KEY_LEN;
use crate::store::{Applied, DIGEST_BUCKETS, Record, Store};

pub mod proto {
    #![allow(missing_debug_implementations, clippy::all, clippy::pedantic)]
    tonic::include_proto!("kache.peer.v1");
}

use proto::peer_client::PeerClient;
use proto::peer_server::Peer;

/// The message of the `UNAVAILABLE` status a node answers while it has not re-synced.
const SYNCING: &str = "syncing: this node has not re-synced the partitions it owns";

/// Whether a peer refused because it is still syncing (as opposed to being unreachable).
pub fn is_syncing(status: &Status) -> bool {
    status.code() == tonic::Code::Unavailable && status.message() == SYNCING
}

/// The version of `proto/peer.proto` this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a request waits for discovery to learn a member's address. A new member's
/// EndpointSlice entry can reach this node a moment after the member list naming it.
const ADDRESS_WAIT: Duration = Duration::from_secs(3);
const ADDRESS_POLL: Duration = Duration::from_millis(50);

/// Who this node is, as it introduces itself to peers.
#[derive(Debug, Clone)]
pub struct Identity {
    pub node_id: String,
    /// Random per process start.
    pub incarnation: String,
}

impl Identity {
    pub fn new(node_id: String) -> Self {
        Self {
            node_id,
            incarnation: format!("{:016x}", fastrand::u64(..)),
        }
    }

    /// This node as a request's sender; the cluster fills in `synced_epoch`.
    pub fn sender(&self, epoch: u64) -> proto::Sender {
        proto::Sender {
            protocol_version: PROTOCOL_VERSION,
            node_id: self.node_id.clone(),
            incarnation: self.incarnation.clone(),
            epoch,
            synced_epoch: 0,
        }
    }
}

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
        let record = self.store().get_record(&request.key).map(record_to_proto);
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
            Err(Status::unavailable(SYNCING))
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
        Ok(record_from_proto(record))
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

pub fn record_to_proto(record: Record) -> proto::Record {
    proto::Record {
        key: record.key,
        value: record.value,
        hlc: record.version.hlc,
        writer: record.version.node,
        expires_at_ms: record.expires_at_ms,
        tombstone: record.tombstone,
    }
}

pub fn record_from_proto(record: proto::Record) -> Record {
    Record {
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

/// Clients for other members: one lazily connected channel per member, to the address
/// discovery gives for it now. When that address changes (a recreated pod), the next call
/// opens a channel to the new one and the old channel is dropped.
#[derive(Debug, Clone)]
pub struct PeerClients {
    discovery: Discovery,
    /// A parking_lot mutex, never held across an `.await`: callers clone a client out.
    channels: Arc<Mutex<HashMap<String, Connected>>>,
}

/// A member's channel and the address it connects to.
type Connected = (SocketAddr, PeerClient<Channel>);

impl PeerClients {
    pub fn new(discovery: Discovery) -> Self {
        Self {
            discovery,
            channels: Arc::default(),
        }
    }

    /// Where `member` is reachable now, if anywhere.
    pub fn address(&self, member: &Member) -> Option<SocketAddr> {
        self.discovery.address(member)
    }

    /// A client for `member`. A member without a known address is an `UNAVAILABLE`
    /// error, like a failed call: never "no data".
    pub fn client(&self, member: &Member) -> Result<PeerClient<Channel>, Status> {
        let Some(address) = self.discovery.address(member) else {
            self.discovery.unreachable(&member.id);
            return Err(Status::unavailable(format!(
                "no known address for member '{}'",
                member.id
            )));
        };
        let mut channels = self.channels.lock();
        if let Some((known, client)) = channels.get(&member.id)
            && *known == address
        {
            return Ok(client.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{address}"))
            .map_err(|err| Status::internal(format!("bad peer address {address}: {err}")))?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT);
        let client = PeerClient::new(endpoint.connect_lazy());
        channels.insert(member.id.clone(), (address, client.clone()));
        Ok(client)
    }

    /// Like [`Self::client`], but a member whose address discovery does not know yet is
    /// waited for (up to `ADDRESS_WAIT`) before the call counts as failed.
    pub async fn client_when_known(&self, member: &Member) -> Result<PeerClient<Channel>, Status> {
        // Bounded: ADDRESS_WAIT / ADDRESS_POLL rounds.
        let rounds = ADDRESS_WAIT.as_millis() / ADDRESS_POLL.as_millis();
        for _ in 0..rounds {
            if self.discovery.address(member).is_some() {
                break;
            }
            tokio::time::sleep(ADDRESS_POLL).await;
        }
        self.client(member)
    }

    /// A call to `id` failed with `status`: if it could not connect or timed out, its
    /// address may be outdated, and discovery looks again.
    pub fn failed(&self, id: &str, status: &Status) {
        let transport = matches!(
            status.code(),
            tonic::Code::Unavailable
                | tonic::Code::Unknown
                | tonic::Code::Cancelled
                | tonic::Code::DeadlineExceeded
        );
        if transport && !is_syncing(status) {
            self.discovery.unreachable(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str) -> Member {
        Member {
            id: id.into(),
            address: None,
        }
    }

    #[tokio::test]
    async fn a_changed_address_gets_a_new_channel_and_an_unknown_one_is_an_error() {
        let first: SocketAddr = "10.0.0.1:7071".parse().expect("addr");
        let moved: SocketAddr = "10.0.0.2:7071".parse().expect("addr");
        let discovery = Discovery::knowing(HashMap::from([("a".to_owned(), first)]));
        let clients = PeerClients::new(discovery.clone());
        let connected = |id: &str| clients.channels.lock().get(id).map(|(address, _)| *address);

        clients.client(&member("a")).expect("known address");
        assert_eq!(connected("a"), Some(first));
        discovery.replace_for_test(HashMap::from([("a".to_owned(), moved)]));
        clients.client(&member("a")).expect("new address");
        assert_eq!(connected("a"), Some(moved), "reconnects to the new address");
        assert_eq!(
            clients.channels.lock().len(),
            1,
            "the old channel is dropped"
        );

        let unknown = clients.client(&member("b")).expect_err("no address");
        assert_eq!(unknown.code(), tonic::Code::Unavailable);
        assert!(
            !is_syncing(&unknown),
            "unreachable is not 'syncing' (which means no data)"
        );
        assert!(unknown.message().contains("no known address"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_call_waits_briefly_for_an_address_discovery_has_not_seen_yet() {
        let late: SocketAddr = "10.0.0.3:7071".parse().expect("addr");
        let discovery = Discovery::knowing(HashMap::new());
        let clients = PeerClients::new(discovery.clone());
        let learn = {
            let discovery = discovery.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(400)).await;
                discovery.replace_for_test(HashMap::from([("c".to_owned(), late)]));
            })
        };
        clients
            .client_when_known(&member("c"))
            .await
            .expect("the address arrived within the wait");
        learn.await.expect("join");

        let started = tokio::time::Instant::now();
        let never = clients
            .client_when_known(&member("d"))
            .await
            .expect_err("no address ever arrives");
        assert_eq!(never.code(), tonic::Code::Unavailable);
        assert!(
            started.elapsed() >= ADDRESS_WAIT - ADDRESS_POLL,
            "it waited before failing"
        );
    }
}
