//! The member list: who the members of a cluster are, at which epoch.
//!
//! The list has one writer (the operator in Kubernetes, a person or script locally) and
//! every node follows it. A node installs a list only when it is valid under the node's
//! [`ListRules`] and its epoch is higher than the one in force, so a stale or broken copy
//! can never roll membership back; placement is a pure function of
//! `(members, partitions, replicationFactor)`.
//!
//! In Kubernetes the list lives in the ConfigMap `<cluster>-members` under
//! [`MEMBERS_KEY`]; locally it is a file of the same YAML, or the `--members` flag:
//!
//! ```yaml
//! epoch: 4
//! partitions: 271
//! replicationFactor: 2        # or "all"
//! members: [{id: demo-0}, {id: demo-1, address: 10.0.0.6:7071}]
//! departing: [{id: demo-2}]   # omitted when empty
//! ```
//!
//! Who the members are is separate from how to reach them: with static discovery an
//! address comes with each member; with EndpointSlice or DNS discovery (what the operator
//! uses) the list names ids only, so a pod that comes back with a new IP is not a
//! membership change.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The key of the member list in its ConfigMap.
pub const MEMBERS_KEY: &str = "members.yaml";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberList {
    /// Increases on every published change; nodes ignore a list whose epoch does not.
    pub epoch: u64,
    pub partitions: u32,
    /// A count, or the string "all".
    pub replication_factor: ReplicationFactor,
    /// The members; placement depends only on their ids.
    pub members: Vec<Member>,
    /// Members on their way out of a scale-down: they own nothing (placement ignores
    /// them) but may still hold data until their hand-off completes, so a starting node
    /// pulls from them too. The operator deletes them once they report
    /// `heldNotOwned == 0`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub departing: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: String,
    /// The member's peer (gRPC) address: required with static discovery; otherwise
    /// optional, and used only while discovery knows no address for the member.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<SocketAddr>,
}

impl Member {
    /// A member named by id alone, for discovery to locate.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            address: None,
        }
    }
}

/// A number of replicas, or every member (a fully replicated cache).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ReplicationFactor {
    Count(u16),
    All(AllMembers),
}

/// The spelling of "every member" in YAML: `replicationFactor: all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AllMembers {
    All,
}

impl ReplicationFactor {
    pub const ALL: Self = Self::All(AllMembers::All);

    /// The factor as a count; "all" is unbounded and placement clamps it.
    pub fn count(self) -> usize {
        match self {
            Self::Count(n) => usize::from(n),
            Self::All(_) => usize::MAX,
        }
    }

    /// The copies each partition has among `members` members.
    pub fn copies(self, members: usize) -> usize {
        self.count().min(members)
    }
}

impl std::str::FromStr for ReplicationFactor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Self::ALL);
        }
        match s.parse::<u16>() {
            Ok(n) if n >= 1 => Ok(Self::Count(n)),
            _ => Err(format!(
                "replication factor must be a number >= 1 or 'all', got '{s}'"
            )),
        }
    }
}

/// What a list must satisfy to be installed on a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListRules {
    /// The node's partition count: a list for another count would corrupt placement.
    pub partitions: u32,
    /// Static discovery: every member (departing ones too) must carry its address.
    pub addresses_required: bool,
}

/// Why a list was not installed. The last two variants are about where a node reads
/// lists from (a file, a ConfigMap); the rest are about the list itself.
#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("member list is not valid YAML: {0}")]
    Parse(String),
    #[error("member list has no members")]
    Empty,
    #[error("member list has a member with an empty id")]
    EmptyId,
    #[error("member list names '{0}' twice")]
    Duplicate(String),
    #[error("member list has {0} members; at most 65535 are supported")]
    TooMany(usize),
    #[error(
        "member list is for {list} partitions but this node has {node}; partitions never change"
    )]
    Partitions { list: u32, node: u32 },
    #[error("replication factor must be at least 1")]
    ReplicationFactor,
    #[error("member '{0}' has no address, and discovery is static (--discovery static)")]
    NoAddress(String),
    #[error("'{entry}' in --members is not 'id' or 'id=ip:port': {reason}")]
    StaticEntry { entry: String, reason: String },
    #[error("cannot read member file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("ConfigMap {configmap} has no key '{key}'")]
    MissingKey {
        configmap: String,
        key: &'static str,
    },
}

