//! `kache-operator`: parses flags, sets up tracing, binds the telemetry listener and runs
//! the operator until SIGTERM.

use std::net::SocketAddr;

use anyhow::Context as _;
use clap::{ArgAction, Parser};
use kache_api::env;
use kache_api::logs::LogFormat;
use kache_operator::resources::optional::OperatorPods;
use kache_operator::scope::WatchScope;
use kache_operator::{OperatorConfig, run};

#[derive(Debug, Parser)]
#[command(
    name = "kache-operator",
    version,
    about = "Reconciles kache CacheClusters."
)]
struct Cli {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "KACHE_OPERATOR_LISTEN_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    listen_addr: SocketAddr,

    /// Elect a leader through a Lease, so several replicas are safe.
    #[arg(long, env = "KACHE_OPERATOR_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    leader_elect: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "KACHE_OPERATOR_LEASE_NAME",
        default_value = "kache-operator"
    )]
    lease_name: String,

    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,

    /// This replica's identity in the Lease; defaults to the host (pod) name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,

    /// Cache image for CacheClusters that do not set spec.image.
    #[arg(long, env = "KACHE_NODE_IMAGE", default_value = concat!("kache/node:", env!("CARGO_PKG_VERSION")))]
    node_image: String,

    /// The operator's own namespace: the cache pods' NetworkPolicy lets its pods in.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    operator_namespace: String,

    /// Labels of the operator's own pods, as `key=value,...`: the cache pods'
    /// NetworkPolicy lets the pods with them read the nodes' HTTP port. Empty lets in
    /// every pod of the operator's namespace.
    #[arg(long, env = "KACHE_OPERATOR_POD_LABELS", default_value = "")]
    operator_pod_labels: String,

    /// Watch only these namespaces, comma-separated (`a,b`); empty watches all. With a
    /// list the operator runs one controller per namespace with namespaced watches, so a
    /// Role in each is all the RBAC it needs.
    #[arg(
        long,
        visible_alias = "watch-namespaces",
        env = "KACHE_OPERATOR_WATCH_NAMESPACE",
        default_value = ""
    )]
    watch_namespace: String,

    /// How log lines are written: text, or json (one object a line). Which lines:
    /// RUST_LOG (default info).
    #[arg(long, env = env::LOG_FORMAT, default_value = "text")]
    log_format: LogFormat,
}

/// Log lines go to stdout, filtered by RUST_LOG (default `info`). In JSON, each line is
/// one object: the event's fields at the top level, the current span's (a
/// reconciliation's object) under `span`.
fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt().with_env_filter(filter);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    let identity = match cli.identity {
        Some(identity) if !identity.is_empty() => identity,
        _ => std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("kache-operator-{}", std::process::id())),
    };
    let operator_pods = OperatorPods::new(&cli.operator_namespace, &cli.operator_pod_labels)
        .map_err(|e| anyhow::anyhow!("--operator-pod-labels (KACHE_OPERATOR_POD_LABELS): {e}"))?;
    let watch_scope = WatchScope::parse(&cli.watch_namespace)
        .map_err(|e| anyhow::anyhow!("--watch-namespace (KACHE_OPERATOR_WATCH_NAMESPACE): {e}"))?;
    let config = OperatorConfig {
        node_image: cli.node_image,
        watch_scope,
        leader_election: cli
            .leader_elect
            .then_some((cli.lease_name, cli.lease_namespace)),
        identity,
        operator_pods,
    };
    let listener = tokio::net::TcpListener::bind(cli.listen_addr)
        .await
        .with_context(|| format!("cannot listen on {}", cli.listen_addr))?;
    let client = kube::Client::try_default()
        .await
        .context("cannot configure a Kubernetes client (in-cluster or KUBECONFIG)")?;
    tracing::info!(addr = %cli.listen_addr, watching = %config.watch_scope, ?config, "kache-operator starting");
    run(listener, client, config, shutdown_signal()).await?;
    tracing::info!("kache-operator stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
