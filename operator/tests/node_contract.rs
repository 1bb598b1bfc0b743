//! The contract between the operator and the nodes, checked against the real node code:
//! a member list the operator publishes is one the node accepts, and the report a real
//! node serves on `GET /v1/cluster` is one the operator reads.

use clap::Parser;
use kache_node::cluster::membership::{ListRules, MemberList as NodeMemberList};
use kache_node::config::Cli;
use kache_operator::members::{MemberList, ReplicationFactor, ids};
use kache_operator::report;

#[test]
fn the_node_accepts_every_list_the_operator_publishes() {
    let rules = ListRules {
        partitions: 271,
        addresses_required: false,
    };
    for (rf, departing) in [
        (ReplicationFactor::Count(2), vec![]),
        (ReplicationFactor::ALL, vec!["demo-3".to_owned()]),
    ] {
        let list = MemberList {
            epoch: 9,
            partitions: 271,
            replication_factor: rf,
            members: ids(["demo-0", "demo-1", "demo-2"].map(str::to_owned)),
            departing: ids(departing.clone()),
        };
        let parsed = NodeMemberList::parse(&list.to_yaml(), &rules)
            .unwrap_or_else(|e| panic!("the node refused:\n{}\n{e}", list.to_yaml()));
        assert_eq!(parsed.epoch, 9);
        assert_eq!(parsed.members.len(), 3);
        assert_eq!(parsed.departing.len(), departing.len());
    }
}

#[tokio::test]
async fn the_operator_reads_a_real_nodes_report() {
    let config = Cli::try_parse_from([
        "kache-node",
        "--node-id",
        "demo-0",
        "--members",
        "demo-0=127.0.0.1:1",
    ])
    .unwrap()
    .into_config()
    .unwrap();
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = http.local_addr().unwrap().port();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(kache_node::run(
        kache_node::Listeners { http, grpc },
        config,
        async move {
            let _ = stopped.await;
        },
    ));
    let client = reqwest::Client::new();
    let mut last = None;
    // Bounded: a one-member cluster is ready at once; allow it five seconds.
    for _ in 0..50 {
        match report::fetch(&client, "127.0.0.1", i32::from(port)).await {
            Ok(report) if report.node.ready => {
                last = Some(report);
                break;
            }
            other => last = other.ok(),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let report = last.expect("the node answered GET /v1/cluster");
    assert_eq!(report.node.id, "demo-0");
    assert_eq!(report.epoch, 1);
    assert_eq!(
        report.ownership.owned, 271,
        "one member owns every partition"
    );
    assert!(report.joined(1), "{report:?}");
    let _ = stop.send(());
    let _ = node.await;
}
