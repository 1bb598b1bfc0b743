//! Reaching one cache pod from wherever kubectl works: through the API server's pod
//! proxy, `/api/v1/namespaces/{ns}/pods/{https:}{pod}:{port}/proxy/{path}`, with the
//! caller's own credentials and RBAC (`get`, `update` and `delete` on `pods/proxy`,
//! for GET, PUT and DELETE). No port-forward, no route to the pod network needed.
//!
//! The proxy strips `Authorization` (it carries the caller's credentials for the API
//! server), so the kache token goes as `Kache-Authorization`, which the node checks the
//! same way (node/src/http/auth.rs). With client TLS on, the proxy speaks HTTPS to the
//! pod (`https:` before the pod's name).
//!
//! An answer is told apart by its body: the node's errors are
//! `{"error": {"code", "message"}}`, the API server's are a `Status` object (the pod is not
//! reachable, or the caller may not proxy).

use http::{Method, Request, StatusCode};
use kube::Client;
use kube::client::Body;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The header that carries the kache token through the proxy.
pub const TOKEN_HEADER: &str = "kache-authorization";

/// What a key keeps unescaped in a path: the unreserved characters, and `/`, which the
/// node reads as part of the key (`/v1/keys/{*key}`).
const KEY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'/');

/// One cache pod's HTTP port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPort {
    pub namespace: String,
    pub pod: String,
    pub port: i32,
    /// The port serves HTTPS only (`spec.tls.client.enabled`).
    pub tls: bool,
}

impl PodPort {
    /// The API server path that proxies `path` (which starts with `/`) to this pod.
    pub fn proxy_path(&self, path: &str) -> String {
        let scheme = if self.tls { "https:" } else { "" };
        format!(
            "/api/v1/namespaces/{}/pods/{scheme}{}:{}/proxy{path}",
            self.namespace, self.pod, self.port
        )
    }
}

/// `prefix` followed by `key`, percent-encoded for a path; or why the proxy would not
/// deliver that key unchanged. The API server decodes the path and cleans it (Go's
/// `path.Join`), escaped or not: `a/../b` would reach the node as `b`, `a//b` as `a/b`, so
/// a `del` could delete another key. Such keys are refused here, never rewritten.
pub fn key_path(prefix: &str, key: &str) -> Result<String> {
    let refuse = |why| {
        Err(Error::KeyNotProxyable {
            key: key.to_owned(),
            why,
        })
    };
    if key.is_empty() {
        return refuse("it is empty");
    }
    if key.starts_with('/') || key.ends_with('/') {
        return refuse("it starts or ends with '/', which the proxy drops");
    }
    if key.split('/').any(|segment| segment.is_empty()) {
        return refuse("it has an empty path segment ('//'), which the proxy merges");
    }
    if key
        .split('/')
        .any(|segment| segment == "." || segment == "..")
    {
        return refuse("it has a '.' or '..' path segment, which the proxy resolves");
    }
    Ok(format!("{prefix}{}", utf8_percent_encode(key, KEY_ESCAPES)))
}

/// A node's HTTP API through the proxy, with the token of the cluster (if auth is on).
#[derive(Clone)]
pub struct NodeClient {
    client: Client,
    token: Option<String>,
}

impl std::fmt::Debug for NodeClient {
    /// Never the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeClient")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish_non_exhaustive()
    }
}

impl NodeClient {
    pub fn new(client: Client, token: Option<String>) -> Self {
        Self { client, token }
    }

