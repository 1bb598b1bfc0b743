//! The Node object and its heartbeat.
//!
//! On start the kubelet creates its Node (or updates the one a previous run
//! left): labels, `podCIDR`, generous capacity, the InternalIP, and a `Ready`
//! condition. Then, every heartbeat period, it renews its Lease in
//! `kube-node-lease` and refreshes the Node's conditions, so the node
//! lifecycle controller never marks it unreachable and evicts its pods. On
//! shutdown it reports `Ready=False`, like a kubelet that stopped cleanly.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeSpec, NodeStatus,
    NodeSystemInfo, Taint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use super::config::KubeletConfig;
use super::error::{Result, is_not_found};

/// The version the Node reports, so tools that parse it see the control plane's.
pub const KUBELET_VERSION: &str = "v1.34.4-kache";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;

/// A `--register-with-taints` entry, `key[=value]:Effect`.
pub fn parse_taint(s: &str) -> Option<Taint> {
    let (kv, effect) = s.rsplit_once(':')?;
    if !matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute") {
        return None;
    }
    let (key, value) = match kv.split_once('=') {
        Some((k, v)) => (k, Some(v.to_string())),
        None => (kv, None),
    };
    (!key.is_empty()).then(|| Taint {
        key: key.into(),
        value,
        effect: effect.into(),
        time_added: None,
    })
}

/// The Node's conditions at `now`; `ready` decides the Ready condition.
/// `since` is when Ready last changed.
pub fn conditions(ready: bool, now: Timestamp, since: Timestamp) -> Vec<NodeCondition> {
    let cond =
        |type_: &str, ok: bool, reason: &str, message: &str, since: Timestamp| NodeCondition {
            type_: type_.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: Some(reason.into()),
            message: Some(message.into()),
            last_heartbeat_time: Some(Time(now)),
            last_transition_time: Some(Time(since)),
        };
    vec![
        cond(
            "MemoryPressure",
            false,
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
            since,
        ),
        cond(
            "DiskPressure",
            false,
            "KubeletHasNoDiskPressure",
            "kubelet has no disk pressure",
            since,
        ),
        cond(
            "PIDPressure",
            false,
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            since,
        ),
        if ready {
            cond(
                "Ready",
                true,
                "KubeletReady",
                "kache process kubelet is posting ready status",
                since,
            )
        } else {
            cond(
                "Ready",
                false,
                "KubeletNotReady",
                "kache process kubelet stopped",
                since,
            )
        },
    ]
}

/// The Node as this kubelet registers it.
pub fn node_object(config: &KubeletConfig, ip: Ipv4Addr, now: Timestamp) -> Node {
    let quantities = BTreeMap::from([
        ("cpu".to_string(), Quantity(config.cpu.clone())),
        ("memory".to_string(), Quantity(config.memory.clone())),
        ("pods".to_string(), Quantity(config.max_pods.to_string())),
        ("ephemeral-storage".to_string(), Quantity("100Gi".into())),
    ]);
    let name = &config.node_name;
    Node {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            labels: Some(BTreeMap::from([
                ("kubernetes.io/hostname".to_string(), name.clone()),
                ("kubernetes.io/os".to_string(), "linux".to_string()),
                (
                    "kubernetes.io/arch".to_string(),
                    std::env::consts::ARCH
                        .replace("x86_64", "amd64")
                        .replace("aarch64", "arm64"),
                ),
                ("kache.dev/process-kubelet".to_string(), "true".to_string()),
            ])),
            ..Default::default()
        },
        spec: Some(NodeSpec {
            pod_cidr: Some(config.pod_cidr.to_string()),
            pod_cidrs: Some(vec![config.pod_cidr.to_string()]),
            taints: (!config.taints.is_empty()).then(|| config.taints.clone()),
            ..Default::default()
        }),
        status: Some(NodeStatus {
            capacity: Some(quantities.clone()),
            allocatable: Some(quantities),
            conditions: Some(conditions(true, now, now)),
            addresses: Some(vec![
                NodeAddress {
                    type_: "InternalIP".into(),
                    address: ip.to_string(),
                },
                NodeAddress {
                    type_: "Hostname".into(),
                    address: name.clone(),
                },
            ]),
            daemon_endpoints: Some(NodeDaemonEndpoints {
                kubelet_endpoint: Some(DaemonEndpoint { port: 10250 }),
            }),
            node_info: Some(NodeSystemInfo {
                architecture: std::env::consts::ARCH.into(),
                operating_system: "linux".into(),
                kubelet_version: KUBELET_VERSION.into(),
                container_runtime_version: "process://kache".into(),
                os_image: "kache process kubelet".into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
    }
}

/// Create or update the Node. Returns its UID (the Lease's owner).
pub async fn register(client: &Client, config: &KubeletConfig, ip: Ipv4Addr) -> Result<String> {
    let nodes: Api<Node> = Api::all(client.clone());
    let now = Timestamp::now();
    let node = node_object(config, ip, now);
    let created = match nodes.get_opt(&config.node_name).await? {
        None => nodes.create(&PostParams::default(), &node).await?,
        Some(_) => {
            let pp = PatchParams::default();
            let mut spec = json!(node.spec);
            spec["taints"] = json!(config.taints);
            let meta = json!({ "metadata": { "labels": node.metadata.labels }, "spec": spec });
            nodes
                .patch(&config.node_name, &pp, &Patch::Merge(&meta))
                .await?;
            nodes
                .patch_status(
                    &config.node_name,
                    &pp,
                    &Patch::Merge(&json!({ "status": node.status })),
                )
                .await?
        }
    };
    tracing::info!(node = %config.node_name, %ip, "node registered");
    Ok(created.uid().unwrap_or_default())
}

/// Renew the Lease, creating it if needed.
async fn renew_lease(client: &Client, node: &str, node_uid: &str) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let now = MicroTime(Timestamp::now());
    let patch = json!({ "spec": { "holderIdentity": node, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now } });
    match leases
        .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if is_not_found(&e) => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(node.into()),
                    namespace: Some(LEASE_NAMESPACE.into()),
                    owner_references: Some(vec![OwnerReference {
                        api_version: "v1".into(),
                        kind: "Node".into(),
                        name: node.into(),
                        uid: node_uid.into(),
                        ..Default::default()
                    }]),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(node.into()),
                    lease_duration_seconds: Some(LEASE_SECONDS),
                    renew_time: Some(now),
                    ..Default::default()
                }),
            };
            leases.create(&PostParams::default(), &lease).await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Report the Node's conditions.
