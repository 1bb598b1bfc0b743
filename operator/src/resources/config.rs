//! The ConfigMaps: node settings (`<name>-config`, read by the pods as environment
//! variables) and the member list (`<name>-members`, watched by the nodes through the
//! API). They are separate on purpose: a settings change must roll the pods, and a
//! membership change must not.
//!
//! With `spec.upstreams`, a third one, `<name>-upstreams`, holds `upstreams.yaml`
//! ([`UpstreamsFile`]): a file, because the node reads its upstreams from a file, mounted
//! at [`UPSTREAMS_DIR`] (statefulset.rs), and a ConfigMap of its own, because every key of
//! `<name>-config` becomes a variable. `KACHE_UPSTREAMS_FILE` names it only when the list
//! is not empty, and the file's text is part of [`settings_hash`], so a change rolls the
//! pods like any setting.
//!
//! The variables are named by [`kache_api::env`] and their values checked with
//! [`kache_api::units`], as the node names and parses them; `tests/node_contract.rs`
//! feeds these settings to the node's own parser.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use sha2::{Digest, Sha256};

use kache_api::env;
use kache_api::units::{self, Quantity, UnitError};
use kache_api::upstreams::{UpstreamError, UpstreamsFile, validate_all};
use kube::ResourceExt;

use super::names::{Names, metadata};
use crate::crd::CacheCluster;
use crate::crd::persistence::DATA_DIR;
use crate::members::{MEMBERS_KEY, MemberList};

/// A spec value the nodes cannot run with. The operator refuses it (the reconcile fails
/// with this error, before anything is applied) rather than leave the variable out and
/// let the nodes fall back to a default the user did not ask for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("spec.maxMemory: {0}")]
    MaxMemory(UnitError),
    #[error("spec.defaultTtl: {0}")]
    DefaultTtl(UnitError),
    #[error("spec.maxClockOffset: {0}")]
    MaxClockOffset(UnitError),
    #[error(
        "spec.resources.limits.memory: {0}; maxMemory defaults to three quarters of it, so fix it or set spec.maxMemory"
    )]
    MemoryLimit(UnitError),
    #[error(
        "spec.resources.limits.memory '{0}' is negative or 2^64 bytes or more; fix it or set spec.maxMemory"
    )]
    MemoryLimitRange(String),
    #[error(
        "spec.rebalanceTimeout '{0}' is not a positive whole number of s, m or h (e.g. 90s, 10m, 2h)"
    )]
    RebalanceTimeout(String),
    #[error(
        "spec.persistence.snapshotInterval '{0}' is not a whole number of s, m or h of at least 1s (e.g. 30s, 5m)"
    )]
    SnapshotInterval(String),
    #[error(
        "the CacheCluster has no metadata.uid, which persistent nodes record as their cluster's identity"
    )]
    ClusterId,
    #[error(
        "spec.logging.level '{0}' is not a tracing filter: {1} (e.g. info, warn, info,kache_node=debug)"
    )]
    LogLevel(String, String),
    #[error("spec.upstreams: {0}")]
    Upstreams(UpstreamError),
}

/// Where the cache container finds `upstreams.yaml`: the `<name>-upstreams` ConfigMap,
/// mounted read-only (under /etc/kache, which CEL keeps free of the user's mounts).
pub const UPSTREAMS_DIR: &str = "/etc/kache/upstreams";
/// The ConfigMap's one key, and the file's name in [`UPSTREAMS_DIR`].
pub const UPSTREAMS_KEY: &str = "upstreams.yaml";

