//! Pod status: from what the kubelet knows to the API's `PodStatus`.
//!
//! Container supervisors publish a [`ContainerSnapshot`]; the pod worker feeds
//! the snapshots into [`pod_status`], a pure function that computes the phase
//! (see [`super::phase`]), the conditions
//! (PodReadyToStartContainers, Initialized, ContainersReady, Ready,
//! PodScheduled) and the container statuses. A condition keeps its
//! `lastTransitionTime` while its status does not change. Conditions owned by
//! others (a readiness gate, DisruptionTarget) are carried over untouched.

use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::phase::phase;
pub use super::snapshot::{ContainerSnapshot, RunState, Termination};

/// Everything [`pod_status`] and [`super::phase::phase`] need.
#[derive(Debug, Clone, Copy)]
pub struct PodView<'a> {
    /// The pod as last seen from the API.
    pub pod: &'a Pod,
    /// The status this kubelet wrote last, if any (fresher than `pod.status`).
    pub previous: Option<&'a PodStatus>,
    /// The pod's IP, once its network namespace exists.
    pub pod_ip: Option<Ipv4Addr>,
    /// The node's IP.
    pub host_ip: Ipv4Addr,
    /// The network namespace (the "sandbox") is set up.
    pub sandbox_ready: bool,
    /// Init containers, in spec order.
    pub init: &'a [ContainerSnapshot],
    /// Every init container succeeded.
    pub initialized: bool,
    /// Regular containers, in spec order.
    pub containers: &'a [ContainerSnapshot],
    /// When the kubelet accepted the pod.
    pub start_time: Timestamp,
    /// Now.
    pub now: Timestamp,
}

/// The full status this kubelet reports.
pub fn pod_status(view: &PodView<'_>) -> PodStatus {
    let phase = phase(view);
    let terminal = phase == "Succeeded" || phase == "Failed";
    let ip = view.pod_ip.map(|ip| ip.to_string());
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions(view, terminal)),
        host_ip: Some(view.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: view.host_ip.to_string(),
        }]),
        pod_ip: ip.clone(),
        pod_ips: ip.map(|ip| vec![PodIP { ip }]),
        start_time: Some(Time(view.start_time)),
        container_statuses: Some(view.containers.iter().map(container_status).collect()),
        init_container_statuses: (!view.init.is_empty())
            .then(|| view.init.iter().map(container_status).collect()),
        qos_class: view.pod.status.as_ref().and_then(|s| s.qos_class.clone()),
        observed_generation: view.pod.metadata.generation,
        ..Default::default()
    }
}

/// The conditions this kubelet owns, then those others own (a readiness
/// gate, DisruptionTarget) as the API has them, then PodScheduled if nobody
/// set it.
fn conditions(view: &PodView<'_>, terminal: bool) -> Vec<PodCondition> {
    let history = ConditionHistory::of(view);
    let readiness = Readiness::of(view, terminal);
    let incomplete: Vec<&str> = view
        .init
        .iter()
        .filter(|c| !c.succeeded())
        .map(|c| c.name.as_str())
        .collect();
    let mut conditions = vec![
        history.condition("PodReadyToStartContainers", view.sandbox_ready, None, None),
        history.condition(
            "Initialized",
            view.initialized,
            Some("ContainersNotInitialized"),
            Some(format!(
                "containers with incomplete status: [{}]",
                incomplete.join(" ")
            )),
        ),
        history.condition(
            "Ready",
            readiness.containers_ready && readiness.gates_ready,
            Some(readiness.reason),
            readiness.message.clone(),
        ),
        history.condition(
            "ContainersReady",
            readiness.containers_ready,
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotReady"
            }),
            readiness.message.filter(|_| !readiness.containers_ready),
        ),
    ];
    let ours = [
        "PodReadyToStartContainers",
        "Initialized",
        "Ready",
        "ContainersReady",
    ];
    let others = api_conditions(view)
        .into_iter()
        .flatten()
        .filter(|c| !ours.contains(&c.type_.as_str()));
    conditions.extend(others.cloned());
    if !conditions.iter().any(|c| c.type_ == "PodScheduled") {
        conditions.push(history.condition("PodScheduled", true, None, None));
    }
    conditions
}

/// The conditions as the API has them: those others own live there.
fn api_conditions<'a>(view: &PodView<'a>) -> Option<&'a Vec<PodCondition>> {
    view.pod.status.as_ref().and_then(|s| s.conditions.as_ref())
}

