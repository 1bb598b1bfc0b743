//! The API's error type and its JSON body: `{"error":{"code":"…","message":"…"}}`.
//!
//! Every failure a client can cause maps to a precise status and a stable `code`. Server
//! faults are logged here and reach the client only as a generic 500.
//!
//! A 4xx (and a 507) changes nothing; a 401 or 403 is answered before the request's body
//! is read. A write that answers 503 is different: some owners
//! may have stored it before too few acknowledged, and it can become visible later. Its
//! body says so (`"outcome": "indeterminate"`) and, where the count means anything, how
//! many acknowledgements arrived; a read's 503 carries neither.

use std::sync::Arc;

use axum::Json;
use axum::http::header::WWW_AUTHENTICATE;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::Role;
use crate::cluster::ClusterError;
use crate::store::StoreError;
use crate::upstream::fetch::FailureKind;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{message}")]
    BadRequest { code: &'static str, message: String },
    #[error("key is {len} bytes; the limit is {max} bytes")]
    KeyTooLong { len: usize, max: usize },
    #[error("{what} is larger than the limit of {max} bytes")]
    PayloadTooLarge { what: String, max: usize },
    #[error("key not found")]
    KeyNotFound,
    #[error("no route for {0}")]
    NoRoute(String),
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed { method: String, path: String },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Too few owners answered a read.
    #[error("{0}")]
    Unavailable(String),
    /// Too few owners acknowledged a write, which may still have been stored by some.
    #[error("{message}")]
    WriteIndeterminate { message: String, acks: Option<Acks> },
    /// This node's clock is too far from its peers': it takes no writes (nothing was
    /// written).
    #[error("{0}")]
    ClockOutOfBounds(String),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("node is syncing the partitions it owns from their other owners")]
    Syncing,
    /// No token, a malformed `Authorization` header, or a token no user has.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// A known token whose role is below what the request needs.
    #[error("user '{user}' has the {role} role; {method} {route} needs {needed}")]
    Forbidden {
        user: Arc<str>,
        role: Role,
        needed: Role,
        method: String,
        route: &'static str,
    },
    /// A read-through request for an upstream the node does not have.
    #[error("{0}")]
    NoUpstream(String),
    /// A read-through path outside the upstream's `pathPrefixes`.
    #[error("{0}")]
    PathNotAllowed(String),
    /// A read-through upstream failed and nothing servable was cached: 504 when it did
    /// not answer in time, else 502.
    #[error("{message}")]
    Upstream {
        upstream: String,
        kind: FailureKind,
        message: String,
    },
    #[error("internal error")]
    Internal(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl AppError {
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest { .. } => StatusCode::BAD_REQUEST,
            Self::KeyTooLong { .. } => StatusCode::URI_TOO_LONG,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::KeyNotFound
            | Self::NoRoute(_)
            | Self::NoUpstream(_)
            | Self::Store(StoreError::NotFound) => StatusCode::NOT_FOUND,
            Self::PathNotAllowed(_) => StatusCode::FORBIDDEN,
            Self::Upstream { kind, .. } => kind.status(),
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden { .. } => StatusCode::FORBIDDEN,
            Self::Store(StoreError::PreconditionFailed) => StatusCode::PRECONDITION_FAILED,
            Self::Store(
                StoreError::EntryTooLarge { .. }
                | StoreError::OutOfMemory { .. }
                | StoreError::Disk(_),
            ) => StatusCode::INSUFFICIENT_STORAGE,
            Self::ShuttingDown
            | Self::ClockOutOfBounds(_)
            | Self::Syncing
            | Self::Unavailable(_)
            | Self::WriteIndeterminate { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::BadRequest { code, .. } => code,
            Self::KeyTooLong { .. } => "key_too_long",
            Self::PayloadTooLarge { .. } => "payload_too_large",
            Self::KeyNotFound | Self::Store(StoreError::NotFound) => "key_not_found",
            Self::NoRoute(_) => "no_route",
            Self::NoUpstream(_) => "no_upstream",
            Self::PathNotAllowed(_) => "path_not_allowed",
            Self::Upstream { kind, .. } => match kind {
                FailureKind::Timeout => "upstream_timeout",
                FailureKind::Connect => "upstream_unreachable",
                FailureKind::Protocol => "upstream_protocol_error",
                FailureKind::CircuitOpen => "upstream_circuit_open",
                FailureKind::Overloaded => "upstream_overloaded",
            },
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Unauthenticated(_) => "unauthenticated",
            Self::Forbidden { .. } => "forbidden",
            Self::Store(StoreError::PreconditionFailed) => "precondition_failed",
            Self::Store(
                StoreError::EntryTooLarge { .. }
                | StoreError::OutOfMemory { .. }
                | StoreError::Disk(_),
            ) => "insufficient_storage",
            Self::ShuttingDown => "shutting_down",
            Self::ClockOutOfBounds(_) => "clock_out_of_bounds",
            Self::Syncing => "syncing",
            Self::Unavailable(_) | Self::WriteIndeterminate { .. } => "replicas_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The error of a write (PUT, DELETE, a batch item). A 503 becomes
    /// [`AppError::WriteIndeterminate`]; `path` says whether its acknowledgement count
    /// counts stored copies, and so may be reported.
    pub fn from_write(err: ClusterError, path: WritePath) -> Self {
        match err {
            ClusterError::Store(err) => Self::Store(err),
            unavailable @ ClusterError::Unavailable { needed, acked, .. } => {
                tracing::warn!(
                    error = %unavailable,
                    request_id = %crate::request_id::Current,
                    "write failed: replicas unavailable"
                );
                Self::WriteIndeterminate {
                    message: unavailable.to_string(),
                    acks: (path == WritePath::WriteOnly).then_some(Acks { acked, needed }),
                }
            }
            // Some replicas may have stored it before the others refused: indeterminate.
            superseded @ ClusterError::Superseded { .. } => {
                tracing::warn!(
                    error = %superseded,
                    request_id = %crate::request_id::Current,
                    "write failed: replicas hold newer versions"
                );
                Self::WriteIndeterminate {
                    message: superseded.to_string(),
                    acks: None,
                }
            }
            // Replicas on the same epoch may have stored it: indeterminate.
            behind @ ClusterError::Behind { .. } => {
                tracing::warn!(
                    error = %behind,
                    request_id = %crate::request_id::Current,
                    "write failed: the member list moved on"
                );
                Self::WriteIndeterminate {
                    message: behind.to_string(),
                    acks: None,
                }
            }
            clock @ ClusterError::ClockOutOfBounds { .. } => {
                Self::ClockOutOfBounds(clock.to_string())
            }
        }
    }

    /// The error as it appears inside a batch response item.
    pub fn body(&self) -> ErrorDetail {
        let (outcome, acks) = match self {
            Self::WriteIndeterminate { acks, .. } => (Some(Outcome::Indeterminate), *acks),
            _ => (None, None),
        };
        let upstream = match self {
            Self::Upstream { upstream, kind, .. } => Some(UpstreamFailure {
                upstream: upstream.clone(),
                failure: kind.as_str(),
            }),
            _ => None,
        };
        ErrorDetail {
            code: self.code(),
            message: self.to_string(),
            outcome,
            acks,
            upstream,
        }
    }
}

/// How a write reached the owners, which decides what a 503's acknowledgement count means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WritePath {
    /// Straight to the owners (an unconditional PUT, a batch item): every acknowledgement
    /// counted is an owner that stored the write.
    WriteOnly,
    /// A quorum read first (a conditional PUT, a DELETE): a 503 from the read carries the
    /// count of read answers, indistinguishable from write acknowledgements, so no count is
    /// reported.
    ReadThenWrite,
}

/// What a failed write's client can know of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// It may have been stored by some owners, or by none.
    Indeterminate,
}

