//! EndpointSlice discovery: member addresses from the EndpointSlices of the headless
//! Service (label `kubernetes.io/service-name=<service>`), watched through the API.
//!
//! Each endpoint's `targetRef` names its pod, and a pod's name is its member id. The
//! headless Service publishes not-ready addresses, so a pod that is still syncing (not
//! ready, by design) is listed too; readiness is deliberately not filtered on, since a
//! syncing member must be reachable to pull its partitions and to answer `Hello`.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};

use super::Discovery;

/// The port name the operator gives the peer port.
pub const GRPC_PORT_NAME: &str = "grpc";

/// Member id -> peer address, from a set of EndpointSlices. An endpoint without a pod
/// `targetRef` or without an IP address is skipped. The port is the slice's port named
/// `grpc`, or `fallback_port` when it has none. When a pod appears twice (slices are
/// being rebalanced), an endpoint that is not terminating wins, then the first seen.
pub fn addresses_from_slices<'a>(
    slices: impl IntoIterator<Item = &'a EndpointSlice>,
    fallback_port: u16,
) -> HashMap<String, SocketAddr> {
    let mut addresses: HashMap<String, (SocketAddr, bool)> = HashMap::new();
    for slice in slices {
        let port = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(GRPC_PORT_NAME))
            .and_then(|p| p.port)
            .and_then(|port| u16::try_from(port).ok())
            .filter(|&port| port != 0)
            .unwrap_or(fallback_port);
        for endpoint in &slice.endpoints {
            let Some(target) = &endpoint.target_ref else {
                continue;
            };
            if target.kind.as_deref().is_some_and(|kind| kind != "Pod") {
                continue;
            }
            let Some(id) = target.name.as_deref().filter(|name| !name.is_empty()) else {
                continue;
            };
            // FQDN slices carry names, not IPs: not usable as peer addresses.
            let Some(ip) = endpoint
                .addresses
                .iter()
                .find_map(|a| a.parse::<IpAddr>().ok())
            else {
                continue;
            };
            let terminating = endpoint
                .conditions
                .as_ref()
                .and_then(|c| c.terminating)
                .unwrap_or(false);
            let address = SocketAddr::new(ip, port);
            match addresses.get(id) {
                Some((_, false)) => {}
                Some((_, true)) if terminating => {}
                _ => {
                    addresses.insert(id.to_owned(), (address, terminating));
                }
            }
        }
    }
    addresses
        .into_iter()
        .map(|(id, (address, _))| (id, address))
        .collect()
}

