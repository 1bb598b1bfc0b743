//! Mount points the kubelet had to create on the host.
//!
//! A bind mount needs an existing target. Container mount paths such as
//! `/var/run/secrets/kubernetes.io/serviceaccount` or `/data` usually do not
//! exist on a test machine, so the kubelet creates them (the mounts themselves
//! stay inside the containers' private mount namespaces). [`Mountpoints`]
//! records every path it created and removes them, if still empty, when the
//! kubelet stops, so the host is left as it was found.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::error::{Error, Result};

/// Host paths the kubelet created as mount points, to remove when it stops.
///
/// A std `Mutex`: it guards a list that is only pushed to, never across `.await`.
#[derive(Debug, Clone, Default)]
pub struct Mountpoints {
    created: Arc<Mutex<Vec<PathBuf>>>,
}

impl Mountpoints {
    /// Make sure `target` exists on the host, as a directory or (for a file
    /// source) an empty file, recording every path this call creates.
    pub fn ensure(&self, target: &Path, is_dir: bool) -> Result<()> {
        let mut missing = Vec::new();
        let mut p = target;
        while fs::symlink_metadata(p).is_err() {
            missing.push(p.to_path_buf());
            match p.parent() {
                Some(parent) => p = parent,
                None => break,
            }
        }
        for path in missing.iter().rev() {
            let last = path == target;
            if last && !is_dir {
                fs::write(path, b"").map_err(Error::io(path))?;
            } else {
                fs::create_dir(path).map_err(Error::io(path))?;
            }
            if let Ok(mut created) = self.created.lock() {
                created.push(path.clone());
            }
        }
        Ok(())
    }

    /// Remove what [`Mountpoints::ensure`] created, newest first; paths that
    /// are no longer empty stay.
    pub fn remove_all(&self) {
        let created = self
            .created
            .lock()
            .map(|mut c| std::mem::take(&mut *c))
            .unwrap_or_default();
        for path in created.iter().rev() {
            let removed = match fs::symlink_metadata(path) {
                Ok(m) if m.is_dir() => fs::remove_dir(path).is_ok(),
                Ok(m) if m.len() == 0 => fs::remove_file(path).is_ok(),
                _ => false,
            };
            if !removed {
                tracing::debug!(path = %path.display(), "mount point left in place");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_what_is_missing_and_removes_only_that() {
        let tmp = std::env::temp_dir().join(format!("kache-mp-{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(tmp.join("existing")).unwrap();
        let mp = Mountpoints::default();
        mp.ensure(&tmp.join("existing/a/b"), true).unwrap();
        mp.ensure(&tmp.join("existing/file.conf"), false).unwrap();
        mp.ensure(&tmp.join("existing/a/b"), true).unwrap();
        assert!(tmp.join("existing/a/b").is_dir());
        assert!(tmp.join("existing/file.conf").is_file());
        // something else put a file in a/: a/ stays, b/ goes
        fs::write(tmp.join("existing/a/keep"), "x").unwrap();
        mp.remove_all();
        assert!(!tmp.join("existing/a/b").exists());
        assert!(!tmp.join("existing/file.conf").exists());
        assert!(tmp.join("existing/a/keep").exists());
        assert!(
            tmp.join("existing").is_dir(),
            "pre-existing directories are never removed"
        );
        let _ = fs::remove_dir_all(&tmp);
    }
}
