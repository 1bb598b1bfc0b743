//! The prometheus-operator objects of a CacheCluster (`spec.monitoring`), foreign CRDs
//! and hence dynamic objects: a ServiceMonitor or a PodMonitor that scrapes each cache
//! pod's `/metrics` once, and a PrometheusRule with kache's alerts for this cluster.
//!
//! Scraped once: the ServiceMonitor selects one Service (the peer one, by its role
//! label) and one port (`http`); both Services expose `http`, and selecting both would
//! scrape every pod twice and double every sum. The PodMonitor selects the cache pods
//! and the same one port. Either adds the target label `cachecluster` (the cluster's
//! name), which the alerts and the dashboard select on next to `namespace`.
//!
//! With client TLS on, `http` serves HTTPS only: the scrape then uses https, trusts
//! `ca.crt` of the client TLS Secret and checks the client Service's name, which every
//! pod's client certificate carries (`certs::client_leaf_spec`).

use std::collections::BTreeMap;

use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::names::{Names, SERVICE_ROLE_LABEL, metadata};
use super::security::{CA_CERT_KEY, Security};
use super::service::PEERS_ROLE;
use crate::alerts::{self, CLUSTER_TARGET_LABEL, Scope};
use crate::crd::CacheCluster;

const GROUP: &str = "monitoring.coreos.com";
/// The one port scraped, on the Service and on the pods.
pub const SCRAPE_PORT: &str = "http";
pub const METRICS_PATH: &str = "/metrics";

pub fn service_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

pub fn pod_monitor_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "PodMonitor"),
        "podmonitors",
    )
}

pub fn prometheus_rule_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk(GROUP, "v1", "PrometheusRule"),
        "prometheusrules",
    )
}

/// The ServiceMonitor, or None when `spec.monitoring.serviceMonitor` is off.
pub fn service_monitor(cc: &CacheCluster, security: &Security) -> Option<DynamicObject> {
    if !cc.spec.monitoring.service_monitor {
        return None;
    }
    let names = Names::of(cc);
    let mut selector = names.selector_labels();
    selector.insert(SERVICE_ROLE_LABEL.to_owned(), PEERS_ROLE.to_owned());
    let spec = json!({
        "selector": {"matchLabels": selector},
        "endpoints": [endpoint(cc, security)],
    });
    Some(object(cc, &service_monitor_resource(), spec, &[]))
}

/// The PodMonitor, or None when `spec.monitoring.podMonitor` is off.
pub fn pod_monitor(cc: &CacheCluster, security: &Security) -> Option<DynamicObject> {
    if !cc.spec.monitoring.pod_monitor {
        return None;
    }
    let names = Names::of(cc);
    let spec = json!({
        "selector": {"matchLabels": names.selector_labels()},
        "podMetricsEndpoints": [endpoint(cc, security)],
    });
    Some(object(cc, &pod_monitor_resource(), spec, &[]))
}

/// The PrometheusRule of this cluster's alerts (`crate::alerts`, scoped to its namespace
/// and name), or None when `spec.monitoring.prometheusRule.enabled` is off.
pub fn prometheus_rule(cc: &CacheCluster) -> Option<DynamicObject> {
    let rule = &cc.spec.monitoring.prometheus_rule;
    if !rule.enabled {
        return None;
    }
    let names = Names::of(cc);
    let spec = alerts::groups(Scope::Cluster {
        namespace: &names.namespace,
        name: &names.cluster,
    });
    Some(object(
        cc,
        &prometheus_rule_resource(),
        spec,
        &[&rule.labels],
    ))
}

/// The one scrape endpoint, the same in both monitors.
fn endpoint(cc: &CacheCluster, security: &Security) -> Value {
    let names = Names::of(cc);
    let mut endpoint = json!({
        "port": SCRAPE_PORT,
        "path": METRICS_PATH,
        "interval": cc.spec.monitoring.interval,
        "relabelings": [{
            "action": "replace",
            "targetLabel": CLUSTER_TARGET_LABEL,
            "replacement": names.cluster,
        }],
    });
    if let (Some(client), Some(fields)) = (&security.client, endpoint.as_object_mut()) {
        fields.insert("scheme".to_owned(), json!("https"));
        fields.insert(
            "tlsConfig".to_owned(),
            json!({
                "ca": {"secret": {"name": client.secret, "key": CA_CERT_KEY}},
                "serverName": format!("{}.{}.svc", names.cluster, names.namespace),
            }),
        );
    }
    endpoint
}

