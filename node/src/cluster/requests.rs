//! The client request path: how a GET, PUT or DELETE reaches a key's replicas.
//!
//! A PUT reads top-down from here: [`Cluster::put`] takes the single-owner fast path
//! (the store, under the drain fence) when this node is the key's only copy; otherwise it
//! asks the router for the replicas, checks the precondition against a quorum read,
//! has the store mint the record, and [`Cluster::replicate`]s it, which hands the remote
//! replicas to the replicator's fan-out (`replicator.rs`). A write that replicas refuse
//! because they hold a newer version is tried again with a newer one (this node's clock
//! has folded theirs in by then), never acknowledged as if it had landed. A read that
//! finds replicas behind repairs them before it answers, so quorum reads never go
//! backwards.
//!
//! With `--fsync always`, this node's own copy of a write is on disk only once
//! [`crate::store::Store::durable`] says so. The protocol layers await it before they
//! answer (HTTP's PUT, DELETE and batch handlers; RESP before it writes the replies of a
//! pipeline holding a write, one sync for the whole pipeline, as Redis does), and a
//! replica's `Apply` handler before it acknowledges. So every copy counted in an
//! acknowledgement the client sees is on disk.

use std::time::Duration;

use super::membership::Member;
use super::peer::PeerClients;
use super::replicator::{ReadTally, Rest, Spread, WriteTally};
use super::router::{Admission, Replica, Targets};
use super::wire::proto;
use super::{Cluster, ClusterError, Consistency, WRITE_ATTEMPTS};
use crate::store::{Applied, Found, Precondition, Record, StoreError, Value, Written};

/// How long a write waits for this node to learn a member list a replica is already on.
const LEARN_EPOCH: Duration = Duration::from_secs(2);
/// Stripes of [`WriteOrder`]: enough that unrelated keys rarely share one.
const WRITE_STRIPES: usize = 4096;

/// A write as its first attempt decided it: the record (and, for a PUT, whether the key
/// was absent). When replicas on a newer member list refuse it ([`Cluster::on_current_epoch`]),
/// the retry re-sends this record to the new replicas rather than deciding again: reading
/// again would find this write's own copies on the replicas that took it, and answer as
/// if the key had been there before (a DELETE 404 and a RESP `DEL` 0 for a key that
/// existed, a conditional PUT 412: the RESP client tests caught it at epoch changes). A
/// std mutex, locked only to copy the record in or out.
#[derive(Debug, Default)]
struct Decided(std::sync::Mutex<Option<(Record, bool)>>);

impl Decided {
    fn make(&self, record: &Record, created: bool) {
        if let Ok(mut made) = self.0.lock() {
            *made = Some((record.clone(), created));
        }
    }

    fn take(&self) -> Option<(Record, bool)> {
        self.0.lock().ok().and_then(|mut made| made.take())
    }

    fn is_made(&self) -> bool {
        self.0.lock().is_ok_and(|made| made.is_some())
    }
}

/// Replicated writes this node coordinates for one key run one at a time.
///
/// Two concurrent writes to a key through one coordinator mint versions v1 < v2 and can
/// reach a replica in the other order; that replica then refuses v1 as stale, and v1 is
/// tried again with a newer version (see `Superseded`). With 20 clients writing one hot
/// key through one node (`redis-benchmark --cluster` does exactly that) three attempts
/// were not enough, and writes failed with TRYAGAIN though nothing was wrong. Ordering
/// them here costs a hot key one replication round trip per write, and nothing for
/// distinct keys (4096 stripes). Writes to one key through different coordinators
/// still race and retry as before.
#[derive(Debug)]
pub(super) struct WriteOrder {
    stripes: Box<[tokio::sync::Mutex<()>]>,
}

impl Default for WriteOrder {
    fn default() -> Self {
        Self {
            stripes: (0..WRITE_STRIPES)
                .map(|_| tokio::sync::Mutex::new(()))
                .collect(),
        }
    }
}

impl WriteOrder {
    /// Waits for the writes to `key`'s stripe ahead of this one. A tokio mutex: it is
    /// held across the replication's awaits.
    async fn lock(&self, key: &[u8]) -> tokio::sync::MutexGuard<'_, ()> {
        let stripes = self.stripes.len() as u64;
        let stripe = usize::try_from(crate::store::key_hash(key) % stripes).unwrap_or(0);
        self.stripes[stripe].lock().await
    }
}

