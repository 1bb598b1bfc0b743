//! Drain: on SIGTERM, a member hands off what would otherwise be lost with it.
//!
//! A restart is not a membership change: the member stays in the list and keeps its
//! partitions. At RF >= 2 its co-owners hold copies, and its startup sync pulls them
//! back. A partition whose last live copy is here would be lost with the process: one
//! it alone owns (RF=1), or one whose other owners are down or still syncing when the
//! drain starts (RF >= 2 with the other replica gone). Drain pushes each, as hinted
//! records, to the partition's best-ranked member that answers (where it would live
//! without this node), and fences writes to them first. The restarted node's startup sync pulls from every member,
//! gets the hints back, and releases them, so the holder drops them.
//!
//! A departing node owns nothing but may still hold partitions it is handing off in a
//! scale-down; on SIGTERM it pushes them to their owners rather than take them along.

use std::collections::BTreeSet;

use super::Cluster;
use super::chunk::{CHUNK_BYTES, CHUNK_RECORDS, chunk_charge, reserve_chunk};
use super::membership::Member;
use super::placement::best_ranked;
use super::wire::proto;
use crate::metrics::PeerMethod;

/// What a drain did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Drained {
    pub partitions: usize,
    pub records: u64,
    /// Partitions that could not be handed off (holder unreachable or refused).
    pub failed: usize,
}

impl Cluster {
    /// Pushes what would be lost with this process. A member pushes every partition
    /// whose last live copy is here: one it alone owns, or one whose other owners do not
    /// answer (or have not synced) right now. Each goes to its best-ranked member that
    /// answers. A departing (or absent) node owns nothing, so whatever it still holds is
    /// a hand-off in progress: each such partition goes to its first owner.
    pub async fn drain(&self) -> Drained {
        let view = self.view();
        let self_id = self.inner.identity.node_id.as_str();
        let alive: BTreeSet<String> = self
            .poll_members(&self.routing())
            .await
            .into_iter()
            .filter(|member| member.synced_epoch > 0)
            .map(|member| member.id)
            .collect();
        let last_copies: BTreeSet<u32> = view
            .owned()
            .into_iter()
            .filter(|&p| {
                !view
                    .owners(p)
                    .any(|o| o.id != self_id && alive.contains(&o.id))
            })
            .collect();
        // Fence first: a write that reached a partition after its hand-off started
        // would be lost with the process. Closing the fence waits out writes in flight.
        self.inner.fence.close(last_copies.clone());
        let mut drained = Drained::default();
        for partition in self.inner.store.partitions_holding_data() {
            let holder = match view.self_index {
                Some(_) => {
                    if !last_copies.contains(&partition) {
                        continue;
                    }
                    let ids = || view.list.members.iter().map(|m| m.id.as_str());
                    best_ranked(ids(), partition, |id| id != self_id && alive.contains(id))
                        .or_else(|| best_ranked(ids(), partition, |id| id != self_id))
                        .and_then(|id| view.list.members.iter().find(|m| m.id == id))
                }
                None => view.owners(partition).next(),
            };
            let Some(holder) = holder else {
                drained.failed += 1;
                continue;
            };
            match self.hand_off(partition, holder).await {
                Ok(records) => {
                    drained.partitions += 1;
                    drained.records += records;
                }
                Err(status) => {
                    drained.failed += 1;
                    tracing::warn!(partition, holder = %holder.id, error = %status.message(), "could not hand off partition");
                }
            }
        }
        drained
    }

    async fn hand_off(&self, partition: u32, holder: &Member) -> Result<u64, tonic::Status> {
        let peers = self.inner.replicator.peers();
        let mut client = peers.client(holder)?;
        let mut cursor = None;
        let mut records = 0;
        loop {
            let (chunk, next) = self.inner.store.partition_chunk(
                partition,
                None,
                cursor,
                CHUNK_RECORDS,
                CHUNK_BYTES,
            );
            if !chunk.is_empty() {
                records += chunk.len() as u64;
                let chunk: Vec<proto::Record> =
                    chunk.into_iter().map(proto::Record::from).collect();
                // Charged until the holder has answered: the request holds the chunk
                // until it is sent.
                let _reserved = reserve_chunk(&self.inner.store, chunk_charge(&chunk), || {
                    format!("partition {partition} for a hand-off to '{}'", holder.id)
                })?;
                let request = proto::ApplyRequest {
                    sender: Some(self.sender()),
                    records: chunk,
                    hint: true,
                    request_id: String::new(),
                };
                peers
                    .timed(&holder.id, PeerMethod::Apply, client.apply(request))
                    .await?;
            }
            match next {
                Some(next) => cursor = Some(next),
                None => return Ok(records),
            }
        }
    }

    /// Gives back, after this node's startup sync, the hints it holds for partitions it
    /// does not own: each goes to every owner, and is dropped here once all of them took
    /// it. Normally an owner's startup sync pulls hints and releases them; but when every
    /// member restarts at once with its data dir (a drain had pushed hints here while an
    /// owner was already down), each owner found this node "syncing" and pulled nothing,
    /// so without this the hints would stay here, the node never settled, and the cluster
    /// never became Available (the e2e's whole-cluster restart caught it). Tries again
    /// every 2 s while an owner does not answer, for at most an hour; not during a move
    /// (the rebalancer owns partition movement then), and not on a departing node (its
    /// partitions are a hand-off in progress, which the move completes).
    pub async fn return_held_hints(&self) {
        for _ in 0..1800 {
            let routing = self.routing();
            let view = &routing.next;
            let self_id = self.inner.identity.node_id.as_str();
            if routing.moving() || view.self_index.is_none() {
                tokio::time::sleep(std::time::Duration::from_secs(2)).await;
                continue;
            }
            let held: Vec<u32> = self
                .inner
                .store
                .partitions_holding_data()
                .into_iter()
                .filter(|&p| !view.is_owner(self_id, p))
                .collect();
            if held.is_empty() {
                return;
            }
            for partition in held {
                let mut returned = true;
                for owner in view.owners(partition) {
                    if let Err(status) = self.hand_off(partition, owner).await {
                        returned = false;
                        tracing::debug!(partition, owner = %owner.id, error = %status.message(), "could not give back held hints yet");
                    }
                }
                // Still not an owner, and no move began meanwhile: the owners hold it.
                let now = self.routing();
                if returned && !now.moving() && !now.next.is_owner(self_id, partition) {
                    self.inner.store.drop_partition(partition);
                    tracing::info!(partition, "gave held hints back to the owners");
                }
            }
            tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        }
    }

    /// Tells `holder` that this node now holds `partition`, so hints can go.
    pub(super) async fn send_release(&self, holder: &Member, partition: u32) {
        let peers = self.inner.replicator.peers();
        if let Ok(mut client) = peers.client(holder) {
            let request = proto::ReleaseRequest {
                sender: Some(self.sender()),
                partition,
            };
            let released = peers.timed(&holder.id, PeerMethod::Release, client.release(request));
            if let Err(status) = released.await {
                tracing::debug!(partition, holder = %holder.id, error = %status.message(), "release failed");
            }
        }
    }
}
