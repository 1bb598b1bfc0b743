//! Node configuration: command-line flags with environment equivalents, parsed and
//! validated into a [`NodeConfig`] that the library takes as a plain value.
//!
//! The variables' names are [`kache_api::env`]'s, which the operator sets too, and sizes
//! and durations are read by [`kache_api::units`], which the operator checks its values
//! with; [`Cli::try_parse_from_env`] lets a test feed the node what the operator writes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{CommandFactory, FromArgMatches, Parser};
use kache_api::env;
pub use kache_api::logs::LogFormat;
pub use kache_api::units::{parse_bytes, parse_duration};
use kache_api::upstreams::{Upstream, UpstreamConfig, UpstreamsFile, validate_all};

use crate::cluster::discovery::DiscoveryConfig;
use crate::cluster::discovery::dns::DnsNames;
use crate::cluster::membership::{ListRules, MemberList, ReplicationFactor};
use crate::cluster::{Consistency, Defaults};
use crate::store::entry::MAX_KEY_LEN;
use crate::store::persist::{FsyncPolicy, PersistConfig};
use crate::store::{EvictionPolicy, RecordLimits, StoreConfig};

/// The most partitions a cluster may have: one per Redis Cluster hash slot (each partition
/// is a contiguous slot range). Partitions are the unit of movement.
pub const MAX_PARTITIONS: u32 = crate::store::slot::SLOTS as u32;

/// Where a pod finds its own namespace.
pub const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

#[derive(Debug, Parser)]
#[command(
    name = "kache-node",
    version,
    about = "One kache cache node.",
    args_override_self = true
)]
pub struct Cli {
    /// Address of the client HTTP API.
    #[arg(long, env = env::HTTP_ADDR, default_value = "0.0.0.0:7070")]
    pub http_addr: SocketAddr,

    /// Address of the peer gRPC API (used once clustering is on).
    #[arg(long, env = env::GRPC_ADDR, default_value = "0.0.0.0:7071")]
    pub grpc_addr: SocketAddr,

    /// Address of the RESP (Redis protocol) listener, or `off`.
    #[arg(long, env = env::RESP_ADDR, default_value = "0.0.0.0:6379", value_parser = parse_resp_addr)]
    pub resp_addr: RespAddr,

    /// This node's name; defaults to the host name (the pod name in Kubernetes).
    #[arg(long, env = env::NODE_ID)]
    pub node_id: Option<String>,

    /// Number of partitions; fixed for the life of a cluster.
    #[arg(long, env = env::PARTITIONS, default_value_t = 271)]
    pub partitions: u32,

    /// Hard bound on stored bytes, e.g. 64MiB, 1GiB, 512Mi, 1000000.
    #[arg(long, env = env::MAX_MEMORY, default_value = "1GiB", value_parser = parse_bytes)]
    pub max_memory: usize,

    /// Longest accepted key, in bytes.
    #[arg(long, env = env::MAX_KEY_BYTES, default_value = "1024", value_parser = parse_bytes)]
    pub max_key_bytes: usize,

    /// Largest accepted value, in bytes.
    #[arg(long, env = env::MAX_VALUE_BYTES, default_value = "1MiB", value_parser = parse_bytes)]
    pub max_value_bytes: usize,

    /// Largest accepted batch request body, in bytes.
    #[arg(long, env = env::MAX_BATCH_BYTES, default_value = "16MiB", value_parser = parse_bytes)]
    pub max_batch_bytes: usize,

    /// How long a client connection may take to send a request's headers, and how long
    /// an idle keep-alive connection stays open; a slower connection is closed.
    #[arg(long, env = env::HTTP_HEADER_TIMEOUT, default_value = "10s", value_parser = parse_duration)]
    pub http_header_timeout: Duration,

    /// Most client HTTP connections open at once; a connection over it is closed on accept.
    #[arg(long, env = env::MAX_CONNECTIONS, default_value_t = 10_000)]
    pub max_connections: usize,

    /// What to do when memory is full: lru, lfu, or none (refuse writes with 507).
    #[arg(long, env = env::EVICTION, default_value = "lru")]
    pub eviction: EvictionPolicy,

