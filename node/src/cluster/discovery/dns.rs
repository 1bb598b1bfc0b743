//! DNS discovery: a member's address is the A record of
//! `<id>.<service>.<namespace>.svc.<cluster-domain>` (the per-pod name a headless Service
//! with a StatefulSet gives), on the peer port.
//!
//! Every member and departing member of the current list is resolved when the list
//! changes and every [`REFRESH`]; a member whose call failed is resolved again at once
//! (at most every [`MIN_GAP`]), since a recreated pod comes back under a new IP. A failed
//! lookup keeps the last address: a DNS hiccup must not make a reachable member
//! unreachable.

use std::collections::BTreeSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use super::Discovery;
use crate::cluster::membership::MemberList;

/// How often every member is resolved again.
pub const REFRESH: Duration = Duration::from_secs(10);
/// The least time between two rounds, however many calls fail.
pub const MIN_GAP: Duration = Duration::from_millis(500);
/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(2);

/// The names DNS discovery resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsNames {
    pub service: String,
    pub namespace: String,
    pub cluster_domain: String,
    pub port: u16,
}

impl DnsNames {
    /// The fully qualified name of member `id`.
    pub fn name(&self, id: &str) -> String {
        format!(
            "{id}.{}.{}.svc.{}",
            self.service,
            self.namespace,
            self.cluster_domain.trim_matches('.')
        )
    }
}

/// Looks a name up: every address it has, on `port`.
pub type Resolve =
    Arc<dyn Fn(String, u16) -> BoxFuture<'static, io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The system resolver (getaddrinfo, so /etc/resolv.conf and the pod's search path).
pub fn system_resolver() -> Resolve {
    Arc::new(|name, port| {
        Box::pin(async move {
            Ok(tokio::net::lookup_host((name.as_str(), port))
                .await?
                .collect())
        })
    })
}

/// The address to use among a name's: an IPv4 one (A record) when there is one.
pub fn pick_address(addresses: &[SocketAddr]) -> Option<SocketAddr> {
    addresses
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addresses.first())
        .copied()
}

/// Resolves the members of the latest list `lists` published into `discovery`, until
/// the task is aborted.
pub fn spawn(
    discovery: Discovery,
    names: DnsNames,
    mut lists: watch::Receiver<MemberList>,
    resolve: Resolve,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        // A static list's source closes at once; its members still need resolving.
        let mut lists_open = true;
        loop {
            let mut ids: BTreeSet<String> = lists
                .borrow_and_update()
                .holders()
                .map(|m| m.id.clone())
                .collect();
            ids.extend(discovery.take_stale());
            resolve_round(&discovery, &names, &resolve, ids).await;
            tokio::time::sleep(MIN_GAP).await;
            tokio::select! {
                () = tokio::time::sleep(REFRESH) => {}
                changed = lists.changed(), if lists_open => lists_open = changed.is_ok(),
                () = discovery.shared.wake.notified() => {}
            }
        }
    })
}

