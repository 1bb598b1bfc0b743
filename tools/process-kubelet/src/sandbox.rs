//! A pod's sandbox: its network namespace, IP address, hostname and `/etc/hosts`.
//!
//! [`Sandbox::create`] takes an address from the pod CIDR and wires a network
//! namespace to the bridge (see [`super::netns`]); a `hostNetwork` pod gets
//! the node's address and no namespace. [`Sandbox::release`] undoes both. The
//! pod's `/etc/hosts` names the pod the way the kubelet does, including the
//! `<hostname>.<subdomain>.<namespace>.svc.cluster.local` name of StatefulSet
//! pods with a headless Service, since there is no cluster DNS.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Pod;

use super::Context;
use super::error::{Error, Result};
use super::netns::{self, SandboxNames};

/// What the kubelet set up for a pod before starting its containers.
#[derive(Debug)]
pub struct Sandbox {
    names: Option<SandboxNames>,
    allocated: Option<Ipv4Addr>,
    ip: Ipv4Addr,
    hosts_file: Option<PathBuf>,
}

impl Sandbox {
    /// Set up `pod`'s sandbox; its files go to `run_dir`.
    pub async fn create(ctx: &Context, pod: &Pod, uid: &str, run_dir: &Path) -> Result<Self> {
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        if host_network {
            return Ok(Sandbox {
                names: None,
                allocated: None,
                ip: ctx.node_ip,
                hosts_file: None,
            });
        }
        let ip = ctx
            .ipam
            .allocate()
            .ok_or_else(|| Error::NotReady("pod CIDR exhausted".into()))?;
        let names = SandboxNames::for_uid(uid);
        let (bridge, gw, prefix) = (&ctx.config.bridge, ctx.bridge.addr(), ctx.bridge.prefix());
        if let Err(e) =
            netns::create(&names, bridge, ip, prefix, gw, &ctx.config.netns_markers()).await
        {
            ctx.ipam.release(ip);
            return Err(e);
        }
        let mut sandbox = Sandbox {
            names: Some(names),
            allocated: Some(ip),
            ip,
            hosts_file: None,
        };
        let hosts = run_dir.join("hosts");
        if let Err(e) = std::fs::write(&hosts, hosts_file(pod, Some(ip))) {
            sandbox.release(ctx).await;
            return Err(Error::io(&hosts)(e));
        }
        sandbox.hosts_file = Some(hosts);
        Ok(sandbox)
    }

    /// The pod's IP (the node's for hostNetwork pods).
    pub fn ip(&self) -> Ipv4Addr {
        self.ip
    }

    /// `/var/run/netns/<name>`, or `None` for hostNetwork pods.
    pub fn netns_path(&self) -> Option<PathBuf> {
        self.names.as_ref().map(SandboxNames::netns_path)
    }

    /// The network namespace's name, for the log.
    pub fn netns(&self) -> Option<&str> {
        self.names.as_ref().map(|n| n.netns.as_str())
    }

    /// The pod's `/etc/hosts` (none for hostNetwork pods).
    pub fn hosts_file(&self) -> Option<&Path> {
        self.hosts_file.as_deref()
    }

    /// Delete the network namespace and give the IP back. Idempotent.
    pub async fn release(&mut self, ctx: &Context) {
        if let Some(names) = self.names.take() {
            netns::delete(&names, &ctx.config.netns_markers()).await;
        }
        if let Some(ip) = self.allocated.take() {
            ctx.ipam.release(ip);
        }
    }
}

/// The pod's hostname: `spec.hostname`, else the pod name, at most 63 bytes.
pub fn hostname(pod: &Pod) -> String {
    let spec_name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty());
    let mut name = spec_name
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    name.truncate(63);
    name.trim_end_matches(['-', '.']).to_string()
}

/// The pod's `/etc/hosts`, as the kubelet writes it.
pub fn hosts_file(pod: &Pod, ip: Option<Ipv4Addr>) -> String {
    let mut out = String::from(
        "# Kubernetes-managed hosts file (kache process kubelet).\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    );
    let host = hostname(pod);
    let spec = pod.spec.as_ref();
    if let Some(ip) = ip {
        match spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|s| !s.is_empty())
        {
            Some(sub) => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                out.push_str(&format!(
                    "{ip}\t{host}.{sub}.{ns}.svc.cluster.local\t{host}\n"
                ));
            }
            None => out.push_str(&format!("{ip}\t{host}\n")),
        }
    }
    for alias in spec
        .and_then(|s| s.host_aliases.as_ref())
        .into_iter()
        .flatten()
    {
        out.push_str(&format!(
            "\n# Entries added by HostAliases.\n{}\t{}\n",
            alias.ip,
            alias.hostnames.clone().unwrap_or_default().join("\t")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{HostAlias, PodSpec};
    use kube::api::ObjectMeta;

    fn pod(hostname: Option<&str>, subdomain: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some("kache-0".into()),
                namespace: Some("demo".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                hostname: hostname.map(Into::into),
                subdomain: subdomain.map(Into::into),
                host_aliases: Some(vec![HostAlias {
                    ip: "10.0.0.9".into(),
                    hostnames: Some(vec!["db".into()]),
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn hosts_file_names_the_pod() {
        let ip = Some(Ipv4Addr::new(10, 88, 1, 3));
        let plain = hosts_file(&pod(None, None), ip);
        assert!(plain.contains("127.0.0.1\tlocalhost\n"));
        assert!(plain.contains("10.88.1.3\tkache-0\n"), "{plain}");
        assert!(plain.contains("10.0.0.9\tdb\n"));
        let sts = hosts_file(&pod(None, Some("kache")), ip);
        assert!(
            sts.contains("10.88.1.3\tkache-0.kache.demo.svc.cluster.local\tkache-0\n"),
            "{sts}"
        );
        assert_eq!(hostname(&pod(Some("custom"), None)), "custom");
        let long = "a".repeat(70);
        assert_eq!(hostname(&pod(Some(&long), None)).len(), 63);
    }
}