    /// TTL for writes that do not set one, e.g. 30s, 5m, 1h; unset means no expiry.
    #[arg(long, env = env::DEFAULT_TTL, value_parser = parse_duration)]
    pub default_ttl: Option<Duration>,

    /// How long a deleted key's tombstone is kept, so replicas cannot resurrect it.
    #[arg(long, env = env::TOMBSTONE_TTL, default_value = "60s", value_parser = parse_duration)]
    pub tombstone_ttl: Duration,

    /// How far ahead of this node's clock a version from a peer may be. Further ahead is
    /// refused (and counted); a node whose clock is that far from most of its peers stops
    /// accepting writes until it is back within the bound.
    #[arg(long, env = env::MAX_CLOCK_OFFSET, default_value = "500ms", value_parser = parse_duration)]
    pub max_clock_offset: Duration,

    /// A member-list YAML file, watched for new epochs. Without a membership source
    /// (this, --members or --members-configmap) the node is a cluster of one.
    #[arg(long, env = env::MEMBERS_FILE)]
    pub members_file: Option<PathBuf>,

    /// A static member list at epoch 1: `id=ip:port,...`, or ids alone with
    /// --discovery endpointslices or dns.
    #[arg(long, env = env::MEMBERS)]
    pub members: Option<String>,

    /// Replication factor of the --members list: a number or "all" (default 1). A member
    /// file or ConfigMap carries its own.
    #[arg(long, env = env::REPLICATION_FACTOR)]
    pub replication_factor: Option<ReplicationFactor>,

    /// A Kubernetes ConfigMap (key members.yaml) holding the member list, watched
    /// through the API (in-cluster config or KUBECONFIG).
    #[arg(long, env = env::MEMBERS_CONFIGMAP)]
    pub members_configmap: Option<String>,

    /// Namespace of the ConfigMap and the Service; defaults to the pod's own.
    #[arg(long, env = env::NAMESPACE)]
    pub namespace: Option<String>,

    /// How peer addresses are found: static (in the member list), endpointslices (of
    /// --service, through the API) or dns (<id>.<service>.<namespace>.svc.<domain>).
    #[arg(long, env = env::DISCOVERY, default_value = "static")]
    pub discovery: DiscoveryKind,

    /// The headless Service whose EndpointSlices or DNS names locate the members.
    #[arg(long, env = env::SERVICE)]
    pub service: Option<String>,

    /// Peer port of the members: for DNS, and for EndpointSlices without a `grpc` port.
    #[arg(long, env = env::PEER_PORT, default_value_t = 7071)]
    pub peer_port: u16,

    /// The cluster's DNS domain, for DNS discovery.
    #[arg(long, env = env::CLUSTER_DOMAIN, default_value = "cluster.local")]
    pub cluster_domain: String,

    /// How often replicas compare partition digests and repair differences; 0 turns it off.
    #[arg(long, env = env::ANTI_ENTROPY_INTERVAL, default_value = "10s", value_parser = parse_duration)]
    pub anti_entropy_interval: Duration,

    /// Owners a read asks when the request does not say (one, quorum, all).
    #[arg(long, env = env::READ_CONSISTENCY, default_value = "quorum")]
    pub read_consistency: Consistency,

    /// Owners a write waits for when the request does not say (one, quorum, all).
    #[arg(long, env = env::WRITE_CONSISTENCY, default_value = "quorum")]
    pub write_consistency: Consistency,

    /// Threads serving requests; defaults to the CPUs available. Set it to the pod's CPU
    /// limit, since more threads than cores only adds context switches.
    #[arg(long, env = env::WORKER_THREADS)]
    pub worker_threads: Option<usize>,

    /// How long in-flight requests may take to finish after SIGTERM.
    #[arg(long, env = env::SHUTDOWN_GRACE, default_value = "20s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// Keep an append-only log and snapshots in this directory and load them at start;
    /// unset or empty keeps nothing on disk. See docs/operations.md#persistence.
    #[arg(long, env = env::DATA_DIR)]
    pub data_dir: Option<PathBuf>,

