//! Apply: writes what the plan decided, with server-side apply under the operator's one
//! field manager, and the status. The member list goes before the StatefulSet: a
//! scale-down shrinks the StatefulSet only after the list without the departed members
//! is out.

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{Context, events};
use crate::crd::{CacheCluster, CacheClusterStatus};
use crate::resources::security::Security;
use crate::resources::{self, Names, names::FIELD_MANAGER};
use crate::scale::Plan;
use crate::{Error, Result};

/// Applies every owned object. `replicas`: the StatefulSet's size, the plan's unless
/// certificates hold it back; `list_version` is the resourceVersion the member list was
/// read at.
pub(super) async fn objects(
    cc: &CacheCluster,
    ctx: &Context,
    plan: &Plan,
    replicas: u32,
    list_version: Option<String>,
    security: &Security,
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
    // The file before the pods that read it; deleted only once no pod of the StatefulSet
    // mounts it: its rollout to a template without it is complete (until then a pod of
    // the old revision, recreated after an eviction, would wait on the missing volume).
    // A later reconcile deletes it.
    let upstreams = resources::config::upstreams_file(cc)?;
    if let Some(text) = &upstreams {
        apply(
            client,
            ns,
            &resources::config::upstreams_config_map(cc, text),
        )
        .await?;
    }
    let hash = resources::config::settings_hash(&settings, upstreams.as_deref());
    let sts = resources::statefulset::statefulset(cc, replicas, &ctx.node_image, &hash, security);
    let applied = apply(client, ns, &sts).await?;
    if upstreams.is_none() && rolled_out(&applied) {
        delete::<ConfigMap>(client, ns, &names.upstreams()).await?;
    }

    match resources::pdb::pod_disruption_budget(cc) {
        Some(pdb) => drop(apply(client, ns, &pdb).await?),
        None => delete::<PodDisruptionBudget>(client, ns, &names.cluster).await?,
    }
    match resources::optional::network_policy(cc, &ctx.operator_pods) {
        Some(policy) => drop(apply(client, ns, &policy).await?),
        None => delete::<NetworkPolicy>(client, ns, &names.cluster).await?,
    }
    monitoring(cc, ctx, security).await;
    Ok(())
}

/// Writes the status subresource.
pub(super) async fn status(
    ctx: &Context,
    names: &Names,
    status: &CacheClusterStatus,
) -> Result<()> {
    let clusters: Api<CacheCluster> = Api::namespaced(ctx.client.clone(), &names.namespace);
    clusters
        .patch_status(
            &names.cluster,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await
        .map_err(|e| Error::kube("patch status", e))?;
    Ok(())
}

/// Whether every pod of `sts` (as the API server answered an apply) runs its current
/// template: the controller has seen this generation and no pod is on another revision.
fn rolled_out(sts: &StatefulSet) -> bool {
    let Some(status) = &sts.status else {
        return false;
    };
    let generation = sts.metadata.generation.unwrap_or(i64::MAX);
    let replicas = sts
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    status.observed_generation.unwrap_or(0) >= generation
        && status.current_revision.is_some()
        && status.current_revision == status.update_revision
        && status.updated_replicas.unwrap_or(0) >= replicas
}

/// Server-side applies `object`; the object as the API server now holds it.
pub(super) async fn apply<K>(client: &Client, ns: &str, object: &K) -> Result<K>
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
    .map_err(|e| Error::kube(&format!("apply {} {name}", K::kind(&())), e))
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

/// The prometheus-operator objects (`spec.monitoring`): each applied when asked for and
/// deleted when not. Their CRDs may not be installed (or the chart's
/// `rbac.serviceMonitors` may be off): a failure is a warning event on the CacheCluster
/// when the object was asked for, never a failed reconcile.
pub(super) async fn monitoring(cc: &CacheCluster, ctx: &Context, security: &Security) {
    use resources::monitoring as m;
    let objects = [
        (
            m::service_monitor_resource(),
            m::service_monitor(cc, security),
            cc.spec.monitoring.service_monitor,
        ),
        (
            m::pod_monitor_resource(),
            m::pod_monitor(cc, security),
            cc.spec.monitoring.pod_monitor,
        ),
        (
            m::prometheus_rule_resource(),
            m::prometheus_rule(cc),
            cc.spec.monitoring.prometheus_rule.enabled,
        ),
    ];
    for (resource, object, asked) in objects {
        let kind = resource.kind.clone();
        if let Err(error) = monitoring_object(cc, ctx, &resource, object).await
            && asked
        {
            let note =
                format!("cannot apply the {kind} (is prometheus-operator installed?): {error}");
            events::emit(
                ctx,
                cc,
                EventType::Warning,
                &format!("{kind}Failed"),
                &format!("Apply{kind}"),
                note,
            )
            .await;
        }
    }
}

/// Applies `object`, or deletes the one of that kind named after the cluster when None.
async fn monitoring_object(
    cc: &CacheCluster,
    ctx: &Context,
    resource: &kube::api::ApiResource,
    object: Option<DynamicObject>,
) -> Result<(), kube::Error> {
    let names = Names::of(cc);
    let api: Api<DynamicObject> =
        Api::namespaced_with(ctx.client.clone(), &names.namespace, resource);
    match object {
        Some(object) => api
            .patch(
                &names.cluster,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&object),
            )
            .await
            .map(|_| ()),
        None => match api.delete(&names.cluster, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
            Err(e) => Err(e),
        },
    }
}
