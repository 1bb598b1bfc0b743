//! The routes of the HTTP API as a closed set, and how a request path maps to one.
//!
//! The router matches paths to handlers; this names the route a path reaches without
//! running the router, so the token check ([`super::auth`]) and the request metrics
//! ([`crate::metrics`]) can classify a request before (and whether or not) it reaches a
//! handler: a refused request is counted under its route too. Each route's
//! [`Route::template`] is the path the router registers it under (`{*key}` written as
//! `{key}`); a test holds the two together (`every_route_template_is_what_the_router_matched`
//! in `http/tests.rs`).

use axum::http::Method;

/// One route of the API, or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Keys,
    /// `/v1/keys/` with no key: answered 400.
    EmptyKey,
    BatchGet,
    BatchPut,
    Stats,
    Cluster,
    KeyPlacement,
    OpenApi,
    Metrics,
    Healthz,
    Readyz,
    /// `/v1/upstreams/{name}/{path}`: read-through, and the purge of one URL.
    UpstreamPath,
    /// `/v1/upstreams/{name}`: the purge of a whole upstream (its root is read too).
    Upstream,
    /// A path no route serves (404).
    Unmatched,
}

impl Route {
    pub const ALL: [Route; 14] = [
        Route::Keys,
        Route::EmptyKey,
        Route::BatchGet,
        Route::BatchPut,
        Route::Stats,
        Route::Cluster,
        Route::KeyPlacement,
        Route::OpenApi,
        Route::Metrics,
        Route::Healthz,
        Route::Readyz,
        Route::UpstreamPath,
        Route::Upstream,
        Route::Unmatched,
    ];

    /// The route `path` reaches. One pass over a few string comparisons: it runs on
    /// every request.
    pub fn of(path: &str) -> Self {
        match path {
            "/v1/keys/" => Route::EmptyKey,
            keys if keys.starts_with(super::keys::KEYS_PREFIX) => Route::Keys,
            "/v1/batch/get" => Route::BatchGet,
            "/v1/batch/put" => Route::BatchPut,
            "/v1/stats" => Route::Stats,
            "/v1/cluster" => Route::Cluster,
            placement if placement.starts_with("/v1/cluster/keys/") => Route::KeyPlacement,
            "/v1/openapi.json" => Route::OpenApi,
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            upstream if upstream.starts_with(super::upstreams::UPSTREAMS_PREFIX) => {
                let rest = &upstream[super::upstreams::UPSTREAMS_PREFIX.len()..];
                if rest.contains('/') {
                    Route::UpstreamPath
                } else {
                    Route::Upstream
                }
            }
            _ => Route::Unmatched,
        }
    }

    /// The path template, as a metric label and in messages: never the raw path (a key).
    pub fn template(self) -> &'static str {
        match self {
            Route::Keys => "/v1/keys/{key}",
            Route::EmptyKey => "/v1/keys/",
            Route::BatchGet => "/v1/batch/get",
            Route::BatchPut => "/v1/batch/put",
            Route::Stats => "/v1/stats",
            Route::Cluster => "/v1/cluster",
            Route::KeyPlacement => "/v1/cluster/keys/{key}",
            Route::OpenApi => "/v1/openapi.json",
            Route::Metrics => "/metrics",
            Route::Healthz => "/healthz",
            Route::Readyz => "/readyz",
            Route::UpstreamPath => "/v1/upstreams/{name}/{path}",
            Route::Upstream => "/v1/upstreams/{name}",
            Route::Unmatched => "unmatched",
        }
    }

    /// Index into [`Route::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// The request methods the API distinguishes, and the rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteMethod {
    Get,
    Head,
    Put,
    Delete,
    Post,
    Other,
}

impl RouteMethod {
    pub const ALL: [RouteMethod; 6] = [
        RouteMethod::Get,
        RouteMethod::Head,
        RouteMethod::Put,
        RouteMethod::Delete,
        RouteMethod::Post,
        RouteMethod::Other,
    ];

    pub fn of(method: &Method) -> Self {
        match *method {
            Method::GET => RouteMethod::Get,
            Method::HEAD => RouteMethod::Head,
            Method::PUT => RouteMethod::Put,
            Method::DELETE => RouteMethod::Delete,
            Method::POST => RouteMethod::Post,
            _ => RouteMethod::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RouteMethod::Get => "GET",
            RouteMethod::Head => "HEAD",
            RouteMethod::Put => "PUT",
            RouteMethod::Delete => "DELETE",
            RouteMethod::Post => "POST",
            RouteMethod::Other => "other",
        }
    }

    /// Index into [`RouteMethod::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_at_its_index_and_a_key_never_shows_in_a_template() {
        for (at, route) in Route::ALL.into_iter().enumerate() {
            assert_eq!(route.index(), at);
        }
        for (at, method) in RouteMethod::ALL.into_iter().enumerate() {
            assert_eq!(method.index(), at);
        }
        assert_eq!(Route::of("/v1/keys/user%2F1"), Route::Keys);
        assert_eq!(Route::of("/v1/keys/user%2F1").template(), "/v1/keys/{key}");
        assert_eq!(Route::of("/v1/cluster/keys/k"), Route::KeyPlacement);
        assert_eq!(Route::of("/v1/cluster"), Route::Cluster);
        assert_eq!(Route::of("/nope"), Route::Unmatched);
        assert_eq!(Route::of("/v1/upstreams/api/a/b"), Route::UpstreamPath);
        assert_eq!(Route::of("/v1/upstreams/api/"), Route::UpstreamPath);
        assert_eq!(Route::of("/v1/upstreams/api"), Route::Upstream);
        assert_eq!(RouteMethod::of(&Method::PATCH), RouteMethod::Other);
    }
}
