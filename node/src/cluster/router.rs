//! The router: this node's view of the membership, and who holds each partition.
//!
//! It owns the two views a node routes by: `prev` (the last view whose owners are known
//! to hold their partitions completely) and `next` (the newest epoch). Outside a move they
//! are the same view. It answers every "who?" question about a partition: the replicas a
//! request involves ([`Router::targets`]), whether this node can answer alone, whether it
//! stores a peer's write, and whether it alone owns a partition. It never moves data.
//!
//! During a move, a key's replicas are its owners in `prev` and in `next` together:
//! - a write needs W acknowledgements from the `prev` owners (so they stay complete for
//!   reads until the move ends) and W from the `next` owners (so nothing acknowledged
//!   depends on the partition stream);
//! - a read asks everyone and counts only answers from replicas that hold the partition
//!   completely, so a new owner still pulling can add data but never a miss.

use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::watch;

use super::membership::{Member, MemberList};
use super::placement::Placement;
use super::{ClusterError, Consistency};
use kache_api::report::Role;

/// One membership epoch with its placement.
#[derive(Debug)]
pub struct View {
    pub list: MemberList,
    pub placement: Placement,
    /// This node's index in the list, if it is a member (not departing, not absent).
    pub self_index: Option<u16>,
}

impl View {
    pub(super) fn new(list: MemberList, node_id: &str) -> Self {
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

    /// Whether this node is `partition`'s only owner in this view.
    pub fn owns_alone(&self, partition: u32) -> bool {
        self.self_index
            .is_some_and(|me| self.placement.owners(partition) == [me])
    }

    /// Whether the member `id` owns `partition` in this view.
    pub fn is_owner(&self, id: &str, partition: u32) -> bool {
        self.owners(partition).any(|owner| owner.id == id)
    }

    /// The members owning `partition`, best ranked first.
    pub fn owners(&self, partition: u32) -> impl Iterator<Item = &Member> {
        self.placement
            .owners(partition)
            .iter()
            .map(|&owner| &self.list.members[usize::from(owner)])
    }

    /// Partitions this node owns in this view.
    pub fn owned(&self) -> Vec<u32> {
        self.self_index
            .map(|me| self.placement.owned_by(me).collect())
            .unwrap_or_default()
    }

    fn replica(&self, owner: u16) -> Replica {
        if Some(owner) == self.self_index {
            Replica::Local
        } else {
            Replica::Remote(self.list.members[usize::from(owner)].clone())
        }
    }
}

/// The views a node routes by: equal outside a move.
#[derive(Debug, Clone)]
pub struct Routing {
    /// The last view whose owners hold their partitions completely.
    pub prev: Arc<View>,
    /// The newest epoch.
    pub next: Arc<View>,
}

impl Routing {
    pub fn moving(&self) -> bool {
        self.prev.epoch() != self.next.epoch()
    }

    /// Whether this node owns `partition` in either view (an old owner keeps what it
    /// owned until the move completes).
    pub fn owns_in_either(&self, partition: u32) -> bool {
        self.next.owns(partition) || (self.moving() && self.prev.owns(partition))
    }
}

/// Where one copy of a key lives. A remote member's address is looked up (through
/// discovery) when it is called; one without a known address fails like a failed call.
#[derive(Debug, Clone)]
pub enum Replica {
    Local,
    Remote(Member),
}

/// A replica and the owner groups it belongs to.
#[derive(Debug, Clone)]
pub struct Target {
    pub replica: Replica,
    pub in_prev: bool,
    pub in_next: bool,
}

/// The replicas of one key, and how many owners each group has.
#[derive(Debug)]
pub struct Targets {
    pub targets: Vec<Target>,
    /// The epoch in force when they were chosen: writes to them carry it, and a replica
    /// on a newer epoch refuses them (see [`Router::admit`]).
    pub epoch: u64,
    pub moving: bool,
    pub prev_owners: usize,
    pub next_owners: usize,
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

    /// Replicas to repair, chosen on `epoch`: each counts as one `next` owner, and all
    /// must acknowledge.
    pub fn repair(replicas: Vec<Replica>, epoch: u64) -> Self {
        Self {
            epoch,
            next_owners: replicas.len(),
            prev_owners: 0,
            moving: false,
            targets: replicas
                .into_iter()
                .map(|replica| Target {
                    replica,
                    in_prev: false,
                    in_next: true,
                })
                .collect(),
        }
    }
}

/// What [`Router::admit`] decided about a write.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission<T> {
    Done(T),
    /// The sender is on an older epoch than this node's `epoch`.
    Behind {
        epoch: u64,
    },
    NotOwner,
}

