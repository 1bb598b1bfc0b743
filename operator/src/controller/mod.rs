//! The reconciler: observe (member list, pods, node reports), decide (`scale::plan`),
//! apply (server-side apply under one field manager), report (status, events, metrics).
//! Everything it writes comes from the pure builders in `resources/` and the plan.
//!
//! - `observe`: reads what the plan depends on.
//! - `apply`: writes the owned objects and the status.
//! - `events`: one Kubernetes event per transition.
//! - `secrets`: the CA, certificates and token Secrets, before the StatefulSet.
//! - `cert_manager`: the cert-manager Certificates, when they are the peer source.
//! - `backoff`: when to retry a failed reconcile.

mod apply;
pub mod backoff;
mod cert_manager;
mod events;
mod observe;
mod secrets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};

use crate::crd::{CacheCluster, CacheClusterStatus};
use crate::metrics::{ClusterSpec, Metrics};
use crate::resources::config::SettingsError;
use crate::resources::optional::OperatorPods;
use crate::resources::{self, Names, names};
use crate::scale::{self, Desired, Step};
use crate::scope::WatchScope;
use crate::{Error, Result, status};
use backoff::Backoff;

/// How often a cluster in the middle of a change is looked at again: progress comes
/// from polling the nodes, which do not notify the operator.
const REQUEUE_CHANGING: Duration = Duration::from_secs(2);
/// How often a settled cluster is looked at again, to notice a node that stopped
/// answering or restarted, and a certificate cert-manager renewed (the operator copies it
/// into `<name>-peer-tls` then; docs/operations.md gives the latency).
const REQUEUE_SETTLED: Duration = Duration::from_secs(15);
/// How long a controller may take to finish its in-flight reconciles after shutdown. Well
/// inside the chart's terminationGracePeriodSeconds (30 s), which must also leave time to
/// release the Lease.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// What the reconciler needs: a client, an HTTP client for the nodes, settings, metrics.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub http: reqwest::Client,
    pub recorder: Recorder,
    pub node_image: String,
    /// Where the operator's pods are, for the NetworkPolicy rule that lets them in.
    pub operator_pods: OperatorPods,
    pub metrics: Metrics,
    pub backoff: Backoff,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("node_image", &self.node_image)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(
        client: Client,
        node_image: String,
        operator_pods: OperatorPods,
        metrics: Metrics,
        identity: String,
    ) -> Self {
        let reporter = Reporter {
            controller: names::FIELD_MANAGER.to_owned(),
            instance: Some(identity),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            http: reqwest::Client::new(),
            node_image,
            operator_pods,
            metrics,
            backoff: Backoff::default(),
        }
    }

    /// Drops what is kept about a cluster that is gone.
    fn forget(&self, key: &str) {
        self.metrics.forget(key);
        self.backoff.reset(key);
    }
}

/// Runs the controllers until `shutdown` resolves: one with cluster-wide watches for
/// every namespace, or one per listed namespace with namespaced watches only (so a Role
/// in each namespace is enough). The controllers of a list are independent: one whose
/// watches are refused (its Role is missing) retries with backoff and says in the log
/// which permission it lacks, while the others reconcile as usual.
pub async fn run(
    ctx: Arc<Context>,
    scope: &WatchScope,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    match scope {
        WatchScope::AllNamespaces => watch(ctx, None, shutdown).await,
        WatchScope::Namespaces(namespaces) => {
            let controllers = namespaces
                .iter()
                .map(|namespace| watch(ctx.clone(), Some(namespace.clone()), shutdown.clone()));
            futures::future::join_all(controllers).await;
        }
    }
}

