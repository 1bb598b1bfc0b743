//! `spec.persistence`: each member keeps an append-only log and snapshots of its data on
//! a PersistentVolumeClaim of its own, so a whole-cluster restart comes back with its data.
//!
//! The claims come from the StatefulSet's `volumeClaimTemplates`, which Kubernetes never
//! lets change. So whether persistence is on, the StorageClass and the size are fixed at
//! creation: CEL transition rules refuse a change with a message, in `kubectl apply`, rather
//! than let the operator's every apply of the StatefulSet fail. The fsync policy, the
//! snapshot interval and the retention on delete may change (the first two roll the pods).

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// The name of the volume claim template, and so of each member's claim: `data-<pod>`.
pub const VOLUME_NAME: &str = "data";
/// Where the cache container mounts its claim.
pub const MOUNT_PATH: &str = "/var/lib/kache";
/// The node's data directory: a directory in the volume rather than its root, which may
/// hold a filesystem's own entries (`lost+found` on ext4).
pub const DATA_DIR: &str = "/var/lib/kache/data";

/// Disk persistence of the cache data.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new("self.enabled == oldSelf.enabled").message(
    "persistence.enabled is immutable: a StatefulSet's volume claims cannot be added or removed; create a new CacheCluster to turn persistence on or off"
))]
#[x_kube(validation = Rule::new(
    "!self.enabled || (has(self.storageClassName) == has(oldSelf.storageClassName) && (!has(self.storageClassName) || self.storageClassName == oldSelf.storageClassName))"
).message(
    "persistence.storageClassName is immutable while persistence is enabled: a StatefulSet's volume claims cannot change; create a new CacheCluster to use another class"
))]
#[x_kube(validation = Rule::new("!self.enabled || self.size == oldSelf.size").message(
    "persistence.size is immutable while persistence is enabled: a StatefulSet's volume claims cannot change; create a new CacheCluster with the new size, or expand each member's PVC if its StorageClass allows it"
))]
#[x_kube(validation = Rule::new(
    "isQuantity(self.size) && quantity(self.size).isGreaterThan(quantity('0'))"
).message("persistence.size must be a positive Kubernetes quantity, e.g. 1Gi, 500Mi or 10G"))]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// Keep each member's data on a volume of its own (an append-only log and snapshots),
    /// so a restart of every member at once loses nothing. Fixed at creation.
    #[serde(default)]
    pub enabled: bool,

    /// StorageClass of the volumes; the cluster's default class when unset. Fixed at
    /// creation while persistence is enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub storage_class_name: Option<String>,

    /// Volume size per member, a Kubernetes quantity (e.g. 10Gi): room for the snapshots
    /// of what a member holds and the log written between them. Fixed at creation while
    /// persistence is enabled.
    #[serde(default = "default_size")]
    #[schemars(length(min = 1, max = 64))]
    pub size: String,

    /// When a node's log reaches the disk: always (before the write is acknowledged),
    /// everysec (a crash of the node loses at most about a second of writes) or never
    /// (when the kernel flushes). Changing it rolls the pods.
    #[serde(default)]
    pub fsync: Fsync,

    /// How often a node writes a snapshot and drops the log before it: a whole number of
    /// s, m or h (e.g. 30s, 5m). Changing it rolls the pods.
    #[serde(default = "default_snapshot_interval")]
    #[schemars(regex(pattern = r"^[1-9][0-9]{0,8}(s|m|h)$"))]
    pub snapshot_interval: String,

    /// What happens to the volumes when the CacheCluster is deleted: Retain (the
    /// default) keeps them, Delete deletes them with it. A member removed by a scale-down
    /// always loses its volume: it handed its data off first, and a later scale-up must
    /// start it empty.
    #[serde(default)]
    pub when_deleted: RetentionPolicy,
}

impl Default for Persistence {
    fn default() -> Self {
        Self {
            enabled: false,
            storage_class_name: None,
            size: default_size(),
            fsync: Fsync::default(),
            snapshot_interval: default_snapshot_interval(),
            when_deleted: RetentionPolicy::default(),
        }
    }
}

fn default_size() -> String {
    "1Gi".to_owned()
}

fn default_snapshot_interval() -> String {
    "5m".to_owned()
}

/// When a node's log reaches the disk. The node's `--fsync` calls `never` `no`, as Redis
/// does; the CRD cannot: kubectl reads YAML 1.1, where an unquoted `no` is `false`, so
/// `fsync: no` would be refused as "must be of type string".
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Fsync {
    Always,
    #[default]
    Everysec,
    Never,
}

impl Fsync {
    /// The node's `--fsync` value.
    pub fn node_value(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::Everysec => "everysec",
            Self::Never => "no",
        }
    }
}

/// What happens to the members' volumes when the CacheCluster is deleted, as in a
/// StatefulSet's `persistentVolumeClaimRetentionPolicy`.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum RetentionPolicy {
    #[default]
    Retain,
    Delete,
}

impl RetentionPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Retain => "Retain",
            Self::Delete => "Delete",
        }
    }
}
