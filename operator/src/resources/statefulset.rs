//! The cache pods: a StatefulSet with stable names `<name>-0..N-1`, which are the member
//! ids. Its size is decided by the membership state machine (`scale.rs`), never by the
//! spec alone, so it can stay larger while leaving members hand their data off.
//!
//! What users customise (`spec.pod`, `spec.cacheContainer`) is laid onto the operator's
//! pod here: their lists come first and the operator's own entries last (env, envFrom),
//! so where Kubernetes lets a later entry win, the operator's does; security contexts
//! merge field by field, so an unset field keeps the secure default.
//!
//! Pods prefer different Kubernetes nodes and spread over zones unless `spec.placement`
//! says otherwise (`placement`).
//!
//! TLS and auth (`security.rs`) add Secret volumes under /etc/kache, the node's
//! `KACHE_*_DIR` variables, and HTTPS probes when the client ports serve TLS.
//!
//! With `spec.upstreams`, the `<name>-upstreams` ConfigMap is mounted read-only where
//! `KACHE_UPSTREAMS_FILE` (config.rs) points; without, neither is there.
//!
//! With `spec.persistence` enabled, each member gets a claim from a volume claim template,
//! mounted where its data directory is, and a startup probe that lets it load its data
//! before the liveness probe counts. Without it, the StatefulSet is what it always was.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    RollingUpdateStatefulSetStrategy, StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy,
    StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapEnvSource, ConfigMapVolumeSource, Container, ContainerPort,
    EnvFromSource, EnvVar, EnvVarSource, HTTPGetAction, ObjectFieldSelector, PersistentVolumeClaim,
    PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kache_api::env;

use super::config::UPSTREAMS_DIR;
use super::names::{CONFIG_HASH_ANNOTATION, Names, labels, metadata};
use super::security::Security;
use crate::crd::persistence::{MOUNT_PATH, VOLUME_NAME};
use crate::crd::{CacheCluster, Persistence, PullPolicy};

/// The unprivileged user the cache runs as.
const NODE_UID: i64 = 65532;

/// `security`: what `security::resolve` decided for this cluster.
pub fn statefulset(
    cc: &CacheCluster,
    replicas: u32,
    default_image: &str,
    settings_hash: &str,
    security: &Security,
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
            template: pod_template(cc, &names, default_image, settings_hash, security),
            volume_claim_templates: persistence(cc).map(|p| vec![claim_template(&names, p)]),
            persistent_volume_claim_retention_policy: persistence(cc).map(retention_policy),
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
    security: &Security,
) -> PodTemplateSpec {
    let mut annotations = cc.spec.annotations.clone();
    annotations.insert(CONFIG_HASH_ANNOTATION.to_owned(), settings_hash.to_owned());
    let scheduling = &cc.spec.placement;
    let pod = &cc.spec.pod;
    let (_, termination_grace) = pod.grace_seconds();
    let mut containers = vec![container(cc, names, default_image, security)];
    // The user's volumes, then the operator's (CEL keeps the user's off kache-* names).
    let mut volumes = pod.volumes.clone();
    volumes.extend(security.volumes());
    volumes.extend(upstreams_volume(cc, names));
    containers.extend(pod.sidecars.iter().cloned());
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(labels(cc)),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            service_account_name: Some(
                pod.service_account_name
                    .clone()
                    .unwrap_or_else(|| names.node_identity()),
            ),
            termination_grace_period_seconds: Some(termination_grace),
            image_pull_secrets: non_empty(&pod.image_pull_secrets),
            containers,
            volumes: non_empty(&volumes),
            security_context: Some(pod_security_context(
                pod.security_context.as_ref(),
                persistence(cc).is_some(),
            )),
            affinity: Some(placement::affinity(scheduling, names)),
            tolerations: non_empty(&scheduling.tolerations),
            node_selector: (!scheduling.node_selector.is_empty())
                .then(|| scheduling.node_selector.clone()),
            topology_spread_constraints: Some(placement::topology_spread_constraints(
                scheduling, names,
            )),
            priority_class_name: scheduling.priority_class_name.clone(),
            ..PodSpec::default()
        }),
    }
}

/// `spec.persistence` when it is enabled.
fn persistence(cc: &CacheCluster) -> Option<&Persistence> {
    Some(&cc.spec.persistence).filter(|p| p.enabled)
}

/// Each member's claim, `data-<pod>`. Kubernetes refuses any change to a StatefulSet's
/// claim templates, so everything here comes from fields CEL keeps fixed (enabled,
/// storageClassName, size) and the selector labels, never from the user's labels or
/// annotations, which may change.
fn claim_template(names: &Names, persistence: &Persistence) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(VOLUME_NAME.to_owned()),
            labels: Some(names.selector_labels()),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: persistence.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_owned(),
                    Quantity(persistence.size.clone()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

/// A member removed by a scale-down loses its claim (`whenScaled: Delete`). The operator
/// shrinks the StatefulSet only after that member handed every partition off, so the
/// claim holds nothing the cluster needs; and a later scale-up must bring the ordinal
/// back empty, never with data from an older membership, where a key since deleted or
/// overwritten would still be live. On delete the user chooses (default Retain).
fn retention_policy(persistence: &Persistence) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_scaled: Some("Delete".to_owned()),
        when_deleted: Some(persistence.when_deleted.as_str().to_owned()),
    }
}

/// None for an empty list, so an unset field stays unset in the applied object.
fn non_empty<T: Clone>(items: &[T]) -> Option<Vec<T>> {
    (!items.is_empty()).then(|| items.to_vec())
}