/// Acknowledgements of a write that got too few. `acked > 0` means at least one owner
/// stored it; `acked == 0` does not mean none did (an acknowledgement can be lost).
/// During a move an owner in both the old and the new owner set counts once in each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Acks {
    pub acked: usize,
    pub needed: usize,
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
    /// Only on a write that failed after it may have reached an owner.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub acks: Option<Acks>,
    /// Which read-through upstream failed, and how.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamFailure>,
}

/// A read-through error's upstream and kind of failure (timeout, connect, protocol,
/// circuit_open, overloaded).
#[derive(Debug, Serialize)]
pub struct UpstreamFailure {
    pub upstream: String,
    pub failure: &'static str,
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

impl From<ClusterError> for AppError {
    fn from(err: ClusterError) -> Self {
        match err {
            ClusterError::Store(err) => Self::Store(err),
            unavailable => {
                tracing::warn!(
                    error = %unavailable,
                    request_id = %crate::request_id::Current,
                    "request failed: replicas unavailable"
                );
                Self::Unavailable(unavailable.to_string())
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Self::Internal(source) = &self {
            tracing::error!(
                error = %source,
                request_id = %crate::request_id::Current,
                "request failed"
            );
        }
        let mut response = (self.status(), Json(ErrorBody { error: self.body() })).into_response();
        if let Self::Unauthenticated(_) = self {
            // RFC 6750: a 401 names the scheme (and realm) the client should use.
            response.headers_mut().insert(
                WWW_AUTHENTICATE,
                HeaderValue::from_static(r#"Bearer realm="kache""#),
            );
        }
        response
    }
}
