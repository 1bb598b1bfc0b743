//! The append-only log: every change the store makes, in the order it makes them, on disk.
//!
//! Writers (the store, under a partition's lock) encode their change into a shared
//! in-memory tail with [`Log::append`]: a memcpy under a short mutex, no I/O. One flusher
//! thread owns the file: it takes the whole tail at once, writes it, and syncs it as the
//! fsync policy says:
//! - `always`: after every write, before the writes in it are acknowledged. Callers wait
//!   with [`Log::durable`]; while the flusher syncs, the next writes gather into the next
//!   batch (group commit), so one fsync serves every write that arrived meanwhile.
//! - `everysec`: the tail reaches the kernel within `GATHER` (a killed process loses at
//!   most the writes of those 2 ms) and the disk once a second (a power loss loses at
//!   most about a second).
//! - `no`: the kernel decides when.
//!
//! A failed write or sync (a full disk) leaves the batch with the flusher, which writes it
//! again at the same offset every second until it succeeds; meanwhile [`Log::writable`]
//! refuses new writes, so the store answers them `507` and nothing is acknowledged that
//! the log does not hold. A sync that failed is never trusted: the batch is written again
//! before the next sync (Linux may drop the dirty pages of a failed fsync).
//!
//! Rotation ([`Log::rotate`]) starts a new generation at a point in the stream: what was
//! appended before goes to the old file, what comes after to the new one. Snapshots use it
//! (see [`super::snapshot`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

use super::frame::{self, HEADER_LEN, LOG_MAGIC};
use super::{FsyncPolicy, PersistStats, files};
use crate::clock::Version;

/// How often a failed write is tried again, and how often an idle flusher wakes (to sync
/// under `everysec`).
const TICK: Duration = Duration::from_millis(1000);
/// `everysec`: the longest a written batch waits for its sync.
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// `everysec` and `no`: the flusher's pause after writing a batch, so writes gather into
/// the next one instead of waking the flusher one by one (a wake-up and a `pwrite` per
/// few writes cost a third of SET throughput on one core). A killed process loses at
/// most the writes of this long. `always` pauses too, more briefly ([`GATHER_ALWAYS`]).
const GATHER: Duration = Duration::from_millis(2);
/// `always`: the same pause, short: the writers just released by a sync get to send
/// their next writes before the next one starts, so one sync serves all of them.
const GATHER_ALWAYS: Duration = Duration::from_micros(300);
/// A tail buffer larger than this is not kept for reuse.
const SPARE_MAX: usize = 16 << 20;

/// The handle the store appends through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Log {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// A parking_lot mutex held for a memcpy by writers and for a swap by the flusher,
    /// never across I/O.
    tail: Mutex<Tail>,
    /// Wakes the flusher when it sleeps and something was appended.
    wake: Condvar,
    policy: FsyncPolicy,
    /// How far the log is on disk (as the policy counts it), and the failure, if any.
    progress: watch::Sender<Progress>,
    /// Set while a write or sync is failing: new writes are refused.
    failing: AtomicBool,
    stats: Arc<PersistStats>,
    dir: PathBuf,
}

#[derive(Debug, Default)]
struct Tail {
    bytes: Vec<u8>,
    /// Changes appended so far (a sequence number for [`Log::durable`]).
    seq: u64,
    /// Bytes of the generation before a rotation the flusher has not taken yet, and the
    /// generation to start after them.
    sealed: Option<(Vec<u8>, u64)>,
    flusher_asleep: bool,
    stop: bool,
}

/// How far the log has reached the disk.
#[derive(Debug, Clone, Default)]
pub struct Progress {
    /// Every change up to this sequence number is as durable as the policy makes it.
    pub seq: u64,
    /// The generation of the file the flusher writes.
    pub generation: u64,
    /// Why writes fail, while they do.
    pub failure: Option<Arc<str>>,
}