/// One controller: every watch in `namespace`, or cluster-wide when None.
async fn watch(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Clone + Send + Sync + 'static,
) {
    let client = ctx.client.clone();
    let (clusters, statefulsets, config_maps, pods) = match &namespace {
        Some(ns) => (
            Api::<CacheCluster>::namespaced(client.clone(), ns),
            Api::<StatefulSet>::namespaced(client.clone(), ns),
            Api::<ConfigMap>::namespaced(client.clone(), ns),
            Api::<Pod>::namespaced(client.clone(), ns),
        ),
        None => (
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
            Api::all(client.clone()),
        ),
    };
    let scope = namespace.clone().unwrap_or_else(|| "(all)".to_owned());
    tracing::info!(namespace = %scope, "watching CacheClusters");
    let owned = watcher::Config::default().labels(&names::owned_selector());
    let cache_pods = watcher::Config::default().labels(&names::cache_pods_selector());
    let controller = Controller::new(clusters, watcher::Config::default())
        // Every status patch is a change of the CacheCluster itself; without a debounce
        // each reconcile would trigger the next one at once.
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(1)))
        .owns(statefulsets, owned.clone())
        .owns(config_maps, owned)
        // Pods are owned by the StatefulSet, not the CacheCluster: map them by label.
        .watches(pods, cache_pods, |pod| {
            let name = names::cluster_of(pod.labels())?.to_owned();
            Some(ObjectRef::<CacheCluster>::new(&name).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            let ctx = ctx.clone();
            let namespace = namespace.clone();
            async move {
                match result {
                    // Deleted before a reconcile saw it go: drop what is kept about it.
                    Err(kube::runtime::controller::Error::ObjectNotFound(gone)) => {
                        let namespace = gone.namespace.as_deref().unwrap_or_default();
                        ctx.forget(&format!("{namespace}/{}", gone.name));
                    }
                    // A watch failed; the controller retries it with backoff.
                    Err(kube::runtime::controller::Error::QueueError(error)) => {
                        tracing::warn!(
                            namespace = namespace.as_deref().unwrap_or("(all)"),
                            "{}",
                            watch_failure(namespace.as_deref(), &error)
                        );
                    }
                    Err(error) => tracing::debug!(%error, "reconcile did not finish"),
                    Ok(_) => {}
                }
            }
        });
    // kube-runtime's applier runs nothing until its store of CacheClusters has listed
    // once, and keeps waiting for that after a shutdown: a controller whose list is
    // refused would never stop. It has no reconcile in flight, and any other finishes
    // its own well within the grace, so dropping it then loses nothing.
    tokio::select! {
        () = controller => {}
        () = async {
            shutdown.await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        } => tracing::warn!(
            namespace = %scope,
            grace = ?SHUTDOWN_GRACE,
            "the controller did not stop within the grace after shutdown; stopped it"
        ),
    }
}

/// What a failed watch means, for the log. A refusal (403) quotes the API server, which
/// names the account, verb, resource and namespace, and says where the grant comes from.
fn watch_failure(namespace: Option<&str>, error: &watcher::Error) -> String {
    let scope = namespace.map_or_else(
        || "cluster-wide".to_owned(),
        |ns| format!("in namespace {ns}"),
    );
    let forbidden = match error {
        watcher::Error::InitialListFailed(kube::Error::Api(status))
        | watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status))
            if status.code == 403 =>
        {
            Some(status.message.as_str())
        }
        watcher::Error::WatchError(status) if status.code == 403 => Some(status.message.as_str()),
        _ => None,
    };
    match (forbidden, namespace) {
        (Some(message), Some(_)) => format!(
            "the operator may not watch {scope}, so its CacheClusters are not reconciled: \
             {message}. Grant the operator's Role there (chart: add the namespace to \
             watchNamespaces) or remove the namespace from --watch-namespace; retrying"
        ),
        (Some(message), None) => format!(
            "the operator may not watch {scope}, so no CacheCluster is reconciled: \
             {message}. Watching every namespace needs the ClusterRole (chart: \
             watchAllNamespaces=true); or list namespaces with --watch-namespace; retrying"
        ),
        (None, _) => format!("a watch {scope} failed, retrying: {error}"),
    }
}

#[expect(
    clippy::needless_pass_by_value,
    reason = "the signature kube-runtime calls"
)]
pub(crate) fn error_policy(cc: Arc<CacheCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", cc.namespace().unwrap_or_default(), cc.name_any());
    ctx.metrics.reconcile_failed(error.metric_label());
    let failures = ctx.backoff.fail(&key);
    tracing::warn!(cluster = %key, %error, failures, "reconcile failed");
    Action::requeue(backoff::delay(failures))
}

pub async fn reconcile(cc: Arc<CacheCluster>, ctx: Arc<Context>) -> Result<Action> {
    let result = reconcile_cluster(&cc, &ctx).await;
    // A refusal is a missing grant, not a passing fault: say which on the CacheCluster,
    // where `kubectl describe` shows it (if the operator may record events there).
    if let Err(error) = &result
        && let Some((action, message)) = error.forbidden()
    {
        events::forbidden(&cc, &ctx, action, message).await;
    }
    result
}

