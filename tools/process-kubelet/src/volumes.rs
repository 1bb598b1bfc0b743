//! A pod's volumes on the host, and where each container sees them.
//!
//! Every volume becomes a host directory: `emptyDir` and the API-backed kinds
//! under `<pod run dir>/volumes/<name>`, a `persistentVolumeClaim` at the path
//! of the PersistentVolume it is bound to (`hostPath` or `local`), a
//! `hostPath` at its path. [`VolumeDirs::mounts_for`] turns a container's
//! `volumeMounts` into bind mounts for its private mount namespace (see
//! [`super::process`]), plus the pod's own `/etc/hosts`.
//!
//! A bind mount needs its mount point to exist. One that lies inside another
//! mount of the same container is created inside that volume; one in a
//! container's own root filesystem (an unpacked image) is created there; one
//! on the host (e.g. `/var/run/secrets/kubernetes.io/serviceaccount` for a
//! `--image NAME=PATH` container) is created there and recorded in
//! [`Mountpoints`].
//!
//! An `emptyDir` is world-writable (mode 0777), as the kubelet makes it, so a
//! non-root container can write to it.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{
    Container, PersistentVolume, PersistentVolumeClaim, Pod, Volume, VolumeMount,
};
use kube::Client;
use kube::api::Api;

use super::atomic_writer;
use super::downward::PodFacts;
use super::env::Environment;
use super::error::{Error, Result};
use super::mountpoints::Mountpoints;
use super::process::Mount;
use super::projection::Projector;

/// One pod's volumes: their host directories and what renders the API-backed ones.
#[derive(Debug)]
pub struct PodVolumes {
    root: PathBuf,
    dirs: VolumeDirs,
    projector: Projector,
}

/// Where a container's mount points are created.
#[derive(Debug, Clone, Copy)]
pub enum MountRoot<'a> {
    /// On the host's filesystem, recorded for removal when the kubelet stops.
    Host(&'a Mountpoints),
    /// In the container's own root filesystem, which goes away with the pod.
    Image(&'a Path),
}

/// Volume name → host directory (or file).
#[derive(Debug, Clone, Default)]
pub struct VolumeDirs {
    dirs: BTreeMap<String, PathBuf>,
}

impl PodVolumes {
    /// Create every volume of `pod` under `run_dir`. Fails with
    /// `Error::NotReady` while something it needs is missing (a ConfigMap, an
    /// unbound PVC); the caller retries.
    pub async fn setup(
        client: &Client,
        pod: &Pod,
        facts: &PodFacts<'_>,
        run_dir: &Path,
    ) -> Result<Self> {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let mut vols = PodVolumes {
            root: run_dir.join("volumes"),
            dirs: VolumeDirs::default(),
            projector: Projector::new(client.clone(), &ns),
        };
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let dir = vols.volume_dir(client, &ns, volume).await?;
            if Projector::handles(volume) {
                let payload = vols.projector.payload(volume, facts).await?;
                atomic_writer::write(&dir, &payload).map_err(Error::io(&dir))?;
            }
            vols.dirs.dirs.insert(volume.name.clone(), dir);
        }
        Ok(vols)
    }

    async fn volume_dir(&self, client: &Client, ns: &str, volume: &Volume) -> Result<PathBuf> {
        let own = self.root.join(&volume.name);
        if volume.empty_dir.is_some() || Projector::handles(volume) {
            fs::create_dir_all(&own).map_err(Error::io(&own))?;
            if volume.empty_dir.is_some() {
                fs::set_permissions(&own, fs::Permissions::from_mode(0o777))
                    .map_err(Error::io(&own))?;
            }
            return Ok(own);
        }
        if let Some(hp) = &volume.host_path {
            let path = PathBuf::from(&hp.path);
            match hp.type_.as_deref().unwrap_or("") {
                "DirectoryOrCreate" => fs::create_dir_all(&path).map_err(Error::io(&path))?,
                "FileOrCreate" if !path.exists() => {
                    fs::write(&path, b"").map_err(Error::io(&path))?;
                }
                "" | "FileOrCreate" => {}
                _ if path.exists() => {}
                other => {
                    return Err(Error::NotReady(format!(
                        "hostPath {} ({other}) does not exist",
                        hp.path
                    )));
                }
            }
            return Ok(path);
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            return claim_dir(client, ns, &claim.claim_name).await;
        }
        Err(Error::NotReady(format!(
            "volume {:?}: only emptyDir, configMap, secret, downwardAPI, projected, hostPath and persistentVolumeClaim are supported",
            volume.name
        )))
    }

    /// Re-render the API-backed volumes (ConfigMap or Secret changed, token
    /// due for refresh). Unchanged volumes are left alone.
    pub async fn refresh(&mut self, pod: &Pod, facts: &PodFacts<'_>) -> Result<()> {
        for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
            let Some(dir) = self
                .dirs
                .dirs
                .get(&volume.name)
                .filter(|_| Projector::handles(volume))
                .cloned()
            else {
                continue;
            };
            let payload = self.projector.payload(volume, facts).await?;
            if atomic_writer::write(&dir, &payload).map_err(Error::io(&dir))? {
                tracing::info!(volume = %volume.name, pod = ?pod.metadata.name, "volume updated");
            }
        }
        Ok(())
    }

    /// The host directories, for building mounts.
    pub fn dirs(&self) -> &VolumeDirs {
        &self.dirs
    }
}

