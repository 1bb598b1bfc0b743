//! The locks the operator and the chart put on a default install, checked as objects on
//! the real API server: the operator's ServiceAccount holds exactly the rules
//! charts/kache/README.md documents, in the watched namespace only (none elsewhere and
//! none cluster-wide, as `kubectl auth can-i` confirms), and a CacheCluster gets a NetworkPolicy and
//! placement defaults with the expected selectors. (The process kubelet does not
//! enforce NetworkPolicies, so what is checked is the policy, not the traffic.)

use k8s_openapi::api::authorization::v1::{SelfSubjectRulesReview, SelfSubjectRulesReviewSpec};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyPeer};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::PostParams;

use super::*;

/// The chart's release namespace and the operator's ServiceAccount and Lease there
/// (release `kache`, installed with `watchNamespaces={e2e}` and `rbac.certManager=true`).
const OPERATOR_NAMESPACE: &str = "kache-system";
const OPERATOR_SA: &str = "system:serviceaccount:kache-system:kache-operator";
const LEASE: &str = "kache";
/// A namespace the operator does not watch.
const UNWATCHED: &str = "default";

const ALL: &[&str] = &[
    "get", "list", "watch", "create", "patch", "update", "delete",
];
const READ: &[&str] = &["get", "list", "watch"];

/// One rule: API group, resources, resource names (empty: any), verbs.
type Rule = (
    &'static str,
    &'static [&'static str],
    &'static [&'static str],
    &'static [&'static str],
);

/// The README's RBAC table: the operator's Role in each watched namespace (here NS only;
/// with `watchAllNamespaces` the same rules are a ClusterRole).
const WATCHED_RULES: &[Rule] = &[
    ("kache.dev", &["cacheclusters"], &[], READ),
    (
        "kache.dev",
        &["cacheclusters/status"],
        &[],
        &["get", "patch", "update"],
    ),
    ("kache.dev", &["cacheclusters/finalizers"], &[], &["update"]),
    ("", &["services", "configmaps", "serviceaccounts"], &[], ALL),
    ("", &["secrets"], &[], &["get", "create", "patch"]),
    ("", &["pods"], &[], READ),
    ("discovery.k8s.io", &["endpointslices"], &[], READ),
    ("", &["events"], &[], &["create", "patch"]),
    ("events.k8s.io", &["events"], &[], &["create", "patch"]),
    ("apps", &["statefulsets"], &[], ALL),
    ("policy", &["poddisruptionbudgets"], &[], ALL),
    (
        "rbac.authorization.k8s.io",
        &["roles", "rolebindings"],
        &[],
        ALL,
    ),
    ("networking.k8s.io", &["networkpolicies"], &[], ALL),
    (
        "monitoring.coreos.com",
        &["servicemonitors", "podmonitors", "prometheusrules"],
        &[],
        ALL,
    ),
    // rbac.certManager=true, as the e2e installs the chart.
    (
        "cert-manager.io",
        &["certificates"],
        &[],
        &["get", "create", "patch"],
    ),
];

/// The README's leader-election table: a Role in the release namespace only.
const LEASE_RULES: &[Rule] = &[
    (
        "coordination.k8s.io",
        &["leases"],
        &[],
        &["create", "list", "watch"],
    ),
    (
        "coordination.k8s.io",
        &["leases"],
        &[LEASE],
        &["get", "update", "patch"],
    ),
];

/// (group, resource, name or "", verb): one permission.
type Grant = (String, String, String, String);

fn grants(rules: &[Rule]) -> BTreeSet<Grant> {
    let mut grants = BTreeSet::new();
    for (group, resources, names, verbs) in rules {
        for resource in *resources {
            for verb in *verbs {
                let names: &[&str] = if names.is_empty() { &[""] } else { names };
                for name in names {
                    grants.insert((
                        (*group).to_owned(),
                        (*resource).to_owned(),
                        (*name).to_owned(),
                        (*verb).to_owned(),
                    ));
                }
            }
        }
    }
    grants
}

/// What the operator's ServiceAccount may do in `namespace`, from a
/// SelfSubjectRulesReview made as that account (what `kubectl auth can-i --list` shows).
/// Leaves out the self-reviews every authenticated user may create.
async fn granted(as_operator: &Client, namespace: &str) -> BTreeSet<Grant> {
    let review = SelfSubjectRulesReview {
        spec: SelfSubjectRulesReviewSpec {
            namespace: Some(namespace.to_owned()),
        },
        ..SelfSubjectRulesReview::default()
    };
    let answer = Api::<SelfSubjectRulesReview>::all(as_operator.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap();
    let mut grants = BTreeSet::new();
    for rule in answer.status.unwrap().resource_rules {
        let names = rule.resource_names.unwrap_or_default();
        let names = if names.is_empty() {
            vec![String::new()]
        } else {
            names
        };
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                if resource.starts_with("selfsubject") {
                    continue;
                }
                for name in &names {
                    for verb in &rule.verbs {
                        grants.insert((
                            group.clone(),
                            resource.clone(),
                            name.clone(),
                            verb.clone(),
                        ));
                    }
                }
            }
        }
    }
    grants
}

