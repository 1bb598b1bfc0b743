//! `kache-kubelet`: the process kubelet for the local control plane.
//!
//! Parses flags, sets up logging, builds the API client from the kubeconfig
//! and runs [`process_kubelet::run`] until SIGTERM or Ctrl-C. Must run as
//! root (it creates network namespaces and veths).

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use kube::config::{KubeConfigOptions, Kubeconfig};
use process_kubelet::{ImageMap, ImageStore, KubeletConfig, node};

/// Run the pods bound to a Node as local processes, each in its own network namespace.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Kubeconfig to use (the admin kubeconfig of tests/k8s/cluster.sh).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,

    /// Name of the Node to register.
    #[arg(long, env = "KACHE_KUBELET_NODE_NAME", default_value = "kache-local")]
    node_name: String,

    /// The Node's InternalIP (default: the bridge's address).
    #[arg(long)]
    node_ip: Option<Ipv4Addr>,

    /// Bridge the pods' veths join.
    #[arg(long, default_value = "kache0")]
    bridge: String,

    /// Pod IPs are allocated from this CIDR (inside the bridge's subnet).
    #[arg(long, default_value = "10.88.1.0/24")]
    pod_cidr: String,

    /// Directory of OCI image layouts (scripts/build-images.sh writes target/images/oci):
    /// containers run chrooted in their image, unpacked. Images it lacks fall back to --image.
    #[arg(long, value_name = "DIR", env = "KACHE_KUBELET_IMAGE_STORE")]
    image_store: Option<PathBuf>,

    /// Image to host binary, NAME=PATH (NAME without tag), repeatable, or comma-separated in the env var.
    #[arg(
        long = "image",
        value_name = "NAME=PATH",
        env = "KACHE_KUBELET_IMAGES",
        value_delimiter = ','
    )]
    images: Vec<String>,

    /// Pod logs (<state-dir>/pods/<ns>_<pod>/<container>.log), volumes and PVs.
    #[arg(long, default_value = "/tmp/kache-k8s/kubelet")]
    state_dir: PathBuf,

    /// KUBERNETES_SERVICE_HOST given to every container.
    #[arg(long, default_value = "10.88.0.1")]
    api_host: String,

    /// KUBERNETES_SERVICE_PORT given to every container.
    #[arg(long, default_value_t = 6443)]
    api_port: u16,

    /// Node capacity: CPU.
    #[arg(long, default_value = "32")]
    cpu: String,

    /// Node capacity: memory.
    #[arg(long, default_value = "64Gi")]
    memory: String,

    /// Node capacity: pods.
    #[arg(long, default_value_t = 110)]
    max_pods: u32,

    /// Seconds between Lease renewals and Node status updates.
    #[arg(long, default_value_t = 10)]
    heartbeat_secs: u64,

    /// Seconds between refreshes of ConfigMap/Secret/projected volumes.
    #[arg(long, default_value_t = 5)]
    volume_refresh_secs: u64,

    /// Longest delay, in seconds, between restarts of a crashing container.
    #[arg(long, default_value_t = 20)]
    max_backoff_secs: u64,

    /// Cap, in seconds, on each pod's grace period when the kubelet stops.
    #[arg(long, default_value_t = 10)]
    shutdown_grace_secs: u64,

    /// Do not provision PersistentVolumes for pending claims.
    #[arg(long)]
    no_provisioner: bool,

    /// Provision only claims in these namespaces (repeatable; default: all).
    #[arg(long = "provision-namespace", value_name = "NAMESPACE")]
    provision_namespaces: Vec<String>,

    /// Register the Node with these taints, KEY[=VALUE]:EFFECT (repeatable).
    #[arg(
        long = "register-with-taints",
        value_name = "TAINT",
        value_delimiter = ','
    )]
    taints: Vec<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,kube=warn")),
        )
        .init();
    let args = Args::parse();

    let client_config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(client_config)?;

    let defaults = KubeletConfig::default();
    let config = KubeletConfig {
        node_name: args.node_name,
        node_ip: args.node_ip,
        bridge: args.bridge,
        pod_cidr: args.pod_cidr.parse()?,
        image_store: args.image_store.map(ImageStore::new),
        images: ImageMap::parse(&args.images)?,
        state_dir: args.state_dir,
        api_host: args.api_host,
        api_port: args.api_port,
        cpu: args.cpu,
        memory: args.memory,
        max_pods: args.max_pods,
        heartbeat: Duration::from_secs(args.heartbeat_secs.max(1)),
        volume_refresh: Duration::from_secs(args.volume_refresh_secs.max(1)),
        backoff_max: Duration::from_secs(args.max_backoff_secs.max(1)),
        shutdown_grace: Duration::from_secs(args.shutdown_grace_secs),
        provision_volumes: !args.no_provisioner,
        provision_namespaces: args.provision_namespaces,
        taints: args
            .taints
            .iter()
            .map(|t| {
                node::parse_taint(t)
                    .with_context(|| format!("bad taint {t:?} (KEY[=VALUE]:EFFECT)"))
            })
            .collect::<anyhow::Result<_>>()?,
        ..defaults
    };
    process_kubelet::run(client, config, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = ctrl_c.await;
        }
    }
}
