//! The peer protocol under overload and stalls: a peer that opens partition streams and
//! never reads them costs no live key, holds no more than the buffers' share of
//! `--max-memory`, and gets no more streams than the limit; a stream whose receiver
//! stops reading gives its chunks back after `STREAM_IDLE`, and a pull whose source stops
//! sending fails after it. Over real gRPC on loopback, with the node's transport limits.

use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::{Stream, StreamExt};

use super::*;
use crate::cluster::discovery::Discovery;
use crate::cluster::membership::{Member, MemberList, ReplicationFactor};
use crate::cluster::wire::Identity;
use crate::cluster::{Consistency, Defaults};
use crate::store::entry::Entry;
use crate::store::{EvictionPolicy, Precondition, StoreConfig};
use crate::test_support::eventually;
use proto::peer_client::PeerClient;

const MAX_MEMORY: usize = 16 << 20;
const VALUE: usize = 1_000;

fn store(max_memory: usize, eviction: EvictionPolicy) -> Store {
    Store::new(StoreConfig::for_tests("a", 4, max_memory, eviction))
}

/// A single node with `keys` keys of `VALUE` bytes (or, with `None`, filled to within a
/// few entries of the entries' share), serving the peer protocol on loopback. Returns
/// its store, address and keys.
async fn node(
    max_memory: usize,
    keys: Option<usize>,
) -> (Store, std::net::SocketAddr, Vec<String>) {
    let store = store(max_memory, EvictionPolicy::Lru);
    let room = (max_memory - store.buffer_cap()) / Entry::charge_for(9, VALUE);
    let count = keys.unwrap_or(room - 10);
    let keys: Vec<String> = (0..count).map(|i| format!("key-{i:05}")).collect();
    for key in &keys {
        store
            .put(key.as_bytes(), &[b'v'; VALUE], None, &Precondition::None)
            .expect("put");
    }
    let defaults = Defaults {
        read: Consistency::One,
        write: Consistency::One,
    };
    let cluster = Cluster::single(store.clone(), Identity::new("a".into()), defaults);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        transport()
            .add_service(PeerService::new(cluster).into_server())
            .serve_with_incoming(incoming(listener)),
    );
    (store, address, keys)
}

fn greedy() -> proto::Sender {
    proto::Sender {
        protocol_version: PROTOCOL_VERSION,
        node_id: "greedy".into(),
        ..proto::Sender::default()
    }
}

/// Opens `count` partition streams on one connection and reads none of them. Returns
/// the open ones and the refusals.
async fn open_unread(
    address: std::net::SocketAddr,
    count: u32,
) -> (Vec<tonic::Streaming<proto::Chunk>>, Vec<Status>) {
    let mut client = PeerClient::connect(format!("http://{address}"))
        .await
        .expect("connect");
    let mut unread = Vec::new();
    let mut refused = Vec::new();
    for i in 0..count {
        let request = proto::StreamRequest {
            sender: Some(greedy()),
            partition: i % 4,
            buckets: Vec::new(),
        };
        match client.stream_partition(request).await {
            Ok(stream) => unread.push(stream.into_inner()),
            Err(status) => refused.push(status),
        }
    }
    (unread, refused)
}

