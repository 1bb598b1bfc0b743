//! Membership: the epoch-numbered member list, and where it comes from.
//!
//! The list has one writer: the operator in Kubernetes (a ConfigMap), a person or script
//! locally (a file or the `--members` flag). Nodes only read it. A list is installed only
//! when its epoch is higher than the one in force, so a stale copy can never roll
//! membership back.
//!
//! Layout:
//! - here: the list, its validation, and the static `--members` list;
//! - [`file`]: a watched YAML file;
//! - [`configmap`]: a watched Kubernetes ConfigMap.
//!
//! Who the members are is separate from how to reach them ([`super::discovery`]): with
//! static discovery an address comes with each member; with EndpointSlice or DNS discovery
//! the list names ids only.

pub mod configmap;
pub mod file;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub use configmap::watch_configmap;
pub use file::watch_file;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberList {
    pub epoch: u64,
    pub partitions: u32,
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

/// A number of replicas, or every member (a fully replicated cache).
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
    /// The factor as a count; "all" is unbounded and placement clamps it.
    pub fn count(self) -> usize {
        match self {
            Self::Count(n) => usize::from(n),
            Self::All(_) => usize::MAX,
        }
    }
}

impl std::str::FromStr for ReplicationFactor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("all") {
            return Ok(Self::All(AllMembers::All));
        }
        match s.parse::<u16>() {
            Ok(n) if n >= 1 => Ok(Self::Count(n)),
            _ => Err(format!(
                "replication factor must be a number >= 1 or 'all', got '{s}'"
            )),
        }
    }
}

