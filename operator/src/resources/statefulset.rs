//! The cache pods: a StatefulSet with stable names `<name>-0..N-1`, which are the member
//! ids. Its size is decided by the membership state machine (`scale.rs`), never by the
//! spec alone, so it can stay larger while leaving members hand their data off.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, Container, ContainerPort, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, ObjectFieldSelector, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, SeccompProfile, SecurityContext,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kache_api::env;

use super::config::NODE_SHUTDOWN_GRACE_SECONDS;
use super::names::{CONFIG_HASH_ANNOTATION, Names, labels, metadata};
use crate::crd::{CacheCluster, PullPolicy};

/// The unprivileged user the cache runs as.
const NODE_UID: i64 = 65532;

pub fn statefulset(
    cc: &CacheCluster,
    replicas: u32,
    default_image: &str,
    settings_hash: &str,
) -> StatefulSet {
    let names = Names::of(cc);
    StatefulSet {
        metadata: metadata(cc, names.cluster.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(i32::try_from(replicas).unwrap_or(i32::MAX)),
            service_name: Some(names.peers()),
            // Pods start together: the operator adds them to the member list itself, and
            // a new pod is not ready before it is a member.
            pod_management_policy: Some("Parallel".to_owned()),
            // Rolling updates go one pod at a time and wait for readiness, which a node
            // reports only after it re-synced everything it owns.
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateStatefulSetStrategy {
                    max_unavailable: None,
                    partition: Some(0),
                }),
            }),
            selector: LabelSelector {
                match_labels: Some(names.selector_labels()),
                ..LabelSelector::default()
            },
            template: pod_template(cc, &names, default_image, settings_hash),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

fn pod_template(
    cc: &CacheCluster,
    names: &Names,
    default_image: &str,
    settings_hash: &str,
) -> PodTemplateSpec {
    let mut annotations = cc.spec.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), settings_hash.to_owned());
    let placement = &cc.spec.placement;
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(cc)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(names.node_identity()),
            termination_grace_period_seconds: Some(NODE_SHUTDOWN_GRACE_SECONDS + 10),
            containers: vec![container(cc, names, default_image)],
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(NODE_UID),
                run_as_group: Some(NODE_UID),
                seccomp_profile: Some(SeccompProfile {
                    type_: "RuntimeDefault".to_owned(),
                    ..SeccompProfile::default()
                }),
                ..PodSecurityContext::default()
            }),
            affinity: placement.affinity.clone(),
            tolerations: (!placement.tolerations.is_empty()).then(|| placement.tolerations.clone()),
            node_selector: (!placement.node_selector.is_empty())
                .then(|| placement.node_selector.clone()),
            topology_spread_constraints: (!placement.topology_spread_constraints.is_empty())
                .then(|| placement.topology_spread_constraints.clone()),
            priority_class_name: placement.priority_class_name.clone(),
            ..PodSpec::default()
        }),
    }
}

fn container(cc: &CacheCluster, names: &Names, default_image: &str) -> Container {
    let spec = &cc.spec;
    Container {
        name: "kache".to_owned(),
        image: Some(
            spec.image
                .clone()
                .unwrap_or_else(|| default_image.to_owned()),
        ),
        image_pull_policy: spec.image_pull_policy.map(|p| {
            match p {
                PullPolicy::Always => "Always",
                PullPolicy::IfNotPresent => "IfNotPresent",
                PullPolicy::Never => "Never",
            }
            .to_owned()
        }),
        env_from: Some(vec![EnvFromSource {
            config_map_ref: Some(ConfigMapEnvSource {
                name: names.config(),
                optional: Some(false),
            }),
            ..EnvFromSource::default()
        }]),
        env: Some(vec![
            field_env(env::NODE_ID, "metadata.name"),
            field_env(env::NAMESPACE, "metadata.namespace"),
        ]),
        ports: Some(vec![
            container_port("http", spec.service.http_port),
            container_port("grpc", spec.service.grpc_port),
        ]),
        // Ready only once the node holds every partition it owns.
        readiness_probe: Some(http_probe("/readyz", 2, 1)),
        // Alive while the process serves at all; a long sync must not get it killed.
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            }),
            ..SecurityContext::default()
        }),
        ..Container::default()
    }
}

fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.to_owned(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

fn container_port(name: &str, port: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.to_owned()),
        container_port: port,
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    }
}

fn http_probe(path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("http".to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period_seconds),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

/// The pod-template annotations, for tests and for spotting a pending roll.
pub fn template_annotations(sts: &StatefulSet) -> BTreeMap<String, String> {
    sts.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.annotations.clone())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::names::tests::cache_cluster;

    #[test]
    fn the_statefulset_runs_unprivileged_nodes_that_find_their_peers() {
        let cc = cache_cluster(
            "replicas: 3\nplacement: {nodeSelector: {disk: ssd}}\nannotations: {owner: cart}",
        );
        let sts = statefulset(&cc, 5, "kache/node:0.1.0", "abc");
        let spec = sts.spec.as_ref().unwrap();
        assert_eq!(
            spec.replicas,
            Some(5),
            "the size comes from the state machine"
        );
        assert_eq!(spec.service_name.as_deref(), Some("demo-peers"));
        assert_eq!(spec.pod_management_policy.as_deref(), Some("Parallel"));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.service_account_name.as_deref(), Some("demo-node"));
        assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
        let container = &pod.containers[0];
        assert_eq!(container.image.as_deref(), Some("kache/node:0.1.0"));
        let variables: Vec<_> = container
            .env
            .as_ref()
            .unwrap()
            .iter()
            .map(|e| e.name.as_str())
            .collect();
        assert_eq!(variables, [env::NODE_ID, env::NAMESPACE]);
        assert_eq!(
            container.env_from.as_ref().unwrap()[0]
                .config_map_ref
                .as_ref()
                .unwrap()
                .name,
            "demo-config"
        );
        let probe = container.readiness_probe.as_ref().unwrap();
        assert_eq!(
            probe.http_get.as_ref().unwrap().path.as_deref(),
            Some("/readyz")
        );
        let security = container.security_context.as_ref().unwrap();
        assert_eq!(security.read_only_root_filesystem, Some(true));
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let annotations = template_annotations(&sts);
        assert_eq!(annotations[CONFIG_HASH_ANNOTATION], "abc");
        assert_eq!(annotations["owner"], "cart");
    }

    #[test]
    fn the_spec_image_wins_over_the_default() {
        let cc =
            cache_cluster("replicas: 1\nimage: registry.local/kache:dev\nimagePullPolicy: Never");
        let sts = statefulset(&cc, 1, "kache/node:0.1.0", "h");
        let container = &sts.spec.unwrap().template.spec.unwrap().containers[0];
        assert_eq!(container.image.as_deref(), Some("registry.local/kache:dev"));
        assert_eq!(container.image_pull_policy.as_deref(), Some("Never"));
    }
}