/// The node settings, as the `KACHE_*` environment variables `kache-node` reads. Sizes
/// and durations are checked with the parsers the node uses, so a value is refused here,
/// where the user sees it, and never in a crash-looping pod.
pub fn node_settings(cc: &CacheCluster) -> Result<BTreeMap<String, String>, SettingsError> {
    let names = Names::of(cc);
    let spec = &cc.spec;
    let mut settings = BTreeMap::from([
        (
            env::HTTP_ADDR.to_owned(),
            format!("0.0.0.0:{}", spec.service.http_port),
        ),
        (
            env::GRPC_ADDR.to_owned(),
            format!("0.0.0.0:{}", spec.service.grpc_port),
        ),
        (
            env::RESP_ADDR.to_owned(),
            format!("0.0.0.0:{}", spec.service.resp_port),
        ),
        (env::PARTITIONS.to_owned(), spec.partitions.to_string()),
        (env::EVICTION.to_owned(), spec.eviction.as_str().to_owned()),
        (
            env::READ_CONSISTENCY.to_owned(),
            spec.read_consistency.as_str().to_owned(),
        ),
        (
            env::WRITE_CONSISTENCY.to_owned(),
            spec.write_consistency.as_str().to_owned(),
        ),
        (env::MEMBERS_CONFIGMAP.to_owned(), names.members()),
        (env::DISCOVERY.to_owned(), "endpointslices".to_owned()),
        (env::SERVICE.to_owned(), names.peers()),
        (
            env::PEER_PORT.to_owned(),
            spec.service.grpc_port.to_string(),
        ),
        // How long a node may finish in-flight work and hand off after SIGTERM; the
        // pod's termination grace period (statefulset.rs) is longer.
        (
            env::SHUTDOWN_GRACE.to_owned(),
            format!("{}s", spec.pod.grace_seconds().0),
        ),
    ]);
    if let Some(max_memory) = max_memory(cc)? {
        settings.insert(env::MAX_MEMORY.to_owned(), max_memory);
    }
    if let Some(ttl) = &spec.default_ttl {
        units::parse_duration(ttl).map_err(SettingsError::DefaultTtl)?;
        settings.insert(env::DEFAULT_TTL.to_owned(), ttl.clone());
    }
    if let Some(offset) = &spec.max_clock_offset {
        units::parse_duration(offset).map_err(SettingsError::MaxClockOffset)?;
        settings.insert(env::MAX_CLOCK_OFFSET.to_owned(), offset.clone());
    }
    settings.extend(persistence_settings(cc)?);
    settings.extend(log_settings(cc)?);
    if upstreams_file(cc)?.is_some() {
        settings.insert(
            env::UPSTREAMS_FILE.to_owned(),
            format!("{UPSTREAMS_DIR}/{UPSTREAMS_KEY}"),
        );
    }
    Ok(settings)
}

/// The text of `upstreams.yaml`, checked with the validation the node runs at start
/// (after the schema and CEL, which refuse the same mistakes at admission); None when
/// the spec lists no upstream, and the node reads through nothing.
pub fn upstreams_file(cc: &CacheCluster) -> Result<Option<String>, SettingsError> {
    if cc.spec.upstreams.is_empty() {
        return Ok(None);
    }
    let file = UpstreamsFile {
        upstreams: cc.spec.upstreams.iter().map(|u| u.to_node()).collect(),
    };
    validate_all(&file.upstreams).map_err(SettingsError::Upstreams)?;
    Ok(Some(file.to_yaml()))
}

/// The log format, always (the node's default is the same, but written out the setting
/// shows in the ConfigMap), and the filter when the spec sets one, checked with the
/// parser the node uses.
fn log_settings(cc: &CacheCluster) -> Result<Vec<(String, String)>, SettingsError> {
    let logging = &cc.spec.logging;
    let mut settings = vec![(
        env::LOG_FORMAT.to_owned(),
        logging.format.node_format().as_str().to_owned(),
    )];
    if let Some(level) = &logging.level {
        tracing_subscriber::EnvFilter::builder()
            .parse(level)
            .map_err(|err| SettingsError::LogLevel(level.clone(), err.to_string()))?;
        settings.push((env::LOG_FILTER.to_owned(), level.clone()));
    }
    Ok(settings)
}

