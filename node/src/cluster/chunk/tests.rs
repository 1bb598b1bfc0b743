//! Partition chunks in flight are charged against `--max-memory` on every path: a stream's
//! queued chunks on the sender, a pulled chunk on the receiver, a drain's hand-off on both
//! sides. A chunk that does not fit fails its exchange with `RESOURCE_EXHAUSTED`, changes
//! nothing, and the exchange succeeds once there is room. A chunk never evicts an entry.
//! Two nodes in one process, over real gRPC on loopback, served with the node's transport
//! limits. (The idle deadlines are tested in `peer/server/tests.rs`.)

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_stream::StreamExt;

use super::*;
use crate::cluster::discovery::Discovery;
use crate::cluster::membership::{Member, MemberList, ReplicationFactor};
use crate::cluster::peer::{PeerService, server};
use crate::cluster::wire::Identity;
use crate::cluster::{Cluster, Consistency, Defaults};
use crate::store::entry::Entry;
use crate::store::{EvictionPolicy, Precondition, StoreConfig};
use crate::test_support::eventually;

const PARTITIONS: u32 = 4;
const VALUE: usize = 1_000;

fn store(id: &str, max_memory: usize, eviction: EvictionPolicy) -> Store {
    Store::new(StoreConfig::for_tests(id, PARTITIONS, max_memory, eviction))
}

/// `count` keys of `partition`.
fn keys_of(partition: u32, count: usize) -> Vec<Vec<u8>> {
    let probe = store("probe", 1 << 20, EvictionPolicy::None);
    (0..)
        .map(|i| format!("key-{i}").into_bytes())
        .filter(|key| probe.partition_of(key) == partition)
        .take(count)
        .collect()
}

fn put(store: &Store, key: &[u8], value_len: usize) {
    store
        .put(key, &vec![b'v'; value_len], None, &Precondition::None)
        .expect("put");
}

/// What storing `keys` costs as entries, and what they cost as one chunk in flight.
fn entry_and_chunk_bytes(keys: &[Vec<u8>]) -> (usize, usize) {
    let entries = keys
        .iter()
        .map(|key| Entry::charge_for(key.len(), VALUE))
        .sum();
    let records: Vec<proto::Record> = keys
        .iter()
        .map(|key| proto::Record {
            key: key.clone(),
            value: vec![b'v'; VALUE],
            ..proto::Record::default()
        })
        .collect();
    (entries, chunk_charge(&records))
}

/// Takes all of `store`'s buffers' share but `free` bytes, as other exchanges in flight
/// would; the room comes back when the guard drops.
fn leave_buffer_room(store: &Store, free: usize) -> BufferGuard {
    let held = store.buffer_cap() - free;
    let guard = store.reserve_buffer(held).expect("the share is free");
    assert_eq!(store.stats().buffer_bytes, held as u64);
    guard
}

/// Two members, `a` and `b`, each serving the peer protocol on loopback.
async fn pair(a: Store, b: Store, replication_factor: u16) -> (Cluster, Cluster) {
    let listeners = [
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
        TcpListener::bind("127.0.0.1:0").await.expect("bind"),
    ];
    let addresses: Vec<SocketAddr> = listeners
        .iter()
        .map(|l| l.local_addr().expect("address"))
        .collect();
    let list = MemberList {
        epoch: 1,
        partitions: PARTITIONS,
        replication_factor: ReplicationFactor::Count(replication_factor),
        members: ["a", "b"]
            .iter()
            .zip(&addresses)
            .map(|(id, address)| Member {
                id: (*id).into(),
                address: Some(*address),
            })
            .collect(),
        departing: Vec::new(),
    };
    let defaults = Defaults {
        read: Consistency::One,
        write: Consistency::One,
    };
    let mut clusters = Vec::new();
    for ((id, store), listener) in [("a", a), ("b", b)].into_iter().zip(listeners) {
        let cluster = Cluster::new(
            store,
            Identity::new(id.into()),
            list.clone(),
            defaults,
            Discovery::from_list(),
        );
        let server = server::transport()
            .add_service(PeerService::new(cluster.clone()).into_server())
            .serve_with_incoming(server::incoming(listener));
        tokio::spawn(server);
        clusters.push(cluster);
    }
    let b = clusters.pop().expect("b");
    let a = clusters.pop().expect("a");
    a.lifecycle().advance(crate::lifecycle::Phase::Ready);
    (a, b)
}

