//! The reconciler: observe (member list, pods, node reports), decide (`scale::plan`),
//! apply (server-side apply under one field manager), report (status, events, metrics).
//! Everything it writes comes from the pure builders in `resources/` and the plan.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::crd::{CacheCluster, CacheClusterStatus, Phase};
use crate::members::{MEMBERS_KEY, MemberList};
use crate::metrics::Metrics;
use crate::resources::{self, Names, names::FIELD_MANAGER};
use crate::scale::{self, Desired, Observed, Plan, PodView, Step};
use crate::status;
use crate::{Error, Result, report};

/// How often a cluster in the middle of a change is looked at again: progress comes
/// from polling the nodes, which do not notify the operator.
const REQUEUE_CHANGING: Duration = Duration::from_secs(2);
/// How often a settled cluster is looked at again, to notice a node that stopped
/// answering or restarted.
const REQUEUE_SETTLED: Duration = Duration::from_secs(15);

/// What the reconciler needs: a client, an HTTP client for the nodes, settings, metrics.
#[derive(Clone)]
pub struct Context {
    pub client: Client,
    pub http: reqwest::Client,
    pub recorder: Recorder,
    pub node_image: String,
    pub metrics: Metrics,
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("node_image", &self.node_image)
            .finish_non_exhaustive()
    }
}

impl Context {
    pub fn new(client: Client, node_image: String, metrics: Metrics, identity: String) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.to_owned(),
            instance: Some(identity),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            http: reqwest::Client::new(),
            node_image,
            metrics,
        }
    }
}

