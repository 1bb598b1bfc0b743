//! The Redis Cluster commands: CLUSTER SLOTS, SHARDS, NODES, KEYSLOT, INFO and MYID.
//!
//! kache's placement maps onto Redis Cluster's: each partition is a contiguous slot range
//! (`store::slot`), and its owners, best ranked first, are reported as the range's primary
//! and replicas. Adjacent partitions with the same owners are one range. A kache member is
//! primary for some ranges and replica for others at once, which Redis's model has no
//! word for: `CLUSTER NODES` lists every member as a master of the ranges it ranks first
//! for, `CLUSTER SLOTS` and `SHARDS` list each range's replicas too.
//!
//! The map is the member list in force (`next` during a move): a client that follows it
//! goes to the new owners, and one that still has the old map is served too, because every
//! node serves every key (see docs/resp.md).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::ops::Range;

use bytes::Bytes;

use super::Session;
use super::errors::{RespError, RespResult};
use super::frame::Reply;
use super::server::unknown_subcommand;
use crate::cluster::membership::Member;
use crate::store::slot::{SLOTS, slot_of, slots_of_partition};

/// A run of slots and the members that own it, best ranked first.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SlotRange {
    slots: Range<u16>,
    owners: Vec<Owner>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Owner {
    id: String,
    /// Where Redis clients reach it; None while discovery has no address for it.
    endpoint: Option<SocketAddr>,
    /// Its peer (gRPC) port, shown as the cluster bus port.
    bus_port: u16,
    myself: bool,
}

pub fn cluster(session: &mut Session, args: &[Bytes], reply: &mut Reply<'_>) -> RespResult {
    if !session.clustered() {
        return Err(RespError::Err(
            "This instance has cluster support disabled".into(),
        ));
    }
    let sub = args[1].to_ascii_uppercase();
    let expect = |count: usize| {
        if args.len() == count {
            Ok(())
        } else {
            Err(RespError::Err(format!(
                "wrong number of arguments for 'cluster|{}' command",
                String::from_utf8_lossy(&args[1]).to_ascii_lowercase()
            )))
        }
    };
    match sub.as_slice() {
        b"KEYSLOT" => {
            expect(3)?;
            reply.int(i64::from(slot_of(&args[2])));
        }
        b"MYID" => {
            expect(2)?;
            reply.bulk(node_id(session.cluster().node_id()).as_bytes());
        }
        b"SLOTS" => {
            expect(2)?;
            slots(&ranges(session), reply);
        }
        b"SHARDS" => {
            expect(2)?;
            shards(&ranges(session), reply);
        }
        b"NODES" => {
            expect(2)?;
            reply.text(&nodes(session, &ranges(session)));
        }
        b"INFO" => {
            expect(2)?;
            reply.text(&info(session, &ranges(session)));
        }
        _ => return Err(unknown_subcommand(&args[1], "CLUSTER")),
    }
    Ok(())
}

/// A 40-hex-digit node id, as Redis's are, stable for a member id.
pub fn node_id(member: &str) -> String {
    let wide = xxhash_rust::xxh3::xxh3_128(member.as_bytes());
    let narrow = xxhash_rust::xxh3::xxh3_64_with_seed(member.as_bytes(), 1);
    format!("{wide:032x}{:08x}", narrow >> 32)
}

/// The slot map of the member list in force.
fn ranges(session: &Session) -> Vec<SlotRange> {
    let cluster = session.cluster();
    let view = cluster.view();
    let me = cluster.node_id();
    let owner = |member: &Member| {
        let myself = member.id == me;
        let peer = cluster.resp_endpoint(member);
        Owner {
            id: member.id.clone(),
            // This node is where the client reached it.
            endpoint: if myself { Some(session.local) } else { peer },
            bus_port: cluster.peer_address(member).map_or(0, |a| a.port()),
            myself,
        }
    };
    let partitions = view.list.partitions;
    let mut ranges: Vec<SlotRange> = Vec::new();
    for partition in 0..partitions {
        let slots = slots_of_partition(partition, partitions);
        let owners: Vec<Owner> = view.owners(partition).map(owner).collect();
        match ranges.last_mut() {
            Some(last) if last.owners == owners && last.slots.end == slots.start => {
                last.slots.end = slots.end;
            }
            _ => ranges.push(SlotRange { slots, owners }),
        }
    }
    ranges
}

/// CLUSTER SLOTS: `[first, last, [ip, port, id], replicas…]` per range.
fn slots(ranges: &[SlotRange], reply: &mut Reply<'_>) {
    let served: Vec<_> = ranges
        .iter()
        .map(|range| (range, reachable(range)))
        .filter(|(_, owners)| !owners.is_empty())
        .collect();
    reply.array(served.len());
    for (range, owners) in served {
        reply.array(2 + owners.len());
        reply.int(i64::from(range.slots.start));
        reply.int(i64::from(range.slots.end) - 1);
        for (owner, endpoint) in owners {
            reply.array(3);
            reply.bulk(endpoint.ip().to_string().as_bytes());
            reply.int(i64::from(endpoint.port()));
            reply.bulk(node_id(&owner.id).as_bytes());
        }
    }
}

