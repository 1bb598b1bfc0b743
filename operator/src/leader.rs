//! Lease-based leader election, so two operator replicas never both write member lists.
//!
//! A replica becomes leader by writing its identity into a `coordination.k8s.io` Lease
//! whose holder is absent, itself, or has not renewed within the lease duration. Every
//! write carries the resourceVersion it read, so of two replicas racing for an expired
//! lease exactly one wins. The leader renews every `RENEW`; if it cannot renew before
//! the lease would expire, it stops leading (the process exits and restarts as a
//! candidate) rather than risk a second leader.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::{Error, Result};

/// How long a lease stays valid without renewal.
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the leader renews.
pub const RENEW: Duration = Duration::from_secs(5);
/// How often a candidate tries to acquire.
pub const RETRY: Duration = Duration::from_secs(2);

#[derive(Debug, Clone)]
pub struct LeaderElection {
    api: Api<Lease>,
    name: String,
    identity: String,
}

/// What one attempt at the lease found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    Leading,
    HeldBy(String),
}

impl LeaderElection {
    pub fn new(client: Client, namespace: &str, name: &str, identity: &str) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
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

    /// Renews the lease until it cannot; returns when leadership is lost.
    pub async fn keep(&self) -> Error {
        let mut last_renewed = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(RENEW).await;
            // A call that hangs must not outlive the lease: stop leading before it could
            // have expired.
            let left = LEASE_DURATION.saturating_sub(last_renewed.elapsed() + RENEW);
            let attempt = tokio::time::timeout(left, self.try_acquire())
                .await
                .unwrap_or_else(|_| Err(Error::LostLease("nobody (renewal timed out)".to_owned())));
            match attempt {
                Ok(Attempt::Leading) => last_renewed = tokio::time::Instant::now(),
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
        let now = Timestamp::now();
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| Error::kube("read the leader lease", e))?;
        let Some(mut lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Attempt::Leading),
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    Ok(Attempt::HeldBy("unknown".to_owned()))
                }
                Err(e) => Err(Error::kube("create the leader lease", e)),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let decision = decide(&spec, &self.identity, now);
        let Some(transitions) = decision else {
            return Ok(Attempt::HeldBy(spec.holder_identity.unwrap_or_default()));
        };
        let acquired = if spec.holder_identity.as_deref() == Some(self.identity.as_str()) {
            spec.acquire_time.map_or(now, |t| t.0)
        } else {
            now
        };
        lease.spec = Some(self.spec(acquired, now, transitions));
        // replace() sends the resourceVersion we read: a racing writer gets a conflict.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(Attempt::HeldBy("a racing replica".to_owned()))
            }
            Err(e) => Err(Error::kube("update the leader lease", e)),
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

/// Whether `identity` may take or keep the lease now, and the transition count to write.
/// None: someone else holds a lease that has not expired.
pub fn decide(spec: &LeaseSpec, identity: &str, now: Timestamp) -> Option<i32> {
    let transitions = spec.lease_transitions.unwrap_or(0);
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => return Some(transitions),
        None | Some("") => return Some(transitions + 1),
        Some(_) => {}
    }
    let duration = SignedDuration::from_secs(i64::from(
        spec.lease_duration_seconds
            .unwrap_or(i32::try_from(LEASE_DURATION.as_secs()).unwrap_or(15)),
    ));
    let renewed = spec.renew_time.as_ref().map(|t| t.0)?;
    let expired = renewed
        .checked_add(duration)
        .is_ok_and(|deadline| deadline < now);
    expired.then_some(transitions + 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::ToSpan;

    fn held_by(holder: &str, renewed: Timestamp) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.to_owned()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed)),
            lease_transitions: Some(3),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn only_an_expired_or_own_lease_can_be_taken() {
        let now: Timestamp = "2026-11-21T10:00:00Z".parse().unwrap();
        assert_eq!(decide(&held_by("a", now - 5.seconds()), "a", now), Some(3));
        assert_eq!(decide(&held_by("b", now - 5.seconds()), "a", now), None);
        assert_eq!(decide(&held_by("b", now - 16.seconds()), "a", now), Some(4));
        assert_eq!(decide(&LeaseSpec::default(), "a", now), Some(1));
    }
}