/// The conditions reported last, so that a condition keeps its
/// `lastTransitionTime` while its status does not change.
struct ConditionHistory<'a> {
    old: Option<&'a Vec<PodCondition>>,
    now: Timestamp,
    generation: Option<i64>,
}

impl<'a> ConditionHistory<'a> {
    /// What this kubelet wrote last, or else what the API has.
    fn of(view: &PodView<'a>) -> Self {
        ConditionHistory {
            old: view
                .previous
                .or(view.pod.status.as_ref())
                .and_then(|s| s.conditions.as_ref()),
            now: view.now,
            generation: view.pod.metadata.generation,
        }
    }

    /// Condition `type_`, True when `ok`; a False one carries `reason` and `message`.
    fn condition(
        &self,
        type_: &str,
        ok: bool,
        reason: Option<&str>,
        message: Option<String>,
    ) -> PodCondition {
        let status = if ok { "True" } else { "False" };
        let since = self
            .old
            .into_iter()
            .flatten()
            .find(|c| c.type_ == type_ && c.status == status)
            .and_then(|c| c.last_transition_time.clone())
            .unwrap_or(Time(self.now));
        PodCondition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: if ok { None } else { reason.map(str::to_string) },
            message: if ok { None } else { message },
            last_transition_time: Some(since),
            last_probe_time: None,
            observed_generation: self.generation,
        }
    }
}

/// Whether the pod is Ready, and if not, why.
struct Readiness {
    /// Every container is ready (never for a finished pod or one without containers).
    containers_ready: bool,
    /// Every readiness gate's condition is True in the API.
    gates_ready: bool,
    /// Why the pod is not Ready.
    reason: &'static str,
    message: Option<String>,
}

