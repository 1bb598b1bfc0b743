//! Test certificates made with rcgen: a CA per cluster and member leaves in the
//! contract's layout (`ca.crt`, `<node-id>.crt`/`.key`, or `tls.crt`/`tls.key`). Shared by
//! the integration tests and, through `#[path]`, by the node's unit tests.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    dead_code,
    reason = "test helper: each test uses part of it, and a failed step fails the test"
)]

use std::path::Path;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, SanType,
};

/// A certificate authority: one cluster's trust root.
pub struct Ca {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A leaf carrying `uris` (e.g. `kache://<cluster>/<member>`) and a DNS name, for
    /// both server and client authentication.
    pub fn leaf(&self, uris: &[&str]) -> Leaf {
        let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "kache");
        params
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        for uri in uris {
            params
                .subject_alt_names
                .push(SanType::URI((*uri).try_into().unwrap()));
        }
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
        }
    }

    /// A peer TLS directory for members `ids` of `cluster`: `ca.crt` and
    /// `<id>.crt`/`<id>.key` for each, written at `dir` (created if needed).
    pub fn write_member_dir(&self, dir: &Path, cluster: &str, ids: &[&str]) {
        std::fs::create_dir_all(dir).unwrap();
        write_atomically(&dir.join("ca.crt"), &self.pem());
        for id in ids {
            let leaf = self.leaf(&[&format!("kache://{cluster}/{id}")]);
            leaf.write(dir, id);
        }
    }
}

impl Leaf {
    /// Writes `<name>.crt` and `<name>.key` in `dir`, each replaced in one rename.
    pub fn write(&self, dir: &Path, name: &str) {
        write_atomically(&dir.join(format!("{name}.crt")), &self.cert);
        write_atomically(&dir.join(format!("{name}.key")), &self.key);
    }
}

/// Writes `content` to `path` through a temporary file and a rename.
pub fn write_atomically(path: &Path, content: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, content).unwrap();
    std::fs::rename(tmp, path).unwrap();
}
