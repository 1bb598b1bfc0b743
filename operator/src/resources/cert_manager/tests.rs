//! The cert-manager source without a cluster: the Certificate asked for each member, the
//! reading of what cert-manager issued (a missing or wrong key is pending, not a panic),
//! the peer Secret put together from it, and how far the StatefulSet may grow.

use k8s_openapi::jiff::Timestamp;

use super::*;
use crate::crd::IssuerKind;
use crate::resources::certs::{Ca, issue, member_uri, new_ca, peer_leaf_spec};
use crate::resources::names::tests::cache_cluster;

const UID: &str = "0b1e4c52-5a3c-4f4e-9a57-6c3c1b2e7d10";

fn issuer() -> IssuerRef {
    IssuerRef {
        name: "corp-ca".to_owned(),
        kind: IssuerKind::ClusterIssuer,
        group: "cert-manager.io".to_owned(),
    }
}

fn now() -> Timestamp {
    Timestamp::from_second(1_800_000_000).unwrap()
}

fn cc() -> CacheCluster {
    cache_cluster("replicas: 3\ntls: {peer: {issuerRef: {name: corp-ca, kind: ClusterIssuer}}}")
}

fn names() -> Names {
    Names::of(&cc())
}

/// A Secret as cert-manager writes it, for `pod`, signed by `ca`.
fn issued_secret(ca: &Ca, pod: &str) -> Secret {
    let leaf = issue(ca, &peer_leaf_spec(&names(), UID, pod), now()).unwrap();
    secret(&[
        (TLS_CERT_KEY, leaf.cert_pem.as_str()),
        (TLS_KEY_KEY, leaf.key_pem.as_str()),
        (CA_CERT_KEY, ca.cert_pem.as_str()),
    ])
}

