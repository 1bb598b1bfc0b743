//! The certificates, parsed back: names, key usages, validity, and that each leaf
//! verifies against its CA (with webpki, as rustls on the nodes will) and not another's.

use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{ALL_VERIFICATION_ALGS, EndEntityCert, KeyUsage};
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

use super::*;

const UID: &str = "0b1e4c52-5a3c-4f4e-9a57-6c3c1b2e7d10";

fn names() -> Names {
    Names {
        cluster: "demo".to_owned(),
        namespace: "shop".to_owned(),
    }
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn der(pem: &str) -> Vec<u8> {
    x509_parser::pem::parse_x509_pem(pem.as_bytes())
        .unwrap()
        .1
        .contents
}

/// Verifies `leaf` up to `ca` for `usage` at `at`, as a TLS peer would.
fn verify(ca: &Ca, leaf: &Leaf, usage: KeyUsage, at: Timestamp) -> Result<(), webpki::Error> {
    let ca_der = CertificateDer::from(der(&ca.cert_pem));
    let anchor = webpki::anchor_from_trusted_cert(&ca_der)?;
    let leaf_der = CertificateDer::from(der(&leaf.cert_pem));
    let cert = EndEntityCert::try_from(&leaf_der)?;
    let time = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
        u64::try_from(at.as_second()).unwrap(),
    ));
    cert.verify_for_usage(
        ALL_VERIFICATION_ALGS,
        &[anchor],
        &[],
        time,
        usage,
        None,
        None,
    )
    .map(|_| ())
}