fn member(cluster: &Cluster, id: &str) -> Member {
    cluster
        .view()
        .list
        .members
        .iter()
        .find(|m| m.id == id)
        .cloned()
        .expect("member")
}

fn holds_all(store: &Store, keys: &[Vec<u8>]) -> bool {
    keys.iter().all(|key| store.get(key).is_some())
}

#[tokio::test]
async fn a_stream_charges_the_chunks_it_queues_until_they_are_taken() {
    let source = store("a", 64 << 20, EvictionPolicy::None);
    let keys = keys_of(0, 1_200);
    for key in &keys {
        put(&source, key, VALUE);
    }
    let entries = source.stats().bytes;
    let mut stream = stream_partition(source.clone(), 0, None);
    // Nobody reads: the sender fills the channel and waits with one more chunk in hand.
    eventually("the sender to fill its channel", || {
        source.stats().buffer_bytes > (CHUNKS_IN_FLIGHT as u64 + 1) * CHUNK_BYTES as u64
    })
    .await;
    let queued = source.stats();
    assert!(
        queued.buffer_bytes < (CHUNKS_IN_FLIGHT as u64 + 1) * 2 * CHUNK_BYTES as u64,
        "about three chunks, not the partition: {}",
        queued.buffer_bytes
    );
    assert_eq!(
        queued.bytes,
        entries + queued.buffer_bytes,
        "charged with the entries"
    );

    // Taking a chunk (tonic encoding it) gives its bytes back at once.
    let first = stream.next().await.expect("a chunk").expect("charged");
    assert_eq!(
        source.stats().buffer_bytes,
        queued.buffer_bytes - chunk_charge(&first.records) as u64
    );
    let mut received = first.records.len();
    while let Some(chunk) = stream.next().await {
        received += chunk.expect("charged").records.len();
    }
    assert_eq!(received, keys.len(), "the whole partition");
    assert_eq!(source.stats().buffer_bytes, 0);
    assert_eq!(source.stats().bytes, entries);

    // A receiver that goes away: the queued chunks give their bytes back too.
    let stream = stream_partition(source.clone(), 0, None);
    eventually("chunks to queue", || source.stats().buffer_bytes > 0).await;
    drop(stream);
    eventually("the queued chunks to be released", || {
        source.stats().buffer_bytes == 0
    })
    .await;
    assert_eq!(source.stats().bytes, entries);
}

#[tokio::test]
async fn a_source_without_room_for_a_chunk_fails_the_pull_and_keeps_its_data() {
    let keys = keys_of(1, 100);
    let (_, chunk) = entry_and_chunk_bytes(&keys);
    let source = store("a", 64 << 20, EvictionPolicy::Lru);
    for key in &keys {
        put(&source, key, VALUE);
    }
    // Other exchanges hold the source's buffers' share but less than one chunk.
    let held = leave_buffer_room(&source, chunk / 2);
    let before = source.stats();
    // RF 2: both own every partition, so b may store what it pulls.
    let (a, b) = pair(
        source.clone(),
        store("b", 64 << 20, EvictionPolicy::None),
        2,
    )
    .await;

    let refused = b
        .pull(&member(&b, "a"), 1, Vec::new())
        .await
        .expect_err("no room to buffer a chunk on the source");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(
        refused.message().contains("--max-memory") && refused.message().contains("stream"),
        "{refused:?}"
    );
    assert_eq!(b.store().stats().keys, 0, "nothing arrived");
    eventually("the source's stream to end", || {
        a.store().stats().buffer_bytes == before.buffer_bytes
    })
    .await;
    assert_eq!(
        a.store().stats(),
        before,
        "the source lost nothing: a buffer never evicts"
    );
    drop(held);
    let pulled = b.pull(&member(&b, "a"), 1, Vec::new()).await.expect("pull");
    assert_eq!(pulled.stored, 100, "with room, the retry brings everything");
}

