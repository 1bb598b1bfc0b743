//! `spec.upstreams[]`: the HTTP APIs the cluster reads through (`GET
//! /v1/upstreams/{name}/{path}` on any node; docs/readthrough.md).
//!
//! [`Upstream`] is `kache_api::upstreams::Upstream` field for field, with the same
//! defaults (the same functions), plus what the API server needs to refuse a bad one at
//! admission: patterns and bounds in the schema, and CEL rules whose messages say what to
//! fix. The node's types carry no schema (kache-api does not depend on schemars), so the
//! operator keeps this copy and converts it with [`Upstream::to_node`]; a test walks every
//! field. The operator still runs `kache_api::upstreams::validate_all` on the converted
//! list before it applies anything (`resources::config`), for objects stored before a
//! rule existed and for what CEL cannot see (a duration too large to count).
//!
//! Every list and string a rule reads is bounded (`maxItems`, `maxLength`), so the API
//! server's cost estimate of the rules stays within its budget.

use kache_api::upstreams::{self as api, MAX_LIST_LEN, MAX_NAME_LEN, RESERVED_HEADERS, defaults};
use kube::KubeSchema;
use kube::core::{Message, Rule};
use serde::{Deserialize, Serialize};

/// A duration as the node reads it, e.g. 500ms, 2s, 5m, 1h, 1d (as `spec.defaultTtl`).
const DURATION: &str = r"^[0-9]{1,9}(ms|s|m|h|d)$";
/// A byte size as the node reads it, e.g. 512KiB, 1MiB (as `spec.maxMemory`).
const BYTES: &str = r"^[0-9]{1,15}(B|KiB|MiB|GiB|TiB|Ki|Mi|Gi|Ti|KB|MB|GB|TB)?$";

/// One upstream HTTP API. Only GET (and HEAD) requests are read through.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upstream {
    /// The name in the path: `/v1/upstreams/{name}/...`. A DNS label, unique in the list.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')")
        .message("upstreams[].name must be a DNS label: lower-case letters, digits and '-', starting and ending with a letter or digit"))]
    pub name: String,

    /// The base URL, `http://host[:port][/path]`: no user info, query or fragment. The
    /// request's path is appended to it.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(r"self.matches('^https?://[^/?#@\\s]+(/[^?#\\s]*)?$')")
        .message("upstreams[].url must be http:// or https:// with a host, and no user info (@), query (?), fragment (#) or spaces, e.g. https://api.example.com/v2"))]
    pub url: String,

    /// How long connecting to the upstream may take. More than 0s.
    #[serde(default = "defaults::connect_timeout")]
    #[schemars(regex(pattern = DURATION), length(max = 16))]
    #[x_kube(validation = Rule::new("!self.matches('^0+[a-z]+$')")
        .message("upstreams[].connectTimeout must be more than 0s"))]
    pub connect_timeout: String,

    /// How long the upstream has to send the whole response. More than 0s.
    #[serde(default = "defaults::timeout")]
    #[schemars(regex(pattern = DURATION), length(max = 16))]
    #[x_kube(validation = Rule::new("!self.matches('^0+[a-z]+$')")
        .message("upstreams[].timeout must be more than 0s"))]
    pub timeout: String,

    /// Freshness of a response that states none (no max-age, s-maxage or Expires). 0s
    /// stores such responses only for revalidation.
    #[serde(default = "defaults::default_ttl")]
    #[schemars(regex(pattern = DURATION), length(max = 16))]
    pub default_ttl: String,

    /// Freshness of a 404 or 410 that states none.
    #[serde(default = "defaults::negative_ttl")]
    #[schemars(regex(pattern = DURATION), length(max = 16))]
    pub negative_ttl: String,

    /// The largest response body stored, e.g. 1MiB; a larger one is passed through, never
    /// stored. More than 0.
    #[serde(default = "defaults::max_object_size")]
    #[schemars(regex(pattern = BYTES), length(max = 24))]
    #[x_kube(validation = Rule::new("!self.matches('^0+[A-Za-z]*$')")
        .message("upstreams[].maxObjectSize must be more than 0"))]
    pub max_object_size: String,

    /// Request headers whose values are part of the cache key (and are forwarded), e.g.
    /// Accept-Language. Not hop-by-hop or conditional headers, Host, Range or
    /// Kache-Authorization: the cache manages those.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = header_tokens("keyHeaders"))]
    #[x_kube(validation = not_reserved("keyHeaders"))]
    pub key_headers: Vec<String>,

    /// Request headers passed on to the upstream, e.g. Authorization. The same ones are
    /// refused as for keyHeaders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 256)))]
    #[x_kube(validation = header_tokens("forwardHeaders"))]
    #[x_kube(validation = not_reserved("forwardHeaders"))]
    pub forward_headers: Vec<String>,

    /// When not empty, only paths under one of these prefixes are fetched, e.g. /v1/.
    /// Each starts with '/' and has no '..', '//', query, fragment or spaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 1024)))]
    #[x_kube(validation = Rule::new(
        r"self.all(p, p.startsWith('/') && !p.contains('..') && !p.contains('//') && !p.matches('[?#\\s[:cntrl:]]'))"
    ).message("upstreams[].pathPrefixes: each must start with '/' and have no '..', '//', query (?), fragment (#) or spaces, e.g. /v1/"))]
    pub path_prefixes: Vec<String>,

    /// Upstream requests in flight at once from one node, 1 to 10000.
    #[serde(default = "defaults::max_concurrency")]
    #[schemars(range(min = 1, max = 10000))]
    pub max_concurrency: u32,

    /// How long past its freshness a response may be served when the upstream fails,
    /// when the response itself does not say (stale-if-error).
    #[serde(default = "defaults::zero")]
    #[schemars(regex(pattern = DURATION), length(max = 16))]
    pub stale_if_error: String,

    /// How long past its freshness a response may be served while it is refreshed in the
    /// background, when the response itself does not say (stale-while-revalidate).
    #[serde(default = "defaults::zero")]
    #[schemars(regex(pattern = DURATION), length(max = 16))]
    pub stale_while_revalidate: String,

    /// After failureThreshold failures in a row the upstream is not called for openFor;
    /// then one request probes it.
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
}