/// How long a read that needs one answer waits for the replica it asked before it asks
/// the next one too. Well above a peer round trip (a forwarded GET's p99 was about 3 ms
/// on the benchmark VM under full load), so it fires for a stalled replica, not a busy one.
const READ_HEDGE: Duration = Duration::from_millis(20);

/// Which replicas a read asks. One that needs a single answer asks one replica, and
/// the next only when it fails, answers without holding the partition completely, or
/// is slow (it used to ask all of them and drop all but the first answer: RF peer calls
/// for one). Reads that need more ask every replica at once, so their answers, and the
/// read repair they trigger, are what they were.
fn read_spread(needed: usize) -> Spread {
    if needed == 1 {
        Spread::AsNeeded { hedge: READ_HEDGE }
    } else {
        Spread::All
    }
}

impl Cluster {
    /// Reads `key` from the owners the consistency level asks for; the newest version wins.
    pub async fn get(
        &self,
        key: &[u8],
        consistency: Option<Consistency>,
    ) -> Result<Option<Value>, ClusterError> {
        self.get_with(key, consistency, |found| {
            found.map(|found| found.to_value())
        })
        .await
    }

    /// Like [`Cluster::get`], handing `read` the newest live entry instead of a copy of
    /// it. When this node answers alone, `read` runs under the store's partition lock
    /// (see [`crate::store::Store::read`]): the RESP listener writes a GET's value straight
    /// into its reply, one copy fewer per read.
    pub async fn get_with<R>(
        &self,
        key: &[u8],
        consistency: Option<Consistency>,
        read: impl FnOnce(Option<Found<'_>>) -> R,
    ) -> Result<R, ClusterError> {
        let level = consistency.unwrap_or(self.inner.defaults.read);
        let partition = self.inner.store.partition_of(key);
        if self.inner.router.answerable_locally(partition, level) {
            return Ok(self.inner.store.read(key, read));
        }
        // A read repair that met a replica on a newer list reads again by that list.
        let newest = self
            .on_current_epoch(|| async move {
                let targets = self.inner.router.targets(partition)?;
                let needed = level.required(targets.read_group_size());
                self.read_newest(key, &targets, needed).await
            })
            .await;
        self.count_outcome(partition, &newest);
        let newest = newest?;
        let now = self.inner.store.now_ms();
        Ok(read(newest.as_ref().filter(|r| !r.tombstone).map(
            |record| Found {
                data: &record.value,
                version: record.version,
                ttl: record.ttl_at(now),
            },
        )))
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
        let decided = Decided::default();
        let written = self
            .on_current_epoch(|| {
                self.put_once(key, value, ttl, precondition, consistency, &decided)
            })
            .await;
        self.count_outcome(self.inner.store.partition_of(key), &written);
        written
    }

    /// One [`Cluster::put`] on the routing in force.
    async fn put_once(
        &self,
        key: &[u8],
        value: &[u8],
        ttl: Option<Duration>,
        precondition: &Precondition,
        consistency: Option<Consistency>,
        decided: &Decided,
    ) -> Result<Written, ClusterError> {
        let partition = self.inner.store.partition_of(key);
        if !decided.is_made() {
            let alone = self.write_alone(partition, || {
                self.inner.store.put(key, value, ttl, precondition)
            })?;
            if let Some(written) = alone {
                return Ok(written);
            }
        }
        let _ordered = self.inner.write_order.lock(key).await;
        let targets = self.inner.router.targets(partition)?;
        let level = consistency.unwrap_or(self.inner.defaults.write);
        let mut attempt = 1;
        loop {
            let (record, created) = match decided.take() {
                // A retry on a newer member list: the same write, to the new replicas.
                Some(made) if attempt == 1 => made,
                _ => {
                    let created = self.check_precondition(key, &targets, precondition).await?;
                    (self.inner.store.new_put(key, value, ttl), created)
                }
            };
            decided.make(&record, created);
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
        let decided = Decided::default();
        let deleted = self
            .on_current_epoch(|| self.delete_once(key, precondition, consistency, &decided))
            .await;
        self.count_outcome(self.inner.store.partition_of(key), &deleted);
        deleted
    }

    /// Counts a key request's outcome in the metrics: a request too few replicas
    /// answered (503 `replicas_unavailable`), and one this node served without holding a
    /// copy of the key, which went to the owners alone (an answer from them, found or
    /// not, a precondition failed, is "ok"; "error" is a request they did not answer
    /// enough of). Nothing is read on the path of a local success.
    fn count_outcome<T>(&self, partition: u32, result: &Result<T, ClusterError>) {
        let metrics = &self.inner.metrics;
        if matches!(result, Err(ClusterError::Unavailable { .. })) {
            metrics.quorum_failed();
        }
        if self.inner.router.owns_in_either(partition) {
            return;
        }
        let ok = matches!(result, Ok(_) | Err(ClusterError::Store(_)));
        metrics.forwarded(self.via, ok);
    }

    /// One [`Cluster::delete`] on the routing in force.
    async fn delete_once(
        &self,
        key: &[u8],
        precondition: &Precondition,
        consistency: Option<Consistency>,
        decided: &Decided,
    ) -> Result<(), ClusterError> {
        let partition = self.inner.store.partition_of(key);
        if !decided.is_made() {
            let alone =
                self.write_alone(partition, || self.inner.store.delete(key, precondition))?;
            if alone.is_some() {
                return Ok(());
            }
        }
        let _ordered = self.inner.write_order.lock(key).await;
        let targets = self.inner.router.targets(partition)?;
        let level = consistency.unwrap_or(self.inner.defaults.write);
        let read_needed = level.required(targets.read_group_size());
        let mut attempt = 1;
        loop {
            let tombstone = match decided.take() {
                // A retry on a newer member list: the same tombstone, to the new replicas.
                Some((tombstone, _)) if attempt == 1 => tombstone,
                _ => {
                    let current = self.read_newest(key, &targets, read_needed).await?;
                    let live = current.filter(|r| !r.tombstone).map(|r| r.version);
                    precondition.check(live)?;
                    if live.is_none() {
                        return Err(StoreError::NotFound.into());
                    }
                    self.inner.store.new_tombstone(key)
                }
            };
            decided.make(&tombstone, false);
            match self.replicate(&targets, tombstone, level).await {
                Err(ClusterError::Superseded { .. }) if attempt < WRITE_ATTEMPTS => attempt += 1,
                done => return done,
            }
        }
    }

    /// Runs `attempt` until no replica refuses it for being on a newer member list than
    /// the one its replicas were chosen on (`ClusterError::Behind`): each time one does,
    /// this node learns that list ([`Self::learn_epoch`]) and tries again by it, so a
    /// membership change delays a request, it does not fail it.
    async fn on_current_epoch<T, Fut>(
        &self,
        mut attempt: impl FnMut() -> Fut,
    ) -> Result<T, ClusterError>
    where
        Fut: Future<Output = Result<T, ClusterError>>,
    {
        let mut relearned = 0;
        loop {
            match attempt().await {
                Err(ClusterError::Behind { epoch }) if relearned < WRITE_ATTEMPTS => {
                    relearned += 1;
                    self.learn_epoch(epoch).await?;
                }
                done => return done,
            }
        }
    }

    /// Waits until this node's member list is at `epoch` or newer: a replica refused a
    /// request because it is on that epoch already (`ClusterError::Behind`).
    async fn learn_epoch(&self, epoch: u64) -> Result<(), ClusterError> {
        let mut changes = self.inner.router.changes();
        let learned = tokio::time::timeout(LEARN_EPOCH, async {
            while self.view().epoch() < epoch {
                if changes.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        if learned.is_ok() && self.view().epoch() >= epoch {
            return Ok(());
        }
        Err(ClusterError::Unavailable {
            needed: 1,
            acked: 0,
            detail: format!(
                "replicas are on member-list epoch {epoch}; this node is still on {} after {LEARN_EPOCH:?}",
                self.view().epoch()
            ),
        })
    }

    /// The single-owner fast path: when this node is `partition`'s only copy, `write`
    /// runs on the local store (which checks preconditions atomically) under the drain
    /// fence. None: the write goes to the replicas. Every write starts here, so a node
    /// that has not yet asked its peers whether a move is in progress
    /// ([`super::router::Router::unsettled`]) refuses them all. A write to a partition this draining
    /// node alone owns would miss the hand-off, and is refused either way.
    fn write_alone<T>(
        &self,
        partition: u32,
        write: impl FnOnce() -> Result<T, StoreError>,
    ) -> Result<Option<T>, ClusterError> {
        self.check_clock()?;
        if self.inner.router.unsettled() {
            return Err(ClusterError::Unavailable {
                needed: 1,
                acked: 0,
                detail: format!(
                    "{} just started and is learning whether a membership move is in progress; it coordinates no writes yet",
                    self.inner.identity.node_id
                ),
            });
        }
        if self.refuses_writes_while_draining(partition) {
            return Err(self.draining_error(partition));
        }
        let Some(fenced) = self
            .inner
            .router
            .if_alone(partition, || self.fenced(partition, write))
        else {
            return Ok(None);
        };
        let written = fenced.ok_or_else(|| self.draining_error(partition))?;
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
    /// older version are repaired before it returns. A repair refused because a replica
    /// is on a newer member list fails the read with `Behind` (the caller reads again by
    /// that list) unless the newest is already on as many replicas as a read needs.
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
            request_id: crate::request_id::for_peer(),
        };
        let call = |peers: PeerClients, member: Member| {
            let (request, cluster) = (request.clone(), self.clone());
            async move {
                let reply = peers.get(&member, request).await?;
                cluster.observe_clock(&member.id, reply.wall_ms);
                Ok(reply)
            }
        };
        let errors = self
            .inner
            .replicator
            .fan_out(
                remotes,
                call,
                &mut tally,
                read_spread(needed),
                Rest::Abandon,
            )
            .await;
        let (newest, stale, fresh) = tally.finish_counted(&errors)?;
        if let Some(newest) = &newest {
            // Fold what was read into the clock: a write after this read orders after it
            // (a conditional write, a delete), however far behind this node's clock is.
            self.fold(newest.version.hlc);
        }
        if let Some(newest) = &newest
            && !stale.is_empty()
        {
            // Blocking read repair: every replica that answered holds the newest version
            // before it is returned, so the answering quorum holds it, and no later quorum
            // read can return anything older (reads never go backwards). The replicas
            // just answered, so this is one more round trip, and only on disagreement.
            let repair = Targets::repair(stale, targets.epoch);
            match self
                .replicate(&repair, newest.clone(), Consistency::All)
                .await
            {
                // A replica took a newer write meanwhile: a concurrent one, which this
                // read may order either way.
                Ok(()) | Err(ClusterError::Superseded { .. }) => {}
                // A replica is on a newer member list, so the replicas were chosen on an
                // old one and the newest version may be on fewer of them than a later
                // quorum read meets: it would go backwards (the fault suite's soak caught
                // it). Unless it is already on enough, read again by the newer list.
                Err(err @ ClusterError::Behind { .. }) if fresh < needed => return Err(err),
                // Otherwise (a replica down, or out of its clock bound) the read answers as
                // before and anti-entropy finishes the repair. If the newest came from a
                // write still under way and held by fewer than a quorum, a later read may
                // not see it yet: a known gap, not closed here.
                Err(err) => {
                    tracing::debug!(error = %err, "read repair incomplete");
                }
            }
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
                    match self.admit(partition, targets.epoch, || self.inner.store.apply(&record)) {
                        Admission::Done(Some(Ok(Applied::Stored))) | Admission::NotOwner => {
                            tally.ack(groups);
                        }
                        Admission::Done(Some(Ok(Applied::Stale))) => {
                            let held = self.inner.store.get_record(&record.key);
                            match held {
                                // This very version, stored by an earlier attempt.
                                Some(held) if held.version == record.version => tally.ack(groups),
                                held => tally.stale(held.map_or(0, |r| r.version.hlc)),
                            }
                        }
                        Admission::Done(Some(Err(err))) => errors.push(format!("{node_id}: {err}")),
                        Admission::Done(None) => {
                            errors.push(format!("{node_id}: draining, handing off this partition"));
                        }
                        // This node learned a newer list since the replicas were chosen: choose
                        // again before any of them gets the write.
                        Admission::Behind { epoch } => return Err(ClusterError::Behind { epoch }),
                    }
                }
                Replica::Remote(member) => remotes.push((member.clone(), groups)),
            }
        }
        // The epoch the replicas were chosen on, not the one in force now: a replica on a
        // newer one must refuse (see `Router::admit`).
        let mut sender = self.sender();
        sender.epoch = targets.epoch;
        let request = proto::ApplyRequest {
            sender: Some(sender),
            records: vec![record.into()],
            hint: false,
            request_id: crate::request_id::for_peer(),
        };
        let call = |peers: PeerClients, member: Member| {
            let (request, cluster) = (request.clone(), self.clone());
            async move {
                let reply = peers.apply(&member, request).await?;
                cluster.observe_clock(&member.id, reply.wall_ms);
                Ok(reply)
            }
        };
        let failed = self
            .inner
            .replicator
            .fan_out(remotes, call, &mut tally, Spread::All, Rest::Finish)
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
