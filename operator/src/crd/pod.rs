//! What a user may change in the cache pods: `spec.pod` (pod-level) and
//! `spec.cacheContainer` (the `kache` container). These are explicit fields, not a pod
//! template overlay: each one says what it does for `kubectl explain`, the schema checks
//! it, CEL refuses the combinations the operator cannot honour (an env var it sets
//! itself, a sidecar named like the cache container, a shutdown grace the kubelet would
//! cut short), and the operator's own pod settings (probes, ports, the config env, the
//! member-id env) stay out of reach. docs/operator.md says why in more words.
//!
//! The lists and their `name`s are bounded (`maxItems`, `maxLength`) so the API server's
//! CEL cost estimate of the rules over them stays within its budget.

use k8s_openapi::api::core::v1::{
    Container, EnvFromSource, EnvVar, LocalObjectReference, PodSecurityContext, SecurityContext,
    Volume, VolumeMount,
};
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The node's drain time after SIGTERM when nothing says otherwise.
pub const DEFAULT_SHUTDOWN_GRACE_SECONDS: i64 = 20;
/// How much longer than the node's drain the kubelet waits before SIGKILL, when only
/// one of the two is set: room for the process to exit after the drain.
pub const GRACE_MARGIN_SECONDS: i64 = 10;

/// Pod-level settings of the cache pods. Unset fields keep the operator's defaults.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.shutdownGraceSeconds) || !has(self.terminationGracePeriodSeconds) || self.shutdownGraceSeconds < self.terminationGracePeriodSeconds"
).message("pod.shutdownGraceSeconds must be less than pod.terminationGracePeriodSeconds, or the kubelet kills the node (SIGKILL) before it has handed its data off; raise terminationGracePeriodSeconds or lower shutdownGraceSeconds"))]
#[x_kube(validation = Rule::new(
    "!has(self.sidecars) || self.sidecars.all(c, c.name != 'kache')"
).message("pod.sidecars: the name 'kache' is the cache container's; rename the sidecar"))]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Secrets holding registry credentials, for pulling the cache image (and the
    /// sidecars' images) from a private registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "image_pull_secrets_schema")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// The ServiceAccount the cache pods run as. Default: `<name>-node`, which the
    /// operator creates. The operator binds its least-privilege Role (read the member
    /// list and the EndpointSlices) to this account too, so the nodes keep working.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub service_account_name: Option<String>,

    /// Pod security context. Each field set here replaces the operator's; the fields
    /// left unset keep its secure defaults (runAsNonRoot, runAsUser and runAsGroup
    /// 65532, seccompProfile RuntimeDefault).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<PodSecurityContext>,

    /// Seconds the kubelet waits after SIGTERM before it kills a cache pod. Default:
    /// shutdownGraceSeconds + 10 (30). A handoff of several GiB at replicationFactor 1
    /// needs more than the default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 86400))]
    pub termination_grace_period_seconds: Option<i64>,

    /// Seconds a cache node spends after SIGTERM finishing in-flight requests and
    /// handing off what it can (the node's --shutdown-grace). Must be less than
    /// terminationGracePeriodSeconds. Default: terminationGracePeriodSeconds - 10 when
    /// that is set (at least half of it), otherwise 20. Changing it rolls the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86399))]
    pub shutdown_grace_seconds: Option<i64>,

    /// Extra volumes of the cache pods, for the cache container's volumeMounts and the
    /// sidecars.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "volumes_schema")]
    pub volumes: Vec<Volume>,

    /// Extra containers that run beside the cache container in every cache pod (log
    /// shippers, proxies, exporters). They may not be named `kache`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "sidecars_schema")]
    pub sidecars: Vec<Container>,
}

impl PodOverrides {
    /// The node's drain time and the pod's termination grace period, in seconds, with
    /// the defaults filled in. The drain always ends before the kubelet's SIGKILL:
    /// the CEL rule refuses a spec setting both the wrong way round.
    pub fn grace_seconds(&self) -> (i64, i64) {
        match (
            self.shutdown_grace_seconds,
            self.termination_grace_period_seconds,
        ) {
            (Some(shutdown), Some(termination)) => (shutdown, termination),
            (Some(shutdown), None) => (shutdown, shutdown + GRACE_MARGIN_SECONDS),
            (None, Some(termination)) => (
                (termination - GRACE_MARGIN_SECONDS).max(termination / 2),
                termination,
            ),
            (None, None) => (
                DEFAULT_SHUTDOWN_GRACE_SECONDS,
                DEFAULT_SHUTDOWN_GRACE_SECONDS + GRACE_MARGIN_SECONDS,
            ),
        }
    }
}