/// The owner of the routing views. Readers copy two `Arc`s out and let go, so the
/// parking_lot lock is held for nanoseconds and never across an `.await`.
#[derive(Debug)]
pub struct Router {
    node_id: String,
    /// Replaced whole on every change.
    views: RwLock<Routing>,
    /// Bumped on every routing change, to wake the rebalancer and list waiters.
    changes: watch::Sender<u64>,
    /// The `prev` view comes from the first list this process received, and the peers
    /// have not been asked yet whether the cluster was moving to it
    /// ([`Router::settle_first_list`]).
    first_list: std::sync::atomic::AtomicBool,
}

impl Router {
    pub fn new(node_id: String, list: MemberList) -> Self {
        let epoch = list.epoch;
        let view = Arc::new(View::new(list, &node_id));
        Self {
            node_id,
            views: RwLock::new(Routing {
                prev: view.clone(),
                next: view,
            }),
            changes: watch::channel(epoch).0,
            first_list: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The newest view (the epoch in force).
    pub fn view(&self) -> Arc<View> {
        self.views.read().next.clone()
    }

    pub fn routing(&self) -> Routing {
        self.views.read().clone()
    }

    /// Wakes on every routing change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Installs a member list if its epoch is newer than the one in force. A move in
    /// progress keeps its `prev` view: those owners still hold the data. The first list
    /// a node receives is not a move: with no list before it, nobody owned anything, and
    /// the startup sync pulls what this node owns.
    pub fn install(&self, list: MemberList) -> bool {
        let mut views = self.views.write();
        if list.epoch <= views.next.epoch() || !list.has_members() {
            return false;
        }
        let view = Arc::new(View::new(list, &self.node_id));
        tracing::info!(
            from = views.next.epoch(),
            to = view.epoch(),
            members = view.list.members.len(),
            departing = view.list.departing.len(),
            role = ?view.role_of(&self.node_id),
            "membership changed"
        );
        let epoch = view.epoch();
        if !views.next.list.has_members() {
            views.prev = view.clone();
            self.first_list
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        views.next = view;
        drop(views);
        self.changes.send_replace(epoch);
        true
    }

    /// Marks the list the node started with (if any) as its first list: a process that
    /// starts does not know whether the cluster is in the middle of a move.
    pub fn started(&self) {
        let has_list = self.views.read().next.list.has_members();
        self.first_list
            .store(has_list, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether the views come from a first list not yet checked against the peers: the
    /// cluster may be in the middle of a move this node does not know about, so it
    /// coordinates no writes until [`Router::settle_first_list`].
    pub fn unsettled(&self) -> bool {
        self.first_list.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Settles the first list: when it arrived in the middle of a move, `prev` becomes
    /// `moving_from`, the list a peer on the same epoch moves from, and this node routes
    /// as the rest of the cluster does. Without it, a node restarted during a move took
    /// its first list for a settled one and wrote to a quorum of the new owners only,
    /// while its peers read from a quorum of the old ones: an acknowledged write could
    /// read as never made (the fault suite found it). Only once, and only a list older
    /// than the first one (if a newer list arrived meanwhile, the move to it keeps the
    /// older `prev`, as every node's superseded move does).
    pub fn settle_first_list(&self, moving_from: Option<MemberList>) -> bool {
        let mut views = self.views.write();
        let fresh = self
            .first_list
            .swap(false, std::sync::atomic::Ordering::Relaxed);
        let Some(list) = moving_from else {
            return false;
        };
        if !fresh || list.epoch >= views.prev.epoch() || !list.has_members() {
            return false;
        }
        tracing::info!(
            from = list.epoch,
            to = views.next.epoch(),
            "joined a move in progress: routing by both lists until it completes"
        );
        views.prev = Arc::new(View::new(list, &self.node_id));
        let epoch = views.next.epoch();
        drop(views);
        self.changes.send_replace(epoch);
        true
    }

    /// Ends the move to `target`: `prev` becomes `next`. Returns the view now in force,
    /// or None if a newer epoch superseded `target`.
    pub fn complete(&self, target: u64) -> Option<Arc<View>> {
        let mut views = self.views.write();
        if views.next.epoch() != target {
            return None;
        }
        views.prev = views.next.clone();
        Some(views.next.clone())
    }

    /// Tells waiters that a move to `epoch` completed.
    pub fn announce(&self, epoch: u64) {
        self.changes.send_replace(epoch);
    }

    /// Whether a request needing `level` of `partition`'s owners can be answered by this
    /// node alone: the hot path of a single node, decided without allocating.
    pub fn answerable_locally(&self, partition: u32, level: Consistency) -> bool {
        let views = self.views.read();
        if views.moving() {
            return false;
        }
        let owners = views.next.placement.owners(partition);
        views.next.owns(partition) && level.required(owners.len()) == 1
    }

    /// Runs `write` (a write to `partition` from a coordinator that chose its replicas on
    /// `sender_epoch`) if this node should store it, with the routing held still so that
    /// no newer list is installed in between:
    /// - a sender on an older epoch than this node is refused ([`Admission::Behind`]): its
    ///   replicas come from a list no longer in force, and a write that reached only the
    ///   old owners after the new owners caught up would be dropped when the move
    ///   completes (issue 10, item 8). It learns the newer list and writes again;
    /// - otherwise this node stores it as an owner in `prev` or `next`, or unconditionally
    ///   when the sender has seen a newer epoch (this node is behind, and may be a new
    ///   owner);
    /// - else the partition is not this node's any more ([`Admission::NotOwner`]): the
    ///   sender, on the same epoch, writes to the new owners too.
    pub fn admit<T>(
        &self,
        partition: u32,
        sender_epoch: u64,
        write: impl FnOnce() -> T,
    ) -> Admission<T> {
        let views = self.views.read();
        let epoch = views.next.epoch();
        if sender_epoch < epoch {
            Admission::Behind { epoch }
        } else if sender_epoch > epoch || views.owns_in_either(partition) {
            Admission::Done(write())
        } else {
            Admission::NotOwner
        }
    }

    /// Runs `write` if this node owns `partition` in either view, with the routing held
    /// still while it runs. Pulled records go through here: a pull that began while the
    /// node owned the partition (an anti-entropy round, a catch-up) may still deliver after
    /// a move took it away and dropped it, and storing them would leave a copy nobody
    /// owns (a departing node could never report itself handed off).
    pub fn if_holder<T>(&self, partition: u32, write: impl FnOnce() -> T) -> Option<T> {
        let views = self.views.read();
        views.owns_in_either(partition).then(write)
    }

    /// Runs `write` if this node is `partition`'s only copy (see
    /// [`Self::answerable_locally`]), with the routing held still while it runs: a list
    /// installed meanwhile could hand the partition to a new owner that has already
    /// caught up.
    pub fn if_alone<T>(&self, partition: u32, write: impl FnOnce() -> T) -> Option<T> {
        let views = self.views.read();
        let owners = views.next.placement.owners(partition);
        let alone = !views.moving()
            && views.next.owns(partition)
            && Consistency::All.required(owners.len()) == 1;
        alone.then(write)
    }

    /// Whether this node owns `partition` in either view (see [`Routing::owns_in_either`]).
    pub fn owns_in_either(&self, partition: u32) -> bool {
        self.views.read().owns_in_either(partition)
    }

    /// Whether this node is `partition`'s only owner in the epoch in force.
    pub fn owns_alone(&self, partition: u32) -> bool {
        self.views.read().next.owns_alone(partition)
    }

    /// Whether this node holds `partition` completely, given the newest epoch it fully
    /// holds (None before its startup sync): an owner in `prev` during a move (it keeps
    /// everything until the move completes), or an owner in `next` that has synced for it.
    pub fn holds_completely(&self, partition: u32, synced_epoch: Option<u64>) -> bool {
        let Some(synced_epoch) = synced_epoch else {
            return false;
        };
        let views = self.views.read();
        (views.moving() && views.prev.owns(partition))
            || (views.next.owns(partition) && synced_epoch >= views.next.epoch())
    }

    /// The replicas of `partition`. A node without a member list yet knows no owners:
    /// that is an error, never an empty answer.
    pub fn targets(&self, partition: u32) -> Result<Targets, ClusterError> {
        let views = self.routing();
        if !views.next.list.has_members() {
            return Err(ClusterError::Unavailable {
                needed: 1,
                acked: 0,
                detail: "this node has no member list yet".into(),
            });
        }
        let next_owners = views.next.placement.owners(partition);
        let mut targets: Vec<Target> = next_owners
            .iter()
            .map(|&owner| Target {
                replica: views.next.replica(owner),
                in_prev: false,
                in_next: true,
            })
            .collect();
        let moving = views.moving();
        let prev_owners = views.prev.placement.owners(partition);
        if moving {
            for &owner in prev_owners {
                let candidate = views.prev.replica(owner);
                let id = self.replica_id(&candidate).to_owned();
                match targets
                    .iter_mut()
                    .find(|t| self.replica_id(&t.replica) == id)
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
            epoch: views.next.epoch(),
            moving,
            prev_owners: prev_owners.len(),
            next_owners: next_owners.len(),
        })
    }

    fn replica_id<'a>(&'a self, replica: &'a Replica) -> &'a str {
        match replica {
            Replica::Local => &self.node_id,
            Replica::Remote(member) => &member.id,
        }
    }
}
