//! From a container spec to a launch: environment, argv, mounts, working directory.
//!
//! Run before every start of a container, as the kubelet does: ConfigMaps and
//! Secrets the environment refers to are read again, `$(VAR)` references in
//! `command`/`args` are expanded, the image is looked up in the image store
//! and unpacked into a fresh root filesystem (or, for an image the store does
//! not hold, mapped to a host binary with `--image`), the user is checked
//! against `runAsNonRoot`, and the container's `volumeMounts` become bind
//! mounts. What cannot be done becomes a [`LaunchError`] with the reason a
//! real kubelet would show (`CreateContainerConfigError`, `ErrImagePull`,
//! `CreateContainerError`, `RunContainerError`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;

use super::config::KubeletConfig;
use super::downward::PodFacts;
use super::env::{EnvSources, expand_command, referenced_objects, resolve_env};
use super::events::PodEvents;
use super::expansion::Environment;
use super::image_run::{RunAs, image_argv, image_base_env, read_only_root, run_as};
use super::image_store::{ImageStore, Reference, StoredImage};
use super::images::ImageMap;
use super::mountpoints::Mountpoints;
use super::process::{self, LaunchSpec, RootFs};
use super::projection::{config_map_data, secret_data};
use super::volumes::{MountRoot, VolumeDirs, ensure_in_root};

/// What a pod's containers share.
pub struct PodContext {
    /// API client.
    pub client: Client,
    /// Kubelet settings.
    pub config: Arc<KubeletConfig>,
    /// The pod when the kubelet accepted it.
    pub pod: Arc<Pod>,
    /// The pod's address (the node's for hostNetwork pods).
    pub pod_ip: Ipv4Addr,
    /// The node's address.
    pub host_ip: Ipv4Addr,
    /// `/var/run/netns/kpod-...`, or `None` for hostNetwork pods.
    pub netns: Option<PathBuf>,
    /// UTS hostname.
    pub hostname: String,
    /// HOME of the containers run as host binaries.
    pub home: PathBuf,
    /// `<run dir>/rootfs`: each container's unpacked image, in a directory named after it.
    pub rootfs_dir: PathBuf,
    /// `<state-dir>/pods/<ns>_<name>`: the logs.
    pub log_dir: PathBuf,
    /// The pod's /etc/hosts (none for hostNetwork pods).
    pub hosts_file: Option<PathBuf>,
    /// The volumes' host directories.
    pub volumes: VolumeDirs,
    /// Registry of mount points created on the host.
    pub mountpoints: Mountpoints,
    /// Prefix of container IDs.
    pub id_prefix: String,
    /// Events about the pod.
    pub events: PodEvents,
}

impl std::fmt::Debug for PodContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodContext")
            .field("pod_ip", &self.pod_ip)
            .field("netns", &self.netns)
            .field("hostname", &self.hostname)
            .field("log_dir", &self.log_dir)
            .finish_non_exhaustive()
    }
}

impl PodContext {
    /// The downward-API view of this pod.
    pub fn facts(&self) -> PodFacts<'_> {
        PodFacts {
            pod: &self.pod,
            pod_ip: Some(self.pod_ip),
            host_ip: self.host_ip,
            node_cpu: &self.config.cpu,
            node_memory: &self.config.memory,
        }
    }
}

/// Why a run cannot start: the container's waiting reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchError {
    /// `CreateContainerConfigError`, `ErrImagePull` or `RunContainerError`.
    pub reason: &'static str,
    /// What is wrong.
    pub message: String,
    /// Whether trying again later can help (a ConfigMap may yet be created,
    /// an image built into the store).
    pub retry: bool,
}

/// A run, ready to start.
#[derive(Debug)]
pub struct Launch {
    /// What to start.
    pub spec: LaunchSpec,
    /// The container's environment (for exec probes too).
    pub env: Environment,
    /// `<name>@sha256:<manifest digest>`, or `file://<host binary>`.
    pub image_id: String,
}

/// Everything needed to launch the next run of `container`: from its image in
/// the store when the store holds it, else from a host binary (`--image`).
pub async fn prepare(pod: &PodContext, container: &Container) -> Result<Launch, LaunchError> {
    let image = find_image(
        pod.config.image_store.as_ref(),
        &pod.config.images,
        container.image.as_deref().unwrap_or(""),
    )?;
    let sources = env_sources(pod, container).await.map_err(config_error)?;
    let kubelet_env = pod.config.base_env(&pod.hostname, &pod.home);
    let base = match &image {
        Some(stored) => image_base_env(
            stored.runtime_config().env().as_deref().unwrap_or(&[]),
            &kubelet_env,
        ),
        None => kubelet_env,
    };
    let env = resolve_env(container, &pod.facts(), &sources, &base)
        .map_err(|e| config_error(e.to_string()))?;
    let (command, args) = expand_command(container, &env);
    match image {
        Some(stored) => prepare_from_image(pod, container, stored, env, &command, &args).await,
        None => prepare_on_host(pod, container, env, &command, &args),
    }
}

