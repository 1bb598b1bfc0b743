//! `/v1/upstreams/...`: read-through caching of upstream HTTP APIs (docs/readthrough.md).
//!
//! - `GET`/`HEAD /v1/upstreams/{name}/{path}?{query}`: the upstream's response, from the
//!   cache or fetched once by the key's owner; `X-Cache` says which (HIT, MISS, STALE,
//!   REVALIDATED).
//! - `DELETE /v1/upstreams/{name}/{path}?{query}`: purges that URL's cached response
//!   (the readwrite role).
//! - `DELETE /v1/upstreams/{name}`: purges every cached response of the upstream, on
//!   every member (the admin role).

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method};
use axum::response::{IntoResponse, Response};

use super::AppState;
use super::error::{AppError, WritePath};
use crate::upstream::{PurgeError, ReadError, ReplyBody, X_CACHE};

pub const UPSTREAMS_PREFIX: &str = "/v1/upstreams/";

pub async fn dispatch(
    State(state): State<AppState>,
    request: Request,
) -> Result<Response, AppError> {
    let uri = request.uri();
    let rest = uri
        .path()
        .strip_prefix(UPSTREAMS_PREFIX)
        .unwrap_or_default();
    let (name, path) = match rest.find('/') {
        Some(at) => (&rest[..at], Some(&rest[at..])),
        None => (rest, None),
    };
    if name.is_empty() {
        return Err(AppError::bad_request(
            "no_upstream_name",
            "name the upstream: /v1/upstreams/{name}/{path}",
        ));
    }
    let read_through = state
        .read_through()
        .ok_or_else(|| read_error(ReadError::NoUpstream(name.to_owned(), "none".into())))?;
    let query = uri.query();
    let method = request.method();
    if method == Method::GET || method == Method::HEAD {
        let reply = read_through
            .get(name, path.unwrap_or("/"), query, request.headers())
            .await
            .map_err(read_error)?;
        let body = match reply.body {
            ReplyBody::Full(bytes) => Body::from(bytes),
            ReplyBody::Stream(body) => body,
        };
        let mut response = Response::new(body);
        *response.status_mut() = reply.status;
        *response.headers_mut() = reply.headers;
        response.headers_mut().insert(
            X_CACHE.clone(),
            HeaderValue::from_static(reply.cache.header()),
        );
        return Ok(response);
    }
    if method != Method::DELETE {
        return Err(AppError::MethodNotAllowed {
            method: method.to_string(),
            path: "/v1/upstreams/{name}/{path}".into(),
        });
    }
    match path {
        Some(path) => {
            let purged = read_through
                .purge_url(name, path, query, request.headers())
                .await
                .map_err(purge_error)?;
            Ok(Json(serde_json::json!({ "purged": purged })).into_response())
        }
        None => {
            let purged = read_through.purge_all(name).await.map_err(purge_error)?;
            if purged.unreached.is_empty() {
                Ok(Json(purged).into_response())
            } else {
                Err(AppError::Unavailable(format!(
                    "purged {} entries on {} members; these did not answer and keep theirs until purged again or expired: {}",
                    purged.purged,
                    purged.members,
                    purged.unreached.join(", ")
                )))
            }
        }
    }
}

fn read_error(error: ReadError) -> AppError {
    match error {
        ReadError::NoUpstream(..) => AppError::NoUpstream(error.to_string()),
        ReadError::Target(target) => match target {
            crate::upstream::key::TargetError::NotAllowed { .. } => {
                AppError::PathNotAllowed(target.to_string())
            }
            other => AppError::bad_request("bad_upstream_path", other.to_string()),
        },
        ReadError::Upstream { upstream, error } => AppError::Upstream {
            upstream,
            kind: error.kind,
            message: error.message,
        },
    }
}

fn purge_error(error: PurgeError) -> AppError {
    match error {
        PurgeError::Read(error) => read_error(error),
        PurgeError::Cluster(error) => AppError::from_write(error, WritePath::ReadThenWrite),
    }
}
