//! The NetworkPolicy a CacheCluster asks for by choice (on by default): it keeps the
//! peer port to the cluster's own pods and the client ports to the clients the spec
//! names. The prometheus-operator objects are in `monitoring`.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::names::{Names, metadata};
use crate::crd::CacheCluster;

/// The label every namespace carries with its own name (Kubernetes sets it, 1.21+).
pub const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Where the operator's own pods run, so the NetworkPolicy lets them read the nodes'
/// `GET /v1/cluster`. The chart passes both (`POD_NAMESPACE` from the downward API,
/// `KACHE_OPERATOR_POD_LABELS` from its selector labels).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OperatorPods {
    pub namespace: String,
    /// Labels that select the operator's pods. Empty selects every pod in `namespace`.
    pub labels: BTreeMap<String, String>,
}

impl OperatorPods {
    /// Reads `labels` written as a label selector of equalities, `k=v,k=v`.
    pub fn new(namespace: &str, labels: &str) -> Result<Self, String> {
        let labels = labels
            .split(',')
            .map(str::trim)
            .filter(|pair| !pair.is_empty())
            .map(|pair| match pair.split_once('=') {
                Some((key, value)) if !key.trim().is_empty() => {
                    Ok((key.trim().to_owned(), value.trim().to_owned()))
                }
                _ => Err(format!("{pair:?} is not key=value")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            namespace: namespace.to_owned(),
            labels,
        })
    }

    fn peer(&self) -> NetworkPolicyPeer {
        NetworkPolicyPeer {
            namespace_selector: Some(match_labels(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_owned(),
                self.namespace.clone(),
            )]))),
            pod_selector: Some(match_labels(self.labels.clone())),
            ..NetworkPolicyPeer::default()
        }
    }
}

/// The cache pods' NetworkPolicy, or None when the spec turns it off (the controller
/// then deletes it). Ingress only: the nodes' own egress (the API server, an upstream)
/// is not restricted. Three rules, and a source passes if any rule admits it:
/// - `grpc` from this cluster's pods only: nobody else reaches the peer protocol;
/// - `http` and `resp` from `spec.networkPolicy.clients`, by default every pod in the
///   CacheCluster's namespace (`podSelector: {}`);
/// - `http` from the operator's pods, which read `GET /v1/cluster`.
pub fn network_policy(cc: &CacheCluster, operator: &OperatorPods) -> Option<NetworkPolicy> {
    let spec = &cc.spec.network_policy;
    if !spec.enabled {
        return None;
    }
    let names = Names::of(cc);
    let members = match_labels(names.selector_labels());
    let port = |name: &str| NetworkPolicyPort {
        port: Some(IntOrString::String(name.to_owned())),
        protocol: Some("TCP".to_owned()),
        ..NetworkPolicyPort::default()
    };
    let clients = spec.clients.clone().unwrap_or_else(|| {
        vec![NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }]
    });
    let mut rules = vec![NetworkPolicyIngressRule {
        ports: Some(vec![port("grpc")]),
        from: Some(vec![NetworkPolicyPeer {
            pod_selector: Some(members.clone()),
            ..NetworkPolicyPeer::default()
        }]),
    }];
    // A rule without peers admits every source: an empty list must mean no rule.
    if !clients.is_empty() {
        rules.push(NetworkPolicyIngressRule {
            ports: Some(vec![port("http"), port("resp")]),
            from: Some(clients),
        });
    }
    rules.push(NetworkPolicyIngressRule {
        ports: Some(vec![port("http")]),
        from: Some(vec![operator.peer()]),
    });
    Some(NetworkPolicy {
        metadata: metadata(cc, names.cluster),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(members),
            policy_types: Some(vec!["Ingress".to_owned()]),
            ingress: Some(rules),
            ..NetworkPolicySpec::default()
        }),
    })
}

