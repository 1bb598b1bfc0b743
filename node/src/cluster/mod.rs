//! Clustering: membership, placement, and routing every request to the key's owners.
//!
//! Layout, ground floor first:
//! - [`wire`]: the generated peer-protocol types, their conversions, the protocol version.
//! - [`membership`]: the epoch-numbered member list and its sources (file, flag,
//!   ConfigMap). [`discovery`]: how to reach a member (static, EndpointSlices, DNS).
//!   [`placement`]: rendezvous hashing of partitions onto members.
//! - [`peer`]: the peer protocol's server and its client pool.
//! - [`chunk`]: partition chunks in flight, charged against `--max-memory`.
//!
//! The parts of a [`Cluster`], each owning its state and its methods:
//! - [`router`]: the membership views (`prev`, `next`) and every "who holds what" answer.
//! - [`fence`]: the drain fence that keeps writes out of partitions being handed off.
//! - [`sync_state`]: the node's lifecycle, the epoch it fully holds, sync counters, the
//!   move's progress.
//! - [`replicator`]: the peer pool and the one fan-out reads, writes and repair use.
//!
//! And what runs on them: [`rebalance`] (moving partitions when membership changes),
//! [`anti_entropy`] (startup sync and digest repair), [`drain`] (the hand-off on
//! SIGTERM), [`report`] (`GET /v1/cluster`).
//!
//! Any node accepts any request. A [`Cluster`] finds the key's owners and reads from R of
//! them or writes to all of them, answering once W have acknowledged. Writes carry a
//! version minted by the store's clock (hybrid logical clock + node), and replicas keep
//! the newest version of each key (last writer wins, tombstones included), so retries,
//! duplicates, reordering and repeated partition streams are harmless. A single node is a
//! cluster of one, whose requests never leave the process.
//!
//! Membership moves: while `prev` and `next` differ, writes go to the owners in both and
//! need W acknowledgements from each group, and reads count only answers from replicas
//! that hold the partition completely. The move completes when every member reports that
//! it holds its `next` partitions; then `prev` becomes `next` and old owners drop what
//! they no longer own.

pub mod anti_entropy;
pub mod chunk;
pub mod clock_watch;
mod consistency;
pub mod discovery;
pub mod drain;
pub mod fence;
pub mod membership;
pub mod peer;
pub mod placement;
pub mod rebalance;
pub mod replicator;
pub mod report;
pub mod router;
pub mod sync_state;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::lifecycle::{Lifecycle, Phase};
use crate::store::{Applied, Precondition, Record, Store, StoreError, Value, Written};
use clock_watch::{ClockReport, ClockWatch};
pub use consistency::Consistency;
use discovery::Discovery;
use fence::DrainFence;
pub use kache_api::report::{ClusterReport, Role};
use membership::{MemberList, ReplicationFactor};
use peer::PeerClients;
use replicator::{ReadTally, Replicator, Rest, WriteTally};
pub use router::View;
use router::{Replica, Router, Routing, Targets};
use sync_state::SyncState;
use wire::{Identity, proto};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{acked} of the {needed} replicas needed answered: {detail}")]
    Unavailable {
        needed: usize,
        acked: usize,
        detail: String,
    },
    /// Too few replicas took the write because they hold a newer version (a clock ahead
    /// of this node's, or a concurrent write). Retried with a newer version; after the
    /// last attempt the write fails with this.
    #[error(
        "replicas hold a newer version of the key (hlc {newer_hlc:016x}); the write was not acknowledged"
    )]
    Superseded { newer_hlc: u64 },
    #[error(
        "this node's clock is {offset_ms} ms off most of its peers', beyond the {max_ms} ms bound (--max-clock-offset); it takes no writes until the clocks agree"
    )]
    ClockOutOfBounds { offset_ms: i64, max_ms: u64 },
}

/// How often a write is tried with a fresh version when replicas hold a newer one. The
/// first refusal folds the newer version into this node's clock, so the second attempt
/// normally wins; a third covers a concurrent writer racing it.
const WRITE_ATTEMPTS: u32 = 3;

