//! Proves, on a 3-node RF=2 cluster of real processes, that RESP serves one keyspace from
//! every node, agrees with HTTP on where each key lives, and that CLUSTER SLOTS, MYID,
//! KEYSLOT and DBSIZE describe that placement as Redis Cluster clients expect; and that a
//! member that left keeps serving clients for a while after SIGTERM, then exits.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test: a failed step fails the test"
)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use common::{Options, StaticCluster};
use serde_json::Value as Json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A RESP reply, as far as these commands answer.
#[derive(Debug, Clone, PartialEq)]
enum Reply {
    Simple(String),
    Error(String),
    Int(i64),
    Bulk(Option<Vec<u8>>),
    Array(Vec<Reply>),
}

impl Reply {
    fn int(&self) -> i64 {
        match self {
            Self::Int(i) => *i,
            other => panic!("not an integer: {other:?}"),
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Bulk(Some(b)) => String::from_utf8(b.clone()).unwrap(),
            Self::Simple(s) => s.clone(),
            other => panic!("not text: {other:?}"),
        }
    }

    fn items(&self) -> &[Reply] {
        match self {
            Self::Array(items) => items,
            other => panic!("not an array: {other:?}"),
        }
    }
}

struct Resp(BufReader<TcpStream>);

impl Resp {
    async fn connect(addr: SocketAddr) -> Self {
        Self(BufReader::new(TcpStream::connect(addr).await.unwrap()))
    }

    async fn call(&mut self, args: &[&[u8]]) -> Reply {
        let mut request = format!("*{}\r\n", args.len()).into_bytes();
        for arg in args {
            request.extend(format!("${}\r\n", arg.len()).as_bytes());
            request.extend(*arg);
            request.extend(b"\r\n");
        }
        self.0.get_mut().write_all(&request).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), self.read())
            .await
            .expect("a reply in time")
    }

    async fn read(&mut self) -> Reply {
        let mut line = String::new();
        self.0.read_line(&mut line).await.unwrap();
        assert!(!line.is_empty(), "the server closed the connection");
        let line = line.trim_end_matches("\r\n");
        let (kind, rest) = line.split_at(1);
        match kind {
            "+" => Reply::Simple(rest.to_owned()),
            "-" => Reply::Error(rest.to_owned()),
            ":" => Reply::Int(rest.parse().unwrap()),
            "$" => {
                let len: i64 = rest.parse().unwrap();
                if len < 0 {
                    return Reply::Bulk(None);
                }
                let mut data = vec![0; usize::try_from(len).unwrap() + 2];
                self.0.read_exact(&mut data).await.unwrap();
                data.truncate(data.len() - 2);
                Reply::Bulk(Some(data))
            }
            "*" => {
                let len: usize = rest.parse().unwrap();
                let mut items = Vec::with_capacity(len);
                for _ in 0..len {
                    items.push(Box::pin(self.read()).await);
                }
                Reply::Array(items)
            }
            other => panic!("unexpected reply type {other:?} in {line:?}"),
        }
    }
}

