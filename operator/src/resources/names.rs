//! Names, labels, label selectors and ownership shared by every object of one
//! CacheCluster. The only place that spells a label: the StatefulSet's selector is
//! immutable and the operator's watches must match what the builders write.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::CacheCluster;

/// The operator's field manager for server-side apply: one owner for every field it sets.
pub const FIELD_MANAGER: &str = "kache-operator";
/// Pod-template annotation holding the node config hash: pods roll when it changes.
pub const CONFIG_HASH_ANNOTATION: &str = "kache.dev/config-hash";

const NAME_LABEL: &str = "app.kubernetes.io/name";
/// The label naming the CacheCluster a cache pod belongs to.
const INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const COMPONENT_LABEL: &str = "app.kubernetes.io/component";
const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// The label the EndpointSlice controller puts on a Service's slices.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Tells a cluster's two Services apart (`peers`, `client`): they share every other
/// label, and a ServiceMonitor that selected both scraped every pod twice.
pub const SERVICE_ROLE_LABEL: &str = "kache.dev/service";

/// Selects every object the operator owns, across all CacheClusters (for its watches).
pub fn owned_selector() -> String {
    format!("{MANAGED_BY_LABEL}={FIELD_MANAGER}")
}

/// Selects the cache pods of every CacheCluster (for the operator's pod watch).
pub fn cache_pods_selector() -> String {
    format!("{NAME_LABEL}=kache,{COMPONENT_LABEL}=cache")
}

/// The name of the CacheCluster a cache pod belongs to, from the pod's labels.
pub fn cluster_of(pod_labels: &BTreeMap<String, String>) -> Option<&str> {
    pod_labels.get(INSTANCE_LABEL).map(String::as_str)
}

/// The names of one CacheCluster's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The CacheCluster's name; also the client Service and the PodDisruptionBudget.
    pub cluster: String,
    pub namespace: String,
}

impl Names {
    pub fn of(cc: &CacheCluster) -> Self {
        Self {
            cluster: cc.name_any(),
            namespace: cc.namespace().unwrap_or_else(|| "default".to_owned()),
        }
    }

    /// The headless Service the nodes discover each other through.
    pub fn peers(&self) -> String {
        format!("{}-peers", self.cluster)
    }

    /// The ConfigMap of node settings.
    pub fn config(&self) -> String {
        format!("{}-config", self.cluster)
    }

    /// The ConfigMap of `upstreams.yaml`, when the spec lists upstreams.
    pub fn upstreams(&self) -> String {
        format!("{}-upstreams", self.cluster)
    }

    /// The ConfigMap of the member list.
    pub fn members(&self) -> String {
        format!("{}-members", self.cluster)
    }

    /// The nodes' ServiceAccount, Role and RoleBinding.
    pub fn node_identity(&self) -> String {
        format!("{}-node", self.cluster)
    }

    /// The Secret of the cluster's CA (`ca.crt`, `ca.key`).
    pub fn ca(&self) -> String {
        format!("{}-ca", self.cluster)
    }

    /// The generated Secret of the peer certificates.
    pub fn peer_tls(&self) -> String {
        format!("{}-peer-tls", self.cluster)
    }

    /// The cert-manager Certificate of member `ordinal`, and the Secret it issues into
    /// (`spec.tls.peer.issuerRef`).
    pub fn peer_certificate(&self, ordinal: u32) -> String {
        format!("{}-peer-{ordinal}", self.cluster)
    }

    /// The ordinal of one of this cluster's pods (`<name>-<ordinal>`).
    pub fn ordinal_of(&self, pod: &str) -> Option<u32> {
        pod.strip_prefix(self.cluster.as_str())?
            .strip_prefix('-')?
            .parse()
            .ok()
    }

    /// The generated Secret of the client-port certificates.
    pub fn client_tls(&self) -> String {
        format!("{}-client-tls", self.cluster)
    }

    /// The generated Secret of the admin token.
    pub fn auth(&self) -> String {
        format!("{}-auth", self.cluster)
    }

    /// The pod of member `ordinal`.
    pub fn pod(&self, ordinal: u32) -> String {
        format!("{}-{ordinal}", self.cluster)
    }

    /// Labels that select this cluster's cache pods. Never change them: a StatefulSet's
    /// selector is immutable.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NAME_LABEL.to_owned(), "kache".to_owned()),
            (INSTANCE_LABEL.to_owned(), self.cluster.clone()),
            (COMPONENT_LABEL.to_owned(), "cache".to_owned()),
        ])
    }

    /// The selector as a label-selector string, for status and the /scale subresource.
    pub fn selector_string(&self) -> String {
        self.selector_labels()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Selects the EndpointSlices of the peer Service: the addresses the nodes find
    /// each other at.
    pub fn peer_endpoint_slices_selector(&self) -> String {
        format!("{SERVICE_NAME_LABEL}={}", self.peers())
    }

    /// `namespace/name`: how logs and metrics name this CacheCluster.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.cluster)
    }
}

