//! kache-operator: reconciles `CacheCluster` resources into a cache that scales without
//! losing data and reports honest status.
//!
//! Layout:
//! - `alerts`: kache's alert rules, for the PrometheusRules and the chart's rule file.
//! - `crd`: the CacheCluster types; `crdgen` writes the CRD YAML from them.
//! - `resources/`: pure builders of every object a CacheCluster owns.
//! - `members`: the member list the operator publishes and the nodes follow.
//! - `report`: the nodes' `GET /v1/cluster`, where progress comes from.
//! - `scale`: the membership state machine (pure).
//! - `status`: phase and conditions from the plan and the reports (pure).
//! - `controller`: observe, decide, apply, report.
//! - `leader`: Lease-based leader election.
//! - `scope`: which namespaces the operator watches (all, or a list).
//! - `metrics` and `telemetry`: Prometheus metrics and health endpoints.

pub mod alerts;
pub mod controller;
pub mod crd;
pub mod leader;
pub mod members;
pub mod metrics;
pub mod report;
pub mod resources;
pub mod scale;
pub mod scope;
pub mod status;
pub mod telemetry;

use std::sync::Arc;

use kube::Client;
use tokio::net::TcpListener;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
    #[error("the published member list cannot be read: {0}")]
    MemberList(String),
    #[error("the spec cannot be run: {0}")]
    Settings(#[from] resources::config::SettingsError),
    #[error("cannot serialize an object: {0}")]
    Serialize(#[source] serde_json::Error),
    #[error("lost the leader lease to {0}")]
    LostLease(String),
    #[error("telemetry server failed: {0}")]
    Telemetry(#[source] std::io::Error),
    #[error(transparent)]
    Certificate(resources::certs::CertError),
    #[error("the system's random number generator failed")]
    Random,
}

impl Error {
    pub fn kube(action: &str, source: kube::Error) -> Self {
        Self::Kube {
            action: action.to_owned(),
            source,
        }
    }

    /// When the API server refused a request for want of a permission (403): what the
    /// operator was doing, and the server's explanation, which names the account, verb,
    /// resource, API group and namespace.
    pub fn forbidden(&self) -> Option<(&str, &str)> {
        match self {
            Self::Kube {
                action,
                source: kube::Error::Api(status),
            } if status.code == 403 => Some((action, &status.message)),
            _ => None,
        }
    }

    /// A low-cardinality label for the failure metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube { .. } if self.forbidden().is_some() => "forbidden",
            Self::Kube { .. } => "kube",
            Self::MemberList(_) => "member_list",
            Self::Settings(_) => "settings",
            Self::Serialize(_) => "serialize",
            Self::LostLease(_) => "lease",
            Self::Telemetry(_) => "telemetry",
            Self::Certificate(_) => "certificate",
            Self::Random => "random",
        }
    }
}

/// Settings of one operator process.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// The cache image for CacheClusters that do not name one.
    pub node_image: String,
    /// The namespaces whose CacheClusters it reconciles.
    pub watch_scope: scope::WatchScope,
    /// Lease name and namespace, or None to run without leader election.
    pub leader_election: Option<(String, String)>,
    /// This replica's identity (the pod name).
    pub identity: String,
    /// Where the operator's pods run, so the cache pods' NetworkPolicy lets them in.
    pub operator_pods: resources::optional::OperatorPods,
}

/// Serves telemetry on `listener` and runs the controller (once leading) until
/// `shutdown` resolves or leadership is lost.
pub async fn run(
    listener: TcpListener,
    client: Client,
    config: OperatorConfig,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let metrics = metrics::Metrics::default();
    let health = telemetry::Health::default();
    let server = tokio::spawn(telemetry::serve(listener, metrics.clone(), health.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|stop| *stop).await;
        }
    };
    let shutdown_task = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });

    let election = config.leader_election.as_ref().map(|(name, namespace)| {
        leader::LeaderElection::new(client.clone(), namespace, name, &config.identity)
    });
    health.set_ready();
    let result = tokio::select! {
        result = lead(election.clone(), client, config, metrics.clone(), stopped) => result,
        Ok(Err(error)) = server => Err(Error::Telemetry(error)),
    };
    metrics.set_leader(false);
    shutdown_task.abort();
    result
}

async fn lead(
    election: Option<leader::LeaderElection>,
    client: Client,
    config: OperatorConfig,
    metrics: metrics::Metrics,
    stopped: impl Future<Output = ()> + Send + Sync + 'static,
) -> Result<()> {
    let stopped = futures::FutureExt::shared(Box::pin(stopped));
    if let Some(election) = &election {
        tokio::select! {
            acquired = election.acquire() => acquired?,
            () = stopped.clone() => return Ok(()),
        }
    }
    metrics.set_leader(true);
    let ctx = Arc::new(controller::Context::new(
        client,
        config.node_image.clone(),
        config.operator_pods.clone(),
        metrics,
        config.identity.clone(),
    ));
    let controller = controller::run(ctx, &config.watch_scope, stopped);
    match election {
        None => {
            controller.await;
            Ok(())
        }
        // When the controller stops (shutdown), the Lease is released for a standby.
        Some(election) => election.run_while_leading(controller).await,
    }
}