/// The user's pod security context, with the operator's defaults in the fields it
/// leaves unset: the node needs no privilege and no particular user. A persistent node
/// writes its volume as its group: `fsGroup` makes the volume the group's, and changes
/// ownership only when the volume's root is not already the group's, so a start does not
/// walk a large data directory.
fn pod_security_context(user: Option<&PodSecurityContext>, persistent: bool) -> PodSecurityContext {
    let user = user.cloned().unwrap_or_default();
    let (fs_group, fs_group_change_policy) = if persistent {
        (
            user.fs_group.or(Some(NODE_UID)),
            user.fs_group_change_policy
                .or_else(|| Some("OnRootMismatch".to_owned())),
        )
    } else {
        (user.fs_group, user.fs_group_change_policy)
    };
    PodSecurityContext {
        fs_group,
        fs_group_change_policy,
        run_as_non_root: user.run_as_non_root.or(Some(true)),
        run_as_user: user.run_as_user.or(Some(NODE_UID)),
        run_as_group: user.run_as_group.or(Some(NODE_UID)),
        seccomp_profile: user.seccomp_profile.or_else(|| {
            Some(SeccompProfile {
                type_: "RuntimeDefault".to_owned(),
                ..SeccompProfile::default()
            })
        }),
        ..user
    }
}

/// The user's container security context over the operator's defaults, field by field.
/// `capabilities` is one field: a user who sets it says which to drop and add.
fn container_security_context(user: Option<&SecurityContext>) -> SecurityContext {
    let user = user.cloned().unwrap_or_default();
    SecurityContext {
        allow_privilege_escalation: user.allow_privilege_escalation.or(Some(false)),
        read_only_root_filesystem: user.read_only_root_filesystem.or(Some(true)),
        capabilities: user.capabilities.or_else(|| {
            Some(Capabilities {
                drop: Some(vec!["ALL".to_owned()]),
                ..Capabilities::default()
            })
        }),
        ..user
    }
}

fn container(
    cc: &CacheCluster,
    names: &Names,
    default_image: &str,
    security: &Security,
) -> Container {
    let spec = &cc.spec;
    let user = &spec.cache_container;
    // The operator's config ConfigMap comes last: for a key in two sources the later
    // wins, and the settings it derived from the spec must.
    let mut env_from = user.env_from.clone();
    env_from.push(EnvFromSource {
        config_map_ref: Some(ConfigMapEnvSource {
            name: names.config(),
            optional: Some(false),
        }),
        ..EnvFromSource::default()
    });
    // CEL refuses user KACHE_* names; the operator's entries come last all the same.
    let mut env = user.env.clone();
    env.extend([
        field_env(env::NODE_ID, "metadata.name"),
        field_env(env::NAMESPACE, "metadata.namespace"),
    ]);
    env.extend(security.env());
    let scheme = security.http_scheme();
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
        env_from: Some(env_from),
        env: Some(env),
        ports: Some(vec![
            container_port("http", spec.service.http_port),
            container_port("grpc", spec.service.grpc_port),
            container_port("resp", spec.service.resp_port),
        ]),
        // Ready only once the node holds every partition it owns.
        readiness_probe: Some(http_probe(scheme, "/readyz", 2, 1)),
        // Alive while the process serves at all; a long sync must not get it killed.
        liveness_probe: Some(http_probe(scheme, "/healthz", 10, 6)),
        // A node loads its data dir before it serves: up to 10 minutes (5 s x 120) before
        // the liveness probe starts counting.
        startup_probe: persistence(cc).map(|_| http_probe(scheme, "/healthz", 5, 120)),
        resources: spec.resources.clone(),
        volume_mounts: non_empty(&volume_mounts(cc, names, security)),
        security_context: Some(container_security_context(user.security_context.as_ref())),
        ..Container::default()
    }
}

/// The user's mounts, then the persistence volume's, the Secrets' and the upstreams'
/// (CEL refuses a user mount at their paths).
fn volume_mounts(cc: &CacheCluster, names: &Names, security: &Security) -> Vec<VolumeMount> {
    let mut mounts = cc.spec.cache_container.volume_mounts.clone();
    if persistence(cc).is_some() {
        mounts.push(VolumeMount {
            name: VOLUME_NAME.to_owned(),
            mount_path: MOUNT_PATH.to_owned(),
            ..VolumeMount::default()
        });
    }
    mounts.extend(security.volume_mounts());
    if upstreams_volume(cc, names).is_some() {
        mounts.push(VolumeMount {
            name: UPSTREAMS_VOLUME.to_owned(),
            mount_path: UPSTREAMS_DIR.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts
}

/// The pod volume of `upstreams.yaml` (CEL keeps the user's volumes off kache-* names).
const UPSTREAMS_VOLUME: &str = "kache-upstreams";

/// The `<name>-upstreams` ConfigMap as a volume, when the spec lists upstreams. Not
/// optional: a pod told to read the file must not start without it.
fn upstreams_volume(cc: &CacheCluster, names: &Names) -> Option<Volume> {
    (!cc.spec.upstreams.is_empty()).then(|| Volume {
        name: UPSTREAMS_VOLUME.to_owned(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.upstreams(),
            optional: Some(false),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    })
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

/// A probe of the node's open endpoints (no token needed). Over HTTPS with client TLS:
/// the kubelet does not verify the certificate of a probe.
fn http_probe(scheme: &str, path: &str, period_seconds: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            scheme: Some(scheme.to_owned()),
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

pub mod placement;
#[cfg(test)]
mod tests;
