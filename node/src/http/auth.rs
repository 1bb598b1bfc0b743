//! Who may call what over HTTP: the role each route needs ([`required`]) and the check in
//! front of the router ([`Authorize`]), which answers 401 or 403 before any handler runs
//! or any body is read, so a refused request changes nothing.
//!
//! | Route | Needs |
//! |---|---|
//! | `/healthz`, `/readyz`, `/metrics`, `/v1/cluster`, `/v1/openapi.json` | nothing |
//! | `GET`/`HEAD /v1/keys/{key}`, `POST /v1/batch/get`, `GET /v1/cluster/keys/{key}`, `GET /v1/stats` | read |
//! | `PUT`/`DELETE /v1/keys/{key}`, `POST /v1/batch/put` | readwrite |
//! | any other path | read (then 404 or 405), so a client without a token learns nothing of the routes |
//!
//! No route needs admin yet: kache has no flush and takes its configuration from flags.
//! The open routes show no key or value; the operator and Prometheus read them, and the
//! NetworkPolicy limits who reaches the port (docs/security.md says why each is open).
//!
//! The token is `Authorization: Bearer <token>`, or `Kache-Authorization: Bearer <token>`
//! for clients that reach the node through the Kubernetes API server's pod proxy
//! (`kubectl kache`): the proxy strips `Authorization`, which carries the caller's own
//! credentials for the API server. Both go through the same checks; `Authorization` wins
//! when a request sends both. With auth off the check is one branch.

use std::convert::Infallible;
use std::task::{Context, Poll};

use axum::extract::Request;
use axum::http::header::AUTHORIZATION;
use axum::http::{HeaderName, Method};
use axum::response::{IntoResponse, Response};
use futures::future::{Either, Ready, ready};
use tower::Service;

use super::error::AppError;
use super::route::Route;
use crate::auth::{Access, Auth, Protocol, Refusal, Role};

/// What a request for `path` with `method` needs, and the route's name for messages
/// (never the key).
pub fn required(method: &Method, path: &str) -> (Access, &'static str) {
    let reads = method == Method::GET || method == Method::HEAD;
    let route = Route::of(path);
    let access = match route {
        Route::Healthz | Route::Readyz | Route::Metrics | Route::Cluster | Route::OpenApi => {
            Access::Open
        }
        Route::BatchGet | Route::Stats | Route::KeyPlacement | Route::Unmatched => {
            Access::Needs(Role::Read)
        }
        Route::BatchPut => Access::Needs(Role::ReadWrite),
        Route::Keys | Route::EmptyKey if reads => Access::Needs(Role::Read),
        Route::Keys | Route::EmptyKey => Access::Needs(Role::ReadWrite),
        Route::UpstreamPath | Route::Upstream if reads => Access::Needs(Role::Read),
        // Purging one URL is a write; purging a whole upstream empties it for everyone.
        Route::UpstreamPath => Access::Needs(Role::ReadWrite),
        Route::Upstream => Access::Needs(Role::Admin),
    };
    let name = match route {
        Route::Unmatched => "this path",
        Route::EmptyKey => Route::Keys.template(),
        route => route.template(),
    };
    (access, name)
}

/// The header that carries the token through the API server's pod proxy, which strips
/// `Authorization`.
pub static KACHE_AUTHORIZATION: HeaderName = HeaderName::from_static("kache-authorization");

/// The token of an `Authorization: Bearer <token>` header (the scheme in any case), or
/// else of a `Kache-Authorization` one.
fn bearer(request: &Request) -> Option<&[u8]> {
    let headers = request.headers();
    let value = headers
        .get(AUTHORIZATION)
        .or_else(|| headers.get(&KACHE_AUTHORIZATION))?
        .as_bytes();
    let (scheme, token) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| token.trim_ascii())
        .filter(|token| !token.is_empty())
}

/// The router behind the token check.
#[derive(Debug, Clone)]
pub struct Authorize<S> {
    inner: S,
    auth: Auth,
}

impl<S> Authorize<S> {
    pub fn new(inner: S, auth: Auth) -> Self {
        Self { inner, auth }
    }

