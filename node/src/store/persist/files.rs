//! What a data dir holds, by name: the identity file, log and snapshot files by
//! generation, and the "departed" marker.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

const META: &str = "kache.meta";
const DEPARTED: &str = "departed";
const LOG_PREFIX: &str = "log-";
const LOG_SUFFIX: &str = ".kal";
const SNAPSHOT_PREFIX: &str = "snapshot-";
const SNAPSHOT_SUFFIX: &str = ".kss";
/// A snapshot found corrupt is renamed with this suffix: kept for a post-mortem, never
/// loaded.
pub const CORRUPT_SUFFIX: &str = ".corrupt";

/// Whose data this is: written when the dir is first used, checked at every start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub format: u32,
    pub cluster_id: String,
    pub member: String,
}

pub fn log_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!("{LOG_PREFIX}{generation:020}{LOG_SUFFIX}"))
}

pub fn snapshot_path(dir: &Path, generation: u64) -> PathBuf {
    dir.join(format!(
        "{SNAPSHOT_PREFIX}{generation:020}{SNAPSHOT_SUFFIX}"
    ))
}

/// The log and snapshot files in `dir`, each sorted by generation.
#[derive(Debug, Default)]
pub struct Listing {
    pub logs: Vec<(u64, PathBuf)>,
    pub snapshots: Vec<(u64, PathBuf)>,
}

pub fn list(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let generation = |prefix: &str, suffix: &str| {
            name.strip_prefix(prefix)?
                .strip_suffix(suffix)?
                .parse::<u64>()
                .ok()
        };
        if let Some(g) = generation(LOG_PREFIX, LOG_SUFFIX) {
            listing.logs.push((g, entry.path()));
        } else if let Some(g) = generation(SNAPSHOT_PREFIX, SNAPSHOT_SUFFIX) {
            listing.snapshots.push((g, entry.path()));
        }
    }
    listing.logs.sort();
    listing.snapshots.sort();
    Ok(listing)
}

pub fn read_meta(dir: &Path) -> io::Result<Option<Meta>> {
    match fs::read(dir.join(META)) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidData, err)),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(err) => Err(err),
    }
}

/// Writes the identity file atomically (a temporary file renamed over it).
pub fn write_meta(dir: &Path, meta: &Meta) -> io::Result<()> {
    let bytes = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    write_atomically(dir, META, &bytes)
}

/// Writes `name` in `dir` through a synced temporary file and a rename.
pub fn write_atomically(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    fs::write(&tmp, bytes)?;
    File::open(&tmp)?.sync_all()?;
    fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

pub fn departed(dir: &Path) -> bool {
    dir.join(DEPARTED).exists()
}

/// Marks the dir as left behind by a member that handed off everything and left.
pub fn mark_departed(dir: &Path) -> io::Result<()> {
    write_atomically(
        dir,
        DEPARTED,
        b"this member handed off its data and left the cluster\n",
    )
}

/// Removes every data file (logs, snapshots, markers, the identity) from `dir`; files
/// set aside as corrupt stay. Returns how many were removed.
pub fn clear(dir: &Path) -> io::Result<usize> {
    let listing = list(dir)?;
    let mut removed = 0;
    for (_, path) in listing.logs.iter().chain(&listing.snapshots) {
        fs::remove_file(path)?;
        removed += 1;
    }
    for name in [DEPARTED, META] {
        match fs::remove_file(dir.join(name)) {
            Ok(()) => removed += 1,
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
    }
    sync_dir(dir)?;
    Ok(removed)
}

/// Syncs a directory, so a file created, renamed or removed in it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}