async fn report(client: &Client, node: &str, ready: bool, since: Timestamp) -> Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let status = json!({ "status": { "conditions": conditions(ready, Timestamp::now(), since) } });
    nodes
        .patch_status(node, &PatchParams::default(), &Patch::Strategic(&status))
        .await?;
    Ok(())
}

/// Heartbeat until `stop` turns true, then report NotReady.
pub async fn heartbeat(
    client: Client,
    config: KubeletConfig,
    node_uid: String,
    mut stop: watch::Receiver<bool>,
) {
    let node = config.node_name.clone();
    let since = Timestamp::now();
    let mut ticks = tokio::time::interval(config.heartbeat);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.changed() => break,
        }
        if let Err(e) = renew_lease(&client, &node, &node_uid).await {
            tracing::warn!(error = %e, "lease renewal failed");
        }
        if let Err(e) = report(&client, &node, true, since).await {
            tracing::warn!(error = %e, "node status update failed");
        }
    }
    if let Err(e) = report(&client, &node, false, Timestamp::now()).await {
        tracing::warn!(error = %e, "could not report the node NotReady");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_has_capacity_address_and_ready_condition() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let node = node_object(&KubeletConfig::default(), Ipv4Addr::new(10, 88, 0, 1), now);
        assert_eq!(node.metadata.name.as_deref(), Some("kache-local"));
        let status = node.status.unwrap();
        let cap = status.capacity.unwrap();
        assert_eq!(cap["pods"], Quantity("110".into()));
        assert_eq!(status.allocatable.unwrap()["cpu"], Quantity("32".into()));
        let addrs = status.addresses.unwrap();
        assert_eq!(
            (addrs[0].type_.as_str(), addrs[0].address.as_str()),
            ("InternalIP", "10.88.0.1")
        );
        let ready = status
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(node.spec.unwrap().pod_cidr.as_deref(), Some("10.88.1.0/24"));
    }

    #[test]
    fn taints_parse_like_the_kubelet_flag() {
        let t = parse_taint("kache.dev/e2e=yes:NoSchedule").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value.as_deref(), t.effect.as_str()),
            ("kache.dev/e2e", Some("yes"), "NoSchedule")
        );
        let t = parse_taint("dedicated:NoExecute").unwrap();
        assert_eq!(
            (t.key.as_str(), t.value, t.effect.as_str()),
            ("dedicated", None, "NoExecute")
        );
        assert!(parse_taint("x=y").is_none());
        assert!(parse_taint("x=y:Sometimes").is_none());
        assert!(parse_taint(":NoSchedule").is_none());
        let mut c = KubeletConfig::default();
        c.taints.push(parse_taint("a=b:NoSchedule").unwrap());
        let node = node_object(&c, Ipv4Addr::LOCALHOST, Timestamp::from_second(0).unwrap());
        assert_eq!(node.spec.unwrap().taints.unwrap().len(), 1);
    }

    #[test]
    fn not_ready_on_shutdown() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let conds = conditions(false, now, now);
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_deref()),
            ("False", Some("KubeletNotReady"))
        );
        assert!(
            conds
                .iter()
                .filter(|c| c.type_ != "Ready")
                .all(|c| c.status == "False")
        );
    }
}