    /// When logged writes reach the disk: always (before a write is acknowledged),
    /// everysec (at most about a second is lost to a crash) or no (the kernel decides).
    #[arg(long, env = env::FSYNC, default_value = "everysec")]
    pub fsync: FsyncPolicy,

    /// How often the node writes a snapshot of its data and drops the log before it.
    #[arg(long, env = env::SNAPSHOT_INTERVAL, default_value = "5m", value_parser = parse_duration)]
    pub snapshot_interval: Duration,

    /// The cluster this node's data belongs to (the CacheCluster's UID in Kubernetes),
    /// recorded in --data-dir: data of another cluster is never loaded.
    #[arg(long, env = env::CLUSTER_ID, default_value = "")]
    pub cluster_id: String,

    /// Mutual TLS on the peer port: a directory with ca.crt and this node's certificate
    /// and key (<node-id>.crt/.key, else tls.crt/tls.key), re-read every 5 s. Peers must
    /// present a certificate of the CA naming kache://<cluster-id>/<member>. Unset:
    /// plaintext, for local development only. See docs/security.md.
    #[arg(long, env = env::PEER_TLS_DIR)]
    pub peer_tls_dir: Option<PathBuf>,

    /// TLS on the HTTP and RESP ports: a directory with the node's certificate and key
    /// (same names as --peer-tls-dir; no client certificates), re-read every 5 s. Unset:
    /// plaintext.
    #[arg(long, env = env::CLIENT_TLS_DIR)]
    pub client_tls_dir: Option<PathBuf>,
    /// Client tokens: `<dir>/<role>/<secret>/<user>` files (role read, readwrite or
    /// admin), re-read every 5s. Set: HTTP and RESP clients must authenticate, even while
    /// it holds no token. Unset or empty: no authentication. See docs/security.md.
    #[arg(long, env = env::AUTH_DIR)]
    pub auth_dir: Option<PathBuf>,

    /// How log lines are written: text, or json (one object a line, the request id in
    /// `span.request_id`). Which lines: RUST_LOG (default info).
    #[arg(long, env = env::LOG_FORMAT, default_value = "text")]
    pub log_format: LogFormat,

    /// Read-through upstreams: a YAML file of `upstreams: [...]`, the objects of a
    /// CacheCluster's spec.upstreams (docs/readthrough.md). Unset or empty: none.
    #[arg(long, env = env::UPSTREAMS_FILE)]
    pub upstreams_file: Option<PathBuf>,

    /// A read-through upstream with every default, as NAME=URL (repeatable), served at
    /// /v1/upstreams/NAME/...
    #[arg(long = "upstream", value_name = "NAME=URL")]
    pub upstream: Vec<String>,
}

/// How members' peer addresses are found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiscoveryKind {
    Static,
    EndpointSlices,
    Dns,
}

impl FromStr for DiscoveryKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "static" => Ok(Self::Static),
            "endpointslices" => Ok(Self::EndpointSlices),
            "dns" => Ok(Self::Dns),
            other => Err(format!(
                "unknown discovery '{other}' (expected static, endpointslices or dns)"
            )),
        }
    }
}

impl DiscoveryKind {
    fn flag_value(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::EndpointSlices => "endpointslices",
            Self::Dns => "dns",
        }
    }
}

/// Where the member list comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MembershipConfig {
    /// No source: a cluster of one.
    Single,
    /// A watched YAML file.
    File(PathBuf),
    /// The `--members` list, fixed at epoch 1.
    Static(MemberList),
    /// A watched ConfigMap.
    ConfigMap { namespace: String, name: String },
}

impl MembershipConfig {
    /// Whether the node is a cluster member (not a cluster of one).
    pub fn is_cluster(&self) -> bool {
        !matches!(self, Self::Single)
    }
}

