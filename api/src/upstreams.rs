//! Read-through upstreams: the HTTP APIs a cluster caches (`spec.upstreams[]`).
//!
//! The operator writes the list as YAML (`upstreams.yaml`, one `upstreams:` key holding
//! the same objects as the CacheCluster field) and the node reads it with `--upstreams`.
//! [`Upstream`] is the text as written, field for field; [`Upstream::validate`] turns it
//! into an [`UpstreamConfig`] with parsed durations and sizes, or says what is wrong. The
//! node refuses to start on an invalid file and the operator refuses to apply an invalid
//! spec (after the CRD schema and CEL rules, which catch the same mistakes earlier).

use std::collections::BTreeSet;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::units::{parse_bytes, parse_duration};

/// The longest accepted upstream name, a DNS label.
pub const MAX_NAME_LEN: usize = 63;
/// At most this many upstreams per cluster.
pub const MAX_UPSTREAMS: usize = 32;
/// At most this many key or forwarded headers, and path prefixes, per upstream.
pub const MAX_LIST_LEN: usize = 32;

/// One upstream as written in `spec.upstreams[]` and in `upstreams.yaml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Upstream {
    /// The name in the path: `/v1/upstreams/{name}/...`.
    pub name: String,
    /// The base URL, `http://` or `https://`, without query or fragment. The request's
    /// path is appended to it.
    pub url: String,
    #[serde(default = "defaults::connect_timeout")]
    pub connect_timeout: String,
    /// How long the upstream has to send the whole response.
    #[serde(default = "defaults::timeout")]
    pub timeout: String,
    /// Freshness for a response that states none (no max-age, s-maxage or Expires).
    /// `0s` stores such responses only for revalidation.
    #[serde(default = "defaults::default_ttl")]
    pub default_ttl: String,
    /// Freshness of a 404 or 410 that states none.
    #[serde(default = "defaults::negative_ttl")]
    pub negative_ttl: String,
    /// The largest response body stored; a larger one is passed through, never stored.
    #[serde(default = "defaults::max_object_size")]
    pub max_object_size: String,
    /// Request headers whose values are part of the cache key.
    #[serde(default)]
    pub key_headers: Vec<String>,
    /// Request headers passed on to the upstream (the key headers always are).
    #[serde(default)]
    pub forward_headers: Vec<String>,
    /// When not empty, only paths under one of these prefixes are fetched.
    #[serde(default)]
    pub path_prefixes: Vec<String>,
    /// Upstream requests in flight at once from one node.
    #[serde(default = "defaults::max_concurrency")]
    pub max_concurrency: u32,
    /// How long past its freshness a response may be served when the upstream fails,
    /// when the response itself does not say (`stale-if-error`).
    #[serde(default = "defaults::zero")]
    pub stale_if_error: String,
    /// How long past its freshness a response may be served while it is refreshed in the
    /// background, when the response itself does not say (`stale-while-revalidate`).
    #[serde(default = "defaults::zero")]
    pub stale_while_revalidate: String,
    #[serde(default)]
    pub circuit_breaker: CircuitBreaker,
}

/// After `failureThreshold` failures in a row the upstream is not called for `openFor`;
/// then one request probes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CircuitBreaker {
    #[serde(default = "defaults::failure_threshold")]
    pub failure_threshold: u32,
    #[serde(default = "defaults::open_for")]
    pub open_for: String,
}

impl Default for CircuitBreaker {
    fn default() -> Self {
        Self {
            failure_threshold: defaults::failure_threshold(),
            open_for: defaults::open_for(),
        }
    }
}

/// The defaults, in one place for the node, the CRD schema and the docs.
pub mod defaults {
    pub fn connect_timeout() -> String {
        "2s".into()
    }
    pub fn timeout() -> String {
        "10s".into()
    }
    pub fn default_ttl() -> String {
        "60s".into()
    }
    pub fn negative_ttl() -> String {
        "10s".into()
    }
    pub fn max_object_size() -> String {
        "1MiB".into()
    }
    pub fn max_concurrency() -> u32 {
        64
    }
    pub fn zero() -> String {
        "0s".into()
    }
    pub fn failure_threshold() -> u32 {
        5
    }
    pub fn open_for() -> String {
        "10s".into()
    }
}

