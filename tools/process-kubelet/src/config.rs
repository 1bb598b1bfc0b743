//! The kubelet's settings, as values.
//!
//! `kache-kubelet` fills a [`KubeletConfig`] from its flags; a test that runs
//! the kubelet in-process builds one directly, starting from
//! [`KubeletConfig::default`], which matches `tests/k8s/cluster.sh` (bridge
//! `kache0` at 10.88.0.1/16, apiserver on 10.88.0.1:6443, pods in
//! 10.88.1.0/24).

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Taint;

use super::image_store::ImageStore;
use super::images::ImageMap;
use super::ipam::Ipv4Cidr;

/// Everything the kubelet needs to know besides the API client.
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// The Node's name.
    pub node_name: String,
    /// The Node's InternalIP and every pod's hostIP. `None`: the bridge's address.
    pub node_ip: Option<Ipv4Addr>,
    /// The bridge pod veths join; its address is the pods' default gateway.
    pub bridge: String,
    /// Where pod IPs come from; must lie inside the bridge's subnet.
    pub pod_cidr: Ipv4Cidr,
    /// Where images come from: OCI layouts, unpacked per container and run chrooted.
    pub image_store: Option<ImageStore>,
    /// Image name → host binary, for images the store does not hold.
    pub images: ImageMap,
    /// Pod logs, volumes, provisioned PVs and netns markers live here.
    pub state_dir: PathBuf,
    /// `KUBERNETES_SERVICE_HOST` injected into every container.
    pub api_host: String,
    /// `KUBERNETES_SERVICE_PORT` injected into every container.
    pub api_port: u16,
    /// Node capacity: cpu (a quantity).
    pub cpu: String,
    /// Node capacity: memory (a quantity).
    pub memory: String,
    /// Node capacity: pods.
    pub max_pods: u32,
    /// How often the Lease is renewed and the Node's Ready condition refreshed.
    pub heartbeat: Duration,
    /// How often ConfigMap/Secret/downwardAPI/projected volumes are re-rendered.
    pub volume_refresh: Duration,
    /// First delay before restarting a crashed container.
    pub backoff_initial: Duration,
    /// Longest delay between restarts.
    pub backoff_max: Duration,
    /// A container that ran this long restarts without delay, and its back-off starts over.
    pub backoff_reset: Duration,
    /// Upper bound on each pod's grace period when the kubelet itself stops.
    pub shutdown_grace: Duration,
    /// Run the PersistentVolumeClaim provisioner.
    pub provision_volumes: bool,
    /// Namespaces whose claims the provisioner serves; empty means all.
    pub provision_namespaces: Vec<String>,
    /// Taints the Node is registered with, so only pods that tolerate them
    /// land here (e.g. to share a control plane with other tests).
    pub taints: Vec<Taint>,
}

impl Default for KubeletConfig {
    fn default() -> Self {
        KubeletConfig {
            node_name: "kache-local".into(),
            node_ip: None,
            bridge: "kache0".into(),
            pod_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 88, 1, 0), 24),
            image_store: None,
            images: ImageMap::default(),
            state_dir: PathBuf::from("/tmp/kache-k8s/kubelet"),
            api_host: "10.88.0.1".into(),
            api_port: 6443,
            cpu: "32".into(),
            memory: "64Gi".into(),
            max_pods: 110,
            heartbeat: Duration::from_secs(10),
            volume_refresh: Duration::from_secs(5),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(20),
            backoff_reset: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(10),
            provision_volumes: true,
            provision_namespaces: Vec::new(),
            taints: Vec::new(),
        }
    }
}

impl KubeletConfig {
    /// `<state-dir>/pods/<namespace>_<name>`: the pod's logs and its run dir.
    pub fn pod_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.state_dir
            .join("pods")
            .join(format!("{namespace}_{name}"))
    }

    /// `<state-dir>/netns`: one marker file per network namespace created.
    pub fn netns_markers(&self) -> PathBuf {
        self.state_dir.join("netns")
    }

    /// `<state-dir>/pv`: provisioned volumes.
    pub fn volume_root(&self) -> PathBuf {
        self.state_dir.join("pv")
    }

    /// The variables every container starts with.
    pub fn base_env(&self, hostname: &str, home: &Path) -> Vec<(String, String)> {
        let path = std::env::var("PATH").unwrap_or_else(|_| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let (host, port) = (&self.api_host, self.api_port);
        vec![
            ("PATH".into(), path),
            ("HOSTNAME".into(), hostname.into()),
            // Not the host's HOME: a client there would find the host's
            // ~/.kube/config before the in-cluster service account.
            ("HOME".into(), home.display().to_string()),
            ("KUBERNETES_SERVICE_HOST".into(), host.clone()),
            ("KUBERNETES_SERVICE_PORT".into(), port.to_string()),
            ("KUBERNETES_SERVICE_PORT_HTTPS".into(), port.to_string()),
            ("KUBERNETES_PORT".into(), format!("tcp://{host}:{port}")),
            (
                format!("KUBERNETES_PORT_{port}_TCP"),
                format!("tcp://{host}:{port}"),
            ),
            (format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into()),
            (format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.to_string()),
            (format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host.clone()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_cluster_sh() {
        let c = KubeletConfig::default();
        assert_eq!(c.pod_cidr.to_string(), "10.88.1.0/24");
        assert_eq!(c.bridge, "kache0");
        assert_eq!(
            c.pod_dir("demo", "web-0"),
            Path::new("/tmp/kache-k8s/kubelet/pods/demo_web-0")
        );
        let env = c.base_env("web-0", Path::new("/h"));
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.88.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("6443"));
        assert_eq!(get("HOSTNAME"), Some("web-0"));
        assert_eq!(get("HOME"), Some("/h"));
    }
}
