//! The node's Prometheus metrics: one [`Metrics`] per node, exposed on `/metrics` in the
//! OpenMetrics text format (prometheus-client).
//!
//! Two kinds of family:
//! - **Observed on the request paths**, registered once in the node's registry and
//!   updated as requests are served: HTTP request latency by route, method and status
//!   class ([`requests`]), RESP command latency ([`requests`]), peer RPC latency and
//!   errors by peer and method ([`peer`]), forwarded requests, and read-through per
//!   upstream ([`upstream`]). The label sets of the
//!   hot paths are resolved once, into fixed tables of atomic histograms
//!   ([`histogram`]): serving a request costs two or three relaxed atomic adds and no
//!   lookup by label.
//! - **Read at scrape time** from the counters the node keeps anyway (the store's stats,
//!   the sync counters, the clock watch, the data dir, auth): `http::admin` lists them as
//!   [`Sample`]s, which [`Metrics::encode`] writes after the registered families.
//!
//! The names are a contract with the alerts and the dashboard (docs/operations.md lists
//! every family with its type and labels).

pub mod histogram;
pub mod peer;
pub mod requests;
mod samples;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use prometheus_client::encoding::text::{encode_eof, encode_registry};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;

use crate::auth::Protocol;
use crate::http::route::{Route, RouteMethod};
pub use peer::{PeerMethod, PeerRpcs};
use requests::{HttpRequests, HttpResponses, RespCommands};
pub use samples::{Sample, SampleValue, Samples};
pub use upstream::{CacheOutcome, UpstreamMetrics};

