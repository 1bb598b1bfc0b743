//! The environment contract: the `KACHE_*` variables a node reads, one per command-line
//! flag (`--max-memory` is [`MAX_MEMORY`]).
//!
//! The node's flag parser names its variables with these constants, and the operator
//! sets them on the StatefulSet with the same constants (most through the `<name>-config`
//! ConfigMap, the pod's own name and namespace through the downward API). A name that
//! exists on one side only therefore does not compile, and `operator/tests/node_contract.rs`
//! checks that the values the operator writes are ones the node parses.

pub const HTTP_ADDR: &str = "KACHE_HTTP_ADDR";
pub const GRPC_ADDR: &str = "KACHE_GRPC_ADDR";
/// A socket address, or `off` for no RESP listener.
pub const RESP_ADDR: &str = "KACHE_RESP_ADDR";
pub const NODE_ID: &str = "KACHE_NODE_ID";
pub const PARTITIONS: &str = "KACHE_PARTITIONS";
/// A byte size, as [`crate::units::parse_bytes`] reads it.
pub const MAX_MEMORY: &str = "KACHE_MAX_MEMORY";
pub const MAX_KEY_BYTES: &str = "KACHE_MAX_KEY_BYTES";
pub const MAX_VALUE_BYTES: &str = "KACHE_MAX_VALUE_BYTES";
pub const MAX_BATCH_BYTES: &str = "KACHE_MAX_BATCH_BYTES";
/// A duration: the longest wait for a request's headers (an idle keep-alive included).
pub const HTTP_HEADER_TIMEOUT: &str = "KACHE_HTTP_HEADER_TIMEOUT";
pub const MAX_CONNECTIONS: &str = "KACHE_MAX_CONNECTIONS";
pub const EVICTION: &str = "KACHE_EVICTION";
/// A duration, as [`crate::units::parse_duration`] reads it.
pub const DEFAULT_TTL: &str = "KACHE_DEFAULT_TTL";
pub const TOMBSTONE_TTL: &str = "KACHE_TOMBSTONE_TTL";
/// A duration: how far ahead of a node's clock a peer's version may be.
pub const MAX_CLOCK_OFFSET: &str = "KACHE_MAX_CLOCK_OFFSET";
pub const MEMBERS_FILE: &str = "KACHE_MEMBERS_FILE";
pub const MEMBERS: &str = "KACHE_MEMBERS";
pub const REPLICATION_FACTOR: &str = "KACHE_REPLICATION_FACTOR";
pub const MEMBERS_CONFIGMAP: &str = "KACHE_MEMBERS_CONFIGMAP";
pub const NAMESPACE: &str = "KACHE_NAMESPACE";
pub const DISCOVERY: &str = "KACHE_DISCOVERY";
pub const SERVICE: &str = "KACHE_SERVICE";
pub const PEER_PORT: &str = "KACHE_PEER_PORT";
pub const CLUSTER_DOMAIN: &str = "KACHE_CLUSTER_DOMAIN";
pub const ANTI_ENTROPY_INTERVAL: &str = "KACHE_ANTI_ENTROPY_INTERVAL";
pub const READ_CONSISTENCY: &str = "KACHE_READ_CONSISTENCY";
pub const WRITE_CONSISTENCY: &str = "KACHE_WRITE_CONSISTENCY";
pub const WORKER_THREADS: &str = "KACHE_WORKER_THREADS";
pub const SHUTDOWN_GRACE: &str = "KACHE_SHUTDOWN_GRACE";
/// A directory for the append-only log and snapshots; unset or empty keeps nothing on disk.
pub const DATA_DIR: &str = "KACHE_DATA_DIR";
/// When the log reaches the disk: `always` (before a write is acknowledged), `everysec`
/// or `no` (when the kernel flushes).
pub const FSYNC: &str = "KACHE_FSYNC";
/// A duration: how often the node writes a snapshot and compacts its log.
pub const SNAPSHOT_INTERVAL: &str = "KACHE_SNAPSHOT_INTERVAL";
/// The cluster's identity (the CacheCluster's UID), recorded in the data dir so a volume
/// of another cluster is never loaded.
pub const CLUSTER_ID: &str = "KACHE_CLUSTER_ID";
/// A directory (a mounted Secret) with `ca.crt` and this node's certificate and key
/// (`<node-id>.crt`/`.key`, else `tls.crt`/`tls.key`): the peer port serves mutual TLS
/// only. Unset or empty: plaintext.
pub const PEER_TLS_DIR: &str = "KACHE_PEER_TLS_DIR";
/// A directory with the same file names (`ca.crt` not needed): the HTTP and RESP ports
/// serve TLS only. Unset or empty: plaintext.
pub const CLIENT_TLS_DIR: &str = "KACHE_CLIENT_TLS_DIR";
/// A file (`upstreams.yaml`, [`crate::upstreams::UpstreamsFile`]): the HTTP APIs this
/// node reads through (`/v1/upstreams/{name}/...`). Unset or empty: none.
pub const UPSTREAMS_FILE: &str = "KACHE_UPSTREAMS_FILE";
/// A directory of client tokens, `<dir>/<role>/<secret>/<user>` (role `read`, `readwrite`
/// or `admin`; each file's content is the user's token). Set: client authentication is
/// on. Unset or empty: off.
pub const AUTH_DIR: &str = "KACHE_AUTH_DIR";
/// How log lines are written: `text` (the default) or `json`, one object a line
/// ([`crate::logs::LogFormat`]).
pub const LOG_FORMAT: &str = "KACHE_LOG_FORMAT";

/// Which log lines are written: a tracing `EnvFilter` directive list such as `info` or
/// `info,kache_node=debug`. Not a `KACHE_*` flag: the standard variable the tracing
/// ecosystem reads, set by the operator from `spec.logging.level`.
pub const LOG_FILTER: &str = "RUST_LOG";

/// Every variable above; the node's tests check that its flags read exactly these.
pub const ALL: [&str; 38] = [
    HTTP_ADDR,
    GRPC_ADDR,
    RESP_ADDR,
    NODE_ID,
    PARTITIONS,
    MAX_MEMORY,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    MAX_BATCH_BYTES,
    HTTP_HEADER_TIMEOUT,
    MAX_CONNECTIONS,
    EVICTION,
    DEFAULT_TTL,
    TOMBSTONE_TTL,
    MAX_CLOCK_OFFSET,
    MEMBERS_FILE,
    MEMBERS,
    REPLICATION_FACTOR,
    MEMBERS_CONFIGMAP,
    NAMESPACE,
    DISCOVERY,
    SERVICE,
    PEER_PORT,
    CLUSTER_DOMAIN,
    ANTI_ENTROPY_INTERVAL,
    READ_CONSISTENCY,
    WRITE_CONSISTENCY,
    WORKER_THREADS,
    SHUTDOWN_GRACE,
    DATA_DIR,
    FSYNC,
    SNAPSHOT_INTERVAL,
    CLUSTER_ID,
    PEER_TLS_DIR,
    CLIENT_TLS_DIR,
    AUTH_DIR,
    LOG_FORMAT,
    UPSTREAMS_FILE,
];

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn every_name_is_distinct_and_namespaced() {
        let distinct: HashSet<&str> = ALL.into_iter().collect();
        assert_eq!(distinct.len(), ALL.len(), "a name listed twice");
        for name in ALL {
            assert!(
                name.starts_with("KACHE_")
                    && name[6..]
                        .chars()
                        .all(|c| c.is_ascii_uppercase() || c == '_'),
                "{name}"
            );
        }
    }
}
