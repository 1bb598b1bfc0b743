//! `kubectl kache status NAME`: one screen from the CacheCluster's status (what the
//! operator concluded) and each ready pod's own view (`GET /v1/cluster`, `GET /v1/stats`,
//! what the node says now): the phase, the move in progress, a row per member and the
//! conditions.
//!
//! [`render`] is pure (it takes the time as an argument) so its output is tested as
//! golden text; [`views`] is the only part that talks to the pods.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;
use kache_api::report::{ClusterReport, Role};
use kache_operator::crd::{CacheCluster, CacheClusterStatus, MemberRole, RebalanceStatus};
use kube::ResourceExt;
use serde::Deserialize;

use crate::format::{age, bytes, percent, table};
use crate::proxy::{NodeClient, PodPort};

/// What one ready pod said of itself.
#[derive(Debug, Clone)]
pub struct PodView {
    pub pod: String,
    /// `GET /v1/cluster`, or why it could not be had.
    pub report: Result<ClusterReport, String>,
    /// `GET /v1/stats` (needs a read token), or why not (empty when the screen says it
    /// once for every pod).
    pub memory: Result<Memory, String>,
}

/// Bytes charged against the node's bound, and the bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Memory {
    #[serde(rename = "bytes")]
    pub used: u64,
    #[serde(rename = "max_memory")]
    pub max: u64,
}

/// Asks every pod of `ports` for its view, all at once.
pub async fn views(node: &NodeClient, ports: &[PodPort]) -> Vec<PodView> {
    join_all(ports.iter().map(|port| async move {
        let (report, memory) = futures::join!(
            node.get_json::<ClusterReport>(port, "/v1/cluster", "a cluster report"),
            node.get_json::<Memory>(port, "/v1/stats", "node stats"),
        );
        PodView {
            pod: port.pod.clone(),
            report: report.map_err(|e| e.to_string()),
            memory: memory.map_err(|e| e.to_string()),
        }
    }))
    .await
}

/// The status screen of `cc` with the pods' `views`, at time `now`.
pub fn render(cc: &CacheCluster, views: &[PodView], now: Timestamp) -> String {
    let empty = CacheClusterStatus::default();
    let status = cc.status.as_ref().unwrap_or(&empty);
    let mut out = String::new();
    let namespace = cc.namespace().unwrap_or_default();
    let _ = writeln!(
        out,
        "CacheCluster {namespace}/{}: {}",
        cc.name_any(),
        status.phase.as_str()
    );
    let _ = writeln!(
        out,
        "  epoch {}, {} of {} members joined, {} pods ready, {} partitions, replication factor {}",
        status.epoch,
        status.replicas,
        cc.spec.replicas,
        status.ready_replicas,
        cc.spec.partitions,
        replication_factor(cc),
    );
    let auth = status.auth.as_ref().map_or_else(
        || "unknown".to_owned(),
        |a| match &a.secret_name {
            Some(secret) => format!("{:?} (admin token in Secret {secret})", a.mode),
            None => format!("{:?}", a.mode),
        },
    );
    let tls = status.tls.as_ref().map_or_else(
        || "unknown".to_owned(),
        |t| format!("peer {:?}, client {:?}", t.peer, t.client),
    );
    let _ = writeln!(out, "  auth {auth}; TLS {tls}");

    out.push('\n');
    out.push_str(&rebalance_line(status.rebalance.as_ref(), now));

    out.push_str("\nMEMBERS\n");
    out.push_str(&members_table(status, views));

    let problems: Vec<String> = views
        .iter()
        .flat_map(|v| {
            let report = v.report.as_ref().err().map(|e| format!("{}: {e}", v.pod));
            let memory = v
                .memory
                .as_ref()
                .err()
                .filter(|e| v.report.is_ok() && !e.is_empty())
                .map(|e| format!("{}: memory unknown: {e}", v.pod));
            report.into_iter().chain(memory)
        })
        .collect();
    if !problems.is_empty() {
        out.push('\n');
        for problem in problems {
            let _ = writeln!(out, "! {problem}");
        }
    }

    if !status.conditions.is_empty() {
        out.push_str("\nCONDITIONS\n");
        let rows: Vec<Vec<String>> = status
            .conditions
            .iter()
            .map(|c| {
                vec![
                    c.type_.clone(),
                    c.status.clone(),
                    c.reason.clone(),
                    age(now, c.last_transition_time.0),
                    c.message.clone(),
                ]
            })
            .collect();
        out.push_str(&table(
            &["TYPE", "STATUS", "REASON", "AGE", "MESSAGE"],
            &rows,
        ));
    }

    if let Some(loss) = &status.last_data_loss {
        let _ = writeln!(
            out,
            "\nDATA LOSS ({} incidents): {} restarted {} ago with no live copy of {} partitions",
            status.data_loss_incidents,
            loss.member,
            age(now, loss.detected_at.0),
            loss.partition_count
        );
    }
    out
}

fn replication_factor(cc: &CacheCluster) -> String {
    match cc.spec.replication_factor() {
        kache_operator::members::ReplicationFactor::Count(n) => n.to_string(),
        kache_operator::members::ReplicationFactor::All(_) => "all".to_owned(),
    }
}

