//! Operational endpoints: stats, Prometheus metrics (OpenMetrics), health, readiness and the OpenAPI
//! document.

use crate::upstream::{ReadThrough, ReadThroughStats};
use axum::Json;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::error::AppError;
use crate::auth::Auth;
use crate::cluster::ClusterReport;
use crate::lifecycle::Phase;
use crate::metrics::{Sample, SampleValue, Samples};
use crate::store::StoreStats;
use crate::store::persist::PersistReport;

const OPENAPI: &str = include_str!("openapi.json");

#[derive(Debug, Serialize)]
pub struct StatsBody {
    node_id: String,
    uptime_seconds: u64,
    /// Resident set size of the process, from /proc (absent where /proc is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    resident_memory_bytes: Option<u64>,
    #[serde(flatten)]
    store: StoreStats,
    /// The data dir's state and counters, with `--data-dir`.
    #[serde(skip_serializing_if = "Option::is_none")]
    persistence: Option<PersistReport>,
    /// Read-through answers by upstream and the hit ratio, with upstreams configured.
    #[serde(skip_serializing_if = "Option::is_none")]
    read_through: Option<ReadThroughStats>,
}

pub async fn stats(State(state): State<AppState>) -> Json<StatsBody> {
    Json(StatsBody {
        node_id: state.store().config().node_id.clone(),
        uptime_seconds: state.uptime().as_secs(),
        resident_memory_bytes: resident_memory_bytes(),
        store: state.store().stats(),
        persistence: state.persistence().map(|p| p.report()),
        read_through: state
            .read_through()
            .filter(|rt| rt.upstreams().next().is_some())
            .map(ReadThrough::stats),
    })
}