/// A monitoring object named after the cluster, with the owned objects' metadata and
/// `spec.monitoring.labels` (then `extra`) on top; the operator's own labels win.
fn object(
    cc: &CacheCluster,
    resource: &ApiResource,
    spec: Value,
    extra: &[&BTreeMap<String, String>],
) -> DynamicObject {
    let names = Names::of(cc);
    let mut object = DynamicObject::new(&names.cluster, resource);
    let mut meta = metadata(cc, names.cluster);
    let ours = meta.labels.take().unwrap_or_default();
    let mut labels = cc.spec.monitoring.labels.clone();
    for more in extra {
        labels.extend((*more).clone());
    }
    labels.extend(ours);
    meta.labels = Some(labels);
    object.metadata = meta;
    object.data = Value::Object(serde_json::Map::from_iter([("spec".to_owned(), spec)]));
    object
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::names::tests::cache_cluster;
    use crate::resources::security::resolve;
    use crate::resources::service::{client_service, peer_service};
    use k8s_openapi::api::core::v1::Service;

    fn built(spec: &str) -> (CacheCluster, Security) {
        let cc = cache_cluster(spec);
        let security = resolve(&cc, None);
        (cc, security)
    }

    fn selects(selector: &Value, labels: &BTreeMap<String, String>) -> bool {
        let wanted = selector["matchLabels"].as_object().unwrap();
        !wanted.is_empty()
            && wanted
                .iter()
                .all(|(k, v)| labels.get(k).map(String::as_str) == v.as_str())
    }

    fn service_labels(service: Service) -> BTreeMap<String, String> {
        service.metadata.labels.unwrap()
    }

    #[test]
    fn the_service_monitor_selects_exactly_one_service_and_scrapes_one_port() {
        let (cc, security) =
            built("replicas: 3\nmonitoring: {serviceMonitor: true, interval: 15s}");
        let monitor = service_monitor(&cc, &security).unwrap();
        assert_eq!(monitor.types.as_ref().unwrap().kind, "ServiceMonitor");
        assert_eq!(monitor.metadata.name.as_deref(), Some("demo"));
        assert_eq!(monitor.metadata.namespace.as_deref(), Some("shop"));
        let spec = &monitor.data["spec"];
        let selector = &spec["selector"];
        assert_eq!(
            selector["matchLabels"][SERVICE_ROLE_LABEL], PEERS_ROLE,
            "the peers role label"
        );
        let services = [peer_service(&cc), client_service(&cc)];
        let selected: Vec<_> = services
            .into_iter()
            .filter(|s| selects(selector, &service_labels(s.clone())))
            .map(|s| s.metadata.name.unwrap())
            .collect();
        assert_eq!(
            selected,
            [Names::of(&cc).peers()],
            "one Service: each pod scraped once"
        );
        let endpoints = spec["endpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 1, "one port");
        assert_eq!(endpoints[0]["port"], "http");
        assert_eq!(endpoints[0]["path"], "/metrics");
        assert_eq!(endpoints[0]["interval"], "15s");
        assert_eq!(
            endpoints[0]["relabelings"][0]["targetLabel"], CLUSTER_TARGET_LABEL,
            "the alerts select on the cluster's name"
        );
        assert_eq!(endpoints[0]["relabelings"][0]["replacement"], "demo");
        assert!(
            endpoints[0].get("scheme").is_none(),
            "plain http by default"
        );
        assert!(spec.get("namespaceSelector").is_none(), "its own namespace");
        assert!(pod_monitor(&cc, &security).is_none());
    }

    #[test]
    fn the_pod_monitor_selects_the_cache_pods_and_one_port() {
        let (cc, security) = built("replicas: 3\nmonitoring: {podMonitor: true}");
        let monitor = pod_monitor(&cc, &security).unwrap();
        assert_eq!(monitor.types.as_ref().unwrap().kind, "PodMonitor");
        let spec = &monitor.data["spec"];
        assert_eq!(
            spec["selector"]["matchLabels"],
            serde_json::to_value(Names::of(&cc).selector_labels()).unwrap(),
            "exactly the StatefulSet's pods"
        );
        let endpoints = spec["podMetricsEndpoints"].as_array().unwrap();
        assert_eq!(endpoints.len(), 1);
        assert_eq!(endpoints[0]["port"], "http");
        assert_eq!(endpoints[0]["interval"], "30s");
        assert!(service_monitor(&cc, &security).is_none());
    }

    #[test]
    fn with_client_tls_the_scrape_is_https_trusting_the_client_ca() {
        for monitoring in ["serviceMonitor: true", "podMonitor: true"] {
            let (cc, security) = built(&format!(
                "replicas: 3\ntls: {{client: {{enabled: true}}}}\nmonitoring: {{{monitoring}}}"
            ));
            let monitor = service_monitor(&cc, &security)
                .or_else(|| pod_monitor(&cc, &security))
                .unwrap();
            let spec = &monitor.data["spec"];
            let endpoint = spec["endpoints"]
                .get(0)
                .or_else(|| spec["podMetricsEndpoints"].get(0))
                .unwrap();
            assert_eq!(endpoint["scheme"], "https");
            let tls = &endpoint["tlsConfig"];
            assert_eq!(tls["ca"]["secret"]["name"], "demo-client-tls");
            assert_eq!(tls["ca"]["secret"]["key"], "ca.crt");
            assert_eq!(tls["serverName"], "demo.shop.svc");
            let names = Names::of(&cc);
            assert!(
                crate::resources::certs::client_leaf_spec(&names, &names.pod(0))
                    .dns_names
                    .contains(&"demo.shop.svc".to_owned()),
                "every pod's client certificate carries the server name"
            );
        }
        let (cc, security) = built(
            "replicas: 3\ntls: {client: {enabled: true, secretName: my-tls}}\nmonitoring: {podMonitor: true}",
        );
        let monitor = pod_monitor(&cc, &security).unwrap();
        assert_eq!(
            monitor.data["spec"]["podMetricsEndpoints"][0]["tlsConfig"]["ca"]["secret"]["name"],
            "my-tls"
        );
    }

    #[test]
    fn the_users_labels_go_on_the_monitors_and_the_rule_and_ours_win() {
        let (cc, security) = built(
            "replicas: 3\nmonitoring: {serviceMonitor: true, labels: {release: prom, app.kubernetes.io/instance: other}, \
             prometheusRule: {enabled: true, labels: {role: alert-rules}}}",
        );
        let monitor = service_monitor(&cc, &security).unwrap();
        let labels = monitor.metadata.labels.unwrap();
        assert_eq!(labels["release"], "prom");
        assert_eq!(labels["app.kubernetes.io/instance"], "demo");
        assert!(
            !labels.contains_key("role"),
            "the rule's labels are the rule's"
        );
        let rule = prometheus_rule(&cc).unwrap();
        let labels = rule.metadata.labels.unwrap();
        assert_eq!(labels["release"], "prom");
        assert_eq!(labels["role"], "alert-rules");
        assert!(rule.metadata.owner_references.is_some());
    }

    #[test]
    fn the_prometheus_rule_carries_every_alert_scoped_to_the_cluster() {
        let (cc, _) = built("replicas: 3");
        assert!(prometheus_rule(&cc).is_none());
        let (cc, _) = built("replicas: 3\nmonitoring: {prometheusRule: {enabled: true}}");
        let rule = prometheus_rule(&cc).unwrap();
        assert_eq!(rule.types.as_ref().unwrap().kind, "PrometheusRule");
        let rules = rule.data["spec"]["groups"][0]["rules"].as_array().unwrap();
        let expected = alerts::alerts(Scope::All);
        assert_eq!(rules.len(), expected.len());
        for (rule, alert) in rules.iter().zip(&expected) {
            assert_eq!(rule["alert"], alert.name);
            let expr = rule["expr"].as_str().unwrap();
            assert!(
                expr.contains("cachecluster=\"demo\"") || expr.contains("cluster=\"shop/demo\""),
                "{expr}"
            );
        }
    }
}