/// Runs the controller until `shutdown` resolves. `namespace` limits it to one namespace.
pub async fn run(
    ctx: Arc<Context>,
    namespace: Option<String>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
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
    let owned = watcher::Config::default().labels("app.kubernetes.io/managed-by=kache-operator");
    let cache_pods = watcher::Config::default()
        .labels("app.kubernetes.io/name=kache,app.kubernetes.io/component=cache");
    Controller::new(clusters, watcher::Config::default())
        // Every status patch is a change of the CacheCluster itself; without a debounce
        // each reconcile would trigger the next one at once.
        .with_config(kube::runtime::controller::Config::default().debounce(Duration::from_secs(1)))
        .owns(statefulsets, owned.clone())
        .owns(config_maps, owned)
        // Pods are owned by the StatefulSet, not the CacheCluster: map them by label.
        .watches(pods, cache_pods, |pod| {
            let name = pod.labels().get("app.kubernetes.io/instance")?.clone();
            Some(ObjectRef::<CacheCluster>::new(&name).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|result| {
            let metrics = ctx.metrics.clone();
            async move {
                match result {
                    // Deleted before a reconcile saw it go: drop its gauges.
                    Err(kube::runtime::controller::Error::ObjectNotFound(gone)) => {
                        let namespace = gone.namespace.as_deref().unwrap_or_default();
                        metrics.forget(&format!("{namespace}/{}", gone.name));
                    }
                    Err(error) => tracing::debug!(%error, "reconcile did not finish"),
                    Ok(_) => {}
                }
            }
        })
        .await;
}

#[allow(clippy::needless_pass_by_value)] // the signature kube-runtime calls
pub(crate) fn error_policy(cc: Arc<CacheCluster>, error: &Error, ctx: Arc<Context>) -> Action {
    let key = format!("{}/{}", cc.namespace().unwrap_or_default(), cc.name_any());
    let failures = ctx.metrics.reconcile_failed(&key, error.metric_label());
    tracing::warn!(cluster = %key, %error, failures, "reconcile failed");
    // Exponential backoff: 1 s, 2 s, 4 s ... up to 5 minutes.
    let exponent = failures.saturating_sub(1).min(8);
    Action::requeue(Duration::from_secs(1u64 << exponent).min(Duration::from_secs(300)))
}

pub async fn reconcile(cc: Arc<CacheCluster>, ctx: Arc<Context>) -> Result<Action> {
    let started = Instant::now();
    let names = Names::of(&cc);
    let key = format!("{}/{}", names.namespace, names.cluster);
    if cc.meta().deletion_timestamp.is_some() {
        // Owner references garbage-collect everything it owned.
        ctx.metrics.forget(&key);
        return Ok(Action::await_change());
    }
    let client = ctx.client.clone();
    let ns = names.namespace.as_str();

    let (observed, list_version) = observe(&cc, &ctx, &names).await?;
    let desired = desired(&cc);
    let plan = scale::plan(&desired, &observed);

    if !matches!(plan.step, Step::Invalid { .. }) {
        apply_objects(&cc, &ctx, &plan, list_version).await?;
    }

    let previous = cc.status.clone();
    let now = Timestamp::now();
    let status = status::status(
        &plan,
        &observed,
        &status::Context {
            name: &names.cluster,
            generation: cc.meta().generation,
            previous: previous.as_ref(),
            now,
            rebalance_timeout: parse_timeout(&cc.spec.rebalance_timeout),
            selector: names.selector_string(),
            created_at: cc.meta().creation_timestamp.as_ref().map(|t| t.0),
        },
    );
    let clusters: Api<CacheCluster> = Api::namespaced(client, ns);
    clusters
        .patch_status(
            &names.cluster,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map_err(|e| Error::kube("patch status", e))?;

    publish_events(&cc, &ctx, &plan, previous.as_ref(), &status).await;
    ctx.metrics.observe(&key, &status, started.elapsed());
    Ok(Action::requeue(if plan.step.is_change() {
        REQUEUE_CHANGING
    } else {
        REQUEUE_SETTLED
    }))
}

/// The spec as the state machine sees it.
fn desired(cc: &CacheCluster) -> Desired {
    let replication_factor = cc.spec.replication_factor();
    Desired {
        name: cc.name_any(),
        replicas: u32::try_from(cc.spec.replicas).unwrap_or(0),
        replication_factor,
        partitions: cc.spec.partitions,
    }
}

fn parse_timeout(text: &str) -> Duration {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let number: u64 = digits.parse().unwrap_or(600);
    let seconds = match unit {
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        _ => number,
    };
    Duration::from_secs(seconds)
}

/// Reads the member list (and the resourceVersion it was read at), the cache pods, the
/// pods peers can discover, and every pod's node report.
async fn observe(
    cc: &CacheCluster,
    ctx: &Context,
    names: &Names,
) -> Result<(Observed, Option<String>)> {
    let ns = names.namespace.as_str();
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), ns);
    let members_map = config_maps
        .get_opt(&names.members())
        .await
        .map_err(|e| Error::kube("read the member list", e))?;
    let list_version = members_map
        .as_ref()
        .and_then(|cm| cm.metadata.resource_version.clone());
    let list = match members_map {
        None => None,
        Some(cm) => {
            let yaml = cm
                .data
                .as_ref()
                .and_then(|d| d.get(MEMBERS_KEY))
                .ok_or_else(|| {
                    Error::MemberList(format!("{} has no {MEMBERS_KEY}", names.members()))
                })?;
            Some(
                MemberList::from_yaml(yaml)
                    .map_err(|e| Error::MemberList(format!("{}: {e}", names.members())))?,
            )
        }
    };

    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), ns);
    let selector = names.selector_string();
    let pod_list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list pods", e))?;
    let mut views = BTreeMap::new();
    for pod in pod_list {
        let Some(ordinal) = scale::ordinal_of(&names.cluster, &pod.name_any()) else {
            continue;
        };
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let ip = status.and_then(|s| s.pod_ip.clone());
        views.insert(ordinal, PodView { ip, ready });
    }

    let http_port = cc.spec.service.http_port;
    let fetches = views.iter().filter_map(|(ordinal, view)| {
        let ip = view.ip.clone()?;
        let http = ctx.http.clone();
        Some(async move { (*ordinal, report::fetch(&http, &ip, http_port).await) })
    });
    let mut reports = BTreeMap::new();
    for (ordinal, result) in futures::future::join_all(fetches).await {
        match result {
            Ok(report) => {
                reports.insert(ordinal, report);
            }
            Err(error) => {
                tracing::info!(cluster = %names.cluster, ordinal, %error, "node did not report");
            }
        }
    }
    let discoverable = discoverable_pods(ctx, names).await?;
    let observed = Observed {
        list,
        pods: views,
        reports,
        discoverable,
    };
    Ok((observed, list_version))
}