/// The file the operator writes and `--upstreams` reads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamsFile {
    #[serde(default)]
    pub upstreams: Vec<Upstream>,
}

impl UpstreamsFile {
    /// Parses and validates the file's text: every upstream, and their names unique.
    pub fn parse(text: &str) -> Result<Vec<UpstreamConfig>, UpstreamError> {
        let file: Self =
            serde_yaml::from_str(text).map_err(|error| UpstreamError::Syntax(error.to_string()))?;
        validate_all(&file.upstreams)
    }

    pub fn to_yaml(&self) -> String {
        // A struct of strings, numbers and lists always serializes.
        serde_yaml::to_string(self).unwrap_or_default()
    }
}

/// Validates a list of upstreams: each one, at most [`MAX_UPSTREAMS`], names unique.
pub fn validate_all(upstreams: &[Upstream]) -> Result<Vec<UpstreamConfig>, UpstreamError> {
    if upstreams.len() > MAX_UPSTREAMS {
        return Err(UpstreamError::TooMany(upstreams.len()));
    }
    let mut names = BTreeSet::new();
    upstreams
        .iter()
        .map(|upstream| {
            if !names.insert(upstream.name.as_str()) {
                return Err(UpstreamError::Duplicate(upstream.name.clone()));
            }
            upstream.validate()
        })
        .collect()
}

/// A validated upstream: parsed units, lower-cased header names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamConfig {
    pub name: String,
    /// The base URL without a trailing `/`.
    pub url: String,
    pub connect_timeout: Duration,
    pub timeout: Duration,
    pub default_ttl: Duration,
    pub negative_ttl: Duration,
    pub max_object_bytes: usize,
    /// Lower case, sorted, unique.
    pub key_headers: Vec<String>,
    /// Lower case; includes the key headers.
    pub forward_headers: Vec<String>,
    pub path_prefixes: Vec<String>,
    pub max_concurrency: u32,
    pub stale_if_error: Duration,
    pub stale_while_revalidate: Duration,
    pub failure_threshold: u32,
    pub open_for: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpstreamError {
    #[error("upstreams file: {0}")]
    Syntax(String),
    #[error("{0} upstreams; at most {MAX_UPSTREAMS} are allowed")]
    TooMany(usize),
    #[error("upstream '{0}' is listed twice; names must be unique")]
    Duplicate(String),
    #[error("upstream {name:?}: {problem}")]
    Invalid { name: String, problem: String },
}

/// Request headers that are never forwarded and never part of a key: hop-by-hop headers
/// (RFC 9110 7.6.1) and the ones the cache itself sets.
pub const RESERVED_HEADERS: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
    "if-none-match",
    "if-modified-since",
    "if-match",
    "if-unmodified-since",
    "if-range",
    "range",
    "kache-authorization",
];

impl Upstream {
    /// A quick upstream with every default, as `--upstream NAME=URL` makes it.
    pub fn with_defaults(name: &str, url: &str) -> Self {
        Self {
            name: name.into(),
            url: url.into(),
            connect_timeout: defaults::connect_timeout(),
            timeout: defaults::timeout(),
            default_ttl: defaults::default_ttl(),
            negative_ttl: defaults::negative_ttl(),
            max_object_size: defaults::max_object_size(),
            key_headers: Vec::new(),
            forward_headers: Vec::new(),
            path_prefixes: Vec::new(),
            max_concurrency: defaults::max_concurrency(),
            stale_if_error: defaults::zero(),
            stale_while_revalidate: defaults::zero(),
            circuit_breaker: CircuitBreaker::default(),
        }
    }

