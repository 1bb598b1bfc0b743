//! `kubectl kache watch NAME`: follows the CacheCluster (a Kubernetes watch, no polling
//! of the pods) and shows a rebalance as it runs: a line per phase change and a progress
//! bar of partitions moved of those to move. It ends once a move is over and the
//! cluster is Available and idle again, on Ctrl-C, or after `--timeout`; the
//! CacheCluster's deletion ends it with an error.
//!
//! [`Follow`] decides from successive statuses what to show; it is pure and tested on
//! status sequences. A move counts as seen when a rebalance was active, the phase was
//! one of a move's, or the epoch changed since the watch began: a move quicker than the
//! watch's updates still ends the watch.

use std::io::IsTerminal;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use k8s_openapi::jiff::Timestamp;
use kache_operator::crd::{CacheClusterStatus, Phase};
use kube::runtime::watcher;

use crate::error::{Error, Result};
use crate::format::{bytes, duration, percent};
use crate::target::Connection;

/// What a new status means for the screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The phase changed (`from` is None on the first status).
    Phase {
        from: Option<Phase>,
        to: Phase,
        epoch: u64,
        joined: i32,
        desired: i32,
    },
    /// A move is running: partitions moved of total.
    Progress {
        from_epoch: u64,
        to_epoch: u64,
        moved: u64,
        total: u64,
    },
    /// The move is over and the cluster Available and idle.
    Done {
        from_epoch: u64,
        to_epoch: u64,
        moved: u64,
        bytes: u64,
        records: u64,
        seconds: Option<u64>,
    },
}

/// The watch's memory of what it has shown.
#[derive(Debug, Default)]
pub struct Follow {
    phase: Option<Phase>,
    first_epoch: Option<u64>,
    progress: Option<(u64, u64)>,
    saw_move: bool,
}

impl Follow {
    /// The events of one new status (of a cluster that wants `desired` members).
    pub fn observe(&mut self, status: &CacheClusterStatus, desired: i32) -> Vec<Event> {
        let mut events = Vec::new();
        if self.phase != Some(status.phase) {
            events.push(Event::Phase {
                from: self.phase,
                to: status.phase,
                epoch: status.epoch,
                joined: status.replicas,
                desired,
            });
            self.phase = Some(status.phase);
        }
        let first_epoch = *self.first_epoch.get_or_insert(status.epoch);
        let rebalance = status.rebalance.as_ref();
        let active = rebalance.is_some_and(|r| r.active);
        if active
            || status.epoch != first_epoch
            || matches!(status.phase, Phase::Rebalancing | Phase::ScaleDownBlocked)
        {
            self.saw_move = true;
        }
        // A move whose size is not known yet (0 of 0: the operator has not published the
        // new member list) has no progress to show.
        if let Some(r) = rebalance.filter(|r| r.active && r.partitions_total > 0) {
            let now = (r.partitions_moved, r.partitions_total);
            if self.progress != Some(now) {
                self.progress = Some(now);
                events.push(Event::Progress {
                    from_epoch: r.from_epoch,
                    to_epoch: r.to_epoch,
                    moved: r.partitions_moved,
                    total: r.partitions_total,
                });
            }
        }
        if self.saw_move && status.phase == Phase::Available && !active {
            let r = rebalance.cloned().unwrap_or_default();
            let seconds = match (&r.started_at, &r.completed_at) {
                (Some(start), Some(end)) => {
                    u64::try_from(end.0.as_second() - start.0.as_second()).ok()
                }
                _ => None,
            };
            events.push(Event::Done {
                from_epoch: r.from_epoch,
                to_epoch: r.to_epoch,
                moved: r.partitions_moved,
                bytes: r.bytes_moved,
                records: r.records_moved,
                seconds,
            });
        }
        events
    }
}

/// The line a phase change or the end of a move prints (None for progress, which the
/// bar shows), stamped with `at`.
pub fn line(event: &Event, at: Timestamp) -> Option<String> {
    let clock = at.strftime("%H:%M:%S");
    match event {
        Event::Phase {
            from,
            to,
            epoch,
            joined,
            desired,
        } => {
            let change = from.map_or_else(
                || to.as_str().to_owned(),
                |from| format!("{} -> {}", from.as_str(), to.as_str()),
            );
            Some(format!(
                "{clock}  {change}  (epoch {epoch}, {joined} of {desired} members joined)"
            ))
        }
        Event::Progress { .. } => None,
        Event::Done {
            from_epoch,
            to_epoch,
            moved,
            bytes: streamed,
            records,
            seconds,
        } => {
            let took = seconds.map_or_else(String::new, |s| format!(" in {}", duration(s)));
            Some(format!(
                "{clock}  done: epoch {from_epoch} -> {to_epoch}, {moved} partitions moved{took} ({} and {records} records streamed)",
                bytes(*streamed)
            ))
        }
    }
}

