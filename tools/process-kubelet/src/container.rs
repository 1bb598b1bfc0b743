//! One container's life: start, probe, restart, stop.
//!
//! A [`Supervisor`] task owns one container of a pod. Each run it prepares a
//! launch (see [`super::launch`]) and starts the process (see
//! [`super::process`]). While the process runs it relays probe verdicts; when the process exits,
//! or the liveness/startup probe fails (SIGTERM, grace, SIGKILL), the pod's
//! `restartPolicy` decides whether it starts again after a capped exponential
//! back-off. An image that cannot be had is `ErrImagePull`, then
//! `ImagePullBackOff` while the next try waits, with the kubelet's events.
//! The PID of the current run is kept in `<pod dir>/<container>.pid`.
//! Every change of state is sent to the pod worker as an
//! [`Update`]; a stop request carries the grace period to use.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::env::Environment;
use super::events;
use super::image_run::pull_failure_reason;
use super::launch::{self, Launch, LaunchError, PodContext};
use super::probe::ContainerProbes;
use super::prober::{self, ProbeEvent, ProbeTarget};
use super::process::{self, Process};
use super::restart::{Backoff, Role, restart_policy, should_restart, termination_grace};
use super::status::{ContainerSnapshot, RunState, Termination};

/// A container's state change, for the pod worker.
#[derive(Debug, Clone)]
pub struct Update {
    /// Init or regular.
    pub role: Role,
    /// Position in the spec list.
    pub index: usize,
    /// The new state.
    pub snapshot: ContainerSnapshot,
}

/// The pod worker's end of a supervisor.
#[derive(Debug)]
pub struct ContainerHandle {
    stop: watch::Sender<Option<Duration>>,
    task: JoinHandle<ContainerSnapshot>,
}

impl ContainerHandle {
    /// Ask the container to stop within `grace` (SIGTERM, then SIGKILL).
    pub fn stop(&self, grace: Duration) {
        self.stop.send_replace(Some(grace));
    }

    /// Wait for the supervisor to end; its final snapshot.
    pub async fn join(self) -> Option<ContainerSnapshot> {
        self.task.await.ok()
    }

    /// Whether the supervisor has ended (container done for good).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// Owns one container.
#[derive(Debug)]
pub struct Supervisor {
    pod: Arc<PodContext>,
    spec: Container,
    role: Role,
    index: usize,
    snap: ContainerSnapshot,
    updates: mpsc::UnboundedSender<Update>,
    stop: watch::Receiver<Option<Duration>>,
    backoff: Backoff,
    /// Failed image pulls in a row.
    pull_failures: u32,
}

/// Start supervising `spec`, whose earlier runs (by a previous kubelet) count as `restarts`.
pub fn spawn(
    pod: Arc<PodContext>,
    spec: Container,
    role: Role,
    index: usize,
    restarts: i32,
    updates: mpsc::UnboundedSender<Update>,
) -> ContainerHandle {
    let (stop_tx, stop) = watch::channel(None);
    let c = &pod.config;
    let backoff = Backoff::new(c.backoff_initial, c.backoff_max, c.backoff_reset);
    let snap = ContainerSnapshot {
        restart_count: restarts,
        ..ContainerSnapshot::waiting(
            &spec.name,
            spec.image.as_deref().unwrap_or(""),
            "ContainerCreating",
        )
    };
    let sup = Supervisor {
        pod,
        spec,
        role,
        index,
        snap,
        updates,
        stop,
        backoff,
        pull_failures: 0,
    };
    ContainerHandle {
        stop: stop_tx,
        task: tokio::spawn(sup.run()),
    }
}

impl Supervisor {
    fn field_path(&self) -> Option<String> {
        Some(events::container_field_path(
            self.role == Role::Init,
            &self.spec.name,
        ))
    }

    /// A Normal event about this container.
    fn note(&self, reason: &str, note: String) {
        self.pod.events.normal(self.field_path(), reason, note);
    }

    /// A Warning event about this container.
    fn warn(&self, reason: &str, note: String) {
        self.pod.events.warning(self.field_path(), reason, note);
    }

    fn publish(&self) {
        let _ = self.updates.send(Update {
            role: self.role,
            index: self.index,
            snapshot: self.snap.clone(),
        });
    }

