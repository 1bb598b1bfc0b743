//! The two ConfigMaps: node settings (`<name>-config`, read by the pods as environment
//! variables) and the member list (`<name>-members`, watched by the nodes through the
//! API). They are separate on purpose: a settings change must roll the pods, and a
//! membership change must not.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use super::names::{Names, metadata};
use crate::crd::CacheCluster;
use crate::members::{MEMBERS_KEY, MemberList};

/// How long a node may finish in-flight work and hand off after SIGTERM; the pod's
/// termination grace period leaves it some room on top.
pub const NODE_SHUTDOWN_GRACE_SECONDS: i64 = 20;

/// The node settings, as the `KACHE_*` environment variables `kache-node` reads.
pub fn node_settings(cc: &CacheCluster) -> BTreeMap<String, String> {
    let names = Names::of(cc);
    let spec = &cc.spec;
    let mut env = BTreeMap::from([
        (
            "KACHE_HTTP_ADDR".to_owned(),
            format!("0.0.0.0:{}", spec.service.http_port),
        ),
        (
            "KACHE_GRPC_ADDR".to_owned(),
            format!("0.0.0.0:{}", spec.service.grpc_port),
        ),
        ("KACHE_PARTITIONS".to_owned(), spec.partitions.to_string()),
        (
            "KACHE_EVICTION".to_owned(),
            spec.eviction.as_str().to_owned(),
        ),
        (
            "KACHE_READ_CONSISTENCY".to_owned(),
            spec.read_consistency.as_str().to_owned(),
        ),
        (
            "KACHE_WRITE_CONSISTENCY".to_owned(),
            spec.write_consistency.as_str().to_owned(),
        ),
        ("KACHE_MEMBERS_CONFIGMAP".to_owned(), names.members()),
        ("KACHE_DISCOVERY".to_owned(), "endpointslices".to_owned()),
        ("KACHE_SERVICE".to_owned(), names.peers()),
        (
            "KACHE_PEER_PORT".to_owned(),
            spec.service.grpc_port.to_string(),
        ),
        (
            "KACHE_SHUTDOWN_GRACE".to_owned(),
            format!("{NODE_SHUTDOWN_GRACE_SECONDS}s"),
        ),
    ]);
    if let Some(max_memory) = max_memory(cc) {
        env.insert("KACHE_MAX_MEMORY".to_owned(), max_memory);
    }
    if let Some(ttl) = &spec.default_ttl {
        env.insert("KACHE_DEFAULT_TTL".to_owned(), ttl.clone());
    }
    env
}

/// `spec.maxMemory`, or else three quarters of the container's memory limit, leaving
/// room for the process itself and connection buffers. None: the node's own default.
fn max_memory(cc: &CacheCluster) -> Option<String> {
    if let Some(max) = &cc.spec.max_memory {
        return Some(max.clone());
    }
    let limit = cc.spec.resources.as_ref()?.limits.as_ref()?.get("memory")?;
    let bytes = quantity_bytes(&limit.0)?;
    Some((bytes / 4 * 3).to_string())
}

/// Parses a memory quantity ("512Mi", "1G", "1500000") into bytes; None for forms a
/// memory limit does not use (fractions, exponents, milli).
fn quantity_bytes(quantity: &str) -> Option<u64> {
    let split = quantity
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(quantity.len());
    let (digits, suffix) = quantity.split_at(split);
    let number: u64 = digits.parse().ok()?;
    let multiplier: u64 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        _ => return None,
    };
    number.checked_mul(multiplier)
}

/// A short, stable hash of the node settings for the pod-template annotation.
pub fn settings_hash(settings: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in settings {
        hasher.update(key.as_bytes());
        hasher.update(b"=");
        hasher.update(value.as_bytes());
        hasher.update(b"\n");
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

pub fn node_config_map(cc: &CacheCluster) -> ConfigMap {
    ConfigMap {
        metadata: metadata(cc, Names::of(cc).config()),
        data: Some(node_settings(cc)),
        ..ConfigMap::default()
    }
}

pub fn members_config_map(cc: &CacheCluster, list: &MemberList) -> ConfigMap {
    ConfigMap {
        metadata: metadata(cc, Names::of(cc).members()),
        data: Some(BTreeMap::from([(MEMBERS_KEY.to_owned(), list.to_yaml())])),
        ..ConfigMap::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::names::tests::cache_cluster;

    #[test]
    fn settings_follow_the_spec() {
        let cc = cache_cluster(
            "replicas: 3\nmaxMemory: 256MiB\neviction: lfu\ndefaultTtl: 5m\nwriteConsistency: all",
        );
        let env = node_settings(&cc);
        assert_eq!(env["KACHE_MAX_MEMORY"], "256MiB");
        assert_eq!(env["KACHE_EVICTION"], "lfu");
        assert_eq!(env["KACHE_DEFAULT_TTL"], "5m");
        assert_eq!(env["KACHE_WRITE_CONSISTENCY"], "all");
        assert_eq!(env["KACHE_READ_CONSISTENCY"], "quorum");
        assert_eq!(env["KACHE_PARTITIONS"], "271");
        assert_eq!(env["KACHE_MEMBERS_CONFIGMAP"], "demo-members");
        assert_eq!(env["KACHE_SERVICE"], "demo-peers");
        assert_eq!(env["KACHE_GRPC_ADDR"], "0.0.0.0:7071");
    }

    #[test]
    fn max_memory_defaults_to_three_quarters_of_the_limit() {
        let cc = cache_cluster("replicas: 3\nresources: {limits: {memory: 1Gi}}");
        assert_eq!(node_settings(&cc)["KACHE_MAX_MEMORY"], "805306368");
        let cc = cache_cluster("replicas: 3\nresources: {limits: {memory: 1.5Gi}}");
        assert!(!node_settings(&cc).contains_key("KACHE_MAX_MEMORY"));
        let cc = cache_cluster("replicas: 3");
        assert!(!node_settings(&cc).contains_key("KACHE_MAX_MEMORY"));
    }

    #[test]
    fn the_hash_changes_with_settings_and_only_with_them() {
        let a = cache_cluster("replicas: 3\nmaxMemory: 256MiB");
        let scaled = cache_cluster("replicas: 5\nmaxMemory: 256MiB\nreplicationFactor: 2");
        let resized = cache_cluster("replicas: 3\nmaxMemory: 512MiB");
        let hash = |cc: &CacheCluster| settings_hash(&node_settings(cc));
        assert_eq!(hash(&a), hash(&scaled), "scaling must not roll pods");
        assert_ne!(hash(&a), hash(&resized));
        assert_eq!(hash(&a).len(), 16);
    }
}
