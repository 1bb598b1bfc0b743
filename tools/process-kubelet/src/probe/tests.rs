//! Probe settings: the API's defaults, explicit values and named ports, unknown ports and gRPC
//! turned into invalid actions, thresholds that need consecutive results, and the three probes
//! of a container.

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