    /// The grace period once a stop is requested (the worker going away counts as one).
    async fn stopped(stop: &mut watch::Receiver<Option<Duration>>) -> Duration {
        match stop.wait_for(Option::is_some).await {
            Ok(grace) => grace.unwrap_or(Duration::from_secs(2)),
            Err(_) => Duration::from_secs(2),
        }
    }

    /// Wait `delay` unless a stop comes first; true if stopped.
    async fn sleep_or_stop(&mut self, delay: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(delay) => false,
            _ = Self::stopped(&mut self.stop) => true,
        }
    }

    async fn run(mut self) -> ContainerSnapshot {
        self.publish();
        let policy = restart_policy(&self.pod.pod).to_string();
        loop {
            if self.stop.borrow().is_some() {
                return self.snap;
            }
            let mut run = match self.start().await {
                Ok(run) => run,
                Err(retry_in) => {
                    if self.sleep_or_stop(retry_in).await {
                        return self.snap;
                    }
                    continue;
                }
            };
            let Some(delay) = self.run_to_exit(&mut run, &policy).await else {
                return self.snap;
            };
            if self.sleep_or_stop(delay).await {
                return self.snap;
            }
            self.snap.restart_count += 1;
        }
    }

    /// Prepare the launch and start the process, reporting it Running. When it
    /// cannot start, it is reported Waiting and the error is the delay before
    /// the next try (`Duration::MAX` when trying again cannot help).
    async fn start(&mut self) -> Result<Run, Duration> {
        let Launch {
            spec,
            env,
            image_id,
        } = match launch::prepare(&self.pod, &self.spec).await {
            Ok(launch) => launch,
            Err(LaunchError {
                reason,
                message,
                retry,
            }) => {
                tracing::warn!(container = %self.spec.name, reason, %message, "cannot start container");
                let delay = if retry {
                    self.backoff.delay(Duration::ZERO)
                } else {
                    Duration::MAX
                };
                if reason == "ErrImagePull" {
                    self.cannot_pull(message);
                } else {
                    self.cannot_start(reason, message);
                }
                return Err(delay);
            }
        };
        self.pull_failures = 0;
        self.snap.image_id = image_id;
        let header = format!("{} start #{}", Timestamp::now(), self.snap.restart_count);
        let proc = match Process::spawn(&spec, &header) {
            Ok(p) => p,
            Err(e) => {
                self.cannot_start("RunContainerError", e.to_string());
                return Err(self.backoff.delay(Duration::ZERO));
            }
        };
        let (started_at, started) = (Timestamp::now(), Instant::now());
        tracing::info!(container = %self.spec.name, pid = proc.pid(), argv = ?spec.argv, "container started");
        self.note("Started", format!("Started container {}", self.spec.name));
        // For people and scripts that want to poke the process (next to its log).
        let pid_file = self.pod.log_dir.join(format!("{}.pid", self.spec.name));
        let _ = std::fs::write(&pid_file, format!("{}\n", proc.pid()));
        self.snap.container_id = Some(format!(
            "{}/{}/{}",
            self.pod.id_prefix,
            self.spec.name,
            proc.pid()
        ));
        self.snap.state = RunState::Running { started_at };
        self.snap.started = false;
        self.snap.ready = false;
        self.publish();
        Ok(Run {
            proc,
            env,
            user: spec.rootfs.as_ref().map(|r| (r.uid, r.gid)),
            pid_file,
            started,
            started_at,
        })
    }

    /// Report an image that cannot be had, as the kubelet does: `ErrImagePull`
    /// with a `Failed` event the first time, then `ImagePullBackOff` with a
    /// `BackOff` event while the next try waits.
    fn cannot_pull(&mut self, message: String) {
        let reason = pull_failure_reason(self.pull_failures);
        self.pull_failures = self.pull_failures.saturating_add(1);
        let image = self.spec.image.clone().unwrap_or_default();
        if reason == "ErrImagePull" {
            self.warn("Failed", message.clone());
        } else {
            self.note("BackOff", format!("Back-off pulling image {image:?}"));
        }
        self.cannot_start(reason, message);
    }

    /// Report a start that failed before the process ran, with a Warning event.
    fn cannot_start(&mut self, reason: &str, message: String) {
        self.warn("Failed", format!("Error: {reason}: {message}"));
        self.snap.state = RunState::Waiting {
            reason: reason.into(),
            message: Some(message),
        };
        self.publish();
    }

