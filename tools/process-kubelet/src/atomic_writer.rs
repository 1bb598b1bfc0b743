//! Atomic updates of a projected volume's files (ConfigMap, Secret,
//! downwardAPI, projected).
//!
//! Same layout as the kubelet's atomic writer, so programs that watch mounted
//! ConfigMaps behave as they would in a real cluster:
//!
//! ```text
//! dir/..2024_01_02_03_04_05.123456789/key   the payload, one directory per version
//! dir/..data -> ..2024_01_02_...             switched with one rename(2)
//! dir/key -> ..data/key                      what the container opens
//! ```
//!
//! A reader never sees half of an update: it sees either the old `..data` or
//! the new one. Writing an unchanged payload does nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Component, Path, PathBuf};

/// One file of a payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileContent {
    /// The bytes.
    pub data: Vec<u8>,
    /// Permission bits (`defaultMode`/`mode`, 0644 when unset).
    pub mode: u32,
}

/// Relative path → content. Paths may have several components (`a/b`).
pub type Payload = BTreeMap<PathBuf, FileContent>;

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Make `dir` hold exactly `payload`. Returns whether anything changed.
pub fn write(dir: &Path, payload: &Payload) -> io::Result<bool> {
    for path in payload.keys() {
        validate(path)?;
    }
    fs::create_dir_all(dir)?;
    if current(dir)?.as_ref() == Some(payload) {
        return Ok(false);
    }
    let old_version = fs::read_link(dir.join(DATA)).ok();

    let version = format!("..{}", timestamp_name());
    let version_dir = dir.join(&version);
    fs::create_dir(&version_dir)?;
    for (path, content) in payload {
        let target = version_dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&target, &content.data)?;
        fs::set_permissions(&target, fs::Permissions::from_mode(content.mode))?;
    }

    let tmp = dir.join(DATA_TMP);
    let _ = fs::remove_file(&tmp);
    symlink(&version, &tmp)?;
    fs::rename(&tmp, dir.join(DATA))?;

    let wanted: BTreeSet<String> = payload.keys().filter_map(|p| top_level(p)).collect();
    for name in &wanted {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            symlink(Path::new(DATA).join(name), &link)?;
        }
    }
    for entry in fs::read_dir(dir)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(&name) {
            fs::remove_file(dir.join(&name))?;
        }
    }
    if let Some(old) = old_version.filter(|old| old != Path::new(&version)) {
        fs::remove_dir_all(dir.join(old))?;
    }
    Ok(true)
}

/// The payload currently behind `..data`, if any.
fn current(dir: &Path) -> io::Result<Option<Payload>> {
    let data = dir.join(DATA);
    if fs::symlink_metadata(&data).is_err() {
        return Ok(None);
    }
    let mut payload = Payload::new();
    collect(&data, Path::new(""), &mut payload)?;
    Ok(Some(payload))
}

fn collect(root: &Path, rel: &Path, out: &mut Payload) -> io::Result<()> {
    for entry in fs::read_dir(root.join(rel))? {
        let entry = entry?;
        let rel = rel.join(entry.file_name());
        let meta = entry.metadata()?;
        if meta.is_dir() {
            collect(root, &rel, out)?;
        } else {
            let mode = meta.permissions().mode() & 0o7777;
            out.insert(
                rel.clone(),
                FileContent {
                    data: fs::read(root.join(&rel))?,
                    mode,
                },
            );
        }
    }
    Ok(())
}

fn top_level(path: &Path) -> Option<String> {
    path.components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
}

/// Relative, no `..`, and not starting with `..` (reserved for the layout).
fn validate(path: &Path) -> io::Result<()> {
    let ok = !path.as_os_str().is_empty()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
        && !path.to_string_lossy().starts_with("..");
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid volume file path {path:?}"),
        ))
    }
}

/// A unique, sortable directory name for one payload version.
fn timestamp_name() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    format!("{}", now.strftime("%Y_%m_%d_%H_%M_%S.%f"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("kache-aw-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn file(s: &str) -> FileContent {
        FileContent {
            data: s.as_bytes().to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn writes_swaps_and_prunes() {
        let dir = tmpdir("swap");
        let mut p = Payload::new();
        p.insert("a".into(), file("one"));
        p.insert("sub/b".into(), file("two"));
        assert!(write(&dir, &p).unwrap());
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "one");
        assert_eq!(fs::read_to_string(dir.join("sub/b")).unwrap(), "two");
        assert_eq!(fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        let first = fs::read_link(dir.join(DATA)).unwrap();

        assert!(!write(&dir, &p).unwrap(), "same payload: nothing to do");
        assert_eq!(fs::read_link(dir.join(DATA)).unwrap(), first);

        let mut q = Payload::new();
        q.insert("a".into(), file("uno"));
        q.insert(
            "c".into(),
            FileContent {
                data: b"x".to_vec(),
                mode: 0o600,
            },
        );
        assert!(write(&dir, &q).unwrap());
        assert_eq!(fs::read_to_string(dir.join("a")).unwrap(), "uno");
        assert!(
            fs::symlink_metadata(dir.join("sub")).is_err(),
            "stale entry removed"
        );
        assert!(
            fs::symlink_metadata(dir.join(&first)).is_err(),
            "old version removed"
        );
        let mode = fs::metadata(dir.join("c")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn rejects_escaping_paths() {
        let dir = tmpdir("bad");
        for bad in ["../x", "/etc/passwd", "..data", "a/../../b"] {
            let mut p = Payload::new();
            p.insert(bad.into(), file("x"));
            assert!(write(&dir, &p).is_err(), "{bad}");
        }
        let _ = fs::remove_dir_all(&dir);
    }
}
