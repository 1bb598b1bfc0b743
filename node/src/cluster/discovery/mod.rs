//! Discovery: how to reach a member, kept separate from who the members are.
//!
//! The member list says who owns what, by id. Discovery maps an id to a peer (gRPC)
//! address, and the address can change while the id stays (a pod recreated gets a new
//! IP). Three kinds:
//! - static: the address comes with each member in the list;
//! - [`endpointslices`]: the EndpointSlices of the headless Service, watched through the
//!   API (pod name = member id);
//! - [`dns`]: A records of `<id>.<service>.<namespace>.svc.<cluster-domain>`, re-resolved
//!   periodically and when a call to the member fails.
//!
//! A [`Discovery`] is a cheap handle that the peer client pool asks for an address on
//! every call, so a changed address is used from the next call on. A member without a
//! known address is unreachable: its calls fail like any failed peer call.

pub mod dns;
pub mod endpointslices;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, watch};

use super::membership::{Member, MemberList};

/// Where member addresses come from, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiscoveryConfig {
    /// From the member list.
    Static,
    /// From the EndpointSlices of `service` in `namespace`: a pod's address and the port
    /// named `grpc` (or `peer_port` when the slice names none).
    EndpointSlices {
        namespace: String,
        service: String,
        peer_port: u16,
    },
    /// From DNS: `<id>.<service>.<namespace>.svc.<cluster_domain>` on `peer_port`.
    Dns(dns::DnsNames),
}

impl DiscoveryConfig {
    /// Static discovery needs every member's address in the list.
    pub fn is_static(&self) -> bool {
        matches!(self, Self::Static)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Static,
    Watched,
    Resolved,
}

/// A cheap handle on the addresses discovery knows.
#[derive(Debug, Clone)]
pub struct Discovery {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    kind: Kind,
    /// Written by the one discovery task, read on every peer call. A parking_lot lock,
    /// never held across an `.await`: readers copy one address out.
    addresses: RwLock<HashMap<String, SocketAddr>>,
    /// Members whose calls failed: DNS resolves them again before its next period.
    stale: Mutex<HashSet<String>>,
    wake: Notify,
}

impl Discovery {
    /// Static discovery: addresses come with the list.
    pub fn from_list() -> Self {
        Self::new(Kind::Static)
    }

    fn new(kind: Kind) -> Self {
        Self {
            shared: Arc::new(Shared {
                kind,
                addresses: RwLock::new(HashMap::new()),
                stale: Mutex::new(HashSet::new()),
                wake: Notify::new(),
            }),
        }
    }

    /// The handle for `config` and the task that keeps it current (none for static).
    /// `lists` tells DNS which ids to resolve; `client` is needed for EndpointSlices.
    pub fn start(
        config: &DiscoveryConfig,
        client: Option<kube::Client>,
        lists: watch::Receiver<MemberList>,
    ) -> Result<(Self, Option<tokio::task::JoinHandle<()>>), DiscoveryError> {
        match config {
            DiscoveryConfig::Static => Ok((Self::from_list(), None)),
            DiscoveryConfig::EndpointSlices {
                namespace,
                service,
                peer_port,
            } => {
                let client = client.ok_or(DiscoveryError::NoClient)?;
                let discovery = Self::new(Kind::Watched);
                let task = endpointslices::spawn(
                    client,
                    namespace,
                    service,
                    *peer_port,
                    discovery.clone(),
                );
                Ok((discovery, Some(task)))
            }
            DiscoveryConfig::Dns(names) => {
                let discovery = Self::new(Kind::Resolved);
                let task = dns::spawn(
                    discovery.clone(),
                    names.clone(),
                    lists,
                    dns::system_resolver(),
                );
                Ok((discovery, Some(task)))
            }
        }
    }

    /// Where to reach `member` now. Discovery's address wins; the list's address is a
    /// fallback while discovery knows none (and the only source with static discovery).
    pub fn address(&self, member: &Member) -> Option<SocketAddr> {
        if self.shared.kind == Kind::Static {
            return member.address;
        }
        self.shared
            .addresses
            .read()
            .get(&member.id)
            .copied()
            .or(member.address)
    }