    /// Supervise `run` until it ends and report how. The back-off before the
    /// next start, or `None` when the container is done for good (stopped, or
    /// `restartPolicy` says no).
    async fn run_to_exit(&mut self, run: &mut Run, policy: &str) -> Option<Duration> {
        let (termination, stop_grace) = self
            .supervise(
                &mut run.proc,
                &run.env,
                run.user,
                run.started,
                run.started_at,
            )
            .await;
        let _ = std::fs::remove_file(&run.pid_file);
        self.snap.ready = self.role == Role::Init && termination.exit_code == 0;
        self.snap.started = false;
        let exit = termination.exit_code;
        tracing::info!(container = %self.spec.name, exit, reason = %termination.reason, "container exited");
        if stop_grace.is_some() || !should_restart(policy, self.role, exit) {
            self.snap.state = RunState::Terminated(termination);
            self.publish();
            return None;
        }
        let delay = self.backoff.delay(run.started.elapsed());
        self.snap.last_termination = Some(termination);
        self.snap.state = RunState::Waiting {
            reason: "CrashLoopBackOff".into(),
            message: Some(format!(
                "back-off {delay:?} restarting failed container={}",
                self.spec.name
            )),
        };
        self.publish();
        if !delay.is_zero() {
            self.warn(
                "BackOff",
                format!("Back-off restarting failed container {}", self.spec.name),
            );
        }
        Some(delay)
    }

    /// Run until the process exits, a probe kills it, or a stop comes.
    /// Returns how it ended and, for a stop, the grace period used.
    async fn supervise(
        &mut self,
        proc: &mut Process,
        env: &Environment,
        user: Option<(u32, u32)>,
        started: Instant,
        started_at: Timestamp,
    ) -> (Termination, Option<Duration>) {
        let (probe_tx, mut probe_rx) = mpsc::channel(16);
        let probes = match self.role {
            Role::Regular => Some(AbortOnDrop(tokio::spawn(prober::run(
                ContainerProbes::of(&self.spec),
                ProbeTarget {
                    ip: self.pod.pod_ip,
                    pid: proc.pid(),
                    env: env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
                    user,
                },
                started,
                probe_tx,
            )))),
            Role::Init => None,
        };
        let default_grace = termination_grace(&self.pod.pod);
        let mut message = None;
        let mut stop_grace = None;
        let status = loop {
            tokio::select! {
                status = proc.wait() => break status,
                Some(event) = probe_rx.recv() => match event {
                    ProbeEvent::Started => { self.snap.started = true; self.publish(); }
                    ProbeEvent::Ready(ready, why) => {
                        if !ready {
                            self.warn("Unhealthy", format!("Readiness probe failed: {why}"));
                        }
                        if self.snap.ready != ready { self.snap.ready = ready; self.publish(); }
                    }
                    ProbeEvent::Unhealthy { kind, message: why, grace } => {
                        tracing::warn!(container = %self.spec.name, probe = kind.as_str(), %why, "probe failed; restarting container");
                        let failed = format!("{} probe failed: {why}", kind.as_str());
                        self.warn("Unhealthy", failed.clone());
                        let name = &self.spec.name;
                        let note = format!("Container {name} failed {} probe, will be restarted", kind.as_str().to_lowercase());
                        self.note("Killing", note);
                        message = Some(failed);
                        self.snap.ready = false;
                        self.publish();
                        break proc.stop(grace.unwrap_or(default_grace)).await;
                    }
                },
                grace = Self::stopped(&mut self.stop) => {
                    self.note("Killing", format!("Stopping container {}", self.spec.name));
                    stop_grace = Some(grace);
                    break proc.stop(grace).await;
                }
            }
        };
        drop(probes);
        let (exit_code, signal) = process::exit_info(status);
        let termination = Termination {
            exit_code,
            signal,
            reason: if exit_code == 0 { "Completed" } else { "Error" }.into(),
            message,
            started_at: Some(started_at),
            finished_at: Timestamp::now(),
        };
        (termination, stop_grace)
    }
}

/// One started run of the container: its process, and what its probes and
/// its exit report need.
struct Run {
    proc: Process,
    env: Environment,
    /// uid and gid of a container from an image, for exec probes.
    user: Option<(u32, u32)>,
    pid_file: PathBuf,
    started: Instant,
    started_at: Timestamp,
}

/// Aborts the probe task when the run ends.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