/// Labels for every owned object: the user's extra labels, then ours (ours win).
pub fn labels(cc: &CacheCluster) -> BTreeMap<String, String> {
    let mut labels = cc.spec.labels.clone();
    labels.extend(Names::of(cc).selector_labels());
    labels.insert(MANAGED_BY_LABEL.to_owned(), FIELD_MANAGER.to_owned());
    labels
}

/// Metadata of an owned object: name, namespace, labels, the user's annotations, and an
/// owner reference so deleting the CacheCluster garbage-collects it.
pub fn metadata(cc: &CacheCluster, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(Names::of(cc).namespace),
        labels: Some(labels(cc)),
        annotations: (!cc.spec.annotations.is_empty()).then(|| cc.spec.annotations.clone()),
        owner_references: owner_reference(cc).map(|r| vec![r]),
        ..ObjectMeta::default()
    }
}

fn owner_reference(cc: &CacheCluster) -> Option<OwnerReference> {
    let mut reference = cc.controller_owner_ref(&())?;
    reference.block_owner_deletion = Some(true);
    Some(reference)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::crd::CacheClusterSpec;

    /// A CacheCluster as the API server returns it (defaults filled in, uid set).
    pub fn cache_cluster(yaml_spec: &str) -> CacheCluster {
        let spec: CacheClusterSpec = serde_yaml::from_str(yaml_spec).unwrap();
        let mut cc = CacheCluster::new("demo", spec);
        cc.metadata.namespace = Some("shop".to_owned());
        cc.metadata.uid = Some("0b1e4c52-5a3c-4f4e-9a57-6c3c1b2e7d10".to_owned());
        cc.metadata.generation = Some(3);
        cc
    }

    #[test]
    fn every_object_is_owned_by_its_cache_cluster() {
        let cc = cache_cluster("replicas: 3");
        let meta = metadata(&cc, "demo-x".to_owned());
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!(owner.kind, "CacheCluster");
        assert_eq!(owner.name, "demo");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("shop"));
    }

    #[test]
    fn extra_labels_cannot_override_the_selector() {
        let cc =
            cache_cluster("replicas: 3\nlabels: {team: cart, app.kubernetes.io/instance: hijack}");
        let labels = labels(&cc);
        assert_eq!(labels["team"], "cart");
        assert_eq!(labels["app.kubernetes.io/instance"], "demo");
        assert_eq!(
            Names::of(&cc).selector_string(),
            "app.kubernetes.io/component=cache,app.kubernetes.io/instance=demo,app.kubernetes.io/name=kache"
        );
    }

    /// `k=v,k=v` as pairs.
    fn pairs(selector: &str) -> Vec<(String, String)> {
        selector
            .split(',')
            .map(|pair| {
                let (key, value) = pair.split_once('=').unwrap();
                (key.to_owned(), value.to_owned())
            })
            .collect()
    }

    #[test]
    fn the_watch_selectors_match_the_labels_every_object_gets() {
        let cc = cache_cluster(
            "replicas: 3
labels: {team: cart}",
        );
        let labels = labels(&cc);
        let selects = |selector: &str| {
            pairs(selector)
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
        };
        assert!(selects(&owned_selector()), "{}", owned_selector());
        assert!(selects(&cache_pods_selector()), "{}", cache_pods_selector());
        assert!(selects(&Names::of(&cc).selector_string()));
        assert_eq!(cluster_of(&labels), Some("demo"));
        // Other clusters' pods match the pod watch too: it is not per cluster.
        let other = Names {
            cluster: "other".to_owned(),
            namespace: "shop".to_owned(),
        };
        let other_labels = other.selector_labels();
        assert!(
            pairs(&cache_pods_selector())
                .iter()
                .all(|(k, v)| other_labels.get(k) == Some(v))
        );
        assert_eq!(cluster_of(&other_labels), Some("other"));
    }

    #[test]
    fn the_peer_slices_are_selected_by_their_service() {
        let names = Names::of(&cache_cluster("replicas: 3"));
        assert_eq!(
            names.peer_endpoint_slices_selector(),
            "kubernetes.io/service-name=demo-peers"
        );
        assert_eq!(names.key(), "shop/demo");
    }
}