impl MemberList {
    /// The list of a node that has not received one yet (epoch 0, no members): it owns
    /// nothing and forwards nothing, and waits, not ready, for a real list.
    pub fn none(partitions: u32) -> Self {
        Self {
            epoch: 0,
            partitions,
            replication_factor: ReplicationFactor::Count(1),
            members: Vec::new(),
            departing: Vec::new(),
        }
    }

    /// Parses a list and validates it under a node's `rules`: what a node installs.
    pub fn parse(yaml: &str, rules: &ListRules) -> Result<Self, MembershipError> {
        let list = Self::from_yaml(yaml)?;
        list.validate(rules)?;
        Ok(list)
    }

    /// Parses a list's YAML without validating it: how the operator reads back the list
    /// it published, which it judges against its spec, not against a node's rules.
    pub fn from_yaml(yaml: &str) -> Result<Self, MembershipError> {
        serde_yaml::from_str(yaml).map_err(|e| MembershipError::Parse(e.to_string()))
    }

    /// The YAML a ConfigMap or member file holds.
    pub fn to_yaml(&self) -> String {
        // Strings, numbers and addresses always serialize.
        serde_yaml::to_string(self).unwrap_or_default()
    }

    /// The static list of `--members`: `id=ip:port` entries (or bare ids when discovery
    /// finds the addresses), comma-separated, at epoch 1.
    pub fn from_flag(
        text: &str,
        replication_factor: ReplicationFactor,
        rules: &ListRules,
    ) -> Result<Self, MembershipError> {
        let members = text
            .split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (id, address) = match entry.split_once('=') {
                    None => (entry, None),
                    Some((id, address)) => {
                        let address = address.trim().parse::<SocketAddr>().map_err(|err| {
                            MembershipError::StaticEntry {
                                entry: entry.to_owned(),
                                reason: err.to_string(),
                            }
                        })?;
                        (id.trim(), Some(address))
                    }
                };
                Ok(Member {
                    id: id.to_owned(),
                    address,
                })
            })
            .collect::<Result<Vec<_>, MembershipError>>()?;
        let list = Self {
            epoch: 1,
            partitions: rules.partitions,
            replication_factor,
            members,
            departing: Vec::new(),
        };
        list.validate(rules)?;
        Ok(list)
    }

    pub fn validate(&self, rules: &ListRules) -> Result<(), MembershipError> {
        if self.members.is_empty() {
            return Err(MembershipError::Empty);
        }
        if self.members.len() > usize::from(u16::MAX) {
            return Err(MembershipError::TooMany(self.members.len()));
        }
        if self.partitions != rules.partitions {
            return Err(MembershipError::Partitions {
                list: self.partitions,
                node: rules.partitions,
            });
        }
        if self.replication_factor == ReplicationFactor::Count(0) {
            return Err(MembershipError::ReplicationFactor);
        }
        // An id both a member and departing would both own and not own partitions.
        let mut seen = HashSet::new();
        for member in self.members.iter().chain(&self.departing) {
            if member.id.trim().is_empty() {
                return Err(MembershipError::EmptyId);
            }
            if !seen.insert(member.id.as_str()) {
                return Err(MembershipError::Duplicate(member.id.clone()));
            }
            if rules.addresses_required && member.address.is_none() {
                return Err(MembershipError::NoAddress(member.id.clone()));
            }
        }
        Ok(())
    }

    /// Whether this is a real list (not [`MemberList::none`]).
    pub fn has_members(&self) -> bool {
        !self.members.is_empty()
    }

    pub fn ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }

    pub fn member_ids(&self) -> impl Iterator<Item = &str> {
        self.members.iter().map(|m| m.id.as_str())
    }

    pub fn departing_ids(&self) -> impl Iterator<Item = &str> {
        self.departing.iter().map(|m| m.id.as_str())
    }

    /// Members and departing members: everyone who may hold data.
    pub fn holders(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().chain(&self.departing)
    }

    /// Whether `id` is departing in this list.
    pub fn is_departing(&self, id: &str) -> bool {
        self.departing.iter().any(|m| m.id == id)
    }
}

#[cfg(test)]
mod tests;
