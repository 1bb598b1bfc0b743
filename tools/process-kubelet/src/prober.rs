//! Running a container's probes while it runs.
//!
//! One task per container run: the startup probe first (if any), then the
//! liveness and readiness probes side by side, each on its own period,
//! counting from the moment the process started. Verdicts go to the container
//! supervisor as [`ProbeEvent`]s; the task is aborted when the process exits.
//!
//! Checks run from the host, which reaches pod IPs over the bridge. HTTP is a
//! minimal HTTP/1.1 GET (status 200–399 passes); HTTPS is the same GET over TLS
//! without verifying the certificate, as the kubelet does; an `exec` probe runs the
//! command with `nsenter` in the container's mount, UTS and network
//! namespaces, root and working directory, as its user, with its environment.

use std::net::Ipv4Addr;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, MissedTickBehavior};

use super::probe::{Action, ContainerProbes, ProbeKind, ProbeParams, Tracker};

/// A probe verdict that changes the container's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeEvent {
    /// The startup probe passed (or there is none): liveness and readiness begin.
    Started,
    /// The readiness verdict changed; the message of the last check when it failed.
    Ready(bool, String),
    /// The startup or liveness probe failed: restart the container.
    Unhealthy {
        /// Which probe.
        kind: ProbeKind,
        /// The last check's output.
        message: String,
        /// The probe's own termination grace period, if set.
        grace: Option<Duration>,
    },
}

/// Where the checks go.
#[derive(Debug, Clone)]
pub struct ProbeTarget {
    /// The pod's IP (the node's for hostNetwork pods).
    pub ip: Ipv4Addr,
    /// The container process, whose namespaces an exec probe enters.
    pub pid: u32,
    /// The container's environment, for exec probes.
    pub env: Vec<(String, String)>,
    /// The uid and gid of a container from an image (`None`: root).
    pub user: Option<(u32, u32)>,
}

/// Run `probes` against `target` for a container that started at `started`.
/// Returns after a startup or liveness failure; otherwise runs until aborted.
pub async fn run(
    probes: ContainerProbes,
    target: ProbeTarget,
    started: Instant,
    events: mpsc::Sender<ProbeEvent>,
) {
    if let Some(startup) = &probes.startup {
        let mut tracker = Tracker::new(startup);
        let verdict = probe_loop(startup, &target, started, |ok, message| {
            match tracker.observe(ok) {
                Some(true) => Some(None),
                Some(false) => Some(Some(message)),
                None => None,
            }
        })
        .await
        .flatten();
        if let Some(message) = verdict {
            report_unhealthy(&events, ProbeKind::Startup, startup, message).await;
            return;
        }
    }
    if events.send(ProbeEvent::Started).await.is_err() {
        return;
    }
    let readiness = async {
        match &probes.readiness {
            None => {
                let _ = events.send(ProbeEvent::Ready(true, String::new())).await;
                std::future::pending::<()>().await;
            }
            Some(params) => {
                let mut tracker = Tracker::new(params);
                let events = &events;
                probe_loop(params, &target, started, |ok, message| {
                    if let Some(ready) = tracker.observe(ok) {
                        // try_send: the supervisor drains its queue promptly,
                        // and a missed verdict is repeated on the next change
                        let _ = events.try_send(ProbeEvent::Ready(ready, message));
                    }
                    None::<()>
                })
                .await;
            }
        }
    };
    let liveness = async {
        let Some(params) = &probes.liveness else {
            return std::future::pending::<()>().await;
        };
        let mut tracker = Tracker::new(params);
        let failed = probe_loop(params, &target, started, |ok, message| {
            (tracker.observe(ok) == Some(false)).then_some(message)
        })
        .await;
        if let Some(message) = failed {
            report_unhealthy(&events, ProbeKind::Liveness, params, message).await;
        }
    };
    tokio::select! {
        () = readiness => {}
        () = liveness => {}
    }
}

/// Tell the supervisor that the startup or liveness probe failed, so that it
/// restarts the container within the probe's own grace period, if it has one.
async fn report_unhealthy(
    events: &mpsc::Sender<ProbeEvent>,
    kind: ProbeKind,
    params: &ProbeParams,
    message: String,
) {
    let grace = params.termination_grace;
    let _ = events
        .send(ProbeEvent::Unhealthy {
            kind,
            message,
            grace,
        })
        .await;
}

