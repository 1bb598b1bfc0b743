//! The API's error type and its JSON body: `{"error":{"code":"…","message":"…"}}`.
//!
//! Every failure a client can cause maps to a precise status and a stable `code`. Server
//! faults are logged here and reach the client only as a generic 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::cluster::ClusterError;
use crate::store::StoreError;

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
    #[error("{0}")]
    Unavailable(String),
    #[error("node is shutting down")]
    ShuttingDown,
    #[error("node is syncing the partitions it owns from their other owners")]
    Syncing,
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
            Self::KeyNotFound | Self::NoRoute(_) | Self::Store(StoreError::NotFound) => {
                StatusCode::NOT_FOUND
            }
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::Store(StoreError::PreconditionFailed) => StatusCode::PRECONDITION_FAILED,
            Self::Store(StoreError::EntryTooLarge { .. } | StoreError::OutOfMemory { .. }) => {
                StatusCode::INSUFFICIENT_STORAGE
            }
            Self::ShuttingDown | Self::Syncing | Self::Unavailable(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
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
            Self::MethodNotAllowed { .. } => "method_not_allowed",
            Self::Store(StoreError::PreconditionFailed) => "precondition_failed",
            Self::Store(StoreError::EntryTooLarge { .. } | StoreError::OutOfMemory { .. }) => {
                "insufficient_storage"
            }
            Self::ShuttingDown => "shutting_down",
            Self::Syncing => "syncing",
            Self::Unavailable(_) => "replicas_unavailable",
            Self::Internal(_) => "internal",
        }
    }

    /// The error as it appears inside a batch response item.
    pub fn body(&self) -> ErrorDetail {
        ErrorDetail {
            code: self.code(),
            message: self.to_string(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct ErrorDetail {
    pub code: &'static str,
    pub message: String,
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
                tracing::warn!(error = %unavailable, "request failed: replicas unavailable");
                Self::Unavailable(unavailable.to_string())
            }
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        if let Self::Internal(source) = &self {
            tracing::error!(error = %source, "request failed");
        }
        (self.status(), Json(ErrorBody { error: self.body() })).into_response()
    }
}
