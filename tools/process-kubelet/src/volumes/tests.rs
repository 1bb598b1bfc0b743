//! Where a container sees its volumes, on real directories under the temp dir: parents before
//! nested mount points, subPaths created and kept inside their volume, host mount points made
//! and removed, and a mount that covers other mounts' sources after them.

use super::*;
use k8s_openapi::api::core::v1::VolumeMount;

#[test]
fn mounts_are_ordered_and_nested_mount_points_live_in_the_parent_volume() {
    let tmp = std::env::temp_dir().join(format!("kache-vol-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let data = tmp.join("data");
    let conf = tmp.join("conf");
    fs::create_dir_all(&data).unwrap();
    fs::create_dir_all(&conf).unwrap();
    let hosts = tmp.join("hosts");
    fs::write(&hosts, "x").unwrap();
    let vols = VolumeDirs {
        dirs: BTreeMap::from([
            ("data".to_string(), data.clone()),
            ("conf".to_string(), conf),
        ]),
    };
    let host_target = tmp.join("host-root/app");
    let nested = host_target.join("conf");
    let c = Container {
        name: "c".into(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "conf".into(),
                mount_path: nested.display().to_string(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: host_target.display().to_string(),
                ..Default::default()
            },
            VolumeMount {
                name: "data".into(),
                mount_path: tmp.join("sub").display().to_string(),
                sub_path: Some("x/y".into()),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let mp = Mountpoints::default();
    let mounts = vols
        .mounts_for(
            &c,
            &Environment::default(),
            Some(&hosts),
            MountRoot::Host(&mp),
        )
        .unwrap();
    let targets: Vec<_> = mounts.iter().map(|m| m.target.clone()).collect();
    assert_eq!(
        targets.last().unwrap(),
        &nested,
        "child after parent: {targets:?}"
    );
    assert!(targets.contains(&PathBuf::from("/etc/hosts")));
    assert!(
        mounts.iter().any(|m| m.source == data.join("x/y")),
        "subPath resolved and created"
    );
    assert!(
        data.join("conf").is_dir(),
        "nested mount point created inside the parent volume"
    );
    assert!(host_target.is_dir(), "host mount point created");
    mp.remove_all();
    assert!(
        !tmp.join("host-root").exists(),
        "created host mount points removed"
    );
    let bad = Container {
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/x".into(),
            sub_path: Some("../etc".into()),
            ..Default::default()
        }]),
        ..Default::default()
    };
    assert!(
        vols.mounts_for(&bad, &Environment::default(), None, MountRoot::Host(&mp))
            .is_err()
    );
    let _ = fs::remove_dir_all(&tmp);
}

#[test]
fn a_mount_that_covers_other_sources_goes_last() {
    // An emptyDir at /tmp while the volumes and /etc/hosts live under /tmp: binding
    // /tmp first would hide every later source.
    let tmp = std::env::temp_dir().join(format!("kache-cover-{}", std::process::id()));
    let _ = fs::remove_dir_all(&tmp);
    let scratch = tmp.join("scratch");
    let token = tmp.join("token");
    fs::create_dir_all(&scratch).unwrap();
    fs::create_dir_all(&token).unwrap();
    let hosts = tmp.join("hosts");
    fs::write(&hosts, "x").unwrap();
    let vols = VolumeDirs {
        dirs: BTreeMap::from([
            ("scratch".to_string(), scratch),
            ("token".to_string(), token),
        ]),
    };
    let c = Container {
        name: "c".into(),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "scratch".into(),
                mount_path: tmp.display().to_string(),
                ..Default::default()
            },
            VolumeMount {
                name: "token".into(),
                mount_path: "/var/run/secrets/kubernetes.io/serviceaccount".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    let mp = Mountpoints::default();
    let mounts = vols
        .mounts_for(
            &c,
            &Environment::default(),
            Some(&hosts),
            MountRoot::Host(&mp),
        )
        .unwrap();
    let targets: Vec<_> = mounts.iter().map(|m| m.target.clone()).collect();
    assert_eq!(targets.last().unwrap(), &tmp, "{targets:?}");
    mp.remove_all();
    let _ = fs::remove_dir_all(&tmp);
}
