//! The image store finds images by reference and unpacks their layers with whiteouts.

use std::io::Write as _;

use serde_json::json;

use super::*;

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("kache-store-{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Write a blob; its descriptor JSON.
fn blob(layout: &Path, media_type: &str, bytes: &[u8]) -> serde_json::Value {
    let hex = sha256_hex(bytes);
    let dir = layout.join("blobs/sha256");
    fs::create_dir_all(&dir).expect("blobs dir");
    fs::write(dir.join(&hex), bytes).expect("blob");
    json!({"mediaType": media_type, "digest": format!("sha256:{hex}"), "size": bytes.len()})
}

/// A tar of (path, contents); `None` contents make a directory.
fn tar_of(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, contents) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        match contents {
            Some(text) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(text.len() as u64);
                header.set_mode(0o755);
                builder
                    .append_data(&mut header, path, text.as_bytes())
                    .expect("file entry");
            }
            None => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                header.set_mode(0o755);
                builder
                    .append_data(&mut header, path, std::io::empty())
                    .expect("dir entry");
            }
        }
    }
    builder.into_inner().expect("tar")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).expect("gzip");
    gz.finish().expect("gzip")
}

/// A layout at `layout` holding one image named `refs`, with `layers`.
fn write_image(layout: &Path, refs: &[&str], layers: &[Vec<u8>]) -> String {
    fs::write(
        layout.join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("oci-layout");
    let config = json!({
        "architecture": "amd64", "os": "linux",
        "config": {"User": "65532:65532", "Entrypoint": ["/usr/local/bin/app"], "Env": ["A=1"],
                   "Labels": {"org.opencontainers.image.title": refs.first()}},
        "rootfs": {"type": "layers", "diff_ids": []}
    });
    let config = blob(
        layout,
        "application/vnd.oci.image.config.v1+json",
        config.to_string().as_bytes(),
    );
    let layers: Vec<_> = layers
        .iter()
        .map(|l| {
            let gz = l.starts_with(&[0x1f, 0x8b]);
            let mt = if gz {
                "application/vnd.oci.image.layer.v1.tar+gzip"
            } else {
                "application/vnd.oci.image.layer.v1.tar"
            };
            blob(layout, mt, l)
        })
        .collect();
    let manifest = json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": config, "layers": layers
    });
    let mut descriptor = blob(
        layout,
        "application/vnd.oci.image.manifest.v1+json",
        manifest.to_string().as_bytes(),
    );
    let digest = descriptor["digest"].as_str().expect("digest").to_string();
    let manifests: Vec<_> = refs
        .iter()
        .map(|r| {
            descriptor["annotations"] = json!({ANNOTATION_REF_NAME: r});
            descriptor.clone()
        })
        .collect();
    let index = json!({"schemaVersion": 2, "manifests": manifests});
    fs::write(layout.join("index.json"), index.to_string()).expect("index");
    digest
}

#[test]
fn references_fold_docker_hub_and_default_the_tag() {
    let r = Reference::parse("docker.io/library/busybox");
    assert_eq!(
        (r.name.as_str(), r.tag.as_deref(), r.digest),
        ("busybox", Some("latest"), None)
    );
    let r = Reference::parse("registry:5000/team/app:v1");
    assert_eq!(
        (r.name.as_str(), r.tag.as_deref()),
        ("registry:5000/team/app", Some("v1"))
    );
    let r = Reference::parse("kache/node@sha256:abc");
    assert_eq!((r.tag, r.digest.as_deref()), (None, Some("sha256:abc")));
    assert!(Reference::parse("docker.io/kache/node:0.1.0").matches("kache/node:0.1.0", "x"));
    assert!(!Reference::parse("kache/node:0.2.0").matches("kache/node:0.1.0", "x"));
    assert!(!Reference::parse("kache/operator:0.1.0").matches("kache/node:0.1.0", "x"));
    assert!(Reference::parse("kache/node").matches("kache/node:latest", "x"));
    assert!(Reference::parse("kache/node@sha256:d").matches("kache/node:0.1.0", "sha256:d"));
}

