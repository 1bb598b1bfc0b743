//! What a command talks to: the Kubernetes client (the kubeconfig, `--context` and `-n`,
//! as kubectl reads them), the CacheCluster, its ready pods, and the kache token.
//!
//! A 404 on the CacheCluster means one of two things, told apart by asking the API
//! server whether it serves `cacheclusters.kache.dev` at all: the name is wrong, or the
//! operator's CRD is not installed. Errors are told apart by their HTTP code, not the
//! `Status` reason: without the CRD the API server answers a plain-text
//! `404 page not found`, which has none.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kache_operator::crd::{AuthMode, CacheCluster};
use kache_operator::resources::names::Names;
use kube::api::{Api, ListParams};
use kube::config::{Config, KubeConfigOptions};
use kube::{Client, ResourceExt};

use crate::error::{Error, Result};
use crate::proxy::PodPort;

/// The key of the generated auth Secret that holds the admin token.
pub const ADMIN_TOKEN_KEY: &str = "admin";

/// A Kubernetes client and the namespace the command works in.
#[derive(Clone)]
pub struct Connection {
    pub client: Client,
    pub namespace: String,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl Connection {
    /// Connects the way kubectl does: `context` of the kubeconfig (its current context
    /// when unset, or the in-cluster config where there is no kubeconfig), and
    /// `namespace` or else the context's namespace.
    pub async fn new(context: Option<String>, namespace: Option<String>) -> Result<Self> {
        let config = match context {
            Some(context) => Config::from_kubeconfig(&KubeConfigOptions {
                context: Some(context),
                ..KubeConfigOptions::default()
            })
            .await
            .map_err(|e| Error::Kubeconfig(e.to_string()))?,
            None => Config::infer()
                .await
                .map_err(|e| Error::Kubeconfig(e.to_string()))?,
        };
        let namespace = namespace.unwrap_or_else(|| config.default_namespace.clone());
        let client = Client::try_from(config).map_err(|e| Error::Kubeconfig(e.to_string()))?;
        Ok(Self { client, namespace })
    }

    pub fn cache_clusters(&self) -> Api<CacheCluster> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The CacheCluster `name`, or an error that says whether the name or the CRD is
    /// missing.
    pub async fn cache_cluster(&self, name: &str) -> Result<CacheCluster> {
        match self.cache_clusters().get(name).await {
            Ok(cc) => Ok(cc),
            Err(kube::Error::Api(status)) if status.code == 404 => {
                Err(if self.crd_installed().await {
                    Error::NoSuchCluster {
                        namespace: self.namespace.clone(),
                        name: name.to_owned(),
                    }
                } else {
                    Error::CrdMissing
                })
            }
            Err(e) => Err(Error::kube("get", "cacheclusters", &self.namespace, e)),
        }
    }

    /// Whether the API server serves `cacheclusters` in `kache.dev/v1alpha1`.
    async fn crd_installed(&self) -> bool {
        self.client
            .list_api_group_resources("kache.dev/v1alpha1")
            .await
            .is_ok_and(|list| list.resources.iter().any(|r| r.name == "cacheclusters"))
    }

    /// The cluster's pods, by name, ordered by ordinal.
    pub async fn pods(&self, cc: &CacheCluster) -> Result<Vec<Pod>> {
        let selector = Names::of(cc).selector_string();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = api
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| Error::kube("list", "pods", &self.namespace, e))?;
        let names = Names::of(cc);
        let mut pods: BTreeMap<(u32, String), Pod> = BTreeMap::new();
        for pod in list.items {
            let ordinal = names.ordinal_of(&pod.name_any()).unwrap_or(u32::MAX);
            pods.insert((ordinal, pod.name_any()), pod);
        }
        Ok(pods.into_values().collect())
    }

