//! The cache nodes' identity: a ServiceAccount with a Role that can read the cluster's own
//! member-list ConfigMap and the EndpointSlices of its namespace, and nothing else.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};

use super::names::{Names, metadata};
use crate::crd::CacheCluster;

pub fn service_account(cc: &CacheCluster) -> ServiceAccount {
    ServiceAccount {
        metadata: metadata(cc, Names::of(cc).node_identity()),
        ..ServiceAccount::default()
    }
}

pub fn role(cc: &CacheCluster) -> Role {
    let names = Names::of(cc);
    Role {
        metadata: metadata(cc, names.node_identity()),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["configmaps".to_owned()]),
                // Watching one named object works through a metadata.name field selector.
                resource_names: Some(vec![names.members()]),
                verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
                ..PolicyRule::default()
            },
            PolicyRule {
                api_groups: Some(vec!["discovery.k8s.io".to_owned()]),
                resources: Some(vec!["endpointslices".to_owned()]),
                verbs: vec!["list".to_owned(), "watch".to_owned()],
                ..PolicyRule::default()
            },
        ]),
    }
}

pub fn role_binding(cc: &CacheCluster) -> RoleBinding {
    let names = Names::of(cc);
    RoleBinding {
        metadata: metadata(cc, names.node_identity()),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "Role".to_owned(),
            name: names.node_identity(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".to_owned(),
            name: names.node_identity(),
            namespace: Some(names.namespace),
            ..Subject::default()
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::names::tests::cache_cluster;

    #[test]
    fn nodes_may_only_read_their_member_list_and_endpoint_slices() {
        let cc = cache_cluster("replicas: 3");
        let rules = role(&cc).rules.unwrap();
        assert_eq!(rules.len(), 2);
        assert_eq!(
            rules[0].resource_names.as_deref(),
            Some(&["demo-members".to_owned()][..])
        );
        for rule in &rules {
            assert!(
                rule.verbs
                    .iter()
                    .all(|v| ["get", "list", "watch"].contains(&v.as_str()))
            );
        }
        let binding = role_binding(&cc);
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(subject.name, "demo-node");
        assert_eq!(subject.namespace.as_deref(), Some("shop"));
        assert_eq!(binding.role_ref.name, "demo-node");
    }
}