/// Ordinals of the pods the peer Service's EndpointSlices list with an address: the
/// ones the nodes can find.
async fn discoverable_pods(ctx: &Context, names: &Names) -> Result<BTreeSet<u32>> {
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let selector = format!("kubernetes.io/service-name={}", names.peers());
    let list = slices
        .list(&ListParams::default().labels(&selector))
        .await
        .map_err(|e| Error::kube("list the peer EndpointSlices", e))?;
    Ok(list
        .into_iter()
        .flat_map(|slice| slice.endpoints)
        .filter(|endpoint| !endpoint.addresses.is_empty())
        .filter_map(|endpoint| endpoint.target_ref?.name)
        .filter_map(|pod| scale::ordinal_of(&names.cluster, &pod))
        .collect())
}

/// Applies every owned object. The member list goes first: a scale-down shrinks the
/// StatefulSet only after the list without the departed members is out.
async fn apply_objects(
    cc: &CacheCluster,
    ctx: &Context,
    plan: &Plan,
    list_version: Option<String>,
) -> Result<()> {
    let names = Names::of(cc);
    let ns = names.namespace.as_str();
    let client = &ctx.client;
    apply(client, ns, &resources::rbac::service_account(cc)).await?;
    apply(client, ns, &resources::rbac::role(cc)).await?;
    apply(client, ns, &resources::rbac::role_binding(cc)).await?;
    apply(client, ns, &resources::service::peer_service(cc)).await?;
    apply(client, ns, &resources::service::client_service(cc)).await?;
    let settings = resources::config::node_settings(cc)?;
    let config = resources::config::node_config_map(cc, &settings);
    apply(client, ns, &config).await?;
    if plan.publish {
        // Written at the version it was read at: a second operator that decided on an
        // older view gets a conflict instead of publishing another list for the epoch.
        let mut members = resources::config::members_config_map(cc, &plan.list);
        members.metadata.resource_version = list_version;
        apply(client, ns, &members).await?;
    }
    let hash = resources::config::settings_hash(&settings);
    let sts =
        resources::statefulset::statefulset(cc, plan.statefulset_replicas, &ctx.node_image, &hash);
    apply(client, ns, &sts).await?;

    match resources::pdb::pod_disruption_budget(cc) {
        Some(pdb) => apply(client, ns, &pdb).await?,
        None => delete::<PodDisruptionBudget>(client, ns, &names.cluster).await?,
    }
    match resources::optional::network_policy(cc) {
        Some(policy) => apply(client, ns, &policy).await?,
        None => delete::<NetworkPolicy>(client, ns, &names.cluster).await?,
    }
    apply_service_monitor(cc, ctx).await;
    Ok(())
}

async fn apply<K>(client: &Client, ns: &str, object: &K) -> Result<()>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let name = object.meta().name.clone().unwrap_or_default();
    let mut object = object.clone();
    // Server-side apply needs apiVersion and kind in the body.
    let body = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
    });
    let mut value = serde_json::to_value(&mut object).map_err(Error::Serialize)?;
    if let (Some(target), Some(extra)) = (value.as_object_mut(), body.as_object()) {
        target.extend(extra.clone());
    }
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(value),
    )
    .await
    .map_err(|e| Error::kube(&format!("apply {} {name}", K::kind(&())), e))?;
    Ok(())
}

