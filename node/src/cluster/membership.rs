//! Membership: the epoch-numbered member list, and where it comes from.
//!
//! The list has one writer: the operator in Kubernetes (a ConfigMap), a person or script
//! locally (a file). Nodes only read it. A list is installed only when its epoch is higher
//! than the one in force, so a stale copy can never roll membership back. Discovery (how
//! to reach a member) is separate: here a member's address comes with the list (static
//! discovery); EndpointSlice and DNS discovery come with the Kubernetes source.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// How often a watched member file is re-read.
const FILE_POLL: Duration = Duration::from_millis(500);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberList {
    pub epoch: u64,
    pub partitions: u32,
    pub replication_factor: ReplicationFactor,
    pub members: Vec<Member>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub id: String,
    /// The member's peer (gRPC) address, for static discovery.
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

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error("member list is not valid YAML: {0}")]
    Parse(String),
    #[error("member list has no members")]
    Empty,
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
    #[error("member '{0}' has no address, and no other discovery is configured")]
    NoAddress(String),
    #[error("cannot read member file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl MemberList {
    /// Parses and validates a list for a node with `partitions` partitions.
    pub fn parse(yaml: &str, partitions: u32) -> Result<Self, MembershipError> {
        let list: Self =
            serde_yaml::from_str(yaml).map_err(|e| MembershipError::Parse(e.to_string()))?;
        list.validate(partitions)?;
        Ok(list)
    }

    pub fn validate(&self, partitions: u32) -> Result<(), MembershipError> {
        if self.members.is_empty() {
            return Err(MembershipError::Empty);
        }
        if self.members.len() > usize::from(u16::MAX) {
            return Err(MembershipError::TooMany(self.members.len()));
        }
        if self.partitions != partitions {
            return Err(MembershipError::Partitions {
                list: self.partitions,
                node: partitions,
            });
        }
        if self.replication_factor == ReplicationFactor::Count(0) {
            return Err(MembershipError::ReplicationFactor);
        }
        let mut seen = std::collections::HashSet::new();
        for member in &self.members {
            if !seen.insert(member.id.as_str()) {
                return Err(MembershipError::Duplicate(member.id.clone()));
            }
            if member.address.is_none() {
                return Err(MembershipError::NoAddress(member.id.clone()));
            }
        }
        Ok(())
    }

    pub fn ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.id.clone()).collect()
    }
}

/// Reads the member file now, then re-reads it every half second and publishes every list
/// with a higher epoch. An unreadable or invalid file is logged and changes nothing.
pub fn watch_file(
    path: PathBuf,
    partitions: u32,
) -> Result<(watch::Receiver<MemberList>, tokio::task::JoinHandle<()>), MembershipError> {
    let initial = read_file(&path, partitions)?;
    let (tx, rx) = watch::channel(initial);
    let task = tokio::spawn(async move {
        let mut last_text = String::new();
        loop {
            tokio::time::sleep(FILE_POLL).await;
            let text = match tokio::fs::read_to_string(&path).await {
                Ok(text) => text,
                Err(err) => {
                    tracing::warn!(path = %path.display(), error = %err, "cannot read member file");
                    continue;
                }
            };
            if text == last_text {
                continue;
            }
            last_text.clone_from(&text);
            match MemberList::parse(&text, partitions) {
                Ok(list) if list.epoch > tx.borrow().epoch => {
                    tracing::info!(
                        epoch = list.epoch,
                        members = list.members.len(),
                        "new member list"
                    );
                    if tx.send(list).is_err() {
                        return;
                    }
                }
                Ok(list) => {
                    tracing::debug!(
                        epoch = list.epoch,
                        "member file unchanged or older; ignored"
                    );
                }
                Err(err) => {
                    tracing::error!(path = %path.display(), error = %err, "invalid member file ignored");
                }
            }
        }
    });
    Ok((rx, task))
}

fn read_file(path: &Path, partitions: u32) -> Result<MemberList, MembershipError> {
    let text = std::fs::read_to_string(path).map_err(|source| MembershipError::Read {
        path: path.to_owned(),
        source,
    })?;
    MemberList::parse(&text, partitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIST: &str = "
epoch: 3
partitions: 271
replicationFactor: 2
members:
  - id: a
    address: 127.0.0.1:7071
  - id: b
    address: 127.0.0.1:7081
";

    #[test]
    fn parses_the_documented_shape() {
        let list = MemberList::parse(LIST, 271).expect("valid");
        assert_eq!(list.epoch, 3);
        assert_eq!(list.replication_factor, ReplicationFactor::Count(2));
        assert_eq!(list.ids(), vec!["a", "b"]);
        let all = LIST.replace("replicationFactor: 2", "replicationFactor: all");
        assert_eq!(
            MemberList::parse(&all, 271)
                .expect("valid")
                .replication_factor
                .count(),
            usize::MAX
        );
    }

    #[test]
    fn refuses_lists_that_would_corrupt_placement() {
        assert!(matches!(
            MemberList::parse(LIST, 16),
            Err(MembershipError::Partitions {
                list: 271,
                node: 16
            })
        ));
        let twice = LIST.replace("id: b", "id: a");
        assert!(matches!(
            MemberList::parse(&twice, 271),
            Err(MembershipError::Duplicate(id)) if id == "a"
        ));
        let zero = LIST.replace("replicationFactor: 2", "replicationFactor: 0");
        assert!(matches!(
            MemberList::parse(&zero, 271),
            Err(MembershipError::ReplicationFactor)
        ));
        let no_address = LIST.replace("    address: 127.0.0.1:7081\n", "");
        assert!(matches!(
            MemberList::parse(&no_address, 271),
            Err(MembershipError::NoAddress(id)) if id == "b"
        ));
        assert!(matches!(
            MemberList::parse("epoch: [", 271),
            Err(MembershipError::Parse(_))
        ));
        let unknown = format!("{LIST}surprise: 1\n");
        assert!(matches!(
            MemberList::parse(&unknown, 271),
            Err(MembershipError::Parse(_))
        ));
    }

    #[tokio::test]
    async fn a_watched_file_publishes_only_newer_epochs() {
        let dir = std::env::temp_dir().join(format!("kache-members-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("members.yaml");
        std::fs::write(&path, LIST).expect("write");
        let (mut rx, task) = watch_file(path.clone(), 271).expect("initial list");
        assert_eq!(rx.borrow().epoch, 3);

        std::fs::write(&path, LIST.replace("epoch: 3", "epoch: 2")).expect("write");
        std::fs::write(&path, "not: [valid").expect("write");
        tokio::time::sleep(FILE_POLL * 3).await;
        assert_eq!(rx.borrow().epoch, 3, "older and invalid lists are ignored");

        std::fs::write(&path, LIST.replace("epoch: 3", "epoch: 4")).expect("write");
        tokio::time::timeout(Duration::from_secs(5), rx.changed())
            .await
            .expect("a newer list arrives")
            .expect("watch open");
        assert_eq!(rx.borrow().epoch, 4);
        task.abort();
        let _ = std::fs::remove_dir_all(dir);
    }
}