impl Readiness {
    fn of(view: &PodView<'_>, terminal: bool) -> Self {
        let unready: Vec<&str> = view
            .containers
            .iter()
            .filter(|c| !c.ready)
            .map(|c| c.name.as_str())
            .collect();
        let containers_ready = !terminal && unready.is_empty() && !view.containers.is_empty();
        let gate_ok = |t: &str| {
            api_conditions(view)
                .into_iter()
                .flatten()
                .any(|c| c.type_ == t && c.status == "True")
        };
        let gates_ready = view
            .pod
            .spec
            .iter()
            .flat_map(|s| s.readiness_gates.iter().flatten())
            .all(|g| gate_ok(&g.condition_type));
        let (reason, message) = if terminal {
            ("PodCompleted", None)
        } else if !containers_ready {
            (
                "ContainersNotReady",
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        } else {
            (
                "ReadinessGatesNotReady",
                Some("the status of pod readiness gates is not \"True\"".into()),
            )
        };
        Readiness {
            containers_ready,
            gates_ready,
            reason,
            message,
        }
    }
}

fn terminated(t: &Termination, id: Option<&String>) -> ContainerStateTerminated {
    ContainerStateTerminated {
        exit_code: t.exit_code,
        signal: t.signal,
        reason: Some(t.reason.clone()),
        message: t.message.clone(),
        started_at: t.started_at.map(Time),
        finished_at: Some(Time(t.finished_at)),
        container_id: id.cloned(),
    }
}

fn container_status(c: &ContainerSnapshot) -> ContainerStatus {
    let state = match &c.state {
        RunState::Waiting { reason, message } => ContainerState {
            waiting: Some(ContainerStateWaiting {
                reason: Some(reason.clone()),
                message: message.clone(),
            }),
            ..Default::default()
        },
        RunState::Running { started_at } => ContainerState {
            running: Some(ContainerStateRunning {
                started_at: Some(Time(*started_at)),
            }),
            ..Default::default()
        },
        RunState::Terminated(t) => ContainerState {
            terminated: Some(terminated(t, c.container_id.as_ref())),
            ..Default::default()
        },
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: c.image_id.clone(),
        container_id: c.container_id.clone(),
        ready: c.ready,
        started: Some(c.started),
        restart_count: c.restart_count,
        state: Some(state),
        last_state: Some(ContainerState {
            terminated: c.last_termination.as_ref().map(|t| terminated(t, None)),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Snapshots and views for the status and phase tests.
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;

    pub(crate) fn ts(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    pub(crate) fn pod(policy: &str) -> Pod {
        Pod {
            spec: Some(PodSpec {
                restart_policy: Some(policy.into()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(crate) fn running(name: &str, ready: bool) -> ContainerSnapshot {
        ContainerSnapshot {
            state: RunState::Running { started_at: ts(1) },
            ready,
            started: true,
            ..ContainerSnapshot::waiting(name, "img", "")
        }
    }

    pub(crate) fn exited(name: &str, code: i32) -> ContainerSnapshot {
        ContainerSnapshot {
            state: RunState::Terminated(Termination {
                exit_code: code,
                signal: None,
                reason: if code == 0 { "Completed" } else { "Error" }.into(),
                message: None,
                started_at: Some(ts(1)),
                finished_at: ts(2),
            }),
            ..ContainerSnapshot::waiting(name, "img", "")
        }
    }

    pub(crate) fn backing_off(name: &str) -> ContainerSnapshot {
        let last = match exited(name, 1).state {
            RunState::Terminated(t) => t,
            _ => unreachable!(),
        };
        ContainerSnapshot {
            state: RunState::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: None,
            },
            last_termination: Some(last),
            restart_count: 1,
            ..ContainerSnapshot::waiting(name, "img", "")
        }
    }

    pub(crate) fn view<'a>(pod: &'a Pod, containers: &'a [ContainerSnapshot]) -> PodView<'a> {
        PodView {
            pod,
            previous: None,
            pod_ip: Some("10.88.1.4".parse().unwrap()),
            host_ip: "10.88.0.1".parse().unwrap(),
            sandbox_ready: true,
            init: &[],
            initialized: true,
            containers,
            start_time: ts(0),
            now: ts(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use k8s_openapi::api::core::v1::PodReadinessGate;

    fn cond<'s>(s: &'s PodStatus, t: &str) -> &'s PodCondition {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == t)
            .unwrap()
    }

    #[test]
    fn ready_conditions_and_addresses() {
        let p = pod("Always");
        let c = [running("a", true), running("b", false)];
        let s = pod_status(&view(&p, &c));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(s.pod_ip.as_deref(), Some("10.88.1.4"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.88.1.4");
        assert_eq!(s.host_ip.as_deref(), Some("10.88.0.1"));
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "ContainersReady").message.as_deref(),
            Some("containers with unready status: [b]")
        );
        assert_eq!(cond(&s, "Initialized").status, "True");
        assert_eq!(cond(&s, "PodScheduled").status, "True");
        assert_eq!(cond(&s, "PodReadyToStartContainers").status, "True");
        let cs = s.container_statuses.as_ref().unwrap();
        assert!(cs[0].ready && !cs[1].ready);
        assert!(cs[0].state.as_ref().unwrap().running.is_some());

        let all = [running("a", true), running("b", true)];
        let s2 = pod_status(&PodView {
            previous: Some(&s),
            now: ts(20),
            ..view(&p, &all)
        });
        assert_eq!(cond(&s2, "Ready").status, "True");
        assert_eq!(cond(&s2, "Ready").last_transition_time, Some(Time(ts(20))));
        // unchanged conditions keep their transition time
        assert_eq!(
            cond(&s2, "Initialized").last_transition_time,
            Some(Time(ts(10)))
        );
    }

    #[test]
    fn readiness_gates_and_foreign_conditions() {
        let mut p = pod("Always");
        if let Some(spec) = p.spec.as_mut() {
            spec.readiness_gates = Some(vec![PodReadinessGate {
                condition_type: "example.com/gate".into(),
            }]);
        }
        p.status = Some(PodStatus {
            conditions: Some(vec![PodCondition {
                type_: "example.com/gate".into(),
                status: "False".into(),
                ..Default::default()
            }]),
            ..Default::default()
        });
        let c = [running("a", true)];
        let s = pod_status(&view(&p, &c));
        assert_eq!(cond(&s, "ContainersReady").status, "True");
        assert_eq!(cond(&s, "Ready").status, "False");
        assert_eq!(
            cond(&s, "Ready").reason.as_deref(),
            Some("ReadinessGatesNotReady")
        );
        assert_eq!(cond(&s, "example.com/gate").status, "False", "carried over");
    }

    #[test]
    fn restarts_and_last_state_are_reported() {
        let p = pod("Always");
        let c = [backing_off("a")];
        let s = pod_status(&view(&p, &c));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 1);
        let waiting = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!(last.exit_code, 1);
    }
}