fn secret(pairs: &[(&str, &str)]) -> Secret {
    Secret {
        data: Some(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

fn keys(secret: &Secret) -> Vec<&str> {
    secret
        .data
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

#[test]
fn each_member_gets_a_certificate_asking_for_what_the_operators_ca_would_issue() {
    let certificate = peer_certificate(&cc(), &issuer(), 2);
    let value = serde_json::to_value(&certificate).unwrap();
    assert_eq!(value["apiVersion"], "cert-manager.io/v1");
    assert_eq!(value["kind"], "Certificate");
    assert_eq!(value["metadata"]["name"], "demo-peer-2");
    assert_eq!(value["metadata"]["namespace"], "shop");
    let owner = &value["metadata"]["ownerReferences"][0];
    assert_eq!(
        (
            &owner["kind"],
            &owner["name"],
            &owner["uid"],
            &owner["controller"]
        ),
        (
            &serde_json::json!("CacheCluster"),
            &serde_json::json!("demo"),
            &serde_json::json!(UID),
            &serde_json::json!(true)
        )
    );
    assert_eq!(
        value["spec"],
        serde_json::json!({
            "secretName": "demo-peer-2",
            "issuerRef": {"name": "corp-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"},
            "uris": [format!("kache://{UID}/demo-2")],
            "dnsNames": ["demo-2.demo-peers.shop.svc", "demo-2.demo-peers.shop.svc.cluster.local"],
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "privateKey": {"algorithm": "ECDSA", "size": 256, "encoding": "PKCS8", "rotationPolicy": "Always"},
            "duration": "2160h",
            "renewBefore": "720h",
        })
    );
    // The same names as the operator's own leaf, so the nodes check the same identity.
    let leaf = peer_leaf_spec(&names(), UID, "demo-2");
    assert_eq!(value["spec"]["uris"], serde_json::json!(leaf.uris));
    assert_eq!(value["spec"]["dnsNames"], serde_json::json!(leaf.dns_names));
}

#[test]
fn a_certificate_not_ready_says_what_cert_manager_says() {
    let mut certificate = peer_certificate(&cc(), &issuer(), 0);
    assert_eq!(
        not_ready(&certificate),
        None,
        "no status yet: nothing to say"
    );
    certificate.data["status"] = serde_json::json!({"conditions": [
        {"type": "Ready", "status": "False", "reason": "Pending", "message": "Issuing certificate as Secret does not exist"}
    ]});
    assert_eq!(
        not_ready(&certificate).as_deref(),
        Some("Ready=False (Pending): Issuing certificate as Secret does not exist")
    );
    certificate.data["status"]["conditions"][0]["status"] = "True".into();
    assert_eq!(not_ready(&certificate), None);
}

#[test]
fn an_issued_secret_is_read_only_when_complete_and_right() {
    let ca = new_ca(&names(), UID, now()).unwrap();
    let uri = member_uri(UID, "demo-0");
    let good = issued_secret(&ca, "demo-0");
    let pair = issued("demo-peer-0", Some(&good), &uri).unwrap();
    assert_eq!(pair.ca_pem, ca.cert_pem.as_bytes());
    assert!(!format!("{pair:?}").contains("PRIVATE"), "no key in Debug");

    let refusal =
        |secret: Option<&Secret>, uri: &str| issued("demo-peer-0", secret, uri).unwrap_err();
    assert!(refusal(None, &uri).contains("Secret demo-peer-0 does not exist yet"));
    for key in [TLS_CERT_KEY, TLS_KEY_KEY, CA_CERT_KEY] {
        let mut partial = good.clone();
        partial.data.as_mut().unwrap().remove(key);
        let message = refusal(Some(&partial), &uri);
        assert!(message.contains(&format!("has no {key}")), "{message}");
        assert!(
            !message.contains("BEGIN"),
            "names keys, never content: {message}"
        );
    }
    let mut empty = good.clone();
    empty
        .data
        .as_mut()
        .unwrap()
        .insert(TLS_CERT_KEY.to_owned(), ByteString(Vec::new()));
    assert!(refusal(Some(&empty), &uri).contains("has no tls.crt"));

    let mut sec1 = good.clone();
    sec1.data.as_mut().unwrap().insert(
        TLS_KEY_KEY.to_owned(),
        ByteString(
            b"-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n".to_vec(),
        ),
    );
    assert!(refusal(Some(&sec1), &uri).contains("not a PKCS#8 private key"));

    let mut garbage = good.clone();
    garbage
        .data
        .as_mut()
        .unwrap()
        .insert(TLS_CERT_KEY.to_owned(), ByteString(b"not pem".to_vec()));
    assert!(refusal(Some(&garbage), &uri).contains("tls.crt holds no PEM certificate"));

    // Another member's certificate, or an issuer that dropped the URI: not this member's.
    let message = refusal(Some(&good), &member_uri(UID, "demo-1"));
    assert!(message.contains("does not carry the URI"), "{message}");
}

#[test]
fn the_peer_secret_is_in_the_nodes_layout_and_covers_only_leading_issued_ordinals() {
    let cc = cc();
    let ca = new_ca(&names(), UID, now()).unwrap();
    let pair =
        |pod: &str| issued("x", Some(&issued_secret(&ca, pod)), &member_uri(UID, pod)).unwrap();
    let all = [
        ("demo-0".to_owned(), Some(pair("demo-0"))),
        ("demo-1".to_owned(), Some(pair("demo-1"))),
    ];
    let full = aggregate(&cc, &all, None);
    assert_eq!(full.certified, 2);
    let secret = full.secret.unwrap();
    assert_eq!(secret.metadata.name.as_deref(), Some("demo-peer-tls"));
    assert_eq!(
        keys(&secret),
        [
            "ca.crt",
            "demo-0.crt",
            "demo-0.key",
            "demo-1.crt",
            "demo-1.key"
        ]
    );
    let data = secret.data.as_ref().unwrap();
    assert_eq!(data["demo-1.key"].0, all[1].1.as_ref().unwrap().key_pem);
    // One CA, once, though both Secrets carry it.
    let bundle = String::from_utf8(data["ca.crt"].0.clone()).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 1);
    assert_eq!(bundle.trim(), ca.cert_pem.trim());

    // demo-1 not issued yet and demo-2 issued: only demo-0 may run.
    let gap = [
        ("demo-0".to_owned(), Some(pair("demo-0"))),
        ("demo-1".to_owned(), None),
        ("demo-2".to_owned(), Some(pair("demo-2"))),
    ];
    let partial = aggregate(&cc, &gap, None);
    assert_eq!(partial.certified, 1);
    assert_eq!(
        keys(partial.secret.as_ref().unwrap()),
        [
            "ca.crt",
            "demo-0.crt",
            "demo-0.key",
            "demo-2.crt",
            "demo-2.key"
        ]
    );

    // Nothing issued: no Secret (without ca.crt the nodes would not start anyway).
    let none = [("demo-0".to_owned(), None)];
    assert_eq!(aggregate_of(&cc, &none, None), (None, 0),);
}

fn aggregate_of(
    cc: &CacheCluster,
    issued: &[(String, Option<Issued>)],
    existing: Option<&Secret>,
) -> (Option<Vec<String>>, u32) {
    let aggregate = aggregate(cc, issued, existing);
    (
        aggregate
            .secret
            .as_ref()
            .map(|s| keys(s).into_iter().map(str::to_owned).collect()),
        aggregate.certified,
    )
}

#[test]
fn a_member_whose_issued_secret_went_bad_keeps_the_copy_it_runs_with() {
    let cc = cc();
    let old_ca = new_ca(&names(), UID, now()).unwrap();
    let new_ca = new_ca(&names(), UID, now()).unwrap();
    let pair = |ca: &Ca, pod: &str| {
        issued("x", Some(&issued_secret(ca, pod)), &member_uri(UID, pod)).unwrap()
    };
    let before = aggregate(
        &cc,
        &[
            ("demo-0".to_owned(), Some(pair(&old_ca, "demo-0"))),
            ("demo-1".to_owned(), Some(pair(&old_ca, "demo-1"))),
        ],
        None,
    )
    .secret
    .unwrap();
    // demo-0 renewed under a new CA; demo-1's Secret was deleted.
    let after = aggregate(
        &cc,
        &[
            ("demo-0".to_owned(), Some(pair(&new_ca, "demo-0"))),
            ("demo-1".to_owned(), None),
        ],
        Some(&before),
    );
    assert_eq!(after.certified, 2, "demo-1 keeps its certificate");
    let data = after.secret.unwrap().data.unwrap();
    let old = before.data.as_ref().unwrap();
    assert_eq!(data["demo-1.crt"], old["demo-1.crt"]);
    assert_eq!(data["demo-1.key"], old["demo-1.key"]);
    assert_ne!(data["demo-0.crt"], old["demo-0.crt"]);
    // Both CAs are trusted while demo-1 still runs on the old one.
    let bundle = String::from_utf8(data["ca.crt"].0.clone()).unwrap();
    assert!(bundle.contains(new_ca.cert_pem.trim()) && bundle.contains(old_ca.cert_pem.trim()));
}

#[test]
fn the_statefulset_grows_only_as_far_as_certificates_are_issued() {
    // (planned, existing pods, certified) -> replicas
    let cases = [
        ((5, 3, None), 5),    // the operator's CA: issued synchronously
        ((5, 3, Some(5)), 5), // all issued
        ((5, 3, Some(4)), 4), // demo-4 pending
        ((5, 3, Some(0)), 3), // nothing usable: never fewer than run
        ((3, 0, Some(0)), 0), // a new cluster waits for its first certificate
        ((2, 5, Some(0)), 2), // a scale-down is the plan's, certificates or not
        ((2, 5, Some(5)), 2),
    ];
    for ((planned, existing, certified), want) in cases {
        assert_eq!(
            statefulset_replicas(planned, existing, certified),
            want,
            "planned {planned}, existing {existing}, certified {certified:?}"
        );
    }
}