/// Waits until the streams' senders have queued chunks, and a little more for them to
/// queue all they can.
async fn settle(store: &Store) {
    for _ in 0..200 {
        if store.stats().buffer_bytes > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn unread_partition_streams_evict_nothing_and_stay_within_the_buffers_share() {
    let (store, address, keys) = node(MAX_MEMORY, None).await;
    let before = store.stats();
    assert_eq!(before.evictions, 0);

    // A hundred streams, none of them read: each would queue three chunks (850 KiB),
    // five times the whole bound together.
    let (unread, _) = open_unread(address, 100).await;
    settle(&store).await;

    let after = store.stats();
    assert!(after.buffer_bytes > 0, "the streams did queue chunks");
    assert!(
        after.buffer_bytes <= store.buffer_cap() as u64,
        "{} bytes of buffers, over their {}-byte share",
        after.buffer_bytes,
        store.buffer_cap()
    );
    assert_eq!(after.evictions, 0, "no live key evicted for a buffer");
    assert_eq!(after.keys, before.keys);
    assert!(keys.iter().all(|key| store.get(key.as_bytes()).is_some()));
    assert!(after.bytes <= MAX_MEMORY as u64);
    // Client writes still find the entries' room they had.
    store
        .put(b"after", &[b'v'; VALUE], None, &Precondition::None)
        .expect("a client write");
    assert_eq!(store.stats().evictions, 0);
    drop(unread);
}

#[tokio::test]
async fn a_node_serves_a_bounded_number_of_partition_streams_at_once() {
    // Room in the buffers' share for far more streams than the limit, and partitions
    // larger than the client's flow-control windows, so unread streams stay open.
    let (store, address, _) = node(1 << 30, Some(8_000)).await;
    let (unread, refused) = open_unread(address, 100).await;
    settle(&store).await;
    assert!(
        unread.len() >= MAX_PARTITION_STREAMS && !refused.is_empty(),
        "{} open, {} refused",
        unread.len(),
        refused.len()
    );
    for status in &refused {
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(status.message().contains("partition streams"), "{status:?}");
    }
    assert!(
        store.stats().buffer_bytes <= (MAX_PARTITION_STREAMS * 3 * 300 * 1024) as u64,
        "at most three chunks for each stream allowed at once"
    );
    drop(unread);
}

#[tokio::test(start_paused = true)]
async fn a_stream_whose_receiver_stops_reading_ends_and_gives_its_chunks_back() {
    // About 1,200 keys, 1.2 MB, in partition 0: more than the sender may queue.
    let source = store(64 << 20, EvictionPolicy::None);
    for i in 0..4_800 {
        source
            .put(
                format!("key-{i}").as_bytes(),
                &[b'v'; VALUE],
                None,
                &Precondition::None,
            )
            .expect("put");
    }
    let entries = source.stats().bytes;
    let mut stream = chunk::stream_partition(source.clone(), 0, None);
    eventually("the sender to fill its channel", || {
        source.stats().buffer_bytes
            > (chunk::CHUNKS_IN_FLIGHT as u64 + 1) * chunk::CHUNK_BYTES as u64
    })
    .await;
    tokio::time::sleep(chunk::STREAM_IDLE - Duration::from_secs(1)).await;
    assert!(
        source.stats().buffer_bytes > 0,
        "a slow receiver is waited for"
    );

    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        source.stats().buffer_bytes,
        0,
        "a receiver idle for chunk::STREAM_IDLE holds nothing"
    );
    assert_eq!(source.stats().bytes, entries);
    let ended = stream.next().await.expect("an item").expect_err("an error");
    assert_eq!(ended.code(), tonic::Code::DeadlineExceeded, "{ended:?}");
    assert!(
        stream.next().await.is_none(),
        "never a short stream that looks complete"
    );
}

/// A peer that sends the first chunk of a partition stream and then nothing more, as a
/// peer that went half-open in the middle of a move would.
#[derive(Debug, Clone, Default)]
struct Silent;

/// The one record [`Silent`] sends.
const FIRST: &[u8] = b"first";

type Never = std::pin::Pin<Box<dyn Stream<Item = Result<proto::Chunk, Status>> + Send>>;

#[tonic::async_trait]
impl proto::peer_server::Peer for Silent {
    type StreamPartitionStream = Never;

    async fn stream_partition(
        &self,
        _: tonic::Request<proto::StreamRequest>,
    ) -> Result<tonic::Response<Never>, Status> {
        let first = proto::Chunk {
            records: vec![proto::Record {
                key: FIRST.to_vec(),
                value: b"v".to_vec(),
                hlc: 1,
                ..proto::Record::default()
            }],
        };
        let stream = tokio_stream::once(Ok(first)).chain(tokio_stream::pending());
        Ok(tonic::Response::new(Box::pin(stream)))
    }

    async fn hello(
        &self,
        _: tonic::Request<proto::HelloRequest>,
    ) -> Result<tonic::Response<proto::HelloResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }

    async fn fill(
        &self,
        _: tonic::Request<proto::FillRequest>,
    ) -> Result<tonic::Response<proto::FillResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }

    async fn purge(
        &self,
        _: tonic::Request<proto::PurgeRequest>,
    ) -> Result<tonic::Response<proto::PurgeResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }

    async fn get(
        &self,
        _: tonic::Request<proto::GetRequest>,
    ) -> Result<tonic::Response<proto::GetResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }

    async fn apply(
        &self,
        _: tonic::Request<proto::ApplyRequest>,
    ) -> Result<tonic::Response<proto::ApplyResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }

    async fn partition_digest(
        &self,
        _: tonic::Request<proto::DigestRequest>,
    ) -> Result<tonic::Response<proto::DigestResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }

    async fn release(
        &self,
        _: tonic::Request<proto::ReleaseRequest>,
    ) -> Result<tonic::Response<proto::ReleaseResponse>, Status> {
        Err(Status::unimplemented("silent"))
    }
}

#[tokio::test]
async fn a_pull_from_a_source_that_stops_sending_fails_after_the_idle_deadline() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(proto::peer_server::PeerServer::new(Silent))
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
    );
    // RF 2: b owns the partition it pulls.
    let list = MemberList {
        epoch: 1,
        partitions: 4,
        replication_factor: ReplicationFactor::Count(2),
        members: vec![
            Member {
                id: "a".into(),
                address: Some(address),
            },
            Member {
                id: "b".into(),
                address: None,
            },
        ],
        departing: Vec::new(),
    };
    let defaults = Defaults {
        read: Consistency::One,
        write: Consistency::One,
    };
    let store = store(1 << 20, EvictionPolicy::None);
    let b = Cluster::new(
        store.clone(),
        Identity::new("b".into()),
        list,
        defaults,
        Discovery::from_list(),
    );
    let pull = tokio::spawn({
        let b = b.clone();
        let a = b.view().list.members[0].clone();
        async move { b.pull(&a, 0, Vec::new()).await }
    });
    eventually("the first chunk", || store.get(FIRST).is_some()).await;

    // The pull waits for the next chunk, which never comes: only its deadline can end it.
    tokio::time::pause();
    tokio::time::advance(chunk::STREAM_IDLE + Duration::from_secs(1)).await;
    let failed = tokio::time::timeout(chunk::STREAM_IDLE, pull)
        .await
        .expect("the pull ends at its idle deadline instead of waiting forever")
        .expect("task")
        .expect_err("nothing arrived");
    assert_eq!(failed.code(), tonic::Code::DeadlineExceeded, "{failed:?}");
    assert!(failed.message().contains("no chunk"), "{failed:?}");
}
