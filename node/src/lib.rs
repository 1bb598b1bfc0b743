//! kache-node: one kache cache node.
//!
//! Layout:
//! - [`config`]: flags and environment, validated into a [`config::NodeConfig`].
//! - [`clock`]: wall time for TTLs and hybrid-logical-clock write versions.
//! - [`lifecycle`]: the node's phase (Starting → Syncing → Ready → Draining → Stopped).
//! - [`store`]: the partitioned in-memory map with TTL, tombstones and a memory bound.
//! - [`auth`]: client tokens from `--auth-dir` and their roles, for HTTP and RESP.
//! - [`http`]: the client REST API.
//! - [`metrics`]: the Prometheus metrics `/metrics` serves.

//! - [`request_id`]: the id that follows a client request into its peer calls' logs.
//! - [`resp`]: the same keyspace over the Redis protocol, with Redis Cluster routing.
//! - [`shutdown`]: SIGTERM / Ctrl-C.
//! - [`tls`]: certificates from mounted directories, reloaded; mutual TLS for peers, TLS for clients.
//! - [`upstream`]: read-through caching of upstream HTTP APIs (`/v1/upstreams/...`).
//!
//! - [`cluster`]: membership, discovery, placement, the peer protocol, request routing.
//!
//! The binary parses flags, binds its listeners and calls [`run`]; tests call the same
//! [`run`] on `127.0.0.1:0`.

pub mod auth;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod http;
pub mod lifecycle;
pub mod metrics;

