//! The process kubelet: runs the pods bound to one Node as local processes.
//!
//! There is no container runtime on the test machines. Each pod gets a
//! network namespace with a real IP on the `kache0` bridge, each container is
//! a process in that namespace, chrooted into its image's unpacked layers
//! (from a local store of OCI layouts) with its volumes bind-mounted in a
//! private mount namespace, and the pod's status is reported through the API
//! as a real kubelet would, so Deployments, StatefulSets, Services,
//! EndpointSlices and in-cluster clients behave as in a real cluster. What it
//! supports and what it does not is in this crate's `README.md`.
//!
//! # Layout
//!
//! - [`config`]: the settings ([`KubeletConfig`]).
//! - [`node`]: the Node object, its Lease and heartbeat.
//! - [`manager`]: the pod watch and one worker per pod.
//! - [`pod`]: a pod's lifecycle: sandbox, volumes, containers, status, teardown.
//! - [`sandbox`]: a pod's network namespace, IP, hostname and `/etc/hosts`.
//! - [`container`]: one container's start/probe/restart/stop loop.
//! - [`restart`]: restart policy, back-off and grace periods.
//! - [`events`]: Kubernetes Events about pods (`kubectl describe pod`).
//! - [`launch`]: from a container spec to a launch (env, argv, mounts).
//! - [`process`]: launching a process in the pod's namespaces; signals.
//! - [`prober`] and [`probe`]: running probes, and their settings and thresholds.
//! - [`snapshot`], [`status`] and [`phase`]: container snapshots, the pure
//!   `PodStatus` builder and the phase rules.
//! - [`env`](mod@env), [`expansion`] and [`downward`]: container environment, `$(VAR)`
//!   expansion, fieldRefs.
//! - [`image_store`]: OCI image layouts on disk, found by reference and
//!   unpacked into a container's root filesystem.
//! - [`image_run`]: what a container from an image runs (argv, env, user).
//! - [`images`]: image name → host binary (`--image NAME=PATH`).
//! - [`netns`] and [`ipam`]: network namespaces, veths, pod IPs.
//! - [`volumes`], [`projection`], [`atomic_writer`], [`mountpoints`]: volumes
//!   on the host, API-backed volume contents (incl. the service-account
//!   token), atomic updates, mount points created on the host.
//! - [`provisioner`]: local PersistentVolumes for PersistentVolumeClaims.
//! - [`error`]: the error type.
//! - `src/bin/kache-kubelet.rs`: the binary. It parses flags into a
//!   [`KubeletConfig`] and calls [`run`]; `tests/k8s/cluster.sh kubelet-up`
//!   starts it.
//! - `src/bin/kache-e2e-app.rs`: a small HTTP program that
//!   `tests/k8s/kubelet-smoke.sh` runs as a pod to check the kubelet (probes,
//!   service-account token, in-cluster API access, persistence).
//!
//! # Running it
//!
//! [`run`] runs until a shutdown future resolves, then stops every pod and
//! removes every network namespace it created. [`Kubelet::start`] does the
//! same on a background task, for tests that want a kubelet in-process.

pub mod atomic_writer;
pub mod config;
pub mod container;
pub mod downward;
pub mod env;
pub mod error;
pub mod events;
pub mod expansion;
pub mod image_run;
pub mod image_store;
pub mod images;
pub mod ipam;
pub mod launch;
pub mod manager;
pub mod mountpoints;
pub mod netns;
pub mod node;
pub mod phase;
pub mod pod;
pub mod probe;
mod probe_tls;
pub mod prober;
pub mod process;
pub mod projection;
pub mod provisioner;
pub mod restart;
pub mod sandbox;
pub mod snapshot;
pub mod status;
pub mod volumes;

use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;

use kube::Client;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::KubeletConfig;
pub use error::{Error, Result};
pub use image_store::ImageStore;
pub use images::ImageMap;

use ipam::{IpPool, Ipam, Ipv4Cidr};
use mountpoints::Mountpoints;