#[tokio::test]
async fn a_pull_without_room_for_a_chunk_fails_instead_of_overcommitting() {
    let keys = keys_of(2, 100);
    let (_, chunk) = entry_and_chunk_bytes(&keys);
    let receiver = store("b", 1 << 20, EvictionPolicy::None);
    let held = leave_buffer_room(&receiver, chunk / 2);
    let source = store("a", 64 << 20, EvictionPolicy::None);
    for key in &keys {
        put(&source, key, VALUE);
    }
    let (a, b) = pair(source, receiver.clone(), 1).await;

    let refused = b
        .pull(&member(&b, "a"), 2, Vec::new())
        .await
        .expect_err("no room to buffer the chunk");
    assert_eq!(
        refused.code(),
        tonic::Code::ResourceExhausted,
        "{refused:?}"
    );
    assert!(refused.message().contains("pulled from 'a'"), "{refused:?}");
    let after = receiver.stats();
    assert_eq!(
        (after.keys, after.buffer_bytes),
        (0, held.bytes() as u64),
        "nothing applied, nothing more held"
    );
    assert!(after.bytes <= after.max_memory);

    // With room, the same pull (as the callers retry it) brings everything.
    drop(held);
    let pulled = b.pull(&member(&b, "a"), 2, Vec::new()).await.expect("pull");
    assert_eq!((pulled.streamed, pulled.stored), (100, 100));
    assert!(holds_all(&receiver, &keys));
    assert_eq!(receiver.stats().buffer_bytes, 0);
    drop(a);
}

#[tokio::test]
async fn a_full_node_takes_a_pulled_chunk_into_its_buffers_share_and_evicts_only_for_its_records() {
    let keys = keys_of(3, 100);
    let (entries, _) = entry_and_chunk_bytes(&keys);
    let max = 4 << 20;
    let receiver = store("b", max, EvictionPolicy::Lru);
    // Full of equal-sized filler entries, so evictions count the bytes freed; so many
    // that sampled LRU practically never picks a just-pulled record instead.
    let filler = Entry::charge_for(7, 100);
    for i in 0..max / filler + 100 {
        put(&receiver, format!("f{i:06}").as_bytes(), 100);
    }
    let full = receiver.stats();
    assert!(full.evictions > 0);
    let source = store("a", 64 << 20, EvictionPolicy::None);
    for key in &keys {
        put(&source, key, VALUE);
    }
    let (_a, b) = pair(source, receiver.clone(), 2).await;

    let pulled = b.pull(&member(&b, "a"), 3, Vec::new()).await.expect("pull");
    assert_eq!(pulled.stored, 100);
    let after = receiver.stats();
    assert!(after.bytes <= max as u64);
    let evicted = usize::try_from(after.evictions - full.evictions).expect("fits");
    // Room for the records stored, as client writes of them would make; none for the
    // chunk that carried them, which took the buffers' share.
    assert!(
        evicted * filler + filler >= entries && evicted * filler < entries + filler,
        "evicted {} bytes for {entries} bytes of records",
        evicted * filler
    );
    assert!(holds_all(&receiver, &keys));
    assert_eq!(after.buffer_bytes, 0);
}

