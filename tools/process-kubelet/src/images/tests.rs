//! Image mapping: names without tag or digest (keeping a registry port), lookups across tags
//! and Docker Hub prefixes, bad mappings refused, and how `command`/`args` make the argv.

use super::*;

fn map() -> ImageMap {
    ImageMap::parse(&[
        "kache/node=/build/kache-node",
        "busybox:1.36=/bin/busybox",
        "/opt/tool=/host/tool",
    ])
    .unwrap()
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn image_name_strips_tag_and_digest_but_not_registry_port() {
    assert_eq!(image_name("kache/node:v1"), "kache/node");
    assert_eq!(image_name("kache/node@sha256:abc"), "kache/node");
    assert_eq!(image_name("kache/node:v1@sha256:abc"), "kache/node");
    assert_eq!(image_name("reg:5000/kache/node"), "reg:5000/kache/node");
    assert_eq!(image_name("reg:5000/kache/node:v2"), "reg:5000/kache/node");
    assert_eq!(image_name("busybox"), "busybox");
}

#[test]
fn lookup_ignores_tags_and_docker_hub_prefixes() {
    let m = map();
    assert_eq!(
        m.lookup("kache/node:latest"),
        Some(Path::new("/build/kache-node"))
    );
    assert_eq!(
        m.lookup("docker.io/kache/node"),
        Some(Path::new("/build/kache-node"))
    );
    assert_eq!(
        m.lookup("docker.io/library/busybox:2"),
        Some(Path::new("/bin/busybox"))
    );
    assert_eq!(m.lookup("kache/operator"), None);
}

#[test]
fn bad_mappings_are_rejected() {
    assert!(matches!(
        ImageMap::parse(&["nopath"]),
        Err(ImageError::BadMapping(_))
    ));
    assert!(matches!(
        ImageMap::parse(&["=x"]),
        Err(ImageError::BadMapping(_))
    ));
    assert!(matches!(
        ImageMap::parse(&["x="]),
        Err(ImageError::BadMapping(_))
    ));
}

#[test]
fn no_command_runs_the_mapped_binary_with_args() {
    let argv = map()
        .argv(Some("kache/node:v1"), &[], &s(&["--port", "80"]), |_| false)
        .unwrap();
    assert_eq!(argv, s(&["/build/kache-node", "--port", "80"]));
}

#[test]
fn command_replaces_the_entrypoint_and_resolves_through_the_map() {
    let m = map();
    let none = |_: &Path| false;
    // the in-image path of the image's own binary
    let argv = m
        .argv(
            Some("kache/node"),
            &s(&["/usr/local/bin/kache-node", "serve"]),
            &s(&["-v"]),
            none,
        )
        .unwrap();
    assert_eq!(argv, s(&["/build/kache-node", "serve", "-v"]));
    // the image's last segment as a command name
    let argv = m
        .argv(Some("kache/node"), &s(&["node"]), &[], none)
        .unwrap();
    assert_eq!(argv, s(&["/build/kache-node"]));
    // an exact key of the map
    let argv = m
        .argv(Some("kache/node"), &s(&["/opt/tool", "x"]), &[], none)
        .unwrap();
    assert_eq!(argv, s(&["/host/tool", "x"]));
    // a bare name stays for PATH lookup
    let argv = m
        .argv(Some("busybox"), &s(&["sleep", "5"]), &[], none)
        .unwrap();
    assert_eq!(argv, s(&["sleep", "5"]));
    // an absolute path that exists is used as-is
    let argv = m
        .argv(Some("busybox"), &s(&["/bin/true"]), &[], |p| {
            p == Path::new("/bin/true")
        })
        .unwrap();
    assert_eq!(argv, s(&["/bin/true"]));
}

#[test]
fn unmapped_image_and_unknown_command_are_errors() {
    let m = map();
    let err = m
        .argv(Some("kache/operator:v1"), &[], &[], |_| true)
        .unwrap_err();
    assert_eq!(
        err,
        ImageError::Unmapped {
            image: "kache/operator:v1".into(),
            name: "kache/operator".into()
        }
    );
    assert_eq!(
        m.argv(None, &[], &[], |_| true).unwrap_err(),
        ImageError::NoImage
    );
    let err = m
        .argv(Some("kache/node"), &s(&["/nope/bin"]), &[], |_| false)
        .unwrap_err();
    assert_eq!(err, ImageError::CommandNotFound("/nope/bin".into()));
}
