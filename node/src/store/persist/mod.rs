//! Persistence: the store's changes in an append-only log on disk, compacted by
//! periodic snapshots, loaded back at start (`--data-dir`).
//!
//! Layout:
//! - [`frame`]: the checksummed encoding the log and snapshots share.
//! - [`log`]: the append-only log, its flusher thread and the fsync policies.
//! - [`snapshot`]: writing a snapshot and removing what it replaces.
//! - [`recovery`]: loading a data dir at start: identity, snapshot, logs, torn tails.
//! - [`files`]: the names in a data dir.
//!
//! **One log per node, not per partition.** Every change of every partition goes to one
//! file in the order the store made it (appended under the partition's lock). One file
//! means one fsync covers every write that arrived meanwhile (with 271 partitions, a file
//! each would take 271 fsyncs for the same writes under `always`), and one order makes
//! replay exact: a partition dropped after a hand-off and taken back later is dropped and
//! refilled in the order it happened. Partitions move between nodes by streaming, not by
//! files, so nothing needs a partition's data as a file of its own.
//!
//! **What is logged is what the store applies**: client writes, replicated writes,
//! records pulled in moves and repairs, tombstones, and partitions dropped after a
//! hand-off. Evictions and expiries are not: at load, expired records are dropped and the
//! memory bound evicts again.
//!
//! **Invariants.**
//! - Under `always`, a write is acknowledged only once the log holding it is synced (the
//!   store's callers await [`crate::store::Store::durable`]).
//! - A data dir is loaded only by the member of the cluster that wrote it, and never
//!   after that member handed off its data and left (see [`recovery`]).
//! - While the disk refuses writes, the store refuses them too (`507`), and reads go on.

pub mod files;
pub mod frame;
pub mod log;
pub mod recovery;
pub mod snapshot;

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

pub use log::{Log, LogFailure};
pub use recovery::Recovered;

use super::Store;

/// When logged changes reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsyncPolicy {
    /// Before the write is acknowledged.
    Always,
    /// Written to the kernel within milliseconds, synced once a second.
    EverySec,
    /// Written to the kernel within milliseconds, synced when the kernel decides.
    No,
}

impl FsyncPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::EverySec => "everysec",
            Self::No => "no",
        }
    }
}

impl FromStr for FsyncPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "always" => Ok(Self::Always),
            "everysec" => Ok(Self::EverySec),
            "no" => Ok(Self::No),
            other => Err(format!(
                "unknown fsync policy '{other}' (expected always, everysec or no)"
            )),
        }
    }
}

/// `--data-dir` and what goes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistConfig {
    pub dir: PathBuf,
    pub fsync: FsyncPolicy,
    pub snapshot_interval: Duration,
    /// The cluster the data belongs to (`--cluster-id`).
    pub cluster_id: String,
    /// The member it belongs to (`--node-id`).
    pub member: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{what} in {dir}: {source}")]
    Io {
        what: &'static str,
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the data dir {dir} was written in format {found}; this node reads format {}: run the kache version that wrote it, or empty the dir",
        frame::FORMAT
    )]
    Format { dir: PathBuf, found: u32 },
}

/// Counters for `/v1/stats` and `/metrics`: relaxed atomics, each a tally read for
/// reporting only.
#[derive(Debug, Default)]
pub struct PersistStats {
    pub log_bytes: AtomicU64,
    pub fsyncs: AtomicU64,
    /// Log writes or syncs that failed (a full disk); each is tried again.
    pub log_failures: AtomicU64,
    pub snapshots: AtomicU64,
    pub snapshot_failures: AtomicU64,
    pub snapshot_bytes: AtomicU64,
    pub snapshot_records: AtomicU64,
    pub records_loaded: AtomicU64,
    pub load_ms: AtomicU64,
    /// Logs found ending in a torn or corrupt write at start, and truncated there.
    pub torn_tails: AtomicU64,
    pub truncated_bytes: AtomicU64,
    /// Snapshots found corrupt at start and set aside.
    pub corrupt_snapshots: AtomicU64,
    /// Data dirs discarded at start (another cluster or member, or a departed member).
    pub discarded: AtomicU64,
}