/// Watches the Service's EndpointSlices and keeps `discovery` current. API errors are
/// retried with the watcher's backoff; the addresses known stay in force meanwhile.
pub fn spawn(
    client: kube::Client,
    namespace: &str,
    service: &str,
    fallback_port: u16,
    discovery: Discovery,
) -> tokio::task::JoinHandle<()> {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let selector = format!("kubernetes.io/service-name={service}");
    let config = watcher::Config::default().labels(&selector);
    let source = format!("EndpointSlices {namespace}/{selector}");
    tokio::spawn(async move {
        let mut events = watcher(api, config).default_backoff().boxed();
        // Slices by name. A re-list (after a broken watch) fills `relisting` and replaces
        // `slices` only when complete, so a partial list never drops addresses.
        let mut slices: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        let mut relisting: BTreeMap<String, EndpointSlice> = BTreeMap::new();
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => relisting.clear(),
                Ok(watcher::Event::InitApply(slice)) => {
                    relisting.insert(slice.metadata.name.clone().unwrap_or_default(), slice);
                    continue;
                }
                Ok(watcher::Event::InitDone) => slices = std::mem::take(&mut relisting),
                Ok(watcher::Event::Apply(slice)) => {
                    slices.insert(slice.metadata.name.clone().unwrap_or_default(), slice);
                }
                Ok(watcher::Event::Delete(slice)) => {
                    slices.remove(slice.metadata.name.as_deref().unwrap_or_default());
                }
                Err(err) => {
                    tracing::warn!(%source, error = %err, "watching EndpointSlices failed; retrying");
                    continue;
                }
            }
            let changed =
                discovery.replace_all(addresses_from_slices(slices.values(), fallback_port));
            if !changed.is_empty() {
                tracing::info!(%source, members = ?changed, "peer addresses changed");
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};

    use super::*;

    fn endpoint(pod: Option<&str>, addresses: &[&str]) -> Endpoint {
        Endpoint {
            addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
            target_ref: pod.map(|name| ObjectReference {
                kind: Some("Pod".into()),
                name: Some(name.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn slice(ports: Option<Vec<(&str, i32)>>, endpoints: Vec<Endpoint>) -> EndpointSlice {
        EndpointSlice {
            address_type: "IPv4".into(),
            endpoints,
            ports: ports.map(|ports| {
                ports
                    .into_iter()
                    .map(|(name, port)| EndpointPort {
                        name: Some(name.into()),
                        port: Some(port),
                        ..Default::default()
                    })
                    .collect()
            }),
            ..Default::default()
        }
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().expect("address")
    }

    #[test]
    fn maps_pods_to_their_first_address_and_the_grpc_port() {
        let slices = [slice(
            Some(vec![("http", 7070), ("grpc", 7171)]),
            vec![
                endpoint(Some("demo-0"), &["10.88.0.10", "10.88.0.11"]),
                endpoint(Some("demo-1"), &["10.88.0.12"]),
            ],
        )];
        let addresses = addresses_from_slices(&slices, 7071);
        assert_eq!(addresses.len(), 2);
        assert_eq!(addresses["demo-0"], addr("10.88.0.10:7171"));
        assert_eq!(addresses["demo-1"], addr("10.88.0.12:7171"));
    }

    #[test]
    fn without_a_grpc_port_the_peer_port_is_used() {
        let no_ports = slice(None, vec![endpoint(Some("demo-0"), &["10.88.0.10"])]);
        let other_ports = slice(
            Some(vec![("http", 7070)]),
            vec![endpoint(Some("demo-1"), &["10.88.0.11"])],
        );
        let bad_port = slice(
            Some(vec![("grpc", 70_000)]),
            vec![endpoint(Some("demo-2"), &["10.88.0.12"])],
        );
        let addresses = addresses_from_slices(&[no_ports, other_ports, bad_port], 7071);
        assert_eq!(addresses["demo-0"], addr("10.88.0.10:7071"));
        assert_eq!(addresses["demo-1"], addr("10.88.0.11:7071"));
        assert_eq!(addresses["demo-2"], addr("10.88.0.12:7071"));
    }

    #[test]
    fn endpoints_without_a_pod_or_an_ip_are_skipped() {
        let mut node_ref = endpoint(Some("node-a"), &["10.88.0.13"]);
        if let Some(target) = node_ref.target_ref.as_mut() {
            target.kind = Some("Node".into());
        }
        let slices = [slice(
            Some(vec![("grpc", 7071)]),
            vec![
                endpoint(None, &["10.88.0.10"]),
                endpoint(Some("demo-1"), &[]),
                endpoint(Some("demo-2"), &["demo-2.example.com"]),
                endpoint(Some(""), &["10.88.0.14"]),
                node_ref,
                endpoint(Some("demo-3"), &["fd00::3"]),
            ],
        )];
        let addresses = addresses_from_slices(&slices, 7071);
        assert_eq!(
            addresses,
            HashMap::from([("demo-3".to_owned(), addr("[fd00::3]:7071"))])
        );
        assert!(addresses_from_slices(&[], 7071).is_empty());
    }

    #[test]
    fn not_ready_pods_are_listed_and_a_live_endpoint_beats_a_terminating_one() {
        let mut syncing = endpoint(Some("demo-0"), &["10.88.0.10"]);
        syncing.conditions = Some(EndpointConditions {
            ready: Some(false),
            serving: Some(false),
            terminating: Some(false),
        });
        let mut old = endpoint(Some("demo-1"), &["10.88.0.20"]);
        old.conditions = Some(EndpointConditions {
            terminating: Some(true),
            ..Default::default()
        });
        let new = endpoint(Some("demo-1"), &["10.88.0.21"]);
        let later_duplicate = endpoint(Some("demo-0"), &["10.88.0.99"]);
        let slices = [
            slice(Some(vec![("grpc", 7071)]), vec![syncing, old]),
            slice(Some(vec![("grpc", 7071)]), vec![new, later_duplicate]),
        ];
        let addresses = addresses_from_slices(&slices, 7071);
        assert_eq!(
            addresses["demo-0"],
            addr("10.88.0.10:7071"),
            "not ready, still listed"
        );
        assert_eq!(addresses["demo-1"], addr("10.88.0.21:7071"));
    }
}
