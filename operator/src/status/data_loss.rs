//! Data loss: a member that restarted and came back with no live copy of partitions it
//! owns. Nothing else in the status would say so: the restarted node syncs, joins and
//! reports ready like any other, and the cluster looks Available while the keys it held
//! are gone (at replicationFactor 1 any restart does this; at 2 or more, a restart while
//! every other owner is down too).
//!
//! Two facts decide it, both from the nodes:
//! - a restart: the member reports another incarnation than the one the status recorded
//!   for it, and the status records one only once the node finished its startup sync (so
//!   it held what it owned); a new cluster or a new member has none recorded;
//! - the loss: the restarted node's startup sync found no other member holding a live
//!   copy of some partitions it owns (`partitionsWithoutCopy` in its report).

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};

use crate::crd::{CacheClusterStatus, DataLossStatus, MemberStatus};
use crate::report::{ClusterReport, partition_count};
use crate::scale::{Observed, report_of};

/// How long the DataLoss condition stays True after a loss was detected. The record
/// itself stays in `status.lastDataLoss` until the next one.
pub const RECENT: Duration = Duration::from_secs(3600);

/// At most this many partitions are listed in the status (all are counted).
const MAX_LISTED: usize = 1024;

/// One restart that lost data, found in this reconcile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loss {
    pub member: String,
    pub incarnation: String,
    pub partitions: Vec<u32>,
    pub restarted_at: Option<Timestamp>,
}

impl Loss {
    /// What the event and the condition say: who, when, and which partitions.
    pub fn describe(&self) -> String {
        let when = self
            .restarted_at
            .map(|t| format!(" at {t}"))
            .unwrap_or_default();
        format!(
            "{} restarted{when} with no live copy of {} partitions it owns ({}): the keys they held are lost",
            self.member,
            self.partitions.len(),
            list_partitions(&self.partitions),
        )
    }

    fn status(&self, now: Timestamp) -> DataLossStatus {
        DataLossStatus {
            member: self.member.clone(),
            incarnation: self.incarnation.clone(),
            partitions: self.partitions.iter().copied().take(MAX_LISTED).collect(),
            partition_count: partition_count(self.partitions.len()),
            restarted_at: self.restarted_at.map(Time),
            detected_at: Time(now),
        }
    }
}

/// The incarnation a node reports once it finished its startup sync, if it did.
fn synced_incarnation(report: &ClusterReport) -> Option<&str> {
    let incarnation = report.node.incarnation.as_str();
    (report.node.synced_epoch > 0 && !incarnation.is_empty()).then_some(incarnation)
}

/// The incarnation to record for a member: the one its report shows once synced, else
/// the one recorded before (a restarted node still syncing is compared when it is done).
pub fn incarnation(
    name: &str,
    observed: &Observed,
    previous: Option<&CacheClusterStatus>,
    member: &str,
) -> Option<String> {
    report_of(name, observed, member)
        .and_then(synced_incarnation)
        .map(str::to_owned)
        .or_else(|| recorded(previous, member).cloned())
}

fn recorded<'a>(previous: Option<&'a CacheClusterStatus>, member: &str) -> Option<&'a String> {
    previous?
        .members
        .iter()
        .find(|m| m.name == member)
        .and_then(|m: &MemberStatus| m.incarnation.as_ref())
}

/// The restarts that lost data since the previous status: members with a recorded
/// incarnation whose synced report shows another one and partitions without a copy.
pub fn losses(name: &str, observed: &Observed, previous: Option<&CacheClusterStatus>) -> Vec<Loss> {
    let Some(previous) = previous else {
        return Vec::new();
    };
    previous
        .members
        .iter()
        .filter_map(|member| {
            let before = member.incarnation.as_deref()?;
            let report = report_of(name, observed, &member.name)?;
            let now = synced_incarnation(report)?;
            let partitions = &report.node.partitions_without_copy;
            (now != before && !partitions.is_empty()).then(|| Loss {
                member: member.name.clone(),
                incarnation: now.to_owned(),
                partitions: partitions.clone(),
                restarted_at: started_at(report),
            })
        })
        .collect()
}

fn started_at(report: &ClusterReport) -> Option<Timestamp> {
    let ms = i64::try_from(report.node.started_at_ms).ok()?;
    (ms > 0).then(|| Timestamp::from_millisecond(ms).ok())?
}

/// The record the status keeps: the newest loss found now, else the one kept before.
pub fn last(
    losses: &[Loss],
    previous: Option<&CacheClusterStatus>,
    now: Timestamp,
) -> Option<DataLossStatus> {
    losses
        .last()
        .map(|loss| loss.status(now))
        .or_else(|| previous?.last_data_loss.clone())
}

/// Whether a recorded loss is recent enough for the DataLoss condition to be True.
pub fn is_recent(loss: &DataLossStatus, now: Timestamp) -> bool {
    let window = SignedDuration::try_from(RECENT).unwrap_or(SignedDuration::MAX);
    loss.detected_at
        .0
        .checked_add(window)
        .is_ok_and(|until| now < until)
}

