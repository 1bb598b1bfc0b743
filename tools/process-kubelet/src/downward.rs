//! The downward API: facts about a pod that its containers may read.
//!
//! `fieldRef` (`metadata.name`, `status.podIP`, ...) and `resourceFieldRef`
//! (`limits.memory`, ...) are resolved here, for both env vars and
//! `downwardAPI` volume files, so the two agree. Pure functions over the pod
//! object and what the kubelet knows about it (its IP, the node).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Container, Pod, ResourceFieldSelector};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// A `fieldRef` or `resourceFieldRef` that cannot be resolved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// The field path is not one the downward API offers.
    #[error("unsupported fieldRef {0:?}")]
    UnsupportedField(String),
    /// The resource is not `limits.*`/`requests.*` of cpu, memory or ephemeral-storage.
    #[error("unsupported resourceFieldRef {0:?}")]
    UnsupportedResource(String),
    /// `containerName` names no container of the pod.
    #[error("resourceFieldRef names unknown container {0:?}")]
    UnknownContainer(String),
    /// A quantity (a limit or a divisor) does not parse.
    #[error("bad quantity {0:?}")]
    BadQuantity(String),
}

/// What the kubelet knows about a pod besides its spec.
#[derive(Debug, Clone, Copy)]
pub struct PodFacts<'a> {
    /// The pod object.
    pub pod: &'a Pod,
    /// The pod's address (none yet, or the node's for hostNetwork pods).
    pub pod_ip: Option<Ipv4Addr>,
    /// The node's address.
    pub host_ip: Ipv4Addr,
    /// The node's capacity, used for a resource the container sets no limit on.
    pub node_cpu: &'a str,
    /// See `node_cpu`.
    pub node_memory: &'a str,
}

impl PodFacts<'_> {
    /// The value of a `fieldRef.fieldPath`.
    pub fn field(&self, path: &str) -> Result<String, FieldError> {
        let meta = &self.pod.metadata;
        let spec = self.pod.spec.as_ref();
        let ip = || self.pod_ip.map(|ip| ip.to_string()).unwrap_or_default();
        Ok(match path {
            "metadata.name" => meta.name.clone().unwrap_or_default(),
            "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
            "metadata.uid" => meta.uid.clone().unwrap_or_default(),
            "metadata.labels" => format_map(meta.labels.as_ref()),
            "metadata.annotations" => format_map(meta.annotations.as_ref()),
            "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            "spec.serviceAccountName" => service_account(self.pod),
            "status.podIP" | "status.podIPs" => ip(),
            "status.hostIP" | "status.hostIPs" => self.host_ip.to_string(),
            _ => {
                let (map, key) = if let Some(k) = subscript(path, "metadata.labels") {
                    (meta.labels.as_ref(), k)
                } else if let Some(k) = subscript(path, "metadata.annotations") {
                    (meta.annotations.as_ref(), k)
                } else {
                    return Err(FieldError::UnsupportedField(path.to_string()));
                };
                map.and_then(|m| m.get(key)).cloned().unwrap_or_default()
            }
        })
    }

    /// The value of a `resourceFieldRef`, in units of its divisor, rounded up
    /// (as the kubelet does). `default_container` is the container the env var
    /// belongs to; a volume file must name one.
    pub fn resource(
        &self,
        sel: &ResourceFieldSelector,
        default_container: Option<&Container>,
    ) -> Result<String, FieldError> {
        let container = match sel.container_name.as_deref().filter(|n| !n.is_empty()) {
            Some(name) => self
                .pod
                .spec
                .iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .find(|c| c.name == name)
                .ok_or_else(|| FieldError::UnknownContainer(name.to_string()))?,
            None => default_container.ok_or_else(|| FieldError::UnknownContainer(String::new()))?,
        };
        let (kind, resource) = sel
            .resource
            .split_once('.')
            .ok_or_else(|| FieldError::UnsupportedResource(sel.resource.clone()))?;
        let resources = container.resources.as_ref();
        let set = match kind {
            "limits" => resources.and_then(|r| r.limits.as_ref()),
            "requests" => resources.and_then(|r| r.requests.as_ref()),
            _ => return Err(FieldError::UnsupportedResource(sel.resource.clone())),
        };
        let node_default = match resource {
            "cpu" => self.node_cpu,
            "memory" | "ephemeral-storage" => self.node_memory,
            _ => return Err(FieldError::UnsupportedResource(sel.resource.clone())),
        };
        // A request that is not set is 0, a limit that is not set is the node's capacity.
        let value = match set.and_then(|m| m.get(resource)) {
            Some(Quantity(q)) => parse_quantity(q)?,
            None if kind == "requests" => 0.0,
            None => parse_quantity(node_default)?,
        };
        let divisor = match &sel.divisor {
            Some(Quantity(d)) => parse_quantity(d)?,
            None => 1.0,
        };
        if divisor <= 0.0 {
            return Err(FieldError::BadQuantity(format!("divisor {divisor}")));
        }
        Ok(format!("{}", (value / divisor).ceil()))
    }
}

/// The pod's service account (`default` when the spec names none).
pub fn service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".to_string())
}

/// `metadata.labels['key']` → `key`.
fn subscript<'p>(path: &'p str, field: &str) -> Option<&'p str> {
    let rest = path
        .strip_prefix(field)?
        .strip_prefix('[')?
        .strip_suffix(']')?;
    rest.strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
}

/// Labels or annotations as the downward API writes them: `key="value"`
/// lines, sorted by key, values quoted.
fn format_map(map: Option<&BTreeMap<String, String>>) -> String {
    let mut out = String::new();
    for (k, v) in map.into_iter().flatten() {
        out.push_str(k);
        out.push_str("=\"");
        for ch in v.chars() {
            match ch {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                c => out.push(c),
            }
        }
        out.push_str("\"\n");
    }
    out
}

/// A Kubernetes quantity (`500m`, `1.5Gi`, `2e3`, `64Mi`) as a number.
pub fn parse_quantity(q: &str) -> Result<f64, FieldError> {
    let bad = || FieldError::BadQuantity(q.to_string());
    let q = q.trim();
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        s if s.starts_with(['e', 'E']) => {
            let exp: i32 = s[1..].parse().map_err(|_| bad())?;
            10f64.powi(exp)
        }
        _ => return Err(bad()),
    };
    Ok(number * scale)
}

#[cfg(test)]
mod tests;
