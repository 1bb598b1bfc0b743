//! Clustering: membership, placement, and routing every request to the key's owners.
//!
//! Layout:
//! - [`membership`]: the epoch-numbered member list and its sources (file, flag,
//!   ConfigMap).
//! - [`discovery`]: how to reach a member (static, EndpointSlices, DNS).
//! - [`placement`]: rendezvous hashing of partitions onto members.
//! - [`peer`]: the gRPC peer protocol (server and client pool).
//! - [`chunk`]: partition chunks in flight, charged against `--max-memory`.
//! - `routing`: which replicas a request involves, during and outside a membership move.
//! - `rebalance`: moving partitions to their new owners when membership changes.
//! - `anti_entropy`: startup sync and periodic digest repair between replicas.
//! - [`drain`]: handing off on SIGTERM what would be lost with the process.
//! - `report`: what `GET /v1/cluster` says.
//!
//! Any node accepts any request. A [`Cluster`] finds the key's owners and reads from R of
//! them or writes to all of them, answering once W have acknowledged. Writes carry a
//! version made here (hybrid logical clock + node), and replicas keep the newest version
//! of each key (last writer wins, tombstones included), so retries, duplicates, reordering
//! and repeated partition streams are harmless. A single node is a cluster of one, whose
//! requests never leave the process.
//!
//! Membership moves: the node keeps two views, `prev` (the last view whose owners are
//! known to hold their partitions completely) and `next` (the newest epoch). While they
//! differ, writes go to the owners in both and need W acknowledgements from each group,
//! and reads count only answers from replicas that hold the partition completely. The
//! move completes when every member reports that it holds its `next` partitions; then
//! `prev` becomes `next` and old owners drop what they no longer own.

mod anti_entropy;
pub mod chunk;
pub mod discovery;
pub mod drain;
pub mod membership;
pub mod peer;
pub mod placement;
pub mod rebalance;
mod report;
mod routing;

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::watch;

use crate::store::{Precondition, Record, Store, StoreError, Value, Written};
use discovery::Discovery;
pub use kache_api::report::{ClusterReport, Role};
use membership::{MemberList, ReplicationFactor};
use peer::{Identity, PeerClients, proto};
use placement::Placement;
use routing::Routing;

/// How many owners a request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    One,
    Quorum,
    All,
}

impl Consistency {
    /// Answers needed out of `owners`.
    pub fn required(self, owners: usize) -> usize {
        match self {
            Self::One => 1.min(owners),
            Self::Quorum => owners / 2 + 1,
            Self::All => owners,
        }
    }
}

impl FromStr for Consistency {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "one" => Ok(Self::One),
            "quorum" => Ok(Self::Quorum),
            "all" => Ok(Self::All),
            other => Err(format!(
                "unknown consistency '{other}' (expected one, quorum or all)"
            )),
        }
    }
}

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
}

/// One membership epoch with its placement.
#[derive(Debug)]
pub struct View {
    pub list: MemberList,
    pub placement: Placement,
    /// This node's index in the list, if it is a member (not departing, not absent).
    pub self_index: Option<u16>,
}

impl View {
    fn new(list: MemberList, node_id: &str) -> Self {
        let placement = Placement::new(
            &list.ids(),
            list.partitions,
            list.replication_factor.count(),
        );
        let self_index = list
            .members
            .iter()
            .position(|m| m.id == node_id)
            .and_then(|i| u16::try_from(i).ok());
        Self {
            list,
            placement,
            self_index,
        }
    }

    pub fn epoch(&self) -> u64 {
        self.list.epoch
    }

    /// Where `node_id` stands in this view.
    pub fn role_of(&self, node_id: &str) -> Role {
        if self.list.members.iter().any(|m| m.id == node_id) {
            Role::Member
        } else if self.list.is_departing(node_id) {
            Role::Departing
        } else {
            Role::Absent
        }
    }

    /// Whether this node owns `partition` in this view.
    pub fn owns(&self, partition: u32) -> bool {
        self.self_index
            .is_some_and(|me| self.placement.owners(partition).contains(&me))
    }

    /// Whether the member `id` owns `partition` in this view.
    pub fn is_owner(&self, id: &str, partition: u32) -> bool {
        self.placement
            .owners(partition)
            .iter()
            .any(|&owner| self.list.members[usize::from(owner)].id == id)
    }

