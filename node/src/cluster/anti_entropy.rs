//! Anti-entropy: replicas of a partition compare digests and pull only the differences.
//!
//! Every interval, a node walks the partitions it owns. For each co-owner it fetches the
//! partition's digest (64 bucket sums), compares it with its own, and streams just the
//! records of the buckets that differ, applying them with last-writer-wins. Every owner
//! does the same, so a replica that missed writes (crashed, frozen, partitioned) is
//! repaired from the others, and anything it alone holds flows back to them. A failed peer
//! call skips that pair for this round and is counted; it never looks like "no data".

use std::time::Duration;

use tonic::Status;

use super::Cluster;
use super::chunk::{STREAM_IDLE, chunk_charge, record_charge, reserve_chunk};
use super::membership::Member;
use super::wire::{is_syncing, proto};
use crate::metrics::PeerMethod;
use crate::store::{Applied, BufferGuard, DIGEST_BUCKETS, Record, RecordError};

impl Cluster {
    /// Runs a round every `interval` until the returned task is aborted. From now on a
    /// tombstone is removed only once every co-owner agreed on its partition after it
    /// expired (see [`Cluster::anti_entropy_round`]).
    pub fn spawn_anti_entropy(&self, interval: Duration) -> tokio::task::JoinHandle<()> {
        self.inner.store.hold_tombstones();
        let cluster = self.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                cluster.anti_entropy_round().await;
            }
        })
    }

    /// One pass over every partition this node owns. Returns the records repaired here.
    ///
    /// Deletes that stay deleted: when every co-owner of a partition answers with a
    /// digest equal to this node's, none of them holds a live copy of a key whose
    /// tombstone has expired here (digests leave expired tombstones out, and count every
    /// live version). Only then may this node drop the tombstones that expired before
    /// the comparison began (less the clock bound). A co-owner that is paused, cut off or
    /// down keeps them all, however long it is away; when it is back, its older copies
    /// lose to the tombstones still held, which it pulls in turn.
    pub async fn anti_entropy_round(&self) -> u64 {
        let view = self.view();
        let Some(me) = view.self_index else {
            return 0;
        };
        if self.routing().moving() {
            // The rebalancer owns partition movement until the move completes.
            return 0;
        }
        let mut repaired = 0;
        let offset_ms = crate::clock::millis(self.inner.store.limits().max_clock_offset);
        for partition in view.placement.owned_by(me).collect::<Vec<_>>() {
            let started = self.inner.store.now_ms();
            let mut agreed = true;
            for &owner in view.placement.owners(partition) {
                if owner == me {
                    continue;
                }
                let member = &view.list.members[usize::from(owner)];
                match self.exchange_digests(member, partition).await {
                    Ok(exchange) => {
                        repaired += exchange.stored;
                        agreed &= exchange.agreed;
                    }
                    Err(status) => {
                        agreed = false;
                        self.peer_failed(&member.id, &status);
                        self.inner.sync.record_failure();
                        tracing::debug!(
                            peer = %member.id,
                            partition,
                            error = %status.message(),
                            "anti-entropy exchange failed; retried next round"
                        );
                    }
                }
            }
            if agreed {
                self.inner
                    .store
                    .release_tombstones(partition, started.saturating_sub(offset_ms));
            }
        }
        self.inner.sync.record_round();
        if repaired > 0 {
            tracing::info!(repaired, "anti-entropy repaired records");
        }
        repaired
    }

    /// Waits for a member list, then pulls every partition this node owns from every
    /// other member and every departing member, so that a node that (re)started empty
    /// holds its partitions before it reports ready. Every one of them, not just
    /// co-owners: during or after a move, a partition's data may sit on any of them, and
    /// during a scale-down on the departing members that have not handed off yet. A
    /// member still syncing itself holds nothing to give and is skipped; an unreachable
    /// one might hold data, so the partition is retried (with backoff, against the
    /// current view) until it answers or leaves the list.
    ///
    /// The partitions no source held a live copy of are recorded: when this start is a
    /// restart (the operator tells, by the incarnation), their data is lost.
    pub async fn initial_sync(&self) {
        self.wait_for_list().await;
        self.join_move_in_progress().await;
        let routing = self.routing();
        let view = routing.next.clone();
        self.inner.sync.start_startup();
        let mut without_copy = Vec::new();
        // In the middle of a move, what it owns in either list: as an old owner it counts
        // as holding its old partitions completely until the move completes.
        let mut partitions = view.owned();
        if routing.moving() {
            partitions.extend(routing.prev.owned());
            partitions.sort_unstable();
            partitions.dedup();
        }
        for partition in partitions {
            if !self.sync_partition(partition).await {
                without_copy.push(partition);
            }
        }
        if !without_copy.is_empty() {
            tracing::warn!(
                partitions = without_copy.len(),
                "startup sync found no live copy of some owned partitions: if this node held data before it restarted, that data is lost"
            );
        }
        self.inner.sync.finish_startup(view.epoch(), without_copy);
        tracing::info!(
            epoch = view.epoch(),
            "startup sync complete: holding every owned partition"
        );
    }

    /// Asks the other members whether they are moving to this node's epoch, and if one
    /// is, routes by the list it moves from too (see
    /// [`super::router::Router::settle_first_list`]). A member that does not answer
    /// within a second is skipped.
    async fn join_move_in_progress(&self) {
        let moving_from = self.moving_from().await;
        self.inner.router.settle_first_list(moving_from);
    }

    /// The list a peer on this node's epoch is moving from, if one is.
    async fn moving_from(&self) -> Option<super::membership::MemberList> {
        if !self.inner.router.unsettled() {
            return None;
        }
        let view = self.view();
        for member in sync_sources(&view.list, &self.inner.identity.node_id) {
            let peers = self.inner.replicator.peers();
            let Ok(mut client) = peers.client(member) else {
                continue;
            };
            let request = proto::HelloRequest {
                sender: Some(self.sender()),
            };
            let hello = async {
                tokio::time::timeout(Duration::from_secs(1), client.hello(request))
                    .await
                    .map_err(|_| Status::deadline_exceeded("no answer to Hello within 1 s"))?
            };
            let Ok(reply) = peers.timed(&member.id, PeerMethod::Hello, hello).await else {
                continue;
            };
            let reply = reply.into_inner();
            let same_epoch = reply
                .sender
                .as_ref()
                .is_some_and(|s| s.epoch == view.epoch());
            if !same_epoch || reply.prev_list.is_empty() {
                continue;
            }
            match super::membership::MemberList::from_yaml(&reply.prev_list) {
                Ok(prev) => return Some(prev),
                Err(err) => {
                    tracing::warn!(peer = %member.id, error = %err, "a peer sent an unreadable list");
                }
            }
        }
        None
    }

    /// Pulls `partition` from every source (see [`Cluster::initial_sync`]). Returns
    /// whether some source held a live copy of it: an owner that is not syncing itself
    /// (in either view of a move), or any source that streamed records of it.
    async fn sync_partition(&self, partition: u32) -> bool {
        let mut answered: Vec<String> = Vec::new();
        let mut copy_found = false;
        let mut backoff = Duration::from_millis(100);
        loop {
            let routing = self.routing();
            let current = &routing.next;
            let mut waiting = false;
            for member in sync_sources(&current.list, &self.inner.identity.node_id) {
                if answered.contains(&member.id) {
                    continue;
                }
                match self.pull(member, partition, Vec::new()).await {
                    Ok(pulled) => {
                        answered.push(member.id.clone());
                        let owner = current.is_owner(&member.id, partition)
                            || routing.prev.is_owner(&member.id, partition);
                        copy_found |= owner || pulled.streamed > 0;
                        // It gave us data it does not own (a drained node's hand-off,
                        // a departing member's partition): this node holds it now, so
                        // the holder may drop it (it keeps what it still owns, in
                        // either view of a move).
                        if pulled.streamed > 0 && !current.is_owner(&member.id, partition) {
                            self.send_release(member, partition).await;
                        }
                    }
                    Err(status) if is_syncing(&status) => answered.push(member.id.clone()),
                    Err(status) => {
                        waiting = true;
                        self.peer_failed(&member.id, &status);
                        self.inner.sync.record_failure();
                        tracing::debug!(peer = %member.id, partition, error = %status.message(), "startup sync pull failed");
                    }
                }
            }
            if !waiting {
                return copy_found || self.loaded_locally(partition);
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Pulls from `member` the records of `partition` in every digest bucket that differs
    /// from this node's. Returns how many were newer than what this node held.
    pub async fn repair_partition_from(
        &self,
        member: &Member,
        partition: u32,
    ) -> Result<u64, Status> {
        Ok(self.exchange_digests(member, partition).await?.stored)
    }

    /// Compares `partition`'s digest with `member`'s and pulls the buckets that differ.
    async fn exchange_digests(&self, member: &Member, partition: u32) -> Result<Exchange, Status> {
        let peers = self.inner.replicator.peers();
        let mut client = peers.client(member)?;
        let request = proto::DigestRequest {
            sender: Some(self.sender()),
            partition,
        };
        let digest = client.partition_digest(request);
        let remote = peers
            .timed(&member.id, PeerMethod::PartitionDigest, digest)
            .await?
            .into_inner()
            .buckets;
        if remote.len() != DIGEST_BUCKETS {
            return Err(Status::internal(format!(
                "peer sent a digest of {} buckets, expected {DIGEST_BUCKETS}",
                remote.len()
            )));
        }
        let local = self.inner.store.partition_digest(partition);
        let differing: Vec<u32> = (0..DIGEST_BUCKETS)
            .filter(|&b| local[b] != remote[b])
            .filter_map(|b| u32::try_from(b).ok())
            .collect();
        if differing.is_empty() {
            return Ok(Exchange {
                stored: 0,
                agreed: true,
            });
        }
        let stored = self.pull(member, partition, differing).await?.stored;
        Ok(Exchange {
            stored,
            agreed: false,
        })
    }

    /// Streams `partition` (only `buckets`, or all when empty) from `member` and applies it.
    /// Each received chunk is charged against `--max-memory` until its records are
    /// applied; one that does not fit fails the pull with `RESOURCE_EXHAUSTED` (what it
    /// applied so far stays: records are idempotent), and the caller retries. So does a
    /// source that sends nothing for [`STREAM_IDLE`] (`DEADLINE_EXCEEDED`): a half-open
    /// peer fails the pull instead of stalling it forever.
    pub(crate) async fn pull(
        &self,
        member: &Member,
        partition: u32,
        buckets: Vec<u32>,
    ) -> Result<Pulled, Status> {
        let pull = self.pull_untimed(member, partition, buckets);
        let peers = self.inner.replicator.peers();
        peers
            .timed(&member.id, PeerMethod::StreamPartition, pull)
            .await
    }

    /// [`Self::pull`], untimed: the whole stream is one call for the metrics, including
    /// a pull this node cut short (no room for a chunk: `RESOURCE_EXHAUSTED`).
    async fn pull_untimed(
        &self,
        member: &Member,
        partition: u32,
        buckets: Vec<u32>,
    ) -> Result<Pulled, Status> {
        let mut client = self.inner.replicator.peers().client(member)?;
        let mut stream = client
            .stream_partition(proto::StreamRequest {
                sender: Some(self.sender()),
                partition,
                buckets,
            })
            .await?
            .into_inner();
        let mut pulled = Pulled::default();
        let idle = || {
            Status::deadline_exceeded(format!(
                "partition {partition} from '{}': no chunk for {STREAM_IDLE:?}",
                member.id
            ))
        };
        while let Some(chunk) = tokio::time::timeout(STREAM_IDLE, stream.message())
            .await
            .map_err(|_| idle())??
        {
            self.apply_chunk(&member.id, partition, chunk, &mut pulled)?;
        }
        if pulled.stored > 0 {
            // With a data dir, what was pulled is in the log before this node says it
            // holds the partition (the source may drop its copy then).
            self.inner
                .store
                .flushed()
                .await
                .map_err(|err| Status::unavailable(err.to_string()))?;
        }
        Ok(pulled)
    }

    /// Applies one received chunk of `partition` from `from`, charged against the bound
    /// while it is held: the whole chunk up front, released record by record as each is
    /// stored (as an entry, charged on its own) and dropped. Only while this node owns
    /// the partition (see [`super::router::Router::if_holder`]); otherwise the pull is
    /// abandoned with `ABORTED`.
    fn apply_chunk(
        &self,
        from: &str,
        partition: u32,
        chunk: proto::Chunk,
        pulled: &mut Pulled,
    ) -> Result<(), Status> {
        let mut reserved = reserve_chunk(&self.inner.store, chunk_charge(&chunk.records), || {
            format!("partition {partition} pulled from '{from}'")
        })?;
        self.inner
            .router
            .if_holder(partition, || {
                self.apply_records(from, partition, chunk.records, &mut reserved, pulled)
            })
            .unwrap_or_else(|| {
                Err(Status::aborted(format!(
                    "partition {partition} is no longer this node's; the pull from '{from}' is abandoned"
                )))
            })
    }

    fn apply_records(
        &self,
        from: &str,
        partition: u32,
        records: Vec<proto::Record>,
        reserved: &mut BufferGuard,
        pulled: &mut Pulled,
    ) -> Result<(), Status> {
        for record in records {
            pulled.streamed += 1;
            let charge = record_charge(&record);
            let record = Record::from(record);
            if let Err(err) = self.inner.store.check_record(&record) {
                // Held to the limits a client's write meets; one bad record is skipped
                // (and a version beyond the clock bound counted), the rest still apply.
                if matches!(err, RecordError::VersionAhead { .. }) {
                    self.refused_version(from, &err);
                } else {
                    tracing::warn!(peer = %from, partition, error = %err, "skipped an invalid record");
                }
                reserved.release(charge);
                continue;
            }
            let bytes = record.key.len() + record.value.len();
            let newer = match self.inner.store.apply(&record) {
                Ok(applied) => applied == Applied::Stored,
                Err(err) => {
                    self.inner.sync.record_pulled(bytes, false);
                    return Err(Status::resource_exhausted(err.to_string()));
                }
            };
            self.inner.sync.record_pulled(bytes, newer);
            pulled.stored += u64::from(newer);
            drop(record);
            reserved.release(charge);
        }
        Ok(())
    }
}

/// What one digest exchange found and did.
#[derive(Debug, Clone, Copy)]
struct Exchange {
    /// Records pulled that were newer than this node's.
    stored: u64,
    /// The digests were equal: the two replicas held the same versions.
    agreed: bool,
}

/// What one partition stream brought.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pulled {
    /// Records received.
    pub streamed: u64,
    /// Of those, newer than what this node held.
    pub stored: u64,
}

/// Whom a starting node pulls its partitions from: every member and every departing
/// member of `list` but itself.
fn sync_sources<'a>(
    list: &'a super::membership::MemberList,
    node_id: &'a str,
) -> impl Iterator<Item = &'a Member> {
    list.holders().filter(move |member| member.id != node_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::membership::{ListRules, MemberList};

    #[test]
    fn a_starting_node_pulls_from_members_and_departing_members_but_itself() {
        let list = MemberList::parse(
            "epoch: 4\npartitions: 16\nreplicationFactor: 1\n\
             members: [{id: demo-0}, {id: demo-1}]\ndeparting: [{id: demo-2}, {id: demo-3}]\n",
            &ListRules {
                partitions: 16,
                addresses_required: false,
            },
        )
        .expect("valid");
        let ids = |node: &str| -> Vec<String> {
            sync_sources(&list, node).map(|m| m.id.clone()).collect()
        };
        assert_eq!(ids("demo-0"), ["demo-1", "demo-2", "demo-3"]);
        // A departing node that restarts pulls nothing it owns (it owns nothing), but
        // the list it would use still excludes itself.
        assert_eq!(ids("demo-2"), ["demo-0", "demo-1", "demo-3"]);
        assert_eq!(ids("new-pod"), ["demo-0", "demo-1", "demo-2", "demo-3"]);
    }
}
