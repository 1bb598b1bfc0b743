//! The member list the operator publishes and the nodes follow: the single writer of
//! membership (docs/architecture.md, "Membership and discovery").
//!
//! It lives in the ConfigMap `<cluster>-members` under `members.yaml`. Members carry no
//! addresses: nodes find each other through the EndpointSlices of the peer Service, so a
//! pod that comes back with a new IP is not a membership change.

use serde::{Deserialize, Serialize};

/// The key of the member list in its ConfigMap.
pub const MEMBERS_KEY: &str = "members.yaml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberList {
    /// Increases by one on every published change; nodes ignore lists that do not.
    pub epoch: u64,
    pub partitions: u32,
    /// A count, or the string "all".
    pub replication_factor: ReplicationFactor,
    /// Members own partitions.
    pub members: Vec<MemberId>,
    /// Removed members that may still hold data: nodes may sync from them, and the
    /// operator keeps their pods until they report holding nothing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departing: Vec<MemberId>,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MemberId {
    pub id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplicationFactor {
    Count(u16),
    All(AllMembers),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllMembers {
    All,
}

impl ReplicationFactor {
    pub const ALL: Self = Self::All(AllMembers::All);

    /// The copies each partition has among `members` members.
    pub fn copies(self, members: usize) -> usize {
        match self {
            Self::Count(n) => usize::from(n).min(members),
            Self::All(_) => members,
        }
    }
}

impl MemberList {
    pub fn parse(yaml: &str) -> Result<Self, serde_yaml::Error> {
        serde_yaml::from_str(yaml)
    }

    pub fn to_yaml(&self) -> String {
        // A struct of strings and numbers always serializes.
        serde_yaml::to_string(self).unwrap_or_default()
    }

    pub fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.id.as_str())
    }

    pub fn departing_ids(&self) -> impl Iterator<Item = &str> {
        self.departing.iter().map(|m| m.id.as_str())
    }
}

pub fn ids(names: impl IntoIterator<Item = String>) -> Vec<MemberId> {
    names.into_iter().map(|id| MemberId { id }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_the_documented_yaml() {
        let yaml = "epoch: 4\npartitions: 271\nreplicationFactor: all\nmembers: [{id: demo-0}, {id: demo-1}]\ndeparting: [{id: demo-2}]\n";
        let list = MemberList::parse(yaml).unwrap();
        assert_eq!(list.replication_factor, ReplicationFactor::ALL);
        assert_eq!(list.departing_ids().collect::<Vec<_>>(), ["demo-2"]);
        assert_eq!(MemberList::parse(&list.to_yaml()).unwrap(), list);
    }

    #[test]
    fn an_empty_departing_list_is_left_out() {
        let list = MemberList {
            epoch: 1,
            partitions: 7,
            replication_factor: ReplicationFactor::Count(2),
            members: ids(["a".to_owned()]),
            departing: vec![],
        };
        let yaml = list.to_yaml();
        assert!(!yaml.contains("departing"), "{yaml}");
        assert!(yaml.contains("replicationFactor: 2"), "{yaml}");
    }
}