/// Everything a node needs, validated.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub grpc_addr: SocketAddr,
    /// None: no RESP listener (`--resp-addr off`).
    pub resp_addr: Option<SocketAddr>,
    pub membership: MembershipConfig,
    pub discovery: DiscoveryConfig,
    pub consistency: Defaults,
    /// Zero: off.
    pub anti_entropy_interval: Duration,
    pub store: StoreConfig,
    pub limits: Limits,
    pub default_ttl: Option<Duration>,
    pub shutdown_grace: Duration,
    /// `None`: one per available CPU.
    pub worker_threads: Option<usize>,
    /// `None`: nothing on disk (`--data-dir` unset).
    pub persistence: Option<PersistConfig>,
    pub tls: TlsConfig,
    /// `None`: client authentication off (`--auth-dir` unset or empty).
    pub auth_dir: Option<PathBuf>,
    /// Read-through upstreams (`--upstreams-file`, `--upstream`), names unique.
    pub upstreams: Vec<UpstreamConfig>,
}

/// Where the node's certificates are, and the cluster its peers must belong to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// `--peer-tls-dir`; `None`: a plaintext peer port.
    pub peer_dir: Option<PathBuf>,
    /// `--client-tls-dir`; `None`: plaintext HTTP and RESP.
    pub client_dir: Option<PathBuf>,
    /// `--cluster-id`; empty: peers of any cluster id (local runs).
    pub cluster_id: String,
}

/// `--resp-addr`: a socket address, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespAddr(pub Option<SocketAddr>);

fn parse_resp_addr(text: &str) -> Result<RespAddr, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(RespAddr(None));
    }
    text.parse()
        .map(|addr| RespAddr(Some(addr)))
        .map_err(|_| format!("expected an address such as 0.0.0.0:6379, or off; got '{text}'"))
}