fn config_error(message: String) -> LaunchError {
    LaunchError {
        reason: "CreateContainerConfigError",
        message,
        retry: true,
    }
}

fn pull_error(message: String) -> LaunchError {
    // Retried with back-off: the image may yet be built into the store.
    LaunchError {
        reason: "ErrImagePull",
        message,
        retry: true,
    }
}

/// The image `image` names in `store`; `None` when there is no store or the
/// image is mapped to a host binary in `host` instead. Missing from both, or
/// unreadable: `ErrImagePull`.
pub fn find_image(
    store: Option<&ImageStore>,
    host: &ImageMap,
    image: &str,
) -> Result<Option<StoredImage>, LaunchError> {
    let Some(store) = store else {
        return Ok(None);
    };
    match store.find(image) {
        Ok(Some(stored)) => Ok(Some(stored)),
        Ok(None) if host.lookup(image).is_some() => Ok(None),
        Ok(None) => Err(pull_error(format!(
            "Failed to pull image {image:?}: not found in the image store {} (scripts/build-images.sh builds kache's images)",
            store.root().display()
        ))),
        Err(e) => Err(pull_error(format!("Failed to pull image {image:?}: {e}"))),
    }
}

/// A run of `container` chrooted into a fresh unpack of `stored`, as its user.
async fn prepare_from_image(
    pod: &PodContext,
    container: &Container,
    stored: StoredImage,
    env: Environment,
    command: &[String],
    args: &[String],
) -> Result<Launch, LaunchError> {
    let image_config = stored.runtime_config();
    let none = Vec::new();
    let argv = image_argv(
        image_config.entrypoint().as_ref().unwrap_or(&none),
        image_config.cmd().as_ref().unwrap_or(&none),
        command,
        args,
    );
    let create_error = |message: String| LaunchError {
        reason: "CreateContainerError",
        message,
        retry: true,
    };
    if argv.is_empty() {
        return Err(create_error("no command specified".into()));
    }
    let user = image_config.user().as_deref().unwrap_or("");
    let RunAs { uid, gid } = run_as(&pod.pod, container, user).map_err(config_error)?;
    let rootfs = pod.rootfs_dir.join(&container.name);
    let host_hosts = pod.hosts_file.is_none();
    let image_id = format!(
        "{}@{}",
        Reference::parse(container.image.as_deref().unwrap_or("")).name,
        stored.digest
    );
    let dir = rootfs.clone();
    tokio::task::spawn_blocking(move || fresh_root(&stored, &dir, host_hosts))
        .await
        .map_err(|e| create_error(e.to_string()))?
        .map_err(create_error)?;
    let mounts = pod
        .volumes
        .mounts_for(
            container,
            &env,
            pod.hosts_file.as_deref(),
            MountRoot::Image(&rootfs),
        )
        .map_err(|e| config_error(e.to_string()))?;
    let working_dir = [&container.working_dir, image_config.working_dir()]
        .into_iter()
        .flatten()
        .find(|d| !d.is_empty())
        .cloned()
        .unwrap_or_else(|| "/".into());
    ensure_in_root(&rootfs, Path::new(&working_dir), true)
        .map_err(|e| config_error(e.to_string()))?;
    let spec = LaunchSpec {
        argv,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        working_dir: Some(working_dir),
        rootfs: Some(RootFs {
            path: rootfs,
            read_only: read_only_root(container),
            uid,
            gid,
        }),
        mounts,
        hostname: pod.hostname.clone(),
        netns: pod.netns.clone(),
        log: pod.log_dir.join(format!("{}.log", container.name)),
        open_program_first: false,
    };
    Ok(Launch {
        spec,
        env,
        image_id,
    })
}

