//! In-process cost of one request through the HTTP router, without sockets or the kernel:
//! a stable way to compare handler changes on a noisy machine (see docs/benchmarks.md).
//!
//!     cargo run --release --example router_cost
//!
//! Each route is measured without a log subscriber and with the node's own at `info`
//! (text and JSON, written to a sink), and with the request spans on
//! (`kache_node::request=debug`): they cost only when a subscriber wants them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a failed step fails the test"
)]

use std::time::Instant;

use axum::body::Body;
use axum::http::Request;
use clap::Parser;
use kache_node::config::Cli;
use kache_node::http::{AppState, app};
use kache_node::store::Precondition;
use tower::ServiceExt;

const KEYS: u64 = 100_000;
const REQUESTS: u64 = 300_000;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let config = Cli::try_parse_from(["kache-node", "--node-id", "bench"])
        .unwrap()
        .into_config()
        .unwrap();
    let state = AppState::single_node(&config);
    let store = state.store().clone();
    for i in 0..KEYS {
        let key = format!("key:{i:012}");
        store
            .put(key.as_bytes(), &[b'x'; 100], None, &Precondition::None)
            .unwrap();
    }
    let service = app(state);
    // A fixed stride visits every key in an order unrelated to insertion.
    let uris: Vec<String> = (0..KEYS)
        .map(|i| format!("/v1/keys/key:{:012}", (i * 7919) % KEYS))
        .collect();
    for (label, path, logs) in [
        ("GET /healthz", Some("/healthz"), Logs::Off),
        ("GET /v1/keys/{random}", None, Logs::Off),
        (
            "GET /healthz, text logs at info",
            Some("/healthz"),
            Logs::Text,
        ),
        ("GET /v1/keys/{random}, text logs at info", None, Logs::Text),
        ("GET /v1/keys/{random}, json logs at info", None, Logs::Json),
        (
            "GET /v1/keys/{random}, json logs, request spans on",
            None,
            Logs::JsonRequests,
        ),
    ] {
        let _logging = logs.subscriber();
        let start = Instant::now();
        for i in 0..REQUESTS {
            let uri = path.map_or_else(|| uris[(i % KEYS) as usize].clone(), str::to_owned);
            let request = Request::get(uri).body(Body::empty()).unwrap();
            let response = service.clone().oneshot(request).await.unwrap();
            assert!(response.status().is_success());
        }
        let per_request = start.elapsed().as_nanos() / u128::from(REQUESTS);
        println!("{label}: {per_request} ns per request");
    }
}

/// Which log subscriber a run has.
#[derive(Clone, Copy)]
enum Logs {
    Off,
    Text,
    Json,
    /// JSON with `kache_node::request=debug`: a span and a `served` line per request.
    JsonRequests,
}

impl Logs {
    /// The subscriber for this thread (the runtime is current-thread), as `main.rs`
    /// builds it, writing to a sink; None for [`Logs::Off`].
    fn subscriber(self) -> Option<tracing::subscriber::DefaultGuard> {
        let filter = match self {
            Self::JsonRequests => "info,kache_node::request=debug",
            _ => "info",
        };
        let logs = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(std::io::sink);
        match self {
            Self::Off => None,
            Self::Text => Some(tracing::subscriber::set_default(logs.finish())),
            Self::Json | Self::JsonRequests => Some(tracing::subscriber::set_default(
                logs.json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_span_list(false)
                    .finish(),
            )),
        }
    }
}