/// A change the log could not make durable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("the data dir cannot take writes: {0}")]
pub struct LogFailure(pub Arc<str>);

impl Log {
    /// Starts a log of `generation` in `dir` (a new file) and its flusher thread.
    pub fn start(
        dir: &Path,
        generation: u64,
        policy: FsyncPolicy,
        stats: Arc<PersistStats>,
    ) -> std::io::Result<(Self, Flusher)> {
        let file = new_log_file(dir, generation)?;
        let (progress, _) = watch::channel(Progress {
            seq: 0,
            generation,
            failure: None,
        });
        let shared = Arc::new(Shared {
            tail: Mutex::new(Tail::default()),
            wake: Condvar::new(),
            policy,
            progress,
            failing: AtomicBool::new(false),
            stats,
            dir: dir.to_owned(),
        });
        let writer = Writer {
            shared: shared.clone(),
            file,
            offset: HEADER_LEN,
            generation,
            last_sync: Instant::now(),
            unsynced: false,
            spare: Vec::new(),
        };
        let thread = std::thread::Builder::new()
            .name("kache-log".into())
            .spawn(move || writer.run())?;
        Ok((
            Self { shared },
            Flusher {
                thread: Some(thread),
            },
        ))
    }

    /// Refuses a write while the log cannot take it (a full or failing disk).
    pub fn writable(&self) -> Result<(), LogFailure> {
        if !self.shared.failing.load(Ordering::Relaxed) {
            return Ok(());
        }
        let failure = self.shared.progress.borrow().failure.clone();
        Err(LogFailure(
            failure.unwrap_or_else(|| "writes are failing".into()),
        ))
    }

    /// Appends a record. Called under the partition's lock, so the log's order of two
    /// changes to one partition is the order the store made them in.
    pub fn append_record(
        &self,
        key: &[u8],
        value: &[u8],
        version: Version,
        expires_at_ms: u64,
        tombstone: bool,
    ) {
        self.append(|out| frame::put_record(out, key, value, version, expires_at_ms, tombstone));
    }

    /// Appends "partition dropped", under the partition's lock.
    pub fn append_drop(&self, partition: u32) {
        self.append(|out| frame::put_drop(out, partition));
    }

    fn append(&self, encode: impl FnOnce(&mut Vec<u8>)) {
        let mut tail = self.shared.tail.lock();
        encode(&mut tail.bytes);
        tail.seq += 1;
        if tail.flusher_asleep {
            tail.flusher_asleep = false;
            self.shared.wake.notify_one();
        }
    }

    /// Completes once every change appended before the call is as durable as the policy
    /// promises before an acknowledgement: on disk under `always`, at once otherwise.
    pub async fn durable(&self) -> Result<(), LogFailure> {
        if self.shared.policy != FsyncPolicy::Always {
            return Ok(());
        }
        let seq = self.shared.tail.lock().seq;
        self.wait_for(|p| p.seq >= seq).await
    }

    /// Completes once everything appended before the call is written (and synced, if the
    /// policy syncs at all), whatever the policy: for hand-offs and shutdown.
    pub async fn flushed(&self) -> Result<(), LogFailure> {
        let seq = self.shared.tail.lock().seq;
        self.wait_for(|p| p.seq >= seq).await
    }

    async fn wait_for(&self, done: impl Fn(&Progress) -> bool) -> Result<(), LogFailure> {
        let mut progress = self.shared.progress.subscribe();
        let seen = progress
            .wait_for(|p| done(p) || p.failure.is_some())
            .await
            .map_err(|_| LogFailure("the log has stopped".into()))?;
        if done(&seen) {
            return Ok(());
        }
        Err(LogFailure(
            seen.failure.clone().unwrap_or_else(|| "unknown".into()),
        ))
    }

