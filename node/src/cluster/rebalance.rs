//! Rebalancing: moving partitions to their new owners when membership changes.
//!
//! When a new epoch arrives, each node works through three steps, checking again every
//! 200 ms (and at once on a newer epoch):
//! 1. Pull every partition it gains (owned in `next`, not in `prev`) from a quorum of the
//!    partition's `prev` owners, as bounded chunked streams.
//! 2. Once every member reports the new epoch (so no coordinator still writes to the old
//!    owners only), pull again the digest buckets that differ from those `prev` owners.
//!    That catches writes made by coordinators still on the old epoch during step 1. Then
//!    report `synced_epoch` = the new epoch.
//! 3. Once every member (old and new) reports `synced_epoch` >= the new epoch, the move is
//!    complete: `prev` becomes `next`, and the node drops the partitions it no longer owns.
//!
//! No old owner drops a partition before every new owner holds it, since completion needs
//! every member's report. A member that cannot be reached holds the move open, and the
//! old owners keep serving. A newer epoch arriving mid-move keeps `prev` (its owners still
//! hold everything) and restarts the steps against the newer `next`.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::task::JoinSet;

use super::membership::Member;
use super::router::Routing;
use super::wire::proto;
use super::{Cluster, Consistency};
use crate::metrics::PeerMethod;

/// The move towards one epoch, as `GET /v1/cluster` reports it.
pub use kache_api::report::Progress;

const POLL: Duration = Duration::from_millis(200);

