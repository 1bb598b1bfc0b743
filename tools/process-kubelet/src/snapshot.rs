//! What a container supervisor knows about its container: a snapshot.
//!
//! A [`ContainerSnapshot`] is sent to the pod worker on every change (see
//! [`super::container`]); [`super::status`] turns the snapshots into the
//! API's container statuses.

use k8s_openapi::jiff::Timestamp;

/// How a container run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Termination {
    /// Exit code; 128+N for a signal N.
    pub exit_code: i32,
    /// The signal that killed it, if any.
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `OOMKilled`-style reason.
    pub reason: String,
    /// Extra detail.
    pub message: Option<String>,
    /// When the run began.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Timestamp,
}

/// A container's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// Not running: not started yet, backing off, or unable to start.
    Waiting {
        /// `ContainerCreating`, `CrashLoopBackOff`, `ErrImagePull`, ...
        reason: String,
        /// Detail.
        message: Option<String>,
    },
    /// Running since `started_at`.
    Running {
        /// Process start.
        started_at: Timestamp,
    },
    /// Ended, and not restarting (or not yet).
    Terminated(Termination),
}

/// One container as its supervisor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerSnapshot {
    /// Container name.
    pub name: String,
    /// Image as written in the spec.
    pub image: String,
    /// The host binary behind the image, once resolved.
    pub image_id: String,
    /// `process://...` id of the current run.
    pub container_id: Option<String>,
    /// Current state.
    pub state: RunState,
    /// How the previous run ended.
    pub last_termination: Option<Termination>,
    /// Restarts so far.
    pub restart_count: i32,
    /// Passing readiness (or running without a readiness probe).
    pub ready: bool,
    /// Passed the startup probe (or running without one).
    pub started: bool,
}

impl ContainerSnapshot {
    /// A container that has not been started yet.
    pub fn waiting(name: &str, image: &str, reason: &str) -> Self {
        ContainerSnapshot {
            name: name.to_string(),
            image: image.to_string(),
            image_id: String::new(),
            container_id: None,
            state: RunState::Waiting {
                reason: reason.to_string(),
                message: None,
            },
            last_termination: None,
            restart_count: 0,
            ready: false,
            started: false,
        }
    }

    /// Terminated with exit code 0.
    pub fn succeeded(&self) -> bool {
        matches!(&self.state, RunState::Terminated(t) if t.exit_code == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_container_waits_and_is_not_ready() {
        let s = ContainerSnapshot::waiting("c", "img:1", "ContainerCreating");
        assert!(!s.ready && !s.started && !s.succeeded());
        assert_eq!(s.restart_count, 0);
        assert!(
            matches!(s.state, RunState::Waiting { ref reason, .. } if reason == "ContainerCreating")
        );
        let done = ContainerSnapshot {
            state: RunState::Terminated(Termination {
                exit_code: 0,
                signal: None,
                reason: "Completed".into(),
                message: None,
                started_at: None,
                finished_at: Timestamp::UNIX_EPOCH,
            }),
            ..s
        };
        assert!(done.succeeded());
    }
}