fn extended_key_usage(pem: &str) -> (bool, bool) {
    let der = der(pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let mut found = (false, false);
    for extension in cert.extensions() {
        if let ParsedExtension::ExtendedKeyUsage(eku) = extension.parsed_extension() {
            found = (eku.server_auth, eku.client_auth);
            assert!(eku.other.is_empty(), "{:?}", eku.other);
        }
    }
    found
}

#[test]
fn the_ca_is_a_ten_year_p256_ca_that_signs_leaves_only() {
    let ca = new_ca(&names(), UID, now()).unwrap();
    let der = der(&ca.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let constraints = cert.basic_constraints().unwrap().unwrap().value;
    assert!(constraints.ca);
    assert_eq!(constraints.path_len_constraint, Some(0));
    let validity = cert.validity();
    let days = (validity.not_after.timestamp() - validity.not_before.timestamp()) / DAY_SECONDS;
    assert_eq!(days, CA_VALIDITY_DAYS, "10 years, plus the backdating");
    assert_eq!(
        cert.public_key().algorithm.algorithm,
        x509_parser::oid_registry::OID_KEY_TYPE_EC_PUBLIC_KEY
    );
    assert!(cert.subject().to_string().contains("kache CA shop/demo"));
    assert!(cert.subject().to_string().contains(UID));
    assert!(ca.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    assert_eq!(format!("{ca:?}"), "Ca { .. }", "no key in a log line");
}

#[test]
fn a_peer_leaf_names_its_member_and_cluster_and_verifies_both_ways() {
    let ca = new_ca(&names(), UID, now()).unwrap();
    let spec = peer_leaf_spec(&names(), UID, "demo-2");
    let leaf = issue(&ca, &spec, now()).unwrap();
    let der = der(&leaf.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let (uris, dns) = san_names(&cert);
    assert_eq!(uris, [format!("kache://{UID}/demo-2")]);
    assert_eq!(
        dns,
        [
            "demo-2.demo-peers.shop.svc",
            "demo-2.demo-peers.shop.svc.cluster.local"
        ]
    );
    assert_eq!(extended_key_usage(&leaf.cert_pem), (true, true));
    let validity = cert.validity();
    assert_eq!(
        validity.not_after.timestamp() - now().as_second(),
        LEAF_VALIDITY_DAYS * DAY_SECONDS
    );
    assert!(validity.not_before.timestamp() < now().as_second());
    assert!(
        leaf.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"),
        "PKCS#8"
    );

    verify(&ca, &leaf, KeyUsage::server_auth(), now()).expect("a server certificate");
    verify(&ca, &leaf, KeyUsage::client_auth(), now()).expect("a client certificate");
    let leaf_der = CertificateDer::from(der.clone());
    EndEntityCert::try_from(&leaf_der)
        .unwrap()
        .verify_is_valid_for_subject_name(
            &ServerName::try_from("demo-2.demo-peers.shop.svc").unwrap(),
        )
        .expect("the name the operator connects to");

    let another = new_ca(&names(), UID, now()).unwrap();
    assert!(verify(&another, &leaf, KeyUsage::server_auth(), now()).is_err());
    let expired = Timestamp::from_second(now().as_second() + 91 * DAY_SECONDS).unwrap();
    assert!(verify(&ca, &leaf, KeyUsage::server_auth(), expired).is_err());
}

#[test]
fn a_client_leaf_serves_the_client_service_and_cannot_pass_as_a_member() {
    let ca = new_ca(&names(), UID, now()).unwrap();
    let leaf = issue(&ca, &client_leaf_spec(&names(), "demo-0"), now()).unwrap();
    let der = der(&leaf.cert_pem);
    let (_, cert) = X509Certificate::from_der(&der).unwrap();
    let (uris, dns) = san_names(&cert);
    assert!(uris.is_empty(), "no kache:// identity: {uris:?}");
    for name in [
        "demo",
        "demo.shop",
        "demo.shop.svc",
        "demo.shop.svc.cluster.local",
        "demo-0.demo-peers.shop.svc",
    ] {
        assert!(dns.iter().any(|d| d == name), "{name} in {dns:?}");
    }
    assert_eq!(extended_key_usage(&leaf.cert_pem), (true, false));
    verify(&ca, &leaf, KeyUsage::server_auth(), now()).expect("serves TLS");
    assert!(
        verify(&ca, &leaf, KeyUsage::client_auth(), now()).is_err(),
        "not a client certificate"
    );
}

#[test]
fn leaves_are_reissued_with_a_third_of_their_life_left_or_when_they_no_longer_fit() {
    let ca = new_ca(&names(), UID, now()).unwrap();
    let spec = peer_leaf_spec(&names(), UID, "demo-0");
    let leaf = issue(&ca, &spec, now()).unwrap();
    let at_day = |day: i64| Timestamp::from_second(now().as_second() + day * DAY_SECONDS).unwrap();
    let pem = leaf.cert_pem.as_bytes();
    assert_eq!(reissue_reason(pem, &ca, &spec, now()), None);
    assert_eq!(reissue_reason(pem, &ca, &spec, at_day(59)), None);
    assert_eq!(
        reissue_reason(pem, &ca, &spec, at_day(61)),
        Some("a third of its life is left")
    );
    let other_pod = peer_leaf_spec(&names(), UID, "demo-1");
    assert_eq!(
        reissue_reason(pem, &ca, &other_pod, now()),
        Some("names changed")
    );
    let other_cluster = peer_leaf_spec(&names(), "another-uid", "demo-0");
    assert_eq!(
        reissue_reason(pem, &ca, &other_cluster, now()),
        Some("names changed")
    );
    let another = new_ca(&names(), UID, now()).unwrap();
    assert_eq!(
        reissue_reason(pem, &another, &spec, now()),
        Some("signed by another CA")
    );
    assert_eq!(
        reissue_reason(b"not a certificate", &ca, &spec, now()),
        Some("unreadable")
    );
}

fn data(entries: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
    entries
        .iter()
        .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
        .collect()
}

#[test]
fn a_user_secret_must_have_the_nodes_layout() {
    let ca = new_ca(&names(), UID, now()).unwrap();
    let leaf = issue(&ca, &peer_leaf_spec(&names(), UID, "demo-0"), now()).unwrap();
    let pods = ["demo-0".to_owned(), "demo-1".to_owned()];
    let (crt, key) = (leaf.cert_pem.as_str(), leaf.key_pem.as_str());
    let ca_crt = ca.cert_pem.as_str();

    let shared = data(&[("ca.crt", ca_crt), ("tls.crt", crt), ("tls.key", key)]);
    assert_eq!(check_layout(&shared, &pods), Ok(()));
    let per_pod = data(&[
        ("ca.crt", ca_crt),
        ("demo-0.crt", crt),
        ("demo-0.key", key),
        ("demo-1.crt", crt),
        ("demo-1.key", key),
    ]);
    assert_eq!(check_layout(&per_pod, &pods), Ok(()));

    let missing_pod = data(&[("ca.crt", ca_crt), ("demo-0.crt", crt), ("demo-0.key", key)]);
    assert_eq!(
        check_layout(&missing_pod, &pods),
        Err(LayoutError::NoCertificateFor {
            pod: "demo-1".to_owned()
        })
    );
    let no_ca = data(&[("tls.crt", crt), ("tls.key", key)]);
    assert_eq!(check_layout(&no_ca, &pods), Err(LayoutError::NoCa));
    let swapped = data(&[("ca.crt", ca_crt), ("tls.crt", key), ("tls.key", crt)]);
    assert_eq!(
        check_layout(&swapped, &pods),
        Err(LayoutError::NotCertificate("tls.crt".to_owned()))
    );
    let bad_key = data(&[("ca.crt", ca_crt), ("tls.crt", crt), ("tls.key", crt)]);
    let error = check_layout(&bad_key, &pods).unwrap_err();
    assert_eq!(error, LayoutError::NotKey("tls.key".to_owned()));
    assert!(
        !error.to_string().contains("BEGIN"),
        "names keys, never content"
    );
}