/// What every pod worker shares.
pub struct Context {
    /// API client (the admin kubeconfig: this is test infrastructure).
    pub client: Client,
    /// Settings.
    pub config: Arc<KubeletConfig>,
    /// Pod IP allocator.
    pub ipam: Ipam,
    /// Mount points created on the host.
    pub mountpoints: Mountpoints,
    /// The bridge's address (the pods' gateway) and prefix.
    pub bridge: Ipv4Cidr,
    /// The node's IP.
    pub node_ip: Ipv4Addr,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.config)
            .field("ipam", &self.ipam)
            .field("bridge", &self.bridge)
            .field("node_ip", &self.node_ip)
            .finish_non_exhaustive()
    }
}

/// Check the settings against the host: the bridge exists, the pod CIDR lies
/// in its subnet and excludes its address.
async fn prepare(client: Client, config: KubeletConfig) -> Result<Context> {
    let bridge = netns::bridge_address(&config.bridge).await?;
    if !bridge.covers(&config.pod_cidr) {
        return Err(Error::Config(format!(
            "pod CIDR {} is not inside bridge {} subnet {}/{}",
            config.pod_cidr,
            config.bridge,
            bridge.network(),
            bridge.prefix()
        )));
    }
    let node_ip = config.node_ip.unwrap_or(bridge.addr());
    let pool = IpPool::new(config.pod_cidr, &[bridge.addr(), node_ip]);
    std::fs::create_dir_all(&config.state_dir).map_err(Error::io(&config.state_dir))?;
    Ok(Context {
        client,
        config: Arc::new(config),
        ipam: Ipam::new(pool),
        mountpoints: Mountpoints::default(),
        bridge,
        node_ip,
    })
}

/// Run the kubelet until `shutdown` resolves. Then stop every pod (within
/// each pod's grace period, capped by `shutdown_grace`), report the Node
/// NotReady, and remove the network namespaces and mount points it created.
pub async fn run(
    client: Client,
    config: KubeletConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    let ctx = Arc::new(prepare(client, config).await?);
    let config = ctx.config.clone();
    // A previous run that crashed may have left sandboxes behind.
    netns::cleanup_recorded(&config.netns_markers()).await;
    if let Some(store) = &config.image_store {
        let images = store.references();
        tracing::info!(store = %store.root().display(), ?images, "image store");
    }
    for (name, path) in config.images.iter() {
        tracing::info!(image = name, binary = %path.display(), "image mapping");
    }
    let node_uid = node::register(&ctx.client, &config, ctx.node_ip).await?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let heartbeat = tokio::spawn(node::heartbeat(
        ctx.client.clone(),
        (*config).clone(),
        node_uid,
        stop_rx.clone(),
    ));
    let mut provisioners = Vec::new();
    if config.provision_volumes {
        let scopes: Vec<Option<String>> = if config.provision_namespaces.is_empty() {
            vec![None]
        } else {
            config
                .provision_namespaces
                .iter()
                .cloned()
                .map(Some)
                .collect()
        };
        for ns in scopes {
            let (client, root, node) = (
                ctx.client.clone(),
                config.volume_root(),
                config.node_name.clone(),
            );
            provisioners.push(tokio::spawn(provisioner::run(
                client,
                ns,
                root,
                node,
                stop_rx.clone(),
            )));
        }
    }
    let pods = tokio::spawn(manager::run(ctx.clone(), stop_rx));
    tracing::info!(node = %config.node_name, pod_cidr = %config.pod_cidr, "kubelet running");

    shutdown.await;
    tracing::info!("kubelet shutting down");
    stop_tx.send_replace(true);
    let _ = pods.await;
    let _ = heartbeat.await;
    for p in provisioners {
        let _ = p.await;
    }
    netns::cleanup_recorded(&config.netns_markers()).await;
    ctx.mountpoints.remove_all();
    tracing::info!("kubelet stopped");
    Ok(())
}

/// A kubelet running on a background task, for in-process tests.
#[derive(Debug)]
pub struct Kubelet {
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<()>>,
}

impl Kubelet {
    /// Start [`run`] on a task.
    pub fn start(client: Client, config: KubeletConfig) -> Self {
        let (stop, mut rx) = watch::channel(false);
        let shutdown = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        Kubelet {
            stop,
            task: tokio::spawn(run(client, config, shutdown)),
        }
    }

    /// Stop it and wait until every pod is stopped and cleaned up.
    pub async fn stop(self) -> Result<()> {
        self.stop.send_replace(true);
        self.task
            .await
            .map_err(|e| Error::Config(format!("kubelet task failed: {e}")))?
    }
}