#[tokio::test]
async fn a_startup_sync_refused_for_memory_is_retried_until_it_holds_everything() {
    let keys = keys_of(0, 100);
    let (_, chunk) = entry_and_chunk_bytes(&keys);
    let receiver = store("b", 1 << 20, EvictionPolicy::None);
    let held = leave_buffer_room(&receiver, chunk / 2);
    let source = store("a", 64 << 20, EvictionPolicy::None);
    for key in &keys {
        put(&source, key, VALUE);
    }
    // RF=2: the restarted member `b` owns every partition and pulls them from `a`.
    let (_a, b) = pair(source, receiver.clone(), 2).await;
    let sync = tokio::spawn({
        let b = b.clone();
        async move { b.initial_sync().await }
    });

    eventually("a refused pull", || b.sync_report().failures > 0).await;
    assert!(!b.is_synced(), "a refused pull is not 'no data'");
    drop(held);
    tokio::time::timeout(Duration::from_secs(10), sync)
        .await
        .expect("the retry succeeds once there is room")
        .expect("task");
    assert!(b.is_synced());
    assert!(holds_all(&receiver, &keys));
}

#[tokio::test]
async fn a_hand_off_is_charged_by_the_sender_and_by_the_holder() {
    // Which partition `a` alone owns at RF=1 (its drain hands that one off to `b`).
    let (probe_a, _) = pair(
        store("a", 1 << 20, EvictionPolicy::None),
        store("b", 1 << 20, EvictionPolicy::None),
        1,
    )
    .await;
    let partition = *probe_a.view().owned().first().expect("a owns a partition");
    let keys = keys_of(partition, 100);
    let (_, chunk) = entry_and_chunk_bytes(&keys);

    // The sender has no room for the chunk it would send.
    let sender = store("a", 1 << 20, EvictionPolicy::None);
    for key in &keys {
        put(&sender, key, VALUE);
    }
    let held = leave_buffer_room(&sender, chunk / 2);
    let holder = store("b", 64 << 20, EvictionPolicy::None);
    let (a, _b) = pair(sender.clone(), holder.clone(), 1).await;
    let drained = a.drain().await;
    assert_eq!((drained.partitions, drained.failed), (0, 1));
    assert_eq!(holder.stats().keys, 0, "nothing was sent");
    assert!(holds_all(&sender, &keys));
    assert_eq!(sender.stats().buffer_bytes, held.bytes() as u64);
    drop(held);

    // The holder has room for the entries but not for the batch that carries them.
    let sender = store("a", 64 << 20, EvictionPolicy::None);
    for key in &keys {
        put(&sender, key, VALUE);
    }
    let holder = store("b", 1 << 20, EvictionPolicy::None);
    let held = leave_buffer_room(&holder, chunk / 2);
    let (a, _b) = pair(sender, holder.clone(), 1).await;
    let drained = a.drain().await;
    assert_eq!((drained.partitions, drained.failed), (0, 1));
    let refused = holder.stats();
    assert_eq!(
        (refused.keys, refused.buffer_bytes),
        (0, held.bytes() as u64),
        "nothing stored, nothing more held"
    );

    drop(held);
    let drained = a.drain().await;
    assert_eq!((drained.partitions, drained.records), (1, 100));
    assert!(holds_all(&holder, &keys));
    assert_eq!(holder.stats().buffer_bytes, 0);
}

#[tokio::test]
async fn a_pull_of_a_partition_the_node_does_not_own_stores_nothing() {
    // At RF 1 each partition has one owner; find one that is a's alone.
    let source = store("a", 64 << 20, EvictionPolicy::None);
    let receiver = store("b", 64 << 20, EvictionPolicy::None);
    let (a, b) = pair(source.clone(), receiver.clone(), 1).await;
    let partition = (0..PARTITIONS)
        .find(|&p| a.view().owns(p))
        .expect("a owns some partition");
    let keys = keys_of(partition, 20);
    for key in &keys {
        put(&source, key, VALUE);
    }
    // An anti-entropy round or a catch-up that outlived b's ownership delivers late.
    let refused = b
        .pull(&member(&b, "a"), partition, Vec::new())
        .await
        .expect_err("b does not own the partition");
    assert_eq!(refused.code(), tonic::Code::Aborted, "{refused:?}");
    assert_eq!(
        receiver.stats().keys,
        0,
        "a copy nobody owns would never be dropped"
    );
}