async fn reconcile_cluster(cc: &CacheCluster, ctx: &Context) -> Result<Action> {
    let started = Instant::now();
    let names = Names::of(cc);
    let key = names.key();
    if cc.meta().deletion_timestamp.is_some() {
        // Owner references garbage-collect everything it owned.
        ctx.forget(&key);
        return Ok(Action::await_change());
    }

    let (observed, list_version) = observe::observe(cc, ctx, &names).await?;
    // A setting the schema let through but the operator cannot read (an object written
    // before a rule existed, or one CEL cannot check) changes nothing, and the status and
    // an event say which field to fix.
    let settings = parse_timeout(&cc.spec.rebalance_timeout)
        .and_then(|timeout| resources::config::node_settings(cc).map(|_| timeout));
    let (plan, rebalance_timeout) = match settings {
        Ok(timeout) => (scale::plan(&desired(cc), &observed), timeout),
        Err(err) => (
            scale::invalid(&desired(cc), &observed, err.to_string()),
            DEFAULT_REBALANCE_TIMEOUT,
        ),
    };
    let security = resources::security::resolve(cc, observe::running(ctx, &names).await?);
    let mut findings = secrets::Findings::default();
    if !matches!(plan.step, Step::Invalid { .. }) {
        // Certificates first: a pod the StatefulSet is about to add has its own already.
        let pods = pods_to_certify(cc, &plan, &observed);
        findings = secrets::ensure(cc, ctx, &security, &pods, Timestamp::now()).await?;
        // cert-manager issues in its own time: a new pod waits for its certificate.
        let replicas = resources::cert_manager::statefulset_replicas(
            plan.statefulset_replicas,
            existing_pods(&observed),
            findings.certified(),
        );
        apply::objects(cc, ctx, &plan, replicas, list_version, &security).await?;
    }

    let previous = cc.status.as_ref();
    let mut status_ctx = status_context(cc, &names, previous, rebalance_timeout, Timestamp::now());
    let certificates = findings
        .cert_manager
        .as_ref()
        .map(|outcome| status::CertificatesView {
            unavailable: outcome.unavailable.as_deref(),
            pending: &outcome.pending,
        })
        .unwrap_or_default();
    status_ctx.security = Some(status::SecurityView {
        security: &security,
        problems: &findings.problems,
        certificates,
    });
    let status = status::status(&plan, &observed, &status_ctx);
    apply::status(ctx, &names, &status).await?;

    // Found again here (the status keeps only the last): each gets its own event.
    let losses = status::data_loss::losses(&names.cluster, &observed, previous);
    for loss in &losses {
        tracing::warn!(cluster = %key, "{}", loss.describe());
    }
    events::publish(cc, ctx, &plan, previous, &status, &losses).await;
    ctx.backoff.reset(&key);
    let spec = ClusterSpec {
        replicas_desired: cc.spec.replicas,
        rebalance_timeout,
    };
    ctx.metrics.observe(&key, spec, &status, started.elapsed());
    let waiting_for_certificates = findings
        .cert_manager
        .as_ref()
        .is_some_and(|outcome| !outcome.pending.is_empty());
    Ok(Action::requeue(
        if plan.step.is_change() || waiting_for_certificates {
            REQUEUE_CHANGING
        } else {
            REQUEUE_SETTLED
        },
    ))
}

/// The pods that need a certificate: every ordinal up to the largest of the spec, the
/// StatefulSet about to be applied and the pods that exist (a leaving member keeps its
/// certificate until its pod is gone).
fn pods_to_certify(
    cc: &CacheCluster,
    plan: &scale::Plan,
    observed: &scale::Observed,
) -> Vec<String> {
    let names = Names::of(cc);
    let spec = u32::try_from(cc.spec.replicas).unwrap_or(0);
    let count = plan
        .statefulset_replicas
        .max(spec)
        .max(existing_pods(observed));
    (0..count).map(|ordinal| names.pod(ordinal)).collect()
}

/// One more than the highest ordinal of a pod that exists: the StatefulSet size no
/// certificate may shrink.
fn existing_pods(observed: &scale::Observed) -> u32 {
    observed.pods.keys().next_back().map_or(0, |last| last + 1)
}

/// The spec as the state machine sees it.
fn desired(cc: &CacheCluster) -> Desired {
    Desired {
        name: cc.name_any(),
        replicas: u32::try_from(cc.spec.replicas).unwrap_or(0),
        replication_factor: cc.spec.replication_factor(),
        partitions: cc.spec.partitions,
    }
}

/// What the status depends on besides the plan and the observation.
fn status_context<'a>(
    cc: &CacheCluster,
    names: &'a Names,
    previous: Option<&'a CacheClusterStatus>,
    rebalance_timeout: Duration,
    now: Timestamp,
) -> status::Context<'a> {
    status::Context {
        name: &names.cluster,
        generation: cc.meta().generation,
        previous,
        now,
        rebalance_timeout,
        selector: names.selector_string(),
        created_at: cc.meta().creation_timestamp.as_ref().map(|t| t.0),
        security: None,
    }
}

/// The deadline the status uses while spec.rebalanceTimeout cannot be read (the cluster
/// is Invalid then, and nothing moves).
const DEFAULT_REBALANCE_TIMEOUT: Duration = Duration::from_secs(600);

/// spec.rebalanceTimeout (`90s`, `10m`, `2h`: a positive whole number and a unit, s, m
/// or h, as the CRD's pattern says) as a duration. Anything else is refused rather than
/// read as some default the user did not ask for.
fn parse_timeout(text: &str) -> Result<Duration, SettingsError> {
    let refused = || SettingsError::RebalanceTimeout(text.to_owned());
    let (digits, seconds_per_unit) = [("s", 1), ("m", 60), ("h", 3_600)]
        .into_iter()
        .find_map(|(unit, seconds)| Some((text.strip_suffix(unit)?, seconds)))
        .ok_or_else(refused)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refused());
    }
    let number: u64 = digits.parse().map_err(|_| refused())?;
    match number.checked_mul(seconds_per_unit) {
        Some(seconds) if seconds > 0 => Ok(Duration::from_secs(seconds)),
        _ => Err(refused()),
    }
}

#[cfg(test)]
mod tests;