    /// Whether `request` may go on; the refusal, counted, if not.
    fn check(&self, request: &Request) -> Result<(), AppError> {
        let (access, route) = required(request.method(), request.uri().path());
        let Access::Needs(needed) = access else {
            return Ok(());
        };
        let refuse = |refusal, error| {
            self.auth.count_refused(Protocol::Http, refusal);
            Err(error)
        };
        let Some(token) = bearer(request) else {
            return refuse(
                Refusal::Unauthenticated,
                AppError::Unauthenticated(
                    "this request needs a token: send the header Authorization: Bearer <token>",
                ),
            );
        };
        let Some(credential) = self.auth.authenticate(None, token) else {
            return refuse(
                Refusal::Unauthenticated,
                AppError::Unauthenticated("the token is not valid"),
            );
        };
        let principal = credential.principal;
        if principal.role < needed {
            return refuse(
                Refusal::Forbidden,
                AppError::Forbidden {
                    user: principal.user,
                    role: principal.role,
                    needed,
                    method: request.method().to_string(),
                    route,
                },
            );
        }
        Ok(())
    }
}

impl<S> Service<Request> for Authorize<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Either<S::Future, Ready<Result<Response, Infallible>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if !self.auth.is_on() {
            return Either::Left(self.inner.call(request));
        }
        match self.check(&request) {
            Ok(()) => Either::Left(self.inner.call(request)),
            Err(refused) => Either::Right(ready(Ok(refused.into_response()))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_needs_the_documented_role() {
        let read = Access::Needs(Role::Read);
        let write = Access::Needs(Role::ReadWrite);
        for (method, path, access) in [
            (Method::GET, "/healthz", Access::Open),
            (Method::GET, "/readyz", Access::Open),
            (Method::GET, "/metrics", Access::Open),
            (Method::GET, "/v1/cluster", Access::Open),
            (Method::GET, "/v1/openapi.json", Access::Open),
            (Method::GET, "/v1/keys/a", read),
            (Method::HEAD, "/v1/keys/a", read),
            (Method::PUT, "/v1/keys/a", write),
            (Method::DELETE, "/v1/keys/a", write),
            (Method::POST, "/v1/keys/a", write),
            (Method::PUT, "/v1/keys/", write),
            (Method::POST, "/v1/batch/get", read),
            (Method::POST, "/v1/batch/put", write),
            (Method::GET, "/v1/stats", read),
            (Method::GET, "/v1/cluster/keys/a", read),
            (Method::GET, "/v1/clusterx", read),
            (Method::GET, "/healthz/", read),
            (Method::GET, "/", read),
        ] {
            assert_eq!(required(&method, path).0, access, "{method} {path}");
        }
        assert_eq!(
            required(&Method::PUT, "/v1/keys/secret").1,
            "/v1/keys/{key}"
        );
    }

    #[test]
    fn only_a_bearer_header_with_a_token_carries_one() {
        let with = |value: &str| {
            let request = Request::builder()
                .header(AUTHORIZATION, value)
                .body(axum::body::Body::empty())
                .expect("request");
            bearer(&request).map(<[u8]>::to_vec)
        };
        assert_eq!(with("Bearer abc"), Some(b"abc".to_vec()));
        assert_eq!(with("bearer  abc "), Some(b"abc".to_vec()));
        assert_eq!(with("Basic YTpi"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(with("Bearer"), None);
        assert_eq!(with("abc"), None);
    }

    #[test]
    fn the_proxy_header_carries_a_token_too() {
        let request = |headers: &[(&HeaderName, &str)]| {
            let mut builder = Request::builder();
            for (name, value) in headers {
                builder = builder.header(*name, *value);
            }
            builder.body(axum::body::Body::empty()).expect("request")
        };
        let kache = &KACHE_AUTHORIZATION;
        let only_kache = request(&[(kache, "Bearer abc")]);
        assert_eq!(bearer(&only_kache), Some(&b"abc"[..]));
        let lowercase = request(&[(kache, "bearer abc ")]);
        assert_eq!(bearer(&lowercase), Some(&b"abc"[..]));
        let not_bearer = request(&[(kache, "Basic YTpi")]);
        assert_eq!(bearer(&not_bearer), None);
        let both = request(&[(&AUTHORIZATION, "Bearer first"), (kache, "Bearer second")]);
        assert_eq!(bearer(&both), Some(&b"first"[..]));
    }
}
