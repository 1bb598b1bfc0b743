//! Kubernetes Events about a pod, as a kubelet reports them.
//!
//! `kubectl describe pod` and `kubectl get events` then tell the story of a
//! pod on this node: `Started`, `Killing`, `Unhealthy`, `BackOff`, `Failed`
//! (with the reason, e.g. an unmapped image). Events are best effort: each is
//! published on a task of its own, so a slow or failing API never holds up a
//! container, and a failure is only logged at debug level.

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::Client;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

/// Publishes Events for one pod.
#[derive(Clone)]
pub struct PodEvents {
    recorder: Recorder,
    pod: ObjectReference,
}

impl std::fmt::Debug for PodEvents {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodEvents")
            .field("pod", &self.pod.name)
            .finish_non_exhaustive()
    }
}

/// `spec.containers{name}`: how a kubelet event points at one container.
pub fn container_field_path(init: bool, name: &str) -> String {
    let list = if init { "initContainers" } else { "containers" };
    format!("spec.{list}{{{name}}}")
}

impl PodEvents {
    /// Events from the kubelet of `node` about `pod`.
    pub fn new(client: Client, node: &str, pod: &Pod) -> Self {
        let reporter = Reporter {
            controller: "kubelet".into(),
            instance: Some(node.into()),
        };
        PodEvents {
            recorder: Recorder::new(client, reporter),
            pod: pod.object_ref(&()),
        }
    }

    /// A Normal event; `field_path` points at a container (see [`container_field_path`]).
    pub fn normal(&self, field_path: Option<String>, reason: &str, note: String) {
        self.publish(EventType::Normal, field_path, reason, note);
    }

    /// A Warning event.
    pub fn warning(&self, field_path: Option<String>, reason: &str, note: String) {
        self.publish(EventType::Warning, field_path, reason, note);
    }

    fn publish(&self, type_: EventType, field_path: Option<String>, reason: &str, note: String) {
        let recorder = self.recorder.clone();
        let reference = ObjectReference {
            field_path,
            ..self.pod.clone()
        };
        let event = Event {
            type_,
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::debug!(reason = %event.reason, error = %e, "event not published");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_name_the_container() {
        assert_eq!(container_field_path(false, "app"), "spec.containers{app}");
        assert_eq!(
            container_field_path(true, "setup"),
            "spec.initContainers{setup}"
        );
    }
}