    /// Partitions this node owns in this view.
    pub fn owned(&self) -> Vec<u32> {
        self.self_index
            .map(|me| self.placement.owned_by(me).collect())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Defaults {
    pub read: Consistency,
    pub write: Consistency,
}

/// A cheap handle on this node's view of the cluster.
#[derive(Debug, Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    identity: Identity,
    /// Replaced whole on every change; readers copy two `Arc`s and let go.
    routing: RwLock<Routing>,
    /// Bumped on every routing change, to wake the rebalancer.
    changes: watch::Sender<u64>,
    /// False until the startup sync finished: until then this node is nobody's source.
    synced: AtomicBool,
    /// The newest epoch whose partitions this node fully holds.
    synced_epoch: AtomicU64,
    /// Set when a drain starts: from then on this node stores no write to a partition it
    /// alone owns, since the hand-off may already have passed that record and the write
    /// would leave with the process. Such writes fail (a retryable 503), never vanish.
    draining: AtomicBool,
    /// Local writes to a partition hold it for read across "may I?" and the write; a
    /// drain takes it for write to raise `draining`, so no write that passed the check
    /// is still on its way into the store when the hand-off starts reading.
    fence: parking_lot::RwLock<()>,
    peers: PeerClients,
    defaults: Defaults,
    counters: SyncCounters,
    rebalance: Mutex<rebalance::Progress>,
}

/// What partition syncing (startup, rebalancing, anti-entropy) has done.
#[derive(Debug, Default)]
struct SyncCounters {
    anti_entropy_rounds: AtomicU64,
    /// Records pulled from peers that were newer than what this node held.
    repaired: AtomicU64,
    records_pulled: AtomicU64,
    bytes_pulled: AtomicU64,
    /// Digest or stream exchanges that failed (peer down, timeout).
    sync_failures: AtomicU64,
    /// Owned partitions the startup sync has not pulled yet.
    startup_pending: AtomicU64,
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
        cluster.inner.synced.store(true, Ordering::Relaxed);
        cluster
    }