/// A plain copy of [`PersistStats`] and the state of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PersistReport {
    pub fsync: &'static str,
    pub generation: u64,
    /// Why log writes fail, while they do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
    pub log_bytes: u64,
    pub fsyncs: u64,
    pub log_failures: u64,
    pub snapshots: u64,
    pub snapshot_failures: u64,
    pub snapshot_bytes: u64,
    pub snapshot_records: u64,
    pub records_loaded: u64,
    pub load_ms: u64,
    pub torn_tails: u64,
    pub truncated_bytes: u64,
    pub corrupt_snapshots: u64,
    pub discarded: u64,
}

/// The data dir of a running node: its log, its snapshots, and what the start loaded.
#[derive(Debug)]
pub struct Persistence {
    log: Log,
    flusher: Mutex<Option<log::Flusher>>,
    stats: Arc<PersistStats>,
    recovered: Recovered,
    config: PersistConfig,
}

impl Persistence {
    /// Loads `config.dir` into `store` and starts logging its changes. Blocking: the
    /// node serves nothing before its data is loaded.
    pub fn open(config: &PersistConfig, store: &Store) -> Result<Arc<Self>, PersistError> {
        let stats = Arc::new(PersistStats::default());
        let recovered = recovery::recover(config, store, &stats)?;
        let (log, flusher) = Log::start(
            &config.dir,
            recovered.next_generation,
            config.fsync,
            stats.clone(),
        )
        .map_err(|source| PersistError::Io {
            what: "starting the log",
            dir: config.dir.clone(),
            source,
        })?;
        store.attach_log(log.clone());
        tracing::info!(
            dir = %config.dir.display(),
            records = recovered.records,
            incomplete = recovered.incomplete,
            fsync = config.fsync.as_str(),
            "data dir loaded"
        );
        Ok(Arc::new(Self {
            log,
            flusher: Mutex::new(Some(flusher)),
            stats,
            recovered,
            config: config.clone(),
        }))
    }

    pub fn recovered(&self) -> &Recovered {
        &self.recovered
    }

    /// Takes a snapshot every `--snapshot-interval`, and one soon after start when the
    /// start replayed logs (they are compacted away).
    pub fn spawn_snapshots(self: &Arc<Self>, store: Store) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut first = this.recovered.log_bytes > 0;
            loop {
                let wait = if first {
                    Duration::from_secs(1)
                } else {
                    this.config.snapshot_interval
                };
                first = false;
                tokio::time::sleep(wait).await;
                if let Err(err) = snapshot::take(&store, &this.log, &this.stats).await {
                    this.stats.snapshot_failures.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %err, "the snapshot failed; the log keeps everything meanwhile");
                }
            }
        })
    }

    /// Marks the data dir as left behind: this member handed off everything and left the
    /// cluster, so a later start must not load it.
    pub fn mark_departed(&self) {
        match files::mark_departed(&self.config.dir) {
            Ok(()) => tracing::info!("left the cluster: the data dir will not be loaded again"),
            Err(err) => {
                tracing::warn!(error = %err, "could not mark the data dir departed");
            }
        }
    }

    /// Writes and syncs what the log holds, and stops its thread. Blocking.
    pub fn close(&self) {
        if let Some(flusher) = self.flusher.lock().take() {
            flusher.stop(&self.log);
        }
    }

    pub fn report(&self) -> PersistReport {
        let s = &self.stats;
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let progress = self.log.progress();
        PersistReport {
            fsync: self.config.fsync.as_str(),
            generation: progress.generation,
            failure: progress.failure.map(|f| f.to_string()),
            log_bytes: load(&s.log_bytes),
            fsyncs: load(&s.fsyncs),
            log_failures: load(&s.log_failures),
            snapshots: load(&s.snapshots),
            snapshot_failures: load(&s.snapshot_failures),
            snapshot_bytes: load(&s.snapshot_bytes),
            snapshot_records: load(&s.snapshot_records),
            records_loaded: load(&s.records_loaded),
            load_ms: load(&s.load_ms),
            torn_tails: load(&s.torn_tails),
            truncated_bytes: load(&s.truncated_bytes),
            corrupt_snapshots: load(&s.corrupt_snapshots),
            discarded: load(&s.discarded),
        }
    }
}

#[cfg(test)]
mod tests;