#[test]
fn finds_images_by_name_tag_or_digest_in_any_layout_of_the_store() {
    let root = tmp("find");
    let store = ImageStore::new(&root);
    assert!(
        store
            .find("kache/node:0.1.0")
            .expect("empty store")
            .is_none()
    );
    assert!(
        ImageStore::new(root.join("missing"))
            .find("x")
            .expect("no dir")
            .is_none()
    );
    for (dir, name) in [
        ("kache-node", "kache/node:0.1.0"),
        ("kache-operator", "kache/operator:0.1.0"),
    ] {
        fs::create_dir_all(root.join(dir)).expect("layout dir");
        write_image(&root.join(dir), &[name], &[tar_of(&[("usr/", None)])]);
    }
    let found = store
        .find("docker.io/kache/operator:0.1.0")
        .expect("find")
        .expect("found");
    assert!(found.layout.ends_with("kache-operator"));
    assert_eq!(
        found.runtime_config().entrypoint().clone(),
        Some(vec!["/usr/local/bin/app".to_string()])
    );
    let by_digest = store
        .find(&format!("kache/node@{}", found.digest))
        .expect("find");
    assert!(
        by_digest.is_none(),
        "the operator's digest is not kache/node"
    );
    let node = store
        .find("kache/node:0.1.0")
        .expect("find")
        .expect("found");
    assert!(
        store
            .find(&format!("kache/node@{}", node.digest))
            .expect("find")
            .is_some()
    );
    assert!(store.find("kache/node:9.9.9").expect("find").is_none());
    let mut refs = store.references();
    refs.sort();
    assert_eq!(refs, ["kache/node:0.1.0", "kache/operator:0.1.0"]);
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn unpack_applies_layers_in_order_with_whiteouts() {
    let root = tmp("unpack");
    let lower = gzip(&tar_of(&[
        ("usr/", None),
        ("usr/local/bin/app", Some("#!app")),
        ("etc/", None),
        ("etc/gone", Some("x")),
        ("etc/kept", Some("y")),
        ("opt/", None),
        ("opt/old", Some("z")),
    ]));
    let upper = tar_of(&[
        ("etc/.wh.gone", Some("")),
        ("opt/.wh..wh..opq", Some("")),
        ("opt/new", Some("n")),
    ]);
    let layout = root.join("layout");
    fs::create_dir_all(&layout).expect("layout");
    write_image(&layout, &["app:1"], &[lower, upper]);
    let image = ImageStore::new(&root)
        .find("app:1")
        .expect("find")
        .expect("found");
    let rootfs = root.join("rootfs");
    ImageStore::unpack(&image, &rootfs).expect("unpack");
    assert_eq!(
        fs::read_to_string(rootfs.join("usr/local/bin/app")).expect("app"),
        "#!app"
    );
    assert!(!rootfs.join("etc/gone").exists(), "whiteout deletes");
    assert!(
        !rootfs.join("etc/.wh.gone").exists(),
        "whiteouts are not files"
    );
    assert!(rootfs.join("etc/kept").exists());
    assert!(
        !rootfs.join("opt/old").exists(),
        "opaque dir hides the lower layer"
    );
    assert!(rootfs.join("opt/new").exists());
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_corrupt_layer_fails_its_digest_check() {
    let root = tmp("corrupt");
    let layer = tar_of(&[("f", Some("original"))]);
    let digest = sha256_hex(&layer);
    write_image(&root, &["app:1"], std::slice::from_ref(&layer));
    let image = ImageStore::new(&root)
        .find("app:1")
        .expect("find")
        .expect("found");
    let mut edited = layer;
    let at = edited
        .windows(8)
        .position(|w| w == b"original")
        .expect("content");
    edited[at..at + 8].copy_from_slice(b"modified");
    fs::write(root.join("blobs/sha256").join(&digest), &edited).expect("edit");
    let err = ImageStore::unpack(&image, &root.join("rootfs")).expect_err("corrupt");
    assert!(matches!(err, StoreError::DigestMismatch { .. }), "{err}");
    let _ = fs::remove_dir_all(&root);
}

#[test]
fn a_whiteout_under_a_symlink_never_reaches_outside_the_root() {
    let root = tmp("whiteout-symlink");
    let outside = root.join("outside");
    fs::create_dir_all(&outside).expect("outside dir");
    fs::write(outside.join("victim"), "keep me").expect("victim");
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    header.set_mode(0o777);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    builder
        .append_link(&mut header, "etc", &outside)
        .expect("symlink entry");
    let lower = builder.into_inner().expect("tar");
    let upper = tar_of(&[("etc/.wh.victim", Some(""))]);
    let layout = root.join("layout");
    fs::create_dir_all(&layout).expect("layout");
    write_image(&layout, &["evil:1"], &[lower, upper]);
    let image = ImageStore::new(&root)
        .find("evil:1")
        .expect("find")
        .expect("found");
    let err = ImageStore::unpack(&image, &root.join("rootfs")).expect_err("refused");
    assert!(matches!(err, StoreError::Unsupported(_)), "{err}");
    assert!(
        outside.join("victim").exists(),
        "nothing outside the root was deleted"
    );
    let _ = fs::remove_dir_all(&root);
}