/// The text of a progress line where there is no terminal to draw a bar on.
pub fn progress_line(from_epoch: u64, to_epoch: u64, moved: u64, total: u64) -> String {
    format!(
        "epoch {from_epoch} -> {to_epoch}: {moved}/{total} partitions moved ({})",
        percent(moved, total)
    )
}

/// Follows CacheCluster `name` until a move ends, Ctrl-C, or `timeout`.
pub async fn run(connection: &Connection, name: &str, timeout: Option<Duration>) -> Result<()> {
    // A plain get first: a wrong name or a missing CRD gets its own message.
    let cc = connection.cache_cluster(name).await?;
    let mut desired = cc.spec.replicas;
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut updates = watcher(connection.cache_clusters(), config).boxed();
    let screen = Screen::new();
    let mut follow = Follow::default();
    let deadline = tokio::time::sleep(timeout.unwrap_or(Duration::MAX / 4));
    tokio::pin!(deadline);
    // The first status is the one the get returned; the watch repeats it, harmlessly.
    let mut next = cc.status.unwrap_or_default();
    let mut first = true;
    loop {
        for event in follow.observe(&next, desired) {
            let done = matches!(event, Event::Done { .. });
            screen.show(&event);
            if done {
                screen.finish();
                return Ok(());
            }
        }
        if std::mem::take(&mut first) && !follow.saw_move {
            screen.print("waiting for a membership change (kubectl scale); Ctrl-C stops");
        }
        tokio::select! {
            update = updates.next() => match update {
                Some(Ok(watcher::Event::Apply(cc) | watcher::Event::InitApply(cc))) => {
                    desired = cc.spec.replicas;
                    next = cc.status.unwrap_or_default();
                }
                Some(Ok(watcher::Event::Delete(_))) => {
                    screen.finish();
                    return Err(Error::NoSuchCluster {
                        namespace: connection.namespace.clone(),
                        name: name.to_owned(),
                    });
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(e)) => {
                    screen.finish();
                    return Err(Error::Kube {
                        action: format!("watch CacheCluster {}/{name}", connection.namespace),
                        source: watcher_error(e),
                    });
                }
                None => return Ok(()),
            },
            _ = tokio::signal::ctrl_c() => {
                screen.finish();
                return Ok(());
            }
            () = &mut deadline => {
                screen.finish();
                return Err(Error::Timeout {
                    what: "the rebalance",
                    seconds: timeout.map_or(0, |t| t.as_secs()),
                });
            }
        }
    }
}

fn watcher_error(error: watcher::Error) -> kube::Error {
    match error {
        watcher::Error::InitialListFailed(e)
        | watcher::Error::WatchStartFailed(e)
        | watcher::Error::WatchFailed(e) => e,
        other => kube::Error::Service(Box::new(other)),
    }
}

/// Where the watch draws: a bar on a terminal, lines otherwise (a log, a pipe).
struct Screen {
    bar: ProgressBar,
    terminal: bool,
}