/// The data dir (on the claim statefulset.rs mounts), the fsync policy, the snapshot
/// interval and the cluster's identity; nothing when persistence is off. The identity is
/// the CacheCluster's UID, fixed for the object's life: a node does not load data of
/// another cluster, such as a claim retained from a deleted CacheCluster of the same name.
fn persistence_settings(cc: &CacheCluster) -> Result<Vec<(String, String)>, SettingsError> {
    let persistence = &cc.spec.persistence;
    if !persistence.enabled {
        return Ok(Vec::new());
    }
    let interval = &persistence.snapshot_interval;
    let at_least_a_second = units::parse_duration(interval)
        .is_ok_and(|interval| interval >= std::time::Duration::from_secs(1));
    if !at_least_a_second {
        return Err(SettingsError::SnapshotInterval(interval.clone()));
    }
    let cluster_id = cc.uid().ok_or(SettingsError::ClusterId)?;
    Ok(vec![
        (env::DATA_DIR.to_owned(), DATA_DIR.to_owned()),
        (
            env::FSYNC.to_owned(),
            persistence.fsync.node_value().to_owned(),
        ),
        (env::SNAPSHOT_INTERVAL.to_owned(), interval.clone()),
        (env::CLUSTER_ID.to_owned(), cluster_id),
    ])
}

/// `spec.maxMemory`, or else three quarters of the container's memory limit, leaving
/// room for the process itself and connection buffers. None: neither is set, and the
/// node's own default applies.
fn max_memory(cc: &CacheCluster) -> Result<Option<String>, SettingsError> {
    if let Some(max) = &cc.spec.max_memory {
        units::parse_bytes(max).map_err(SettingsError::MaxMemory)?;
        return Ok(Some(max.clone()));
    }
    let Some(limit) = cc
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.limits.as_ref())
        .and_then(|limits| limits.get("memory"))
    else {
        return Ok(None);
    };
    let bytes = limit
        .0
        .parse::<Quantity>()
        .map_err(SettingsError::MemoryLimit)?
        .ceil_u64()
        .ok_or_else(|| SettingsError::MemoryLimitRange(limit.0.clone()))?;
    Ok(Some((bytes / 4 * 3).to_string()))
}

