//! The pod phase, by the kubelet's rules (`getPhase`).
//!
//! Pending until every init container succeeded and every container started
//! at least once; Running while a container runs or will run again; then
//! Succeeded or Failed as `restartPolicy` decides. A terminal phase never
//! changes again. Pure.

use super::restart::restart_policy;
use super::status::{PodView, RunState};

/// The pod phase, by the kubelet's rules.
pub fn phase(view: &PodView<'_>) -> &'static str {
    let previous = view
        .previous
        .or(view.pod.status.as_ref())
        .and_then(|s| s.phase.as_deref());
    if let Some(terminal @ ("Succeeded" | "Failed")) = previous {
        return if terminal == "Succeeded" {
            "Succeeded"
        } else {
            "Failed"
        };
    }
    let policy = restart_policy(view.pod);
    if !view.initialized {
        let init_failed = view
            .init
            .iter()
            .any(|c| matches!(&c.state, RunState::Terminated(t) if t.exit_code != 0));
        return if init_failed && policy == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded, mut failed) = (0, 0, 0, 0, 0);
    for c in view.containers {
        match &c.state {
            RunState::Running { .. } => running += 1,
            RunState::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                } else {
                    failed += 1;
                }
            }
            RunState::Waiting { .. } if c.last_termination.is_some() => stopped += 1,
            RunState::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 || view.containers.is_empty() {
        "Pending"
    } else if running > 0 {
        "Running"
    } else {
        match policy {
            "Always" => "Running",
            "OnFailure" if succeeded == stopped => "Succeeded",
            "OnFailure" => "Running",
            _ if failed > 0 => "Failed",
            _ => "Succeeded",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::fixtures::*;
    use crate::status::{ContainerSnapshot, PodView};
    use k8s_openapi::api::core::v1::PodStatus;

    #[test]
    fn phases() {
        let always = pod("Always");
        let never = pod("Never");
        let on_failure = pod("OnFailure");
        let waiting = [ContainerSnapshot::waiting("a", "img", "ContainerCreating")];
        assert_eq!(phase(&view(&always, &waiting)), "Pending");
        assert_eq!(
            phase(&view(&always, &[running("a", false), exited("b", 0)])),
            "Running"
        );
        assert_eq!(phase(&view(&always, &[backing_off("a")])), "Running");
        assert_eq!(phase(&view(&always, &[exited("a", 0)])), "Running");
        assert_eq!(
            phase(&view(&never, &[exited("a", 0), exited("b", 0)])),
            "Succeeded"
        );
        assert_eq!(
            phase(&view(&never, &[exited("a", 0), exited("b", 2)])),
            "Failed"
        );
        assert_eq!(phase(&view(&on_failure, &[exited("a", 0)])), "Succeeded");
        assert_eq!(phase(&view(&on_failure, &[backing_off("a")])), "Running");
        let mut v = view(&never, &[]);
        let init = [exited("init", 3)];
        v.init = &init;
        v.initialized = false;
        assert_eq!(phase(&v), "Failed");
        let on_failure_init = view(&on_failure, &[]);
        assert_eq!(
            phase(&PodView {
                init: &init,
                initialized: false,
                ..on_failure_init
            }),
            "Pending"
        );
    }

    #[test]
    fn terminal_phase_sticks() {
        let p = pod("Always");
        let previous = PodStatus {
            phase: Some("Failed".into()),
            ..Default::default()
        };
        let c = [running("a", true)];
        assert_eq!(
            phase(&PodView {
                previous: Some(&previous),
                ..view(&p, &c)
            }),
            "Failed"
        );
    }
}