/// The content type of `/metrics`.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A cheap handle on the node's metrics. The registry is built once, in [`Metrics::new`],
/// and only read afterwards; every family in it updates through atomics.
#[derive(Debug, Clone)]
pub struct Metrics {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    registry: Registry,
    http: Arc<HttpRequests>,
    resp: Arc<RespCommands>,
    peers: Arc<PeerRpcs>,
    /// Forwarded requests by protocol (http, resp) and outcome (ok, error).
    forwarded: [[Counter; 2]; 2],
    quorum_failures: Counter,
    upstreams: upstream::UpstreamFamilies,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let http = Arc::new(HttpRequests::default());
        registry.register(
            "kache_http_request_duration_seconds",
            "HTTP requests by route template, method and status class, from the request \
             head read to the response ready (refused requests included)",
            requests::HttpLatency(http.clone()),
        );
        registry.register(
            "kache_http_responses",
            "HTTP responses by status class",
            HttpResponses(http.clone()),
        );
        let resp = Arc::new(RespCommands::default());
        registry.register(
            "kache_resp_command_duration_seconds",
            "RESP commands by command (lower case; other for unknown ones) and outcome \
             (error for an error reply)",
            requests::RespLatency(resp.clone()),
        );
        let peers = Arc::new(PeerRpcs::default());
        registry.register(
            "kache_peer_rpc_duration_seconds",
            "Calls this node made to a peer, by peer (member id), gRPC method and outcome",
            peer::Latency(peers.clone()),
        );
        registry.register(
            "kache_peer_rpc_errors",
            "Calls to a peer that failed, by peer, gRPC method and status code",
            peer::Errors(peers.clone()),
        );
        let forwarded = prometheus_client::metrics::family::Family::<
            [(&'static str, &'static str); 2],
            Counter,
        >::default();
        let handle = |protocol, outcome| {
            forwarded
                .get_or_create(&[("protocol", protocol), ("outcome", outcome)])
                .clone()
        };
        let forwarded_handles = [
            [handle("http", "ok"), handle("http", "error")],
            [handle("resp", "ok"), handle("resp", "error")],
        ];
        registry.register(
            "kache_forwarded_requests",
            "Key requests this node served without holding a copy of the key: sent on to \
             the key's owners, by client protocol and outcome",
            forwarded,
        );
        let quorum_failures = Counter::default();
        registry.register(
            "kache_quorum_failures",
            "Key requests that failed because too few of the key's replicas answered \
             (most HTTP 503 replicas_unavailable and RESP TRYAGAIN answers)",
            quorum_failures.clone(),
        );
        let upstreams = upstream::UpstreamFamilies::register(&mut registry);
        Self {
            shared: Arc::new(Shared {
                registry,
                http,
                resp,
                peers,
                forwarded: forwarded_handles,
                quorum_failures,
                upstreams,
            }),
        }
    }

    /// An HTTP request to `route` answered `status` after `took`.
    pub fn http_request(
        &self,
        route: Route,
        method: RouteMethod,
        status: StatusCode,
        took: Duration,
    ) {
        self.shared.http.observe(route, method, status, took);
    }

    /// A RESP command (its index in the command table; None: unknown) answered after
    /// `took`, with an error reply or not.
    pub fn resp_command(&self, command: Option<usize>, ok: bool, took: Duration) {
        self.shared.resp.observe(command, ok, took);
    }

    /// The peer calls' table, for the peer client pool.
    pub fn peer_rpcs(&self) -> Arc<PeerRpcs> {
        self.shared.peers.clone()
    }

    /// A key request was sent on to its owners (this node holds no copy).
    pub fn forwarded(&self, protocol: Protocol, ok: bool) {
        self.shared.forwarded[protocol as usize][usize::from(!ok)].inc();
    }

    /// The read-through series of `upstream`.
    pub fn upstream(&self, upstream: &str) -> UpstreamMetrics {
        self.shared.upstreams.handles(upstream)
    }

    /// A key request failed for want of replicas' answers.
    pub fn quorum_failed(&self) {
        self.shared.quorum_failures.inc();
    }

    /// The exposition: the registered families, then `scraped` (read just now), then
    /// the `# EOF` the format ends with.
    pub fn encode(&self, scraped: Samples) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let mut at_scrape = Registry::default();
        at_scrape.register_collector(Box::new(scraped));
        // Writing to a String cannot fail, and every encoder here only writes.
        let _ = encode_registry(&mut out, &self.shared.registry)
            .and_then(|()| encode_registry(&mut out, &at_scrape))
            .and_then(|()| encode_eof(&mut out));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_has_every_family_in_openmetrics_text() {
        let metrics = Metrics::new();
        let took = Duration::from_micros(300);
        metrics.http_request(Route::Keys, RouteMethod::Put, StatusCode::CREATED, took);
        metrics.http_request(Route::Keys, RouteMethod::Put, StatusCode::NO_CONTENT, took);
        metrics.resp_command(Some(0), true, took);
        metrics.peer_rpcs().observe(
            "node-1",
            PeerMethod::Get,
            took,
            Some(&tonic::Status::deadline_exceeded("slow")),
        );
        metrics.forwarded(Protocol::Resp, false);
        metrics.quorum_failed();
        let scraped = Samples(vec![
            Sample::one("kache_keys", "Keys held.", SampleValue::Gauge(3)),
            Sample::one(
                "kache_hits_total",
                "Reads that hit.",
                SampleValue::Counter(7),
            ),
            Sample::one("kache_hit_ratio", "Hits.", SampleValue::GaugeF64(0.25)),
            Sample {
                name: "kache_auth_refused_total",
                help: "Refused.",
                series: vec![(
                    vec![("protocol", "http"), ("reason", "forbidden")],
                    SampleValue::Counter(2),
                )],
            },
        ]);
        let text = metrics.encode(scraped);
        let put = r#"route="/v1/keys/{key}",method="PUT",outcome="2xx""#;
        for line in [
            "# TYPE kache_http_request_duration_seconds histogram\n".to_owned(),
            format!("kache_http_request_duration_seconds_count{{{put}}} 2\n"),
            format!("kache_http_request_duration_seconds_sum{{{put}}} 0.0006\n"),
            // Cumulative: none by 250 µs, both by 500 µs and in every bucket after.
            format!("kache_http_request_duration_seconds_bucket{{le=\"0.00025\",{put}}} 0\n"),
            format!("kache_http_request_duration_seconds_bucket{{le=\"0.0005\",{put}}} 2\n"),
            format!("kache_http_request_duration_seconds_bucket{{le=\"+Inf\",{put}}} 2\n"),
            "kache_http_responses_total{class=\"2xx\"} 2\n".to_owned(),
            "kache_resp_command_duration_seconds_count{command=\"get\",outcome=\"ok\"} 1\n"
                .to_owned(),
            "kache_peer_rpc_duration_seconds_count{peer=\"node-1\",method=\"Get\",outcome=\"error\"} 1\n"
                .to_owned(),
            "kache_peer_rpc_errors_total{peer=\"node-1\",method=\"Get\",code=\"DeadlineExceeded\"} 1\n"
                .to_owned(),
            "kache_forwarded_requests_total{protocol=\"resp\",outcome=\"error\"} 1\n".to_owned(),
            "kache_forwarded_requests_total{protocol=\"http\",outcome=\"ok\"} 0\n".to_owned(),
            "# TYPE kache_quorum_failures counter\nkache_quorum_failures_total 1\n".to_owned(),
            "# TYPE kache_keys gauge\nkache_keys 3\n".to_owned(),
            "# HELP kache_hits Reads that hit.\n# TYPE kache_hits counter\nkache_hits_total 7\n"
                .to_owned(),
            "kache_hit_ratio 0.25\n".to_owned(),
            "kache_auth_refused_total{protocol=\"http\",reason=\"forbidden\"} 2\n".to_owned(),
        ] {
            assert!(text.contains(&line), "{line}: {text}");
        }
        assert!(
            !text.contains("outcome=\"4xx\""),
            "a cell that saw nothing is left out: {text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }
}