/// Settings of the cache container (`kache`) itself. Unset fields keep the
/// operator's defaults.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.env) || self.env.all(e, !e.name.startsWith('KACHE_'))"
).message("cacheContainer.env: KACHE_* variables are the node settings the operator sets from the spec; use the spec field instead (e.g. maxMemory, defaultTtl)"))]
#[x_kube(validation = Rule::new(
    "!has(self.envFrom) || self.envFrom.all(e, !has(e.prefix) || !e.prefix.startsWith('KACHE_'))"
).message("cacheContainer.envFrom: a prefix starting with KACHE_ would set node settings the operator owns; choose another prefix"))]
#[serde(rename_all = "camelCase")]
pub struct CacheContainerOverrides {
    /// Extra environment variables of the cache container. Names starting with KACHE_
    /// are refused: the operator sets those from the spec.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_schema")]
    pub env: Vec<EnvVar>,

    /// Extra ConfigMaps or Secrets whose keys become environment variables of the cache
    /// container. They come before the operator's own config ConfigMap, so a key the
    /// operator sets there wins over the same key here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "env_from_schema")]
    pub env_from: Vec<EnvFromSource>,

    /// Container security context. Each field set here replaces the operator's; the
    /// fields left unset keep its secure defaults (allowPrivilegeEscalation false,
    /// readOnlyRootFilesystem true, capabilities drop ALL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,

    /// Where the cache container mounts volumes from pod.volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "volume_mounts_schema")]
    pub volume_mounts: Vec<VolumeMount>,
}

/// The schema of `Vec<T>` with at most `max_items` entries, each `name` at most
/// `max_name` characters (Kubernetes leaves both unbounded in its own schemas).
fn bounded_list<T: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
    max_items: u64,
    max_name: Option<u64>,
) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<T>>();
    schema.insert("maxItems".to_owned(), max_items.into());
    if let Some(max_name) = max_name
        && let Some(name) = schema
            .get_mut("items")
            .and_then(|items| items.get_mut("properties"))
            .and_then(|properties| properties.get_mut("name"))
            .and_then(serde_json::Value::as_object_mut)
    {
        name.insert("maxLength".to_owned(), max_name.into());
    }
    schema
}

fn image_pull_secrets_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_list::<LocalObjectReference>(generator, 16, Some(253))
}

fn volumes_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_list::<Volume>(generator, 64, Some(63))
}

fn sidecars_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_list::<Container>(generator, 16, Some(63))
}

fn env_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    bounded_list::<EnvVar>(generator, 256, Some(256))
}

fn env_from_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = bounded_list::<EnvFromSource>(generator, 64, None);
    if let Some(prefix) = schema
        .get_mut("items")
        .and_then(|items| items.get_mut("properties"))
        .and_then(|properties| properties.get_mut("prefix"))
        .and_then(serde_json::Value::as_object_mut)
    {
        prefix.insert("maxLength".to_owned(), 256.into());
    }
    schema
}

/// `mountPath` is bounded too (at Linux's PATH_MAX), for the rule comparing it with the
/// persistence mount.
fn volume_mounts_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = bounded_list::<VolumeMount>(generator, 64, Some(63));
    if let Some(path) = schema
        .get_mut("items")
        .and_then(|items| items.get_mut("properties"))
        .and_then(|properties| properties.get_mut("mountPath"))
        .and_then(serde_json::Value::as_object_mut)
    {
        path.insert("maxLength".to_owned(), 4096.into());
    }
    schema
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drain_ends_before_the_kubelets_kill() {
        let grace = |shutdown, termination| {
            PodOverrides {
                shutdown_grace_seconds: shutdown,
                termination_grace_period_seconds: termination,
                ..PodOverrides::default()
            }
            .grace_seconds()
        };
        // Today's defaults, so an operator upgrade rolls no pod.
        assert_eq!(grace(None, None), (20, 30));
        assert_eq!(grace(Some(300), None), (300, 310));
        assert_eq!(grace(None, Some(600)), (590, 600));
        assert_eq!(grace(None, Some(12)), (6, 12), "at least half of it");
        assert_eq!(grace(None, Some(2)), (1, 2));
        assert_eq!(grace(Some(50), Some(55)), (50, 55));
    }
}