    /// The token for the cluster's nodes: `explicit` (--token, KACHE_TOKEN), else the
    /// generated admin token, else none when the cluster is open.
    pub async fn token(
        &self,
        cc: &CacheCluster,
        explicit: Option<String>,
    ) -> Result<Option<String>> {
        if explicit.is_some() {
            return Ok(explicit);
        }
        let auth = cc.status.as_ref().and_then(|s| s.auth.as_ref());
        if auth.is_some_and(|a| a.mode == AuthMode::Open) {
            return Ok(None);
        }
        let secret = auth
            .and_then(|a| a.secret_name.clone())
            .unwrap_or_else(|| Names::of(cc).auth());
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let missing = |reason: String| Error::TokenMissing {
            namespace: self.namespace.clone(),
            name: cc.name_any(),
            secret: secret.clone(),
            reason,
        };
        let found = api.get(&secret).await.map_err(|e| match e {
            kube::Error::Api(status) if status.code == 403 => {
                missing(format!("you may not get secrets here: {}", status.message))
            }
            kube::Error::Api(status) if status.code == 404 => {
                missing("it does not exist".to_owned())
            }
            other => missing(other.to_string()),
        })?;
        let token = found
            .data
            .as_ref()
            .and_then(|data| data.get(ADMIN_TOKEN_KEY))
            .map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_owned())
            .filter(|token| !token.is_empty())
            .ok_or_else(|| missing(format!("it has no key `{ADMIN_TOKEN_KEY}`")))?;
        Ok(Some(token))
    }
}

/// The ready pods of `pods` (Ready condition true, not being deleted), as HTTP ports of
/// `cc`; an error naming the selector when there is none.
pub fn ready_ports(cc: &CacheCluster, pods: &[Pod]) -> Result<Vec<PodPort>> {
    let names = Names::of(cc);
    let ports: Vec<PodPort> = pods
        .iter()
        .filter(|pod| is_ready(pod))
        .map(|pod| pod_port(cc, &pod.name_any()))
        .collect();
    if ports.is_empty() {
        return Err(Error::NoReadyPod {
            namespace: names.namespace.clone(),
            name: names.cluster.clone(),
            phase: cc
                .status
                .as_ref()
                .map_or("Creating", |s| s.phase.as_str())
                .to_owned(),
            selector: names.selector_string(),
        });
    }
    Ok(ports)
}

/// The HTTP port of `cc`'s pod `pod`.
pub fn pod_port(cc: &CacheCluster, pod: &str) -> PodPort {
    PodPort {
        namespace: Names::of(cc).namespace,
        pod: pod.to_owned(),
        port: cc.spec.service.http_port,
        tls: cc.spec.tls.client.enabled,
    }
}

/// A pod whose Ready condition is true and that is not being deleted.
pub fn is_ready(pod: &Pod) -> bool {
    pod.metadata.deletion_timestamp.is_none()
        && pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|conditions| {
                conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use kache_operator::crd::CacheClusterSpec;

    fn cluster(spec: &str) -> CacheCluster {
        let spec: CacheClusterSpec = serde_json::from_str(spec).expect("spec");
        let mut cc = CacheCluster::new("cache", spec);
        cc.metadata.namespace = Some("shop".to_owned());
        cc
    }

    fn pod(name: &str, ready: bool) -> Pod {
        let mut pod = Pod::default();
        pod.metadata.name = Some(name.to_owned());
        pod.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "Ready".to_owned(),
                status: if ready { "True" } else { "False" }.to_owned(),
                ..PodCondition::default()
            }]),
            ..PodStatus::default()
        });
        pod
    }

    #[test]
    fn only_ready_pods_are_reached_on_the_spec_port_and_scheme() {
        let cc = cluster(
            r#"{"replicas": 3, "service": {"httpPort": 8080}, "tls": {"client": {"enabled": true}}}"#,
        );
        let pods = [
            pod("cache-0", true),
            pod("cache-1", false),
            pod("cache-2", true),
        ];
        let ports = ready_ports(&cc, &pods).expect("ready");
        let names: Vec<&str> = ports.iter().map(|p| p.pod.as_str()).collect();
        assert_eq!(names, ["cache-0", "cache-2"]);
        assert_eq!(
            ports[0].proxy_path("/v1/cluster"),
            "/api/v1/namespaces/shop/pods/https:cache-0:8080/proxy/v1/cluster"
        );
    }

    #[test]
    fn no_ready_pod_names_the_selector() {
        let cc = cluster(r#"{"replicas": 1}"#);
        let error = ready_ports(&cc, &[pod("cache-0", false)]).expect_err("none ready");
        assert_eq!(
            error.to_string(),
            "CacheCluster shop/cache has no ready pod (phase Creating); see `kubectl get pods -n shop -l app.kubernetes.io/component=cache,app.kubernetes.io/instance=cache,app.kubernetes.io/name=kache`"
        );
    }
}