/// Unpack `stored` into an empty `rootfs` (a new container gets a new writable
/// layer, as with a runtime), with the mount points every container root needs.
/// A host-network pod sees the host's `/etc/hosts`, copied in.
pub fn fresh_root(stored: &StoredImage, rootfs: &Path, host_hosts: bool) -> Result<(), String> {
    match std::fs::remove_dir_all(rootfs) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("{}: {e}", rootfs.display()));
        }
        _ => {}
    }
    ImageStore::unpack(stored, rootfs).map_err(|e| e.to_string())?;
    for dir in ["/proc", "/dev", "/sys"] {
        ensure_in_root(rootfs, Path::new(dir), true).map_err(|e| e.to_string())?;
    }
    if host_hosts {
        ensure_in_root(rootfs, Path::new("/etc"), true).map_err(|e| e.to_string())?;
        let hosts = rootfs.join("etc/hosts");
        // Not through a symlink the image may have put there.
        let _ = std::fs::remove_file(&hosts);
        std::fs::copy("/etc/hosts", &hosts).map_err(|e| format!("{}: {e}", hosts.display()))?;
    }
    Ok(())
}

/// A run of `container` as a host binary mapped with `--image NAME=PATH`.
fn prepare_on_host(
    pod: &PodContext,
    container: &Container,
    env: Environment,
    command: &[String],
    args: &[String],
) -> Result<Launch, LaunchError> {
    let image = container.image.as_deref();
    let argv = pod
        .config
        .images
        .argv(image, command, args, process::exists)
        .map_err(|e| pull_error(e.to_string()))?;
    let image_id = image
        .and_then(|i| pod.config.images.lookup(i))
        .map(|p| format!("file://{}", p.display()))
        .unwrap_or_default();
    let mounts = pod
        .volumes
        .mounts_for(
            container,
            &env,
            pod.hosts_file.as_deref(),
            MountRoot::Host(&pod.mountpoints),
        )
        .map_err(|e| config_error(e.to_string()))?;
    // No chroot: a volume mounted over a host directory hides what is there, the
    // program included (an emptyDir at /tmp with the binary under /tmp).
    let program = Path::new(argv.first().map_or("", String::as_str));
    let open_program_first =
        program.is_absolute() && mounts.iter().any(|m| program.starts_with(&m.target));
    // A runtime starts the process in the image's WORKDIR, "/" here.
    let working_dir = container
        .working_dir
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "/".into());
    pod.mountpoints
        .ensure(Path::new(&working_dir), true)
        .map_err(|e| config_error(e.to_string()))?;
    let spec = LaunchSpec {
        argv,
        env: env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        working_dir: Some(working_dir),
        rootfs: None,
        mounts,
        hostname: pod.hostname.clone(),
        netns: pod.netns.clone(),
        log: pod.log_dir.join(format!("{}.log", container.name)),
        open_program_first,
    };
    Ok(Launch {
        spec,
        env,
        image_id,
    })
}

async fn env_sources(pod: &PodContext, container: &Container) -> Result<EnvSources, String> {
    let (cms, secrets) = referenced_objects(container);
    let ns = pod.pod.metadata.namespace.as_deref().unwrap_or("default");
    let text = |d: BTreeMap<String, Vec<u8>>| {
        d.into_iter()
            .map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned()))
            .collect()
    };
    let mut sources = EnvSources::default();
    for name in cms {
        if let Some(d) = config_map_data(&pod.client, ns, &name)
            .await
            .map_err(|e| e.to_string())?
        {
            sources.config_maps.insert(name, text(d));
        }
    }
    for name in secrets {
        if let Some(d) = secret_data(&pod.client, ns, &name)
            .await
            .map_err(|e| e.to_string())?
        {
            sources.secrets.insert(name, text(d));
        }
    }
    Ok(sources)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_image_is_err_image_pull_unless_mapped_to_a_host_binary() {
        let dir = std::env::temp_dir().join(format!("kache-launch-{}", std::process::id()));
        let store = ImageStore::new(&dir);
        let none = ImageMap::default();
        let err = find_image(Some(&store), &none, "kache/node:0.1.0").expect_err("missing");
        assert_eq!((err.reason, err.retry), ("ErrImagePull", true));
        assert!(err.message.contains("kache/node:0.1.0"), "{}", err.message);
        assert!(
            err.message.contains(&dir.display().to_string()),
            "{}",
            err.message
        );
        let mapped = ImageMap::parse(&["kache/node=/bin/true"]).expect("mapping");
        assert!(matches!(
            find_image(Some(&store), &mapped, "kache/node:0.1.0"),
            Ok(None)
        ));
        assert!(matches!(
            find_image(None, &none, "kache/node:0.1.0"),
            Ok(None)
        ));
    }
}