impl Cluster {
    /// Drives every membership move until the returned task is aborted.
    pub fn spawn_rebalancer(&self) -> tokio::task::JoinHandle<()> {
        let cluster = self.clone();
        let mut changes = self.inner.router.changes();
        tokio::spawn(async move {
            loop {
                let routing = cluster.routing();
                if routing.moving() {
                    if let Err(waiting) = cluster.advance(&routing).await {
                        cluster
                            .inner
                            .sync
                            .update_progress(|progress| progress.waiting_for = Some(waiting));
                    }
                    tokio::select! {
                        _ = changes.changed() => {}
                        () = tokio::time::sleep(POLL) => {}
                    }
                } else if changes.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    /// One step of the move towards `routing.next`. `Err` says what it waits for.
    async fn advance(&self, routing: &Routing) -> Result<(), String> {
        let target = routing.next.epoch();
        let prev_owned: BTreeSet<u32> = routing.prev.owned().into_iter().collect();
        let gained: Vec<u32> = routing
            .next
            .owned()
            .into_iter()
            .filter(|p| !prev_owned.contains(p))
            .collect();
        let started_at_ms = self.inner.store.now_ms();
        let done = self.inner.sync.update_progress(|progress| {
            if progress.to_epoch != target {
                *progress = Progress {
                    from_epoch: routing.prev.epoch(),
                    to_epoch: target,
                    started_at_ms,
                    partitions_total: gained.len(),
                    ..Progress::default()
                };
                tracing::info!(
                    from = routing.prev.epoch(),
                    to = target,
                    gained = gained.len(),
                    "rebalancing"
                );
            }
            progress.partitions_done
        });

        // 1. Pull what this node gains.
        for &partition in &gained[done..] {
            if self.view().epoch() != target {
                return Err("superseded by a newer epoch".into());
            }
            let (records, bytes) = self
                .pull_from_prev_owners(routing, partition, false)
                .await?;
            self.inner.sync.update_progress(|progress| {
                progress.partitions_done += 1;
                progress.records_moved += records;
                progress.bytes_moved += bytes;
            });
        }

        // 2. Catch up once nobody writes by the old epoch any more, then report synced.
        let members = self.poll_members(routing).await;
        if self.inner.sync.caught_up_to() < target {
            if let Some(behind) = members.iter().find(|m| m.epoch < target) {
                return Err(format!(
                    "member {} has not learned epoch {target}",
                    behind.id
                ));
            }
            for &partition in &gained {
                self.pull_from_prev_owners(routing, partition, true).await?;
            }
            self.inner.sync.caught_up(target);
            tracing::info!(epoch = target, "holding every partition of the new epoch");
        }

        // 3. Complete once every member holds its new partitions.
        if !self.is_synced() {
            return Err("this node's startup sync".into());
        }
        if let Some(behind) = members.iter().find(|m| m.synced_epoch < target) {
            return Err(format!("member {} to hold epoch {target}", behind.id));
        }
        self.complete(target);
        Ok(())
    }

    /// Streams `partition` from its `prev` owners: whole from one of them, or with
    /// `catch_up` only the differing digest buckets from a quorum of them (with
    /// W = quorum, any single old owner may lack a write the others acknowledged).
    async fn pull_from_prev_owners(
        &self,
        routing: &Routing,
        partition: u32,
        catch_up: bool,
    ) -> Result<(u64, u64), String> {
        // Every other old owner, reachable or not: one without a known address fails
        // like a failed call and counts towards `failures`.
        let sources: Vec<&Member> = routing
            .prev
            .placement
            .owners(partition)
            .iter()
            .filter(|&&owner| Some(owner) != routing.prev.self_index)
            .map(|&owner| &routing.prev.list.members[usize::from(owner)])
            .collect();
        // The whole partition needs one source: the catch-up (which runs for every gained
        // partition before this node reports synced) then compares digests with a quorum.
        let owners = routing.prev.placement.owners(partition).len();
        let needed = if catch_up {
            Consistency::Quorum.required(owners).min(sources.len())
        } else {
            1.min(sources.len())
        };
        let (pulled_before, bytes_before) = self.inner.sync.pulled_totals();
        let mut answered = 0;
        let mut failures = Vec::new();
        for member in &sources {
            if answered >= needed {
                break;
            }
            let result = if catch_up {
                self.repair_partition_from(member, partition).await
            } else {
                self.pull(member, partition, Vec::new())
                    .await
                    .map(|pulled| pulled.stored)
            };
            match result {
                Ok(_) => answered += 1,
                Err(status) => {
                    self.peer_failed(&member.id, &status);
                    self.inner.sync.record_failure();
                    failures.push(format!("{}: {}", member.id, status.message()));
                }
            }
        }
        if answered < needed {
            return Err(format!(
                "partition {partition} from its previous owners ({})",
                failures.join("; ")
            ));
        }
        let (pulled_after, bytes_after) = self.inner.sync.pulled_totals();
        Ok((pulled_after - pulled_before, bytes_after - bytes_before))
    }

    /// The epoch and synced epoch of every other member of `prev` and `next`. A member
    /// that does not answer reports epoch 0, which holds the move open. A member removed
    /// in `next` (departing or gone) is still polled through `prev`: it is an old owner,
    /// and drops what it hands off only once the move completes.
    pub(super) async fn poll_members(&self, routing: &Routing) -> Vec<MemberStatus> {
        let mut members: HashMap<&str, &Member> = HashMap::new();
        for view in [&routing.prev, &routing.next] {
            for member in &view.list.members {
                if member.id != self.inner.identity.node_id {
                    members.entry(member.id.as_str()).or_insert(member);
                }
            }
        }
        let mut calls = JoinSet::new();
        for (id, member) in members {
            let id = id.to_owned();
            let pool = self.inner.replicator.peers().clone();
            let client = pool.client(member);
            let request = proto::HelloRequest {
                sender: Some(self.sender()),
            };
            let peers = self.clone();
            calls.spawn(async move {
                let reply = match client {
                    Ok(mut client) => {
                        let hello = client.hello(request);
                        pool.timed(&id, PeerMethod::Hello, hello).await
                    }
                    Err(status) => Err(status),
                };
                let sender = match reply {
                    Ok(reply) => {
                        let sender = reply.into_inner().sender;
                        if let Some(sender) = &sender {
                            peers.observe_clock(&id, sender.wall_ms);
                        }
                        sender
                    }
                    Err(status) => {
                        peers.peer_failed(&id, &status);
                        None
                    }
                };
                MemberStatus {
                    id,
                    epoch: sender.as_ref().map_or(0, |s| s.epoch),
                    synced_epoch: sender.as_ref().map_or(0, |s| s.synced_epoch),
                }
            });
        }
        let mut statuses = Vec::new();
        while let Some(joined) = calls.join_next().await {
            if let Ok(status) = joined {
                statuses.push(status);
            }
        }
        statuses
    }

    /// Ends the move to `target`: `prev` becomes `next`, and partitions this node no
    /// longer owns are dropped.
    fn complete(&self, target: u64) {
        let Some(next) = self.inner.router.complete(target) else {
            return;
        };
        let owned: BTreeSet<u32> = next.owned().into_iter().collect();
        let mut dropped = 0;
        for partition in self.inner.store.partitions_holding_data() {
            if !owned.contains(&partition) {
                self.inner.store.drop_partition(partition);
                dropped += 1;
            }
        }
        let completed_at_ms = self.inner.store.now_ms();
        self.inner.sync.update_progress(|progress| {
            progress.completed_at_ms = Some(completed_at_ms);
            progress.partitions_dropped = dropped;
            progress.waiting_for = None;
        });
        tracing::info!(epoch = target, dropped, "rebalance complete");
        self.inner.router.announce(target);
    }
}

#[derive(Debug)]
pub(super) struct MemberStatus {
    pub id: String,
    pub epoch: u64,
    pub synced_epoch: u64,
}
