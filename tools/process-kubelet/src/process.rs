//! Container processes: how one is launched, signalled and reaped.
//!
//! A container is a host process in the pod's network namespace with a
//! private mount namespace of its own, in which the pod's volumes are bind
//! mounted at their `mountPath`s (the service-account token at
//! `/var/run/secrets/kubernetes.io/serviceaccount` among them) and the pod's
//! `/etc/hosts` replaces the host's. The mounts are invisible to the host and
//! vanish with the process. The launch is a chain of execs that keeps one PID
//! from start to finish:
//!
//! ```text
//! unshare --mount --uts --propagation private --   (new mount + UTS namespaces)
//!   bash -c 'mount --bind ...; hostname; cd; exec env -u ... nsenter --net=/var/run/netns/kpod-x -- "$@"'
//!     <argv>                                         (the container's program)
//! ```
//!
//! A container from an image also gets its own root: the script binds the
//! unpacked image onto itself (read-only for `readOnlyRootFilesystem`), mounts
//! `/proc`, a `/dev` with the usual devices and a read-only `/sys` in it, puts
//! the volumes under it, and `nsenter --root --wd --setuid --setgid` enters it
//! as the container's user after joining the network namespace, so the
//! program runs chrooted, with no capabilities unless its user is root.
//!
//! The process leads its own process group; stopping it sends SIGTERM to the
//! group, waits for the grace period, then SIGKILLs the group. The kubelet
//! only ever signals process groups it created, by PID, while it still holds
//! the unreaped child.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::process::{Child, Command};

use super::error::{Error, Result};

/// A bind mount inside the container's mount namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Host path (a volume directory or file).
    pub source: PathBuf,
    /// Path the container sees.
    pub target: PathBuf,
    /// Mount read-only.
    pub read_only: bool,
}

/// A container's own root filesystem: its image, unpacked on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootFs {
    /// The unpacked image.
    pub path: PathBuf,
    /// Bind it read-only (`readOnlyRootFilesystem`); volumes stay as mounted.
    pub read_only: bool,
    /// User id the program runs as.
    pub uid: u32,
    /// Group id the program runs as (no supplementary groups).
    pub gid: u32,
}

/// Devices a container's `/dev` gets, bound from the host's.
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// Everything needed to start one container run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchSpec {
    /// Program and arguments.
    pub argv: Vec<String>,
    /// The complete environment (nothing else is inherited).
    pub env: Vec<(String, String)>,
    /// `workingDir`, if set (inside the root filesystem when there is one).
    pub working_dir: Option<String>,
    /// The container's own root, or `None` to run on the host's filesystem.
    pub rootfs: Option<RootFs>,
    /// Bind mounts, parents before children.
    pub mounts: Vec<Mount>,
    /// The UTS hostname.
    pub hostname: String,
    /// `/var/run/netns/<name>`; `None` for hostNetwork pods.
    pub netns: Option<PathBuf>,
    /// Where stdout and stderr go (appended).
    pub log: PathBuf,
    /// The program lies under a mount target (an emptyDir at /tmp, say, with the
    /// binary under /tmp): open it before mounting and exec it through the open file.
    pub open_program_first: bool,
}

/// Single-quote `s` for bash.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Absolute path of a host tool, searched in the kubelet's own PATH, so the
/// wrapper does not depend on the container's PATH.
pub fn host_tool(name: &str) -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/sbin", "/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .map_or_else(|| name.to_string(), |p| p.display().to_string())
}

