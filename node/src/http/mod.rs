//! The client HTTP API (axum): routes, shared request state and response accounting.
//!
//! Layout:
//! - [`keys`]: `/v1/keys/{key}` GET, HEAD, PUT, DELETE.
//! - [`batch`]: `/v1/batch/get` and `/v1/batch/put`.
//! - [`admin`]: stats, cluster report, metrics, health, readiness, OpenAPI.
//! - [`error`]: the JSON error type every handler returns.
//! - [`auth`]: the role each route needs, checked before the router (401/403).
//! - [`serve`]: the listener, with its connection cap and header-read timeout.
//! - [`trace`]: the request span (request id, method, route) and the echoed
//!   `X-Request-Id`.
//!
//! The API is documented in `docs/api.md` and served as OpenAPI at `/v1/openapi.json`.

pub mod admin;
pub mod auth;
pub mod batch;
pub mod error;
pub mod keys;
pub mod serve;
pub mod trace;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::convert::Infallible;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::Response;
use axum::routing::{any, get, post};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::cluster::wire::Identity;
use crate::config::{Limits, NodeConfig};
use crate::lifecycle::Phase;
use crate::store::Store;
use crate::store::persist::Persistence;
use crate::tls::NodeTls;

/// Per-request state: the cluster (and through it the store) plus what the handlers need
/// of the config.
#[derive(Debug, Clone)]
pub struct AppState {
    pub cluster: Cluster,
    shared: Arc<Shared>,
    /// The data dir, with `--data-dir`: its counters for `/v1/stats` and `/metrics`.
    persistence: Option<Arc<Persistence>>,
    /// The certificates in use, for `/v1/cluster`.
    tls: NodeTls,
    /// Client authentication (off without `--auth-dir`).
    auth: Auth,
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    default_ttl: Option<Duration>,
    started: Instant,
    /// Responses by status class (1xx..5xx), for `/metrics`.
    responses: [AtomicU64; 5],
    connections: Arc<serve::Connections>,
}

impl AppState {
    pub fn new(cluster: Cluster, config: &NodeConfig) -> Self {
        Self {
            cluster,
            shared: Arc::new(Shared {
                limits: config.limits,
                default_ttl: config.default_ttl,
                started: Instant::now(),
                responses: Default::default(),
                connections: Arc::new(serve::Connections::new(config.limits.max_connections)),
            }),
            persistence: None,
            tls: NodeTls::default(),
            auth: Auth::off(),
        }
    }

    /// Reports the certificates in use too.
    #[must_use]
    pub fn with_tls(mut self, tls: NodeTls) -> Self {
        self.tls = tls;
        self
    }

    pub fn tls(&self) -> &NodeTls {
        &self.tls
    }

    /// Reports the data dir's counters too.
    #[must_use]
    pub fn with_persistence(mut self, persistence: Option<Arc<Persistence>>) -> Self {
        self.persistence = persistence;
        self
    }

    /// Authenticates clients with `auth` (HTTP and RESP).
    #[must_use]
    pub fn with_auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    pub fn persistence(&self) -> Option<&Arc<Persistence>> {
        self.persistence.as_ref()
    }

    /// State for a node serving alone (a cluster of one), as `run` builds without a
    /// member file.
    pub fn single_node(config: &NodeConfig) -> Self {
        let store = Store::new(config.store.clone());
        let identity = Identity::new(config.store.node_id.clone());
        Self::new(Cluster::single(store, identity, config.consistency), config)
    }

    pub fn store(&self) -> &Store {
        self.cluster.store()
    }

    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    pub fn default_ttl(&self) -> Option<Duration> {
        self.shared.default_ttl
    }

    /// Where the node is in its life: read from the cluster's lifecycle, never copied.
    pub fn phase(&self) -> Phase {
        self.cluster.lifecycle().phase()
    }

    pub fn uptime(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// The listener's connection counts.
    pub fn connections(&self) -> &Arc<serve::Connections> {
        &self.shared.connections
    }

    pub fn responses_by_class(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ["1xx", "2xx", "3xx", "4xx", "5xx"]
            .into_iter()
            .zip(&self.shared.responses)
            .map(|(class, count)| (class, count.load(Ordering::Relaxed)))
    }
}

/// The node's HTTP service: the routes behind the token check, wrapped in response
/// accounting (refusals count as 4xx), inside the request span ([`trace`]).
///
/// Responses are counted by a `map_response` around the whole router rather than an axum
/// layer: an axum layer re-boxes every route and ran about 700 ns per request, a third
/// of a whole GET (measured in-process with `oneshot`).
pub fn app(
    state: AppState,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let counters = state.shared.clone();
    let authorized = auth::Authorize::new(router(state.clone()), state.auth);
    let counted = ServiceExt::<Request>::map_response(authorized, move |response: Response| {
        let class = admin::status_class(response.status());
        counters.responses[class].fetch_add(1, Ordering::Relaxed);
        response
    });
    tower::service_fn(move |request: Request| trace::traced(counted.clone(), request))
}

/// The routes' path templates, shared by the router and [`trace::route_of`].
pub mod routes {
    /// The key route with an empty key (refused with a clear error).
    pub const EMPTY_KEY: &str = "/v1/keys/";
    pub const KEY: &str = "/v1/keys/{*key}";
    pub const CLUSTER_KEYS_PREFIX: &str = "/v1/cluster/keys/";
    pub const CLUSTER_KEY: &str = "/v1/cluster/keys/{*key}";
    pub const BATCH_GET: &str = "/v1/batch/get";
    pub const BATCH_PUT: &str = "/v1/batch/put";
    pub const STATS: &str = "/v1/stats";
    pub const CLUSTER: &str = "/v1/cluster";
    pub const OPENAPI: &str = "/v1/openapi.json";
    pub const METRICS: &str = "/metrics";
    pub const HEALTHZ: &str = "/healthz";
    pub const READYZ: &str = "/readyz";
    /// The routes without a parameter.
    pub const FIXED: [&str; 8] = [
        BATCH_GET, BATCH_PUT, STATS, CLUSTER, OPENAPI, METRICS, HEALTHZ, READYZ,
    ];
}

fn router(state: AppState) -> Router {
    Router::new()
        .route(routes::EMPTY_KEY, any(keys::empty_key))
        .route(
            routes::KEY,
            get(keys::get_key)
                .put(keys::put_key)
                .delete(keys::delete_key),
        )
        .route(routes::BATCH_GET, post(batch::get_many))
        .route(routes::BATCH_PUT, post(batch::put_many))
        .route(routes::STATS, get(admin::stats))
        .route(routes::CLUSTER, get(admin::cluster))
        .route(routes::CLUSTER_KEY, get(admin::key_placement))
        .route(routes::OPENAPI, get(admin::openapi))
        .route(routes::METRICS, get(admin::metrics))
        .route(routes::HEALTHZ, get(admin::healthz))
        .route(routes::READYZ, get(admin::readyz))
        .fallback(admin::no_route)
        .method_not_allowed_fallback(admin::method_not_allowed)
        // Bodies are read with explicit per-route limits (see `keys::read_body`).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

#[cfg(test)]
mod tests;
