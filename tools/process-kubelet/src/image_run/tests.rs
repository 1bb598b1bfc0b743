//! The Kubernetes rules for a container from an image: argv, environment, user.

use k8s_openapi::api::core::v1::{PodSecurityContext, PodSpec, SecurityContext};
use kube::api::ObjectMeta;

use super::*;

fn strings(s: &[&str]) -> Vec<String> {
    s.iter().map(|x| (*x).to_string()).collect()
}

#[test]
fn argv_follows_the_kubernetes_rules() {
    let ep = strings(&["/usr/local/bin/kache-node"]);
    let cmd = strings(&["--serve"]);
    let none: Vec<String> = Vec::new();
    // Neither command nor args: Entrypoint + Cmd.
    assert_eq!(
        image_argv(&ep, &cmd, &none, &none),
        strings(&["/usr/local/bin/kache-node", "--serve"])
    );
    // args alone replace Cmd.
    assert_eq!(
        image_argv(&ep, &cmd, &none, &strings(&["--port", "1"])),
        strings(&["/usr/local/bin/kache-node", "--port", "1"])
    );
    // command replaces Entrypoint and drops Cmd.
    assert_eq!(
        image_argv(&ep, &cmd, &strings(&["/bin/other"]), &none),
        strings(&["/bin/other"])
    );
    assert_eq!(
        image_argv(&ep, &cmd, &strings(&["/bin/other", "-v"]), &strings(&["x"])),
        strings(&["/bin/other", "-v", "x"])
    );
    // An image with only Cmd runs Cmd.
    assert_eq!(
        image_argv(&none, &strings(&["/app", "a"]), &none, &none),
        strings(&["/app", "a"])
    );
    assert!(image_argv(&none, &none, &none, &none).is_empty());
}

#[test]
fn image_env_goes_under_the_kubelet_variables_and_host_paths_stay_out() {
    let kubelet = vec![
        ("PATH".to_string(), "/host/bin".to_string()),
        ("HOME".to_string(), "/tmp/kubelet/home".to_string()),
        ("HOSTNAME".to_string(), "web-0".to_string()),
        (
            "KUBERNETES_SERVICE_HOST".to_string(),
            "10.88.0.1".to_string(),
        ),
    ];
    let env = image_base_env(
        &strings(&["HOSTNAME=image", "RUST_LOG=info", "EMPTY="]),
        &kubelet,
    );
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(get("PATH"), Some(DEFAULT_PATH));
    assert_eq!(get("HOME"), Some("/"));
    assert_eq!(
        get("HOSTNAME"),
        Some("web-0"),
        "the kubelet's HOSTNAME wins"
    );
    assert_eq!(get("RUST_LOG"), Some("info"));
    assert_eq!(get("EMPTY"), Some(""));
    assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.88.0.1"));
    let own = image_base_env(&strings(&["PATH=/app/bin", "HOME=/home/app"]), &kubelet);
    assert_eq!(own[0], ("PATH".to_string(), "/app/bin".to_string()));
    assert!(own.contains(&("HOME".to_string(), "/home/app".to_string())));
}

fn pod(pod_sc: Option<PodSecurityContext>, sc: Option<SecurityContext>) -> (Pod, Container) {
    let container = Container {
        name: "kache".into(),
        security_context: sc,
        ..Default::default()
    };
    let pod = Pod {
        metadata: ObjectMeta {
            name: Some("web-0".into()),
            namespace: Some("demo".into()),
            ..Default::default()
        },
        spec: Some(PodSpec {
            security_context: pod_sc,
            containers: vec![container.clone()],
            ..Default::default()
        }),
        status: None,
    };
    (pod, container)
}

fn non_root(user: Option<i64>, group: Option<i64>) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: user,
        run_as_group: group,
        ..Default::default()
    }
}

#[test]
fn user_comes_from_the_security_context_over_the_image() {
    let (p, c) = pod(None, None);
    assert_eq!(
        run_as(&p, &c, "65532:65532"),
        Ok(RunAs {
            uid: 65532,
            gid: 65532
        })
    );
    assert_eq!(run_as(&p, &c, "1000"), Ok(RunAs { uid: 1000, gid: 0 }));
    assert_eq!(run_as(&p, &c, ""), Ok(RunAs { uid: 0, gid: 0 }));
    // Pod-level ids apply; the container's win over them.
    let pod_sc = PodSecurityContext {
        run_as_user: Some(2000),
        run_as_group: Some(3000),
        ..Default::default()
    };
    let (p, c) = pod(Some(pod_sc.clone()), None);
    assert_eq!(
        run_as(&p, &c, "65532:65532"),
        Ok(RunAs {
            uid: 2000,
            gid: 3000
        })
    );
    let (p, c) = pod(Some(pod_sc), Some(non_root(Some(4000), None)));
    assert_eq!(
        run_as(&p, &c, ""),
        Ok(RunAs {
            uid: 4000,
            gid: 3000
        })
    );
    // runAsUser makes a named image user irrelevant; without it, names are refused.
    let (p, c) = pod(None, Some(non_root(Some(10), Some(10))));
    assert_eq!(
        run_as(&p, &c, "nonroot:nonroot"),
        Ok(RunAs { uid: 10, gid: 10 })
    );
    let (p, c) = pod(None, None);
    assert!(
        run_as(&p, &c, "nonroot")
            .unwrap_err()
            .contains("not numeric")
    );
}

#[test]
fn run_as_non_root_refuses_root_as_the_kubelet_does() {
    let (p, c) = pod(None, Some(non_root(None, None)));
    assert_eq!(
        run_as(&p, &c, ""),
        Err("container has runAsNonRoot and image will run as root (pod: \"demo/web-0\", container: kache)".into())
    );
    assert!(
        run_as(&p, &c, "0:0")
            .unwrap_err()
            .contains("image will run as root")
    );
    assert_eq!(
        run_as(&p, &c, "65532:65532"),
        Ok(RunAs {
            uid: 65532,
            gid: 65532
        })
    );
    assert!(
        run_as(&p, &c, "nonroot")
            .unwrap_err()
            .contains("image has non-numeric user (nonroot), cannot verify user is non-root")
    );
    let (p, c) = pod(None, Some(non_root(Some(0), None)));
    assert!(
        run_as(&p, &c, "65532")
            .unwrap_err()
            .starts_with("container's runAsUser breaks non-root policy")
    );
    // Set on the pod only, it still applies; the container may turn it off.
    let pod_sc = PodSecurityContext {
        run_as_non_root: Some(true),
        ..Default::default()
    };
    let (p, c) = pod(Some(pod_sc.clone()), None);
    assert!(run_as(&p, &c, "").is_err());
    let off = SecurityContext {
        run_as_non_root: Some(false),
        ..Default::default()
    };
    let (p, c) = pod(Some(pod_sc), Some(off));
    assert_eq!(run_as(&p, &c, ""), Ok(RunAs { uid: 0, gid: 0 }));
}

#[test]
fn read_only_root_and_pull_failures() {
    let (_, c) = pod(None, None);
    assert!(!read_only_root(&c));
    let ro = SecurityContext {
        read_only_root_filesystem: Some(true),
        ..Default::default()
    };
    let (_, c) = pod(None, Some(ro));
    assert!(read_only_root(&c));
    assert_eq!(pull_failure_reason(0), "ErrImagePull");
    assert_eq!(pull_failure_reason(1), "ImagePullBackOff");
    assert_eq!(pull_failure_reason(7), "ImagePullBackOff");
}
