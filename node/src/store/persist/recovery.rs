//! Loading a data dir into the store at start.
//!
//! 1. **Identity.** The dir's `kache.meta` names the format, cluster and member it
//!    belongs to. Another format is refused (the node does not start: nothing is
//!    silently dropped or misread). Another cluster or member, a `departed` marker (the
//!    member handed everything off and left), or data files without an identity are
//!    *discarded*: loading them could bring back keys deleted since, or old values.
//! 2. **The newest good snapshot.** Each snapshot is checked whole first (every frame's
//!    checksum and the end frame's count); a bad one is renamed `.corrupt` and not loaded,
//!    and the load is marked incomplete (a cluster member pulls what it owns from its
//!    peers anyway).
//! 3. **The logs from that snapshot's generation on**, in order. A log ends at its first
//!    bad frame: a torn write or garbage after a crash. The file is truncated there, with
//!    a warning and a count in the stats.
//!
//! Records go in through [`Store::restore`]: last writer wins, expired values are dropped,
//! and `--max-memory` holds (evicting by the policy, or leaving records out under `none`).

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::frame::{self, Frame, HEADER_LEN, LOG_MAGIC, Reader, SNAPSHOT_MAGIC};
use super::{PersistConfig, PersistError, PersistStats, files};
use crate::store::{Store, StoreError};

/// What a start found in the data dir.
#[derive(Debug, Clone, Default)]
pub struct Recovered {
    /// Records loaded (snapshot and logs, before last-writer-wins).
    pub records: u64,
    /// Some data could not be loaded (a corrupt snapshot, records over the memory
    /// bound): what this node owns must come from its peers.
    pub incomplete: bool,
    /// The generation the new log starts at.
    pub next_generation: u64,
    /// Log bytes replayed (a snapshot soon after start compacts them).
    pub log_bytes: u64,
    /// Why the dir's data was discarded, if it was.
    pub discarded: Option<String>,
    /// The dir was this member's already, and everything in it loaded: the store is as
    /// the node left it, empty partitions included.
    pub intact: bool,
}

/// Loads `config.dir` into `store` (which must not log yet).
pub fn recover(
    config: &PersistConfig,
    store: &Store,
    stats: &Arc<PersistStats>,
) -> Result<Recovered, PersistError> {
    let dir = &config.dir;
    let io_err = |what: &'static str| {
        move |source: io::Error| PersistError::Io {
            what,
            dir: dir.clone(),
            source,
        }
    };
    fs::create_dir_all(dir).map_err(io_err("creating the data dir"))?;
    let started = Instant::now();
    let mut recovered = Recovered::default();
    let wanted = files::Meta {
        format: frame::FORMAT,
        cluster_id: config.cluster_id.clone(),
        member: config.member.clone(),
    };
    let listing = files::list(dir).map_err(io_err("listing the data dir"))?;
    let has_data = !listing.logs.is_empty() || !listing.snapshots.is_empty();
    let meta = files::read_meta(dir).map_err(io_err("reading kache.meta"))?;
    let discard = match &meta {
        Some(found) if found.format != frame::FORMAT => {
            return Err(PersistError::Format {
                dir: dir.clone(),
                found: found.format,
            });
        }
        Some(found) if found.cluster_id != wanted.cluster_id => Some(format!(
            "it belongs to cluster '{}', this node to '{}'",
            found.cluster_id, wanted.cluster_id
        )),
        Some(found) if found.member != wanted.member => Some(format!(
            "it belongs to member '{}', this node is '{}'",
            found.member, wanted.member
        )),
        Some(_) if files::departed(dir) => Some(
            "its member handed off everything and left the cluster; data from an earlier membership would bring back deleted keys"
                .to_owned(),
        ),
        None if has_data => Some("it has data files but no kache.meta".to_owned()),
        _ => None,
    };
    let max_generation = listing
        .logs
        .iter()
        .chain(&listing.snapshots)
        .map(|(g, _)| *g)
        .max()
        .unwrap_or(0);
    recovered.next_generation = max_generation + 1;
    if let Some(reason) = discard {
        let removed = files::clear(dir).map_err(io_err("discarding the data dir"))?;
        tracing::warn!(dir = %dir.display(), removed, reason = %reason, "discarded the data dir");
        stats.discarded.fetch_add(1, Ordering::Relaxed);
        recovered.discarded = Some(reason);
    } else {
        load(dir, &listing, store, stats, &mut recovered)?;
        recovered.intact = meta.is_some() && !recovered.incomplete;
    }
    if meta.as_ref() != Some(&wanted) || recovered.discarded.is_some() {
        files::write_meta(dir, &wanted).map_err(io_err("writing kache.meta"))?;
    }
    stats
        .records_loaded
        .store(recovered.records, Ordering::Relaxed);
    stats.load_ms.store(
        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    Ok(recovered)
}

