//! Clustering: membership, placement, and routing every request to the key's owners.
//!
//! Layout:
//! - [`membership`]: the epoch-numbered member list and its sources.
//! - [`placement`]: rendezvous hashing of partitions onto members.
//! - [`peer`]: the gRPC peer protocol (server and client pool).
//! - `anti_entropy`: periodic digest comparison between replicas, pulling differences.
//!
//! Any node accepts any request. A [`Cluster`] finds the key's owners in the current view
//! and reads from R of them or writes to all of them, answering once W have acknowledged.
//! Writes carry a version made here (hybrid logical clock + node), and replicas keep the
//! newest version of each key (last writer wins, tombstones included), so retries,
//! duplicates and reordering are harmless. A single node is a cluster of one, whose
//! requests never leave the process.
//!
//! Not yet built: moving partitions when membership changes (rebalancing) and draining on
//! shutdown. Until then a membership change re-routes keys without
//! moving data; see docs/architecture.md.

mod anti_entropy;
pub mod membership;
pub mod peer;
pub mod placement;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::store::{Precondition, Record, Store, StoreError, Value, Written};
use membership::{MemberList, ReplicationFactor};
use peer::{Identity, PeerClients, proto, record_from_proto, record_to_proto};
use placement::Placement;

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

/// The membership in force, with its placement.
#[derive(Debug)]
pub struct View {
    pub list: MemberList,
    pub placement: Placement,
    /// This node's index in the list, if it is a member.
    pub self_index: Option<u16>,
}

/// Where one copy of a key lives.
#[derive(Debug, Clone)]
enum Replica {
    Local,
    Remote {
        id: String,
        address: SocketAddr,
    },
    /// A member with no known address: every call to it fails.
    Unreachable {
        id: String,
    },
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