/// The operator's ServiceAccount holds exactly the verbs charts/kache/README.md
/// documents, nothing more and nothing less, in the namespace it watches, only the Lease
/// in its own and nothing anywhere else; and the `kubectl auth can-i` answers an
/// administrator would ask agree.
pub async fn operator_rbac_is_as_documented() {
    log("RBAC: the operator's ServiceAccount holds exactly the documented rules");
    let mut config = kube::Config::infer().await.unwrap();
    config.auth_info.impersonate = Some(OPERATOR_SA.to_owned());
    let as_operator = Client::try_from(config).unwrap();

    assert_eq!(
        granted(&as_operator, NS).await,
        grants(WATCHED_RULES),
        "in {NS}: the README's table and the granted rules differ"
    );
    assert_eq!(
        granted(&as_operator, OPERATOR_NAMESPACE).await,
        grants(LEASE_RULES),
        "in {OPERATOR_NAMESPACE} (not watched): the README's leader-election table and the \
         granted rules differ"
    );
    assert_eq!(
        granted(&as_operator, UNWATCHED).await,
        BTreeSet::new(),
        "in {UNWATCHED} (not watched) the operator may do nothing"
    );

    let can_i = |args: &[&str]| {
        let mut all = vec!["auth", "can-i"];
        all.extend_from_slice(args);
        let as_flag = format!("--as={OPERATOR_SA}");
        all.push(&as_flag);
        let (yes, text) = run("kubectl", &all, None);
        (yes, text)
    };
    let our_lease = format!("leases.coordination.k8s.io/{LEASE}");
    let mut allowed = vec![
        vec!["list", "cacheclusters.kache.dev", "-n", NS],
        vec![
            "patch",
            "cacheclusters.kache.dev",
            "--subresource=status",
            "-n",
            NS,
        ],
        vec!["create", "networkpolicies.networking.k8s.io", "-n", NS],
        vec!["get", "secrets", "-n", NS],
        vec!["patch", "secrets", "-n", NS],
        vec!["create", "certificates.cert-manager.io", "-n", NS],
        vec!["update", &our_lease, "-n", OPERATOR_NAMESPACE],
        vec!["create", "servicemonitors.monitoring.coreos.com", "-n", NS],
        vec!["delete", "podmonitors.monitoring.coreos.com", "-n", NS],
        vec!["patch", "prometheusrules.monitoring.coreos.com", "-n", NS],
    ];
    // The writes that amount to reading Secrets: in the watched namespace only.
    let writes = [
        "statefulsets.apps",
        "roles.rbac.authorization.k8s.io",
        "rolebindings.rbac.authorization.k8s.io",
        "secrets",
    ];
    let mut refused: Vec<Vec<&str>> = Vec::new();
    for resource in writes {
        allowed.push(vec!["create", resource, "-n", NS]);
        refused.push(vec!["create", resource, "-n", UNWATCHED]);
        refused.push(vec!["create", resource, "-n", OPERATOR_NAMESPACE]);
        refused.push(vec!["create", resource, "--all-namespaces"]);
    }
    refused.extend([
        vec!["list", "cacheclusters.kache.dev", "--all-namespaces"],
        vec!["list", "cacheclusters.kache.dev", "-n", UNWATCHED],
        vec!["get", "secrets", "-n", UNWATCHED],
        vec!["list", "secrets", "-n", NS],
        vec!["watch", "secrets", "-n", NS],
        vec!["update", "secrets", "-n", NS],
        vec!["delete", "secrets", "-n", NS],
        vec!["list", "secrets", "--all-namespaces"],
        vec!["list", "certificates.cert-manager.io", "-n", NS],
        vec!["delete", "certificates.cert-manager.io", "-n", NS],
        vec!["create", "certificates.cert-manager.io", "-n", UNWATCHED],
        vec![
            "create",
            "prometheusrules.monitoring.coreos.com",
            "-n",
            UNWATCHED,
        ],
        vec!["list", "nodes"],
        vec!["delete", "pods", "-n", NS],
        vec!["create", "pods", "--subresource=exec", "-n", NS],
        vec!["get", "pods", "--subresource=log", "-n", NS],
        vec!["create", "persistentvolumeclaims", "-n", NS],
        vec!["create", "cacheclusters.kache.dev", "-n", NS],
        vec!["delete", "cacheclusters.kache.dev", "-n", NS],
        vec![
            "update",
            "leases.coordination.k8s.io/another",
            "-n",
            OPERATOR_NAMESPACE,
        ],
        vec!["get", "leases.coordination.k8s.io", "-n", NS],
        vec!["bind", "roles.rbac.authorization.k8s.io", "-n", NS],
        vec!["escalate", "roles.rbac.authorization.k8s.io", "-n", NS],
        vec!["create", "clusterroles.rbac.authorization.k8s.io"],
        vec!["create", "clusterrolebindings.rbac.authorization.k8s.io"],
        vec!["impersonate", "serviceaccounts", "-n", NS],
        vec!["create", "deployments.apps", "-n", NS],
    ]);
    for args in &allowed {
        let (yes, text) = can_i(args);
        assert!(yes, "kubectl auth can-i {args:?}: {text}");
    }
    for args in &refused {
        let (yes, text) = can_i(args);
        assert!(!yes, "kubectl auth can-i {args:?} said yes: {text}");
    }
    log(&format!(
        "RBAC: as documented (rules review in three namespaces, {} kubectl auth can-i answers)",
        allowed.len() + refused.len()
    ));
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn member_labels(name: &str) -> BTreeMap<String, String> {
    labels(&[
        ("app.kubernetes.io/component", "cache"),
        ("app.kubernetes.io/instance", name),
        ("app.kubernetes.io/name", "kache"),
    ])
}

fn port_names(rule: &k8s_openapi::api::networking::v1::NetworkPolicyIngressRule) -> Vec<String> {
    rule.ports
        .iter()
        .flatten()
        .map(|p| {
            assert_eq!(p.protocol.as_deref(), Some("TCP"));
            match &p.port {
                Some(IntOrString::String(name)) => name.clone(),
                other => panic!("a port by number: {other:?}"),
            }
        })
        .collect()
}

/// A CacheCluster created without networkPolicy or placement settings got the
/// NetworkPolicy and the soft placement defaults, with the expected selectors, ports and
/// peers; and its pods were scheduled anyway on the one-node cluster (it is Available).
pub async fn defaults_are_locked_down(client: &Client, name: &str) {
    let members = member_labels(name);
    let policy = Api::<NetworkPolicy>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    let spec = policy.spec.unwrap();
    assert_eq!(
        spec.pod_selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&members),
        "the policy selects the cluster's pods"
    );
    assert_eq!(spec.policy_types, Some(vec!["Ingress".to_owned()]));
    let rules = spec.ingress.unwrap();
    assert_eq!(rules.len(), 3, "{rules:?}");

    assert_eq!(port_names(&rules[0]), ["grpc"]);
    let from = rules[0].from.clone().unwrap();
    assert_eq!(from.len(), 1, "{from:?}");
    assert_eq!(
        from[0].pod_selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&members),
        "only the members reach the peer port"
    );
    assert!(from[0].namespace_selector.is_none() && from[0].ip_block.is_none());

    assert_eq!(port_names(&rules[1]), ["http", "resp"]);
    assert_eq!(
        rules[1].from.clone().unwrap(),
        [NetworkPolicyPeer {
            pod_selector: Some(LabelSelector::default()),
            ..NetworkPolicyPeer::default()
        }],
        "the client ports are open to the CacheCluster's namespace, nothing outside it"
    );

    assert_eq!(port_names(&rules[2]), ["http"]);
    let from = rules[2].from.clone().unwrap();
    assert_eq!(from.len(), 1, "{from:?}");
    assert_eq!(
        from[0]
            .namespace_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref(),
        Some(&labels(&[(
            "kubernetes.io/metadata.name",
            OPERATOR_NAMESPACE
        )])),
        "the operator's namespace"
    );
    assert_eq!(
        from[0].pod_selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&labels(&[
            ("app.kubernetes.io/component", "operator"),
            ("app.kubernetes.io/instance", "kache"),
            ("app.kubernetes.io/name", "kache"),
        ])),
        "the operator's pods, as the chart labels them"
    );

    let sts = Api::<StatefulSet>::namespaced(client.clone(), NS)
        .get(name)
        .await
        .unwrap();
    let pod = sts.spec.unwrap().template.spec.unwrap();
    let anti = pod.affinity.unwrap().pod_anti_affinity.unwrap();
    assert!(
        anti.required_during_scheduling_ignored_during_execution
            .is_none()
    );
    let preferred = anti
        .preferred_during_scheduling_ignored_during_execution
        .unwrap();
    assert_eq!(preferred.len(), 1, "{preferred:?}");
    let term = &preferred[0].pod_affinity_term;
    assert_eq!(term.topology_key, "kubernetes.io/hostname");
    assert_eq!(
        term.label_selector.as_ref().unwrap().match_labels.as_ref(),
        Some(&members)
    );
    let spread = pod.topology_spread_constraints.unwrap();
    assert_eq!(spread.len(), 1, "{spread:?}");
    assert_eq!(spread[0].topology_key, "topology.kubernetes.io/zone");
    assert_eq!(spread[0].max_skew, 1);
    assert_eq!(spread[0].when_unsatisfiable, "ScheduleAnyway");
    assert_eq!(
        spread[0]
            .label_selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref(),
        Some(&members)
    );
    log(&format!(
        "{name}: NetworkPolicy (grpc: members; http, resp: namespace; http: operator) and soft \
         anti-affinity and zone spread, as built"
    ));
}
