//! Lease-based leader election, so two operator replicas never both write member lists.
//!
//! It follows client-go's `leaderelection` package. The rules:
//! - **No clock is compared with another machine's.** The Lease's `renewTime` and
//!   `acquireTime` are written for people reading `kubectl get lease`; no decision reads
//!   them. A candidate remembers, on its own monotonic clock, when it last saw the record
//!   change (holder, times, duration, transitions or resourceVersion). It takes a Lease
//!   held by another only when the record has not changed for the Lease's
//!   `leaseDurationSeconds` by that clock. A holder whose wall clock is hours off, ahead
//!   or behind, is neither deposed early nor kept late.
//! - **One winner.** Every write carries the resourceVersion it read, so of two
//!   candidates racing for an expired Lease exactly one wins; the other gets a conflict.
//! - **A leader that cannot renew stops first.** It renews every `RENEW`. If it cannot
//!   renew before a standby could take over (measured from its own last renewal, on its
//!   own clock), it stops leading (the process exits and restarts as a candidate).
//! - **A leader that stops releases.** On shutdown, after the controller has stopped
//!   writing, the leader clears the holder and shortens the duration to one second, as
//!   client-go's `ReleaseOnCancel` does: a standby takes over at once instead of waiting
//!   out the lease. A leader killed without its grace period cannot release; the standby
//!   then waits one lease duration.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use tokio::time::Instant;

use crate::{Error, Result};

/// How long a lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews.
pub const RENEW: Duration = Duration::from_secs(5);
/// How often a candidate tries to acquire.
pub const RETRY: Duration = Duration::from_secs(2);
/// The duration a released Lease announces (client-go writes 1 s too). The holder is
/// empty, so a candidate takes it at once anyway; the short duration is for other
/// clients that still judge by it.
const RELEASED_DURATION_SECONDS: i32 = 1;
/// How long a release may take on shutdown before the process exits without it.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
    /// What this candidate last saw of the Lease. A std (parking_lot) Mutex: it is held
    /// only to compare and note a record, never across an API call.
    seen: Arc<Mutex<Observer>>,
}

/// What one attempt at the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Leading,
    HeldBy(String),
}

/// The Lease as one read showed it. Any change to it means its holder is alive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    pub spec: LeaseSpec,
    pub resource_version: Option<String>,
}

impl Record {
    pub fn of(lease: &Lease) -> Self {
        Self {
            spec: lease.spec.clone().unwrap_or_default(),
            resource_version: lease.metadata.resource_version.clone(),
        }
    }

    fn holder(&self) -> Option<&str> {
        self.spec
            .holder_identity
            .as_deref()
            .filter(|holder| !holder.is_empty())
    }

    /// The duration the holder announced, at least one second.
    fn duration(&self) -> Duration {
        let seconds = self
            .spec
            .lease_duration_seconds
            .map_or(LEASE_DURATION.as_secs(), |s| u64::try_from(s).unwrap_or(0));
        Duration::from_secs(seconds.max(1))
    }
}

/// What a candidate may do with the Lease it just read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Write itself as holder, with this transition count. `renew` when it already
    /// holds the Lease (its acquire time stays).
    Write { transitions: i32, renew: bool },
    /// Another holder is alive, as far as this candidate's own clock can tell.
    Wait { holder: String },
}

/// When this candidate last saw the Lease change, on its own monotonic clock.
#[derive(Debug, Default)]
pub struct Observer {
    last: Option<(Record, Instant)>,
}

impl Observer {
    /// Notes `record`, read at `now` on this process's clock, and decides. Only the
    /// time since the record last changed counts, never the times written in it.
    pub fn decide(&mut self, record: Record, identity: &str, now: Instant) -> Decision {
        let transitions = record.spec.lease_transitions.unwrap_or(0);
        let holder = record.holder().map(str::to_owned);
        let duration = record.duration();
        let changed_at = self.note(record, now);
        match holder {
            Some(holder) if holder == identity => Decision::Write {
                transitions,
                renew: true,
            },
            Some(holder) if now.saturating_duration_since(changed_at) < duration => {
                Decision::Wait { holder }
            }
            // Free (released or never held), or unchanged for a whole duration.
            _ => Decision::Write {
                transitions: transitions + 1,
                renew: false,
            },
        }
    }