/// "0-3, 7, 9-10" (the first 32 runs; the count says how many there are).
fn list_partitions(partitions: &[u32]) -> String {
    let mut sorted = partitions.to_vec();
    sorted.sort_unstable();
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for p in sorted {
        match runs.last_mut() {
            Some((_, end)) if p == end.saturating_add(1) => *end = p,
            _ => runs.push((p, p)),
        }
    }
    let shown: Vec<String> = runs
        .iter()
        .take(32)
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    let more = if runs.len() > 32 { ", ..." } else { "" };
    format!("{}{more}", shown.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::MemberRole;
    use crate::scale::fixtures::{joined, list, observed};

    fn recorded_status(incarnation: &str) -> CacheClusterStatus {
        CacheClusterStatus {
            members: vec![MemberStatus {
                name: "demo-1".to_owned(),
                role: MemberRole::Member,
                incarnation: Some(incarnation.to_owned()),
                ..MemberStatus::default()
            }],
            ..CacheClusterStatus::default()
        }
    }

    fn restarted(incarnation: &str, synced_epoch: u64, without_copy: Vec<u32>) -> Observed {
        let mut report = joined(1, 3);
        report.node.incarnation = incarnation.to_owned();
        report.node.synced_epoch = synced_epoch;
        report.node.started_at_ms = 1_795_000_000_000;
        report.node.partitions_without_copy = without_copy;
        observed(Some(list(3, &[0, 1], &[])), vec![joined(0, 3), report])
    }

    #[test]
    fn a_restart_without_a_live_copy_is_a_loss_naming_member_partitions_and_time() {
        let previous = recorded_status("old");
        let losses = losses(
            "demo",
            &restarted("new", 3, vec![4, 1, 2, 3, 9]),
            Some(&previous),
        );
        assert_eq!(losses.len(), 1);
        assert_eq!(losses[0].member, "demo-1");
        assert_eq!(losses[0].incarnation, "new");
        assert_eq!(
            losses[0].describe(),
            "demo-1 restarted at 2026-11-18T11:06:40Z with no live copy of 5 partitions it owns (1-4, 9): the keys they held are lost"
        );
    }

    #[test]
    fn no_loss_without_a_restart_a_record_or_a_missing_copy() {
        let previous = recorded_status("same");
        // The same incarnation: no restart.
        assert!(losses("demo", &restarted("same", 3, vec![1]), Some(&previous)).is_empty());
        // A restart that found a live copy of everything.
        assert!(losses("demo", &restarted("new", 3, vec![]), Some(&previous)).is_empty());
        // A new member (nothing recorded): it had nothing to lose.
        let fresh = CacheClusterStatus::default();
        assert!(losses("demo", &restarted("new", 3, vec![1]), Some(&fresh)).is_empty());
        assert!(losses("demo", &restarted("new", 3, vec![1]), None).is_empty());
    }

    #[test]
    fn a_node_still_syncing_is_judged_when_it_is_done() {
        let previous = recorded_status("old");
        let syncing = restarted("new", 0, vec![]);
        assert!(losses("demo", &syncing, Some(&previous)).is_empty());
        // Meanwhile the status keeps the old incarnation, so the restart is still seen.
        assert_eq!(
            incarnation("demo", &syncing, Some(&previous), "demo-1").as_deref(),
            Some("old")
        );
        let synced = restarted("new", 3, vec![7]);
        assert_eq!(
            incarnation("demo", &synced, Some(&previous), "demo-1").as_deref(),
            Some("new")
        );
        assert_eq!(losses("demo", &synced, Some(&previous)).len(), 1);
    }

    #[test]
    fn the_record_is_recent_for_an_hour_and_kept_after() {
        let now: Timestamp = "2026-11-25T10:00:00Z".parse().unwrap();
        let loss = Loss {
            member: "demo-1".to_owned(),
            incarnation: "new".to_owned(),
            partitions: (0..2000).collect(),
            restarted_at: None,
        };
        let record = last(std::slice::from_ref(&loss), None, now).unwrap();
        assert_eq!(record.partitions.len(), MAX_LISTED);
        assert_eq!(record.partition_count, 2000);
        assert!(is_recent(&record, now + SignedDuration::from_mins(59)));
        assert!(!is_recent(&record, now + SignedDuration::from_mins(61)));
        let previous = CacheClusterStatus {
            last_data_loss: Some(record.clone()),
            ..CacheClusterStatus::default()
        };
        assert_eq!(last(&[], Some(&previous), now), Some(record));
    }

    #[test]
    fn partitions_read_as_runs() {
        assert_eq!(list_partitions(&[5, 0, 1, 2, 7, 8]), "0-2, 5, 7-8");
        let many: Vec<u32> = (0..100).map(|p| p * 2).collect();
        assert!(list_partitions(&many).ends_with(", ..."));
    }
}
