//! The prometheus-operator objects of a CacheCluster on the real API server, with
//! stand-ins for the `monitoring.coreos.com` CRDs (served, any fields; Prometheus itself
//! is not run): the ServiceMonitor selects exactly one of the namespace's Services and
//! scrapes one port, so each pod is scraped once; a PodMonitor replaces it when asked;
//! the PrometheusRule carries alerts scoped to the cluster; each goes when turned off.

use super::*;

/// (kind, plural) of the stand-in CRDs.
const KINDS: [(&str, &str); 3] = [
    ("ServiceMonitor", "servicemonitors"),
    ("PodMonitor", "podmonitors"),
    ("PrometheusRule", "prometheusrules"),
];

fn crd(kind: &str, plural: &str) -> String {
    let singular = kind.to_lowercase();
    format!(
        "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {{name: {plural}.monitoring.coreos.com}}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {{kind: {kind}, listKind: {kind}List, plural: {plural}, singular: {singular}}}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
"
    )
}

/// Installs the stand-in CRDs and waits until they are served. Called before the RBAC
/// checks, since `kubectl auth can-i` answers no for a resource the server lacks.
pub fn install_crds() {
    for (kind, plural) in KINDS {
        apply(&crd(kind, plural));
        must(
            "kubectl",
            &[
                "wait",
                "--for=condition=established",
                &format!("crd/{plural}.monitoring.coreos.com"),
                "--timeout=60s",
            ],
            None,
        );
    }
}

fn objects(client: &Client, kind: &str, plural: &str) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", kind),
        plural,
    );
    Api::namespaced_with(client.clone(), NS, &resource)
}

/// The objects of cluster `name` that exist, by kind.
async fn present(client: &Client, name: &str) -> BTreeMap<&'static str, DynamicObject> {
    let mut found = BTreeMap::new();
    for (kind, plural) in KINDS {
        if let Some(object) = objects(client, kind, plural).get_opt(name).await.unwrap() {
            found.insert(kind, object);
        }
    }
    found
}

/// Waits until exactly `kinds` exist for cluster `name`, and returns them.
async fn wait_for(
    client: &Client,
    name: &str,
    kinds: &[&str],
) -> BTreeMap<&'static str, DynamicObject> {
    eventually(
        &format!("exactly {kinds:?} for cc/{name}"),
        Duration::from_secs(60),
        move || async move {
            let found = present(client, name).await;
            found.keys().eq(kinds.iter()).then_some(found)
        },
    )
    .await
}

fn set_monitoring(name: &str, monitoring: &str) {
    must(
        "kubectl",
        &[
            "-n",
            NS,
            "patch",
            "cachecluster",
            name,
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"spec":{{"monitoring":{monitoring}}}}}"#),
        ],
        None,
    );
}

/// A label selector string from a `matchLabels` object.
fn selector(match_labels: &Json) -> String {
    match_labels
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().unwrap()))
        .collect::<Vec<_>>()
        .join(",")
}

/// Cluster `name` (running, in NS) scraped by a ServiceMonitor, then a PodMonitor, with
/// its PrometheusRule; then neither.
pub async fn scraped_once(client: &Client, name: &str) {
    log(&format!(
        "cc/{name}: ServiceMonitor and PrometheusRule (stand-in CRDs)"
    ));
    set_monitoring(
        name,
        r#"{"serviceMonitor":true,"labels":{"release":"prom"},"prometheusRule":{"enabled":true}}"#,
    );
    let found = wait_for(client, name, &["PrometheusRule", "ServiceMonitor"]).await;
    let monitor = &found["ServiceMonitor"];
    assert_eq!(
        monitor.labels().get("release").map(String::as_str),
        Some("prom")
    );
    let spec = &monitor.data["spec"];
    let services = Api::<Service>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&selector(&spec["selector"]["matchLabels"])))
        .await
        .unwrap()
        .items;
    let selected: Vec<String> = services.iter().map(ResourceExt::name_any).collect();
    assert_eq!(
        selected,
        [format!("{name}-peers")],
        "one Service of the namespace, so each pod is scraped once"
    );
    let endpoints = spec["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "one port: {endpoints:?}");
    assert_eq!(endpoints[0]["port"], "http");
    let ports = services[0].spec.as_ref().unwrap().ports.as_ref().unwrap();
    assert!(
        ports.iter().any(|p| p.name.as_deref() == Some("http")),
        "the Service has the port the monitor names"
    );
    let rules = found["PrometheusRule"].data["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!rules.is_empty());
    let scoped = [
        format!("cluster=\"{NS}/{name}\""),
        format!("namespace=\"{NS}\",cachecluster=\"{name}\""),
    ];
    for rule in &rules {
        let expr = rule["expr"].as_str().unwrap();
        assert!(
            scoped.iter().any(|s| expr.contains(s.as_str())),
            "{}: {expr}",
            rule["alert"]
        );
    }
    log(&format!(
        "ServiceMonitor: one Service ({name}-peers), one port (http); PrometheusRule: {} alerts",
        rules.len()
    ));

    set_monitoring(name, r#"{"serviceMonitor":false,"podMonitor":true}"#);
    let found = wait_for(client, name, &["PodMonitor", "PrometheusRule"]).await;
    let spec = &found["PodMonitor"].data["spec"];
    let pods = Api::<Pod>::namespaced(client.clone(), NS)
        .list(&ListParams::default().labels(&selector(&spec["selector"]["matchLabels"])))
        .await
        .unwrap()
        .items;
    assert!(!pods.is_empty());
    for pod in &pods {
        assert!(
            pod.name_any().starts_with(&format!("{name}-")),
            "the PodMonitor selects {}",
            pod.name_any()
        );
    }
    let endpoints = spec["podMetricsEndpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1, "one port: {endpoints:?}");
    assert_eq!(endpoints[0]["port"], "http");

    set_monitoring(
        name,
        r#"{"podMonitor":false,"prometheusRule":{"enabled":false}}"#,
    );
    wait_for(client, name, &[]).await;
    log("PodMonitor instead of the ServiceMonitor, then each deleted when turned off");
}