impl Screen {
    fn new() -> Self {
        let terminal = std::io::stdout().is_terminal();
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden());
        Self { bar, terminal }
    }

    fn show(&self, event: &Event) {
        if let Event::Progress {
            from_epoch,
            to_epoch,
            moved,
            total,
        } = *event
        {
            if !self.terminal {
                self.print(&progress_line(from_epoch, to_epoch, moved, total));
                return;
            }
            self.bar
                .set_prefix(format!("epoch {from_epoch} -> {to_epoch}"));
            self.bar.set_length(total);
            self.bar.set_position(moved);
            if self.bar.is_hidden() {
                // Drawn from the first progress on, and timed from then.
                self.bar.reset_elapsed();
                let style = ProgressStyle::with_template(
                    "{prefix} [{bar:40.cyan/blue}] {pos}/{len} partitions ({percent}%) {elapsed}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> ");
                self.bar.set_style(style);
                self.bar.set_draw_target(ProgressDrawTarget::stdout());
            }
            return;
        }
        if let Event::Done { moved, .. } = *event {
            // The last status said Available, not the last partitions moved.
            self.bar.set_position(moved);
        }
        if let Some(text) = line(event, Timestamp::now()) {
            self.print(&text);
        }
    }

    /// A line above the bar (or alone, without one).
    fn print(&self, text: &str) {
        if self.bar.is_hidden() {
            println!("{text}");
        } else {
            self.bar.println(text);
        }
    }

    fn finish(&self) {
        if !self.bar.is_hidden() {
            self.bar.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kache_operator::crd::RebalanceStatus;

    fn status(phase: Phase, epoch: u64, rebalance: Option<(bool, u64, u64)>) -> CacheClusterStatus {
        CacheClusterStatus {
            phase,
            epoch,
            replicas: 3,
            rebalance: rebalance.map(|(active, moved, total)| RebalanceStatus {
                active,
                from_epoch: 4,
                to_epoch: 5,
                partitions_moved: moved,
                partitions_total: total,
                bytes_moved: 3 * 1024 * 1024,
                records_moved: 1200,
                started_at: Some(Time(Timestamp::from_second(100).expect("time"))),
                completed_at: (!active).then(|| Time(Timestamp::from_second(114).expect("time"))),
                ..RebalanceStatus::default()
            }),
            ..CacheClusterStatus::default()
        }
    }

    #[test]
    fn a_move_of_unknown_size_shows_no_progress_yet() {
        let mut follow = Follow::default();
        follow.observe(&status(Phase::Available, 1, Some((false, 0, 0))), 5);
        let starting = follow.observe(&status(Phase::Rebalancing, 1, Some((true, 0, 0))), 5);
        assert!(
            !starting
                .iter()
                .any(|event| matches!(event, Event::Progress { .. })),
            "{starting:?}"
        );
    }

    #[test]
    fn a_scale_shows_phases_progress_and_ends_when_idle() {
        let mut follow = Follow::default();
        let idle = status(Phase::Available, 4, Some((false, 90, 90)));
        let first = follow.observe(&idle, 3);
        assert_eq!(
            first,
            [Event::Phase {
                from: None,
                to: Phase::Available,
                epoch: 4,
                joined: 3,
                desired: 3
            }],
            "an idle cluster is not a finished move: the watch waits"
        );
        assert!(
            follow.observe(&idle, 3).is_empty(),
            "nothing new, nothing shown"
        );

        let moving = follow.observe(&status(Phase::Rebalancing, 5, Some((true, 10, 108))), 5);
        assert_eq!(moving.len(), 2, "{moving:?}");
        assert!(matches!(
            moving[0],
            Event::Phase {
                from: Some(Phase::Available),
                to: Phase::Rebalancing,
                ..
            }
        ));
        assert_eq!(
            moving[1],
            Event::Progress {
                from_epoch: 4,
                to_epoch: 5,
                moved: 10,
                total: 108
            }
        );
        let more = follow.observe(&status(Phase::Rebalancing, 5, Some((true, 54, 108))), 5);
        assert_eq!(
            more,
            [Event::Progress {
                from_epoch: 4,
                to_epoch: 5,
                moved: 54,
                total: 108
            }]
        );

        let done = follow.observe(&status(Phase::Available, 5, Some((false, 108, 108))), 5);
        assert_eq!(done.len(), 2, "{done:?}");
        assert_eq!(
            done[1],
            Event::Done {
                from_epoch: 4,
                to_epoch: 5,
                moved: 108,
                bytes: 3 * 1024 * 1024,
                records: 1200,
                seconds: Some(14)
            }
        );
    }

    #[test]
    fn a_move_between_two_updates_still_ends_the_watch() {
        let mut follow = Follow::default();
        follow.observe(&status(Phase::Available, 4, None), 3);
        let events = follow.observe(&status(Phase::Available, 5, Some((false, 108, 108))), 3);
        assert!(
            matches!(events.last(), Some(Event::Done { .. })),
            "the epoch moved: {events:?}"
        );
    }

    #[test]
    fn watching_mid_move_follows_it_to_the_end() {
        let mut follow = Follow::default();
        let events = follow.observe(&status(Phase::ScaleDownBlocked, 5, Some((true, 3, 9))), 2);
        assert!(matches!(
            events[1],
            Event::Progress {
                moved: 3,
                total: 9,
                ..
            }
        ));
        let degraded = follow.observe(&status(Phase::Degraded, 5, Some((false, 9, 9))), 2);
        assert!(
            !degraded.iter().any(|e| matches!(e, Event::Done { .. })),
            "Degraded is not the end: {degraded:?}"
        );
        let done = follow.observe(&status(Phase::Available, 5, Some((false, 9, 9))), 2);
        assert!(matches!(done.last(), Some(Event::Done { moved: 9, .. })));
    }

    #[test]
    fn lines_read_as_a_transcript() {
        let at = Timestamp::from_second(3_723).expect("time");
        let phase = Event::Phase {
            from: Some(Phase::Available),
            to: Phase::Rebalancing,
            epoch: 5,
            joined: 3,
            desired: 5,
        };
        assert_eq!(
            line(&phase, at).as_deref(),
            Some("01:02:03  Available -> Rebalancing  (epoch 5, 3 of 5 members joined)")
        );
        let done = Event::Done {
            from_epoch: 4,
            to_epoch: 5,
            moved: 108,
            bytes: 3 * 1024 * 1024,
            records: 1200,
            seconds: Some(74),
        };
        assert_eq!(
            line(&done, at).as_deref(),
            Some(
                "01:02:03  done: epoch 4 -> 5, 108 partitions moved in 1m14s (3.0 MiB and 1200 records streamed)"
            )
        );
        assert_eq!(
            progress_line(4, 5, 41, 108),
            "epoch 4 -> 5: 41/108 partitions moved (37%)"
        );
    }
}