/// The owners of `range` that clients can reach, best ranked first.
fn reachable(range: &SlotRange) -> Vec<(&Owner, SocketAddr)> {
    range
        .owners
        .iter()
        .filter_map(|owner| owner.endpoint.map(|endpoint| (owner, endpoint)))
        .collect()
}

/// CLUSTER SHARDS: one shard per distinct owner list, with all its slot ranges.
fn shards(ranges: &[SlotRange], reply: &mut Reply<'_>) {
    let mut shards: Vec<(Vec<&Owner>, Vec<&Range<u16>>)> = Vec::new();
    for range in ranges {
        let owners: Vec<&Owner> = range.owners.iter().collect();
        match shards.iter_mut().find(|(o, _)| *o == owners) {
            Some((_, slots)) => slots.push(&range.slots),
            None => shards.push((owners, vec![&range.slots])),
        }
    }
    reply.array(shards.len());
    for (owners, slots) in shards {
        reply.map(2);
        reply.bulk(b"slots");
        reply.array(slots.len() * 2);
        for range in slots {
            reply.int(i64::from(range.start));
            reply.int(i64::from(range.end) - 1);
        }
        reply.bulk(b"nodes");
        reply.array(owners.len());
        for (rank, owner) in owners.iter().enumerate() {
            let endpoint = owner.endpoint;
            let ip = endpoint.map(|e| e.ip().to_string()).unwrap_or_default();
            reply.map(7);
            reply.bulk(b"id");
            reply.bulk(node_id(&owner.id).as_bytes());
            reply.bulk(b"port");
            reply.int(i64::from(endpoint.map_or(0, |e| e.port())));
            reply.bulk(b"ip");
            reply.bulk(ip.as_bytes());
            reply.bulk(b"endpoint");
            reply.bulk(ip.as_bytes());
            reply.bulk(b"role");
            reply.bulk(if rank == 0 { b"master" } else { b"replica" });
            reply.bulk(b"replication-offset");
            reply.int(0);
            reply.bulk(b"health");
            reply.bulk(if endpoint.is_some() {
                b"online"
            } else {
                b"failed"
            });
        }
    }
}

/// CLUSTER NODES: one line per member, a master of the ranges it ranks first for.
fn nodes(session: &Session, ranges: &[SlotRange]) -> String {
    let cluster = session.cluster();
    let view = cluster.view();
    let epoch = view.epoch();
    let mut members: Vec<&Owner> = Vec::new();
    for owner in ranges.iter().flat_map(|r| &r.owners) {
        if !members.iter().any(|m| m.id == owner.id) {
            members.push(owner);
        }
    }
    let mut text = String::new();
    for member in members {
        let (ip, port) = member
            .endpoint
            .map_or((String::new(), 0), |e| (e.ip().to_string(), e.port()));
        let flags = match (member.myself, member.endpoint.is_some()) {
            (true, _) => "myself,master",
            (false, true) => "master",
            (false, false) => "master,fail",
        };
        let _ = write!(
            text,
            "{} {ip}:{port}@{} {flags} - 0 0 {epoch} connected",
            node_id(&member.id),
            member.bus_port
        );
        // Ranges this member ranks first for, adjacent ones joined (their replicas differ).
        let mut first: Vec<Range<u16>> = Vec::new();
        for range in ranges
            .iter()
            .filter(|r| r.owners.first().map(|o| &o.id) == Some(&member.id))
        {
            match first.last_mut() {
                Some(last) if last.end == range.slots.start => last.end = range.slots.end,
                _ => first.push(range.slots.clone()),
            }
        }
        for range in first {
            let last = range.end - 1;
            if range.start == last {
                let _ = write!(text, " {last}");
            } else {
                let _ = write!(text, " {}-{last}", range.start);
            }
        }
        text.push('\n');
    }
    text
}

/// CLUSTER INFO: the fields Redis clients and exporters read.
fn info(session: &Session, ranges: &[SlotRange]) -> String {
    let view = session.cluster().view();
    let served: usize = ranges
        .iter()
        .filter(|range| !reachable(range).is_empty())
        .map(|range| range.slots.len())
        .sum();
    let state = if served == usize::from(SLOTS) {
        "ok"
    } else {
        "fail"
    };
    let masters = view.list.members.len();
    format!(
        "cluster_state:{state}\r\ncluster_slots_assigned:{SLOTS}\r\ncluster_slots_ok:{served}\r\n\
         cluster_slots_pfail:0\r\ncluster_slots_fail:{}\r\ncluster_known_nodes:{masters}\r\n\
         cluster_size:{masters}\r\ncluster_current_epoch:{epoch}\r\ncluster_my_epoch:{epoch}\r\n",
        usize::from(SLOTS) - served,
        epoch = view.epoch(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_are_40_hex_digits_and_stable() {
        let id = node_id("demo-0");
        assert_eq!(id.len(), 40);
        assert!(id.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(id, node_id("demo-0"));
        assert_ne!(id, node_id("demo-1"));
    }
}
