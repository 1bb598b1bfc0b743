//! Which replicas a request involves, and how answers are counted.
//!
//! Outside a membership move, a key's replicas are its owners. During a move they are the
//! owners in `prev` and in `next` together:
//! - a write needs W acknowledgements from the `prev` owners (so they stay complete for
//!   reads until the move ends) and W from the `next` owners (so nothing acknowledged
//!   depends on the partition stream);
//! - a read asks everyone and counts only answers from replicas that hold the partition
//!   completely, so a new owner still pulling can add data but never a miss.

use std::sync::Arc;

use tokio::task::JoinSet;

use super::membership::Member;
use super::peer::{proto, record_from_proto, record_to_proto};
use super::{Cluster, ClusterError, Consistency, View};
use crate::store::Record;

/// The views a node routes by: equal outside a move.
#[derive(Debug, Clone)]
pub(super) struct Routing {
    /// The last view whose owners hold their partitions completely.
    pub prev: Arc<View>,
    /// The newest epoch.
    pub next: Arc<View>,
}

impl Routing {
    pub fn moving(&self) -> bool {
        self.prev.epoch() != self.next.epoch()
    }
}

/// Where one copy of a key lives. A remote member's address is looked up (through
/// discovery) when it is called; one without a known address fails like a failed call.
#[derive(Debug, Clone)]
pub(super) enum Replica {
    Local,
    Remote(Member),
}

/// A replica and the owner groups it belongs to.
#[derive(Debug, Clone)]
pub(super) struct Target {
    replica: Replica,
    in_prev: bool,
    in_next: bool,
}

/// The replicas of one key.
#[derive(Debug)]
pub(super) struct Targets {
    targets: Vec<Target>,
    moving: bool,
    prev_owners: usize,
    next_owners: usize,
}

impl Targets {
    /// Owners whose answers make a read: the `prev` owners during a move.
    pub fn read_group_size(&self) -> usize {
        if self.moving {
            self.prev_owners
        } else {
            self.next_owners
        }
    }
}

fn replica(view: &View, owner: u16) -> Replica {
    if Some(owner) == view.self_index {
        Replica::Local
    } else {
        Replica::Remote(view.list.members[usize::from(owner)].clone())
    }
}

fn replica_id<'a>(replica: &'a Replica, local_id: &'a str) -> &'a str {
    match replica {
        Replica::Local => local_id,
        Replica::Remote(member) => &member.id,
    }
}

impl Cluster {
    /// Whether a request needing `level` of the key's owners can be answered by this node
    /// alone: the hot path of a single node, decided without allocating.
    pub(super) fn answerable_locally(&self, key: &[u8], level: Consistency) -> bool {
        let partition = self.inner.store.partition_of(key);
        let routing = self.inner.routing.read();
        if routing.moving() {
            return false;
        }
        let owners = routing.next.placement.owners(partition);
        routing.next.owns(partition) && level.required(owners.len()) == 1
    }

    /// Whether this node stores writes for `partition` from a sender on `sender_epoch`:
    /// as an owner in `prev` or `next`, or unconditionally when the sender has seen a
    /// newer epoch than this node (this node is behind, and may be a new owner).
    pub fn accepts_writes_for(&self, partition: u32, sender_epoch: u64) -> bool {
        let routing = self.inner.routing.read();
        sender_epoch > routing.next.epoch()
            || routing.next.owns(partition)
            || (routing.moving() && routing.prev.owns(partition))
    }

    /// The replicas of `key`. A node without a member list yet knows no owners: that is
    /// an error, never an empty answer.
    pub(super) fn targets(&self, key: &[u8]) -> Result<Targets, ClusterError> {
        let partition = self.inner.store.partition_of(key);
        let routing = self.routing();
        if !routing.next.list.has_members() {
            return Err(ClusterError::Unavailable {
                needed: 1,
                acked: 0,
                detail: "this node has no member list yet".into(),
            });
        }
        let local_id = self.inner.identity.node_id.as_str();
        let mut targets: Vec<Target> = Vec::new();
        let next_owners = routing.next.placement.owners(partition);
        for &owner in next_owners {
            targets.push(Target {
                replica: replica(&routing.next, owner),
                in_prev: false,
                in_next: true,
            });
        }
        let moving = routing.moving();
        let prev_owners = routing.prev.placement.owners(partition);
        if moving {
            for &owner in prev_owners {
                let candidate = replica(&routing.prev, owner);
                let id = replica_id(&candidate, local_id).to_owned();
                match targets
                    .iter_mut()
                    .find(|t| replica_id(&t.replica, local_id) == id)
                {
                    Some(existing) => existing.in_prev = true,
                    None => targets.push(Target {
                        replica: candidate,
                        in_prev: true,
                        in_next: false,
                    }),
                }
            }
        }
        Ok(Targets {
            targets,
            moving,
            prev_owners: prev_owners.len(),
            next_owners: next_owners.len(),
        })
    }

