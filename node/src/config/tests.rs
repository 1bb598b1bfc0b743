//! Flags and environment: defaults, validation, and one clear error for each bad input.

use super::*;

fn parse(args: &[&str]) -> Result<NodeConfig, String> {
    let mut argv = vec!["kache-node", "--node-id", "n1"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).map_err(|e| e.to_string())?;
    cli.into_config().map_err(|e| e.to_string())
}

#[test]
fn every_flag_reads_a_variable_of_the_shared_contract() {
    let mut names = Cli::env_names();
    names.sort();
    let mut contract: Vec<String> = env::ALL.iter().map(|&name| name.to_owned()).collect();
    contract.sort();
    assert_eq!(names, contract);
}

#[test]
fn the_environment_is_parsed_like_flags() {
    let cli = Cli::try_parse_from_env([
        (env::NODE_ID, "n1"),
        (env::MAX_MEMORY, "64MiB"),
        (env::DEFAULT_TTL, "5m"),
        (env::REPLICATION_FACTOR, "all"),
        (env::MEMBERS, "a=127.0.0.1:1"),
        ("PATH", "/usr/bin"),
        ("KACHE_NOT_A_SETTING", "1"),
    ])
    .expect("valid environment");
    assert_eq!(cli.node_id.as_deref(), Some("n1"));
    assert_eq!(cli.max_memory, 64 << 20);
    assert_eq!(cli.default_ttl, Some(Duration::from_secs(300)));
    assert_eq!(cli.replication_factor, Some(ReplicationFactor::ALL));
    assert_eq!(cli.partitions, 271, "defaults apply as with flags");
    let err = Cli::try_parse_from_env([(env::MAX_MEMORY, "lots")]).expect_err("bad size");
    assert!(
        err.to_string().contains("--max-memory") && err.to_string().contains("'lots'"),
        "{err}"
    );
    // A value that looks like a flag is still a value.
    let cli = Cli::try_parse_from_env([(env::NODE_ID, "--partitions=7")]).expect("odd id");
    assert_eq!(cli.node_id.as_deref(), Some("--partitions=7"));
    assert_eq!(cli.partitions, 271);
}

#[test]
fn sizes_and_durations_are_refused_with_the_flag_named() {
    let err = parse(&["--max-memory", "64XB"]).expect_err("unknown unit");
    assert!(
        err.contains("--max-memory") && err.contains("unknown unit"),
        "{err}"
    );
    let err = parse(&["--tombstone-ttl", "5 weeks"]).expect_err("unknown unit");
    assert!(err.contains("--tombstone-ttl"), "{err}");
}

#[test]
fn defaults_match_the_documentation() {
    let config = parse(&[]).expect("defaults are valid");
    assert_eq!(config.store.partitions, 271);
    assert_eq!(config.store.max_memory, 1 << 30);
    assert_eq!(config.store.eviction, EvictionPolicy::Lru);
    assert_eq!(config.limits.max_key_bytes, 1024);
    assert_eq!(config.limits.max_value_bytes, 1 << 20);
    assert_eq!(config.limits.header_timeout, Duration::from_secs(10));
    assert_eq!(config.limits.max_connections, 10_000);
    assert_eq!(config.default_ttl, None);
    assert_eq!(config.grpc_addr.port(), 7071);
    assert_eq!(config.resp_addr, Some("0.0.0.0:6379".parse().unwrap()));
    assert_eq!(config.membership, MembershipConfig::Single);
    assert_eq!(config.discovery, DiscoveryConfig::Static);
    assert_eq!(config.consistency.read, Consistency::Quorum);
}

#[test]
fn the_resp_listener_takes_an_address_or_off() {
    let config = parse(&["--resp-addr", "127.0.0.1:7379"]).expect("an address");
    assert_eq!(config.resp_addr, Some("127.0.0.1:7379".parse().unwrap()));
    assert_eq!(parse(&["--resp-addr", "OFF"]).expect("off").resp_addr, None);
    let err = parse(&["--resp-addr", "6379"]).expect_err("a port alone");
    assert!(
        err.contains("--resp-addr")
            && err.contains("expected an address such as 0.0.0.0:6379, or off"),
        "{err}"
    );
    // More partitions than Redis Cluster has slots would leave partitions no key maps to.
    let err = parse(&["--partitions", "16385"]).expect_err("over the slot count");
    assert!(err.contains("between 1 and 16384"), "{err}");
    assert!(parse(&["--partitions", "16384"]).is_ok());
}

