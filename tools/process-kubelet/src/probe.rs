//! Probe settings and probe thresholds.
//!
//! Turns a pod's `startupProbe`/`livenessProbe`/`readinessProbe` into
//! [`ProbeParams`] with the API defaults filled in (period 10 s, timeout 1 s,
//! thresholds 1 and 3, success threshold forced to 1 where the API requires
//! it), and counts consecutive results in a [`Tracker`]. Running the checks is
//! [`super::prober`]'s job. Pure.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// Gates the other two; failing it restarts the container.
    Startup,
    /// Failing it restarts the container.
    Liveness,
    /// Decides whether the container is ready.
    Readiness,
}

impl ProbeKind {
    /// As the kubelet writes it in events and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Startup => "Startup",
            ProbeKind::Liveness => "Liveness",
            ProbeKind::Readiness => "Readiness",
        }
    }
}

/// What a probe does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `GET http://host:port/path`; 200–399 is success.
    Http {
        /// `host` from the probe; the pod IP when unset.
        host: Option<String>,
        /// Resolved port number.
        port: u16,
        /// Path and query, starting with `/`.
        path: String,
        /// The probe asked for HTTPS, which is approximated by a TCP connect.
        https: bool,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// A TCP connect to `host:port`.
    Tcp {
        /// `host` from the probe; the pod IP when unset.
        host: Option<String>,
        /// Resolved port number.
        port: u16,
    },
    /// A command inside the container's namespaces; exit 0 is success.
    Exec(Vec<String>),
    /// Something this kubelet cannot check (gRPC, a port name that is not
    /// declared). It always fails, with this message.
    Invalid(String),
}

/// A probe with every default applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeParams {
    /// Which probe this is.
    pub kind: ProbeKind,
    /// The check.
    pub action: Action,
    /// Time after the container started before the first check.
    pub initial_delay: Duration,
    /// Time between checks.
    pub period: Duration,
    /// Time a single check may take.
    pub timeout: Duration,
    /// Consecutive successes that make the probe pass.
    pub success_threshold: u32,
    /// Consecutive failures that make the probe fail.
    pub failure_threshold: u32,
    /// The probe-level `terminationGracePeriodSeconds`, for the restart it causes.
    pub termination_grace: Option<Duration>,
}

fn secs(v: Option<i32>, default: u64, min: u64) -> Duration {
    let v = v.and_then(|v| u64::try_from(v).ok()).unwrap_or(default);
    Duration::from_secs(v.max(min))
}

fn count(v: Option<i32>, default: u32) -> u32 {
    v.and_then(|v| u32::try_from(v).ok())
        .filter(|v| *v > 0)
        .unwrap_or(default)
}

impl ProbeParams {
    /// `probe` of `container`, with API defaults.
    pub fn new(kind: ProbeKind, probe: &Probe, container: &Container) -> Self {
        let port = |p: &IntOrString| -> Result<u16, String> {
            match p {
                IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("bad port {n}")),
                IntOrString::String(name) => container
                    .ports
                    .iter()
                    .flatten()
                    .find(|cp| cp.name.as_deref() == Some(name))
                    .and_then(|cp| u16::try_from(cp.container_port).ok())
                    .or_else(|| name.parse().ok())
                    .ok_or_else(|| format!("port {name:?} is not a declared container port")),
            }
        };
        let action = if let Some(h) = &probe.http_get {
            match port(&h.port) {
                Ok(port) => Action::Http {
                    host: h.host.clone().filter(|s| !s.is_empty()),
                    port,
                    path: match h.path.as_deref() {
                        None | Some("") => "/".to_string(),
                        Some(p) if p.starts_with('/') => p.to_string(),
                        Some(p) => format!("/{p}"),
                    },
                    https: h
                        .scheme
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case("https")),
                    headers: h
                        .http_headers
                        .iter()
                        .flatten()
                        .map(|hh| (hh.name.clone(), hh.value.clone()))
                        .collect(),
                },
                Err(e) => Action::Invalid(e),
            }
        } else if let Some(t) = &probe.tcp_socket {
            match port(&t.port) {
                Ok(port) => Action::Tcp {
                    host: t.host.clone().filter(|s| !s.is_empty()),
                    port,
                },
                Err(e) => Action::Invalid(e),
            }
        } else if let Some(e) = &probe.exec {
            Action::Exec(e.command.clone().unwrap_or_default())
        } else if probe.grpc.is_some() {
            Action::Invalid("gRPC probes are not supported by the process kubelet".into())
        } else {
            Action::Invalid("probe has no handler".into())
        };
        let success_threshold = match kind {
            // the API rejects anything but 1 for these
            ProbeKind::Liveness | ProbeKind::Startup => 1,
            ProbeKind::Readiness => count(probe.success_threshold, 1),
        };
        ProbeParams {
            kind,
            action,
            initial_delay: secs(probe.initial_delay_seconds, 0, 0),
            period: secs(probe.period_seconds, 10, 1),
            timeout: secs(probe.timeout_seconds, 1, 1),
            success_threshold,
            failure_threshold: count(probe.failure_threshold, 3),
            termination_grace: probe
                .termination_grace_period_seconds
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs),
        }
    }
}

/// The three probes of one container.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerProbes {
    /// `startupProbe`.
    pub startup: Option<ProbeParams>,
    /// `livenessProbe`.
    pub liveness: Option<ProbeParams>,
    /// `readinessProbe`.
    pub readiness: Option<ProbeParams>,
}

impl ContainerProbes {
    /// The probes `container` declares.
    pub fn of(container: &Container) -> Self {
        let p = |kind, probe: &Option<Probe>| {
            probe.as_ref().map(|p| ProbeParams::new(kind, p, container))
        };
        ContainerProbes {
            startup: p(ProbeKind::Startup, &container.startup_probe),
            liveness: p(ProbeKind::Liveness, &container.liveness_probe),
            readiness: p(ProbeKind::Readiness, &container.readiness_probe),
        }
    }

    /// No probe at all.
    pub fn is_empty(&self) -> bool {
        self.startup.is_none() && self.liveness.is_none() && self.readiness.is_none()
    }
}

/// Consecutive results of one probe, and whether it currently passes.
#[derive(Debug, Clone)]
pub struct Tracker {
    success_threshold: u32,
    failure_threshold: u32,
    successes: u32,
    failures: u32,
    passing: Option<bool>,
}

impl Tracker {
    /// A tracker that has seen nothing; it neither passes nor fails yet.
    pub fn new(params: &ProbeParams) -> Self {
        Tracker {
            success_threshold: params.success_threshold,
            failure_threshold: params.failure_threshold,
            successes: 0,
            failures: 0,
            passing: None,
        }
    }

    /// Record one result. Returns the new verdict when it changes: `true`
    /// after `success_threshold` successes in a row, `false` after
    /// `failure_threshold` failures in a row.
    pub fn observe(&mut self, success: bool) -> Option<bool> {
        if success {
            self.successes = self.successes.saturating_add(1);
            self.failures = 0;
            if self.successes >= self.success_threshold && self.passing != Some(true) {
                self.passing = Some(true);
                return Some(true);
            }
        } else {
            self.failures = self.failures.saturating_add(1);
            self.successes = 0;
            if self.failures >= self.failure_threshold && self.passing != Some(false) {
                self.passing = Some(false);
                return Some(false);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