/// A short, stable hash of the node settings and `upstreams.yaml` (from
/// [`upstreams_file`]) for the pod-template annotation. Without upstreams it is the hash
/// of the settings alone, as before they existed, so an operator upgrade rolls no pod.
pub fn settings_hash(settings: &BTreeMap<String, String>, upstreams: Option<&str>) -> String {
    let mut hasher = Sha256::new();
    for (key, value) in settings {
        hasher.update(key.as_bytes());
        hasher.update(b"=");
        hasher.update(value.as_bytes());
        hasher.update(b"\n");
    }
    if let Some(text) = upstreams {
        hasher.update(UPSTREAMS_KEY.as_bytes());
        hasher.update(b"=");
        hasher.update(text.as_bytes());
    }
    hasher
        .finalize()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// The `<name>-config` ConfigMap holding `settings` (from [`node_settings`]).
pub fn node_config_map(cc: &CacheCluster, settings: &BTreeMap<String, String>) -> ConfigMap {
    ConfigMap {
        metadata: metadata(cc, Names::of(cc).config()),
        data: Some(settings.clone()),
        ..ConfigMap::default()
    }
}

/// The `<name>-upstreams` ConfigMap holding `text` (from [`upstreams_file`]).
pub fn upstreams_config_map(cc: &CacheCluster, text: &str) -> ConfigMap {
    ConfigMap {
        metadata: metadata(cc, Names::of(cc).upstreams()),
        data: Some(BTreeMap::from([(
            UPSTREAMS_KEY.to_owned(),
            text.to_owned(),
        )])),
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

    fn settings(spec: &str) -> BTreeMap<String, String> {
        node_settings(&cache_cluster(spec)).expect("valid settings")
    }

    #[test]
    fn settings_follow_the_spec() {
        let settings = settings(
            "replicas: 3\nmaxMemory: 256MiB\neviction: lfu\ndefaultTtl: 5m\nwriteConsistency: all",
        );
        assert_eq!(settings[env::MAX_MEMORY], "256MiB");
        assert_eq!(settings[env::EVICTION], "lfu");
        assert_eq!(settings[env::DEFAULT_TTL], "5m");
        assert_eq!(settings[env::WRITE_CONSISTENCY], "all");
        assert_eq!(settings[env::READ_CONSISTENCY], "quorum");
        assert_eq!(settings[env::PARTITIONS], "271");
        assert_eq!(settings[env::MEMBERS_CONFIGMAP], "demo-members");
        assert_eq!(settings[env::SERVICE], "demo-peers");
        assert_eq!(settings[env::GRPC_ADDR], "0.0.0.0:7071");
        assert_eq!(settings[env::SHUTDOWN_GRACE], "20s");
        assert_eq!(settings[env::LOG_FORMAT], "text");
        assert!(
            !settings.contains_key(env::LOG_FILTER),
            "the node's default filter"
        );
    }

    #[test]
    fn the_log_format_and_filter_follow_spec_logging() {
        let logged =
            settings("replicas: 3\nlogging: {format: json, level: 'info,kache_node=debug'}");
        assert_eq!(logged[env::LOG_FORMAT], "json");
        assert_eq!(logged[env::LOG_FILTER], "info,kache_node=debug");
        let text = settings_hash(&settings("replicas: 3"), None);
        let json = settings_hash(&settings("replicas: 3\nlogging: {format: json}"), None);
        assert_ne!(text, json, "a format change rolls the pods");
    }

    #[test]
    fn a_log_filter_the_node_cannot_parse_is_refused() {
        let refused = node_settings(&cache_cluster(
            "replicas: 3\nlogging: {level: 'info,x=loud'}",
        ))
        .expect_err("refused");
        assert!(
            matches!(&refused, SettingsError::LogLevel(level, _) if level == "info,x=loud"),
            "{refused}"
        );
    }

    #[test]
    fn the_shutdown_grace_follows_the_spec() {
        let grace =
            |pod: &str| settings(&format!("replicas: 3\npod: {pod}"))[env::SHUTDOWN_GRACE].clone();
        assert_eq!(grace("{shutdownGraceSeconds: 300}"), "300s");
        assert_eq!(grace("{terminationGracePeriodSeconds: 600}"), "590s");
    }

    #[test]
    fn max_memory_defaults_to_three_quarters_of_the_limit() {
        for (limit, max_memory) in [
            ("1Gi", "805306368"),
            // Every form Kubernetes accepts is understood, fractions and exponents too.
            ("1.5Gi", "1207959552"),
            ("1536Mi", "1207959552"),
            ("1G", "750000000"),
            ("2e9", "1500000000"),
            ("1Pi", "844424930131968"),
        ] {
            let spec = format!("replicas: 3\nresources: {{limits: {{memory: {limit}}}}}");
            assert_eq!(settings(&spec)[env::MAX_MEMORY], max_memory, "{limit}");
        }
        let spec = "replicas: 3\nmaxMemory: 256MiB\nresources: {limits: {memory: 1Gi}}";
        assert_eq!(settings(spec)[env::MAX_MEMORY], "256MiB", "the spec wins");
        assert!(!settings("replicas: 3").contains_key(env::MAX_MEMORY));
    }

    #[test]
    fn a_value_the_nodes_cannot_use_is_refused_not_defaulted() {
        let refused = |spec: &str| node_settings(&cache_cluster(spec)).expect_err("refused");
        assert_eq!(
            refused("replicas: 3\nresources: {limits: {memory: lots}}"),
            SettingsError::MemoryLimit(UnitError::NotQuantity("lots".to_owned()))
        );
        assert_eq!(
            refused("replicas: 3\nresources: {limits: {memory: -1Gi}}"),
            SettingsError::MemoryLimitRange("-1Gi".to_owned())
        );
        // The schema's patterns let these through; the node's parsers would not.
        assert!(matches!(
            refused("replicas: 3\nmaxMemory: 999999999999999TiB"),
            SettingsError::MaxMemory(UnitError::TooLarge(_))
        ));
        assert!(matches!(
            refused("replicas: 3\ndefaultTtl: 5 weeks"),
            SettingsError::DefaultTtl(UnitError::UnknownUnit { .. })
        ));
        let message = refused("replicas: 3\nresources: {limits: {memory: 1.5.0Gi}}").to_string();
        assert!(
            message.contains("spec.resources.limits.memory") && message.contains("spec.maxMemory"),
            "{message}"
        );
    }

    #[test]
    fn persistence_gives_the_nodes_a_data_dir_and_their_clusters_identity() {
        let settings = settings(
            "replicas: 3\npersistence: {enabled: true, fsync: always, snapshotInterval: 30s}",
        );
        assert_eq!(settings[env::DATA_DIR], "/var/lib/kache/data");
        assert_eq!(settings[env::FSYNC], "always");
        assert_eq!(settings[env::SNAPSHOT_INTERVAL], "30s");
        assert_eq!(
            settings[env::CLUSTER_ID],
            "0b1e4c52-5a3c-4f4e-9a57-6c3c1b2e7d10"
        );
        let defaults = self::settings("replicas: 3\npersistence: {enabled: true}");
        assert_eq!(defaults[env::FSYNC], "everysec");
        assert_eq!(defaults[env::SNAPSHOT_INTERVAL], "5m");
        let never = self::settings("replicas: 3\npersistence: {enabled: true, fsync: never}");
        assert_eq!(never[env::FSYNC], "no", "the node's name for it");
    }

    #[test]
    fn without_persistence_the_nodes_keep_nothing_on_disk() {
        for spec in [
            "replicas: 3",
            "replicas: 3\npersistence: {enabled: false, size: 10Gi, fsync: always}",
        ] {
            let settings = settings(spec);
            for name in [
                env::DATA_DIR,
                env::FSYNC,
                env::SNAPSHOT_INTERVAL,
                env::CLUSTER_ID,
            ] {
                assert!(!settings.contains_key(name), "{name}: {spec}");
            }
        }
    }

    #[test]
    fn a_persistent_cluster_without_an_identity_or_a_usable_interval_is_refused() {
        let mut cc = cache_cluster("replicas: 3\npersistence: {enabled: true}");
        cc.metadata.uid = None;
        assert_eq!(node_settings(&cc), Err(SettingsError::ClusterId));
        for interval in ["500ms", "0s", "5 weeks"] {
            let spec = format!(
                "replicas: 3\npersistence: {{enabled: true, snapshotInterval: {interval}}}"
            );
            assert_eq!(
                node_settings(&cache_cluster(&spec)),
                Err(SettingsError::SnapshotInterval(interval.to_owned())),
                "{interval}"
            );
        }
    }

    const UPSTREAMS: &str = "replicas: 3\nupstreams:\n- name: prices\n  url: https://prices.example.com/v2\n  \
        timeout: 5s\n  keyHeaders: [Accept-Language]\n  circuitBreaker: {failureThreshold: 3}\n- name: users\n  url: http://users:8080";

    #[test]
    fn upstreams_reach_the_nodes_as_a_file_the_node_parses() {
        let cc = cache_cluster(UPSTREAMS);
        let text = upstreams_file(&cc).unwrap().expect("a file");
        let parsed = UpstreamsFile::parse(&text).expect("the node's parser takes it");
        assert_eq!(
            parsed.iter().map(|u| u.name.as_str()).collect::<Vec<_>>(),
            ["prices", "users"]
        );
        assert_eq!(parsed[0].url, "https://prices.example.com/v2");
        assert_eq!(parsed[0].timeout, std::time::Duration::from_secs(5));
        assert_eq!(parsed[0].key_headers, ["accept-language"]);
        assert_eq!(parsed[0].failure_threshold, 3);
        assert_eq!(parsed[1].max_concurrency, 64, "the node's default");
        let settings = settings(UPSTREAMS);
        assert_eq!(
            settings[env::UPSTREAMS_FILE],
            "/etc/kache/upstreams/upstreams.yaml"
        );
        let map = upstreams_config_map(&cc, &text);
        assert_eq!(map.metadata.name.as_deref(), Some("demo-upstreams"));
        assert_eq!(map.data.unwrap()[UPSTREAMS_KEY], text);
        // None listed: no file, no variable, and the settings the cluster had before.
        let plain = cache_cluster("replicas: 3");
        assert_eq!(upstreams_file(&plain), Ok(None));
        assert!(!self::settings("replicas: 3").contains_key(env::UPSTREAMS_FILE));
    }

    #[test]
    fn an_upstream_change_rolls_the_pods() {
        let hash = |spec: &str| {
            let cc = cache_cluster(spec);
            settings_hash(
                &node_settings(&cc).unwrap(),
                upstreams_file(&cc).unwrap().as_deref(),
            )
        };
        let longer = UPSTREAMS.replace("timeout: 5s", "timeout: 6s");
        assert_ne!(hash(UPSTREAMS), hash(&longer), "a field of one upstream");
        assert_ne!(hash(UPSTREAMS), hash("replicas: 3"), "added or removed");
        assert_eq!(hash(UPSTREAMS), hash(UPSTREAMS));
        assert_eq!(
            hash("replicas: 3"),
            settings_hash(&settings("replicas: 3"), None),
            "without upstreams, the hash clusters had before them: an upgrade rolls nothing"
        );
    }

    #[test]
    fn an_upstream_the_nodes_would_refuse_is_refused() {
        // Each gets past a schema from before the rule (or CEL altogether).
        for (upstreams, expected) in [
            (
                "[{name: a, url: http://x}, {name: a, url: http://y}]",
                "listed twice",
            ),
            ("[{name: a, url: http://x, timeout: 0s}]", "more than 0s"),
            ("[{name: a, url: 'http://u@x'}]", "user info"),
            (
                "[{name: a, url: http://x, forwardHeaders: [Host]}]",
                "managed by the cache",
            ),
            (
                "[{name: a, url: http://x, defaultTtl: 99999999999999999999d}]",
                "defaultTtl",
            ),
        ] {
            let spec = format!("replicas: 3\nupstreams: {upstreams}");
            let refused = node_settings(&cache_cluster(&spec)).expect_err(&spec);
            assert!(matches!(refused, SettingsError::Upstreams(_)), "{refused}");
            let message = refused.to_string();
            assert!(
                message.starts_with("spec.upstreams: ") && message.contains(expected),
                "{spec}: {message}"
            );
        }
    }

    #[test]
    fn the_hash_changes_with_settings_and_only_with_them() {
        let a = "replicas: 3\nmaxMemory: 256MiB";
        let scaled = "replicas: 5\nmaxMemory: 256MiB\nreplicationFactor: 2";
        let resized = "replicas: 3\nmaxMemory: 512MiB";
        let hash = |spec: &str| settings_hash(&settings(spec), None);
        assert_eq!(hash(a), hash(scaled), "scaling must not roll pods");
        assert_ne!(hash(a), hash(resized));
        let persistent = "replicas: 3\nmaxMemory: 256MiB\npersistence: {enabled: true}";
        let fsync = "replicas: 3\nmaxMemory: 256MiB\npersistence: {enabled: true, fsync: never}";
        let retained =
            "replicas: 3\nmaxMemory: 256MiB\npersistence: {enabled: true, whenDeleted: Delete}";
        assert_ne!(
            hash(persistent),
            hash(fsync),
            "the nodes read fsync at start"
        );
        assert_eq!(
            hash(persistent),
            hash(retained),
            "the retention policy is the StatefulSet's, not the nodes'"
        );
        assert_eq!(hash(a).len(), 16);
    }
}
