//! The replicator: calls a key's remote replicas at once and counts their answers.
//!
//! Reads, writes and read repair share one skeleton, [`Replicator::fan_out`]: call every
//! remote replica concurrently, feed each answer to a [`Tally`] until it has enough, and
//! collect the errors of the ones that failed. The tallies say what "enough" means:
//! - [`ReadTally`]: `needed` answers from replicas that hold the partition completely;
//!   the newest version wins, and replicas that answered older are repaired.
//! - [`WriteTally`]: W acknowledgements among the `next` owners and, during a move, W
//!   among the `prev` owners too.
//!
//! A failed call is an error in the tally's final answer, never "no data"; it also tells
//! the peer pool, so discovery looks again at an address that stopped answering.

use std::future::Future;

use futures::stream::{FuturesUnordered, StreamExt};
use tonic::Status;
use tracing::Instrument;

use super::membership::Member;
use super::peer::PeerClients;
use super::router::{Replica, Targets};
use super::wire::proto;
use super::{ClusterError, Consistency};
use crate::store::Record;

/// Counts the answers of one fan-out.
pub trait Tally<K, T> {
    /// The replica tagged `tag` answered `reply`.
    fn record(&mut self, tag: K, reply: T);
    /// Whether the answers so far are enough to stop waiting.
    fn enough(&self) -> bool;
    /// How many more answers could make it enough, at best ([`Spread::AsNeeded`] keeps
    /// that many calls in flight). Unknown by default: call every replica.
    fn missing(&self) -> usize {
        usize::MAX
    }
}

/// What happens to calls still in flight once the tally has enough.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rest {
    /// Drop them: their answers no longer matter (reads).
    Abandon,
    /// Let them finish in the background: the remaining replicas still get the write.
    Finish,
}

/// Which replicas a fan-out calls, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spread {
    /// Every replica at once (writes, and reads that need more than one answer).
    All,
    /// As many as the tally still misses, in the order given; the next one whenever a
    /// call fails or answers without counting, or when `hedge` passes without an answer.
    AsNeeded { hedge: std::time::Duration },
}

/// The peer pool, and the one way of calling several replicas at once.
#[derive(Debug)]
pub struct Replicator {
    peers: PeerClients,
}

impl Replicator {
    pub fn new(peers: PeerClients) -> Self {
        Self { peers }
    }

    pub fn peers(&self) -> &PeerClients {
        &self.peers
    }

    /// Calls `call` on the members of `remotes` (every one at once, or as `spread` says)
    /// and feeds each answer, with the member's tag, to `tally` until it has enough or
    /// every call has ended. Returns the errors of the calls that failed, as
    /// `member: message`.
    ///
    /// The calls run in the caller's task (no task per call): a forwarded request's calls
    /// are a peer round trip each, and a spawn per call was a measurable part of its cost.
    /// With [`Rest::Finish`], the calls still in flight move to one background task.
    pub async fn fan_out<K, T, F, Fut>(
        &self,
        remotes: Vec<(Member, K)>,
        call: F,
        tally: &mut impl Tally<K, T>,
        spread: Spread,
        rest: Rest,
    ) -> Vec<String>
    where
        K: Send + 'static,
        T: Send + 'static,
        F: Fn(PeerClients, Member) -> Fut,
        Fut: Future<Output = Result<T, Status>> + Send + 'static,
    {
        let start = |(member, tag): (Member, K)| {
            let reply = call(self.peers.clone(), member.clone());
            async move { (member.id, tag, reply.await) }
        };
        let mut waiting = remotes.into_iter();
        let mut calls = FuturesUnordered::new();
        let hedge = match spread {
            Spread::All => {
                calls.extend(waiting.by_ref().map(start));
                None
            }
            Spread::AsNeeded { hedge } => Some(hedge),
        };
        let mut errors = Vec::new();
        while !tally.enough() {
            if hedge.is_some() {
                // As many calls in flight as answers still missing (one has failed or
                // answered without counting: the next replica takes its place).
                let missing = tally.missing().saturating_sub(calls.len());
                calls.extend(waiting.by_ref().take(missing).map(start));
            }
            let next = match hedge {
                Some(delay) if waiting.len() > 0 => tokio::select! {
                    next = calls.next() => next,
                    () = tokio::time::sleep(delay) => {
                        // Slow, not failed: ask one more replica as well.
                        calls.extend(waiting.next().map(start));
                        continue;
                    }
                },
                _ => calls.next().await,
            };
            let Some((id, tag, reply)) = next else {
                break;
            };
            match reply {
                Ok(reply) => tally.record(tag, reply),
                Err(status) => {
                    self.peers.failed(&id, &status);
                    errors.push(format!("{id}: {}", status.message()));
                }
            }
        }
        if rest == Rest::Finish && !calls.is_empty() {
            // In the request's span still: what the calls log belongs to it.
            tokio::spawn(async move { while calls.next().await.is_some() {} }.in_current_span());
        }
        errors
    }
}

/// A quorum read: the newest record among `needed` complete replicas.
#[derive(Debug)]
pub struct ReadTally {
    needed: usize,
    /// Answers from replicas that hold the partition completely.
    authoritative: usize,
    answers: Vec<(Replica, Option<Record>)>,
}

impl ReadTally {
    pub fn new(needed: usize) -> Self {
        Self {
            needed,
            authoritative: 0,
            answers: Vec::new(),
        }
    }

