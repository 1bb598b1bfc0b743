use std::time::Duration;

use super::*;
use crate::store::Precondition;

const PARTITIONS: u32 = 64;

fn list(epoch: u64, members: &[&str], departing: &[&str]) -> MemberList {
    let member = |id: &&str| membership::Member {
        id: (*id).to_owned(),
        address: "127.0.0.1:9".parse().ok(),
    };
    MemberList {
        epoch,
        partitions: PARTITIONS,
        replication_factor: ReplicationFactor::Count(1),
        members: members.iter().map(member).collect(),
        departing: departing.iter().map(member).collect(),
    }
}

fn node(id: &str, list: MemberList) -> Cluster {
    let store = Store::new(crate::store::StoreConfig::for_tests(
        id,
        PARTITIONS,
        1 << 20,
        crate::store::EvictionPolicy::Lru,
    ));
    let defaults = Defaults {
        read: Consistency::Quorum,
        write: Consistency::Quorum,
    };
    Cluster::new(
        store,
        Identity::new(id.into()),
        list,
        defaults,
        Discovery::from_list(),
    )
}

/// A key of each partition.
fn keys(cluster: &Cluster) -> Vec<Vec<u8>> {
    let mut keys: Vec<Option<Vec<u8>>> = vec![None; PARTITIONS as usize];
    for i in 0u32.. {
        let key = format!("k{i}").into_bytes();
        let slot = &mut keys[cluster.store().partition_of(&key) as usize];
        if slot.is_none() {
            *slot = Some(key);
        }
        if keys.iter().all(Option::is_some) {
            break;
        }
    }
    keys.into_iter().flatten().collect()
}

#[test]
fn departing_members_own_nothing_and_leave_placement_unchanged() {
    let without = View::new(list(4, &["a", "b", "c"], &[]), "d");
    let with = View::new(list(4, &["a", "b", "c"], &["d"]), "d");
    let owner_ids = |view: &View, p: u32| -> Vec<String> {
        view.placement
            .owners(p)
            .iter()
            .map(|&i| view.list.members[usize::from(i)].id.clone())
            .collect()
    };
    for p in 0..PARTITIONS {
        assert_eq!(owner_ids(&with, p), owner_ids(&without, p), "partition {p}");
        assert!(!with.is_owner("d", p) && !with.owns(p));
    }
    assert!(with.owned().is_empty());
    assert_eq!(with.role_of("d"), Role::Departing);
    assert_eq!(with.role_of("a"), Role::Member);
    assert_eq!(with.role_of("new-pod"), Role::Absent);
    assert_eq!(without.role_of("d"), Role::Absent);
}

#[tokio::test]
async fn the_first_list_is_not_a_move_and_later_ones_are() {
    let cluster = node("a", MemberList::none(PARTITIONS));
    assert!(!cluster.has_list());
    let waiting = tokio::spawn({
        let cluster = cluster.clone();
        async move { cluster.wait_for_list().await }
    });
    assert!(!cluster.install(MemberList::none(PARTITIONS)));
    assert!(cluster.install(list(3, &["a", "b"], &[])));
    tokio::time::timeout(Duration::from_secs(1), waiting)
        .await
        .expect("the wait ends with the first list")
        .expect("task");
    let routing = cluster.routing();
    assert!(!routing.moving(), "no previous owners to move from");
    assert_eq!(routing.prev.epoch(), 3);
    assert!(!cluster.install(list(3, &["a"], &[])), "same epoch");
    assert!(cluster.install(list(4, &["a"], &["b"])));
    assert!(cluster.routing().moving());
}

#[tokio::test]
async fn without_a_list_requests_fail_and_never_miss() {
    let cluster = node("a", MemberList::none(PARTITIONS));
    for level in [Consistency::One, Consistency::Quorum, Consistency::All] {
        let read = cluster.get(b"k", Some(level)).await;
        assert!(
            matches!(&read, Err(ClusterError::Unavailable { detail, .. }) if detail.contains("no member list")),
            "{read:?}"
        );
    }
    let write = cluster
        .put(
            b"k",
            b"v",
            None,
            &Precondition::None,
            Some(Consistency::One),
        )
        .await;
    assert!(matches!(write, Err(ClusterError::Unavailable { .. })));
    assert!(cluster.store().get(b"k").is_none());
    let report = cluster.report();
    assert_eq!((report.epoch, report.ownership.owned), (0, 0));
    assert_eq!(report.node.role, Role::Absent);
}

#[tokio::test]
async fn a_departing_node_reports_owning_nothing_and_what_it_still_holds() {
    let cluster = node("d", list(1, &["a", "d"], &[]));
    let keys = keys(&cluster);
    for key in &keys {
        cluster
            .store()
            .put(key, b"v", None, &Precondition::None)
            .expect("put");
    }
    let before = cluster.report();
    assert_eq!(before.node.role, Role::Member);
    assert!(before.ownership.owned > 0 && before.ownership.held_not_owned > 0);

    assert!(cluster.install(list(2, &["a"], &["d"])));
    let report = cluster.report();
    assert_eq!(report.node.role, Role::Departing);
    assert_eq!(report.ownership.owned, 0);
    assert_eq!(report.ownership.held_not_owned, PARTITIONS as usize);
    assert_eq!(report.departing.len(), 1);
    assert!(report.departing[0].is_self);
    assert!(report.members.iter().all(|m| !m.is_self));
}

#[tokio::test]
async fn a_departing_node_keeps_what_it_owned_until_the_move_completes() {
    let cluster = node("d", list(1, &["a", "d"], &[]));
    let keys = keys(&cluster);
    for key in &keys {
        cluster
            .store()
            .put(key, b"v", None, &Precondition::None)
            .expect("put");
    }
    let owned_before: Vec<u32> = cluster.view().owned();
    assert!(cluster.install(list(2, &["a"], &["d"])));
    // A restarted member that pulled from it releases; an old owner mid-move keeps
    // its partitions (other new owners may still pull them), and drops the rest.
    for p in 0..PARTITIONS {
        let owned_in_prev = owned_before.contains(&p);
        assert_eq!(cluster.release(p), !owned_in_prev, "partition {p}");
    }
    assert_eq!(
        cluster.store().partitions_holding_data().len(),
        owned_before.len()
    );
    // Until then it answers reads for them as a complete holder (an old owner).
    cluster.lifecycle().advance(Phase::Ready);
    for p in 0..PARTITIONS {
        assert_eq!(cluster.holds_completely(p), owned_before.contains(&p));
    }
}