    pub fn validate(&self) -> Result<UpstreamConfig, UpstreamError> {
        let invalid = |problem: String| UpstreamError::Invalid {
            name: self.name.clone(),
            problem,
        };
        check_name(&self.name).map_err(invalid)?;
        let url = check_url(&self.url).map_err(invalid)?;
        let duration = |field: &str, text: &str| {
            parse_duration(text).map_err(|error| invalid(format!("{field}: {error}")))
        };
        let connect_timeout = duration("connectTimeout", &self.connect_timeout)?;
        let timeout = duration("timeout", &self.timeout)?;
        if connect_timeout.is_zero() || timeout.is_zero() {
            return Err(invalid(
                "connectTimeout and timeout must be more than 0s".into(),
            ));
        }
        let max_object_bytes = parse_bytes(&self.max_object_size)
            .map_err(|error| invalid(format!("maxObjectSize: {error}")))?;
        if max_object_bytes == 0 {
            return Err(invalid("maxObjectSize must be more than 0".into()));
        }
        let key_headers = header_list("keyHeaders", &self.key_headers).map_err(invalid)?;
        let mut forward_headers =
            header_list("forwardHeaders", &self.forward_headers).map_err(invalid)?;
        for header in &key_headers {
            if !forward_headers.contains(header) {
                forward_headers.push(header.clone());
            }
        }
        if self.path_prefixes.len() > MAX_LIST_LEN {
            return Err(invalid(format!(
                "pathPrefixes: at most {MAX_LIST_LEN} entries"
            )));
        }
        for prefix in &self.path_prefixes {
            if !prefix.starts_with('/')
                || prefix.contains("..")
                || prefix.contains("//")
                || prefix.chars().any(|c| c.is_whitespace() || c.is_control())
                || prefix.contains(['?', '#'])
            {
                return Err(invalid(format!(
                    "pathPrefixes: {prefix:?} must start with '/' and have no '..', '//', query, fragment or spaces"
                )));
            }
        }
        if !(1..=10_000).contains(&self.max_concurrency) {
            return Err(invalid("maxConcurrency must be between 1 and 10000".into()));
        }
        if self.circuit_breaker.failure_threshold == 0 {
            return Err(invalid(
                "circuitBreaker.failureThreshold must be at least 1".into(),
            ));
        }
        Ok(UpstreamConfig {
            name: self.name.clone(),
            url,
            connect_timeout,
            timeout,
            default_ttl: duration("defaultTtl", &self.default_ttl)?,
            negative_ttl: duration("negativeTtl", &self.negative_ttl)?,
            max_object_bytes,
            key_headers,
            forward_headers,
            path_prefixes: self.path_prefixes.clone(),
            max_concurrency: self.max_concurrency,
            stale_if_error: duration("staleIfError", &self.stale_if_error)?,
            stale_while_revalidate: duration("staleWhileRevalidate", &self.stale_while_revalidate)?,
            failure_threshold: self.circuit_breaker.failure_threshold,
            open_for: duration("circuitBreaker.openFor", &self.circuit_breaker.open_for)?,
        })
    }
}

fn check_name(name: &str) -> Result<(), String> {
    let bytes = name.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_NAME_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "the name must be a DNS label: 1 to {MAX_NAME_LEN} lower-case letters, digits or '-', starting and ending with a letter or digit"
        ))
    }
}