/// `/metrics`: the node's metrics in the OpenMetrics text format (see [`crate::metrics`]):
/// the families observed on the request paths, then those read here from the node's
/// counters.
pub async fn metrics(State(state): State<AppState>) -> Response {
    let stats = state.store().stats();
    let mut samples: Vec<Sample> = store_samples(&stats)
        .into_iter()
        .chain(node_samples(&state))
        .chain(auth_samples(state.auth()))
        .map(sample)
        .collect();
    samples.extend(cluster_samples(&state, &stats));
    samples.push(auth_refusals(state.auth()));
    let body = state.metrics().encode(Samples(samples));
    ([(CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

/// One family of a single unlabelled integer sample, as [`Reading`] says.
fn sample((name, kind, help, value): Reading) -> Sample {
    let value = match kind {
        "counter" => SampleValue::Counter(value),
        _ => SampleValue::Gauge(value),
    };
    Sample::one(name, help, value)
}

/// What the node holds of the cluster, and how it compares with its peers: the ratio of
/// hits, members, partitions owned, the move in progress, the clock.
fn cluster_samples(state: &AppState, stats: &StoreStats) -> Vec<Sample> {
    let reads = stats.hits + stats.misses;
    let hit_ratio = if reads == 0 {
        0.0
    } else {
        stats.hits as f64 / reads as f64
    };
    let routing = state.cluster.routing();
    let view = &routing.next;
    let primary = view.self_index.map_or(0, |me| {
        (0..view.list.partitions)
            .filter(|&p| view.placement.owners(p).first() == Some(&me))
            .count()
    });
    let progress = state.cluster.move_progress();
    let pending = if routing.moving() {
        progress
            .partitions_total
            .saturating_sub(progress.partitions_done)
    } else {
        0
    };
    let clock = state.cluster.clock_report();
    let seconds = |ms: f64| ms / 1000.0;
    vec![
        Sample::one(
            "kache_hit_ratio",
            "Reads that found a live key, of all reads since the start (0 before any).",
            SampleValue::GaugeF64(hit_ratio),
        ),
        Sample::one(
            "kache_members",
            "Members in the member list in force.",
            SampleValue::Gauge(view.list.members.len() as u64),
        ),
        Sample::one(
            "kache_partitions_owned",
            "Partitions this node is the primary (first-ranked) owner of in the list in force.",
            SampleValue::Gauge(primary as u64),
        ),
        Sample::one(
            "kache_rebalance_partitions_pending",
            "Partitions this node still has to pull in the membership move in progress (0 when none is).",
            SampleValue::Gauge(pending as u64),
        ),
        Sample::one(
            "kache_clock_offset_seconds",
            "This node's clock minus its peers' (median, seconds; positive: ahead).",
            SampleValue::GaugeF64(seconds(clock.offset_ms as f64)),
        ),
        Sample::one(
            "kache_clock_max_offset_seconds",
            "The bound on the clock offset (--max-clock-offset): past it the node takes no writes.",
            SampleValue::GaugeF64(seconds(clock.max_offset_ms as f64)),
        ),
    ]
}

/// One family with a single unlabelled integer sample: its name as exposed, type
/// ("counter" or "gauge"), help and value.
type Reading = (&'static str, &'static str, &'static str, u64);

/// The store's counters and gauges.
fn store_samples(stats: &StoreStats) -> [Reading; 10] {
    [
        (
            "kache_keys",
            "gauge",
            "Keys held, including expired keys not yet swept.",
            stats.keys,
        ),
        (
            "kache_tombstones",
            "gauge",
            "Tombstones of deleted keys still in their grace period.",
            stats.tombstones,
        ),
        (
            "kache_memory_used_bytes",
            "gauge",
            "Bytes charged against max memory: entries and migration buffers.",
            stats.bytes,
        ),
        (
            "kache_memory_buffer_bytes",
            "gauge",
            "Of the charged bytes, those held by partition chunks in flight (streams, pulls, hand-offs).",
            stats.buffer_bytes,
        ),
        (
            "kache_memory_max_bytes",
            "gauge",
            "The max memory bound.",
            stats.max_memory,
        ),
        (
            "kache_partitions",
            "gauge",
            "Number of partitions.",
            stats.partitions,
        ),
        (
            "kache_hits_total",
            "counter",
            "Reads that found a live key.",
            stats.hits,
        ),
        (
            "kache_misses_total",
            "counter",
            "Reads that found no live key.",
            stats.misses,
        ),
        (
            "kache_evictions_total",
            "counter",
            "Keys evicted to stay under max memory.",
            stats.evictions,
        ),
        (
            "kache_expirations_total",
            "counter",
            "Keys removed because their TTL passed.",
            stats.expirations,
        ),
    ]
}

/// The node's lifecycle, cluster sync counters, connections, clock and process memory.
fn node_samples(state: &AppState) -> Vec<Reading> {
    let sync = state.cluster.sync_report();
    let mut samples = vec![
        (
            "kache_ready",
            "gauge",
            "1 when the node accepts traffic.",
            u64::from(state.phase() == Phase::Ready),
        ),
        (
            "kache_cluster_epoch",
            "gauge",
            "Membership epoch in force.",
            state.cluster.view().epoch(),
        ),
        (
            "kache_anti_entropy_rounds_total",
            "counter",
            "Anti-entropy rounds completed.",
            sync.anti_entropy_rounds,
        ),
        (
            "kache_records_repaired_total",
            "counter",
            "Records pulled from peers that were newer than the local copy.",
            sync.records_repaired,
        ),
        (
            "kache_records_pulled_total",
            "counter",
            "Records streamed from peers (moves, startup sync, repair).",
            sync.records_pulled,
        ),
        (
            "kache_bytes_pulled_total",
            "counter",
            "Key and value bytes streamed from peers.",
            sync.bytes_pulled,
        ),
        (
            "kache_sync_failures_total",
            "counter",
            "Digest or stream exchanges with peers that failed.",
            sync.failures,
        ),
    ];
    samples.extend(connection_and_clock_samples(state));
    if let Some(persistence) = state.persistence() {
        samples.extend(persistence_samples(&persistence.report()));
    }
    if let Some(rss) = resident_memory_bytes() {
        samples.push((
            "process_resident_memory_bytes",
            "gauge",
            "Resident memory size in bytes.",
            rss,
        ));
    }
    samples
}

/// The data dir (`--data-dir`): the log, snapshots, and what the start found.
fn persistence_samples(report: &PersistReport) -> [Reading; 13] {
    [
        (
            "kache_persist_log_bytes_total",
            "counter",
            "Bytes written to the append-only log.",
            report.log_bytes,
        ),
        (
            "kache_persist_fsyncs_total",
            "counter",
            "Syncs of the append-only log.",
            report.fsyncs,
        ),
        (
            "kache_persist_log_failures_total",
            "counter",
            "Log writes or syncs that failed (a full disk); writes are refused until one succeeds.",
            report.log_failures,
        ),
        (
            "kache_persist_failing",
            "gauge",
            "1 while the data dir refuses writes.",
            u64::from(report.failure.is_some()),
        ),
        (
            "kache_persist_snapshots_total",
            "counter",
            "Snapshots written.",
            report.snapshots,
        ),
        (
            "kache_persist_snapshot_failures_total",
            "counter",
            "Snapshots that failed.",
            report.snapshot_failures,
        ),
        (
            "kache_persist_snapshot_bytes",
            "gauge",
            "Size of the last snapshot.",
            report.snapshot_bytes,
        ),
        (
            "kache_persist_generation",
            "gauge",
            "Generation of the log being written.",
            report.generation,
        ),
        (
            "kache_persist_records_loaded",
            "gauge",
            "Records loaded from the data dir at start.",
            report.records_loaded,
        ),
        (
            "kache_persist_load_milliseconds",
            "gauge",
            "How long loading the data dir took at start.",
            report.load_ms,
        ),
        (
            "kache_persist_torn_tails_total",
            "counter",
            "Logs found ending in a torn or corrupt write at start, truncated there.",
            report.torn_tails,
        ),
        (
            "kache_persist_corrupt_snapshots_total",
            "counter",
            "Snapshots found corrupt at start and set aside (not loaded).",
            report.corrupt_snapshots,
        ),
        (
            "kache_persist_discarded_total",
            "counter",
            "Data dirs discarded at start: another cluster or member, or a member that had left.",
            report.discarded,
        ),
    ]
}

/// Client HTTP connections and how this node's clock compares with its peers'.
fn connection_and_clock_samples(state: &AppState) -> Vec<Reading> {
    let mut samples = Vec::new();
    let connections = state.connections();
    samples.extend([
        (
            "kache_http_connections",
            "gauge",
            "Client HTTP connections open.",
            connections.open(),
        ),
        (
            "kache_http_connections_refused_total",
            "counter",
            "Client HTTP connections closed on accept because --max-connections were open.",
            connections.refused(),
        ),
        (
            "kache_http_header_timeouts_total",
            "counter",
            "Client HTTP connections closed for sending no complete request head within --http-header-timeout (idle keep-alives included).",
            connections.header_timeouts(),
        ),
    ]);
    let clock = state.cluster.clock_report();
    samples.extend([
        (
            "kache_clock_in_bounds",
            "gauge",
            "1 while this node's clock is within --max-clock-offset of most peers' (writes are refused otherwise).",
            u64::from(clock.in_bounds),
        ),
        (
            "kache_clock_offset_abs_ms",
            "gauge",
            "How far this node's clock is from its peers' (median, milliseconds, either direction).",
            clock.offset_ms.unsigned_abs(),
        ),
        (
            "kache_clock_refused_versions_total",
            "counter",
            "Versions from peers refused for being further ahead than --max-clock-offset.",
            clock.refused_versions,
        ),
    ]);
    samples
}

/// Client authentication: whether it is on, the users it knows, failed re-reads.
fn auth_samples(auth: &Auth) -> [Reading; 3] {
    [
        (
            "kache_auth_enabled",
            "gauge",
            "1 when clients must authenticate (--auth-dir is set).",
            u64::from(auth.is_on()),
        ),
        (
            "kache_auth_users",
            "gauge",
            "Users (tokens) in the table read from --auth-dir.",
            auth.users(),
        ),
        (
            "kache_auth_reload_failures_total",
            "counter",
            "Reads of --auth-dir that failed; the tokens read before stayed in force.",
            auth.reload_failures(),
        ),
    ]
}

/// What client authentication refused, by protocol and reason.
fn auth_refusals(auth: &Auth) -> Sample {
    Sample {
        name: "kache_auth_refused_total",
        help: "Client requests refused for want of a valid token (unauthenticated: HTTP 401, \
               RESP NOAUTH or WRONGPASS) or of a high enough role (forbidden: HTTP 403, RESP NOPERM).",
        series: auth
            .refused()
            .map(|(protocol, reason, count)| {
                (
                    vec![("protocol", protocol), ("reason", reason)],
                    SampleValue::Counter(count),
                )
            })
            .collect(),
    }
}

/// This node's view of the cluster: epoch, members, what it owns, and the certificates
/// it serves.
pub async fn cluster(State(state): State<AppState>) -> Json<ClusterReport> {
    let mut report = state.cluster.report();
    report.tls = state.tls().report();
    Json(report)
}

/// Where a key lives: its partition and owners (like Redis's CLUSTER KEYSLOT).
pub async fn key_placement(
    State(state): State<AppState>,
    uri: axum::http::Uri,
) -> Result<Json<KeyPlacement>, AppError> {
    let path = uri
        .path()
        .replacen("/v1/cluster/keys/", super::keys::KEYS_PREFIX, 1);
    let key = super::keys::key_from_path(&path, state.limits().max_key_bytes)?;
    let (partition, owners) = state.cluster.placement_of(&key);
    Ok(Json(KeyPlacement {
        slot: crate::store::slot::slot_of(&key),
        partition,
        owners,
    }))
}

#[derive(Debug, Serialize)]
pub struct KeyPlacement {
    slot: u16,
    partition: u32,
    owners: Vec<String>,
}

pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, AppError> {
    match state.phase() {
        Phase::Ready => Ok(Json(serde_json::json!({ "status": "ready" }))),
        Phase::Starting | Phase::Syncing => Err(AppError::Syncing),
        Phase::Draining { .. } | Phase::Stopped => Err(AppError::ShuttingDown),
    }
}

pub async fn openapi() -> Response {
    ([(CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

pub async fn no_route(uri: axum::http::Uri) -> AppError {
    AppError::NoRoute(uri.path().to_owned())
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> AppError {
    AppError::MethodNotAllowed {
        method: method.to_string(),
        path: uri.path().to_owned(),
    }
}

/// Current RSS from /proc/self/status.
pub fn resident_memory_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|line| line.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