    /// Asks every replica for its record and returns the newest once `needed` replicas
    /// that hold the partition completely have answered. Replicas that answered with an
    /// older version are repaired in the background.
    pub(super) async fn read_newest(
        &self,
        key: &[u8],
        targets: &Targets,
        needed: usize,
    ) -> Result<Option<Record>, ClusterError> {
        let partition = self.inner.store.partition_of(key);
        let mut answers: Vec<(Replica, Option<Record>)> = Vec::new();
        let mut authoritative = 0;
        let mut errors = Vec::new();
        let mut calls = JoinSet::new();
        for target in &targets.targets {
            match &target.replica {
                Replica::Local => {
                    if self.holds_completely(partition) {
                        authoritative += 1;
                    }
                    answers.push((Replica::Local, self.inner.store.get_record(key)));
                }
                Replica::Remote(member) => {
                    let peers = self.inner.peers.clone();
                    let member = member.clone();
                    let request = proto::GetRequest {
                        sender: Some(self.sender()),
                        key: key.to_vec(),
                    };
                    let replica = target.replica.clone();
                    let id = member.id.clone();
                    calls.spawn(async move {
                        let reply = match peers.client_when_known(&member).await {
                            Ok(mut client) => client.get(request).await,
                            Err(status) => Err(status),
                        };
                        (replica, id, reply)
                    });
                }
            }
        }
        while authoritative < needed {
            let Some(joined) = calls.join_next().await else {
                break;
            };
            match joined {
                Ok((replica, _, Ok(reply))) => {
                    let reply = reply.into_inner();
                    if reply.authoritative {
                        authoritative += 1;
                    }
                    answers.push((replica, reply.record.map(record_from_proto)));
                }
                Ok((_, id, Err(status))) => {
                    self.peer_failed(&id, &status);
                    errors.push(format!("{id}: {}", status.message()));
                }
                Err(join) => errors.push(join.to_string()),
            }
        }
        if authoritative < needed {
            return Err(ClusterError::Unavailable {
                needed,
                acked: authoritative,
                detail: if errors.is_empty() {
                    "replicas answered but do not hold the partition completely yet".into()
                } else {
                    errors.join("; ")
                },
            });
        }
        let newest = answers
            .iter()
            .filter_map(|(_, record)| record.as_ref())
            .max_by_key(|record| record.version)
            .cloned();
        if let Some(newest) = &newest {
            let stale: Vec<Target> = answers
                .into_iter()
                .filter(|(_, record)| record.as_ref().map(|r| r.version) != Some(newest.version))
                .map(|(replica, _)| Target {
                    replica,
                    in_prev: false,
                    in_next: true,
                })
                .collect();
            if !stale.is_empty() {
                let cluster = self.clone();
                let record = newest.clone();
                let repair = Targets {
                    next_owners: stale.len(),
                    prev_owners: 0,
                    moving: false,
                    targets: stale,
                };
                tokio::spawn(async move {
                    let _ = cluster.replicate(&repair, record, Consistency::All).await;
                });
            }
        }
        Ok(newest)
    }

    /// Applies `record` on every target; succeeds once `level` is met among the `next`
    /// owners and, during a move, among the `prev` owners too. Calls still in flight then
    /// finish in the background.
    pub(super) async fn replicate(
        &self,
        targets: &Targets,
        record: Record,
        level: Consistency,
    ) -> Result<(), ClusterError> {
        let partition = self.inner.store.partition_of(&record.key);
        let need_next = level.required(targets.next_owners);
        let need_prev = if targets.moving {
            level.required(targets.prev_owners)
        } else {
            0
        };
        let (mut acked_next, mut acked_prev) = (0, 0);
        let mut errors = Vec::new();
        let mut calls = JoinSet::new();
        for target in &targets.targets {
            match &target.replica {
                Replica::Local => {
                    match self.fenced(partition, || self.inner.store.apply(&record)) {
                        Some(Ok(_)) => {
                            acked_next += usize::from(target.in_next);
                            acked_prev += usize::from(target.in_prev);
                        }
                        Some(Err(err)) => {
                            errors.push(format!("{}: {err}", self.inner.identity.node_id));
                        }
                        None => errors.push(format!(
                            "{}: draining, handing off this partition",
                            self.inner.identity.node_id
                        )),
                    }
                }
                Replica::Remote(member) => {
                    let peers = self.inner.peers.clone();
                    let request = proto::ApplyRequest {
                        sender: Some(self.sender()),
                        records: vec![record_to_proto(record.clone())],
                        hint: false,
                    };
                    let (id, in_next, in_prev) =
                        (member.id.clone(), target.in_next, target.in_prev);
                    let member = member.clone();
                    calls.spawn(async move {
                        let reply = match peers.client_when_known(&member).await {
                            Ok(mut client) => client.apply(request).await.map(|_| ()),
                            Err(status) => Err(status),
                        };
                        (id, in_next, in_prev, reply)
                    });
                }
            }
        }
        while acked_next < need_next || acked_prev < need_prev {
            let Some(joined) = calls.join_next().await else {
                break;
            };
            match joined {
                Ok((_, in_next, in_prev, Ok(()))) => {
                    acked_next += usize::from(in_next);
                    acked_prev += usize::from(in_prev);
                }
                Ok((id, _, _, Err(status))) => {
                    self.peer_failed(&id, &status);
                    errors.push(format!("{id}: {}", status.message()));
                }
                Err(join) => errors.push(join.to_string()),
            }
        }
        if !calls.is_empty() {
            // Dropping a JoinSet aborts its tasks; the remaining replicas still get the write.
            tokio::spawn(async move { while calls.join_next().await.is_some() {} });
        }
        if acked_next < need_next || acked_prev < need_prev {
            return Err(ClusterError::Unavailable {
                needed: need_next + need_prev,
                acked: acked_next.min(need_next) + acked_prev.min(need_prev),
                detail: errors.join("; "),
            });
        }
        Ok(())
    }
}
