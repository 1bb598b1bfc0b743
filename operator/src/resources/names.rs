//! Names, labels and ownership shared by every object of one CacheCluster.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::CacheCluster;

/// The operator's field manager for server-side apply: one owner for every field it sets.
pub const FIELD_MANAGER: &str = "kache-operator";
/// Pod-template annotation holding the node config hash: pods roll when it changes.
pub const CONFIG_HASH_ANNOTATION: &str = "kache.dev/config-hash";

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

    /// The ConfigMap of the member list.
    pub fn members(&self) -> String {
        format!("{}-members", self.cluster)
    }

    /// The nodes' ServiceAccount, Role and RoleBinding.
    pub fn node_identity(&self) -> String {
        format!("{}-node", self.cluster)
    }

    /// Labels that select this cluster's cache pods. Never change them: a StatefulSet's
    /// selector is immutable.
    pub fn selector_labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("app.kubernetes.io/name".to_owned(), "kache".to_owned()),
            (
                "app.kubernetes.io/instance".to_owned(),
                self.cluster.clone(),
            ),
            ("app.kubernetes.io/component".to_owned(), "cache".to_owned()),
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
}

/// Labels for every owned object: the user's extra labels, then ours (ours win).
pub fn labels(cc: &CacheCluster) -> BTreeMap<String, String> {
    let mut labels = cc.spec.labels.clone();
    labels.extend(Names::of(cc).selector_labels());
    labels.insert(
        "app.kubernetes.io/managed-by".to_owned(),
        FIELD_MANAGER.to_owned(),
    );
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
}
