//! Node configuration: command-line flags with environment equivalents, parsed and
//! validated into a [`NodeConfig`] that the library takes as a plain value.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::cluster::{Consistency, Defaults};
use crate::store::entry::MAX_KEY_LEN;
use crate::store::{EvictionPolicy, StoreConfig};

/// The most partitions a cluster may have; partitions are the unit of movement.
pub const MAX_PARTITIONS: u32 = 65_536;

#[derive(Debug, Parser)]
#[command(
    name = "kache-node",
    version,
    about = "One kache cache node.",
    args_override_self = true
)]
pub struct Cli {
    /// Address of the client HTTP API.
    #[arg(long, env = "KACHE_HTTP_ADDR", default_value = "0.0.0.0:7070")]
    pub http_addr: SocketAddr,

    /// Address of the peer gRPC API (used once clustering is on).
    #[arg(long, env = "KACHE_GRPC_ADDR", default_value = "0.0.0.0:7071")]
    pub grpc_addr: SocketAddr,

    /// This node's name; defaults to the host name (the pod name in Kubernetes).
    #[arg(long, env = "KACHE_NODE_ID")]
    pub node_id: Option<String>,

    /// Number of partitions; fixed for the life of a cluster.
    #[arg(long, env = "KACHE_PARTITIONS", default_value_t = 271)]
    pub partitions: u32,

    /// Hard bound on stored bytes, e.g. 64MiB, 1GiB, 512Mi, 1000000.
    #[arg(long, env = "KACHE_MAX_MEMORY", default_value = "1GiB", value_parser = parse_bytes)]
    pub max_memory: usize,

    /// Longest accepted key, in bytes.
    #[arg(long, env = "KACHE_MAX_KEY_BYTES", default_value = "1024", value_parser = parse_bytes)]
    pub max_key_bytes: usize,

    /// Largest accepted value, in bytes.
    #[arg(long, env = "KACHE_MAX_VALUE_BYTES", default_value = "1MiB", value_parser = parse_bytes)]
    pub max_value_bytes: usize,

    /// Largest accepted batch request body, in bytes.
    #[arg(long, env = "KACHE_MAX_BATCH_BYTES", default_value = "16MiB", value_parser = parse_bytes)]
    pub max_batch_bytes: usize,

    /// What to do when memory is full: lru, lfu, or none (refuse writes with 507).
    #[arg(long, env = "KACHE_EVICTION", default_value = "lru")]
    pub eviction: EvictionPolicy,

    /// TTL for writes that do not set one, e.g. 30s, 5m, 1h; unset means no expiry.
    #[arg(long, env = "KACHE_DEFAULT_TTL", value_parser = parse_duration)]
    pub default_ttl: Option<Duration>,

    /// How long a deleted key's tombstone is kept, so replicas cannot resurrect it.
    #[arg(long, env = "KACHE_TOMBSTONE_TTL", default_value = "60s", value_parser = parse_duration)]
    pub tombstone_ttl: Duration,

    /// A member-list YAML file, watched for new epochs. Without it the node is a cluster
    /// of one.
    #[arg(long, env = "KACHE_MEMBERS_FILE")]
    pub members_file: Option<PathBuf>,

    /// How often replicas compare partition digests and repair differences; 0 turns it off.
    #[arg(long, env = "KACHE_ANTI_ENTROPY_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub anti_entropy_interval: Duration,

    /// Owners a read asks when the request does not say (one, quorum, all).
    #[arg(long, env = "KACHE_READ_CONSISTENCY", default_value = "quorum")]
    pub read_consistency: Consistency,

    /// Owners a write waits for when the request does not say (one, quorum, all).
    #[arg(long, env = "KACHE_WRITE_CONSISTENCY", default_value = "quorum")]
    pub write_consistency: Consistency,

    /// Threads serving requests; defaults to the CPUs available. Set it to the pod's CPU
    /// limit, since more threads than cores only adds context switches.
    #[arg(long, env = "KACHE_WORKER_THREADS")]
    pub worker_threads: Option<usize>,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = "KACHE_SHUTDOWN_GRACE", default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,
}

/// Everything a node needs, validated.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub grpc_addr: SocketAddr,
    pub members_file: Option<PathBuf>,
    pub consistency: Defaults,
    /// Zero: off.
    pub anti_entropy_interval: Duration,
    pub store: StoreConfig,
    pub limits: Limits,
    pub default_ttl: Option<Duration>,
    pub shutdown_grace: Duration,
    /// `None`: one per available CPU.
    pub worker_threads: Option<usize>,
}

/// Request limits enforced before anything reaches the store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_batch_bytes: usize,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--partitions must be between 1 and {MAX_PARTITIONS}, got {0}")]
    Partitions(u32),
    #[error("--max-key-bytes must be between 1 and {MAX_KEY_LEN}, got {0}")]
    MaxKeyBytes(usize),
    #[error("--max-value-bytes must be at least 1, got 0")]
    MaxValueBytes,
    #[error(
        "--max-memory ({max_memory} bytes) must be larger than --max-value-bytes ({max_value_bytes})"
    )]
    MemoryBelowValue {
        max_memory: usize,
        max_value_bytes: usize,
    },
    #[error("--max-batch-bytes must be at least 1 KiB, got {0}")]
    MaxBatchBytes(usize),
    #[error("--default-ttl must be at least 1s when set")]
    DefaultTtl,
    #[error("--worker-threads must be between 1 and 1024, got {0}")]
    WorkerThreads(usize),
    #[error("--node-id is required when the host name cannot be read")]
    NodeId,
}

