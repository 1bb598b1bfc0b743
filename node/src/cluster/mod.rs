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
mod requests;
pub mod router;
pub mod sync_state;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::watch;

use crate::auth::Protocol;
use crate::lifecycle::{Lifecycle, Phase};
use crate::metrics::Metrics;
use crate::store::{Store, StoreError};
use clock_watch::{ClockReport, ClockWatch};
pub use consistency::Consistency;
use discovery::Discovery;
use fence::DrainFence;
pub use kache_api::report::{ClusterReport, Role};
use membership::{MemberList, ReplicationFactor};
use peer::PeerClients;
use replicator::Replicator;
pub use router::Admission;
pub use router::View;
use router::{Router, Routing};
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
    /// A replica is on a newer member-list epoch than the one the replicas were chosen
    /// on: the write is tried again once this node has learned that list.
    #[error(
        "a replica is on member-list epoch {epoch}, newer than this node's; the write was not acknowledged"
    )]
    Behind { epoch: u64 },
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
    /// The client protocol this handle's requests come from, for the forwarded-requests
    /// counter: HTTP's handle and RESP's are the same cluster (see [`Cluster::via`]).
    via: Protocol,
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
    /// The RESP port each peer announced in its requests (`Sender.resp_port`), by member
    /// id. A parking_lot mutex: one insert per peer request, never held across `.await`.
    resp_ports: Mutex<HashMap<String, u16>>,
    write_order: requests::WriteOrder,
    /// Partitions this node loaded data of from its data dir at start, sorted: a copy of
    /// their data, for the startup sync. A parking_lot mutex, set once before the sync
    /// and read by it.
    loaded: Mutex<Vec<u32>>,
    /// The node's metrics: the peer client pool and the request paths record into it.
    metrics: Metrics,
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
        Self::reaching_peers_with(store, identity, list, defaults, discovery, None)
    }

    /// [`Cluster::new`], calling peers over mutual TLS when `tls` is given.
    pub fn reaching_peers_with(
        store: Store,
        identity: Identity,
        list: MemberList,
        defaults: Defaults,
        discovery: Discovery,
        tls: Option<crate::tls::PeerTls>,
    ) -> Self {
        let epoch = list.epoch;
        let max_message = chunk::max_message_bytes(store.limits());
        let metrics = Metrics::new();
        let peers = PeerClients::new(discovery, max_message)
            .with_tls(tls)
            .with_metrics(metrics.peer_rpcs());
        Self {
            via: Protocol::Http,
            inner: Arc::new(Inner {
                router: Router::new(identity.node_id.clone(), list),
                sync: SyncState::new(Lifecycle::new(Phase::Starting), epoch),
                fence: DrainFence::default(),
                replicator: Replicator::new(peers),
                clock: ClockWatch::new(store.limits().max_clock_offset),
                store,
                identity,
                defaults,
                resp_ports: Mutex::default(),
                write_order: requests::WriteOrder::default(),
                loaded: Mutex::default(),
                metrics,
            }),
        }
    }

    /// Records the partitions this node's data dir gave it a copy of. When every member
    /// restarts at once, nobody is a sync source, and each keeps what it loaded
    /// (anti-entropy then reconciles the replicas); these partitions are not reported as
    /// lost.
    pub fn loaded_from_disk(&self, mut partitions: Vec<u32>) {
        partitions.sort_unstable();
        *self.inner.loaded.lock() = partitions;
    }

    fn loaded_locally(&self, partition: u32) -> bool {
        self.inner.loaded.lock().binary_search(&partition).is_ok()
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The node's metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// This cluster, its client requests counted as coming over `protocol` (HTTP's
    /// handle is the default; the RESP listener takes one of its own).
    #[must_use]
    pub fn via(&self, protocol: Protocol) -> Self {
        Self {
            inner: self.inner.clone(),
            via: protocol,
        }
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

    /// Wakes on every change of the view (a new member list, a move's end).
    pub fn list_changes(&self) -> watch::Receiver<u64> {
        self.inner.router.changes()
    }

    /// Whether the startup sync has finished.
    pub fn is_synced(&self) -> bool {
        self.inner.sync.is_synced()
    }

    /// This process just started (with the list it has, if any): until its startup sync
    /// has asked the peers whether a move is in progress, it coordinates no writes (see
    /// [`Router::settle_first_list`]). Nodes built for unit tests skip it.
    pub fn started(&self) {
        self.inner.router.started();
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

    /// Peer `id` serves RESP on `port` (0: it does not say).
    pub(crate) fn observe_resp_port(&self, id: &str, port: u32) {
        let Ok(port) = u16::try_from(port) else {
            return;
        };
        if port == 0 {
            return;
        }
        let mut ports = self.inner.resp_ports.lock();
        if ports.get(id) != Some(&port) {
            ports.insert(id.to_owned(), port);
        }
    }

    /// Where `member` serves RESP, for Redis Cluster clients: its peer address's IP and
    /// the port it announced, or this node's own port until it has said (the operator
    /// gives every member the same one). None while discovery knows no address for it.
    pub fn resp_endpoint(&self, member: &membership::Member) -> Option<SocketAddr> {
        let address = self.peer_address(member)?;
        let port = self
            .inner
            .resp_ports
            .lock()
            .get(&member.id)
            .copied()
            .unwrap_or(self.inner.identity.resp_port);
        Some(SocketAddr::new(address.ip(), port))
    }

    /// Where `member`'s peer protocol is reachable now, if discovery knows.
    pub fn peer_address(&self, member: &membership::Member) -> Option<SocketAddr> {
        self.inner.replicator.peers().address(member)
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.identity.node_id
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
        if self.inner.clock.in_bounds() {
            return Ok(());
        }
        let clock = self.inner.clock.report();
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

    /// Stores a write to `partition` from a coordinator on `sender_epoch` if this node
    /// should, under the drain fence (see [`Router::admit`]; `Done(None)`: the fence
    /// refused it).
    pub fn admit<T>(
        &self,
        partition: u32,
        sender_epoch: u64,
        write: impl FnOnce() -> T,
    ) -> Admission<Option<T>> {
        self.inner
            .router
            .admit(partition, sender_epoch, || self.fenced(partition, write))
    }

    /// Whether a write to `partition` must be refused: a drain started and this node
    /// alone owns it, so the record could miss the hand-off and leave with the process.
    pub fn refuses_writes_while_draining(&self, partition: u32) -> bool {
        self.inner
            .fence
            .refuses(partition, || self.inner.router.owns_alone(partition))
    }

    /// Runs a local store write to `partition` unless the drain fence refuses it (None).
    pub fn fenced<T>(&self, partition: u32, write: impl FnOnce() -> T) -> Option<T> {
        self.inner
            .fence
            .admit(partition, || self.inner.router.owns_alone(partition), write)
    }

    /// Drops `partition` if this node owns it in neither view: its owner holds it now.
    pub fn release(&self, partition: u32) -> bool {
        if self.routing().owns_in_either(partition) {
            return false;
        }
        self.inner.store.drop_partition(partition);
        true
    }

    /// The pool of clients to the other members (read-through calls a key's owner).
    pub(crate) fn peers(&self) -> &PeerClients {
        self.inner.replicator.peers()
    }

    /// Every member of the lists in force (both while moving), this node excluded.
    pub(crate) fn other_members(&self) -> Vec<membership::Member> {
        let routing = self.routing();
        let mut members: Vec<membership::Member> = Vec::new();
        let lists = [
            Some(&routing.next),
            routing.moving().then_some(&routing.prev),
        ];
        for view in lists.into_iter().flatten() {
            for member in &view.list.members {
                if member.id != self.node_id() && !members.iter().any(|m| m.id == member.id) {
                    members.push(member.clone());
                }
            }
        }
        members
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
}

#[cfg(test)]
mod tests;
