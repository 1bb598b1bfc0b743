//! Snapshots: the store's whole content in one file, so the log before it can go.
//!
//! Taking snapshot `g + 1` while generation `g` is being logged:
//! 1. Rotate the log to `g + 1`: every change from now on is in `log-(g+1)`, every one
//!    before is in the older logs (synced).
//! 2. Scan the store partition by partition (each under its own lock, in chunks) into
//!    `snapshot-(g+1).kss.tmp`, end it with a frame counting its records, sync it,
//!    rename it, sync the dir.
//! 3. Delete the snapshots and logs of generations before `g + 1`.
//!
//! Loading `snapshot-(g+1)` and then `log-(g+1)` in order gives the store as it was: a
//! change made during the scan is in the log (replaying it again is harmless: last writer
//! wins), and a partition dropped during the scan is dropped again by the log before
//! anything written to it afterwards. A crash anywhere leaves either the old snapshot and
//! every log after it, or the new one: step 3 runs only after step 2's rename is synced.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

use super::frame::{self, SNAPSHOT_MAGIC};
use super::log::Log;
use super::{PersistStats, files};
use crate::store::Store;

/// Records per chunk read under a partition's lock.
const CHUNK_RECORDS: usize = 1024;
/// Bytes per chunk read under a partition's lock.
const CHUNK_BYTES: usize = 1 << 20;

/// Takes a snapshot at the log's next generation and removes the files it replaces.
pub async fn take(store: &Store, log: &Log, stats: &PersistStats) -> std::io::Result<u64> {
    let started = Instant::now();
    let generation = log.progress().generation + 1;
    log.rotate(generation)
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))?;
    let (store, dir) = (store.clone(), log.dir().to_owned());
    let (records, bytes) =
        tokio::task::spawn_blocking(move || write_snapshot(&store, &dir, generation))
            .await
            .map_err(std::io::Error::other)??;
    remove_before(log.dir(), generation)?;
    stats.snapshots.fetch_add(1, Ordering::Relaxed);
    stats.snapshot_bytes.store(bytes, Ordering::Relaxed);
    stats.snapshot_records.store(records, Ordering::Relaxed);
    tracing::info!(
        generation,
        records,
        bytes,
        took_ms = started.elapsed().as_millis(),
        "snapshot written; older logs removed"
    );
    Ok(generation)
}

/// Writes `snapshot-<generation>` from the store. Returns its records and bytes.
fn write_snapshot(store: &Store, dir: &Path, generation: u64) -> std::io::Result<(u64, u64)> {
    let path = files::snapshot_path(dir, generation);
    let tmp = path.with_extension("kss.tmp");
    let written = (|| {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&tmp)?);
        out.write_all(&frame::header(SNAPSHOT_MAGIC, generation))?;
        let mut records = 0u64;
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 4096);
        for partition in 0..store.partition_count() {
            let mut cursor = None;
            loop {
                let (chunk, next) =
                    store.partition_chunk(partition, None, cursor, CHUNK_RECORDS, CHUNK_BYTES);
                buf.clear();
                for record in &chunk {
                    frame::put_record(
                        &mut buf,
                        &record.key,
                        &record.value,
                        record.version,
                        record.expires_at_ms,
                        record.tombstone,
                    );
                }
                records += chunk.len() as u64;
                out.write_all(&buf)?;
                match next {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
        }
        buf.clear();
        frame::put_end(&mut buf, records);
        out.write_all(&buf)?;
        let file = out.into_inner().map_err(|err| err.into_error())?;
        file.sync_all()?;
        let bytes = file.metadata()?.len();
        Ok((records, bytes))
    })();
    match written {
        Ok(done) => {
            fs::rename(&tmp, &path)?;
            files::sync_dir(dir)?;
            Ok(done)
        }
        Err(err) => {
            let _ = fs::remove_file(&tmp);
            Err(err)
        }
    }
}

/// Removes the logs and snapshots older than `generation`.
fn remove_before(dir: &Path, generation: u64) -> std::io::Result<()> {
    let listing = files::list(dir)?;
    for (g, path) in listing.logs.iter().chain(&listing.snapshots) {
        if *g < generation {
            fs::remove_file(path)?;
        }
    }
    files::sync_dir(dir)
}
