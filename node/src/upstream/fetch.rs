//! One upstream's client: a pooled HTTP client (reqwest, rustls with the system's
//! roots), at most `maxConcurrency` requests in flight, the timeouts and the circuit
//! breaker. Every request is measured.

use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use bytes::{Bytes, BytesMut};
use tokio::sync::Semaphore;
use tokio::time::Instant;

use kache_api::upstreams::UpstreamConfig;

use super::breaker::Breaker;
use super::key::{Target, upstream_url};
use crate::metrics::UpstreamMetrics;

/// The client of one upstream.
#[derive(Debug)]
pub struct UpstreamClient {
    pub config: UpstreamConfig,
    client: reqwest::Client,
    slots: Semaphore,
    breaker: Breaker,
    pub metrics: UpstreamMetrics,
    /// The largest body stored (and so shared with waiting requests and sent between
    /// nodes): `maxObjectSize`, within the node's `--max-value-bytes`.
    pub max_body: usize,
}

/// What the upstream answered.
#[derive(Debug)]
pub struct Fetched {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: FetchedBody,
}

#[derive(Debug)]
pub enum FetchedBody {
    Complete(Bytes),
    /// Larger than [`UpstreamClient::max_body`]: what was read, and the rest still to come.
    TooLarge {
        head: Bytes,
        rest: reqwest::Response,
    },
}

/// How an upstream request failed. Its `kind` is a stable word, in the JSON error and
/// as the `kind` label of `kache_upstream_fetch_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct FetchError {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// No response (or no whole body) within `timeout`.
    Timeout,
    /// No connection (refused, unreachable, TLS, DNS) within `connectTimeout`.
    Connect,
    /// The connection broke or the response was not valid HTTP.
    Protocol,
    /// The circuit breaker is open.
    CircuitOpen,
    /// `timeout` passed waiting for one of the `maxConcurrency` slots.
    Overloaded,
}

impl FailureKind {
    pub const ALL: [FailureKind; 5] = [
        FailureKind::Timeout,
        FailureKind::Connect,
        FailureKind::Protocol,
        FailureKind::CircuitOpen,
        FailureKind::Overloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Connect => "connect",
            FailureKind::Protocol => "protocol",
            FailureKind::CircuitOpen => "circuit_open",
            FailureKind::Overloaded => "overloaded",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| kind.as_str() == text)
    }

    /// 504 when the upstream (or a slot for it) did not answer in time, else 502.
    pub fn status(self) -> StatusCode {
        match self {
            FailureKind::Timeout | FailureKind::Overloaded => StatusCode::GATEWAY_TIMEOUT,
            FailureKind::Connect | FailureKind::Protocol | FailureKind::CircuitOpen => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl UpstreamClient {
    pub fn new(
        config: UpstreamConfig,
        metrics: UpstreamMetrics,
        max_value_bytes: usize,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(config.max_concurrency as usize)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("kache/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .build()?;
        // The stored record adds the headers and deadlines; 64 KiB leaves room for them.
        let max_body = config
            .max_object_bytes
            .min(max_value_bytes.saturating_sub(64 * 1024).max(1));
        Ok(Self {
            slots: Semaphore::new(config.max_concurrency as usize),
            breaker: Breaker::new(config.failure_threshold, config.open_for),
            client,
            metrics,
            max_body,
            config,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Whether the circuit breaker refuses requests now.
    pub fn circuit_open(&self) -> bool {
        self.breaker.is_open()
    }

    /// GETs `target` from the upstream, with `extra` headers (validators), reading at
    /// most [`UpstreamClient::max_body`] bytes of the body within the timeout.
    pub async fn fetch(
        &self,
        target: &Target,
        extra: &[(HeaderName, HeaderValue)],
    ) -> Result<Fetched, FetchError> {
        let fail = |kind: FailureKind, message: String| {
            self.metrics.fetch_error(kind);
            FetchError { kind, message }
        };
        let answer = self.fetch_once(target, extra, &fail).await;
        self.metrics.circuit(self.breaker.is_open());
        answer
    }

    async fn fetch_once(
        &self,
        target: &Target,
        extra: &[(HeaderName, HeaderValue)],
        fail: &impl Fn(FailureKind, String) -> FetchError,
    ) -> Result<Fetched, FetchError> {
        let name = &self.config.name;
        self.breaker.admit().map_err(|open| {
            fail(
                FailureKind::CircuitOpen,
                format!(
                    "upstream '{name}' failed {} times in a row; it is not called for another {:.1}s (circuit breaker open)",
                    self.config.failure_threshold,
                    open.retry_in.as_secs_f64()
                ),
            )
        })?;
        let timeout = self.config.timeout;
        let deadline = Instant::now() + timeout;
        let _slot = match tokio::time::timeout_at(deadline, self.slots.acquire()).await {
            Ok(Ok(slot)) => slot,
            _ => {
                return Err(fail(
                    FailureKind::Overloaded,
                    format!(
                        "upstream '{name}' already has {} requests in flight from this node, and none finished within {timeout:?}",
                        self.config.max_concurrency
                    ),
                ));
            }
        };
        let mut request = self.client.get(upstream_url(&self.config, target));
        for (header, value) in &target.headers {
            request = request.header(header.as_str(), value.as_slice());
        }
        for (header, value) in extra {
            request = request.header(header, value);
        }
        let started = std::time::Instant::now();
        self.metrics.in_flight(1);
        let answered = tokio::time::timeout_at(deadline, self.read(request, self.max_body)).await;
        self.metrics.in_flight(-1);
        let took = started.elapsed();
        match answered {
            Ok(Ok(fetched)) => {
                if fetched.status.is_server_error() {
                    self.breaker.failed();
                } else {
                    self.breaker.succeeded();
                }
                self.metrics.fetched(Some(fetched.status), took);
                Ok(fetched)
            }
            Ok(Err(error)) => {
                self.breaker.failed();
                self.metrics.fetched(None, took);
                let kind = if error.is_connect() {
                    FailureKind::Connect
                } else if error.is_timeout() {
                    FailureKind::Timeout
                } else {
                    FailureKind::Protocol
                };
                Err(fail(
                    kind,
                    format!("upstream '{name}': {}", error_chain(&error)),
                ))
            }
            Err(_) => {
                self.breaker.failed();
                self.metrics.fetched(None, took);
                Err(fail(
                    FailureKind::Timeout,
                    format!("upstream '{name}' did not send a whole response within {timeout:?}"),
                ))
            }
        }
    }

    async fn read(
        &self,
        request: reqwest::RequestBuilder,
        max_body: usize,
    ) -> Result<Fetched, reqwest::Error> {
        let mut response = request.send().await?;
        let status = response.status();
        let headers = std::mem::take(response.headers_mut());
        if response
            .content_length()
            .is_some_and(|len| len > max_body as u64)
        {
            return Ok(Fetched {
                status,
                headers,
                body: FetchedBody::TooLarge {
                    head: Bytes::new(),
                    rest: response,
                },
            });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = response.chunk().await? {
            body.extend_from_slice(&chunk);
            if body.len() > max_body {
                return Ok(Fetched {
                    status,
                    headers,
                    body: FetchedBody::TooLarge {
                        head: body.freeze(),
                        rest: response,
                    },
                });
            }
        }
        Ok(Fetched {
            status,
            headers,
            body: FetchedBody::Complete(body.freeze()),
        })
    }
}

/// The error and its causes, `: `-separated (reqwest's own message hides the cause).
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    // Bounded: error chains are short, and this stops after 8 links regardless.
    for _ in 0..8 {
        let Some(cause) = source else { break };
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
