//! Proves the memory bound of a real `kache-node` process holds against a peer that opens
//! partition streams and never reads them (issue 10, item 5): no acknowledged key is
//! evicted, the buffers stay within their share, and RSS stays within `--max-memory` +
//! 32 MiB while 3,000 streams are attempted, over one connection and over 30. Measured on
//! a full node (55 MiB of entries, RSS 78 MiB before the attack): peak 85-86 and 86-89 MiB.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

mod common;

use std::time::{Duration, Instant};

use common::{Node, free_ports};
use kache_node::cluster::wire::{PROTOCOL_VERSION, proto};
use proto::peer_client::PeerClient;
use serde_json::{Value as Json, json};

const MAX: u64 = 64 << 20;
/// Batches of 64 keys with 4 KiB values.
const BATCHES: usize = 215;
/// The attack of issue 10: 3,000 streams, one a millisecond, over one connection or
/// spread over 30 (100 each). See `MAX_PARTITION_STREAMS` for the figures.
const ATTEMPTS: u32 = 3_000;
const PAUSE: Duration = Duration::from_millis(1);
/// See `RSS_OVERHEAD` in node_process.rs: the runtime, allocator arenas and connection
/// buffers, on top of `--max-memory`.
const RSS_OVERHEAD: u64 = 32 << 20;

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// A peer that opens `attempts` partition streams on one connection, one every
/// [`PAUSE`], and reads none: it holds every stream it gets until dropped.
async fn greedy_peer(grpc: String, attempts: u32) -> (Vec<tonic::Streaming<proto::Chunk>>, u32) {
    let mut client = PeerClient::connect(grpc).await.expect("connect");
    let mut unread = Vec::new();
    let mut refused = 0;
    for i in 0..attempts {
        let request = proto::StreamRequest {
            sender: Some(proto::Sender {
                protocol_version: PROTOCOL_VERSION,
                node_id: "greedy".into(),
                ..proto::Sender::default()
            }),
            partition: i % 8,
            buckets: Vec::new(),
        };
        match client.stream_partition(request).await {
            Ok(stream) => unread.push(stream.into_inner()),
            Err(_) => refused += 1,
        }
        tokio::time::sleep(PAUSE).await;
    }
    (unread, refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_on_one_connection_keep_every_key_and_rss_within_the_bound() {
    unread_streams_keep_every_key_and_rss_within_the_bound(1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_streams_over_30_connections_keep_every_key_and_rss_within_the_bound() {
    unread_streams_keep_every_key_and_rss_within_the_bound(30).await;
}

async fn unread_streams_keep_every_key_and_rss_within_the_bound(connections: u32) {
    let grpc_port = free_ports(1)[0];
    let grpc_addr = format!("127.0.0.1:{grpc_port}");
    let node = Node::start(&[
        "--max-memory",
        "64MiB",
        "--partitions",
        "8",
        "--grpc-addr",
        &grpc_addr,
    ]);
    // 55 MiB of 4 KiB values: the entries' share (64 MiB less the buffers' 8), nearly full.
    let value = "v".repeat(4096);
    for batch in 0..BATCHES {
        let items: Vec<Json> = (0..64)
            .map(|i| json!({"key": format!("key-{batch}-{i}"), "value": value}))
            .collect();
        for item in node.batch_put(items).await {
            assert_eq!(item["status"], 201, "{item}");
        }
    }
    let before = node.stats().await;
    assert_eq!(before["evictions"], 0, "{before}");
    let filled_rss = rss_bytes(node.child.id());

    // The streams are held past two idle deadlines, so streams the node ended make room
    // for new ones.
    let attack: Vec<_> = (0..connections)
        .map(|_| {
            tokio::spawn(greedy_peer(
                format!("http://{grpc_addr}"),
                ATTEMPTS / connections,
            ))
        })
        .collect();
    let started = Instant::now();
    let mut peak_rss = filled_rss;
    let mut peak_buffers = 0;
    while started.elapsed() < Duration::from_secs(25) {
        peak_rss = peak_rss.max(rss_bytes(node.child.id()));
        let stats = node.stats().await;
        peak_buffers = peak_buffers.max(stats["buffer_bytes"].as_u64().unwrap());
        assert!(stats["bytes"].as_u64().unwrap() <= MAX, "{stats}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut open = 0;
    let mut refused = 0;
    let mut held = Vec::new();
    for peer in attack {
        let (unread, peer_refused) = peer.await.expect("attacker");
        open += unread.len();
        refused += peer_refused;
        held.push(unread);
    }
    let after = node.stats().await;
    println!(
        "{connections} connections: RSS {} MiB filled, peak {} MiB under attack \
         ({open} streams opened, {refused} refused); peak buffers {} KiB",
        filled_rss >> 20,
        peak_rss >> 20,
        peak_buffers >> 10
    );
    assert_eq!(
        after["evictions"], 0,
        "no key evicted for a buffer: {after}"
    );
    assert_eq!(after["keys"], before["keys"], "{after}");
    assert!(
        peak_buffers <= 8 << 20,
        "buffers over their share: {peak_buffers}"
    );
    assert!(
        peak_rss <= MAX + RSS_OVERHEAD,
        "peak RSS {} MiB exceeds 64 MiB + {} MiB",
        peak_rss >> 20,
        RSS_OVERHEAD >> 20
    );
    // Every key is still there.
    for batch in (0..BATCHES).step_by(17) {
        let key = format!("/v1/keys/key-{batch}-63");
        assert_eq!(
            node.get(&key).await.status(),
            reqwest::StatusCode::OK,
            "{key}"
        );
    }
    drop(held);
}
