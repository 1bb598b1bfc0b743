//! The list's YAML shape, the rules a node installs it under, and the `--members` form.

use super::*;

const LIST: &str = "
epoch: 3
partitions: 271
replicationFactor: 2
members:
  - id: a
    address: 127.0.0.1:7071
  - id: b
    address: 127.0.0.1:7081
";

const STATIC: ListRules = ListRules {
    partitions: 271,
    addresses_required: true,
};
const DISCOVERED: ListRules = ListRules {
    partitions: 271,
    addresses_required: false,
};

#[test]
fn parses_the_documented_shape() {
    let list = MemberList::parse(LIST, &STATIC).expect("valid");
    assert_eq!(list.epoch, 3);
    assert_eq!(list.replication_factor, ReplicationFactor::Count(2));
    assert_eq!(list.ids(), vec!["a", "b"]);
    assert!(list.departing.is_empty());
    let all = LIST.replace("replicationFactor: 2", "replicationFactor: all");
    assert_eq!(
        MemberList::parse(&all, &STATIC)
            .expect("valid")
            .replication_factor
            .count(),
        usize::MAX
    );
}

#[test]
fn the_operators_yaml_round_trips() {
    let yaml = "epoch: 4\npartitions: 271\nreplicationFactor: all\n\
                members: [{id: demo-0}, {id: demo-1}]\ndeparting: [{id: demo-2}]\n";
    let list = MemberList::from_yaml(yaml).expect("valid");
    assert_eq!(list.replication_factor, ReplicationFactor::ALL);
    assert_eq!(list.member_ids().collect::<Vec<_>>(), ["demo-0", "demo-1"]);
    assert_eq!(list.departing_ids().collect::<Vec<_>>(), ["demo-2"]);
    assert_eq!(MemberList::from_yaml(&list.to_yaml()).expect("again"), list);

    let written = MemberList {
        epoch: 1,
        partitions: 7,
        replication_factor: ReplicationFactor::Count(2),
        members: vec![Member::new("a")],
        departing: vec![],
    }
    .to_yaml();
    // Omitted when empty, and no address for ids-only members: lists written back
    // look like the ones read.
    assert!(!written.contains("departing"), "{written}");
    assert!(!written.contains("address"), "{written}");
    assert!(written.contains("replicationFactor: 2"), "{written}");
}

#[test]
fn from_yaml_checks_the_shape_and_parse_checks_the_rules_too() {
    // Partitions are a node's rule, not the shape's.
    let other = LIST.replace("partitions: 271", "partitions: 16");
    assert!(MemberList::from_yaml(&other).is_ok());
    assert!(matches!(
        MemberList::parse(&other, &STATIC),
        Err(MembershipError::Partitions {
            list: 16,
            node: 271
        })
    ));
    for bad in ["epoch: [", "epoch: -1\n", &format!("{LIST}surprise: 1\n")] {
        assert!(
            matches!(MemberList::from_yaml(bad), Err(MembershipError::Parse(_))),
            "{bad}"
        );
    }
}

#[test]
fn refuses_lists_that_would_corrupt_placement() {
    let other = ListRules {
        partitions: 16,
        ..STATIC
    };
    assert!(matches!(
        MemberList::parse(LIST, &other),
        Err(MembershipError::Partitions {
            list: 271,
            node: 16
        })
    ));
    let twice = LIST.replace("id: b", "id: a");
    assert!(matches!(
        MemberList::parse(&twice, &STATIC),
        Err(MembershipError::Duplicate(id)) if id == "a"
    ));
    let zero = LIST.replace("replicationFactor: 2", "replicationFactor: 0");
    assert!(matches!(
        MemberList::parse(&zero, &STATIC),
        Err(MembershipError::ReplicationFactor)
    ));
    assert!(matches!(
        MemberList::parse("epoch: [", &STATIC),
        Err(MembershipError::Parse(_))
    ));
    let unknown = format!("{LIST}surprise: 1\n");
    assert!(matches!(
        MemberList::parse(&unknown, &STATIC),
        Err(MembershipError::Parse(_))
    ));
    let empty = "epoch: 1\npartitions: 271\nreplicationFactor: 1\nmembers: []\n";
    assert!(matches!(
        MemberList::parse(empty, &DISCOVERED),
        Err(MembershipError::Empty)
    ));
    let blank = "epoch: 1\npartitions: 271\nreplicationFactor: 1\nmembers: [{id: ''}]\n";
    assert!(matches!(
        MemberList::parse(blank, &DISCOVERED),
        Err(MembershipError::EmptyId)
    ));
}