    /// `replica` answered `record`; `authoritative` if it holds the partition completely,
    /// so that its "absent" means absent.
    pub fn answer(&mut self, replica: Replica, authoritative: bool, record: Option<Record>) {
        self.authoritative += usize::from(authoritative);
        self.answers.push((replica, record));
    }

    /// The newest record (None: absent everywhere that counts) and the replicas that
    /// answered something older, to repair; or why there were not enough answers.
    pub fn finish(self, errors: &[String]) -> Result<(Option<Record>, Vec<Replica>), ClusterError> {
        self.finish_counted(errors)
            .map(|(newest, stale, _)| (newest, stale))
    }

    /// Like [`Self::finish`], with how many replicas answered the newest record already.
    pub fn finish_counted(
        self,
        errors: &[String],
    ) -> Result<(Option<Record>, Vec<Replica>, usize), ClusterError> {
        if self.authoritative < self.needed {
            return Err(ClusterError::Unavailable {
                needed: self.needed,
                acked: self.authoritative,
                detail: if errors.is_empty() {
                    "replicas answered but do not hold the partition completely yet".into()
                } else {
                    errors.join("; ")
                },
            });
        }
        let newest = self
            .answers
            .iter()
            .filter_map(|(_, record)| record.as_ref())
            .max_by_key(|record| record.version)
            .cloned();
        let Some(newest_version) = newest.as_ref().map(|r| r.version) else {
            let answered = self.answers.len();
            return Ok((None, Vec::new(), answered));
        };
        let answered = self.answers.len();
        let stale: Vec<Replica> = self
            .answers
            .into_iter()
            .filter(|(_, record)| record.as_ref().map(|r| r.version) != Some(newest_version))
            .map(|(replica, _)| replica)
            .collect();
        let fresh = answered - stale.len();
        Ok((newest, stale, fresh))
    }
}

impl Tally<Replica, proto::GetResponse> for ReadTally {
    fn record(&mut self, replica: Replica, reply: proto::GetResponse) {
        self.answer(replica, reply.authoritative, reply.record.map(Record::from));
    }

    fn enough(&self) -> bool {
        self.authoritative >= self.needed
    }

    fn missing(&self) -> usize {
        self.needed.saturating_sub(self.authoritative)
    }
}

/// Which owner groups an acknowledging replica belongs to: `(in_next, in_prev)`.
pub type Groups = (bool, bool);

/// A write: `level` among the `next` owners and, during a move, among the `prev` owners.
/// A replica that kept a newer version did not take the write: it is no acknowledgement.
#[derive(Debug)]
pub struct WriteTally {
    need_next: usize,
    need_prev: usize,
    acked_next: usize,
    acked_prev: usize,
    /// Replicas that held a newer version, and the newest they named.
    stale: usize,
    newer_hlc: u64,
    /// The newest epoch a replica refused the write on (0: none did).
    behind: u64,
}

impl WriteTally {
    pub fn new(targets: &Targets, level: Consistency) -> Self {
        Self {
            need_next: level.required(targets.next_owners),
            need_prev: if targets.moving {
                level.required(targets.prev_owners)
            } else {
                0
            },
            acked_next: 0,
            acked_prev: 0,
            stale: 0,
            newer_hlc: 0,
            behind: 0,
        }
    }

    /// A replica kept a newer version (`newer_hlc`, 0 if it did not say) instead.
    pub fn stale(&mut self, newer_hlc: u64) {
        self.stale += 1;
        self.newer_hlc = self.newer_hlc.max(newer_hlc);
    }

    /// A replica in the `(in_next, in_prev)` groups stored the write.
    pub fn ack(&mut self, (in_next, in_prev): Groups) {
        self.acked_next += usize::from(in_next);
        self.acked_prev += usize::from(in_prev);
    }

    /// Ok once both groups met the level. Otherwise `Superseded` when replicas kept a
    /// newer version (worth a retry with a newer one), or what was missing.
    pub fn finish(self, errors: &[String]) -> Result<(), ClusterError> {
        if self.enough() {
            return Ok(());
        }
        if self.behind > 0 {
            return Err(ClusterError::Behind { epoch: self.behind });
        }
        if self.stale > 0 {
            return Err(ClusterError::Superseded {
                newer_hlc: self.newer_hlc,
            });
        }
        Err(ClusterError::Unavailable {
            needed: self.need_next + self.need_prev,
            acked: self.acked_next.min(self.need_next) + self.acked_prev.min(self.need_prev),
            detail: errors.join("; "),
        })
    }
}

impl Tally<Groups, proto::ApplyResponse> for WriteTally {
    /// Stored, or not this replica's partition any more (the sender, on the same epoch,
    /// writes to the new owners too): an acknowledgement. Refused because the sender's
    /// epoch is older than the replica's, or kept a newer version: not.
    fn record(&mut self, groups: Groups, reply: proto::ApplyResponse) {
        if reply.epoch_behind > 0 {
            self.behind = self.behind.max(reply.epoch);
        } else if reply.applied > 0 || reply.not_owner > 0 {
            self.ack(groups);
        } else {
            self.stale(reply.newer_hlc);
        }
    }

    fn enough(&self) -> bool {
        self.acked_next >= self.need_next && self.acked_prev >= self.need_prev
    }
}

#[cfg(test)]
mod tests;
