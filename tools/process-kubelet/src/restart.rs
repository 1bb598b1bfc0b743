//! Restart and stop policy: whether a container runs again, after how long,
//! and how long it gets to stop.
//!
//! `restartPolicy` (Always, OnFailure, Never) decides whether an exited
//! container starts again; init containers only rerun after a failure. Crash
//! loops back off exponentially up to a cap, and a run that lasted long enough
//! resets the back-off. `terminationGracePeriodSeconds` is the time between
//! SIGTERM and SIGKILL. Restarts are counted across kubelet restarts. Pure.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerStatus, Pod};

/// Init containers run to completion, one after another; regular ones run together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `initContainers`.
    Init,
    /// `containers`.
    Regular,
}

/// Whether a container that exited with `exit_code` starts again.
pub fn should_restart(policy: &str, role: Role, exit_code: i32) -> bool {
    match (role, policy) {
        (_, "Never") => false,
        (Role::Regular, "Always") => true,
        _ => exit_code != 0,
    }
}

/// Exponential restart back-off, capped; a long run starts it over.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    reset_after: Duration,
    next: Duration,
}

impl Backoff {
    /// Delays `initial`, `2*initial`, ... up to `max`; a run of `reset_after` or more resets it.
    pub fn new(initial: Duration, max: Duration, reset_after: Duration) -> Self {
        Backoff {
            initial,
            max,
            reset_after,
            next: initial,
        }
    }

    /// The delay before the next start, after a run that lasted `ran_for`.
    pub fn delay(&mut self, ran_for: Duration) -> Duration {
        if ran_for >= self.reset_after {
            self.next = self.initial;
            return Duration::ZERO;
        }
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }
}

/// The pod's `restartPolicy`, `Always` by default.
pub fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

/// `terminationGracePeriodSeconds`, 30 s by default.
pub fn termination_grace(pod: &Pod) -> Duration {
    let secs = pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(30);
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// A container this kubelet (or an earlier run of it) already started counts
/// its earlier runs: starting it again, after a kubelet restart, is a restart.
pub fn restarts_so_far(seen: Option<&Vec<ContainerStatus>>, name: &str) -> i32 {
    let Some(s) = seen.into_iter().flatten().find(|s| s.name == name) else {
        return 0;
    };
    let ran = s
        .state
        .as_ref()
        .is_some_and(|st| st.running.is_some() || st.terminated.is_some());
    s.restart_count + i32::from(ran)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_table() {
        assert!(should_restart("Always", Role::Regular, 0));
        assert!(should_restart("Always", Role::Regular, 1));
        assert!(!should_restart("OnFailure", Role::Regular, 0));
        assert!(should_restart("OnFailure", Role::Regular, 137));
        assert!(!should_restart("Never", Role::Regular, 1));
        // init containers rerun only on failure, even under Always
        assert!(!should_restart("Always", Role::Init, 0));
        assert!(should_restart("Always", Role::Init, 2));
        assert!(!should_restart("Never", Role::Init, 2));
    }

    #[test]
    fn grace_period_defaults_to_30s() {
        let mut pod = Pod::default();
        assert_eq!(termination_grace(&pod), Duration::from_secs(30));
        assert_eq!(restart_policy(&pod), "Always");
        pod.spec = Some(k8s_openapi::api::core::v1::PodSpec {
            termination_grace_period_seconds: Some(5),
            restart_policy: Some("Never".into()),
            ..Default::default()
        });
        assert_eq!(termination_grace(&pod), Duration::from_secs(5));
        assert_eq!(restart_policy(&pod), "Never");
    }

    #[test]
    fn restarts_carry_over_a_kubelet_restart() {
        use k8s_openapi::api::core::v1::{
            ContainerState, ContainerStateRunning, ContainerStateWaiting,
        };
        let status = |name: &str, count, running| ContainerStatus {
            name: name.into(),
            restart_count: count,
            state: Some(if running {
                ContainerState {
                    running: Some(ContainerStateRunning::default()),
                    ..Default::default()
                }
            } else {
                ContainerState {
                    waiting: Some(ContainerStateWaiting::default()),
                    ..Default::default()
                }
            }),
            ..Default::default()
        };
        let seen = vec![status("a", 2, true), status("b", 0, false)];
        assert_eq!(
            restarts_so_far(Some(&seen), "a"),
            3,
            "it ran: starting it again is a restart"
        );
        assert_eq!(restarts_so_far(Some(&seen), "b"), 0, "never started");
        assert_eq!(restarts_so_far(Some(&seen), "c"), 0);
        assert_eq!(restarts_so_far(None, "a"), 0);
    }

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let s = Duration::from_secs;
        let mut b = Backoff::new(s(1), s(5), s(60));
        let delays: Vec<_> = (0..5).map(|_| b.delay(s(0))).collect();
        assert_eq!(delays, vec![s(1), s(2), s(4), s(5), s(5)]);
        assert_eq!(
            b.delay(s(60)),
            Duration::ZERO,
            "a long run restarts at once"
        );
        assert_eq!(b.delay(s(1)), s(1), "and the back-off starts over");
    }
}
