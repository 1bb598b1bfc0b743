//! The client HTTP API (axum): routes, shared request state and request metrics.
//!
//! Layout:
//! - [`keys`]: `/v1/keys/{key}` GET, HEAD, PUT, DELETE.
//! - [`batch`]: `/v1/batch/get` and `/v1/batch/put`.
//! - [`upstreams`]: read-through, `/v1/upstreams/{name}/{path}` GET, HEAD and DELETE
//!   (purge), and `DELETE /v1/upstreams/{name}` (purge all).
//! - [`admin`]: stats, cluster report, metrics, health, readiness, OpenAPI.
//! - [`error`]: the JSON error type every handler returns.
//! - [`auth`]: the role each route needs, checked before the router (401/403).
//! - [`serve`]: the listener, with its connection cap and header-read timeout.
//! - [`route`]: the routes as a closed set, for the token check and the metrics.
//! - [`trace`]: the request span (request id, method, route) and the echoed
//!   `X-Request-Id`.
//!
//! The API is documented in `docs/api.md` and served as OpenAPI at `/v1/openapi.json`.

pub mod admin;
pub mod auth;
pub mod batch;
pub mod error;
pub mod keys;
pub mod route;
pub mod serve;
pub mod trace;
pub mod upstreams;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request};
use axum::response::Response;
use axum::routing::{any, get, post};
use tokio::time::Instant;
use tower::Service;

use crate::auth::Auth;
use crate::cluster::Cluster;
use crate::cluster::wire::Identity;
use crate::config::{Limits, NodeConfig};
use crate::lifecycle::Phase;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::store::persist::Persistence;
use crate::tls::NodeTls;
use crate::upstream::ReadThrough;

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
    /// Read-through upstreams (none without `--upstreams-file` or `--upstream`).
    read_through: Option<ReadThrough>,
}

#[derive(Debug)]
struct Shared {
    limits: Limits,
    default_ttl: Option<Duration>,
    started: Instant,
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
                connections: Arc::new(serve::Connections::new(config.limits.max_connections)),
            }),
            persistence: None,
            tls: NodeTls::default(),
            auth: Auth::off(),
            read_through: None,
        }
    }

    /// Serves `/v1/upstreams/...` through `read_through`.
    #[must_use]
    pub fn with_read_through(mut self, read_through: ReadThrough) -> Self {
        self.read_through = Some(read_through);
        self
    }

    /// The read-through upstreams, if any are configured.
    pub fn read_through(&self) -> Option<&ReadThrough> {
        self.read_through.as_ref()
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

    /// The node's metrics (the cluster's handle: one per node).
    pub fn metrics(&self) -> &Metrics {
        self.cluster.metrics()
    }
}

/// The node's HTTP service: the routes behind the token check, wrapped in request
/// metrics (refusals are counted under their route too), inside the request span
/// ([`trace`]).
///
/// Requests are measured by a wrapper around the whole router rather than an axum layer:
/// an axum layer re-boxes every route and ran about 700 ns per request, a third of a
/// whole GET (measured in-process with `oneshot`). The route comes from
/// [`route::Route::of`], a few string comparisons, not from the router's `MatchedPath`,
/// which only a layer inside the router can see.
pub fn app(
    state: AppState,
) -> impl Service<Request, Response = Response, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    let metrics = state.metrics().clone();
    let authorized = auth::Authorize::new(router(state.clone()), state.auth);
    let measured = Measured {
        inner: authorized,
        metrics,
    };
    tower::service_fn(move |request: Request| trace::traced(measured.clone(), request))
}

/// Records each request's route, method, status class and latency.
#[derive(Debug, Clone)]
struct Measured<S> {
    inner: S,
    metrics: Metrics,
}

impl<S> Service<Request> for Measured<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = MeasuredFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let route = route::Route::of(request.uri().path());
        let method = route::RouteMethod::of(request.method());
        MeasuredFuture {
            inner: self.inner.call(request),
            metrics: self.metrics.clone(),
            route,
            method,
            started: std::time::Instant::now(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request in flight, and what its metric needs when it is answered.
    struct MeasuredFuture<F> {
        #[pin]
        inner: F,
        metrics: Metrics,
        route: route::Route,
        method: route::RouteMethod,
        started: std::time::Instant,
    }
}

impl<F> Future for MeasuredFuture<F>
where
    F: Future<Output = Result<Response, Infallible>>,
{
    type Output = Result<Response, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Ready(Ok(response)) => response,
            Poll::Ready(Err(never)) => match never {},
            Poll::Pending => return Poll::Pending,
        };
        this.metrics.http_request(
            *this.route,
            *this.method,
            response.status(),
            this.started.elapsed(),
        );
        Poll::Ready(Ok(response))
    }
}

fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/keys/", any(keys::empty_key))
        .route(
            "/v1/keys/{*key}",
            get(keys::get_key)
                .put(keys::put_key)
                .delete(keys::delete_key),
        )
        .route("/v1/upstreams/{name}", any(upstreams::dispatch))
        .route("/v1/upstreams/{name}/", any(upstreams::dispatch))
        .route("/v1/upstreams/{name}/{*path}", any(upstreams::dispatch))
        .route("/v1/batch/get", post(batch::get_many))
        .route("/v1/batch/put", post(batch::put_many))
        .route("/v1/stats", get(admin::stats))
        .route("/v1/cluster", get(admin::cluster))
        .route("/v1/cluster/keys/{*key}", get(admin::key_placement))
        .route("/v1/openapi.json", get(admin::openapi))
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .fallback(admin::no_route)
        .method_not_allowed_fallback(admin::method_not_allowed)
        // Bodies are read with explicit per-route limits (see `keys::read_body`).
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

#[cfg(test)]
mod tests;