/// `http(s)://host[:port][/path]`, no user info, query or fragment; returned without a
/// trailing `/`.
fn check_url(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("url {url:?} must start with http:// or https://"))?;
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty()
        || authority.contains('@')
        || url.contains(['?', '#'])
        || url.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(format!(
            "url {url:?} must name a host, with no user info, query, fragment or spaces"
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}

fn header_list(field: &str, headers: &[String]) -> Result<Vec<String>, String> {
    if headers.len() > MAX_LIST_LEN {
        return Err(format!("{field}: at most {MAX_LIST_LEN} headers"));
    }
    let mut out: Vec<String> = Vec::with_capacity(headers.len());
    for header in headers {
        let lower = header.to_ascii_lowercase();
        let token = !lower.is_empty()
            && lower
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !token {
            return Err(format!("{field}: {header:?} is not a header name"));
        }
        if RESERVED_HEADERS.contains(&lower.as_str()) {
            return Err(format!(
                "{field}: {header:?} is managed by the cache and cannot be listed"
            ));
        }
        if !out.contains(&lower) {
            out.push(lower);
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(yaml: &str) -> Result<Vec<UpstreamConfig>, UpstreamError> {
        UpstreamsFile::parse(yaml)
    }

    #[test]
    fn defaults_fill_a_minimal_upstream() {
        let parsed =
            one("upstreams:\n- name: api\n  url: http://10.0.0.1:8080/base/\n").expect("valid");
        let api = &parsed[0];
        assert_eq!(api.url, "http://10.0.0.1:8080/base");
        assert_eq!(api.timeout, Duration::from_secs(10));
        assert_eq!(api.default_ttl, Duration::from_secs(60));
        assert_eq!(api.max_object_bytes, 1 << 20);
        assert_eq!(api.failure_threshold, 5);
        assert_eq!(
            Upstream::with_defaults("api", "http://10.0.0.1:8080/base/")
                .validate()
                .expect("valid"),
            *api
        );
    }

    #[test]
    fn key_headers_are_forwarded_and_normalised() {
        let parsed = one(
            "upstreams:\n- name: api\n  url: https://example.com\n  keyHeaders: [Accept-Language, accept-language]\n  forwardHeaders: [Authorization]\n",
        )
        .expect("valid");
        assert_eq!(parsed[0].key_headers, ["accept-language"]);
        assert_eq!(
            parsed[0].forward_headers,
            ["authorization", "accept-language"]
        );
    }

    #[test]
    fn every_mistake_is_refused_with_its_field() {
        let cases = [
            ("- name: Api\n  url: http://a", "DNS label"),
            ("- name: api\n  url: ftp://a", "http:// or https://"),
            ("- name: api\n  url: http://a?x=1", "query"),
            ("- name: api\n  url: http://user@a", "user info"),
            ("- name: api\n  url: http://", "host"),
            ("- name: api\n  url: http://a\n  timeout: soon", "timeout"),
            (
                "- name: api\n  url: http://a\n  timeout: 0s",
                "more than 0s",
            ),
            (
                "- name: api\n  url: http://a\n  maxObjectSize: 1XB",
                "maxObjectSize",
            ),
            (
                "- name: api\n  url: http://a\n  keyHeaders: ['bad header']",
                "not a header",
            ),
            (
                "- name: api\n  url: http://a\n  forwardHeaders: [Host]",
                "managed by the cache",
            ),
            (
                "- name: api\n  url: http://a\n  pathPrefixes: [v1]",
                "must start with '/'",
            ),
            (
                "- name: api\n  url: http://a\n  pathPrefixes: [/a/../b]",
                "'..'",
            ),
            (
                "- name: api\n  url: http://a\n  maxConcurrency: 0",
                "maxConcurrency",
            ),
            (
                "- name: api\n  url: http://a\n  circuitBreaker: {failureThreshold: 0}",
                "failureThreshold",
            ),
            (
                "- name: api\n  url: http://a\n  colour: red",
                "unknown field",
            ),
            (
                "- name: api\n  url: http://a\n- name: api\n  url: http://b",
                "twice",
            ),
        ];
        for (yaml, expected) in cases {
            let error = one(&format!("upstreams:\n{yaml}\n")).expect_err(yaml);
            assert!(
                error.to_string().contains(expected),
                "{yaml}: {error} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn the_file_round_trips() {
        let file = UpstreamsFile {
            upstreams: vec![Upstream::with_defaults("api", "http://a")],
        };
        let text = file.to_yaml();
        assert_eq!(
            serde_yaml::from_str::<UpstreamsFile>(&text).expect("parses"),
            file
        );
        assert!(one("upstreams: []\n").expect("empty is valid").is_empty());
    }
}
