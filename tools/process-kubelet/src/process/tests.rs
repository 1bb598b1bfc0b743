//! Container processes: the wrapper script (quoting, mounts before entering the netns, host
//! network, a program opened before a mount covers it, run for real through bash; a container
//! root with its mounts, read-only bind and user), exit codes, and stopping a real process group.

use super::*;

fn spec() -> LaunchSpec {
    LaunchSpec {
        argv: vec!["/bin/echo".into(), "it's $(X)".into()],
        env: vec![("A".into(), "1".into())],
        working_dir: Some("/srv/app".into()),
        rootfs: None,
        mounts: vec![
            Mount {
                source: "/state/vol/sa".into(),
                target: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                read_only: true,
            },
            Mount {
                source: "/state/o'dd".into(),
                target: "/data".into(),
                read_only: false,
            },
        ],
        hostname: "web-0".into(),
        netns: Some("/var/run/netns/kpod-abc".into()),
        log: "/tmp/x.log".into(),
        open_program_first: false,
    }
}

#[test]
fn quoting_survives_single_quotes() {
    assert_eq!(shell_quote("plain"), "'plain'");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
}

#[test]
fn script_mounts_then_execs_into_the_netns() {
    let s = wrapper_script(&spec(), "/bin/mount", "/usr/bin/env", "/usr/bin/nsenter");
    let want = "set -e\n\
        /bin/mount --bind -o ro -- '/state/vol/sa' '/var/run/secrets/kubernetes.io/serviceaccount'\n\
        /bin/mount --bind -- '/state/o'\\''dd' '/data'\n\
        printf %s 'web-0' > /proc/sys/kernel/hostname\n\
        cd -- '/srv/app'\n\
        exec /usr/bin/env -u SHLVL -u PWD -u OLDPWD /usr/bin/nsenter '--net=/var/run/netns/kpod-abc' -- \"$@\"\n";
    assert_eq!(s, want);
}

#[test]
fn host_network_skips_nsenter_and_argv_is_passed_verbatim() {
    let mut sp = spec();
    sp.netns = None;
    sp.working_dir = None;
    let s = wrapper_script(&sp, "mount", "env", "nsenter");
    assert!(
        s.ends_with("exec env -u SHLVL -u PWD -u OLDPWD \"$@\"\n"),
        "{s}"
    );
    let argv = launch_argv(&sp);
    assert!(argv[0].ends_with("unshare"));
    assert_eq!(
        &argv[argv.len() - 3..],
        &["kache-container", "/bin/echo", "it's $(X)"]
    );
}

#[test]
fn exit_codes() {
    assert_eq!(exit_info(ExitStatus::from_raw(3 << 8)), (3, None));
    assert_eq!(exit_info(ExitStatus::from_raw(9)), (137, Some(9)));
    assert_eq!(exit_info(ExitStatus::from_raw(15)), (143, Some(15)));
}

#[tokio::test]
async fn stop_terminates_the_process_group() {
    // A plain process (no namespaces) is enough to check the signalling.
    let child = Command::new("sleep")
        .arg("30")
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let mut p = Process {
        child,
        pid,
        exited: None,
    };
    let status = p.stop(Duration::from_secs(5)).await;
    assert_eq!(exit_info(status), (143, Some(15)));
    assert_eq!(
        exit_info(p.wait().await),
        (143, Some(15)),
        "wait after stop returns the same status"
    );
}

#[test]
fn a_program_under_a_mount_is_opened_before_mounting() {
    let mut sp = spec();
    sp.open_program_first = true;
    let s = wrapper_script(&sp, "/bin/mount", "/usr/bin/env", "/usr/bin/nsenter");
    let open = s.find("exec 9<").expect("opens the program");
    let first_mount = s.find("/bin/mount").expect("mounts");
    assert!(open < first_mount, "{s}");
    assert!(s.contains("set -- /proc/self/fd/9 \"$@\""), "{s}");
}

#[test]
fn a_program_opened_first_still_runs_after_its_path_is_covered() {
    // Run the wrapper's opening lines for real: exec through the descriptor.
    let mut sp = spec();
    sp.open_program_first = true;
    sp.mounts.clear();
    sp.netns = None;
    sp.working_dir = None;
    let script = wrapper_script(&sp, "mount", "env", "nsenter");
    let out = std::process::Command::new("bash")
        .args(["-c", &script, "kache-container", "/bin/echo", "ran"])
        .output()
        .expect("bash");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "ran",
        "{out:?}"
    );
}

#[test]
fn a_container_root_gets_its_mounts_then_nsenter_enters_it_as_the_user() {
    let mut sp = spec();
    sp.rootfs = Some(RootFs {
        path: "/state/rootfs/c".into(),
        read_only: true,
        uid: 65532,
        gid: 65532,
    });
    let s = wrapper_script(&sp, "mount", "env", "nsenter");
    let at = |needle: &str| {
        s.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} in {s}"))
    };
    // The root is bound onto itself before anything is mounted in it...
    assert!(
        at("mount --bind -- '/state/rootfs/c' '/state/rootfs/c'\n")
            < at("proc '/state/rootfs/c'/proc")
    );
    assert!(
        s.contains("mount --bind -- /dev/null '/state/rootfs/c'/dev/null\n"),
        "{s}"
    );
    // ...volumes land under it...
    let volume = at(
        "mount --bind -o ro -- '/state/vol/sa' '/state/rootfs/c/var/run/secrets/kubernetes.io/serviceaccount'",
    );
    // ...and it turns read-only last, once every mount point exists.
    assert!(volume < at("mount -o remount,bind,ro -- '/state/rootfs/c'\n"));
    assert!(
        !s.contains("cd -- "),
        "the working dir is nsenter's --wd: {s}"
    );
    assert!(
        s.ends_with(
            "exec env -u SHLVL -u PWD -u OLDPWD nsenter '--net=/var/run/netns/kpod-abc' \
             '--root=/state/rootfs/c' '--wd=/state/rootfs/c/srv/app' --setuid 65532 --setgid 65532 -- \"$@\"\n"
        ),
        "{s}"
    );
    // Root needs no setuid; a host-network pod still enters its root.
    sp.netns = None;
    sp.working_dir = None;
    if let Some(root) = sp.rootfs.as_mut() {
        (root.uid, root.gid, root.read_only) = (0, 0, false);
    }
    let s = wrapper_script(&sp, "mount", "env", "nsenter");
    assert!(!s.contains("remount"), "{s}");
    assert!(
        s.ends_with("nsenter '--root=/state/rootfs/c' '--wd=/state/rootfs/c/' -- \"$@\"\n"),
        "{s}"
    );
}