/// Check every period from `started + initial_delay` until `decide` returns Some.
async fn probe_loop<T>(
    params: &ProbeParams,
    target: &ProbeTarget,
    started: Instant,
    mut decide: impl FnMut(bool, String) -> Option<T>,
) -> Option<T> {
    tokio::time::sleep_until(started + params.initial_delay).await;
    let mut ticks = tokio::time::interval(params.period);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let (ok, message) =
            match tokio::time::timeout(params.timeout, check(&params.action, target)).await {
                Ok(Ok(())) => (true, String::new()),
                Ok(Err(message)) => (false, message),
                Err(_) => (false, format!("timed out after {:?}", params.timeout)),
            };
        if !ok {
            tracing::debug!(kind = params.kind.as_str(), %message, "probe failed");
        }
        if let Some(verdict) = decide(ok, message) {
            return Some(verdict);
        }
    }
}

/// One check. `Err` carries the reason it failed.
pub async fn check(action: &Action, target: &ProbeTarget) -> Result<(), String> {
    match action {
        Action::Tcp { host, port } => {
            let host = host.clone().unwrap_or_else(|| target.ip.to_string());
            TcpStream::connect((host.as_str(), *port))
                .await
                .map(drop)
                .map_err(|e| format!("dial tcp {host}:{port}: {e}"))
        }
        Action::Http {
            host,
            port,
            path,
            headers,
            https,
        } => {
            let host = host.clone().unwrap_or_else(|| target.ip.to_string());
            http_get(&host, *port, path, headers, *https).await
        }
        Action::Exec(argv) => exec(target, argv).await,
        Action::Invalid(message) => Err(message.clone()),
    }
}

async fn http_get(
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    https: bool,
) -> Result<(), String> {
    let scheme = if https { "https" } else { "http" };
    let url = format!("{scheme}://{host}:{port}{path}");
    let tcp = TcpStream::connect((host, port))
        .await
        .map_err(|e| format!("Get {url:?}: dial tcp: {e}"))?;
    if https {
        let tls = super::probe_tls::connect(host, tcp)
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        get_status(tls, &url, host, port, path, headers).await
    } else {
        get_status(tcp, &url, host, port, path, headers).await
    }
}

/// Sends the probe's GET on `stream` and judges the status line.
async fn get_status(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    url: &str,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
) -> Result<(), String> {
    let mut request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: kube-probe/1.34\r\nAccept: */*\r\nConnection: close\r\n"
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("Get {url:?}: {e}"))?;
    // The status line is all we need; read until it is complete.
    let mut buf = Vec::with_capacity(256);
    while !buf.contains(&b'\n') && buf.len() < 4096 {
        let mut chunk = [0u8; 256];
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|e| format!("Get {url:?}: {e}"))?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let line = String::from_utf8_lossy(&buf);
    let code: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("Get {url:?}: malformed response"))?;
    if (200..400).contains(&code) {
        Ok(())
    } else {
        Err(format!("HTTP probe failed with statuscode: {code}"))
    }
}

async fn exec(target: &ProbeTarget, argv: &[String]) -> Result<(), String> {
    if argv.is_empty() {
        return Err("exec probe has no command".into());
    }
    let mut nsenter = tokio::process::Command::new("nsenter");
    nsenter
        .arg(format!("--target={}", target.pid))
        .args(["--mount", "--uts", "--net", "--root", "--wd"]);
    if let Some((uid, gid)) = target.user.filter(|ids| *ids != (0, 0)) {
        nsenter.args(["--setuid", &uid.to_string(), "--setgid", &gid.to_string()]);
    }
    let output = nsenter
        .arg("--")
        .args(argv)
        .env_clear()
        .envs(target.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| format!("exec {argv:?}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        let mut out = String::from_utf8_lossy(&output.stdout).into_owned();
        out.push_str(&String::from_utf8_lossy(&output.stderr));
        Err(format!("exec {argv:?}: {}: {}", output.status, out.trim()))
    }
}

#[cfg(test)]
mod tests;