    /// Starts generation `next`: changes appended from now on go to its file. Completes
    /// once the flusher writes to it (the older files hold everything before).
    pub async fn rotate(&self, next: u64) -> Result<(), LogFailure> {
        {
            let mut tail = self.shared.tail.lock();
            let before = std::mem::take(&mut tail.bytes);
            // One rotation at a time (the snapshot task waits for each): a second one
            // before the first is taken would merge into it.
            match &mut tail.sealed {
                Some((sealed, generation)) => {
                    sealed.extend_from_slice(&before);
                    *generation = next;
                }
                None => tail.sealed = Some((before, next)),
            }
            tail.flusher_asleep = false;
            self.shared.wake.notify_one();
        }
        self.wait_for(|p| p.generation >= next).await
    }

    /// The current progress.
    pub fn progress(&self) -> Progress {
        self.shared.progress.borrow().clone()
    }

    pub fn dir(&self) -> &Path {
        &self.shared.dir
    }

    pub fn policy(&self) -> FsyncPolicy {
        self.shared.policy
    }
}

/// The flusher thread; [`Flusher::stop`] writes and syncs what is left, then joins it.
#[derive(Debug)]
pub struct Flusher {
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Flusher {
    /// Writes and syncs the tail, then stops the thread. Blocking.
    pub fn stop(mut self, log: &Log) {
        {
            let mut tail = log.shared.tail.lock();
            tail.stop = true;
            log.shared.wake.notify_one();
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The flusher thread's state: the only owner of the current file.
struct Writer {
    shared: Arc<Shared>,
    file: File,
    /// Where the next batch goes: everything before it is written.
    offset: u64,
    generation: u64,
    last_sync: Instant,
    /// Bytes written since the last sync.
    unsynced: bool,
    /// The last batch's buffer, cleared, swapped in as the next tail (no regrowth).
    spare: Vec<u8>,
}

/// What the flusher took from the tail in one go.
struct Batch {
    sealed: Option<(Vec<u8>, u64)>,
    bytes: Vec<u8>,
    seq: u64,
    stop: bool,
}

impl Writer {
    fn run(mut self) {
        let mut carried: Option<Batch> = None;
        loop {
            let mut batch = match carried.take() {
                Some(mut failed) => {
                    // Whatever was appended since joins the batch that failed.
                    let more = self.take(Duration::ZERO);
                    merge(&mut failed, more);
                    failed
                }
                None => self.take(TICK),
            };
            let stop = batch.stop;
            match self.write(&mut batch) {
                Ok(()) => {
                    if self.shared.failing.swap(false, Ordering::Relaxed) {
                        tracing::info!("the data dir takes writes again");
                    }
                    let generation = self.generation;
                    self.shared.progress.send_modify(|p| {
                        p.seq = p.seq.max(batch.seq);
                        p.generation = generation;
                        p.failure = None;
                    });
                    if stop {
                        return;
                    }
                    let wrote = !batch.bytes.is_empty();
                    self.keep_spare(batch.bytes);
                    if wrote {
                        std::thread::sleep(match self.shared.policy {
                            FsyncPolicy::Always => GATHER_ALWAYS,
                            FsyncPolicy::EverySec | FsyncPolicy::No => GATHER,
                        });
                    }
                }
                Err(err) => {
                    let message: Arc<str> = err.to_string().into();
                    if !self.shared.failing.swap(true, Ordering::Relaxed) {
                        tracing::error!(error = %message, dir = %self.shared.dir.display(), "writing the log failed: refusing writes until it succeeds again");
                    }
                    self.shared
                        .stats
                        .log_failures
                        .fetch_add(1, Ordering::Relaxed);
                    self.shared
                        .progress
                        .send_modify(|p| p.failure = Some(message.clone()));
                    if stop {
                        tracing::error!(error = %message, "stopping with log writes that did not reach the disk");
                        return;
                    }
                    carried = Some(batch);
                    std::thread::sleep(TICK);
                }
            }
        }
    }

    fn keep_spare(&mut self, mut bytes: Vec<u8>) {
        if bytes.capacity() <= SPARE_MAX {
            bytes.clear();
            self.spare = bytes;
        }
    }

    /// Waits up to `wait` for something to write, then takes all of it.
    fn take(&mut self, wait: Duration) -> Batch {
        let mut tail = self.shared.tail.lock();
        if tail.bytes.is_empty() && tail.sealed.is_none() && !tail.stop && !wait.is_zero() {
            tail.flusher_asleep = true;
            // A sync under `everysec` is due at most SYNC_EVERY after the write it covers.
            let wait = if self.unsynced {
                SYNC_EVERY.min(wait)
            } else {
                wait
            };
            self.shared.wake.wait_for(&mut tail, wait);
            tail.flusher_asleep = false;
        }
        Batch {
            sealed: tail.sealed.take(),
            bytes: std::mem::replace(&mut tail.bytes, std::mem::take(&mut self.spare)),
            seq: tail.seq,
            stop: tail.stop,
        }
    }

    /// Writes a batch at the current offset (again, after a failure: the same bytes at
    /// the same place), rotating first if asked, and syncs as the policy says.
    fn write(&mut self, batch: &mut Batch) -> std::io::Result<()> {
        if let Some((sealed, next)) = &batch.sealed {
            self.file.write_all_at(sealed, self.offset)?;
            self.file.sync_data()?;
            self.shared
                .stats
                .log_bytes
                .fetch_add(sealed.len() as u64, Ordering::Relaxed);
            let file = new_log_file(&self.shared.dir, *next)?;
            // The old file is complete and synced; the batch goes to the new one.
            self.file = file;
            self.offset = HEADER_LEN;
            self.generation = *next;
            self.unsynced = false;
            // Done: a retry of this batch must not write the old bytes to the new file.
            batch.sealed = None;
        }
        if !batch.bytes.is_empty() {
            self.file.write_all_at(&batch.bytes, self.offset)?;
            self.unsynced = true;
        }
        let sync = match self.shared.policy {
            FsyncPolicy::Always => self.unsynced,
            FsyncPolicy::EverySec => {
                self.unsynced && (self.last_sync.elapsed() >= SYNC_EVERY || batch.stop)
            }
            FsyncPolicy::No => batch.stop && self.unsynced,
        };
        if sync {
            self.file.sync_data()?;
            self.last_sync = Instant::now();
            self.unsynced = false;
            self.shared.stats.fsyncs.fetch_add(1, Ordering::Relaxed);
        }
        // Only now: a failure above leaves the offset where the batch must go again.
        self.offset += batch.bytes.len() as u64;
        self.shared
            .stats
            .log_bytes
            .fetch_add(batch.bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn merge(failed: &mut Batch, more: Batch) {
    match (&mut failed.sealed, more.sealed) {
        // Rotations wait for each other, so a second one is not pending here; if it
        // were, its bytes still go first and its generation wins.
        (Some((sealed, generation)), Some((more_sealed, next))) => {
            sealed.extend_from_slice(&failed.bytes);
            sealed.extend_from_slice(&more_sealed);
            *generation = next;
            failed.bytes.clear();
        }
        (None, Some((more_sealed, next))) => {
            let mut sealed = std::mem::take(&mut failed.bytes);
            sealed.extend_from_slice(&more_sealed);
            failed.sealed = Some((sealed, next));
        }
        (_, None) => {}
    }
    failed.bytes.extend_from_slice(&more.bytes);
    failed.seq = failed.seq.max(more.seq);
    failed.stop |= more.stop;
}

/// Creates generation `generation`'s log file with its header, synced with its dir.
fn new_log_file(dir: &Path, generation: u64) -> std::io::Result<File> {
    let path = files::log_path(dir, generation);
    let file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .read(true)
        .open(&path)?;
    file.write_all_at(&frame::header(LOG_MAGIC, generation), 0)?;
    file.sync_all()?;
    files::sync_dir(dir)?;
    Ok(file)
}
