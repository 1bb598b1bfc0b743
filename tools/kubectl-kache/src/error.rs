//! The plugin's one error type. Every message says what is wrong and what to do about
//! it, in the words of the command the user would type next: a missing cluster names the
//! namespace it looked in, a missing CRD says how to install the operator, a refusal
//! names the permission or the token that is missing.

use http::StatusCode;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The Helm command that installs the operator and its CRD (charts/kache/README.md).
pub const INSTALL_HINT: &str =
    "helm install kache charts/kache --namespace kache-system --create-namespace";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot load the Kubernetes config ({0}); check KUBECONFIG and --context")]
    Kubeconfig(String),

    #[error(
        "no CacheCluster {name:?} in namespace {namespace:?}; list them with `kubectl get cachecluster -A`, then pass -n NAMESPACE"
    )]
    NoSuchCluster { namespace: String, name: String },

    #[error(
        "the CacheCluster CRD is not installed in this Kubernetes cluster (the API server serves no cacheclusters.kache.dev); install the operator and its CRD: {INSTALL_HINT}"
    )]
    CrdMissing,

    #[error(
        "forbidden: you may not {verb} {resource} in namespace {namespace:?} ({message}); ask for a Role that grants it (`kubectl auth can-i {verb} {resource} -n {namespace}` checks)"
    )]
    Forbidden {
        verb: &'static str,
        resource: &'static str,
        namespace: String,
        message: String,
    },

    #[error(
        "the Kubernetes API server refused your credentials ({message}); log in again or check --context"
    )]
    Unauthorized { message: String },

    #[error(
        "CacheCluster {namespace}/{name} has no ready pod (phase {phase}); see `kubectl get pods -n {namespace} -l {selector}`"
    )]
    NoReadyPod {
        namespace: String,
        name: String,
        phase: String,
        selector: String,
    },

    #[error(
        "CacheCluster {namespace}/{name} needs a token and none was found: pass --token or set KACHE_TOKEN; the generated admin token is key `admin` of Secret {namespace}/{secret}, which could not be read ({reason})"
    )]
    TokenMissing {
        namespace: String,
        name: String,
        secret: String,
        reason: String,
    },

    #[error(
        "pod {pod} refused the token ({message}); pass a valid one with --token or KACHE_TOKEN"
    )]
    TokenRefused { pod: String, message: String },

    #[error(
        "pod {pod} refused the request ({message}); the token's role is too low: use a readwrite or admin token"
    )]
    RoleTooLow { pod: String, message: String },

    #[error("pod {pod} answered {status}: {code}: {message}")]
    Node {
        pod: String,
        status: StatusCode,
        code: String,
        message: String,
    },

    #[error(
        "the API server could not reach pod {pod} ({status}: {message}); the pod may be restarting, try again"
    )]
    Unreachable {
        pod: String,
        status: StatusCode,
        message: String,
    },

    #[error(
        "the key {key:?} cannot go through the API server's pod proxy: {why}; use the node's HTTP API or a Redis client for it"
    )]
    KeyNotProxyable { key: String, why: &'static str },

    #[error("cannot read the value from standard input: {0}")]
    Stdin(String),

    #[error("pod {pod} answered something that is not {what}: {reason}")]
    BadAnswer {
        pod: String,
        what: &'static str,
        reason: String,
    },

    #[error("key {key:?} not found")]
    KeyNotFound { key: String },

    #[error("{what} did not finish within {seconds}s; the last status is above")]
    Timeout { what: &'static str, seconds: u64 },

    #[error("{action}: {source}")]
    Kube {
        action: String,
        #[source]
        source: kube::Error,
    },
}

impl Error {
    /// The Kubernetes API's answer to `verb resource` in `namespace`, in words: a refusal
    /// says which permission is missing, anything else keeps its cause.
    pub fn kube(
        verb: &'static str,
        resource: &'static str,
        namespace: &str,
        source: kube::Error,
    ) -> Self {
        match &source {
            kube::Error::Api(status) if status.code == 403 => Self::Forbidden {
                verb,
                resource,
                namespace: namespace.to_owned(),
                message: status.message.clone(),
            },
            kube::Error::Api(status) if status.code == 401 => Self::Unauthorized {
                message: status.message.clone(),
            },
            _ => Self::Kube {
                action: format!("{verb} {resource} in namespace {namespace:?}"),
                source,
            },
        }
    }

    /// The process exit code: 1 for a key that is not there (like `grep`), 2 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::KeyNotFound { .. } => 1,
            _ => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, reason)
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn messages_say_what_to_do() {
        let cases = [
            (
                Error::NoSuchCluster {
                    namespace: "shop".into(),
                    name: "cache".into(),
                },
                "no CacheCluster \"cache\" in namespace \"shop\"; list them with `kubectl get cachecluster -A`, then pass -n NAMESPACE",
            ),
            (
                Error::CrdMissing,
                "the CacheCluster CRD is not installed in this Kubernetes cluster (the API server serves no cacheclusters.kache.dev); install the operator and its CRD: helm install kache charts/kache --namespace kache-system --create-namespace",
            ),
            (
                Error::NoReadyPod {
                    namespace: "shop".into(),
                    name: "cache".into(),
                    phase: "Creating".into(),
                    selector: "app.kubernetes.io/instance=cache".into(),
                },
                "CacheCluster shop/cache has no ready pod (phase Creating); see `kubectl get pods -n shop -l app.kubernetes.io/instance=cache`",
            ),
            (
                Error::TokenMissing {
                    namespace: "shop".into(),
                    name: "cache".into(),
                    secret: "cache-auth".into(),
                    reason: "forbidden".into(),
                },
                "CacheCluster shop/cache needs a token and none was found: pass --token or set KACHE_TOKEN; the generated admin token is key `admin` of Secret shop/cache-auth, which could not be read (forbidden)",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn a_refusal_names_the_missing_permission() {
        let error = Error::kube(
            "get",
            "pods/proxy",
            "shop",
            api_error(403, "Forbidden", "pods \"cache-0\" is forbidden"),
        );
        assert_eq!(
            error.to_string(),
            "forbidden: you may not get pods/proxy in namespace \"shop\" (pods \"cache-0\" is forbidden); ask for a Role that grants it (`kubectl auth can-i get pods/proxy -n shop` checks)"
        );
        let error = Error::kube(
            "get",
            "cacheclusters",
            "shop",
            api_error(401, "Unauthorized", "Unauthorized"),
        );
        assert!(matches!(error, Error::Unauthorized { .. }), "{error:?}");
        let error = Error::kube(
            "get",
            "cacheclusters",
            "shop",
            api_error(500, "InternalError", "etcd is down"),
        );
        assert!(
            error
                .to_string()
                .starts_with("get cacheclusters in namespace \"shop\": "),
            "{error}"
        );
    }

    #[test]
    fn only_a_missing_key_exits_1() {
        assert_eq!(Error::KeyNotFound { key: "k".into() }.exit_code(), 1);
        assert_eq!(Error::CrdMissing.exit_code(), 2);
    }
}
