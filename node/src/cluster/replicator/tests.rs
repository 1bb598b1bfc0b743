//! The tallies' arithmetic, and which replicas a fan-out calls when.

use super::*;
use crate::clock::Version;

fn record(hlc: u64) -> Record {
    Record::put(b"k", b"v", Version { hlc, node: 1 }, None, 0)
}

fn remote(id: &str) -> Replica {
    Replica::Remote(Member {
        id: id.into(),
        address: None,
    })
}

#[test]
fn a_read_needs_complete_replicas_and_names_the_stale_ones() {
    let mut tally = ReadTally::new(2);
    tally.answer(Replica::Local, false, None);
    tally.answer(remote("b"), true, Some(record(5)));
    assert!(!tally.enough(), "an incomplete replica does not count");
    tally.answer(remote("c"), true, Some(record(3)));
    assert!(tally.enough());
    let (newest, stale) = tally.finish(&[]).expect("enough");
    assert_eq!(newest.map(|r| r.version.hlc), Some(5));
    let stale: Vec<String> = stale
        .iter()
        .map(|r| match r {
            Replica::Local => "local".to_owned(),
            Replica::Remote(m) => m.id.clone(),
        })
        .collect();
    assert_eq!(stale, ["local", "c"]);

    let short = ReadTally::new(2);
    let err = short.finish(&["b: down".into()]).expect_err("no answers");
    assert!(
        matches!(err, ClusterError::Unavailable { needed: 2, acked: 0, ref detail } if detail == "b: down")
    );
}

#[test]
fn a_write_during_a_move_needs_both_groups() {
    let targets = Targets {
        targets: Vec::new(),
        epoch: 3,
        moving: true,
        prev_owners: 2,
        next_owners: 2,
    };
    let mut tally = WriteTally::new(&targets, Consistency::Quorum);
    tally.ack((true, false));
    tally.ack((true, false));
    assert!(!tally.enough(), "the old owners have not acknowledged");
    tally.ack((false, true));
    tally.ack((true, true));
    assert!(tally.enough());
    assert!(tally.finish(&[]).is_ok());

    let mut half = WriteTally::new(&targets, Consistency::All);
    half.ack((true, true));
    let err = half.finish(&["c: refused".into()]).expect_err("short");
    assert!(matches!(
        err,
        ClusterError::Unavailable {
            needed: 4,
            acked: 2,
            ..
        }
    ));
}

#[test]
fn a_replica_that_kept_a_newer_version_did_not_acknowledge() {
    let targets = Targets {
        targets: Vec::new(),
        epoch: 3,
        moving: false,
        prev_owners: 0,
        next_owners: 1,
    };
    let mut tally = WriteTally::new(&targets, Consistency::One);
    let kept = proto::ApplyResponse {
        stale: 1,
        newer_hlc: 77,
        ..proto::ApplyResponse::default()
    };
    tally.record((true, false), kept);
    assert!(!tally.enough());
    let err = tally.finish(&[]).expect_err("nobody took it");
    assert!(matches!(err, ClusterError::Superseded { newer_hlc: 77 }));

    let mut moved = WriteTally::new(&targets, Consistency::One);
    let not_owner = proto::ApplyResponse {
        not_owner: 1,
        ..proto::ApplyResponse::default()
    };
    moved.record((true, false), not_owner);
    assert!(
        moved.finish(&[]).is_ok(),
        "an old owner's refusal is not a lost write"
    );

    // A replica on a newer epoch refused: not an acknowledgement, and the coordinator
    // learns which epoch to catch up with.
    let mut late = WriteTally::new(&targets, Consistency::One);
    let behind = proto::ApplyResponse {
        epoch_behind: 1,
        epoch: 4,
        ..proto::ApplyResponse::default()
    };
    late.record((true, false), behind);
    assert!(!late.enough());
    assert!(matches!(
        late.finish(&[]),
        Err(ClusterError::Behind { epoch: 4 })
    ));
}

mod fan_out {
    use std::collections::HashMap;
    use std::sync::Arc;
    use std::time::Duration;

    use parking_lot::Mutex;

    use super::*;
    use crate::cluster::discovery::Discovery;

    /// How a scripted replica answers: after a delay, authoritatively or not, or fails.
    #[derive(Clone, Copy)]
    enum Script {
        Answer { after_ms: u64, authoritative: bool },
        Fail,
    }

