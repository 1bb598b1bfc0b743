//! Objects a CacheCluster asks for by choice: a NetworkPolicy that keeps the peer port
//! to the cluster's own pods, and a prometheus-operator ServiceMonitor (a foreign CRD,
//! hence a dynamic object).

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};

use super::names::{Names, SERVICE_ROLE_LABEL, metadata};
use super::service::PEERS_ROLE;
use crate::crd::CacheCluster;

pub fn network_policy(cc: &CacheCluster) -> Option<NetworkPolicy> {
    if !cc.spec.network_policy.enabled {
        return None;
    }
    let names = Names::of(cc);
    let selector = LabelSelector {
        match_labels: Some(names.selector_labels()),
        ..LabelSelector::default()
    };
    let port = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    };
    Some(NetworkPolicy {
        metadata: metadata(cc, names.cluster),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(selector.clone()),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(vec![
                // Clients (and the operator, which reads /v1/cluster) reach the HTTP and
                // RESP ports.
                NetworkPolicyIngressRule {
                    ports: Some(vec![port("http"), port("resp")]),
                    from: None,
                },
                // Only members reach the peer port.
                NetworkPolicyIngressRule {
                    ports: Some(vec![port("grpc")]),
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(selector),
                        ..NetworkPolicyPeer::default()
                    }]),
                },
            ]),
            ..NetworkPolicySpec::default()
        }),
    })
}

pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

pub fn service_monitor(cc: &CacheCluster) -> Option<DynamicObject> {
    if !cc.spec.monitoring.service_monitor {
        return None;
    }
    let names = Names::of(cc);
    let mut monitor = DynamicObject::new(&names.cluster, &service_monitor_resource());
    monitor.metadata = metadata(cc, names.cluster.clone());
    // One Service only, so each pod is scraped once (both Services expose `http`).
    let mut selector = names.selector_labels();
    selector.insert(SERVICE_ROLE_LABEL.to_owned(), PEERS_ROLE.to_owned());
    monitor.data = serde_json::json!({
        "spec": {
            "selector": {"matchLabels": selector},
            "endpoints": [{"port": "http", "path": "/metrics", "interval": cc.spec.monitoring.interval}],
        }
    });
    Some(monitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::names::tests::cache_cluster;

    #[test]
    fn optional_objects_exist_only_when_asked_for() {
        let plain = cache_cluster("replicas: 3");
        assert!(network_policy(&plain).is_none());
        assert!(service_monitor(&plain).is_none());

        let full = cache_cluster(
            "replicas: 3\nnetworkPolicy: {enabled: true}\nmonitoring: {serviceMonitor: true, interval: 15s}",
        );
        let policy = network_policy(&full).unwrap().spec.unwrap();
        let rules = policy.ingress.unwrap();
        assert!(rules[0].from.is_none(), "anyone may reach the client port");
        assert!(rules[1].from.is_some(), "only members reach the peer port");
        let monitor = service_monitor(&full).unwrap();
        assert_eq!(monitor.data["spec"]["endpoints"][0]["interval"], "15s");
        assert_eq!(monitor.types.unwrap().kind, "ServiceMonitor");
        // It selects exactly one of the cluster's two Services: each pod scraped once.
        let selector = monitor.data["spec"]["selector"]["matchLabels"]
            .as_object()
            .unwrap()
            .clone();
        let selects = |service: k8s_openapi::api::core::v1::Service| {
            let labels = service.metadata.labels.unwrap();
            selector
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
        };
        assert!(selects(crate::resources::service::peer_service(&full)));
        assert!(!selects(crate::resources::service::client_service(&full)));
    }
}