/// What a list must satisfy to be installed on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListRules {
    /// This node's partition count: a list for another count would corrupt placement.
    pub partitions: u32,
    /// Static discovery: every member (departing ones too) must carry its address.
    pub addresses_required: bool,
}

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

    /// Parses and validates a list.
    pub fn parse(yaml: &str, rules: &ListRules) -> Result<Self, MembershipError> {
        let list: Self =
            serde_yaml::from_str(yaml).map_err(|e| MembershipError::Parse(e.to_string()))?;
        list.validate(rules)?;
        Ok(list)
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

    /// Members and departing members: everyone who may hold data.
    pub fn holders(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().chain(&self.departing)
    }

    /// Whether `id` is departing in this list.
    pub fn is_departing(&self, id: &str) -> bool {
        self.departing.iter().any(|m| m.id == id)
    }
}

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
    fn parses_the_documented_shape() {
        let list = MemberList::parse(LIST, &STATIC).expect("valid");
        assert_eq!(list.epoch, 3);
        assert_eq!(list.replication_factor, ReplicationFactor::Count(2));
        assert_eq!(list.ids(), vec!["a", "b"]);
        assert!(list.departing.is_empty());
        let all = LIST.replace("replicationFactor: 2", "replicationFactor: all");
        assert_eq!(
            MemberList::parse(&all, &STATIC)
                .expect("valid")
                .replication_factor
                .count(),
            usize::MAX
        );
    }

    #[test]
    fn refuses_lists_that_would_corrupt_placement() {
        let other = ListRules {
            partitions: 16,
            ..STATIC
        };
        assert!(matches!(
            MemberList::parse(LIST, &other),
            Err(MembershipError::Partitions {
                list: 271,
                node: 16
            })
        ));
        let twice = LIST.replace("id: b", "id: a");
        assert!(matches!(
            MemberList::parse(&twice, &STATIC),
            Err(MembershipError::Duplicate(id)) if id == "a"
        ));
        let zero = LIST.replace("replicationFactor: 2", "replicationFactor: 0");
        assert!(matches!(
            MemberList::parse(&zero, &STATIC),
            Err(MembershipError::ReplicationFactor)
        ));
        assert!(matches!(
            MemberList::parse("epoch: [", &STATIC),
            Err(MembershipError::Parse(_))
        ));
        let unknown = format!("{LIST}surprise: 1\n");
        assert!(matches!(
            MemberList::parse(&unknown, &STATIC),
            Err(MembershipError::Parse(_))
        ));
        let empty = "epoch: 1\npartitions: 271\nreplicationFactor: 1\nmembers: []\n";
        assert!(matches!(
            MemberList::parse(empty, &DISCOVERED),
            Err(MembershipError::Empty)
        ));
        let blank = "epoch: 1\npartitions: 271\nreplicationFactor: 1\nmembers: [{id: ''}]\n";
        assert!(matches!(
            MemberList::parse(blank, &DISCOVERED),
            Err(MembershipError::EmptyId)
        ));
    }

    #[test]
    fn addresses_are_mandatory_only_with_static_discovery() {
        let no_address = LIST.replace("    address: 127.0.0.1:7081\n", "");
        assert!(matches!(
            MemberList::parse(&no_address, &STATIC),
            Err(MembershipError::NoAddress(id)) if id == "b"
        ));
        let list = MemberList::parse(&no_address, &DISCOVERED).expect("ids only");
        assert_eq!(list.members[1].address, None);
        // The operator's shape: ids only, with departing members.
        let operator = "epoch: 4\npartitions: 271\nreplicationFactor: 2\n\
                        members: [{id: demo-0}, {id: demo-1}, {id: demo-2}]\n\
                        departing: [{id: demo-3}]\n";
        let list = MemberList::parse(operator, &DISCOVERED).expect("operator list");
        assert_eq!(list.departing.len(), 1);
        assert!(list.is_departing("demo-3") && !list.is_departing("demo-0"));
        assert!(matches!(
            MemberList::parse(operator, &STATIC),
            Err(MembershipError::NoAddress(id)) if id == "demo-0"
        ));
    }

    #[test]
    fn departing_members_are_validated_like_members() {
        let departing = format!("{LIST}departing:\n  - id: c\n");
        // Static discovery: a departing member must be reachable too.
        assert!(matches!(
            MemberList::parse(&departing, &STATIC),
            Err(MembershipError::NoAddress(id)) if id == "c"
        ));
        let reachable = format!("{departing}    address: 127.0.0.1:7091\n");
        let list = MemberList::parse(&reachable, &STATIC).expect("valid");
        let holders: Vec<&str> = list.holders().map(|m| m.id.as_str()).collect();
        assert_eq!(holders, ["a", "b", "c"]);
        assert_eq!(
            list.ids(),
            ["a", "b"],
            "placement ignores departing members"
        );
        let both = format!("{LIST}departing:\n  - id: b\n    address: 127.0.0.1:7081\n");
        assert!(matches!(
            MemberList::parse(&both, &STATIC),
            Err(MembershipError::Duplicate(id)) if id == "b"
        ));
        let unknown_field = format!("{LIST}departing:\n  - id: c\n    since: 3\n");
        assert!(matches!(
            MemberList::parse(&unknown_field, &DISCOVERED),
            Err(MembershipError::Parse(_))
        ));
        // Omitted when empty, so lists written back look like the ones read.
        let yaml = serde_yaml::to_string(&MemberList::parse(LIST, &STATIC).expect("valid"))
            .expect("serialize");
        assert!(!yaml.contains("departing"), "{yaml}");
    }

    #[test]
    fn the_members_flag_is_a_static_list_at_epoch_one() {
        let list = MemberList::from_flag(
            "a=127.0.0.1:7071, b=127.0.0.1:7072",
            ReplicationFactor::Count(2),
            &STATIC,
        )
        .expect("valid");
        assert_eq!(list.epoch, 1);
        assert_eq!(list.partitions, 271);
        assert_eq!(list.ids(), ["a", "b"]);
        assert_eq!(list.members[1].address, "127.0.0.1:7072".parse().ok());

        let ids_only = MemberList::from_flag("a,b", ReplicationFactor::Count(1), &DISCOVERED)
            .expect("ids only with discovery");
        assert_eq!(ids_only.members[0].address, None);
        assert!(matches!(
            MemberList::from_flag("a,b", ReplicationFactor::Count(1), &STATIC),
            Err(MembershipError::NoAddress(id)) if id == "a"
        ));
        assert!(matches!(
            MemberList::from_flag("a=somewhere", ReplicationFactor::Count(1), &STATIC),
            Err(MembershipError::StaticEntry { entry, .. }) if entry == "a=somewhere"
        ));
        assert!(matches!(
            MemberList::from_flag("a=127.0.0.1:1,a=127.0.0.1:2", ReplicationFactor::Count(1), &STATIC),
            Err(MembershipError::Duplicate(id)) if id == "a"
        ));
        assert!(matches!(
            MemberList::from_flag(" , ", ReplicationFactor::Count(1), &STATIC),
            Err(MembershipError::Empty)
        ));
    }

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