/// The circuit breaker of one upstream.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CircuitBreaker {
    /// Failures in a row (errors, timeouts, 5xx) that open the circuit; at least 1.
    #[serde(default = "defaults::failure_threshold")]
    #[schemars(range(min = 1, max = 1000000))]
    pub failure_threshold: u32,
    /// How long an open circuit stays open before one request probes the upstream.
    #[serde(default = "defaults::open_for")]
    #[schemars(regex(pattern = DURATION), length(max = 16))]
    pub open_for: String,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        let api::CircuitBreaker {
            failure_threshold,
            open_for,
        } = api::CircuitBreaker::default();
        Self {
            failure_threshold,
            open_for,
        }
    }
}

impl Upstream {
    /// The node's form of it, as `upstreams.yaml` holds it. Destructured, so a field
    /// added to one type and not the other does not compile.
    pub fn to_node(&self) -> api::Upstream {
        let Self {
            name,
            url,
            connect_timeout,
            timeout,
            default_ttl,
            negative_ttl,
            max_object_size,
            key_headers,
            forward_headers,
            path_prefixes,
            max_concurrency,
            stale_if_error,
            stale_while_revalidate,
            circuit_breaker:
                CircuitBreaker {
                    failure_threshold,
                    open_for,
                },
        } = self.clone();
        api::Upstream {
            name,
            url,
            connect_timeout,
            timeout,
            default_ttl,
            negative_ttl,
            max_object_size,
            key_headers,
            forward_headers,
            path_prefixes,
            max_concurrency,
            stale_if_error,
            stale_while_revalidate,
            circuit_breaker: api::CircuitBreaker {
                failure_threshold,
                open_for,
            },
        }
    }
}

/// The rule over the whole list: names unique. O(n²) over at most 32 entries.
pub(super) fn unique_names() -> Rule {
    Rule::new("self.all(u, self.exists_one(v, v.name == u.name))").message(
        "upstreams: each name may appear once; it is the {name} in /v1/upstreams/{name}/...",
    )
}

/// The schema of the list: at most `MAX_UPSTREAMS` entries.
pub(super) fn list_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = generator.subschema_for::<Vec<Upstream>>();
    schema.insert("maxItems".to_owned(), api::MAX_UPSTREAMS.into());
    schema
}

/// Every entry an HTTP token (RFC 9110 5.1), as the node checks it.
fn header_tokens(field: &str) -> Rule {
    Rule::new(r#"self.all(h, h.matches("^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))"#).message(
        Message::Message(format!(
            "upstreams[].{field}: each must be a header name (letters, digits and !#$%&'*+-.^_`|~), e.g. Accept-Language"
        )),
    )
}

/// No entry one of [`RESERVED_HEADERS`], in any case; the list is the node's own.
fn not_reserved(field: &str) -> Rule {
    let reserved = RESERVED_HEADERS
        .iter()
        .map(|h| format!("'{h}'"))
        .collect::<Vec<_>>()
        .join(", ");
    Rule::new(format!("self.all(h, !(h.lowerAscii() in [{reserved}]))")).message(Message::Message(
        format!(
            "upstreams[].{field}: {} are managed by the cache and cannot be listed",
            RESERVED_HEADERS.join(", ")
        ),
    ))
}

// The schema's bounds are the node's.
const _: () = assert!(MAX_NAME_LEN == 63 && MAX_LIST_LEN == 32);