/// The move in progress, or the last one.
fn rebalance_line(rebalance: Option<&RebalanceStatus>, now: Timestamp) -> String {
    let Some(r) = rebalance else {
        return "No rebalance yet.\n".to_owned();
    };
    let streamed = format!(
        "{} and {} records streamed",
        bytes(r.bytes_moved),
        r.records_moved
    );
    let started = r.started_at.as_ref().map(|t| t.0);
    if r.active && r.partitions_total == 0 {
        // The operator counts a move's partitions from the members' reports; until they
        // come, there is no fraction to show (it is not 0/0 done).
        let running = started.map_or_else(String::new, |t| format!(", running {}", age(now, t)));
        format!(
            "Rebalancing epoch {} -> {}: partitions not counted yet (the members' rows show their pulls){running}\n",
            r.from_epoch, r.to_epoch,
        )
    } else if r.active {
        let running = started.map_or_else(String::new, |t| format!(", running {}", age(now, t)));
        format!(
            "Rebalancing epoch {} -> {}: {}/{} partitions moved ({}), {streamed}{running}\n",
            r.from_epoch,
            r.to_epoch,
            r.partitions_moved,
            r.partitions_total,
            percent(r.partitions_moved, r.partitions_total),
        )
    } else {
        let took = match (started, r.completed_at.as_ref()) {
            (Some(start), Some(end)) => format!(" in {}", age(end.0, start)),
            _ => String::new(),
        };
        let when = r
            .completed_at
            .as_ref()
            .map_or_else(String::new, |t| format!(", {} ago", age(now, t.0)));
        format!(
            "Last rebalance epoch {} -> {}: {} partitions moved{took}, {streamed}{when}\n",
            r.from_epoch, r.to_epoch, r.partitions_moved
        )
    }
}

/// A row per pod the operator lists as a member (or a former or future one) or that
/// answered: the operator's role and state, the node's own epoch, ownership and memory.
fn members_table(status: &CacheClusterStatus, views: &[PodView]) -> String {
    let by_pod: BTreeMap<&str, &PodView> = views.iter().map(|v| (v.pod.as_str(), v)).collect();
    let mut names: Vec<&str> = status.members.iter().map(|m| m.name.as_str()).collect();
    for view in views {
        if !names.contains(&view.pod.as_str()) {
            names.push(&view.pod);
        }
    }
    let rows: Vec<Vec<String>> = names
        .into_iter()
        .map(|name| {
            let member = status.members.iter().find(|m| m.name == name);
            let report = by_pod.get(name).and_then(|v| v.report.as_ref().ok());
            let memory = by_pod.get(name).and_then(|v| v.memory.as_ref().ok());
            let role = match (report, member) {
                (Some(r), _) => role_word(r.node.role).to_owned(),
                (None, Some(m)) => format!("{:?}", m.role).to_lowercase(),
                (None, None) => "-".to_owned(),
            };
            let dash = || "-".to_owned();
            vec![
                name.to_owned(),
                report.map_or_else(dash, |r| r.node.id.clone()),
                role,
                report
                    .map(|r| r.epoch)
                    .or_else(|| member.and_then(|m| m.epoch))
                    .map_or_else(dash, |e| e.to_string()),
                report.map_or_else(
                    || member.map_or_else(dash, |m| m.owned_partitions.to_string()),
                    |r| r.ownership.owned.to_string(),
                ),
                report.map_or_else(dash, |r| r.ownership.pending.to_string()),
                report.map_or_else(
                    || member.map_or_else(dash, |m| m.held_not_owned.to_string()),
                    |r| r.ownership.held_not_owned.to_string(),
                ),
                memory.map_or_else(dash, |m| {
                    format!(
                        "{} / {} ({})",
                        bytes(m.used),
                        bytes(m.max),
                        percent(m.used, m.max)
                    )
                }),
                state(
                    member.map(|m| (m.role, m.settled, m.reachable)),
                    by_pod.get(name).copied(),
                ),
            ]
        })
        .collect();
    table(
        &[
            "POD", "NODE", "ROLE", "EPOCH", "OWNED", "PENDING", "HELD", "MEMORY", "STATE",
        ],
        &rows,
    )
}

fn role_word(role: Role) -> &'static str {
    match role {
        Role::Member => "member",
        Role::Departing => "departing",
        Role::Absent => "absent",
    }
}

/// One word or two for where a pod is: from its own view when it answered, else from
/// what the operator last saw.
fn state(member: Option<(MemberRole, bool, bool)>, view: Option<&PodView>) -> String {
    match view.map(|v| &v.report) {
        Some(Ok(report)) if report.rebalance.active => {
            let p = &report.rebalance.progress;
            let waiting = p
                .waiting_for
                .as_ref()
                .map_or_else(String::new, |w| format!(", waiting for {w}"));
            format!(
                "pulling {}/{}{waiting}",
                p.partitions_done, p.partitions_total
            )
        }
        Some(Ok(report)) if !report.node.ready => "syncing".to_owned(),
        Some(Ok(report)) if report.node.role == Role::Departing => {
            if report.ownership.held_not_owned > 0 {
                "handing off".to_owned()
            } else {
                "drained".to_owned()
            }
        }
        Some(Ok(report)) if report.node.role == Role::Absent => "waiting to join".to_owned(),
        Some(Ok(_)) => "ready".to_owned(),
        Some(Err(_)) => "no answer".to_owned(),
        None => match member {
            Some((MemberRole::Joining, _, _)) => "starting".to_owned(),
            Some((_, _, false)) => "unreachable".to_owned(),
            Some((MemberRole::Departing, true, _)) => "drained".to_owned(),
            _ => "pod not ready".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests;
