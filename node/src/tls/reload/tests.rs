use std::os::unix::fs::symlink;

use super::*;

#[path = "../../../tests/common/certs.rs"]
mod certs;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn a_bad_set_keeps_the_old_one_and_a_good_one_replaces_it() {
    let dir = temp_dir();
    let ca = certs::Ca::new("ca");
    ca.write_member_dir(dir.path(), "uid", &["node-0"]);
    let reloader = Reloader::load(dir.path(), "node-0", true, provider()).expect("valid set");
    let first = reloader.served();
    assert!(!reloader.reload(), "unchanged files are not swapped");

    for (file, garbage) in [
        (
            "node-0.key",
            "-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n",
        ),
        ("node-0.crt", "no certificate here"),
        ("ca.crt", ""),
    ] {
        let good = std::fs::read_to_string(dir.path().join(file)).expect("read");
        certs::write_atomically(&dir.path().join(file), garbage);
        assert!(!reloader.reload(), "{file}: a bad set is not swapped in");
        assert_eq!(reloader.served(), first, "{file}: the old set stays");
        certs::write_atomically(&dir.path().join(file), &good);
        reloader.reload();
    }

    // A key of another certificate: parses, but does not match.
    let other = ca.leaf(&["kache://uid/node-0"]);
    certs::write_atomically(&dir.path().join("node-0.key"), &other.key);
    assert!(
        !reloader.reload(),
        "a key that does not match its certificate"
    );
    assert_eq!(reloader.served(), first);

    other.write(dir.path(), "node-0");
    assert!(reloader.reload(), "a valid new set is swapped in");
    let second = reloader.served();
    assert_ne!(second.sha256, first.sha256);
    assert_eq!(second.sha256.len(), 64, "hex SHA-256");
    assert!(second.not_after.ends_with('Z'), "{}", second.not_after);
}

#[test]
fn the_first_load_fails_on_a_missing_or_bad_set() {
    let dir = temp_dir();
    let missing = Reloader::load(dir.path(), "node-0", true, provider());
    assert!(matches!(missing, Err(TlsError::Read { .. })), "{missing:?}");
    let ca = certs::Ca::new("ca");
    ca.leaf(&[]).write(dir.path(), "tls");
    let no_ca = Reloader::load(dir.path(), "node-0", true, provider());
    assert!(
        matches!(no_ca, Err(TlsError::Read { .. })),
        "ca.crt is required"
    );
    Reloader::load(dir.path(), "node-0", false, provider())
        .expect("the client port needs no ca.crt");
}

#[test]
fn the_node_s_own_pair_wins_over_the_shared_one() {
    let dir = temp_dir();
    let ca = certs::Ca::new("ca");
    certs::write_atomically(&dir.path().join("ca.crt"), &ca.pem());
    ca.leaf(&["kache://uid/*"]).write(dir.path(), "tls");
    let shared = Reloader::load(dir.path(), "node-0", true, provider()).expect("tls.crt");
    ca.leaf(&["kache://uid/node-0"]).write(dir.path(), "node-0");
    let own = Reloader::load(dir.path(), "node-0", true, provider()).expect("node-0.crt");
    assert_ne!(own.served(), shared.served());
    let other = Reloader::load(dir.path(), "node-1", true, provider()).expect("tls.crt");
    assert_eq!(
        other.served(),
        shared.served(),
        "node-1 has no pair of its own"
    );
}

/// The layout of a Kubernetes Secret volume: files in `..<timestamp>/`, `..data` pointing
/// at it, top-level symlinks through `..data`; an update swaps `..data`.
#[test]
fn a_secret_volume_is_read_through_its_top_level_names_and_follows_a_swap() {
    let dir = temp_dir();
    let ca = certs::Ca::new("ca");
    let version = |name: &str| {
        let inner = dir.path().join(name);
        std::fs::create_dir(&inner).expect("mkdir");
        certs::write_atomically(&inner.join("ca.crt"), &ca.pem());
        ca.leaf(&["kache://uid/*"]).write(&inner, "tls");
    };
    version("..2026_01_01_00_00_00.1");
    symlink("..2026_01_01_00_00_00.1", dir.path().join("..data")).expect("symlink");
    for file in ["ca.crt", "tls.crt", "tls.key"] {
        symlink(format!("..data/{file}"), dir.path().join(file)).expect("symlink");
    }
    // A node whose id looks like a Secret's hidden names never reads them as its pair.
    ca.leaf(&["kache://uid/*"]).write(dir.path(), "..data");
    let reloader = Reloader::load(dir.path(), "..data", true, provider()).expect("valid set");
    let first = reloader.served();
    let shared = Reloader::load(dir.path(), "node-x", true, provider()).expect("valid set");
    assert_eq!(first, shared.served(), "tls.crt, not ..data.crt");

    version("..2026_01_02_00_00_00.2");
    symlink("..2026_01_02_00_00_00.2", dir.path().join("..data_tmp")).expect("symlink");
    std::fs::rename(dir.path().join("..data_tmp"), dir.path().join("..data")).expect("swap");
    assert!(reloader.reload(), "the swapped set is read");
    assert_ne!(reloader.served(), first);
}