    /// Sends `method path` to `pod` and returns the body of a 2xx answer; a 404 of the
    /// node (key not found) is `Ok(None)`.
    pub async fn call(
        &self,
        pod: &PodPort,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Option<Vec<u8>>> {
        let verb = match method {
            Method::PUT => "update",
            Method::DELETE => "delete",
            _ => "get",
        };
        let mut request = Request::builder().method(method).uri(pod.proxy_path(path));
        if let Some(token) = &self.token {
            request = request.header(TOKEN_HEADER, format!("Bearer {token}"));
        }
        let request = request
            .body(Body::from(body))
            .map_err(|e| Error::BadAnswer {
                pod: pod.pod.clone(),
                what: "a request",
                reason: e.to_string(),
            })?;
        let response = self
            .client
            .send(request)
            .await
            .map_err(|e| Error::kube(verb, "pods/proxy", &pod.namespace, e))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect_bytes()
            .await
            .map_err(|e| Error::kube(verb, "pods/proxy", &pod.namespace, e))?;
        answer(pod, verb, status, &bytes)
    }

    /// `GET path` from `pod`, as JSON of type `T`.
    pub async fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        pod: &PodPort,
        path: &str,
        what: &'static str,
    ) -> Result<T> {
        let body = self
            .call(pod, Method::GET, path, Vec::new())
            .await?
            .ok_or_else(|| Error::BadAnswer {
                pod: pod.pod.clone(),
                what,
                reason: format!("GET {path} answered 404"),
            })?;
        serde_json::from_slice(&body).map_err(|e| Error::BadAnswer {
            pod: pod.pod.clone(),
            what,
            reason: e.to_string(),
        })
    }
}

/// The node's error body.
#[derive(Debug, Deserialize)]
struct NodeError {
    error: NodeErrorBody,
}

#[derive(Debug, Deserialize)]
struct NodeErrorBody {
    code: String,
    message: String,
}

/// The API server's error body (a `Status`), as far as the plugin reads it.
#[derive(Debug, Deserialize)]
struct ApiStatus {
    kind: String,
    #[serde(default)]
    message: String,
    #[serde(default)]
    reason: String,
}