    fn replicas(&self, partition: u32) -> Vec<Replica> {
        self.placement
            .owners(partition)
            .iter()
            .map(|&owner| {
                let member = &self.list.members[usize::from(owner)];
                match member.address {
                    _ if Some(owner) == self.self_index => Replica::Local,
                    Some(address) => Replica::Remote {
                        id: member.id.clone(),
                        address,
                    },
                    None => Replica::Unreachable {
                        id: member.id.clone(),
                    },
                }
            })
            .collect()
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
    /// Replaced whole on every new epoch; readers take an `Arc` and never block writers
    /// for longer than a pointer copy.
    view: RwLock<Arc<View>>,
    epoch: Arc<AtomicU64>,
    /// Whether this node holds every partition it owns (after its startup sync).
    synced: Arc<AtomicBool>,
    peers: PeerClients,
    defaults: Defaults,
    counters: SyncCounters,
}

/// What partition syncing (anti-entropy now, rebalancing later) has done.
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
        };
        let cluster = Self::new(store, identity, list, defaults);
        // Alone, it owns everything and has nobody to sync from.
        cluster.inner.synced.store(true, Ordering::Relaxed);
        cluster
    }

    /// A member of `list`. It counts as unsynced (no peer source, not ready) until
    /// [`Cluster::initial_sync`] has pulled what it owns.
    pub fn new(store: Store, identity: Identity, list: MemberList, defaults: Defaults) -> Self {
        let epoch = Arc::new(AtomicU64::new(list.epoch));
        let view = View::new(list, &identity.node_id);
        Self {
            inner: Arc::new(Inner {
                store,
                identity,
                view: RwLock::new(Arc::new(view)),
                epoch,
                synced: Arc::new(AtomicBool::new(false)),
                peers: PeerClients::default(),
                defaults,
                counters: SyncCounters::default(),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn identity(&self) -> &Identity {
        &self.inner.identity
    }

    pub fn view(&self) -> Arc<View> {
        self.inner.view.read().clone()
    }

    /// Whether this node holds what it owns, shared with the peer server.
    pub fn synced_handle(&self) -> Arc<AtomicBool> {
        self.inner.synced.clone()
    }

    /// The epoch in force, shared with the peer server.
    pub fn epoch_handle(&self) -> Arc<AtomicU64> {
        self.inner.epoch.clone()
    }

    /// Installs a member list if its epoch is newer than the one in force.
    pub fn install(&self, list: MemberList) -> bool {
        let mut view = self.inner.view.write();
        if list.epoch <= view.list.epoch {
            return false;
        }
        tracing::info!(
            from = view.list.epoch,
            to = list.epoch,
            members = list.members.len(),
            "membership changed"
        );
        self.inner.epoch.store(list.epoch, Ordering::Relaxed);
        *view = Arc::new(View::new(list, &self.inner.identity.node_id));
        true
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

    fn sender(&self) -> proto::Sender {
        self.inner
            .identity
            .sender(self.inner.epoch.load(Ordering::Relaxed))
    }

    fn replicas_of(&self, key: &[u8]) -> Vec<Replica> {
        self.view().replicas(self.inner.store.partition_of(key))
    }

    /// Whether a request needing `level` of the key's owners can be answered by this node
    /// alone: the hot path of a single node, decided without allocating.
    fn answerable_locally(&self, key: &[u8], level: Consistency) -> bool {
        let partition = self.inner.store.partition_of(key);
        let view = self.inner.view.read();
        let owners = view.placement.owners(partition);
        let is_owner = view.self_index.is_some_and(|me| owners.contains(&me));
        is_owner && level.required(owners.len()) == 1
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
        let replicas = self.replicas_of(key);
        let needed = level.required(replicas.len());
        let newest = self.read_newest(key, &replicas, needed).await?;
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

    /// Asks `needed` replicas for their record and returns the newest. Replicas that
    /// answered with an older version are repaired in the background.
    async fn read_newest(
        &self,
        key: &[u8],
        replicas: &[Replica],
        needed: usize,
    ) -> Result<Option<Record>, ClusterError> {
        let mut answers: Vec<(Replica, Option<Record>)> = Vec::new();
        let mut errors = Vec::new();
        let mut calls = JoinSet::new();
        for replica in replicas {
            match replica {
                Replica::Local => {
                    answers.push((replica.clone(), self.inner.store.get_record(key)));
                }
                Replica::Unreachable { id } => errors.push(format!("{id}: no known address")),
                Replica::Remote { id, address } => {
                    let client = self.inner.peers.client(*address);
                    let request = proto::GetRequest {
                        sender: Some(self.sender()),
                        key: key.to_vec(),
                    };
                    let replica = replica.clone();
                    let id = id.clone();
                    calls.spawn(async move {
                        let reply = match client {
                            Ok(mut client) => client.get(request).await,
                            Err(status) => Err(status),
                        };
                        (replica, id, reply)
                    });
                }
            }
        }
        while answers.len() < needed {
            let Some(joined) = calls.join_next().await else {
                break;
            };
            match joined {
                Ok((replica, _, Ok(reply))) => {
                    answers.push((replica, reply.into_inner().record.map(record_from_proto)));
                }
                Ok((_, id, Err(status))) => errors.push(format!("{id}: {}", status.message())),
                Err(join) => errors.push(join.to_string()),
            }
        }
        if answers.len() < needed {
            return Err(ClusterError::Unavailable {
                needed,
                acked: answers.len(),
                detail: errors.join("; "),
            });
        }
        let newest = answers
            .iter()
            .filter_map(|(_, record)| record.as_ref())
            .max_by_key(|record| record.version)
            .cloned();
        if let Some(newest) = &newest {
            let stale: Vec<Replica> = answers
                .into_iter()
                .filter(|(_, record)| record.as_ref().map(|r| r.version) != Some(newest.version))
                .map(|(replica, _)| replica)
                .collect();
            if !stale.is_empty() {
                let cluster = self.clone();
                let record = newest.clone();
                tokio::spawn(async move {
                    let _ = cluster.replicate(&stale, record, stale.len()).await;
                });
            }
        }
        Ok(newest)
    }

    /// Writes `value` to every owner and returns once the consistency level's worth of
    /// them acknowledged.
    pub async fn put(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        precondition: &Precondition,
        consistency: Option<Consistency>,
    ) -> Result<Written, ClusterError> {
        if self.answerable_locally(key, Consistency::All) {
            // One copy, and it is here: the store checks the precondition atomically.
            return Ok(self.inner.store.put(key, value, ttl, precondition)?);
        }
        let replicas = self.replicas_of(key);
        let created = self
            .check_precondition(key, &replicas, precondition)
            .await?;
        let now = self.inner.store.now_ms();
        let version = self.inner.store.next_version();
        let record = Record {
            key: key.to_vec(),
            value: value.to_vec(),
            version,
            expires_at_ms: ttl.map_or(0, |ttl| now.saturating_add(millis(ttl))),
            tombstone: false,
        };
        let needed = consistency
            .unwrap_or(self.inner.defaults.write)
            .required(replicas.len());
        self.replicate(&replicas, record, needed).await?;
        Ok(Written { version, created })
    }

    /// Deletes `key` on every owner, leaving tombstones.
    pub async fn delete(
        &self,
        key: &[u8],
        precondition: &Precondition,
        consistency: Option<Consistency>,
    ) -> Result<(), ClusterError> {
        if self.answerable_locally(key, Consistency::All) {
            self.inner.store.delete(key, precondition)?;
            return Ok(());
        }
        let replicas = self.replicas_of(key);
        let write = consistency.unwrap_or(self.inner.defaults.write);
        let read_needed = write.required(replicas.len());
        let current = self.read_newest(key, &replicas, read_needed).await?;
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
        self.replicate(&replicas, record, write.required(replicas.len()))
            .await
    }

    /// Checks a precondition against a quorum read. Returns whether the key was absent.
    /// Unlike the single-owner path this is not atomic with the write: two concurrent
    /// conditional writers can both pass (documented in docs/api.md).
    async fn check_precondition(
        &self,
        key: &[u8],
        replicas: &[Replica],
        precondition: &Precondition,
    ) -> Result<bool, ClusterError> {
        if *precondition == Precondition::None {
            // Nothing was read, so nothing is known about creation; report a replace.
            return Ok(false);
        }
        let needed = Consistency::Quorum.required(replicas.len());
        let current = self.read_newest(key, replicas, needed).await?;
        let live = current.filter(|r| !r.tombstone).map(|r| r.version);
        precondition.check(live)?;
        Ok(live.is_none())
    }

    /// Applies `record` on every replica; succeeds once `needed` acknowledged. The calls
    /// still in flight then finish in the background.
    async fn replicate(
        &self,
        replicas: &[Replica],
        record: Record,
        needed: usize,
    ) -> Result<(), ClusterError> {
        let mut acked = 0;
        let mut errors = Vec::new();
        let mut calls = JoinSet::new();
        for replica in replicas {
            match replica {
                Replica::Local => match self.inner.store.apply(&record) {
                    Ok(_) => acked += 1,
                    Err(err) => errors.push(format!("{}: {err}", self.inner.identity.node_id)),
                },
                Replica::Unreachable { id } => errors.push(format!("{id}: no known address")),
                Replica::Remote { id, address } => {
                    let client = self.inner.peers.client(*address);
                    let request = proto::ApplyRequest {
                        sender: Some(self.sender()),
                        records: vec![record_to_proto(record.clone())],
                    };
                    let id = id.clone();
                    calls.spawn(async move {
                        let reply = match client {
                            Ok(mut client) => client.apply(request).await.map(|_| ()),
                            Err(status) => Err(status),
                        };
                        (id, reply)
                    });
                }
            }
        }
        while acked < needed {
            let Some(joined) = calls.join_next().await else {
                break;
            };
            match joined {
                Ok((_, Ok(()))) => acked += 1,
                Ok((id, Err(status))) => errors.push(format!("{id}: {}", status.message())),
                Err(join) => errors.push(join.to_string()),
            }
        }
        if !calls.is_empty() {
            // Dropping a JoinSet aborts its tasks; the remaining replicas still get the write.
            tokio::spawn(async move { while calls.join_next().await.is_some() {} });
        }
        if acked < needed {
            return Err(ClusterError::Unavailable {
                needed,
                acked,
                detail: errors.join("; "),
            });
        }
        Ok(())
    }

    /// What `GET /v1/cluster` reports.
    pub fn report(&self, ready: bool) -> ClusterReport {
        let view = self.view();
        let owned: Vec<u32> = view
            .self_index
            .map(|me| view.placement.owned_by(me).collect())
            .unwrap_or_default();
        let held = self.inner.store.partitions_holding_data();
        let held_not_owned = held.iter().filter(|p| !owned.contains(p)).count();
        ClusterReport {
            protocol_version: peer::PROTOCOL_VERSION,
            node: NodeReport {
                id: self.inner.identity.node_id.clone(),
                incarnation: self.inner.identity.incarnation.clone(),
                ready,
            },
            epoch: view.list.epoch,
            partitions: view.list.partitions,
            replication_factor: view.list.replication_factor,
            members: view
                .list
                .members
                .iter()
                .enumerate()
                .map(|(i, m)| MemberReport {
                    id: m.id.clone(),
                    address: m.address,
                    is_self: u16::try_from(i).ok() == view.self_index,
                })
                .collect(),
            ownership: Ownership {
                owned: owned.len(),
                pending: self.inner.counters.startup_pending.load(Ordering::Relaxed),
                held_not_owned,
            },
            sync: SyncReport {
                anti_entropy_rounds: self
                    .inner
                    .counters
                    .anti_entropy_rounds
                    .load(Ordering::Relaxed),
                records_repaired: self.inner.counters.repaired.load(Ordering::Relaxed),
                records_pulled: self.inner.counters.records_pulled.load(Ordering::Relaxed),
                bytes_pulled: self.inner.counters.bytes_pulled.load(Ordering::Relaxed),
                failures: self.inner.counters.sync_failures.load(Ordering::Relaxed),
            },
        }
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub protocol_version: u32,
    pub node: NodeReport,
    pub epoch: u64,
    pub partitions: u32,
    pub replication_factor: ReplicationFactor,
    pub members: Vec<MemberReport>,
    pub ownership: Ownership,
    pub sync: SyncReport,
}

#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncReport {
    pub anti_entropy_rounds: u64,
    /// Records pulled from peers that were newer than what this node held.
    pub records_repaired: u64,
    pub records_pulled: u64,
    pub bytes_pulled: u64,
    /// Digest or stream exchanges with peers that failed.
    pub failures: u64,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeReport {
    pub id: String,
    pub incarnation: String,
    pub ready: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberReport {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
    pub is_self: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Ownership {
    /// Partitions this node owns in the current epoch.
    pub owned: usize,
    /// Owned partitions not yet pulled from their co-owners since this node started.
    pub pending: u64,
    /// Partitions holding data this node does not own (nothing moves them yet).
    pub held_not_owned: usize,
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
}
