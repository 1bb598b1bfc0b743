//! Observe: what the plan depends on, read from the API and the nodes. The published
//! member list (and the resourceVersion it was read at, so the next one is written
//! against it), the cache pods, the pods peers can discover, every pod's node report,
//! and the phase the status last reported.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::Context;
use crate::crd::CacheCluster;
use crate::members::{MEMBERS_KEY, MemberList};
use crate::report::{self, ClusterReport};
use crate::resources::Names;
use crate::scale::{self, Observed, PodView};
use crate::{Error, Result};

/// Everything the plan depends on, and the resourceVersion of the member list.
pub(super) async fn observe(
    cc: &CacheCluster,
    ctx: &Context,
    names: &Names,
) -> Result<(Observed, Option<String>)> {
    let (list, list_version) = member_list(ctx, names).await?;
    let pods = pods(ctx, names).await?;
    let reports = reports(ctx, names, &pods, cc.spec.service.http_port).await;
    let discoverable = discoverable_pods(ctx, names).await?;
    let observed = Observed {
        list,
        pods,
        reports,
        discoverable,
        last_phase: cc.status.as_ref().map(|status| status.phase),
    };
    Ok((observed, list_version))
}

/// The published member list and the resourceVersion it was read at. A list that
/// cannot be read is an error, never "no list": that would publish epoch 1 over a
/// live cluster.
async fn member_list(ctx: &Context, names: &Names) -> Result<(Option<MemberList>, Option<String>)> {
    let config_maps: Api<ConfigMap> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let Some(members_map) = config_maps
        .get_opt(&names.members())
        .await
        .map_err(|e| Error::kube("read the member list", e))?
    else {
        return Ok((None, None));
    };
    let yaml = members_map
        .data
        .as_ref()
        .and_then(|d| d.get(MEMBERS_KEY))
        .ok_or_else(|| Error::MemberList(format!("{} has no {MEMBERS_KEY}", names.members())))?;
    let list = MemberList::from_yaml(yaml)
        .map_err(|e| Error::MemberList(format!("{}: {e}", names.members())))?;
    Ok((Some(list), members_map.metadata.resource_version.clone()))
}

/// The cluster's cache pods by ordinal: their IP and readiness.
async fn pods(ctx: &Context, names: &Names) -> Result<BTreeMap<u32, PodView>> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let pod_list = pods
        .list(&ListParams::default().labels(&names.selector_string()))
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
    Ok(views)
}

/// The report of every pod with an IP that answered, all asked at once. A node that
/// does not answer is missing from the map, which the plan reads as unreachable.
async fn reports(
    ctx: &Context,
    names: &Names,
    pods: &BTreeMap<u32, PodView>,
    http_port: i32,
) -> BTreeMap<u32, ClusterReport> {
    let fetches = pods.iter().filter_map(|(ordinal, view)| {
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
    reports
}

/// Ordinals of the pods the peer Service's EndpointSlices list with an address: the
/// ones the nodes can find.
async fn discoverable_pods(ctx: &Context, names: &Names) -> Result<BTreeSet<u32>> {
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let list = slices
        .list(&ListParams::default().labels(&names.peer_endpoint_slices_selector()))
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