/// Request and connection limits enforced before anything reaches the store.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_key_bytes: usize,
    pub max_value_bytes: usize,
    pub max_batch_bytes: usize,
    /// Longest wait for a request's headers, an idle keep-alive included.
    pub header_timeout: Duration,
    pub max_connections: usize,
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
    #[error("--http-header-timeout must be at least 1ms")]
    HeaderTimeout,
    #[error("--max-connections must be at least 1")]
    MaxConnections,
    #[error("--default-ttl must be at least 1s when set")]
    DefaultTtl,
    #[error("--worker-threads must be between 1 and 1024, got {0}")]
    WorkerThreads(usize),
    #[error("--node-id is required when the host name cannot be read")]
    NodeId,
    #[error("give one membership source, not several: {0}")]
    MembershipSources(String),
    #[error("--members: {0}")]
    Members(String),
    #[error(
        "--replication-factor applies to --members only; a member file or ConfigMap sets its own"
    )]
    ReplicationFactorWithoutMembers,
    #[error(
        "--discovery {0} needs a member list (--members-file, --members or --members-configmap)"
    )]
    DiscoveryWithoutMembers(&'static str),
    #[error("--discovery {0} needs --service (the headless Service of the members)")]
    Service(&'static str),
    #[error("--peer-port must be between 1 and 65535")]
    PeerPort,
    #[error("--namespace is required for {0}: {POD_NAMESPACE_FILE} cannot be read (not in a pod?)")]
    Namespace(&'static str),
    #[error("--snapshot-interval must be at least 1s, got {0:?}")]
    SnapshotInterval(Duration),
    #[error("--upstreams-file {path}: {problem}")]
    UpstreamsFile { path: String, problem: String },
    #[error("read-through upstreams: {0}")]
    Upstream(String),
}

impl Cli {
    /// Parses `vars` as if they were the whole process environment and no flag were
    /// given, without reading or changing the real environment. A variable the node does
    /// not read is ignored, as it would be in a pod. This is how a test checks what the
    /// operator puts in a pod's environment against the real flag parser.
    pub fn try_parse_from_env<K, V>(
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Result<Self, clap::Error>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        // Each variable becomes its flag, so clap applies the same value parser;
        // clearing the env bindings keeps the process environment out.
        let mut argv = vec!["kache-node".to_owned()];
        let command = Self::command();
        for (name, value) in vars {
            let flag = command
                .get_arguments()
                .find(|arg| arg.get_env().is_some_and(|env| env == name.as_ref()))
                .and_then(|arg| arg.get_long());
            if let Some(long) = flag {
                argv.push(format!("--{long}={}", value.as_ref()));
            }
        }
        let mut matches = command
            .mut_args(|arg| arg.env(None))
            .try_get_matches_from(argv)?;
        Self::from_arg_matches_mut(&mut matches)
    }

    /// The environment variables the flags read.
    pub fn env_names() -> Vec<String> {
        Self::command()
            .get_arguments()
            .filter_map(|arg| arg.get_env())
            .map(|name| name.to_string_lossy().into_owned())
            .collect()
    }

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
        if self.http_header_timeout < Duration::from_millis(1) {
            return Err(ConfigError::HeaderTimeout);
        }
        if self.max_connections == 0 {
            return Err(ConfigError::MaxConnections);
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
        if self.snapshot_interval < Duration::from_secs(1) {
            return Err(ConfigError::SnapshotInterval(self.snapshot_interval));
        }
        let node_id = match self.node_id.clone().filter(|id| !id.trim().is_empty()) {
            Some(id) => id,
            None => host_name().ok_or(ConfigError::NodeId)?,
        };
        let discovery = self.discovery_config(|| read_namespace(Path::new(POD_NAMESPACE_FILE)))?;
        let membership =
            self.membership_config(&discovery, || read_namespace(Path::new(POD_NAMESPACE_FILE)))?;
        let persistence = self
            .data_dir
            .clone()
            .filter(|dir| !dir.as_os_str().is_empty())
            .map(|dir| PersistConfig {
                dir,
                fsync: self.fsync,
                snapshot_interval: self.snapshot_interval,
                cluster_id: self.cluster_id.clone(),
                member: node_id.clone(),
            });
        let upstreams = self.upstreams()?;
        let dir = |dir: &Option<PathBuf>| dir.clone().filter(|d| !d.as_os_str().is_empty());
        let tls = TlsConfig {
            peer_dir: dir(&self.peer_tls_dir),
            client_dir: dir(&self.client_tls_dir),
            cluster_id: self.cluster_id.clone(),
        };
        Ok(NodeConfig {
            grpc_addr: self.grpc_addr,
            resp_addr: self.resp_addr.0,
            membership,
            discovery,
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
                limits: RecordLimits {
                    max_key_bytes: self.max_key_bytes,
                    max_value_bytes: self.max_value_bytes,
                    tombstone_ttl: self.tombstone_ttl,
                    max_clock_offset: self.max_clock_offset,
                },
            },
            limits: Limits {
                max_key_bytes: self.max_key_bytes,
                max_value_bytes: self.max_value_bytes,
                max_batch_bytes: self.max_batch_bytes,
                header_timeout: self.http_header_timeout,
                max_connections: self.max_connections,
            },
            default_ttl: self.default_ttl,
            shutdown_grace: self.shutdown_grace,
            worker_threads: self.worker_threads,
            persistence,
            tls,
            auth_dir: self.auth_dir.filter(|dir| !dir.as_os_str().is_empty()),
            upstreams,
        })
    }

    /// The upstreams of `--upstreams-file` and then `--upstream`, validated together.
    fn upstreams(&self) -> Result<Vec<UpstreamConfig>, ConfigError> {
        let mut upstreams = Vec::new();
        if let Some(path) = self
            .upstreams_file
            .as_ref()
            .filter(|p| !p.as_os_str().is_empty())
        {
            let problem = |problem: String| ConfigError::UpstreamsFile {
                path: path.display().to_string(),
                problem,
            };
            let text = std::fs::read_to_string(path).map_err(|error| problem(error.to_string()))?;
            let file: UpstreamsFile =
                serde_yaml::from_str(&text).map_err(|error| problem(error.to_string()))?;
            upstreams = file.upstreams;
        }
        for flag in &self.upstream {
            let (name, url) = flag
                .split_once('=')
                .ok_or_else(|| ConfigError::Upstream(format!("expected NAME=URL, got '{flag}'")))?;
            upstreams.push(Upstream::with_defaults(name, url));
        }
        validate_all(&upstreams).map_err(|error| ConfigError::Upstream(error.to_string()))
    }
}

impl Cli {
    /// Discovery as configured. `pod_namespace` is asked only when a namespace is needed
    /// and --namespace is not given.
    fn discovery_config(
        &self,
        pod_namespace: impl FnOnce() -> Option<String>,
    ) -> Result<DiscoveryConfig, ConfigError> {
        let kind = self.discovery.flag_value();
        if self.discovery != DiscoveryKind::Static {
            if self.members_file.is_none()
                && self.members.is_none()
                && self.members_configmap.is_none()
            {
                return Err(ConfigError::DiscoveryWithoutMembers(kind));
            }
            if self.peer_port == 0 {
                return Err(ConfigError::PeerPort);
            }
        }
        let service = || {
            self.service
                .clone()
                .filter(|s| !s.trim().is_empty())
                .ok_or(ConfigError::Service(kind))
        };
        let namespace = || {
            self.namespace
                .clone()
                .filter(|ns| !ns.trim().is_empty())
                .or_else(pod_namespace)
                .ok_or(ConfigError::Namespace("--discovery endpointslices or dns"))
        };
        Ok(match self.discovery {
            DiscoveryKind::Static => DiscoveryConfig::Static,
            DiscoveryKind::EndpointSlices => DiscoveryConfig::EndpointSlices {
                service: service()?,
                namespace: namespace()?,
                peer_port: self.peer_port,
            },
            DiscoveryKind::Dns => DiscoveryConfig::Dns(DnsNames {
                service: service()?,
                namespace: namespace()?,
                cluster_domain: self.cluster_domain.clone(),
                port: self.peer_port,
            }),
        })
    }

    /// The membership source: at most one of --members-file, --members and
    /// --members-configmap.
    fn membership_config(
        &self,
        discovery: &DiscoveryConfig,
        pod_namespace: impl FnOnce() -> Option<String>,
    ) -> Result<MembershipConfig, ConfigError> {
        let given: Vec<&str> = [
            ("--members-file", self.members_file.is_some()),
            ("--members", self.members.is_some()),
            ("--members-configmap", self.members_configmap.is_some()),
        ]
        .into_iter()
        .filter_map(|(flag, set)| set.then_some(flag))
        .collect();
        if given.len() > 1 {
            return Err(ConfigError::MembershipSources(given.join(" and ")));
        }
        if self.replication_factor.is_some() && self.members.is_none() {
            return Err(ConfigError::ReplicationFactorWithoutMembers);
        }
        let rules = ListRules {
            partitions: self.partitions,
            addresses_required: discovery.is_static(),
        };
        if let Some(path) = &self.members_file {
            return Ok(MembershipConfig::File(path.clone()));
        }
        if let Some(members) = &self.members {
            let replication_factor = self
                .replication_factor
                .unwrap_or(ReplicationFactor::Count(1));
            let list = MemberList::from_flag(members, replication_factor, &rules)
                .map_err(|err| ConfigError::Members(err.to_string()))?;
            return Ok(MembershipConfig::Static(list));
        }
        if let Some(name) = self.members_configmap.clone() {
            let namespace = match self.namespace.clone().filter(|ns| !ns.trim().is_empty()) {
                Some(namespace) => namespace,
                None => pod_namespace().ok_or(ConfigError::Namespace("--members-configmap"))?,
            };
            return Ok(MembershipConfig::ConfigMap { namespace, name });
        }
        Ok(MembershipConfig::Single)
    }
}

impl NodeConfig {
    /// What a member list must satisfy on this node.
    pub fn list_rules(&self) -> ListRules {
        ListRules {
            partitions: self.store.partitions,
            addresses_required: self.discovery.is_static(),
        }
    }
}

/// The namespace in a pod's service-account mount, if there is one.
fn read_namespace(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|ns| ns.trim().to_owned())
        .filter(|ns| !ns.is_empty())
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests;