/// The bash script that runs inside the new mount namespace. The container's
/// argv follows as `"$@"`, so it is never re-parsed by the shell.
pub fn wrapper_script(spec: &LaunchSpec, mount: &str, env: &str, nsenter: &str) -> String {
    let mut s = String::from("set -e\n");
    if spec.open_program_first {
        // /proc/self/fd/9 still names the file after a mount hides its path; env and
        // nsenter keep the descriptor open across their execs.
        s.push_str("exec 9<\"$1\"\nshift\nset -- /proc/self/fd/9 \"$@\"\n");
    }
    if let Some(root) = &spec.rootfs {
        s.push_str(&root_mounts(root, mount));
    }
    for m in &spec.mounts {
        let ro = if m.read_only { " -o ro" } else { "" };
        s.push_str(&format!(
            "{mount} --bind{ro} -- {} {}\n",
            shell_quote(&m.source.display().to_string()),
            shell_quote(&in_root(spec, &m.target))
        ));
    }
    if let Some(root) = spec.rootfs.as_ref().filter(|r| r.read_only) {
        // Last: the mount points above had to be created first.
        let path = shell_quote(&root.path.display().to_string());
        s.push_str(&format!("{mount} -o remount,bind,ro -- {path}\n"));
    }
    s.push_str(&format!(
        "printf %s {} > /proc/sys/kernel/hostname\n",
        shell_quote(&spec.hostname)
    ));
    if let (Some(dir), None) = (&spec.working_dir, &spec.rootfs) {
        s.push_str(&format!("cd -- {}\n", shell_quote(dir)));
    }
    // bash adds PWD, OLDPWD and SHLVL to the environment; the container must not see them.
    s.push_str(&format!("exec {env} -u SHLVL -u PWD -u OLDPWD"));
    if spec.netns.is_some() || spec.rootfs.is_some() {
        s.push_str(&format!(" {nsenter}"));
    }
    if let Some(netns) = &spec.netns {
        s.push_str(&format!(
            " {}",
            shell_quote(&format!("--net={}", netns.display()))
        ));
    }
    if let Some(root) = &spec.rootfs {
        // nsenter opens --wd before it changes root: the host path of the directory.
        let wd = in_root(spec, Path::new(spec.working_dir.as_deref().unwrap_or("/")));
        s.push_str(&format!(
            " {} {}",
            shell_quote(&format!("--root={}", root.path.display())),
            shell_quote(&format!("--wd={wd}"))
        ));
        if (root.uid, root.gid) != (0, 0) {
            s.push_str(&format!(" --setuid {} --setgid {}", root.uid, root.gid));
        }
    }
    if spec.netns.is_some() || spec.rootfs.is_some() {
        s.push_str(" --");
    }
    s.push_str(" \"$@\"\n");
    s
}

/// `path` as the script sees it: under the container's root, if it has one.
fn in_root(spec: &LaunchSpec, path: &Path) -> String {
    match &spec.rootfs {
        Some(root) => root
            .path
            .join(path.strip_prefix("/").unwrap_or(path))
            .display()
            .to_string(),
        None => path.display().to_string(),
    }
}

/// The mounts every container root gets: the root bound onto itself (so it can
/// be made read-only on its own), `/proc`, a small `/dev`, a read-only `/sys`.
/// Their mount points exist: the kubelet creates them when it unpacks the image.
fn root_mounts(root: &RootFs, mount: &str) -> String {
    let r = shell_quote(&root.path.display().to_string());
    let mut s = format!("{mount} --bind -- {r} {r}\n");
    s.push_str(&format!(
        "{mount} -t proc -o nosuid,nodev,noexec proc {r}/proc\n"
    ));
    s.push_str(&format!(
        "{mount} -t tmpfs -o nosuid,mode=755,size=64k tmpfs {r}/dev\n"
    ));
    for dev in DEVICES {
        s.push_str(&format!(
            ": > {r}/dev/{dev}\n{mount} --bind -- /dev/{dev} {r}/dev/{dev}\n"
        ));
    }
    s.push_str(&format!("{mount} --bind -o ro -- /sys {r}/sys\n"));
    s
}

