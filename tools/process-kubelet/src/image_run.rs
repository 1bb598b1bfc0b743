//! What a container started from an image runs: argv, base environment, user
//! and working directory, from the image config and the pod spec.
//!
//! These are the Kubernetes rules a container runtime and the kubelet apply
//! between them, kept pure so each is tested on its own:
//!
//! - **argv** ([`image_argv`]): `command` replaces the image's Entrypoint and
//!   drops its Cmd; `args` alone replace the Cmd; neither runs Entrypoint + Cmd.
//! - **environment** ([`image_base_env`]): the image's `Env` first, then what
//!   the kubelet adds (`KUBERNETES_SERVICE_*`, `HOSTNAME`); the pod's `env` and
//!   `envFrom` go on top of that later. `PATH` defaults as in containerd.
//! - **user** ([`run_as`]): `runAsUser`/`runAsGroup` (container over pod) over
//!   the image's `User`; `runAsNonRoot` refuses uid 0, and an image user it
//!   cannot check (non-numeric), with the kubelet's own messages, which the
//!   container shows as `CreateContainerConfigError`.
//! - **image pull failures** ([`pull_failure_reason`]): `ErrImagePull` the first
//!   time, `ImagePullBackOff` while the kubelet waits to try again.

use k8s_openapi::api::core::v1::{Container, Pod};

/// containerd's PATH for an image that sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The argv of a container from an image: see the module doc. `command` and
/// `args` must already have their `$(VAR)` references expanded.
pub fn image_argv(
    entrypoint: &[String],
    cmd: &[String],
    command: &[String],
    args: &[String],
) -> Vec<String> {
    let (program, rest) = match (command.is_empty(), args.is_empty()) {
        (false, _) => (command, args),
        (true, false) => (entrypoint, args),
        (true, true) => (entrypoint, cmd),
    };
    program.iter().chain(rest).cloned().collect()
}

/// The environment a container from an image starts with, before the pod's
/// `env`: the image's `Env` (`NAME=value` strings), then `kubelet` (the
/// kubelet's variables; its host `PATH` and `HOME` are left out: inside the
/// image they would name host directories). `HOME` is `/` unless the image
/// sets it, as containerd does for a user without a passwd entry.
pub fn image_base_env(image_env: &[String], kubelet: &[(String, String)]) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![("PATH".into(), DEFAULT_PATH.into())];
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(name, _)| name == k) {
        Some(slot) => slot.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    for entry in image_env {
        let (k, v) = entry.split_once('=').unwrap_or((entry, ""));
        if !k.is_empty() {
            set(k, v);
        }
    }
    for (k, v) in kubelet.iter().filter(|(k, _)| k != "PATH" && k != "HOME") {
        set(k, v);
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        env.push(("HOME".into(), "/".into()));
    }
    env
}

/// The uid and gid a container runs as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RunAs {
    /// User id.
    pub uid: u32,
    /// Group id (no supplementary groups).
    pub gid: u32,
}

/// The image's `User` (`uid`, `uid:gid`, or names), split into numeric ids where
/// it gives them and names where it does not. Empty means root.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ImageUser {
    uid: Result<u32, String>,
    gid: Option<Result<u32, String>>,
}

fn parse_image_user(user: &str) -> ImageUser {
    let id = |s: &str| s.parse::<u32>().map_err(|_| s.to_string());
    match user.split_once(':') {
        _ if user.is_empty() => ImageUser {
            uid: Ok(0),
            gid: None,
        },
        Some((u, g)) => ImageUser {
            uid: id(u),
            gid: Some(id(g)),
        },
        None => ImageUser {
            uid: id(user),
            gid: None,
        },
    }
}

/// The user `container` of `pod` runs as, from its security contexts over the
/// image's `User`, or the message of a `CreateContainerConfigError`.
pub fn run_as(pod: &Pod, container: &Container, image_user: &str) -> Result<RunAs, String> {
    let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let sc = container.security_context.as_ref();
    let run_as_user = sc
        .and_then(|s| s.run_as_user)
        .or_else(|| pod_sc.and_then(|s| s.run_as_user));
    let run_as_group = sc
        .and_then(|s| s.run_as_group)
        .or_else(|| pod_sc.and_then(|s| s.run_as_group));
    let non_root = sc
        .and_then(|s| s.run_as_non_root)
        .or_else(|| pod_sc.and_then(|s| s.run_as_non_root))
        == Some(true);
    let image = parse_image_user(image_user);
    let who = format!(
        "(pod: \"{}/{}\", container: {})",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or(""),
        container.name
    );
    if non_root {
        match (run_as_user, &image.uid) {
            (Some(0), _) => {
                return Err(format!(
                    "container's runAsUser breaks non-root policy {who}"
                ));
            }
            (Some(_), _) => {}
            (None, Ok(0)) => {
                return Err(format!(
                    "container has runAsNonRoot and image will run as root {who}"
                ));
            }
            (None, Ok(_)) => {}
            (None, Err(name)) => {
                return Err(format!(
                    "container has runAsNonRoot and image has non-numeric user ({name}), cannot verify user is non-root {who}"
                ));
            }
        }
    }
    let to_u32 = |id: i64, what: &str| {
        u32::try_from(id).map_err(|_| format!("{what} {id} is out of range {who}"))
    };
    // The process kubelet does not read the image's /etc/passwd or /etc/group.
    let by_name = |name: &str| {
        format!(
            "image user or group {name:?} is not numeric; the process kubelet needs numeric ids {who}"
        )
    };
    let uid = match run_as_user {
        Some(id) => to_u32(id, "runAsUser")?,
        None => image.uid.clone().map_err(|n| by_name(&n))?,
    };
    let gid = match (run_as_group, &image.gid) {
        (Some(id), _) => to_u32(id, "runAsGroup")?,
        (None, Some(Ok(gid))) => *gid,
        (None, Some(Err(name))) => return Err(by_name(name)),
        (None, None) => 0,
    };
    Ok(RunAs { uid, gid })
}

/// Whether the container's root filesystem is mounted read-only.
pub fn read_only_root(container: &Container) -> bool {
    container
        .security_context
        .as_ref()
        .and_then(|s| s.read_only_root_filesystem)
        == Some(true)
}

/// The waiting reason after `previous` failed pulls in a row: the first
/// failure is `ErrImagePull`, the ones after it `ImagePullBackOff`.
pub fn pull_failure_reason(previous: u32) -> &'static str {
    if previous == 0 {
        "ErrImagePull"
    } else {
        "ImagePullBackOff"
    }
}

#[cfg(test)]
mod tests;