impl VolumeDirs {
    /// The bind mounts of `container`, parents first, ending with
    /// `/etc/hosts` when `hosts` is given. `subPath` is resolved inside the
    /// volume, and `subPathExpr` expanded with the container's environment.
    pub fn mounts_for(
        &self,
        container: &Container,
        env: &Environment,
        hosts: Option<&Path>,
        root: MountRoot<'_>,
    ) -> Result<Vec<Mount>> {
        let mut mounts = container
            .volume_mounts
            .iter()
            .flatten()
            .map(|vm| self.mount(vm, env))
            .collect::<Result<Vec<_>>>()?;
        if let Some(hosts) = hosts
            && !mounts.iter().any(|m| m.target == Path::new("/etc/hosts"))
        {
            mounts.push(Mount {
                source: hosts.to_path_buf(),
                target: "/etc/hosts".into(),
                read_only: false,
            });
        }
        let mounts = in_mount_order(mounts);
        create_mount_points(&mounts, root)?;
        Ok(mounts)
    }

    /// The bind mount for `vm`. A `subPath` that does not exist yet is
    /// created as a directory in the volume, since a bind mount needs a source.
    fn mount(&self, vm: &VolumeMount, env: &Environment) -> Result<Mount> {
        let dir = self
            .dirs
            .get(&vm.name)
            .ok_or_else(|| Error::NotReady(format!("volumeMount {:?} names no volume", vm.name)))?;
        let sub = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(p), _) if !p.is_empty() => p.clone(),
            (_, Some(expr)) if !expr.is_empty() => env.expand(expr),
            _ => String::new(),
        };
        if Path::new(&sub)
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(Error::NotReady(format!(
                "subPath {sub:?} must be relative and stay inside the volume"
            )));
        }
        let source = if sub.is_empty() {
            dir.clone()
        } else {
            dir.join(&sub)
        };
        if !sub.is_empty() && !source.exists() {
            fs::create_dir_all(&source).map_err(Error::io(&source))?;
        }
        Ok(Mount {
            source,
            target: PathBuf::from(&vm.mount_path),
            read_only: vm.read_only == Some(true),
        })
    }
}