/// The full command line of a launch: `unshare ... bash -c SCRIPT kache-container ARGV...`.
pub fn launch_argv(spec: &LaunchSpec) -> Vec<String> {
    let script = wrapper_script(
        spec,
        &host_tool("mount"),
        &host_tool("env"),
        &host_tool("nsenter"),
    );
    let mut argv = vec![
        host_tool("unshare"),
        "--mount".into(),
        "--uts".into(),
        "--propagation".into(),
        "private".into(),
        "--".into(),
        host_tool("bash"),
        "-c".into(),
        script,
        "kache-container".into(),
    ];
    argv.extend(spec.argv.iter().cloned());
    argv
}

/// A running container process.
#[derive(Debug)]
pub struct Process {
    child: Child,
    pid: u32,
    exited: Option<ExitStatus>,
}

impl Process {
    /// Start `spec`. A header line with the argv goes to the log first.
    pub fn spawn(spec: &LaunchSpec, header: &str) -> Result<Self> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(Error::io(&spec.log))?;
        let _ = writeln!(log, "==== {header}: {:?}", spec.argv);
        let stderr = log.try_clone().map_err(Error::io(&spec.log))?;
        let argv = launch_argv(spec);
        let child = Command::new(&argv[0])
            .args(&argv[1..])
            .env_clear()
            .envs(spec.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(stderr))
            .process_group(0)
            // Only if a supervisor task is torn down without stopping its
            // process (it always stops it otherwise): do not leave it running.
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| Error::Command {
                command: argv[0].clone(),
                detail: e.to_string(),
            })?;
        let pid = child.id().ok_or_else(|| Error::Command {
            command: argv[0].clone(),
            detail: "no pid".into(),
        })?;
        Ok(Process {
            child,
            pid,
            exited: None,
        })
    }

    /// The PID, which is also the process group id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Wait for the process to exit (cancel-safe). The rest of its process
    /// group is killed right after, as a runtime kills a container's other
    /// processes when its main process ends.
    pub async fn wait(&mut self) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        let status = match self.child.wait().await {
            Ok(status) => status,
            Err(e) => {
                tracing::warn!(pid = self.pid, error = %e, "wait failed; treating the process as killed");
                ExitStatus::from_raw(9)
            }
        };
        self.exited = Some(status);
        self.signal_group(Signal::KILL);
        status
    }

    /// Signal the process group, unless the process has been reaped (its PID
    /// could then belong to someone else).
    fn signal_group(&self, signal: Signal) {
        let Some(pid) = i32::try_from(self.pid).ok().and_then(Pid::from_raw) else {
            return;
        };
        if let Err(e) = kill_process_group(pid, signal)
            && e != rustix::io::Errno::SRCH
        {
            tracing::debug!(pid = self.pid, error = %e, "signal failed");
        }
    }

    /// SIGTERM the group, wait up to `grace`, then SIGKILL it.
    pub async fn stop(&mut self, grace: Duration) -> ExitStatus {
        if let Some(status) = self.exited {
            return status;
        }
        self.signal_group(Signal::TERM);
        if let Ok(status) = tokio::time::timeout(grace, self.child.wait()).await {
            let status = status.unwrap_or_else(|_| ExitStatus::from_raw(9));
            self.exited = Some(status);
            self.signal_group(Signal::KILL);
            return status;
        }
        tracing::info!(pid = self.pid, ?grace, "grace period over; SIGKILL");
        self.signal_group(Signal::KILL);
        self.wait().await
    }
}

/// `(exit code, signal)` the way Kubernetes reports them: a signal N shows as 128+N.
pub fn exit_info(status: ExitStatus) -> (i32, Option<i32>) {
    match (status.code(), status.signal()) {
        (Some(code), _) => (code, None),
        (None, Some(sig)) => (128 + sig, Some(sig)),
        (None, None) => (-1, None),
    }
}

/// Whether `path` exists as a file or directory (for [`super::images`]).
pub fn exists(path: &Path) -> bool {
    path.exists()
}

#[cfg(test)]
mod tests;
