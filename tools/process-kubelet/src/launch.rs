//! From a container spec to a launch: environment, argv, mounts, working directory.
//!
//! Run before every start of a container, as the kubelet does: ConfigMaps and
//! Secrets the environment refers to are read again, `$(VAR)` references in
//! `command`/`args` are expanded, the image is mapped to a host binary, and the
//! container's `volumeMounts` become bind mounts. What cannot be done becomes
//! a [`LaunchError`] with the reason a real kubelet would show
//! (`CreateContainerConfigError`, `ErrImagePull`, `RunContainerError`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::Client;

use super::config::KubeletConfig;
use super::downward::PodFacts;
use super::env::{EnvSources, Environment, expand_command, referenced_objects, resolve_env};
use super::events::PodEvents;
use super::mountpoints::Mountpoints;
use super::process::{self, LaunchSpec};
use super::projection::{config_map_data, secret_data};
use super::volumes::VolumeDirs;

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
    /// HOME of the containers.
    pub home: PathBuf,
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
    /// Whether trying again later can help (a ConfigMap may yet be created;
    /// the image map never changes).
    pub retry: bool,
}

/// A run, ready to start.
#[derive(Debug)]
pub struct Launch {
    /// What to start.
    pub spec: LaunchSpec,
    /// The container's environment (for exec probes too).
    pub env: Environment,
    /// `file://<host binary>` of the image.
    pub image_id: String,
}

/// Everything needed to launch the next run of `container`.
pub async fn prepare(pod: &PodContext, container: &Container) -> Result<Launch, LaunchError> {
    let config_error = |message: String| LaunchError {
        reason: "CreateContainerConfigError",
        message,
        retry: true,
    };
    let sources = env_sources(pod, container).await.map_err(config_error)?;
    let base = pod.config.base_env(&pod.hostname, &pod.home);
    let env = resolve_env(container, &pod.facts(), &sources, &base)
        .map_err(|e| config_error(e.to_string()))?;
    let (command, args) = expand_command(container, &env);
    let image = container.image.as_deref();
    let argv = pod
        .config
        .images
        .argv(image, &command, &args, process::exists)
        .map_err(|e| LaunchError {
            reason: "ErrImagePull",
            message: e.to_string(),
            retry: false,
        })?;
    let image_id = image
        .and_then(|i| pod.config.images.lookup(i))
        .map(|p| format!("file://{}", p.display()))
        .unwrap_or_default();
    let mounts = pod
        .volumes
        .mounts_for(container, &env, pod.hosts_file.as_deref(), &pod.mountpoints)
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
