//! The two Services: a headless one through which the nodes find each other (its
//! EndpointSlices list every pod, ready or not, since a syncing node must still be
//! reachable by its peers), and the client one, which routes to ready pods only.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{Names, SERVICE_ROLE_LABEL, metadata};
use crate::crd::CacheCluster;

/// The value of [`SERVICE_ROLE_LABEL`] on the headless Service: the one Service a
/// ServiceMonitor scrapes (it lists every pod, syncing ones too).
pub const PEERS_ROLE: &str = "peers";

fn with_role(mut meta: ObjectMeta, role: &str) -> ObjectMeta {
    meta.labels
        .get_or_insert_default()
        .insert(SERVICE_ROLE_LABEL.to_owned(), role.to_owned());
    meta
}

pub fn peer_service(cc: &CacheCluster) -> Service {
    let names = Names::of(cc);
    Service {
        metadata: with_role(metadata(cc, names.peers()), PEERS_ROLE),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".to_owned()),
            publish_not_ready_addresses: Some(true),
            selector: Some(names.selector_labels()),
            ports: Some(vec![
                port("http", cc.spec.service.http_port),
                port("grpc", cc.spec.service.grpc_port),
                port("resp", cc.spec.service.resp_port),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

pub fn client_service(cc: &CacheCluster) -> Service {
    let names = Names::of(cc);
    let mut meta = with_role(metadata(cc, names.cluster.clone()), "client");
    if !cc.spec.service.annotations.is_empty() {
        meta.annotations
            .get_or_insert_default()
            .extend(cc.spec.service.annotations.clone());
    }
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(cc.spec.service.type_.as_str().to_owned()),
            selector: Some(names.selector_labels()),
            ports: Some(vec![
                port("http", cc.spec.service.http_port),
                port("resp", cc.spec.service.resp_port),
            ]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

fn port(name: &str, number: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_owned()),
        port: number,
        target_port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..ServicePort::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::names::tests::cache_cluster;

    #[test]
    fn peers_see_not_ready_pods_and_clients_do_not() {
        let cc = cache_cluster("replicas: 3\nservice: {type: LoadBalancer, annotations: {lb: x}}");
        let peers = peer_service(&cc).spec.unwrap();
        assert_eq!(peers.cluster_ip.as_deref(), Some("None"));
        assert_eq!(peers.publish_not_ready_addresses, Some(true));
        let names: Vec<_> = peers
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            names,
            [
                ("http".to_owned(), 7070),
                ("grpc".to_owned(), 7071),
                ("resp".to_owned(), 6379)
            ]
        );

        let client = client_service(&cc);
        assert_eq!(client.metadata.name.as_deref(), Some("demo"));
        assert_eq!(client.metadata.annotations.unwrap()["lb"], "x");
        let spec = client.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        assert_eq!(spec.publish_not_ready_addresses, None);
        let client_ports: Vec<_> = spec
            .ports
            .unwrap()
            .into_iter()
            .map(|p| (p.name.unwrap(), p.port))
            .collect();
        assert_eq!(
            client_ports,
            [("http".to_owned(), 7070), ("resp".to_owned(), 6379)],
            "clients reach HTTP and RESP, never the peer port"
        );
    }
}
