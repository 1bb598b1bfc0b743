//! A kache image built by scripts/build-images.sh runs the way the kubelet runs a container:
//! unpacked into its own root (no shell in it), read-only, as the image's user 65532 with no
//! capabilities, with a writable emptyDir at /tmp; `--version` answers and the node serves.
//!
//! Needs root (mounts) and `KACHE_IMAGE_STORE=<dir of OCI layouts>`, and fails without
//! them. Built only with `--features image-smoke`: tests/e2e/run.sh builds the images and
//! runs it.

use std::path::{Path, PathBuf};

use process_kubelet::ImageStore;
use process_kubelet::launch::fresh_root;
use process_kubelet::process::{LaunchSpec, Mount, Process, RootFs, exit_info};
use process_kubelet::volumes::ensure_in_root;

#[tokio::test]
async fn kache_node_image_runs_chrooted_as_its_user() {
    let store = std::env::var_os("KACHE_IMAGE_STORE")
        .expect("KACHE_IMAGE_STORE names the store scripts/build-images.sh filled");
    assert!(
        rustix::process::geteuid().is_root(),
        "the smoke test mounts and changes user: run it as root"
    );
    let reference = format!("kache/node:{}", env!("CARGO_PKG_VERSION"));
    let image = ImageStore::new(store)
        .find(&reference)
        .expect("the store is readable")
        .expect("scripts/build-images.sh built kache/node");
    let config = image.runtime_config();
    assert_eq!(config.user().as_deref(), Some("65532:65532"));
    let dir = std::env::temp_dir().join(format!("kache-image-smoke-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let rootfs = dir.join("rootfs");
    fresh_root(&image, &rootfs, true).expect("unpack");
    let no_shell = [
        "bin/sh",
        "usr/bin/sh",
        "bin/bash",
        "usr/bin/apt",
        "sbin/apk",
    ];
    for path in no_shell {
        assert!(!rootfs.join(path).exists(), "the image has no {path}");
    }
    let tmp = dir.join("tmp");
    std::fs::create_dir_all(&tmp).expect("emptyDir");
    std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o777))
        .expect("chmod");
    ensure_in_root(&rootfs, Path::new("/tmp"), true).expect("mount point");
    let mut argv = config.entrypoint().clone().expect("an entrypoint");
    argv.push("--version".into());
    let log = dir.join("smoke.log");
    let spec = LaunchSpec {
        argv,
        env: vec![("PATH".into(), "/usr/local/bin".into())],
        working_dir: Some("/".into()),
        rootfs: Some(RootFs {
            path: rootfs.clone(),
            read_only: true,
            uid: 65532,
            gid: 65532,
        }),
        mounts: vec![Mount {
            source: tmp,
            target: PathBuf::from("/tmp"),
            read_only: false,
        }],
        hostname: "image-smoke".into(),
        netns: None,
        log: log.clone(),
        open_program_first: false,
    };
    let mut process = Process::spawn(&spec, "smoke").expect("spawn");
    let status = process.wait().await;
    let output = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(exit_info(status), (0, None), "{output}");
    assert!(
        output.contains(&format!("kache-node {}", env!("CARGO_PKG_VERSION"))),
        "{output}"
    );

    // Serving (on loopback ports the kernel picks), it runs as 65532 on a read-only root.
    let mut serve = spec.clone();
    serve.argv.truncate(serve.argv.len() - 1);
    serve.argv.extend(
        [
            "--http-addr=127.0.0.1:0",
            "--grpc-addr=127.0.0.1:0",
            "--resp-addr=127.0.0.1:0",
        ]
        .map(String::from),
    );
    let mut process = Process::spawn(&serve, "serve").expect("spawn");
    let proc_dir = PathBuf::from(format!("/proc/{}", process.pid()));
    let mut status_text = String::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        status_text = std::fs::read_to_string(proc_dir.join("status")).unwrap_or_default();
        if status_text.contains("Uid:\t65532") {
            break;
        }
    }
    let mountinfo = std::fs::read_to_string(proc_dir.join("mountinfo")).unwrap_or_default();
    let running = std::fs::read_to_string(&log).unwrap_or_default();
    process.stop(std::time::Duration::from_secs(5)).await;
    assert!(
        status_text.contains("Uid:\t65532\t65532\t65532\t65532"),
        "{status_text}\n{running}"
    );
    assert!(
        status_text.contains("Gid:\t65532\t65532\t65532\t65532"),
        "{status_text}"
    );
    assert!(
        status_text.contains("CapEff:\t0000000000000000"),
        "{status_text}"
    );
    // mountinfo fields: id parent major:minor root mount-point options ...; mount points
    // are as the process sees them, inside its root.
    let options_of = |mount_point: &str| {
        mountinfo
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .filter(|f| f.len() > 5 && f[4] == mount_point)
            .map(|f| f[5].to_string())
            .next_back()
    };
    assert!(
        options_of("/").is_some_and(|o| o.split(',').any(|x| x == "ro")),
        "the root is read-only: {mountinfo}"
    );
    assert!(
        options_of("/tmp").is_some_and(|o| o.split(',').any(|x| x == "rw")),
        "the emptyDir is writable: {mountinfo}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