#[test]
fn invalid_combinations_are_refused_with_the_flag_named() {
    let err = parse(&["--partitions", "0"]).expect_err("zero partitions");
    assert!(err.contains("--partitions"), "{err}");
    let err = parse(&["--max-memory", "1MiB", "--max-value-bytes", "2MiB"])
        .expect_err("value larger than memory");
    assert!(err.contains("--max-memory"), "{err}");
    let err = parse(&["--max-key-bytes", "70000"]).expect_err("key too long");
    assert!(err.contains("--max-key-bytes"), "{err}");
    let err = parse(&["--eviction", "random"]).expect_err("bad policy");
    assert!(err.contains("random"), "{err}");
    let err = parse(&["--default-ttl", "500ms"]).expect_err("sub-second ttl");
    assert!(err.contains("--default-ttl"), "{err}");
    let err = parse(&["--read-consistency", "most"]).expect_err("bad consistency");
    assert!(err.contains("most"), "{err}");
    let err = parse(&["--worker-threads", "0"]).expect_err("no threads");
    assert!(err.contains("--worker-threads"), "{err}");
    let err = parse(&["--max-connections", "0"]).expect_err("no connections");
    assert!(err.contains("--max-connections"), "{err}");
    let err = parse(&["--http-header-timeout", "0s"]).expect_err("no time for a head");
    assert!(err.contains("--http-header-timeout"), "{err}");
}

fn cli(args: &[&str]) -> Cli {
    let mut argv = vec!["kache-node", "--node-id", "n1"];
    argv.extend_from_slice(args);
    Cli::try_parse_from(argv).expect("flags parse")
}

#[test]
fn one_membership_source_at_most() {
    let err = parse(&[
        "--members-file",
        "m.yaml",
        "--members-configmap",
        "demo-members",
    ])
    .expect_err("two sources");
    assert!(
        err.contains("--members-file and --members-configmap"),
        "{err}"
    );
    let err = parse(&["--members", "a=127.0.0.1:1", "--members-file", "m.yaml"])
        .expect_err("two sources");
    assert!(err.contains("--members-file and --members"), "{err}");
    let file = parse(&["--members-file", "m.yaml"]).expect("file");
    assert_eq!(file.membership, MembershipConfig::File("m.yaml".into()));
    assert!(file.membership.is_cluster());
}

#[test]
fn the_members_flag_is_a_static_list() {
    let config = parse(&[
        "--members",
        "a=127.0.0.1:7071,b=127.0.0.1:7072",
        "--replication-factor",
        "2",
        "--partitions",
        "64",
    ])
    .expect("valid");
    let MembershipConfig::Static(list) = &config.membership else {
        panic!("static list expected: {:?}", config.membership);
    };
    assert_eq!((list.epoch, list.partitions), (1, 64));
    assert_eq!(list.replication_factor, ReplicationFactor::Count(2));
    assert_eq!(list.ids(), ["a", "b"]);
    let default_rf = parse(&["--members", "a=127.0.0.1:7071"]).expect("valid");
    assert!(matches!(
        default_rf.membership,
        MembershipConfig::Static(MemberList {
            replication_factor: ReplicationFactor::Count(1),
            ..
        })
    ));

    let err = parse(&["--members", "a,b"]).expect_err("static discovery needs addresses");
    assert!(
        err.contains("--members") && err.contains("no address"),
        "{err}"
    );
    let err = parse(&["--members", "a=nowhere"]).expect_err("bad address");
    assert!(err.contains("a=nowhere"), "{err}");
    let err = parse(&["--members-file", "m.yaml", "--replication-factor", "2"])
        .expect_err("the file sets its own");
    assert!(err.contains("--replication-factor"), "{err}");
    let err =
        parse(&["--members", "a=127.0.0.1:1", "--replication-factor", "0"]).expect_err("rf 0");
    assert!(err.contains("replication factor"), "{err}");
}