#[tokio::test]
async fn every_node_serves_the_keyspace_and_describes_its_placement_as_redis_cluster() {
    let cluster = StaticCluster::start(&[vec![], vec![], vec![]], "2", &[]);
    for node in &cluster.nodes {
        node.wait_ready(Duration::from_secs(20));
    }
    let resp: Vec<SocketAddr> = cluster.nodes.iter().map(|n| n.resp.unwrap()).collect();
    let mut clients = Vec::new();
    for addr in &resp {
        clients.push(Resp::connect(*addr).await);
    }
    // Each node's Redis Cluster id, by RESP port.
    let mut ids = HashMap::new();
    for (i, client) in clients.iter_mut().enumerate() {
        let id = client.call(&[b"CLUSTER", b"MYID"]).await.text();
        assert_eq!(id.len(), 40);
        ids.insert(id, (format!("node-{i}"), resp[i].port()));
    }
    assert_eq!(ids.len(), 3, "distinct ids");

    // Writes through every node, reads through every other node, over RESP and HTTP.
    for k in 0..150 {
        let key = format!("user:{k}");
        let value = format!("v{k}");
        let writer = k % 3;
        let set = clients[writer]
            .call(&[b"SET", key.as_bytes(), value.as_bytes()])
            .await;
        assert_eq!(set, Reply::Simple("OK".into()), "{key}");
        let reader = (k + 1) % 3;
        let got = clients[reader].call(&[b"GET", key.as_bytes()]).await;
        assert_eq!(got.text(), value, "{key} through node-{reader}");
        let http = cluster.nodes[(k + 2) % 3].get_key(&key).await;
        assert_eq!(http.1, value, "{key} over HTTP");
    }

    // Poll until every node has heard each peer's RESP port (peers announce it in their
    // requests), then check the slot map of each.
    let mut slot_maps = Vec::new();
    for client in &mut clients {
        let mut map = Vec::new();
        for _ in 0..100 {
            map = client.call(&[b"CLUSTER", b"SLOTS"]).await.items().to_vec();
            let ports: std::collections::HashSet<i64> = map
                .iter()
                .flat_map(|range| range.items()[2..].iter().map(|n| n.items()[1].int()))
                .collect();
            if ports.len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        slot_maps.push(map);
    }
    for map in &slot_maps {
        assert_eq!(map, &slot_maps[0], "every node gives the same slot map");
    }
    let mut next = 0;
    let mut owner_of_slot = vec![String::new(); 16_384];
    for range in &slot_maps[0] {
        let items = range.items();
        let (first, last) = (items[0].int(), items[1].int());
        assert_eq!(first, next, "ranges cover the slots in order, once");
        assert_eq!(items.len(), 4, "RF=2: a primary and a replica");
        for node in &items[2..] {
            let node = node.items();
            let (member, port) = &ids[&node[2].text()];
            assert_eq!(node[0].text(), "127.0.0.1");
            assert_eq!(node[1].int(), i64::from(*port), "{member} at its RESP port");
        }
        let primary = ids[&items[2].items()[2].text()].0.clone();
        for slot in first..=last {
            owner_of_slot[usize::try_from(slot).unwrap()] = primary.clone();
        }
        next = last + 1;
    }
    assert_eq!(next, 16_384, "every slot is served");

    // The slot map's primary of each key's slot is its first owner over HTTP too.
    for k in 0..150 {
        let key = format!("user:{k}");
        let slot = clients[0]
            .call(&[b"CLUSTER", b"KEYSLOT", key.as_bytes()])
            .await
            .int();
        let placement: Json = cluster.nodes[0]
            .get(&format!("/v1/cluster/keys/{key}"))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(placement["slot"], slot, "{key}");
        assert_eq!(
            placement["owners"][0],
            owner_of_slot[usize::try_from(slot).unwrap()],
            "{key}"
        );
    }
    // Hash tags put keys in one slot.
    let a = clients[1]
        .call(&[b"CLUSTER", b"KEYSLOT", b"{user1000}.following"])
        .await;
    let b = clients[2]
        .call(&[b"CLUSTER", b"KEYSLOT", b"{user1000}.followers"])
        .await;
    assert_eq!(a, b);

    // DBSIZE summed over the nodes (each counts the slots it is primary for) is the
    // key count, once each, though every key has two copies.
    let mut total = 0;
    for client in &mut clients {
        total += client.call(&[b"DBSIZE"]).await.int();
    }
    assert_eq!(total, 150);
    // A multi-key command across slots is served, from any node.
    let mget = clients[2]
        .call(&[b"MGET", b"user:1", b"user:2", b"nope", b"user:3"])
        .await;
    let values: Vec<Reply> = mget.items().to_vec();
    assert_eq!(values[0].text(), "v1");
    assert_eq!(values[2], Reply::Bulk(None));
    assert_eq!(values[3].text(), "v3");
    let deleted = clients[0]
        .call(&[b"DEL", b"user:1", b"user:2", b"nope"])
        .await;
    assert_eq!(deleted, Reply::Int(2));
    let info = clients[1].call(&[b"CLUSTER", b"INFO"]).await.text();
    assert!(info.contains("cluster_state:ok"), "{info}");
    assert!(info.contains("cluster_known_nodes:3"), "{info}");
}

#[tokio::test]
async fn a_departed_member_serves_clients_for_half_its_grace_then_exits() {
    let mut cluster = StaticCluster::start_with(
        &[vec![], vec![], vec![]],
        "2",
        &Options {
            extra: &["--shutdown-grace", "4s"],
            listed: Some(3),
            ..Options::default()
        },
    );
    for node in &cluster.nodes {
        node.wait_ready(Duration::from_secs(20));
    }
    let mut departing = Resp::connect(cluster.nodes[2].resp.unwrap()).await;
    for k in 0..20 {
        let key = format!("k{k}");
        let set = departing.call(&[b"SET", key.as_bytes(), b"v"]).await;
        assert_eq!(set, Reply::Simple("OK".into()));
    }
    // Scale in: node-2 leaves, hands everything off, and is then stopped, as the
    // operator does.
    cluster.write_list(2, &[0, 1], &[2]);
    for i in 0..3 {
        cluster.wait_settled(i, 2).await;
    }
    cluster.nodes[2].signal("TERM");
    let stopped = std::time::Instant::now();
    // A client that still routes to it (a stale slot map) is served meanwhile: the key
    // lives on node-0 and node-1 now.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    let got = departing.call(&[b"GET", b"k7"]).await;
    assert_eq!(got.text(), "v", "served 1 s after SIGTERM");
    assert!(
        !cluster.nodes[2].is_ready(),
        "not Ready while it lingers, so Services route elsewhere"
    );
    let status = cluster.nodes[2].wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0));
    let lingered = stopped.elapsed();
    assert!(
        lingered >= Duration::from_millis(1_800),
        "it stays for half of its 4 s grace, exited after {lingered:?}"
    );
    assert!(cluster.nodes[2].saw_log("departed: serving clients"));
}
