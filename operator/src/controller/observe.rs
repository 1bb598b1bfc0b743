//! Observe: what the plan depends on, read from the API and the nodes. The published
//! member list (and the resourceVersion it was read at, so the next one is written
//! against it), the cache pods, the pods peers can discover, every pod's node report,
//! and the phase the status last reported.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, ListParams};

use super::Context;
use crate::crd::CacheCluster;
use crate::members::{MEMBERS_KEY, MemberList};
use crate::report::{self, ClusterReport};
use crate::resources::security::{self, Running};
use crate::resources::{Names, certs};
use crate::scale::{self, Observed, PodView};
use crate::{Error, Result};

/// Everything the plan depends on, and the resourceVersion of the member list.
pub(super) async fn observe(
    cc: &CacheCluster,
    ctx: &Context,
    names: &Names,
) -> Result<(Observed, Option<String>)> {
    let (list, list_version) = member_list(ctx, names).await?;
    let (pods, client_tls) = pods(ctx, names).await?;
    let reports = reports(ctx, names, &pods, &client_tls, cc.spec.service.http_port).await;
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

/// The cluster's cache pods by ordinal: their IP and readiness; and the client TLS Secret
/// of each pod that serves HTTPS (it mounts one), whatever the spec says now: during a
/// roll, some pods serve TLS and some do not yet.
async fn pods(
    ctx: &Context,
    names: &Names,
) -> Result<(BTreeMap<u32, PodView>, BTreeMap<u32, String>)> {
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let pod_list = pods
        .list(&ListParams::default().labels(&names.selector_string()))
        .await
        .map_err(|e| Error::kube("list pods", e))?;
    let mut views = BTreeMap::new();
    let mut client_tls = BTreeMap::new();
    for pod in pod_list {
        let Some(ordinal) = scale::ordinal_of(&names.cluster, &pod.name_any()) else {
            continue;
        };
        let tls_secret = pod
            .spec
            .as_ref()
            .and_then(|spec| spec.volumes.as_ref())
            .into_iter()
            .flatten()
            .find(|v| v.name == security::CLIENT_VOLUME)
            .and_then(|v| v.secret.as_ref()?.secret_name.clone());
        if let Some(secret) = tls_secret {
            client_tls.insert(ordinal, secret);
        }
        let status = pod.status.as_ref();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let ip = status.and_then(|s| s.pod_ip.clone());
        views.insert(ordinal, PodView { ip, ready });
    }
    Ok((views, client_tls))
}

/// The report of every pod with an IP that answered, all asked at once, over HTTPS from
/// the pods in `client_tls`. A node that does not answer is missing from the map, which
/// the plan reads as unreachable.
async fn reports(
    ctx: &Context,
    names: &Names,
    pods: &BTreeMap<u32, PodView>,
    client_tls: &BTreeMap<u32, String>,
    http_port: i32,
) -> BTreeMap<u32, ClusterReport> {
    let tls_clients = tls_clients(ctx, names, pods, client_tls, http_port).await;
    let fetches = pods.iter().filter_map(|(ordinal, view)| {
        let ip = view.ip.clone()?;
        let tls = match client_tls.get(ordinal) {
            Some(secret) => Some(tls_clients.get(secret)?.clone()),
            None => None,
        };
        let http = ctx.http.clone();
        let host = certs::pod_host(names, &names.pod(*ordinal));
        Some(async move {
            let report = match tls {
                Some(client) => report::fetch_tls(&client, &host, http_port).await,
                None => report::fetch(&http, &ip, http_port).await,
            };
            (*ordinal, report)
        })
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

/// One HTTPS client per client TLS Secret the pods mount, trusting its `ca.crt`. A Secret
/// that cannot be read leaves its pods unreachable (and says why in the log).
async fn tls_clients(
    ctx: &Context,
    names: &Names,
    pods: &BTreeMap<u32, PodView>,
    client_tls: &BTreeMap<u32, String>,
    http_port: i32,
) -> BTreeMap<String, reqwest::Client> {
    let secrets_api: Api<Secret> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let mut clients = BTreeMap::new();
    let secrets: BTreeSet<&String> = client_tls.values().collect();
    for secret in secrets {
        let targets: Vec<(String, SocketAddr)> = client_tls
            .iter()
            .filter(|(_, s)| *s == secret)
            .filter_map(|(ordinal, _)| {
                let ip: IpAddr = pods.get(ordinal)?.ip.as_ref()?.parse().ok()?;
                let port = u16::try_from(http_port).ok()?;
                let host = certs::pod_host(names, &names.pod(*ordinal));
                Some((host, SocketAddr::new(ip, port)))
            })
            .collect();
        let ca = match secrets_api.get_opt(secret).await {
            Ok(found) => found
                .and_then(|s| s.data)
                .and_then(|mut data| data.remove(security::CA_CERT_KEY)),
            Err(error) => {
                tracing::info!(cluster = %names.cluster, %secret, %error, "cannot read the client CA");
                continue;
            }
        };
        let Some(ca) = ca else {
            tracing::info!(cluster = %names.cluster, %secret, "the client TLS Secret has no ca.crt");
            continue;
        };
        match report::tls_client(secret, &ca.0, &targets) {
            Ok(client) => {
                clients.insert(secret.clone(), client);
            }
            Err(error) => tracing::info!(cluster = %names.cluster, %error, "no HTTPS client"),
        }
    }
    clients
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

/// What the applied StatefulSet runs (peer TLS, auth), or None when there is none yet.
pub(super) async fn running(ctx: &Context, names: &Names) -> Result<Option<Running>> {
    let statefulsets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &names.namespace);
    let sts = statefulsets
        .get_opt(&names.cluster)
        .await
        .map_err(|e| Error::kube("read the StatefulSet", e))?;
    Ok(sts.as_ref().map(Running::of))
}