    /// A node following `list` (which may be [`MemberList::none`] until a source
    /// delivers one), reaching peers through `discovery`. It is unsynced (nobody's
    /// source, not ready) until [`Cluster::initial_sync`] has pulled what it owns.
    pub fn new(
        store: Store,
        identity: Identity,
        list: MemberList,
        defaults: Defaults,
        discovery: Discovery,
    ) -> Self {
        let epoch = list.epoch;
        let view = Arc::new(View::new(list, &identity.node_id));
        Self {
            inner: Arc::new(Inner {
                store,
                identity,
                routing: RwLock::new(Routing {
                    prev: view.clone(),
                    next: view,
                }),
                changes: watch::channel(epoch).0,
                synced: AtomicBool::new(false),
                synced_epoch: AtomicU64::new(epoch),
                draining: AtomicBool::new(false),
                fence: parking_lot::RwLock::new(()),
                peers: PeerClients::new(discovery),
                defaults,
                counters: SyncCounters::default(),
                rebalance: Mutex::new(rebalance::Progress::default()),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The newest view (the epoch in force).
    pub fn view(&self) -> Arc<View> {
        self.inner.routing.read().next.clone()
    }

    fn routing(&self) -> Routing {
        self.inner.routing.read().clone()
    }

    /// Whether the startup sync has finished.
    pub fn is_synced(&self) -> bool {
        self.inner.synced.load(Ordering::Relaxed)
    }

    /// Installs a member list if its epoch is newer than the one in force. A move in
    /// progress keeps its `prev` view: those owners still hold the data. The first list
    /// a node receives is not a move: with no list before it, nobody owned anything, and
    /// the startup sync pulls what this node owns.
    pub fn install(&self, list: MemberList) -> bool {
        let mut routing = self.inner.routing.write();
        if list.epoch <= routing.next.epoch() || !list.has_members() {
            return false;
        }
        let node_id = &self.inner.identity.node_id;
        let view = Arc::new(View::new(list, node_id));
        tracing::info!(
            from = routing.next.epoch(),
            to = view.epoch(),
            members = view.list.members.len(),
            departing = view.list.departing.len(),
            role = ?view.role_of(node_id),
            "membership changed"
        );
        let epoch = view.epoch();
        if !routing.next.list.has_members() {
            routing.prev = view.clone();
        }
        routing.next = view;
        drop(routing);
        self.inner.changes.send_replace(epoch);
        true
    }

    /// Whether this node has received a member list (or is a cluster of one).
    pub fn has_list(&self) -> bool {
        self.view().list.has_members()
    }

    /// Waits until this node has a member list.
    pub async fn wait_for_list(&self) {
        let mut changes = self.inner.changes.subscribe();
        while !self.has_list() {
            if changes.changed().await.is_err() {
                return;
            }
        }
    }

    /// A call to peer `id` failed: counted by the caller; here discovery may look again.
    pub(crate) fn peer_failed(&self, id: &str, status: &tonic::Status) {
        self.inner.peers.failed(id, status);
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
        if self.is_synced() {
            self.inner.synced_epoch.load(Ordering::Relaxed)
        } else {
            0
        }
    }

    pub(crate) fn sender(&self) -> proto::Sender {
        let mut sender = self.inner.identity.sender(self.view().epoch());
        sender.synced_epoch = self.synced_epoch();
        sender
    }

    /// Whether this node holds `partition` completely, so that "absent" here means absent:
    /// an owner in `prev` during a move (it keeps everything until the move completes),
    /// or an owner in `next` that has synced for it.
    pub fn holds_completely(&self, partition: u32) -> bool {
        if !self.is_synced() {
            return false;
        }
        let routing = self.inner.routing.read();
        let synced_for_next =
            self.inner.synced_epoch.load(Ordering::Relaxed) >= routing.next.epoch();
        (routing.moving() && routing.prev.owns(partition))
            || (routing.next.owns(partition) && synced_for_next)
    }

    /// The key's partition and its owners in the current epoch.
    pub fn placement_of(&self, key: &[u8]) -> (u32, Vec<String>) {
        let partition = self.inner.store.partition_of(key);
        let view = self.view();
        let owners = view
            .placement
            .owners(partition)
            .iter()
            .map(|&owner| view.list.members[usize::from(owner)].id.clone())
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
        if self.answerable_locally(key, level) {
            return Ok(self.inner.store.get(key));
        }
        let targets = self.targets(key)?;
        let needed = level.required(targets.read_group_size());
        let newest = self.read_newest(key, &targets, needed).await?;
        Ok(newest.filter(|r| !r.tombstone).map(|record| {
            let now = self.inner.store.now_ms();
            Value {
                data: record.value.into(),
                version: record.version,
                ttl: (record.expires_at_ms != 0)
                    .then(|| Duration::from_millis(record.expires_at_ms.saturating_sub(now))),
            }
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
        self.check_not_draining(key)?;
        if self.answerable_locally(key, Consistency::All) {
            // One copy, and it is here: the store checks the precondition atomically.
            let partition = self.inner.store.partition_of(key);
            let written = self.fenced(partition, || {
                self.inner.store.put(key, value, ttl, precondition)
            });
            return Ok(written.ok_or_else(|| self.draining_error(partition))??);
        }
        let targets = self.targets(key)?;
        let created = self.check_precondition(key, &targets, precondition).await?;
        let now = self.inner.store.now_ms();
        let version = self.inner.store.next_version();
        let record = Record {
            key: key.to_vec(),
            value: value.to_vec(),
            version,
            expires_at_ms: ttl.map_or(0, |ttl| now.saturating_add(millis(ttl))),
            tombstone: false,
        };
        let level = consistency.unwrap_or(self.inner.defaults.write);
        self.replicate(&targets, record, level).await?;
        Ok(Written { version, created })
    }

    /// A write to a partition this draining node alone owns would miss the hand-off:
    /// refuse it early (the store write itself goes through [`Self::fenced`]).
    fn check_not_draining(&self, key: &[u8]) -> Result<(), ClusterError> {
        let partition = self.inner.store.partition_of(key);
        if self.refuses_writes_while_draining(partition) {
            return Err(self.draining_error(partition));
        }
        Ok(())
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

    /// Deletes `key` on every owner, leaving tombstones.
    pub async fn delete(
        &self,
        key: &[u8],
        precondition: &Precondition,
        consistency: Option<Consistency>,
    ) -> Result<(), ClusterError> {
        self.check_not_draining(key)?;
        if self.answerable_locally(key, Consistency::All) {
            let partition = self.inner.store.partition_of(key);
            let deleted = self.fenced(partition, || self.inner.store.delete(key, precondition));
            deleted.ok_or_else(|| self.draining_error(partition))??;
            return Ok(());
        }
        let targets = self.targets(key)?;
        let level = consistency.unwrap_or(self.inner.defaults.write);
        let read_needed = level.required(targets.read_group_size());
        let current = self.read_newest(key, &targets, read_needed).await?;
        let live = current.filter(|r| !r.tombstone).map(|r| r.version);
        precondition.check(live)?;
        if live.is_none() {
            return Err(StoreError::NotFound.into());
        }
        let now = self.inner.store.now_ms();
        let grace = millis(self.inner.store.config().tombstone_ttl).max(1);
        let record = Record {
            key: key.to_vec(),
            value: Vec::new(),
            version: self.inner.store.next_version(),
            expires_at_ms: now.saturating_add(grace),
            tombstone: true,
        };
        self.replicate(&targets, record, level).await
    }

    /// Checks a precondition against a quorum read. Returns whether the key was absent.
    /// Unlike the single-owner path this is not atomic with the write: two concurrent
    /// conditional writers can both pass (documented in docs/api.md).
    async fn check_precondition(
        &self,
        key: &[u8],
        targets: &routing::Targets,
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
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consistency_levels_count_owners() {
        assert_eq!(Consistency::One.required(3), 1);
        assert_eq!(Consistency::Quorum.required(3), 2);
        assert_eq!(Consistency::Quorum.required(2), 2);
        assert_eq!(Consistency::Quorum.required(1), 1);
        assert_eq!(Consistency::All.required(3), 3);
        assert!("sometimes".parse::<Consistency>().is_err());
        assert_eq!("QUORUM".parse(), Ok(Consistency::Quorum));
    }

    const PARTITIONS: u32 = 64;

    fn list(epoch: u64, members: &[&str], departing: &[&str]) -> MemberList {
        let member = |id: &&str| membership::Member {
            id: (*id).to_owned(),
            address: "127.0.0.1:9".parse().ok(),
        };
        MemberList {
            epoch,
            partitions: PARTITIONS,
            replication_factor: ReplicationFactor::Count(1),
            members: members.iter().map(member).collect(),
            departing: departing.iter().map(member).collect(),
        }
    }

    fn node(id: &str, list: MemberList) -> Cluster {
        let store = Store::new(crate::store::StoreConfig {
            node_id: id.into(),
            partitions: PARTITIONS,
            max_memory: 1 << 20,
            eviction: crate::store::EvictionPolicy::Lru,
            tombstone_ttl: Duration::from_secs(60),
        });
        let defaults = Defaults {
            read: Consistency::Quorum,
            write: Consistency::Quorum,
        };
        Cluster::new(
            store,
            Identity::new(id.into()),
            list,
            defaults,
            Discovery::from_list(),
        )
    }

    /// A key of each partition.
    fn keys(cluster: &Cluster) -> Vec<Vec<u8>> {
        let mut keys: Vec<Option<Vec<u8>>> = vec![None; PARTITIONS as usize];
        for i in 0u32.. {
            let key = format!("k{i}").into_bytes();
            let slot = &mut keys[cluster.store().partition_of(&key) as usize];
            if slot.is_none() {
                *slot = Some(key);
            }
            if keys.iter().all(Option::is_some) {
                break;
            }
        }
        keys.into_iter().flatten().collect()
    }

    #[test]
    fn departing_members_own_nothing_and_leave_placement_unchanged() {
        let without = View::new(list(4, &["a", "b", "c"], &[]), "d");
        let with = View::new(list(4, &["a", "b", "c"], &["d"]), "d");
        let owner_ids = |view: &View, p: u32| -> Vec<String> {
            view.placement
                .owners(p)
                .iter()
                .map(|&i| view.list.members[usize::from(i)].id.clone())
                .collect()
        };
        for p in 0..PARTITIONS {
            assert_eq!(owner_ids(&with, p), owner_ids(&without, p), "partition {p}");
            assert!(!with.is_owner("d", p) && !with.owns(p));
        }
        assert!(with.owned().is_empty());
        assert_eq!(with.role_of("d"), Role::Departing);
        assert_eq!(with.role_of("a"), Role::Member);
        assert_eq!(with.role_of("new-pod"), Role::Absent);
        assert_eq!(without.role_of("d"), Role::Absent);
    }

    #[tokio::test]
    async fn the_first_list_is_not_a_move_and_later_ones_are() {
        let cluster = node("a", MemberList::none(PARTITIONS));
        assert!(!cluster.has_list());
        let waiting = tokio::spawn({
            let cluster = cluster.clone();
            async move { cluster.wait_for_list().await }
        });
        assert!(!cluster.install(MemberList::none(PARTITIONS)));
        assert!(cluster.install(list(3, &["a", "b"], &[])));
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("the wait ends with the first list")
            .expect("task");
        let routing = cluster.routing();
        assert!(!routing.moving(), "no previous owners to move from");
        assert_eq!(routing.prev.epoch(), 3);
        assert!(!cluster.install(list(3, &["a"], &[])), "same epoch");
        assert!(cluster.install(list(4, &["a"], &["b"])));
        assert!(cluster.routing().moving());
    }

    #[tokio::test]
    async fn without_a_list_requests_fail_and_never_miss() {
        let cluster = node("a", MemberList::none(PARTITIONS));
        for level in [Consistency::One, Consistency::Quorum, Consistency::All] {
            let read = cluster.get(b"k", Some(level)).await;
            assert!(
                matches!(&read, Err(ClusterError::Unavailable { detail, .. }) if detail.contains("no member list")),
                "{read:?}"
            );
        }
        let write = cluster
            .put(
                b"k",
                b"v",
                None,
                &Precondition::None,
                Some(Consistency::One),
            )
            .await;
        assert!(matches!(write, Err(ClusterError::Unavailable { .. })));
        assert!(cluster.store().get(b"k").is_none());
        let report = cluster.report(false);
        assert_eq!((report.epoch, report.ownership.owned), (0, 0));
        assert_eq!(report.node.role, Role::Absent);
    }

    #[tokio::test]
    async fn a_departing_node_reports_owning_nothing_and_what_it_still_holds() {
        let cluster = node("d", list(1, &["a", "d"], &[]));
        let keys = keys(&cluster);
        for key in &keys {
            cluster
                .store()
                .put(key, b"v", None, &Precondition::None)
                .expect("put");
        }
        let before = cluster.report(true);
        assert_eq!(before.node.role, Role::Member);
        assert!(before.ownership.owned > 0 && before.ownership.held_not_owned > 0);

        assert!(cluster.install(list(2, &["a"], &["d"])));
        let report = cluster.report(true);
        assert_eq!(report.node.role, Role::Departing);
        assert_eq!(report.ownership.owned, 0);
        assert_eq!(report.ownership.held_not_owned, PARTITIONS as usize);
        assert_eq!(report.departing.len(), 1);
        assert!(report.departing[0].is_self);
        assert!(report.members.iter().all(|m| !m.is_self));
    }

    #[tokio::test]
    async fn a_departing_node_keeps_what_it_owned_until_the_move_completes() {
        let cluster = node("d", list(1, &["a", "d"], &[]));
        let keys = keys(&cluster);
        for key in &keys {
            cluster
                .store()
                .put(key, b"v", None, &Precondition::None)
                .expect("put");
        }
        let owned_before: Vec<u32> = cluster.view().owned();
        assert!(cluster.install(list(2, &["a"], &["d"])));
        // A restarted member that pulled from it releases; an old owner mid-move keeps
        // its partitions (other new owners may still pull them), and drops the rest.
        for p in 0..PARTITIONS {
            let owned_in_prev = owned_before.contains(&p);
            assert_eq!(cluster.release(p), !owned_in_prev, "partition {p}");
        }
        assert_eq!(
            cluster.store().partitions_holding_data().len(),
            owned_before.len()
        );
        // Until then it answers reads for them as a complete holder (an old owner).
        cluster.inner.synced.store(true, Ordering::Relaxed);
        for p in 0..PARTITIONS {
            assert_eq!(cluster.holds_completely(p), owned_before.contains(&p));
        }
    }
}