async fn delete<K>(client: &Client, ns: &str, name: &str) -> Result<()>
where
    K: Resource<Scope = kube::core::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(Error::kube(&format!("delete {} {name}", K::kind(&())), e)),
    }
}

/// The ServiceMonitor is optional and its CRD may not be installed: a failure is a
/// warning event, not a failed reconcile.
async fn apply_service_monitor(cc: &CacheCluster, ctx: &Context) {
    let names = Names::of(cc);
    let resource = resources::optional::service_monitor_resource();
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &names.namespace, &resource);
    let result = match resources::optional::service_monitor(cc) {
        Some(monitor) => api
            .patch(
                &names.cluster,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&monitor),
            )
            .await
            .map(|_| ()),
        None => match api.delete(&names.cluster, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(e),
        },
    };
    if let Err(error) = result
        && cc.spec.monitoring.service_monitor
    {
        let note =
            format!("cannot apply the ServiceMonitor (is prometheus-operator installed?): {error}");
        emit(
            ctx,
            cc,
            EventType::Warning,
            "ServiceMonitorFailed",
            "ApplyServiceMonitor",
            note,
        )
        .await;
    }
}

/// One event per transition: a new list, a StatefulSet resize, a phase change.
async fn publish_events(
    cc: &CacheCluster,
    ctx: &Context,
    plan: &Plan,
    previous: Option<&CacheClusterStatus>,
    status: &CacheClusterStatus,
) {
    if plan.publish {
        let departing: Vec<&str> = plan.list.departing_ids().collect();
        let note = format!(
            "epoch {}: members {}{}",
            plan.list.epoch,
            plan.list.member_ids().collect::<Vec<_>>().join(", "),
            if departing.is_empty() {
                String::new()
            } else {
                format!("; handing off: {}", departing.join(", "))
            }
        );
        // The recorder folds events with the same reason and action into one series that
        // keeps the first note, so the action names the epoch.
        let action = format!("PublishEpoch{}", plan.list.epoch);
        emit(
            ctx,
            cc,
            EventType::Normal,
            "MembersPublished",
            &action,
            note,
        )
        .await;
    }
    let previous_phase = previous.map(|s| s.phase);
    if previous_phase != Some(status.phase) {
        let (kind, note) = match (&plan.step, status.phase) {
            (_, Phase::Available) => {
                let moved = previous
                    .and_then(|s| s.rebalance.as_ref())
                    .is_some_and(|r| r.active);
                let took = status
                    .rebalance
                    .as_ref()
                    .and_then(|r| {
                        Some(
                            r.completed_at
                                .as_ref()?
                                .0
                                .duration_since(r.started_at.as_ref()?.0),
                        )
                    })
                    .filter(|_| moved)
                    .map(|d| format!(" (the move took {:.1}s)", d.as_secs_f64()))
                    .unwrap_or_default();
                (
                    EventType::Normal,
                    format!(
                        "every member holds its partitions at epoch {}{took}",
                        status.epoch
                    ),
                )
            }
            (Step::ScaleDownBlocked { unreachable }, _) => (
                EventType::Warning,
                format!(
                    "{} do not answer and may hold data; keeping their pods",
                    unreachable.join(", ")
                ),
            ),
            (Step::Invalid { reason }, _) => (EventType::Warning, reason.clone()),
            (Step::Degraded { not_joined }, _) => (
                EventType::Warning,
                format!(
                    "{} not ready or not holding their partitions",
                    not_joined.join(", ")
                ),
            ),
            _ => (
                EventType::Normal,
                format!("phase {}", status.phase.as_str()),
            ),
        };
        let action = format!("Epoch{}", status.epoch);
        emit(ctx, cc, kind, status.phase.as_str(), &action, note).await;
    }
}

async fn emit(
    ctx: &Context,
    cc: &CacheCluster,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: action.to_owned(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &cc.object_ref(&())).await {
        tracing::warn!(%error, reason, "could not record an event");
    }
}

#[cfg(test)]
#[path = "controller_tests.rs"]
mod tests;