/// Loads the newest good snapshot and the logs after it.
fn load(
    dir: &Path,
    listing: &files::Listing,
    store: &Store,
    stats: &PersistStats,
    recovered: &mut Recovered,
) -> Result<(), PersistError> {
    let mut base = 0;
    for (generation, path) in listing.snapshots.iter().rev() {
        match check_snapshot(path) {
            Ok(()) => {
                base = *generation;
                let mut loader = Loader::new(store);
                read_frames(path, SNAPSHOT_MAGIC, |frame| loader.take(frame)).map_err(|err| {
                    PersistError::Io {
                        what: "reading a snapshot",
                        dir: dir.to_owned(),
                        source: io::Error::other(err),
                    }
                })?;
                loader.finish(recovered);
                tracing::info!(snapshot = %path.display(), records = recovered.records, "loaded the snapshot");
                break;
            }
            Err(reason) => {
                let aside = path.with_extension(format!("kss{}", files::CORRUPT_SUFFIX));
                tracing::warn!(snapshot = %path.display(), reason = %reason, set_aside = %aside.display(), "a corrupt snapshot: not loaded; what this node owns must come from its peers");
                let _ = fs::rename(path, &aside);
                stats.corrupt_snapshots.fetch_add(1, Ordering::Relaxed);
                recovered.incomplete = true;
            }
        }
    }
    for (generation, path) in &listing.logs {
        if *generation < base {
            continue;
        }
        let mut loader = Loader::new(store);
        let outcome = read_frames(path, LOG_MAGIC, |frame| loader.take(frame));
        loader.finish(recovered);
        let size = fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        match outcome {
            Ok(good) => recovered.log_bytes += good,
            Err(ReadError::Damage { good_bytes, reason }) => {
                let keep = HEADER_LEN + good_bytes;
                tracing::warn!(log = %path.display(), reason, kept_bytes = keep, dropped_bytes = size.saturating_sub(keep), "the log ends in a torn or corrupt write: truncated there");
                OpenOptions::new()
                    .write(true)
                    .open(path)
                    .and_then(|file| {
                        file.set_len(keep)?;
                        file.sync_all()
                    })
                    .map_err(|source| PersistError::Io {
                        what: "truncating a damaged log",
                        dir: dir.to_owned(),
                        source,
                    })?;
                stats.torn_tails.fetch_add(1, Ordering::Relaxed);
                stats
                    .truncated_bytes
                    .fetch_add(size.saturating_sub(keep), Ordering::Relaxed);
                recovered.log_bytes += good_bytes;
            }
            Err(ReadError::Header(reason)) => {
                tracing::warn!(log = %path.display(), reason = %reason, "a log with a damaged header: skipped");
                stats.torn_tails.fetch_add(1, Ordering::Relaxed);
            }
            Err(ReadError::Io(source)) => {
                return Err(PersistError::Io {
                    what: "reading a log",
                    dir: dir.to_owned(),
                    source,
                });
            }
        }
    }
    Ok(())
}

/// Applies frames to the store, counting what it loaded and what did not fit.
struct Loader<'a> {
    store: &'a Store,
    records: u64,
    over_memory: u64,
}

impl<'a> Loader<'a> {
    fn new(store: &'a Store) -> Self {
        Self {
            store,
            records: 0,
            over_memory: 0,
        }
    }

    fn take(&mut self, frame: Frame) {
        match frame {
            Frame::Record(record) => {
                self.records += 1;
                match self.store.restore(&record) {
                    Ok(_) => {}
                    Err(StoreError::OutOfMemory { .. } | StoreError::EntryTooLarge { .. }) => {
                        self.over_memory += 1;
                    }
                    Err(err) => tracing::debug!(error = %err, "a logged record was not restored"),
                }
            }
            Frame::Dropped { partition } => self.store.drop_partition(partition),
            Frame::End { .. } => {}
        }
    }

    fn finish(self, recovered: &mut Recovered) {
        recovered.records += self.records;
        if self.over_memory > 0 {
            tracing::warn!(
                records = self.over_memory,
                "records did not fit in --max-memory with eviction none and were not loaded"
            );
            recovered.incomplete = true;
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("{0}")]
    Header(frame::HeaderError),
    #[error("damaged after {good_bytes} good bytes: {reason}")]
    Damage {
        good_bytes: u64,
        reason: &'static str,
    },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// Reads a file's header and frames, handing each to `take`; returns the good bytes.
fn read_frames(
    path: &Path,
    magic: &[u8; 8],
    mut take: impl FnMut(Frame),
) -> Result<u64, ReadError> {
    let mut input = BufReader::with_capacity(1 << 20, File::open(path)?);
    let mut header = [0; frame::HEADER_BYTES];
    let read = input.read(&mut header)?;
    let kind = if magic == LOG_MAGIC {
        "log"
    } else {
        "snapshot"
    };
    frame::read_header(&header[..read.min(header.len())], magic, kind)
        .map_err(ReadError::Header)?;
    let mut reader = Reader::new(input);
    loop {
        match reader.next_frame() {
            Ok(Some(frame)) => take(frame),
            Ok(None) => return Ok(reader.good_bytes()),
            Err(damage) => {
                return Err(ReadError::Damage {
                    good_bytes: damage.good_bytes,
                    reason: damage.reason,
                });
            }
        }
    }
}

/// A snapshot is good when every frame checks and it ends with an end frame counting
/// its records, and nothing after it.
fn check_snapshot(path: &Path) -> Result<(), String> {
    let mut records = 0u64;
    let mut end = None;
    let mut after_end = false;
    read_frames(path, SNAPSHOT_MAGIC, |frame| match frame {
        _ if end.is_some() => after_end = true,
        Frame::Record(_) => records += 1,
        Frame::End { records } => end = Some(records),
        Frame::Dropped { .. } => after_end = true,
    })
    .map_err(|err| err.to_string())?;
    match end {
        Some(counted) if counted == records && !after_end => Ok(()),
        Some(counted) => Err(format!(
            "it counts {counted} records but holds {records}, or has frames after its end"
        )),
        None => Err("it has no end frame (cut short)".to_owned()),
    }
}