impl Cli {
    pub fn into_config(self) -> Result<NodeConfig, ConfigError> {
        if !(1..=MAX_PARTITIONS).contains(&self.partitions) {
            return Err(ConfigError::Partitions(self.partitions));
        }
        if !(1..=MAX_KEY_LEN).contains(&self.max_key_bytes) {
            return Err(ConfigError::MaxKeyBytes(self.max_key_bytes));
        }
        if self.max_value_bytes == 0 {
            return Err(ConfigError::MaxValueBytes);
        }
        if self.max_memory <= self.max_value_bytes {
            return Err(ConfigError::MemoryBelowValue {
                max_memory: self.max_memory,
                max_value_bytes: self.max_value_bytes,
            });
        }
        if self.max_batch_bytes < 1024 {
            return Err(ConfigError::MaxBatchBytes(self.max_batch_bytes));
        }
        if self
            .default_ttl
            .is_some_and(|ttl| ttl < Duration::from_secs(1))
        {
            return Err(ConfigError::DefaultTtl);
        }
        if let Some(threads) = self.worker_threads.filter(|t| !(1..=1024).contains(t)) {
            return Err(ConfigError::WorkerThreads(threads));
        }
        let node_id = match self.node_id.filter(|id| !id.trim().is_empty()) {
            Some(id) => id,
            None => host_name().ok_or(ConfigError::NodeId)?,
        };
        Ok(NodeConfig {
            grpc_addr: self.grpc_addr,
            members_file: self.members_file,
            anti_entropy_interval: self.anti_entropy_interval,
            consistency: Defaults {
                read: self.read_consistency,
                write: self.write_consistency,
            },
            store: StoreConfig {
                node_id,
                partitions: self.partitions,
                max_memory: self.max_memory,
                eviction: self.eviction,
                tombstone_ttl: self.tombstone_ttl,
            },
            limits: Limits {
                max_key_bytes: self.max_key_bytes,
                max_value_bytes: self.max_value_bytes,
                max_batch_bytes: self.max_batch_bytes,
            },
            default_ttl: self.default_ttl,
            shutdown_grace: self.shutdown_grace,
            worker_threads: self.worker_threads,
        })
    }
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

/// Parses a byte size: a plain number, or one with a unit. Binary units (KiB, MiB,
/// GiB, and the Kubernetes forms Ki, Mi, Gi, and K, M, G) are powers of 1024; decimal
/// units (KB, MB, GB) are powers of 1000.
pub fn parse_bytes(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(format!(
            "'{text}' is not a byte size (e.g. 64MiB, 1GiB, 1048576)"
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is too large"))?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "ki" | "kib" => 1 << 10,
        "m" | "mi" | "mib" => 1 << 20,
        "g" | "gi" | "gib" => 1 << 30,
        "t" | "ti" | "tib" => 1 << 40,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        "tb" => 1_000_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit '{}' in '{text}' (use B, KiB, MiB, GiB, KB, MB or GB)",
                unit.trim()
            ));
        }
    };
    number
        .checked_mul(multiplier)
        .and_then(|bytes| usize::try_from(bytes).ok())
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Parses a duration: seconds as a plain number, or with a unit (ms, s, m, h, d).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 30s, 5m, 1h)"))?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{text}' (use ms, s, m, h or d)"
            ));
        }
    };
    number
        .checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("'{text}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<NodeConfig, String> {
        let mut argv = vec!["kache-node", "--node-id", "n1"];
        argv.extend_from_slice(args);
        let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
        cli.into_config().map_err(|e| e.to_string())
    }

    #[test]
    fn byte_sizes_accept_binary_decimal_and_kubernetes_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64MiB"), Ok(64 << 20));
        assert_eq!(parse_bytes("1GiB"), Ok(1 << 30));
        assert_eq!(parse_bytes("512Mi"), Ok(512 << 20));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert!(parse_bytes("64XB").is_err_and(|e| e.contains("unknown unit")));
        assert!(parse_bytes("MiB").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999999999999").is_err());
    }

    #[test]
    fn durations_accept_units() {
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("5 weeks").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn defaults_match_the_documentation() {
        let config = parse(&[]).expect("defaults are valid");
        assert_eq!(config.store.partitions, 271);
        assert_eq!(config.store.max_memory, 1 << 30);
        assert_eq!(config.store.eviction, EvictionPolicy::Lru);
        assert_eq!(config.limits.max_key_bytes, 1024);
        assert_eq!(config.limits.max_value_bytes, 1 << 20);
        assert_eq!(config.default_ttl, None);
        assert_eq!(config.grpc_addr.port(), 7071);
        assert_eq!(config.members_file, None);
        assert_eq!(config.consistency.read, Consistency::Quorum);
    }

    #[test]
    fn invalid_combinations_are_refused_with_the_flag_named() {
        let err = parse(&["--partitions", "0"]).expect_err("zero partitions");
        assert!(err.contains("--partitions"), "{err}");
        let err = parse(&["--max-memory", "1MiB", "--max-value-bytes", "2MiB"])
            .expect_err("value larger than memory");
        assert!(err.contains("--max-memory"), "{err}");
        let err = parse(&["--max-key-bytes", "70000"]).expect_err("key too long");
        assert!(err.contains("--max-key-bytes"), "{err}");
        let err = parse(&["--eviction", "random"]).expect_err("bad policy");
        assert!(err.contains("random"), "{err}");
        let err = parse(&["--default-ttl", "500ms"]).expect_err("sub-second ttl");
        assert!(err.contains("--default-ttl"), "{err}");
        let err = parse(&["--read-consistency", "most"]).expect_err("bad consistency");
        assert!(err.contains("most"), "{err}");
        let err = parse(&["--worker-threads", "0"]).expect_err("no threads");
        assert!(err.contains("--worker-threads"), "{err}");
    }
}
