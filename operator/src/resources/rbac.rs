//! The cache nodes' identity: a ServiceAccount with a Role that can read the cluster's own
//! member-list ConfigMap and the EndpointSlices of its namespace, and nothing else.
//! When `spec.pod.serviceAccountName` names the user's own account, the Role is bound to
//! it as well: the nodes need those reads whatever account they run as.

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
        subjects: Some(node_accounts(cc, &names)),
    }
}

/// The operator's account, and the user's if the pods run as another one.
fn node_accounts(cc: &CacheCluster, names: &Names) -> Vec<Subject> {
    let own = names.node_identity();
    let mut accounts = vec![own.clone()];
    if let Some(user) = &cc.spec.pod.service_account_name
        && *user != own
    {
        accounts.push(user.clone());
    }
    accounts
        .into_iter()
        .map(|name| Subject {
            kind: "ServiceAccount".to_owned(),
            name,
            namespace: Some(names.namespace.clone()),
            ..Subject::default()
        })
        .collect()
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

    #[test]
    fn a_users_service_account_gets_the_same_least_privilege_role() {
        let cc = cache_cluster("replicas: 3\npod: {serviceAccountName: cache-irsa}");
        let subjects: Vec<_> = role_binding(&cc)
            .subjects
            .unwrap()
            .into_iter()
            .map(|s| s.name)
            .collect();
        assert_eq!(subjects, ["demo-node", "cache-irsa"]);
        let cc = cache_cluster("replicas: 3\npod: {serviceAccountName: demo-node}");
        assert_eq!(role_binding(&cc).subjects.unwrap().len(), 1);
    }
}