    /// A call to `id` failed to connect or timed out: its address may be outdated.
    pub fn unreachable(&self, id: &str) {
        if self.shared.kind == Kind::Resolved {
            self.shared.stale.lock().insert(id.to_owned());
            self.shared.wake.notify_one();
        }
    }

    /// Replaces every address (a watched source sees the whole set). Returns the ids
    /// whose address appeared, changed or went away.
    fn replace_all(&self, addresses: HashMap<String, SocketAddr>) -> Vec<String> {
        let mut current = self.shared.addresses.write();
        let mut changed: Vec<String> = addresses
            .iter()
            .filter(|(id, address)| current.get(*id) != Some(address))
            .map(|(id, _)| id.clone())
            .collect();
        changed.extend(
            current
                .keys()
                .filter(|id| !addresses.contains_key(*id))
                .cloned(),
        );
        *current = addresses;
        changed.sort_unstable();
        changed
    }

    /// Sets one member's address. Returns whether it changed.
    fn set(&self, id: &str, address: SocketAddr) -> bool {
        self.shared.addresses.write().insert(id.to_owned(), address) != Some(address)
    }

    /// Discovery that knows exactly `addresses`, as a watched source would.
    #[cfg(test)]
    pub(crate) fn knowing(addresses: HashMap<String, SocketAddr>) -> Self {
        let discovery = Self::new(Kind::Watched);
        discovery.replace_all(addresses);
        discovery
    }

    #[cfg(test)]
    pub(crate) fn replace_for_test(&self, addresses: HashMap<String, SocketAddr>) {
        self.replace_all(addresses);
    }

    fn take_stale(&self) -> Vec<String> {
        self.shared.stale.lock().drain().collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("EndpointSlice discovery needs a Kubernetes client")]
    NoClient,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, address: Option<&str>) -> Member {
        Member {
            id: id.into(),
            address: address.and_then(|a| a.parse().ok()),
        }
    }

    #[test]
    fn static_discovery_uses_the_list_only() {
        let discovery = Discovery::from_list();
        discovery.set("a", "10.0.0.9:7071".parse().expect("address"));
        assert_eq!(
            discovery.address(&member("a", Some("10.0.0.1:7071"))),
            "10.0.0.1:7071".parse().ok()
        );
        assert_eq!(discovery.address(&member("a", None)), None);
    }

    #[test]
    fn discovered_addresses_win_and_follow_changes() {
        let discovery = Discovery::new(Kind::Watched);
        let listed = member("a", Some("10.0.0.1:7071"));
        assert_eq!(
            discovery.address(&listed),
            listed.address,
            "the list is a fallback"
        );
        assert_eq!(
            discovery.address(&member("b", None)),
            None,
            "unknown: unreachable"
        );

        let first = HashMap::from([("a".to_owned(), "10.0.0.2:7071".parse().expect("addr"))]);
        assert_eq!(discovery.replace_all(first.clone()), ["a"]);
        assert_eq!(discovery.replace_all(first), Vec::<String>::new());
        assert_eq!(discovery.address(&listed), "10.0.0.2:7071".parse().ok());

        let moved = HashMap::from([("b".to_owned(), "10.0.0.3:7071".parse().expect("addr"))]);
        assert_eq!(discovery.replace_all(moved), ["a", "b"]);
        assert_eq!(
            discovery.address(&member("b", None)),
            "10.0.0.3:7071".parse().ok()
        );
        assert_eq!(discovery.address(&member("a", None)), None, "a went away");
    }

    #[test]
    fn only_dns_reresolves_unreachable_members() {
        let watched = Discovery::new(Kind::Watched);
        watched.unreachable("a");
        assert!(watched.take_stale().is_empty());
        let resolved = Discovery::new(Kind::Resolved);
        resolved.unreachable("a");
        assert_eq!(resolved.take_stale(), ["a"]);
        assert!(resolved.take_stale().is_empty());
    }
}