async fn resolve_round(
    discovery: &Discovery,
    names: &DnsNames,
    resolve: &Resolve,
    ids: BTreeSet<String>,
) {
    let lookups = ids.into_iter().map(|id| {
        let name = names.name(&id);
        let lookup = resolve(name.clone(), names.port);
        async move {
            let result = tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await;
            (id, name, result)
        }
    });
    for (id, name, result) in futures::future::join_all(lookups).await {
        match result {
            Ok(Ok(addresses)) => match pick_address(&addresses) {
                Some(address) => {
                    if discovery.set(&id, address) {
                        tracing::info!(member = %id, %address, "peer address resolved");
                    }
                }
                None => tracing::debug!(member = %id, %name, "no address for member yet"),
            },
            Ok(Err(err)) => {
                tracing::debug!(member = %id, %name, error = %err, "cannot resolve member");
            }
            Err(_) => tracing::debug!(member = %id, %name, "resolving member timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use parking_lot::Mutex;

    use super::super::Kind;
    use super::*;
    use crate::cluster::membership::Member;

    fn names() -> DnsNames {
        DnsNames {
            service: "demo-peers".into(),
            namespace: "cache".into(),
            cluster_domain: "cluster.local.".into(),
            port: 7071,
        }
    }

    #[test]
    fn names_follow_the_statefulset_pattern_and_a_records_win() {
        assert_eq!(
            names().name("demo-0"),
            "demo-0.demo-peers.cache.svc.cluster.local"
        );
        let v6: SocketAddr = "[fd00::1]:7071".parse().expect("addr");
        let v4: SocketAddr = "10.0.0.1:7071".parse().expect("addr");
        assert_eq!(pick_address(&[v6, v4]), Some(v4));
        assert_eq!(pick_address(&[v6]), Some(v6));
        assert_eq!(pick_address(&[]), None);
    }

    /// A resolver answering from a table, counting lookups per name.
    #[derive(Default)]
    struct Table {
        answers: Mutex<HashMap<String, Vec<SocketAddr>>>,
        lookups: Mutex<HashMap<String, usize>>,
    }

    fn resolver(table: &Arc<Table>) -> Resolve {
        let table = table.clone();
        Arc::new(move |name, port| {
            *table.lookups.lock().entry(name.clone()).or_default() += 1;
            let answer = table.answers.lock().get(&name).cloned();
            Box::pin(async move {
                match answer {
                    Some(ips) => Ok(ips
                        .into_iter()
                        .map(|a| SocketAddr::new(a.ip(), port))
                        .collect()),
                    None => Err(io::Error::new(io::ErrorKind::NotFound, "NXDOMAIN")),
                }
            })
        })
    }

    fn list() -> MemberList {
        let mut list = MemberList::none(271);
        list.epoch = 1;
        list.members = vec![Member {
            id: "demo-0".into(),
            address: None,
        }];
        list.departing = vec![Member {
            id: "demo-1".into(),
            address: None,
        }];
        list
    }

    fn answer(table: &Table, id: &str, ip: &str) {
        let address = format!("{ip}:1").parse().expect("addr");
        table.answers.lock().insert(names().name(id), vec![address]);
    }

    #[tokio::test(start_paused = true)]
    async fn resolves_members_and_departing_members_and_follows_a_new_ip_on_failure() {
        let table = Arc::new(Table::default());
        answer(&table, "demo-0", "10.0.0.1");
        answer(&table, "demo-1", "10.0.0.2");
        let discovery = Discovery::new(Kind::Resolved);
        let (_tx, lists) = watch::channel(list());
        let task = spawn(discovery.clone(), names(), lists, resolver(&table));
        tokio::time::sleep(Duration::from_millis(10)).await;
        let demo_0 = Member {
            id: "demo-0".into(),
            address: None,
        };
        let demo_1 = Member {
            id: "demo-1".into(),
            address: None,
        };
        assert_eq!(discovery.address(&demo_0), "10.0.0.1:7071".parse().ok());
        assert_eq!(
            discovery.address(&demo_1),
            "10.0.0.2:7071".parse().ok(),
            "departing members are reachable too"
        );

        // The pod is recreated under a new IP; a failed call makes it resolve again well
        // before the periodic refresh.
        answer(&table, "demo-0", "10.0.0.7");
        discovery.unreachable("demo-0");
        tokio::time::sleep(MIN_GAP * 2).await;
        assert_eq!(discovery.address(&demo_0), "10.0.0.7:7071".parse().ok());

        // A lookup that fails keeps the last address.
        table.answers.lock().clear();
        tokio::time::sleep(REFRESH * 2).await;
        assert!(
            table.lookups.lock()[&names().name("demo-1")] >= 3,
            "periodic refresh"
        );
        assert_eq!(discovery.address(&demo_0), "10.0.0.7:7071".parse().ok());
        task.abort();
    }
}
