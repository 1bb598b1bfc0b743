//! The member list the operator publishes and the nodes follow: the single writer of
//! membership (docs/architecture.md, "Membership and discovery").
//!
//! It lives in the ConfigMap `<cluster>-members` under `members.yaml`. Members carry no
//! addresses: nodes find each other through the EndpointSlices of the peer Service, so a
//! pod that comes back with a new IP is not a membership change. The types are
//! [`kache_api::members`]'s, the ones the nodes parse the list with.

pub use kache_api::members::{AllMembers, MEMBERS_KEY, Member, MemberList, ReplicationFactor};

/// Members named by id alone, as the operator publishes them.
pub fn ids(names: impl IntoIterator<Item = String>) -> Vec<Member> {
    names.into_iter().map(Member::new).collect()
}