    /// Runs a read fan-out needing `needed` answers over replicas scripted in order;
    /// returns the replicas called, in order, and the tally's outcome.
    async fn read(
        replicas: &[(&str, Script)],
        needed: usize,
        spread: Spread,
    ) -> (Vec<String>, Result<(), ClusterError>) {
        let replicator = Replicator::new(PeerClients::new(
            Discovery::knowing(HashMap::new()),
            1 << 20,
        ));
        let scripts: HashMap<String, Script> = replicas
            .iter()
            .map(|(id, script)| ((*id).to_owned(), *script))
            .collect();
        let called = Arc::new(Mutex::new(Vec::new()));
        let call = |_: PeerClients, member: Member| {
            called.lock().push(member.id.clone());
            let script = scripts[&member.id];
            async move {
                match script {
                    Script::Fail => Err(Status::unavailable("down")),
                    Script::Answer {
                        after_ms,
                        authoritative,
                    } => {
                        tokio::time::sleep(Duration::from_millis(after_ms)).await;
                        Ok(proto::GetResponse {
                            record: None,
                            authoritative,
                            wall_ms: 0,
                        })
                    }
                }
            }
        };
        let remotes = replicas
            .iter()
            .map(|(id, _)| {
                let Replica::Remote(member) = remote(id) else {
                    unreachable!("remote() makes remotes")
                };
                (member, remote(id))
            })
            .collect();
        let mut tally = ReadTally::new(needed);
        let errors = replicator
            .fan_out(remotes, call, &mut tally, spread, Rest::Abandon)
            .await;
        let outcome = tally.finish(&errors).map(|_| ());
        let called = called.lock().clone();
        (called, outcome)
    }

    const HEDGE: Spread = Spread::AsNeeded {
        hedge: Duration::from_millis(20),
    };
    const FAST: Script = Script::Answer {
        after_ms: 1,
        authoritative: true,
    };

    #[tokio::test(start_paused = true)]
    async fn a_read_needing_one_answer_asks_one_replica() {
        let (called, outcome) = read(&[("b", FAST), ("c", FAST), ("d", FAST)], 1, HEDGE).await;
        assert_eq!(called, ["b"]);
        assert!(outcome.is_ok());

        let (called, _) = read(&[("b", FAST), ("c", FAST), ("d", FAST)], 1, Spread::All).await;
        assert_eq!(called, ["b", "c", "d"], "Spread::All asks everyone at once");
    }

    #[tokio::test(start_paused = true)]
    async fn the_next_replica_is_asked_when_one_fails_or_does_not_count() {
        let syncing = Script::Answer {
            after_ms: 1,
            authoritative: false,
        };
        let (called, outcome) = read(
            &[
                ("b", Script::Fail),
                ("c", syncing),
                ("d", FAST),
                ("e", FAST),
            ],
            1,
            HEDGE,
        )
        .await;
        assert_eq!(called, ["b", "c", "d"]);
        assert!(outcome.is_ok());

        let (called, outcome) = read(&[("b", Script::Fail), ("c", Script::Fail)], 1, HEDGE).await;
        assert_eq!(called, ["b", "c"]);
        let err = outcome.expect_err("nobody answered");
        assert!(
            matches!(err, ClusterError::Unavailable { needed: 1, acked: 0, ref detail } if detail == "b: down; c: down"),
            "{err:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_replica_gets_company_after_the_hedge_delay() {
        let stalled = Script::Answer {
            after_ms: 3_000,
            authoritative: true,
        };
        let started = tokio::time::Instant::now();
        let (called, outcome) = read(&[("b", stalled), ("c", FAST)], 1, HEDGE).await;
        assert_eq!(called, ["b", "c"]);
        assert!(outcome.is_ok());
        let took = started.elapsed();
        assert!(
            took >= Duration::from_millis(20) && took < Duration::from_millis(100),
            "answered by the second replica after the hedge: {took:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_read_needing_more_asks_as_many_as_it_misses() {
        let (called, outcome) = read(&[("b", FAST), ("c", FAST), ("d", FAST)], 2, HEDGE).await;
        assert_eq!(called, ["b", "c"]);
        assert!(outcome.is_ok());
    }
}