    /// Remembers `record` and returns when it last changed.
    pub fn note(&mut self, record: Record, now: Instant) -> Instant {
        match &self.last {
            Some((seen, at)) if *seen == record => *at,
            _ => {
                self.last = Some((record, now));
                now
            }
        }
    }
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            seen: Arc::default(),
        }
    }

    /// Waits until this replica leads.
    pub async fn acquire(&self) -> Result<()> {
        let mut last_holder = None;
        loop {
            match self.try_acquire().await {
                Ok(Attempt::Leading) => {
                    tracing::info!(lease = %self.name, identity = %self.identity, "leading");
                    return Ok(());
                }
                Ok(Attempt::HeldBy(holder)) => {
                    if last_holder.as_ref() != Some(&holder) {
                        tracing::info!(lease = %self.name, %holder, "standing by: another replica leads");
                        last_holder = Some(holder);
                    }
                }
                Err(error) => tracing::warn!(%error, "leader election attempt failed"),
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Runs `work` while this replica leads. When `work` ends (the operator is shutting
    /// down and the controller has stopped writing), releases the Lease so a standby
    /// takes over at once. Returns an error as soon as leadership is lost; `work` is
    /// then dropped.
    pub async fn run_while_leading(&self, work: impl Future<Output = ()>) -> Result<()> {
        tokio::select! {
            () = work => {
                match tokio::time::timeout(RELEASE_TIMEOUT, self.release()).await {
                    Ok(Ok(true)) => tracing::info!(lease = %self.name, "released the leader lease"),
                    Ok(Ok(false)) => {}
                    Ok(Err(error)) => tracing::warn!(%error, "could not release the leader lease; a standby takes over when it expires"),
                    Err(_) => tracing::warn!("releasing the leader lease timed out; a standby takes over when it expires"),
                }
                Ok(())
            }
            lost = self.keep() => Err(lost),
        }
    }

    /// Renews the lease until it cannot; returns when leadership is lost.
    pub async fn keep(&self) -> Error {
        let mut last_renewed = Instant::now();
        loop {
            tokio::time::sleep(RENEW).await;
            // A call that hangs must not outlive the lease: stop leading before a standby
            // could have seen the record unchanged for a whole duration.
            let left = LEASE_DURATION.saturating_sub(last_renewed.elapsed() + RENEW);
            let attempt = tokio::time::timeout(left, self.try_acquire())
                .await
                .unwrap_or_else(|_| Err(Error::LostLease("nobody (renewal timed out)".to_owned())));
            match attempt {
                Ok(Attempt::Leading) => last_renewed = Instant::now(),
                Ok(Attempt::HeldBy(holder)) => return Error::LostLease(holder),
                Err(error) => {
                    tracing::warn!(%error, "could not renew the leader lease");
                    // Stop before the lease can expire, so no two replicas ever lead.
                    if last_renewed.elapsed() + RENEW >= LEASE_DURATION {
                        return Error::LostLease("nobody (renewal failed)".to_owned());
                    }
                }
            }
        }
    }

    /// One read-decide-write round on the lease.
    pub async fn try_acquire(&self) -> Result<Attempt> {
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::kube("read the leader lease", e))?;
        let wall = Timestamp::now();
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(wall, wall, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    self.seen.lock().note(Record::of(&created), Instant::now());
                    Ok(Attempt::Leading)
                }
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Ok(Attempt::HeldBy("unknown".to_owned()))
                }
                Err(e) => Err(Error::kube("create the leader lease", e)),
            };
        };
        let record = Record::of(&lease);
        let decision = self
            .seen
            .lock()
            .decide(record.clone(), &self.identity, Instant::now());
        let (transitions, renew) = match decision {
            Decision::Wait { holder } => return Ok(Attempt::HeldBy(holder)),
            Decision::Write { transitions, renew } => (transitions, renew),
        };
        let acquired = match record.spec.acquire_time {
            Some(time) if renew => time.0,
            _ => wall,
        };
        lease.spec = Some(self.spec(acquired, wall, transitions));
        // replace() sends the resourceVersion we read: a racing writer gets a conflict.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                self.seen.lock().note(Record::of(&written), Instant::now());
                Ok(Attempt::Leading)
            }
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Attempt::HeldBy("a racing replica".to_owned()))
            }
            Err(e) => Err(Error::kube("update the leader lease", e)),
        }
    }

    /// Gives the Lease up if this replica holds it: no holder, a one-second duration,
    /// the transition count kept. Written at the resourceVersion read, so a Lease taken
    /// meanwhile is left alone. True when released.
    pub async fn release(&self) -> Result<bool> {
        let Some(mut lease) = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::kube("read the leader lease", e))?
        else {
            return Ok(false);
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        let wall = MicroTime(Timestamp::now());
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(RELEASED_DURATION_SECONDS),
            acquire_time: Some(wall.clone()),
            renew_time: Some(wall),
            ..spec
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(Error::kube("release the leader lease", e)),
        }
    }

    fn spec(&self, acquired: Timestamp, renewed: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15)),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }
}

#[cfg(test)]
mod tests;
