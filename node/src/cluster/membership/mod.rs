//! Membership: where this node's member list comes from, and which lists it installs.
//!
//! The list has one writer: the operator in Kubernetes (a ConfigMap), a person or script
//! locally (a file or the `--members` flag). Nodes only read it. A list is installed only
//! when its epoch is higher than the one in force, so a stale copy can never roll
//! membership back.
//!
//! Layout:
//! - [`kache_api::members`] (re-exported here): the list, its YAML, its validation, and
//!   the static `--members` form, shared with the operator that writes it;
//! - here: the `Publisher` that lets only valid, newer lists through;
//! - [`file`]: a watched YAML file;
//! - [`configmap`]: a watched Kubernetes ConfigMap.
//!
//! Who the members are is separate from how to reach them ([`super::discovery`]): with
//! static discovery an address comes with each member; with EndpointSlice or DNS discovery
//! the list names ids only.

pub mod configmap;
pub mod file;

use tokio::sync::watch;

pub use configmap::watch_configmap;
pub use file::watch_file;
pub use kache_api::members::{
    AllMembers, ListRules, Member, MemberList, MembershipError, ReplicationFactor,
};

/// Publishes lists from a source into the channel the cluster follows: only a valid list
/// with a higher epoch than the last one published gets through.
#[derive(Debug)]
pub(crate) struct Publisher {
    tx: watch::Sender<MemberList>,
    /// Where lists come from, for logs.
    source: String,
}

impl Publisher {
    pub fn new(initial: MemberList, source: String) -> (Self, watch::Receiver<MemberList>) {
        let (tx, rx) = watch::channel(initial);
        (Self { tx, source }, rx)
    }

    pub fn epoch(&self) -> u64 {
        self.tx.borrow().epoch
    }

    /// Publishes `list` if it is valid and newer. Returns false once nobody follows.
    pub fn offer(&self, list: Result<MemberList, MembershipError>) -> bool {
        match list {
            Ok(list) if list.epoch > self.epoch() => {
                tracing::info!(
                    source = %self.source,
                    epoch = list.epoch,
                    members = list.members.len(),
                    departing = list.departing.len(),
                    "new member list"
                );
                self.tx.send(list).is_ok()
            }
            Ok(list) => {
                tracing::debug!(source = %self.source, epoch = list.epoch, in_force = self.epoch(), "member list not newer; ignored");
                !self.tx.is_closed()
            }
            Err(err) => {
                tracing::error!(source = %self.source, error = %err, epoch_in_force = self.epoch(), "invalid member list ignored");
                !self.tx.is_closed()
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! The lists the sources' tests share; the lists' own rules are tested in kache-api.
    use super::*;

    pub const LIST: &str = "
epoch: 3
partitions: 271
replicationFactor: 2
members:
  - id: a
    address: 127.0.0.1:7071
  - id: b
    address: 127.0.0.1:7081
";

    pub const STATIC: ListRules = ListRules {
        partitions: 271,
        addresses_required: true,
    };
    pub const DISCOVERED: ListRules = ListRules {
        partitions: 271,
        addresses_required: false,
    };

    #[test]
    fn the_publisher_passes_only_valid_newer_lists() {
        let (publisher, rx) = Publisher::new(MemberList::none(271), "test".into());
        assert!(publisher.offer(MemberList::parse(LIST, &STATIC)));
        assert_eq!(rx.borrow().epoch, 3);
        let older = LIST.replace("epoch: 3", "epoch: 2");
        assert!(publisher.offer(MemberList::parse(&older, &STATIC)));
        assert!(publisher.offer(MemberList::parse("epoch: [", &STATIC)));
        assert_eq!(
            rx.borrow().epoch,
            3,
            "older and invalid lists change nothing"
        );
        let newer = LIST.replace("epoch: 3", "epoch: 9");
        assert!(publisher.offer(MemberList::parse(&newer, &STATIC)));
        assert_eq!(rx.borrow().epoch, 9);
        drop(rx);
        assert!(
            !publisher.offer(MemberList::parse(&newer, &STATIC)),
            "nobody follows"
        );
    }
}
