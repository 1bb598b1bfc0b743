//! `kubectl kache`: a CacheCluster's state at a glance, a live view of its rebalances,
//! and keys read and written through any of its pods, from wherever kubectl works.
//!
//! Layout:
//! - [`target`]: the Kubernetes client, the CacheCluster, its ready pods and the token.
//! - [`proxy`]: one request to one pod through the API server's pod proxy.
//! - [`status`]: the status screen (pure rendering, golden-tested).
//! - [`watch`]: the live view of a rebalance.
//! - [`keys`]: get, put, del and locate.
//! - [`format`]: tables, ages, sizes.
//! - [`error`]: the errors, each saying what to fix.
//!
//! What it reads: the CacheCluster's status (the operator's types, `kache_operator::crd`)
//! and each node's `GET /v1/cluster` report (`kache_api::report`), the same two sources
//! the operator itself decides from. What it needs of RBAC: get and watch on
//! cacheclusters, list on pods, get on the `<name>-auth` Secret (or `--token`), and get,
//! update, delete on `pods/proxy`.

pub mod error;
pub mod format;
pub mod keys;
pub mod proxy;
pub mod status;
pub mod target;
pub mod watch;

pub use error::{Error, Result};

use k8s_openapi::jiff::Timestamp;

use crate::proxy::NodeClient;
use crate::target::{Connection, ready_ports};

/// The status screen of CacheCluster `name`. The pods' views need a token for
/// `/v1/stats`; without one the screen still shows everything else.
pub async fn status(connection: &Connection, name: &str, token: Option<String>) -> Result<String> {
    let cc = connection.cache_cluster(name).await?;
    let pods = connection.pods(&cc).await?;
    let ports = ready_ports(&cc, &pods).unwrap_or_default();
    let (token, token_problem) = match connection.token(&cc, token).await {
        Ok(token) => (token, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let node = NodeClient::new(connection.client.clone(), token);
    let mut views = status::views(&node, &ports).await;
    if token_problem.is_some() {
        // Every pod refused /v1/stats for the one reason said below.
        for view in &mut views {
            view.memory = Err(String::new());
        }
    }
    let mut screen = status::render(&cc, &views, Timestamp::now());
    if let Some(problem) = token_problem {
        screen.push_str(&format!("\n! memory needs a token: {problem}\n"));
    }
    Ok(screen)
}

/// What a key command talks to: the cluster, a client of its nodes with its token, and
/// its ready pods.
struct Nodes {
    cc: kache_operator::crd::CacheCluster,
    client: NodeClient,
    pods: Vec<proxy::PodPort>,
}

impl Nodes {
    async fn of(connection: &Connection, name: &str, token: Option<String>) -> Result<Self> {
        let cc = connection.cache_cluster(name).await?;
        let pods = ready_ports(&cc, &connection.pods(&cc).await?)?;
        let token = connection.token(&cc, token).await?;
        let client = NodeClient::new(connection.client.clone(), token);
        Ok(Self { cc, client, pods })
    }
}

pub async fn get(
    connection: &Connection,
    name: &str,
    token: Option<String>,
    key: &str,
) -> Result<Vec<u8>> {
    let nodes = Nodes::of(connection, name, token).await?;
    keys::get(&nodes.client, &nodes.pods, key).await
}

pub async fn put(
    connection: &Connection,
    name: &str,
    token: Option<String>,
    key: &str,
    value: &[u8],
    ttl_seconds: Option<u64>,
) -> Result<()> {
    let nodes = Nodes::of(connection, name, token).await?;
    keys::put(&nodes.client, &nodes.pods, key, value, ttl_seconds).await
}

pub async fn del(
    connection: &Connection,
    name: &str,
    token: Option<String>,
    key: &str,
) -> Result<()> {
    let nodes = Nodes::of(connection, name, token).await?;
    keys::del(&nodes.client, &nodes.pods, key).await
}

/// The placement of `key`, as printed.
pub async fn locate(
    connection: &Connection,
    name: &str,
    token: Option<String>,
    key: &str,
) -> Result<String> {
    let nodes = Nodes::of(connection, name, token).await?;
    let placement = keys::locate(&nodes.client, &nodes.pods, key).await?;
    Ok(keys::render_placement(
        key,
        &placement,
        nodes.cc.spec.partitions,
    ))
}
