//! Per-call authorization on the peer port under mutual TLS: the member a caller's
//! certificate names must be in this node's member list, as a member or departing.
//!
//! The TLS handshake has already checked that the certificate chains to `ca.crt` and
//! names this cluster (`tls::peer`); the list is checked on every call because it
//! changes while connections stay open: a member scaled away loses its access at the
//! next call, not the next connection. A caller not listed yet (a new member whose list
//! reached it before this node) is waited for up to [`LIST_WAIT`], since a ConfigMap
//! update reaches nodes at different moments; then it is refused with
//! `PERMISSION_DENIED`. A certificate for `kache://<cluster>/*` names any member and is
//! admitted without a list check (documented as the weaker choice).
//!
//! Without `--peer-tls-dir` there is no caller identity and no [`Authorizer`]: calls are
//! not checked, and cost nothing more than before.

use std::time::Duration;

use tonic::Status;

use crate::cluster::{Cluster, Role};
use crate::tls::identity::{MemberName, PeerName};

/// How long a call from a caller not (yet) in the list waits for a newer list.
pub const LIST_WAIT: Duration = Duration::from_secs(2);

/// Admits callers against the member list `cluster` follows.
#[derive(Debug, Clone)]
pub struct Authorizer {
    cluster: Cluster,
}

impl Authorizer {
    pub fn new(cluster: Cluster) -> Self {
        Self { cluster }
    }

    /// Whether `caller` may make a call now (waiting up to [`LIST_WAIT`] for a list
    /// that names it).
    pub async fn admit(&self, caller: &PeerName) -> Result<(), Status> {
        let MemberName::One(id) = &caller.member else {
            return Ok(());
        };
        // Subscribed before the check, so a list installed in between wakes the wait.
        let mut changes = self.cluster.list_changes();
        if self.listed(id) {
            return Ok(());
        }
        let listed = tokio::time::timeout(LIST_WAIT, async {
            while changes.changed().await.is_ok() {
                if self.listed(id) {
                    return true;
                }
            }
            false
        })
        .await;
        if listed == Ok(true) {
            return Ok(());
        }
        let epoch = self.cluster.view().epoch();
        tracing::warn!(caller = %id, epoch, "refused a peer call: the caller is not in the member list");
        Err(Status::permission_denied(format!(
            "'{id}' is not a member of this cluster (member list epoch {epoch})"
        )))
    }

    fn listed(&self, id: &str) -> bool {
        self.cluster.view().role_of(id) != Role::Absent
    }
}