#[test]
fn the_configmap_source_takes_the_pods_namespace_unless_given() {
    let config = parse(&[
        "--members-configmap",
        "demo-members",
        "--namespace",
        "cache",
    ])
    .expect("valid");
    assert_eq!(
        config.membership,
        MembershipConfig::ConfigMap {
            namespace: "cache".into(),
            name: "demo-members".into()
        }
    );
    // Static discovery with a ConfigMap: its lists must carry addresses.
    assert!(config.list_rules().addresses_required);

    let flags = cli(&["--members-configmap", "demo-members"]);
    let in_pod = flags
        .membership_config(&DiscoveryConfig::Static, || Some("pod-ns".into()))
        .expect("pod namespace");
    assert!(
        matches!(in_pod, MembershipConfig::ConfigMap { namespace, .. } if namespace == "pod-ns")
    );
    let outside = flags
        .membership_config(&DiscoveryConfig::Static, || None)
        .expect_err("no namespace anywhere");
    assert!(outside.to_string().contains("--namespace"), "{outside}");
}

#[test]
fn dynamic_discovery_needs_a_service_and_a_member_list() {
    let config = parse(&[
        "--members-configmap",
        "demo-members",
        "--discovery",
        "endpointslices",
        "--service",
        "demo-peers",
        "--namespace",
        "cache",
    ])
    .expect("the operator's flags");
    assert_eq!(
        config.discovery,
        DiscoveryConfig::EndpointSlices {
            namespace: "cache".into(),
            service: "demo-peers".into(),
            peer_port: 7071
        }
    );
    assert!(!config.list_rules().addresses_required, "ids only");

    let dns = parse(&[
        "--members",
        "demo-0,demo-1",
        "--discovery",
        "DNS",
        "--service",
        "demo-peers",
        "--namespace",
        "cache",
        "--peer-port",
        "7171",
    ])
    .expect("dns with bare ids");
    let DiscoveryConfig::Dns(names) = &dns.discovery else {
        panic!("dns expected: {:?}", dns.discovery);
    };
    assert_eq!(names.port, 7171);
    assert_eq!(
        names.name("demo-0"),
        "demo-0.demo-peers.cache.svc.cluster.local"
    );

    let err = parse(&[
        "--members",
        "a",
        "--discovery",
        "dns",
        "--namespace",
        "cache",
    ])
    .expect_err("no service");
    assert!(err.contains("--service"), "{err}");
    let err = parse(&[
        "--discovery",
        "endpointslices",
        "--service",
        "s",
        "--namespace",
        "n",
    ])
    .expect_err("no member list");
    assert!(err.contains("needs a member list"), "{err}");
    let err = parse(&["--discovery", "gossip"]).expect_err("unknown kind");
    assert!(err.contains("gossip"), "{err}");
    let flags = cli(&["--members", "a", "--discovery", "dns", "--service", "s"]);
    let err = flags.discovery_config(|| None).expect_err("no namespace");
    assert!(err.to_string().contains("--namespace"), "{err}");
    let from_pod = flags
        .discovery_config(|| Some("pod-ns".into()))
        .expect("pod");
    assert!(
        matches!(from_pod, DiscoveryConfig::Dns(DnsNames { namespace, .. }) if namespace == "pod-ns")
    );
}

#[test]
fn auth_is_off_unless_a_directory_is_given() {
    assert_eq!(parse(&[]).expect("defaults").auth_dir, None);
    let config = parse(&["--auth-dir", "/etc/kache/auth"]).expect("a directory");
    assert_eq!(config.auth_dir, Some(PathBuf::from("/etc/kache/auth")));
    let cli = Cli::try_parse_from_env([(env::AUTH_DIR, "/etc/kache/auth")]).expect("env");
    assert_eq!(cli.auth_dir, Some(PathBuf::from("/etc/kache/auth")));
}

#[test]
fn the_log_format_is_text_json_or_a_clear_error() {
    assert_eq!(cli(&[]).log_format, LogFormat::Text);
    assert_eq!(cli(&["--log-format", "json"]).log_format, LogFormat::Json);
    let from_env = Cli::try_parse_from_env([(env::LOG_FORMAT, "json")]).expect("valid");
    assert_eq!(from_env.log_format, LogFormat::Json);
    let err = Cli::try_parse_from(["kache-node", "--log-format", "yaml"])
        .expect_err("not a format")
        .to_string();
    let first_line = err.lines().next().unwrap_or_default();
    assert!(
        first_line.contains("--log-format")
            && first_line.contains("'yaml'")
            && first_line.contains("expected text or json"),
        "main prints only this line: {first_line}"
    );
}
