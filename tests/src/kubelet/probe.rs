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
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ContainerPort, ExecAction, GRPCAction, HTTPGetAction, HTTPHeader, TCPSocketAction,
    };

    fn container() -> Container {
        Container {
            name: "c".into(),
            ports: Some(vec![ContainerPort {
                name: Some("http".into()),
                container_port: 8080,
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_match_the_api() {
        let probe = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(7000),
                host: None,
            }),
            ..Default::default()
        };
        let p = ProbeParams::new(ProbeKind::Readiness, &probe, &container());
        assert_eq!(
            p.action,
            Action::Tcp {
                host: None,
                port: 7000
            }
        );
        assert_eq!(p.initial_delay, Duration::ZERO);
        assert_eq!(p.period, Duration::from_secs(10));
        assert_eq!(p.timeout, Duration::from_secs(1));
        assert_eq!((p.success_threshold, p.failure_threshold), (1, 3));
        assert_eq!(p.termination_grace, None);
    }

    #[test]
    fn explicit_values_and_named_ports() {
        let probe = Probe {
            http_get: Some(HTTPGetAction {
                port: IntOrString::String("http".into()),
                path: Some("healthz?full=1".into()),
                http_headers: Some(vec![HTTPHeader {
                    name: "X-A".into(),
                    value: "1".into(),
                }]),
                ..Default::default()
            }),
            initial_delay_seconds: Some(2),
            period_seconds: Some(0),
            timeout_seconds: Some(5),
            success_threshold: Some(2),
            failure_threshold: Some(7),
            termination_grace_period_seconds: Some(4),
            ..Default::default()
        };
        let r = ProbeParams::new(ProbeKind::Readiness, &probe, &container());
        assert_eq!(
            r.action,
            Action::Http {
                host: None,
                port: 8080,
                path: "/healthz?full=1".into(),
                https: false,
                headers: vec![("X-A".into(), "1".into())],
            }
        );
        assert_eq!(r.initial_delay, Duration::from_secs(2));
        assert_eq!(
            r.period,
            Duration::from_secs(1),
            "a period below 1 s is raised to 1 s"
        );
        assert_eq!(r.timeout, Duration::from_secs(5));
        assert_eq!((r.success_threshold, r.failure_threshold), (2, 7));
        assert_eq!(r.termination_grace, Some(Duration::from_secs(4)));
        let l = ProbeParams::new(ProbeKind::Liveness, &probe, &container());
        assert_eq!(
            l.success_threshold, 1,
            "liveness success threshold is always 1"
        );
    }

    #[test]
    fn unusable_probes_become_invalid_actions() {
        let unknown_port = Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::String("nope".into()),
                host: None,
            }),
            ..Default::default()
        };
        let p = ProbeParams::new(ProbeKind::Liveness, &unknown_port, &container());
        assert!(matches!(p.action, Action::Invalid(_)));
        let grpc = Probe {
            grpc: Some(GRPCAction {
                port: 9000,
                service: None,
            }),
            ..Default::default()
        };
        assert!(matches!(
            ProbeParams::new(ProbeKind::Liveness, &grpc, &container()).action,
            Action::Invalid(_)
        ));
        let exec = Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            ..Default::default()
        };
        assert_eq!(
            ProbeParams::new(ProbeKind::Startup, &exec, &container()).action,
            Action::Exec(vec!["true".into()])
        );
    }

    #[test]
    fn tracker_needs_consecutive_results() {
        let probe = Probe {
            success_threshold: Some(2),
            failure_threshold: Some(3),
            ..Default::default()
        };
        let p = ProbeParams::new(ProbeKind::Readiness, &probe, &container());
        let mut t = Tracker::new(&p);
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
        assert_eq!(t.observe(true), None, "no repeated verdict");
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(true), None, "a success resets the failure count");
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), None);
        assert_eq!(t.observe(false), Some(false));
        assert_eq!(t.observe(true), None);
        assert_eq!(t.observe(true), Some(true));
    }

    #[test]
    fn container_probes_collects_all_three() {
        let mut c = container();
        assert!(ContainerProbes::of(&c).is_empty());
        c.readiness_probe = Some(Probe::default());
        c.startup_probe = Some(Probe::default());
        let probes = ContainerProbes::of(&c);
        assert!(probes.liveness.is_none());
        assert_eq!(probes.startup.map(|p| p.kind), Some(ProbeKind::Startup));
        assert_eq!(probes.readiness.map(|p| p.kind), Some(ProbeKind::Readiness));
    }
}