#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub read: Consistency,
    pub write: Consistency,
}

/// A cheap handle on this node's part in the cluster: a facade over its parts, as
/// mini-redis's `Db` hides `Shared`.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    identity: Identity,
    router: Router,
    fence: DrainFence,
    sync: SyncState,
    replicator: Replicator,
    clock: ClockWatch,
    defaults: Defaults,
}

impl Cluster {
    /// A cluster of this node alone: every partition is local, nothing leaves the process.
    pub fn single(store: Store, identity: Identity, defaults: Defaults) -> Self {
        let list = MemberList {
            epoch: 0,
            partitions: store.config().partitions,
            replication_factor: ReplicationFactor::Count(1),
            members: vec![membership::Member {
                id: identity.node_id.clone(),
                address: None,
            }],
            departing: Vec::new(),
        };
        let cluster = Self::new(store, identity, list, defaults, Discovery::from_list());
        // Alone, it owns everything and has nobody to sync from.
        cluster.lifecycle().advance(Phase::Ready);
        cluster
    }

    /// A node following `list` (which may be [`MemberList::none`] until a source
    /// delivers one), reaching peers through `discovery`. It is Starting (nobody's
    /// source, not ready) until [`Cluster::initial_sync`] has pulled what it owns.
    pub fn new(
        store: Store,
        identity: Identity,
        list: MemberList,
        defaults: Defaults,
        discovery: Discovery,
    ) -> Self {
        let epoch = list.epoch;
        Self {
            inner: Arc::new(Inner {
                router: Router::new(identity.node_id.clone(), list),
                sync: SyncState::new(Lifecycle::new(Phase::Starting), epoch),
                fence: DrainFence::default(),
                replicator: Replicator::new(PeerClients::new(discovery)),
                clock: ClockWatch::new(store.limits().max_clock_offset),
                store,
                identity,
                defaults,
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The node's lifecycle: the one place its phase lives.
    pub fn lifecycle(&self) -> &Lifecycle {
        self.inner.sync.lifecycle()
    }

    /// The newest view (the epoch in force).
    pub fn view(&self) -> Arc<View> {
        self.inner.router.view()
    }

    pub(crate) fn routing(&self) -> Routing {
        self.inner.router.routing()
    }

    /// Whether the startup sync has finished.
    pub fn is_synced(&self) -> bool {
        self.inner.sync.is_synced()
    }

    /// Installs a member list if its epoch is newer (see [`Router::install`]).
    pub fn install(&self, list: MemberList) -> bool {
        self.inner.router.install(list)
    }

    /// Whether this node has received a member list (or is a cluster of one).
    pub fn has_list(&self) -> bool {
        self.view().list.has_members()
    }

    /// Waits until this node has a member list.
    pub async fn wait_for_list(&self) {
        let mut changes = self.inner.router.changes();
        while !self.has_list() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// Installs every list the source publishes, until the source closes.
    pub fn follow(&self, mut lists: watch::Receiver<MemberList>) -> tokio::task::JoinHandle<()> {
        let cluster = self.clone();
        tokio::spawn(async move {
            loop {
                let list = lists.borrow_and_update().clone();
                cluster.install(list);
                if lists.changed().await.is_err() {
                    return;
                }
            }
        })
    }

    /// The newest epoch whose partitions this node fully holds; 0 before its startup sync.
    pub fn synced_epoch(&self) -> u64 {
        self.inner.sync.synced_epoch()
    }

    /// This node as the sender of a peer request.
    pub(crate) fn sender(&self) -> proto::Sender {
        self.inner.identity.sender(
            self.view().epoch(),
            self.synced_epoch(),
            self.inner.store.now_ms(),
        )
    }

    /// Peer `id`'s clock read `wall_ms` just now (a request or an answer said so).
    pub(crate) fn observe_clock(&self, id: &str, wall_ms: u64) {
        self.inner
            .clock
            .observe(id, wall_ms, self.inner.store.now_ms());
    }

    /// A version from `from` was refused for being too far ahead of this node's clock.
    pub(crate) fn refused_version(&self, from: &str, err: &crate::store::RecordError) {
        self.inner.clock.record_refused();
        tracing::warn!(peer = %from, error = %err, "refused a version from beyond the clock bound");
    }

    /// How this node's clock compares with its peers'.
    pub fn clock_report(&self) -> ClockReport {
        self.inner.clock.report()
    }

    /// Writes stop while this node's clock is out of bounds (see [`clock_watch`]).
    pub fn check_clock(&self) -> Result<(), ClusterError> {
        let clock = self.inner.clock.report();
        if clock.in_bounds {
            return Ok(());
        }
        Err(ClusterError::ClockOutOfBounds {
            offset_ms: clock.offset_ms,
            max_ms: clock.max_offset_ms,
        })
    }

    /// A call to peer `id` failed: counted by the caller; here discovery may look again.
    pub(crate) fn peer_failed(&self, id: &str, status: &tonic::Status) {
        self.inner.replicator.peers().failed(id, status);
    }

    /// Whether this node holds `partition` completely, so that "absent" here means absent.
    pub fn holds_completely(&self, partition: u32) -> bool {
        self.inner
            .router
            .holds_completely(partition, self.inner.sync.holding())
    }

    /// Whether this node stores a peer's write for `partition` (see
    /// [`Router::accepts_writes_for`]).
    pub fn accepts_writes_for(&self, partition: u32, sender_epoch: u64) -> bool {
        self.inner
            .router
            .accepts_writes_for(partition, sender_epoch)
    }

    /// Whether a write to `partition` must be refused: a drain started and this node
    /// alone owns it, so the record could miss the hand-off and leave with the process.
    pub fn refuses_writes_while_draining(&self, partition: u32) -> bool {
        self.inner
            .fence
            .refuses(|| self.inner.router.owns_alone(partition))
    }

    /// Runs a local store write to `partition` unless the drain fence refuses it (None).
    pub fn fenced<T>(&self, partition: u32, write: impl FnOnce() -> T) -> Option<T> {
        self.inner
            .fence
            .admit(|| self.inner.router.owns_alone(partition), write)
    }

    /// Drops `partition` if this node owns it in neither view: its owner holds it now.
    pub fn release(&self, partition: u32) -> bool {
        if self.routing().owns_in_either(partition) {
            return false;
        }
        self.inner.store.drop_partition(partition);
        true
    }

    /// The key's partition and its owners in the current epoch.
    pub fn placement_of(&self, key: &[u8]) -> (u32, Vec<String>) {
        let partition = self.inner.store.partition_of(key);
        let owners = self
            .view()
            .owners(partition)
            .map(|owner| owner.id.clone())
            .collect();
        (partition, owners)
    }

    /// Reads `key` from the owners the consistency level asks for; the newest version wins.
    pub async fn get(
        &self,
        key: &[u8],
        consistency: Option<Consistency>,
    ) -> Result<Option<Value>, ClusterError> {
        let level = consistency.unwrap_or(self.inner.defaults.read);
        let partition = self.inner.store.partition_of(key);
        if self.inner.router.answerable_locally(partition, level) {
            return Ok(self.inner.store.get(key));
        }
        let targets = self.inner.router.targets(partition)?;
        let needed = level.required(targets.read_group_size());
        let newest = self.read_newest(key, &targets, needed).await?;
        let now = self.inner.store.now_ms();
        Ok(newest.filter(|r| !r.tombstone).map(|record| Value {
            ttl: record.ttl_at(now),
            version: record.version,
            data: record.value.into(),
        }))
    }

    /// Writes `value` to every owner and returns once the consistency level's worth of
    /// them acknowledged (from both the old and the new owners during a move).
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        precondition: &Precondition,
        consistency: Option<Consistency>,
    ) -> Result<Written, ClusterError> {
        let partition = self.inner.store.partition_of(key);
        let alone = self.write_alone(partition, || {
            self.inner.store.put(key, value, ttl, precondition)
        })?;
        if let Some(written) = alone {
            return Ok(written);
        }
        let targets = self.inner.router.targets(partition)?;
        let level = consistency.unwrap_or(self.inner.defaults.write);
        let mut attempt = 1;
        loop {
            let created = self.check_precondition(key, &targets, precondition).await?;
            let record = self.inner.store.new_put(key, value, ttl);
            let version = record.version;
            match self.replicate(&targets, record, level).await {
                Ok(()) => return Ok(Written { version, created }),
                // The clock has folded in the newer version: the next one beats it.
                Err(ClusterError::Superseded { .. }) if attempt < WRITE_ATTEMPTS => attempt += 1,
                Err(err) => return Err(err),
            }
        }
    }

    /// Deletes `key` on every owner, leaving tombstones.
    pub async fn delete(
        &self,
        key: &[u8],
        precondition: &Precondition,
        consistency: Option<Consistency>,
    ) -> Result<(), ClusterError> {
        let partition = self.inner.store.partition_of(key);
        let alone = self.write_alone(partition, || self.inner.store.delete(key, precondition))?;
        if alone.is_some() {
            return Ok(());
        }
        let targets = self.inner.router.targets(partition)?;
        let level = consistency.unwrap_or(self.inner.defaults.write);
        let read_needed = level.required(targets.read_group_size());
        let mut attempt = 1;
        loop {
            let current = self.read_newest(key, &targets, read_needed).await?;
            let live = current.filter(|r| !r.tombstone).map(|r| r.version);
            precondition.check(live)?;
            if live.is_none() {
                return Err(StoreError::NotFound.into());
            }
            let tombstone = self.inner.store.new_tombstone(key);
            match self.replicate(&targets, tombstone, level).await {
                Err(ClusterError::Superseded { .. }) if attempt < WRITE_ATTEMPTS => attempt += 1,
                done => return done,
            }
        }
    }

    /// The single-owner fast path: when this node is `partition`'s only copy, `write`
    /// runs on the local store (which checks preconditions atomically) under the drain
    /// fence. None: the write goes to the replicas. A write to a partition this draining
    /// node alone owns would miss the hand-off, and is refused either way.
    fn write_alone<T>(
        &self,
        partition: u32,
        write: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<Option<T>, ClusterError> {
        self.check_clock()?;
        if self.refuses_writes_while_draining(partition) {
            return Err(self.draining_error(partition));
        }
        if !self
            .inner
            .router
            .answerable_locally(partition, Consistency::All)
        {
            return Ok(None);
        }
        let written = self
            .fenced(partition, write)
            .ok_or_else(|| self.draining_error(partition))?;
        Ok(Some(written?))
    }

    fn draining_error(&self, partition: u32) -> ClusterError {
        ClusterError::Unavailable {
            needed: 1,
            acked: 0,
            detail: format!(
                "{}: draining, handing off partition {partition}",
                self.inner.identity.node_id
            ),
        }
    }

    /// Checks a precondition against a quorum read. Returns whether the key was absent.
    /// Unlike the single-owner path this is not atomic with the write: two concurrent
    /// conditional writers can both pass (documented in docs/api.md).
    async fn check_precondition(
        &self,
        key: &[u8],
        targets: &Targets,
        precondition: &Precondition,
    ) -> Result<bool, ClusterError> {
        if *precondition == Precondition::None {
            // Nothing was read, so nothing is known about creation; report a replace.
            return Ok(false);
        }
        let needed = Consistency::Quorum.required(targets.read_group_size());
        let current = self.read_newest(key, targets, needed).await?;
        let live = current.filter(|r| !r.tombstone).map(|r| r.version);
        precondition.check(live)?;
        Ok(live.is_none())
    }

    /// Asks every replica for its record and returns the newest once `needed` replicas
    /// that hold the partition completely have answered. Replicas that answered with an
    /// older version are repaired in the background.
    async fn read_newest(
        &self,
        key: &[u8],
        targets: &Targets,
        needed: usize,
    ) -> Result<Option<Record>, ClusterError> {
        let partition = self.inner.store.partition_of(key);
        let mut tally = ReadTally::new(needed);
        let mut remotes = Vec::new();
        for target in &targets.targets {
            match &target.replica {
                Replica::Local => tally.answer(
                    Replica::Local,
                    self.holds_completely(partition),
                    self.inner.store.get_record(key),
                ),
                Replica::Remote(member) => remotes.push((member.clone(), target.replica.clone())),
            }
        }
        let request = proto::GetRequest {
            sender: Some(self.sender()),
            key: key.to_vec(),
        };
        let cluster = self.clone();
        let call = move |id: String, mut client: peer::client::Client| {
            let (request, cluster) = (request.clone(), cluster.clone());
            async move {
                let reply = client.get(request).await?.into_inner();
                cluster.observe_clock(&id, reply.wall_ms);
                Ok(reply)
            }
        };
        let errors = self
            .inner
            .replicator
            .fan_out(remotes, call, &mut tally, Rest::Abandon)
            .await;
        let (newest, stale) = tally.finish(&errors)?;
        if let Some(newest) = &newest {
            // Fold what was read into the clock: a write after this read orders after it
            // (a conditional write, a delete), however far behind this node's clock is.
            self.fold(newest.version.hlc);
        }
        if let Some(newest) = &newest
            && !stale.is_empty()
        {
            let cluster = self.clone();
            let record = newest.clone();
            tokio::spawn(async move {
                let repair = Targets::repair(stale);
                let _ = cluster.replicate(&repair, record, Consistency::All).await;
            });
        }
        Ok(newest)
    }

    /// Applies `record` on every target; succeeds once `level` is met among the `next`
    /// owners and, during a move, among the `prev` owners too. Calls still in flight then
    /// finish in the background.
    async fn replicate(
        &self,
        targets: &Targets,
        record: Record,
        level: Consistency,
    ) -> Result<(), ClusterError> {
        let partition = self.inner.store.partition_of(&record.key);
        let mut tally = WriteTally::new(targets, level);
        let mut errors = Vec::new();
        let mut remotes = Vec::new();
        let node_id = &self.inner.identity.node_id;
        for target in &targets.targets {
            let groups = (target.in_next, target.in_prev);
            match &target.replica {
                Replica::Local => {
                    match self.fenced(partition, || self.inner.store.apply(&record)) {
                        Some(Ok(Applied::Stored)) => tally.ack(groups),
                        Some(Ok(Applied::Stale)) => {
                            let newer = self.inner.store.get_record(&record.key);
                            tally.stale(newer.map_or(0, |r| r.version.hlc));
                        }
                        Some(Err(err)) => errors.push(format!("{node_id}: {err}")),
                        None => {
                            errors.push(format!("{node_id}: draining, handing off this partition"));
                        }
                    }
                }
                Replica::Remote(member) => remotes.push((member.clone(), groups)),
            }
        }
        let request = proto::ApplyRequest {
            sender: Some(self.sender()),
            records: vec![record.into()],
            hint: false,
        };
        let cluster = self.clone();
        let call = move |id: String, mut client: peer::client::Client| {
            let (request, cluster) = (request.clone(), cluster.clone());
            async move {
                let reply = client.apply(request).await?.into_inner();
                cluster.observe_clock(&id, reply.wall_ms);
                Ok(reply)
            }
        };
        let failed = self
            .inner
            .replicator
            .fan_out(remotes, call, &mut tally, Rest::Finish)
            .await;
        errors.extend(failed);
        let outcome = tally.finish(&errors);
        if let Err(ClusterError::Superseded { newer_hlc }) = &outcome {
            self.fold(*newer_hlc);
        }
        outcome
    }

    /// Folds a version hlc seen on a replica into this node's clock. One beyond the
    /// clock bound is not folded (it would drag this clock into the future): it is
    /// refused and counted instead.
    fn fold(&self, hlc: u64) {
        let version = crate::clock::Version { hlc, node: 0 };
        if let Err(err) = self.inner.store.observe_version(version) {
            self.refused_version("a replica", &err);
        }
    }
}

#[cfg(test)]
mod tests;