#[test]
fn addresses_are_mandatory_only_with_static_discovery() {
    let no_address = LIST.replace("    address: 127.0.0.1:7081\n", "");
    assert!(matches!(
        MemberList::parse(&no_address, &STATIC),
        Err(MembershipError::NoAddress(id)) if id == "b"
    ));
    let list = MemberList::parse(&no_address, &DISCOVERED).expect("ids only");
    assert_eq!(list.members[1].address, None);
    // The operator's shape: ids only, with departing members.
    let operator = "epoch: 4\npartitions: 271\nreplicationFactor: 2\n\
                    members: [{id: demo-0}, {id: demo-1}, {id: demo-2}]\n\
                    departing: [{id: demo-3}]\n";
    let list = MemberList::parse(operator, &DISCOVERED).expect("operator list");
    assert_eq!(list.departing.len(), 1);
    assert!(list.is_departing("demo-3") && !list.is_departing("demo-0"));
    assert!(matches!(
        MemberList::parse(operator, &STATIC),
        Err(MembershipError::NoAddress(id)) if id == "demo-0"
    ));
}

#[test]
fn departing_members_are_validated_like_members() {
    let departing = format!("{LIST}departing:\n  - id: c\n");
    // Static discovery: a departing member must be reachable too.
    assert!(matches!(
        MemberList::parse(&departing, &STATIC),
        Err(MembershipError::NoAddress(id)) if id == "c"
    ));
    let reachable = format!("{departing}    address: 127.0.0.1:7091\n");
    let list = MemberList::parse(&reachable, &STATIC).expect("valid");
    let holders: Vec<&str> = list.holders().map(|m| m.id.as_str()).collect();
    assert_eq!(holders, ["a", "b", "c"]);
    assert_eq!(
        list.ids(),
        ["a", "b"],
        "placement ignores departing members"
    );
    let both = format!("{LIST}departing:\n  - id: b\n    address: 127.0.0.1:7081\n");
    assert!(matches!(
        MemberList::parse(&both, &STATIC),
        Err(MembershipError::Duplicate(id)) if id == "b"
    ));
    let unknown_field = format!("{LIST}departing:\n  - id: c\n    since: 3\n");
    assert!(matches!(
        MemberList::parse(&unknown_field, &DISCOVERED),
        Err(MembershipError::Parse(_))
    ));
    let yaml = MemberList::parse(LIST, &STATIC).expect("valid").to_yaml();
    assert!(!yaml.contains("departing"), "{yaml}");
}

#[test]
fn the_members_flag_is_a_static_list_at_epoch_one() {
    let list = MemberList::from_flag(
        "a=127.0.0.1:7071, b=127.0.0.1:7072",
        ReplicationFactor::Count(2),
        &STATIC,
    )
    .expect("valid");
    assert_eq!(list.epoch, 1);
    assert_eq!(list.partitions, 271);
    assert_eq!(list.ids(), ["a", "b"]);
    assert_eq!(list.members[1].address, "127.0.0.1:7072".parse().ok());

    let ids_only = MemberList::from_flag("a,b", ReplicationFactor::Count(1), &DISCOVERED)
        .expect("ids only with discovery");
    assert_eq!(ids_only.members[0].address, None);
    assert!(matches!(
        MemberList::from_flag("a,b", ReplicationFactor::Count(1), &STATIC),
        Err(MembershipError::NoAddress(id)) if id == "a"
    ));
    assert!(matches!(
        MemberList::from_flag("a=somewhere", ReplicationFactor::Count(1), &STATIC),
        Err(MembershipError::StaticEntry { entry, .. }) if entry == "a=somewhere"
    ));
    assert!(matches!(
        MemberList::from_flag("a=127.0.0.1:1,a=127.0.0.1:2", ReplicationFactor::Count(1), &STATIC),
        Err(MembershipError::Duplicate(id)) if id == "a"
    ));
    assert!(matches!(
        MemberList::from_flag(" , ", ReplicationFactor::Count(1), &STATIC),
        Err(MembershipError::Empty)
    ));
}

#[test]
fn the_replication_factor_is_a_count_or_all() {
    let parse = |s: &str| s.parse::<ReplicationFactor>();
    assert_eq!(parse("3"), Ok(ReplicationFactor::Count(3)));
    assert_eq!(parse("ALL"), Ok(ReplicationFactor::ALL));
    for bad in ["0", "-1", "many", "70000", ""] {
        assert!(parse(bad).is_err(), "{bad}");
    }
    assert_eq!(ReplicationFactor::Count(2).copies(5), 2);
    assert_eq!(
        ReplicationFactor::Count(7).copies(5),
        5,
        "clamped to the members"
    );
    assert_eq!(ReplicationFactor::ALL.copies(5), 5);
}
