//! Pod network sandboxes: a network namespace per pod, wired to the bridge.
//!
//! For each pod the kubelet creates `kpod-<id>` with `ip netns add`, a veth
//! pair whose host end `kv<id>` joins the bridge (`kache0`) and whose other end
//! becomes `eth0` inside the namespace, with the pod's IP on the bridge's
//! subnet and a default route via the bridge address. `lo` is brought up.
//! Everything is done with the `ip` command; nothing here needs `unsafe`.
//!
//! Each namespace the kubelet creates is recorded as a marker file in
//! `<state-dir>/netns/`, so a later run (or `cluster.sh down`) can remove the
//! ones a crashed kubelet left behind, together with the processes inside
//! them, which this kubelet started.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::error::{Error, Result};
use super::ipam::Ipv4Cidr;

/// Prefix of every network namespace this kubelet creates.
pub const NETNS_PREFIX: &str = "kpod-";

/// The names of one pod's sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxNames {
    /// Network namespace, `kpod-<10 hex>`.
    pub netns: String,
    /// Host end of the veth pair, `kv<10 hex>` (interface names are at most 15 bytes).
    pub host_veth: String,
}

impl SandboxNames {
    /// Names derived from the pod's UID.
    pub fn for_uid(uid: &str) -> Self {
        let id: String = uid
            .chars()
            .filter(char::is_ascii_hexdigit)
            .take(10)
            .collect();
        SandboxNames {
            netns: format!("{NETNS_PREFIX}{id}"),
            host_veth: format!("kv{id}"),
        }
    }

    /// `/var/run/netns/<netns>`, for `nsenter --net=`.
    pub fn netns_path(&self) -> PathBuf {
        Path::new("/var/run/netns").join(&self.netns)
    }
}

/// Run a host command; its stdout on success, stderr in the error otherwise.
pub async fn command(program: &str, args: &[&str]) -> Result<String> {
    let line = format!("{program} {}", args.join(" "));
    let out = Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| Error::Command {
            command: line.clone(),
            detail: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(Error::Command {
            command: line,
            detail: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

/// The first IPv4 address of `dev` (`ip -4 -o addr show dev kache0`).
pub async fn bridge_address(dev: &str) -> Result<Ipv4Cidr> {
    let out = command("ip", &["-4", "-o", "addr", "show", "dev", dev]).await?;
    parse_inet(&out).ok_or_else(|| Error::Config(format!("bridge {dev} has no IPv4 address")))
}

/// The address after `inet` in `ip -o addr` output.
pub fn parse_inet(output: &str) -> Option<Ipv4Cidr> {
    let mut words = output.split_whitespace();
    words.find(|w| *w == "inet")?;
    words.next()?.parse().ok()
}

/// Create the sandbox: namespace, veth into `bridge`, `ip/prefix` on eth0,
/// default route via `gateway`. Undoes what it did if a step fails.
pub async fn create(
    names: &SandboxNames,
    bridge: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
    markers: &Path,
) -> Result<()> {
    std::fs::create_dir_all(markers).map_err(Error::io(markers))?;
    let marker = markers.join(&names.netns);
    std::fs::write(&marker, b"").map_err(Error::io(&marker))?;
    let result = wire(names, bridge, ip, prefix, gateway).await;
    if result.is_err() {
        delete(names, markers).await;
    }
    result
}

async fn wire(
    names: &SandboxNames,
    bridge: &str,
    ip: Ipv4Addr,
    prefix: u8,
    gateway: Ipv4Addr,
) -> Result<()> {
    let ns = names.netns.as_str();
    let veth = names.host_veth.as_str();
    let addr = format!("{ip}/{prefix}");
    let gw = gateway.to_string();
    command("ip", &["netns", "add", ns]).await?;
    command(
        "ip",
        &[
            "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
        ],
    )
    .await?;
    command("ip", &["link", "set", veth, "master", bridge, "up"]).await?;
    command("ip", &["-n", ns, "link", "set", "lo", "up"]).await?;
    command("ip", &["-n", ns, "addr", "add", &addr, "dev", "eth0"]).await?;
    command("ip", &["-n", ns, "link", "set", "eth0", "up"]).await?;
    command("ip", &["-n", ns, "route", "add", "default", "via", &gw]).await?;
    Ok(())
}

/// Remove the sandbox: SIGKILL any process still inside (all started by this
/// kubelet), delete the namespace (which destroys the veth pair) and the marker.
/// Best effort; failures are logged.
pub async fn delete(names: &SandboxNames, markers: &Path) {
    kill_remaining(&names.netns).await;
    if let Err(e) = command("ip", &["netns", "del", &names.netns]).await
        && names.netns_path().exists()
    {
        tracing::warn!(netns = %names.netns, error = %e, "could not delete network namespace");
    }
    // Normally gone with the namespace; only an interrupted create leaves it.
    let _ = command("ip", &["link", "del", &names.host_veth]).await;
    let _ = std::fs::remove_file(markers.join(&names.netns));
}

/// SIGKILL the processes in network namespace `netns`.
async fn kill_remaining(netns: &str) {
    let Ok(pids) = command("ip", &["netns", "pids", netns]).await else {
        return;
    };
    for pid in pids
        .split_whitespace()
        .filter_map(|p| p.parse::<i32>().ok())
    {
        if let Some(pid) = rustix::process::Pid::from_raw(pid) {
            tracing::warn!(
                netns,
                pid = pid.as_raw_nonzero().get(),
                "killing leftover process"
            );
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
    }
}

/// Remove every sandbox recorded in `markers` (left by an earlier run, or by
/// this one if a pod worker could not clean up).
pub async fn cleanup_recorded(markers: &Path) {
    let Ok(entries) = std::fs::read_dir(markers) else {
        return;
    };
    for entry in entries.flatten() {
        let netns = entry.file_name().to_string_lossy().into_owned();
        let Some(id) = netns.strip_prefix(NETNS_PREFIX) else {
            continue;
        };
        tracing::info!(%netns, "removing network namespace left behind");
        delete(
            &SandboxNames {
                netns: netns.clone(),
                host_veth: format!("kv{id}"),
            },
            markers,
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits() {
        let n = SandboxNames::for_uid("0f3c2a9b-77d1-4e2a-9c1b-5d6e7f809a1b");
        assert_eq!(n.netns, "kpod-0f3c2a9b77");
        assert_eq!(n.host_veth, "kv0f3c2a9b77");
        assert!(n.host_veth.len() <= 15);
        assert_eq!(n.netns_path(), Path::new("/var/run/netns/kpod-0f3c2a9b77"));
    }

    #[test]
    fn parses_ip_addr_output() {
        let out = "7: kache0    inet 10.88.0.1/16 brd 10.88.255.255 scope global kache0\\       valid_lft forever preferred_lft forever\n";
        let cidr = parse_inet(out).unwrap();
        assert_eq!(cidr.addr(), Ipv4Addr::new(10, 88, 0, 1));
        assert_eq!(cidr.prefix(), 16);
        assert_eq!(parse_inet(""), None);
    }
}