pub mod request_id;
pub mod resp;
pub mod shutdown;
pub mod store;
#[cfg(test)]
mod test_support;
pub mod tls;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::cluster::discovery::{Discovery, DiscoveryConfig, DiscoveryError};
use crate::cluster::membership::{MemberList, watch_configmap, watch_file};
use crate::cluster::peer::lean::LeanServer;
use crate::cluster::peer::{self, PeerService};
use crate::cluster::wire::Identity;
use crate::config::{MembershipConfig, NodeConfig};
use crate::http::AppState;
use crate::lifecycle::{Lifecycle, Phase};
use crate::store::Store;
use crate::store::persist::{PersistError, Persistence};
use crate::tls::NodeTls;
use crate::upstream::ReadThrough;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("serving the peer protocol failed")]
    Peer(#[source] tonic::transport::Error),
    #[error(transparent)]
    Membership(#[from] cluster::membership::MembershipError),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
    #[error("no Kubernetes client configuration (in-cluster or KUBECONFIG)")]
    Kube(#[source] kube::Error),
    #[error(transparent)]
    Persist(#[from] PersistError),
    #[error("loading the data dir stopped (the loading task panicked or was cancelled)")]
    Loading(#[source] tokio::task::JoinError),
    #[error("TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error(transparent)]
    Auth(#[from] auth::AuthError),
    #[error("read-through upstreams: the HTTP client could not be built")]
    Upstreams(#[source] reqwest::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The sockets a node serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// The client HTTP API.
    pub http: TcpListener,
    /// The peer gRPC protocol.
    pub grpc: TcpListener,
    /// RESP (the Redis protocol), unless turned off.
    pub resp: Option<TcpListener>,
}

/// Serves the node on `listeners` until `shutdown` completes, then stops in two steps:
/// stop accepting and mark not ready, then let in-flight requests finish within the
/// configured grace period.
pub async fn run(
    listeners: Listeners,
    config: NodeConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let tls = NodeTls::load(&config.tls, &config.store.node_id)?;
    let _reloads: Vec<AbortOnDrop> = tls.spawn_reloads().into_iter().map(AbortOnDrop).collect();
    let auth = match config.auth_dir.clone() {
        Some(dir) => Auth::load(dir)?,
        None => {
            tracing::warn!(
                "--auth-dir is not set: client authentication is OFF, and anyone who reaches \
                 the HTTP or RESP port can read, write and delete every key"
            );
            Auth::off()
        }
    };
    let _auth_reloader = auth.spawn_reloader().map(AbortOnDrop);
    let store = Store::new(config.store.clone());
    // The data dir is loaded before anything is served (the listeners queue connections
    // meanwhile), so no client or peer sees a half-loaded store.
    let persistence = match config.persistence.clone() {
        Some(persist) => {
            let loading = store.clone();
            let opened = tokio::task::spawn_blocking(move || Persistence::open(&persist, &loading))
                .await
                .map_err(Error::Loading)??;
            Some(opened)
        }
        None => None,
    };
    let _snapshots = persistence
        .as_ref()
        .map(|p| AbortOnDrop(p.spawn_snapshots(store.clone())));
    // The partitions the data dir gave this node a copy of: every one when the dir was
    // its own and loaded whole (an empty partition was empty), else those with data.
    let loaded = match &persistence {
        Some(p) if p.recovered().intact => (0..store.partition_count()).collect(),
        Some(_) => store.partitions_holding_data(),
        None => Vec::new(),
    };
    let _sweeper = store.spawn_active_expiry();
    let resp_port = listeners
        .resp
        .as_ref()
        .and_then(|l| l.local_addr().ok())
        .map_or(0, |a| a.port());
    let identity = Identity::new(config.store.node_id.clone()).with_resp_port(resp_port);
    // Background tasks of a cluster member; aborted when `run` returns.
    let (cluster, _background) = if config.membership.is_cluster() {
        member(&config, store, identity, loaded, tls.peer.clone()).await?
    } else {
        let single = Cluster::single(store, identity, config.consistency);
        (single, Vec::new())
    };
    let lifecycle = cluster.lifecycle().clone();
    let read_through = ReadThrough::new(
        cluster.clone(),
        &config.upstreams,
        config.limits.max_key_bytes,
        config.limits.max_value_bytes,
    )
    .map_err(Error::Upstreams)?;
    let state = AppState::new(cluster.clone(), &config)
        .with_read_through(read_through.clone())
        .with_persistence(persistence.clone())
        .with_tls(tls.clone())
        .with_auth(auth);
    let client_tls = |alpn: &[&[u8]]| {
        tls.client
            .as_ref()
            .map(|reloader| tls::client_port::acceptor(reloader, alpn))
            .transpose()
    };
    let (http_tls, resp_tls) = (client_tls(&[b"http/1.1"])?, client_tls(&[])?);

    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    // Drained (or nothing to drain): the peer server may stop.
    let (drained_tx, drained_rx) = watch::channel(false);
    let grace = config.shutdown_grace;
    let drain = config.membership.is_cluster().then(|| cluster.clone());
    let graceful = drain_then_stop(
        stopping(stop_rx.clone()),
        &lifecycle,
        drain,
        persistence.clone(),
        grace,
        drained_tx,
    );

    // HTTP and RESP stop taking requests at the same moment.
    let (serving_tx, serving_rx) = watch::channel(false);
    tokio::spawn(async move {
        graceful.await;
        let _ = serving_tx.send(true);
    });
    let resp_server = listeners.resp.map(|listener| {
        let clustered = config.membership.is_cluster();
        resp::serve(
            listener,
            state.clone(),
            clustered,
            resp_tls,
            stopping(serving_rx.clone()),
        )
    });
    let http_server = http::serve::serve(listeners.http, state, http_tls, stopping(serving_rx));
    // Bounded streams, message sizes and keepalives: see `cluster::peer::server`; the
    // lean transport for Get and Apply shares the port (`cluster::peer::incoming`).
    // Under mutual TLS every call's caller is checked (`cluster::peer::authorize`).
    let peer = match tls.peer {
        Some(_) => PeerService::new(cluster).authenticated(),
        None => PeerService::new(cluster),
    }
    .with_read_through(read_through);
    let peer_incoming = peer::incoming(
        listeners.grpc,
        LeanServer::new(peer.clone()),
        tls.peer.clone(),
    );
    let peer_server = peer::server::transport()
        .add_service(peer.into_server())
        .serve_with_incoming_shutdown(peer_incoming, stopping(drained_rx));
    let servers = async {
        tokio::try_join!(
            async {
                http_server.await;
                Ok(())
            },
            async {
                if let Some(resp_server) = resp_server {
                    resp_server.await;
                }
                Ok(())
            },
            async { peer_server.await.map_err(Error::Peer) },
        )
    };
    let deadline = async move {
        stopping(stop_rx).await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = servers => { served?; }
        () = deadline => {
            tracing::warn!(?grace, "grace period over; dropping requests still in flight");
        }
    }
    lifecycle.advance(Phase::Stopped);
    if let Some(persistence) = persistence {
        // Whatever the log holds reaches the disk before the process exits.
        let _ = tokio::task::spawn_blocking(move || persistence.close()).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Completes once `stop` has been sent.
async fn stopping(mut stop: watch::Receiver<bool>) {
    // An error means the sender is gone, which only happens after it sent.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The first step of shutdown, once `stop` completes: the node turns Draining (not
/// ready), a cluster member hands off what would be lost with it, and then the HTTP
/// server stops accepting (this future completing) and `drained` lets the peer server go.
fn drain_then_stop(
    stop: impl Future<Output = ()> + Send + 'static,
    lifecycle: &Lifecycle,
    drain: Option<Cluster>,
    persistence: Option<Arc<Persistence>>,
    grace: std::time::Duration,
    drained: watch::Sender<bool>,
) -> impl Future<Output = ()> + Send + 'static {
    let lifecycle = lifecycle.clone();
    async move {
        stop.await;
        lifecycle.start_draining();
        if let Some(cluster) = drain {
            // Keep serving while handing off; leave a quarter of the grace period for
            // the requests still in flight afterwards.
            tracing::info!("draining: handing off partitions this node alone owns");
            match tokio::time::timeout(grace.mul_f64(0.75), cluster.drain()).await {
                Ok(drained) => {
                    tracing::info!(
                        partitions = drained.partitions,
                        records = drained.records,
                        failed = drained.failed,
                        "drained"
                    );
                    if drained.failed == 0 {
                        mark_if_departed(&cluster, persistence.as_deref());
                    }
                }
                Err(_) => tracing::warn!(?grace, "drain did not finish in time"),
            }
            linger_if_departed(&cluster, grace).await;
        }
        let _ = drained.send(true);
        tracing::info!("shutting down: accepting nothing new, finishing in-flight requests");
    }
}

/// A member that has left the cluster (departing or no longer listed) and handed off
/// everything marks its data dir so that no later start loads it: the cluster has moved
/// on, and that data would bring back keys deleted since and values overwritten since.
/// (In Kubernetes, the StatefulSet deletes the volume of a member scaled away, too.)
fn mark_if_departed(cluster: &Cluster, persistence: Option<&Persistence>) {
    let Some(persistence) = persistence else {
        return;
    };
    if has_left(cluster) {
        persistence.mark_departed();
    }
}

/// Whether this node has left the cluster: it has a member list, and is departing from
/// it or no longer in it.
fn has_left(cluster: &Cluster) -> bool {
    cluster.has_list() && cluster.view().role_of(cluster.node_id()) != crate::cluster::Role::Member
}

/// A node that has left the cluster (departing, or no longer listed) keeps serving
/// clients for half the grace period before it stops: Redis Cluster clients keep its
/// address in their slot maps until they refresh them (go-redis every 10 s, redis-py on
/// an error), and until then a request they send here is served (forwarded to the
/// owners) instead of refused. It is not Ready meanwhile, so Services stop routing to it.
/// A member that restarts (a rolling upgrade) stops at once: it is coming back.
async fn linger_if_departed(cluster: &Cluster, grace: std::time::Duration) {
    if !has_left(cluster) {
        return;
    }
    let role = cluster.view().role_of(cluster.node_id());
    let linger = grace / 2;
    tracing::info!(
        ?linger,
        ?role,
        "departed: serving clients that still route here while they refresh their slot maps"
    );
    tokio::time::sleep(linger).await;
}

/// A cluster member: its membership source, its discovery, and the tasks that follow
/// them, rebalance and repair.
async fn member(
    config: &NodeConfig,
    store: Store,
    identity: Identity,
    loaded: Vec<u32>,
    tls: Option<tls::PeerTls>,
) -> Result<(Cluster, Vec<AbortOnDrop>)> {
    let rules = config.list_rules();
    let mut client = None;
    let mut tasks = Vec::new();
    let lists = match &config.membership {
        MembershipConfig::File(path) => {
            let (lists, watcher) = watch_file(path.clone(), rules)?;
            tasks.push(AbortOnDrop(watcher));
            lists
        }
        MembershipConfig::ConfigMap { namespace, name } => {
            let client = kube_client(&mut client).await?;
            let (lists, watcher) = watch_configmap(client, namespace, name, rules);
            tasks.push(AbortOnDrop(watcher));
            lists
        }
        // Fixed at epoch 1: the sender is dropped and the list never changes.
        MembershipConfig::Static(list) => watch::channel(list.clone()).1,
        MembershipConfig::Single => watch::channel(MemberList::none(rules.partitions)).1,
    };
    let discovery_client = match config.discovery {
        DiscoveryConfig::EndpointSlices { .. } => Some(kube_client(&mut client).await?),
        DiscoveryConfig::Static | DiscoveryConfig::Dns(_) => None,
    };
    let (discovery, discovery_task) =
        Discovery::start(&config.discovery, discovery_client, lists.clone())?;
    tasks.extend(discovery_task.map(AbortOnDrop));
    let list = lists.borrow().clone();
    let cluster =
        Cluster::reaching_peers_with(store, identity, list, config.consistency, discovery, tls);
    cluster.loaded_from_disk(loaded);
    cluster.started();
    tasks.push(AbortOnDrop(cluster.follow(lists)));
    // A (re)started member serves as a replica only once it has a member list and holds
    // what it owns in it; the sync moves the lifecycle to Ready. A node in no list owns
    // nothing, so it is ready as soon as the list arrives.
    let syncing = cluster.clone();
    tasks.push(AbortOnDrop(tokio::spawn(async move {
        syncing.initial_sync().await;
        syncing.return_held_hints().await;
    })));
    tasks.push(AbortOnDrop(cluster.spawn_rebalancer()));
    if !config.anti_entropy_interval.is_zero() {
        tasks.push(AbortOnDrop(
            cluster.spawn_anti_entropy(config.anti_entropy_interval),
        ));
    }
    Ok((cluster, tasks))
}

/// The Kubernetes client (in-cluster config or KUBECONFIG), made on first use and then
/// shared. Making it reads configuration only: an apiserver that is down at start is
/// retried by the watchers, with the node not ready meanwhile.
async fn kube_client(client: &mut Option<kube::Client>) -> Result<kube::Client> {
    if let Some(client) = client {
        return Ok(client.clone());
    }
    let made = kube::Client::try_default().await.map_err(Error::Kube)?;
    *client = Some(made.clone());
    Ok(made)
}

/// Aborts a background task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