fn match_labels(labels: BTreeMap<String, String>) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty()).then_some(labels),
        ..LabelSelector::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::names::tests::cache_cluster;

    fn operator() -> OperatorPods {
        OperatorPods::new(
            "kache-system",
            "app.kubernetes.io/name=kache, app.kubernetes.io/instance=kache,app.kubernetes.io/component=operator",
        )
        .unwrap()
    }

    fn labels(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The rules as (ports, peers) for compact comparisons.
    fn rules_of(policy: &NetworkPolicy) -> Vec<(Vec<String>, Vec<NetworkPolicyPeer>)> {
        let spec = policy.spec.as_ref().unwrap();
        spec.ingress
            .iter()
            .flatten()
            .map(|rule| {
                let ports = rule
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| match &p.port {
                        Some(IntOrString::String(name)) => name.clone(),
                        other => format!("{other:?}"),
                    })
                    .collect();
                (
                    ports,
                    rule.from.clone().expect("every rule names its sources"),
                )
            })
            .collect()
    }

    #[test]
    fn by_default_members_reach_the_peer_port_the_namespace_the_client_ports_and_the_operator_http()
    {
        let cc = cache_cluster("replicas: 3");
        let policy = network_policy(&cc, &operator()).expect("on by default");
        let spec = policy.spec.as_ref().unwrap();
        let members = labels(&[
            ("app.kubernetes.io/component", "cache"),
            ("app.kubernetes.io/instance", "demo"),
            ("app.kubernetes.io/name", "kache"),
        ]);
        assert_eq!(spec.pod_selector.as_ref().unwrap().match_labels, members);
        assert_eq!(
            spec.policy_types.as_deref(),
            Some(&["Ingress".to_owned()][..])
        );
        let rules = rules_of(&policy);
        assert_eq!(rules.len(), 3);

        let (ports, from) = &rules[0];
        assert_eq!(ports, &["grpc"]);
        assert_eq!(from.len(), 1);
        assert_eq!(from[0].pod_selector.as_ref().unwrap().match_labels, members);
        assert!(
            from[0].namespace_selector.is_none() && from[0].ip_block.is_none(),
            "the cluster's own namespace, its own pods"
        );

        let (ports, from) = &rules[1];
        assert_eq!(ports, &["http", "resp"]);
        assert_eq!(
            from,
            &[NetworkPolicyPeer {
                pod_selector: Some(LabelSelector::default()),
                ..NetworkPolicyPeer::default()
            }],
            "every pod of the CacheCluster's namespace, nothing outside it"
        );

        let (ports, from) = &rules[2];
        assert_eq!(
            ports,
            &["http"],
            "the operator reads /v1/cluster, nothing else"
        );
        assert_eq!(from.len(), 1);
        assert_eq!(
            from[0].namespace_selector.as_ref().unwrap().match_labels,
            labels(&[(NAMESPACE_NAME_LABEL, "kache-system")])
        );
        assert_eq!(
            from[0].pod_selector.as_ref().unwrap().match_labels,
            labels(&[
                ("app.kubernetes.io/component", "operator"),
                ("app.kubernetes.io/instance", "kache"),
                ("app.kubernetes.io/name", "kache"),
            ])
        );
    }

    #[test]
    fn the_spec_names_the_clients_and_can_turn_the_policy_off() {
        let cc = cache_cluster(
            "replicas: 3
networkPolicy: {clients: [{namespaceSelector: {matchLabels: {team: shop}}}, {ipBlock: {cidr: 10.0.0.0/8}}]}",
        );
        let policy = network_policy(&cc, &operator()).unwrap();
        let rules = rules_of(&policy);
        let (ports, from) = &rules[1];
        assert_eq!(ports, &["http", "resp"]);
        assert_eq!(from.len(), 2, "exactly the named clients");
        assert!(from[0].namespace_selector.is_some() && from[0].pod_selector.is_none());
        assert_eq!(from[1].ip_block.as_ref().unwrap().cidr, "10.0.0.0/8");
        assert_eq!(rules[0].0, ["grpc"], "the peer port stays the members'");

        // No clients: no client rule at all. A rule with no peers would admit everyone.
        let cc = cache_cluster("replicas: 3\nnetworkPolicy: {clients: []}");
        let policy = network_policy(&cc, &operator()).unwrap();
        let ports: Vec<_> = rules_of(&policy)
            .into_iter()
            .map(|(ports, _)| ports)
            .collect();
        assert_eq!(ports, [vec!["grpc"], vec!["http"]]);

        let cc = cache_cluster("replicas: 3\nnetworkPolicy: {enabled: false}");
        assert!(network_policy(&cc, &operator()).is_none());
    }

    #[test]
    fn operator_labels_parse_as_a_selector_of_equalities() {
        let pods = OperatorPods::new("ops", "").unwrap();
        assert!(pods.labels.is_empty());
        let peer = pods.peer();
        assert_eq!(
            peer.pod_selector,
            Some(LabelSelector::default()),
            "no labels: every pod of the operator's namespace"
        );
        assert!(OperatorPods::new("ops", "a=b,oops").is_err());
        assert!(OperatorPods::new("ops", "=b").is_err());
    }
}