/// Parents first, so a mount inside another volume lands in it. But a mount
/// whose target covers another mount's source (an emptyDir at /tmp while the
/// kubelet's state dir, where volumes and /etc/hosts live, is under /tmp)
/// goes after the others, unless it is also the parent of another target.
fn in_mount_order(mounts: Vec<Mount>) -> Vec<Mount> {
    let hides_a_source: Vec<bool> = mounts
        .iter()
        .map(|m| {
            let covers_source = mounts.iter().any(|o| o.source.starts_with(&m.target));
            let parent_of_target = mounts
                .iter()
                .any(|o| o.target != m.target && o.target.starts_with(&m.target));
            covers_source && !parent_of_target
        })
        .collect();
    let mut keyed: Vec<(bool, usize, Mount)> = mounts
        .into_iter()
        .zip(hides_a_source)
        .map(|(m, hides)| (hides, m.target.components().count(), m))
        .collect();
    keyed.sort_by_key(|(hides, depth, _)| (*hides, *depth));
    keyed.into_iter().map(|(_, _, m)| m).collect()
}

/// Make sure every mount point of the ordered `mounts` exists. One inside an
/// earlier (parent) mount is created in that volume, where the container will
/// see it; one elsewhere goes to `root`.
fn create_mount_points(mounts: &[Mount], root: MountRoot<'_>) -> Result<()> {
    for (i, m) in mounts.iter().enumerate() {
        let is_dir = m.source.is_dir();
        let parent = mounts[..i]
            .iter()
            .rev()
            .find(|p| m.target.starts_with(&p.target));
        match parent.and_then(|p| {
            m.target
                .strip_prefix(&p.target)
                .ok()
                .map(|rel| p.source.join(rel))
        }) {
            Some(inside) => Mountpoints::default().ensure(&inside, is_dir)?,
            None => match root {
                MountRoot::Host(mountpoints) => mountpoints.ensure(&m.target, is_dir)?,
                MountRoot::Image(rootfs) => ensure_in_root(rootfs, &m.target, is_dir)?,
            },
        }
    }
    Ok(())
}

/// Create `target` (a container path) inside `rootfs`. A symlink on the way
/// could point out of the root, and the bind mount would then land on the
/// host: refused, since resolving links inside the root is not done here.
pub fn ensure_in_root(rootfs: &Path, target: &Path, is_dir: bool) -> Result<()> {
    let mut path = rootfs.to_path_buf();
    for component in target.components() {
        match component {
            Component::Normal(name) => path.push(name),
            Component::RootDir | Component::CurDir => continue,
            _ => {
                return Err(Error::NotReady(format!(
                    "mount path {} must be absolute and normal",
                    target.display()
                )));
            }
        }
        if fs::symlink_metadata(&path).is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Error::NotReady(format!(
                "mount path {} crosses a symlink in the image; not supported by the process kubelet",
                target.display()
            )));
        }
    }
    // A throwaway registry: the root filesystem is removed with the pod.
    Mountpoints::default().ensure(&path, is_dir)
}

/// The host directory behind a bound PVC.
async fn claim_dir(client: &Client, ns: &str, claim: &str) -> Result<PathBuf> {
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    let pvc = pvcs
        .get_opt(claim)
        .await?
        .ok_or_else(|| Error::NotReady(format!("persistentvolumeclaim {claim:?} not found")))?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|_| bound);
    let pv_name = pv_name
        .ok_or_else(|| Error::NotReady(format!("persistentvolumeclaim {claim:?} is not bound")))?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let pv = pvs
        .get_opt(&pv_name)
        .await?
        .ok_or_else(|| Error::NotReady(format!("persistentvolume {pv_name:?} not found")))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or_else(|| spec.local.map(|l| l.path))
        .ok_or_else(|| {
            Error::NotReady(format!(
                "persistentvolume {pv_name:?} is neither hostPath nor local"
            ))
        })?;
    let path = PathBuf::from(path);
    fs::create_dir_all(&path).map_err(Error::io(&path))?;
    Ok(path)
}

#[cfg(test)]
mod tests;