/// What one answer through the proxy means: the body of a success, `None` for the
/// node's 404 (no such key), an error that says who refused and why otherwise.
pub fn answer(
    pod: &PodPort,
    verb: &'static str,
    status: StatusCode,
    body: &[u8],
) -> Result<Option<Vec<u8>>> {
    if status.is_success() {
        return Ok(Some(body.to_vec()));
    }
    let name = pod.pod.clone();
    if let Ok(NodeError { error }) = serde_json::from_slice::<NodeError>(body) {
        return Err(match (status, error.code.as_str()) {
            (StatusCode::NOT_FOUND, "key_not_found") => return Ok(None),
            (StatusCode::UNAUTHORIZED, _) => Error::TokenRefused {
                pod: name,
                message: error.message,
            },
            (StatusCode::FORBIDDEN, _) => Error::RoleTooLow {
                pod: name,
                message: error.message,
            },
            // This pod serves nothing now (starting, leaving): the next one may.
            (StatusCode::SERVICE_UNAVAILABLE, "syncing" | "shutting_down") => Error::Unreachable {
                pod: name,
                status,
                message: error.message,
            },
            _ => Error::Node {
                pod: name,
                status,
                code: error.code,
                message: error.message,
            },
        });
    }
    let api = serde_json::from_slice::<ApiStatus>(body)
        .ok()
        .filter(|s| s.kind == "Status");
    let message = api.as_ref().map_or_else(
        || String::from_utf8_lossy(body).trim().to_owned(),
        |s| s.message.clone(),
    );
    Err(match status {
        StatusCode::FORBIDDEN => Error::Forbidden {
            verb,
            resource: "pods/proxy",
            namespace: pod.namespace.clone(),
            message,
        },
        StatusCode::UNAUTHORIZED => Error::Unauthorized { message },
        // Any refusal of the API server's but a missing resource, a 5xx, or the pod itself
        // gone (deleted between the list and the call, as in a scale-down): the next pod.
        _ if api.as_ref().is_some_and(|s| s.reason != "NotFound")
            || status.is_server_error()
            || status == StatusCode::NOT_FOUND && api.is_some() =>
        {
            Error::Unreachable {
                pod: name,
                status,
                message,
            }
        }
        _ => Error::Node {
            pod: name,
            status,
            code: "unknown".to_owned(),
            message,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(tls: bool) -> PodPort {
        PodPort {
            namespace: "shop".into(),
            pod: "cache-1".into(),
            port: 7070,
            tls,
        }
    }

    #[test]
    fn the_proxy_path_names_namespace_scheme_pod_and_port() {
        assert_eq!(
            pod(false).proxy_path("/v1/cluster"),
            "/api/v1/namespaces/shop/pods/cache-1:7070/proxy/v1/cluster"
        );
        assert_eq!(
            pod(true).proxy_path("/v1/stats"),
            "/api/v1/namespaces/shop/pods/https:cache-1:7070/proxy/v1/stats"
        );
    }

    #[test]
    fn keys_are_escaped_but_keep_their_slashes() {
        assert_eq!(
            key_path("/v1/keys/", "user:42").unwrap(),
            "/v1/keys/user%3A42"
        );
        assert_eq!(key_path("/v1/keys/", "a/b c").unwrap(), "/v1/keys/a/b%20c");
        for key in ["", "/a", "a/", "a//b", "a/../b", "./a", "a/.", ".."] {
            let refused = key_path("/v1/keys/", key);
            assert!(
                matches!(refused, Err(Error::KeyNotProxyable { .. })),
                "{key:?}: {refused:?}"
            );
        }
        // Dots inside a segment are an ordinary key.
        assert_eq!(
            key_path("/v1/keys/", "a.b/..c").unwrap(),
            "/v1/keys/a.b/..c"
        );
        assert_eq!(key_path("/v1/keys/", "100%").unwrap(), "/v1/keys/100%25");
        assert_eq!(
            key_path("/v1/keys/", "é?#").unwrap(),
            "/v1/keys/%C3%A9%3F%23"
        );
        assert_eq!(
            key_path("/v1/cluster/keys/", "a-b.c_d~").unwrap(),
            "/v1/cluster/keys/a-b.c_d~"
        );
    }

    #[test]
    fn answers_are_told_apart_by_who_gave_them() {
        let p = pod(false);
        let ok = answer(&p, "get", StatusCode::OK, b"value").expect("ok");
        assert_eq!(ok.as_deref(), Some(&b"value"[..]));

        let missing = br#"{"error":{"code":"key_not_found","message":"no such key"}}"#;
        assert_eq!(
            answer(&p, "get", StatusCode::NOT_FOUND, missing).expect("none"),
            None
        );

        let refused = br#"{"error":{"code":"unauthenticated","message":"the token is not valid"}}"#;
        let error = answer(&p, "get", StatusCode::UNAUTHORIZED, refused).expect_err("401");
        assert_eq!(
            error.to_string(),
            "pod cache-1 refused the token (the token is not valid); pass a valid one with --token or KACHE_TOKEN"
        );

        let low = br#"{"error":{"code":"forbidden","message":"user reader has role read"}}"#;
        let error = answer(&p, "update", StatusCode::FORBIDDEN, low).expect_err("403");
        assert!(matches!(error, Error::RoleTooLow { .. }), "{error:?}");

        let rbac = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"pods \"cache-1\" is forbidden: User \"dev\" cannot update resource \"pods/proxy\"","reason":"Forbidden","code":403}"#;
        let error = answer(&p, "update", StatusCode::FORBIDDEN, rbac).expect_err("rbac");
        assert!(
            error
                .to_string()
                .starts_with("forbidden: you may not update pods/proxy in namespace \"shop\""),
            "{error}"
        );

        let down = br#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"error trying to reach service: dial tcp 10.0.0.5:7070: connect: connection refused","reason":"ServiceUnavailable","code":503}"#;
        let error = answer(&p, "get", StatusCode::SERVICE_UNAVAILABLE, down).expect_err("down");
        assert!(matches!(error, Error::Unreachable { .. }), "{error:?}");

        let full = br#"{"error":{"code":"out_of_memory","message":"the node is full"}}"#;
        let error = answer(&p, "update", StatusCode::INSUFFICIENT_STORAGE, full).expect_err("507");
        assert_eq!(
            error.to_string(),
            "pod cache-1 answered 507 Insufficient Storage: out_of_memory: the node is full"
        );
    }
}
