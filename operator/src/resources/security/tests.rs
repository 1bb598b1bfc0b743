//! What a cluster runs with for each spec and running state, the mounts and variables the
//! nodes read, and the Secrets' layouts.

use super::*;
use crate::resources::certs::{new_ca, peer_leaf_spec};
use crate::resources::names::tests::cache_cluster;

const UID: &str = "0b1e4c52-5a3c-4f4e-9a57-6c3c1b2e7d10";

fn secure(spec: &str, running: Option<Running>) -> Security {
    resolve(&cache_cluster(spec), running)
}

const PLAINTEXT: Running = Running {
    peer_tls: false,
    auth: false,
};

#[test]
fn a_new_cluster_gets_peer_tls_and_auth_from_the_operator() {
    let security = secure("replicas: 3", None);
    assert_eq!(
        security.peer,
        Some(TlsMount {
            source: TlsSource::Operator,
            secret: "demo-peer-tls".to_owned()
        })
    );
    assert_eq!(security.client, None, "client TLS is opt-in");
    assert_eq!(security.auth.as_ref().unwrap().generated, "demo-auth");
    assert!(security.needs_ca());
    assert_eq!(security.auth_status().mode, AuthMode::Tokens);
    assert_eq!(
        security.auth_status().secret_name.as_deref(),
        Some("demo-auth")
    );
}

#[test]
fn a_running_cluster_keeps_what_it_runs_until_the_spec_says_otherwise() {
    let kept = secure("replicas: 3", Some(PLAINTEXT));
    assert_eq!((kept.peer.is_some(), kept.auth.is_some()), (false, false));
    assert_eq!(kept.auth_status().mode, AuthMode::Open);
    assert_eq!(kept.tls_status().peer, TlsSource::Disabled);
    assert!(!kept.needs_ca());
    let asked = secure(
        "replicas: 3\ntls: {peer: {enabled: true}}\nauth: {enabled: true}",
        Some(PLAINTEXT),
    );
    assert_eq!((asked.peer.is_some(), asked.auth.is_some()), (true, true));
    let secured = Running {
        peer_tls: true,
        auth: true,
    };
    let off = secure(
        "replicas: 3\ntls: {peer: {enabled: false}}\nauth: {enabled: false}",
        Some(secured),
    );
    assert_eq!((off.peer.is_some(), off.auth.is_some()), (false, false));
    let on = secure("replicas: 3", Some(secured));
    assert_eq!((on.peer.is_some(), on.auth.is_some()), (true, true));
}

#[test]
fn user_secrets_are_mounted_not_generated() {
    let security = secure(
        "replicas: 3\ntls: {peer: {secretName: my-peer}, client: {enabled: true, secretName: my-client}}",
        None,
    );
    assert_eq!(security.peer.as_ref().unwrap().source, TlsSource::Secret);
    assert_eq!(security.peer.as_ref().unwrap().secret, "my-peer");
    assert_eq!(security.client.as_ref().unwrap().secret, "my-client");
    assert!(!security.needs_ca(), "nothing for the operator to sign");
    let empty = secure(
        "replicas: 3\ntls: {peer: {secretName: ''}, client: {enabled: true}}",
        None,
    );
    assert_eq!(empty.peer.as_ref().unwrap().secret, "demo-peer-tls");
    assert_eq!(empty.client.as_ref().unwrap().secret, "demo-client-tls");
    assert!(empty.needs_ca());
}

#[test]
fn the_pods_mount_each_secret_where_the_node_reads_it() {
    let security = secure(
        "replicas: 3\ntls: {client: {enabled: true}}\nauth: {tokens: [{secretName: app-readers, role: read}, {secretName: app-writers, role: readwrite}]}",
        None,
    );
    let mounts: Vec<(String, String)> = security
        .volume_mounts()
        .into_iter()
        .map(|m| {
            assert_eq!(m.read_only, Some(true));
            (m.name, m.mount_path)
        })
        .collect();
    let expected = [
        ("kache-peer-tls", "/etc/kache/peer-tls"),
        ("kache-client-tls", "/etc/kache/client-tls"),
        ("kache-auth-0", "/etc/kache/auth/admin/demo-auth"),
        ("kache-auth-1", "/etc/kache/auth/read/app-readers"),
        ("kache-auth-2", "/etc/kache/auth/readwrite/app-writers"),
    ]
    .map(|(a, b)| (a.to_owned(), b.to_owned()));
    assert_eq!(mounts, expected);
    let volumes: Vec<(String, String, Option<bool>)> = security
        .volumes()
        .into_iter()
        .map(|v| {
            let secret = v.secret.unwrap();
            (v.name, secret.secret_name.unwrap(), secret.optional)
        })
        .collect();
    assert_eq!(
        volumes,
        [
            ("kache-peer-tls", "demo-peer-tls", None),
            ("kache-client-tls", "demo-client-tls", None),
            ("kache-auth-0", "demo-auth", None),
            ("kache-auth-1", "app-readers", Some(true)),
            ("kache-auth-2", "app-writers", Some(true)),
        ]
        .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c))
    );
    let env: Vec<(String, String)> = security
        .env()
        .into_iter()
        .map(|e| (e.name, e.value.unwrap()))
        .collect();
    assert_eq!(
        env,
        [
            (env::PEER_TLS_DIR, PEER_TLS_DIR),
            (env::CLUSTER_ID, UID),
            (env::CLIENT_TLS_DIR, CLIENT_TLS_DIR),
            (env::AUTH_DIR, AUTH_DIR),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
    assert_eq!(security.http_scheme(), "HTTPS");
    assert_eq!(secure("replicas: 3", None).http_scheme(), "HTTP");
    let open = secure(
        "replicas: 3\ntls: {peer: {enabled: false}}\nauth: {enabled: false}",
        None,
    );
    assert!(open.volumes().is_empty() && open.volume_mounts().is_empty());
    assert!(open.env().is_empty(), "unset variables: the node runs open");
}

#[test]
fn a_token_secret_named_like_the_generated_one_is_mounted_once() {
    let security = secure(
        "replicas: 3\nauth: {tokens: [{secretName: demo-auth, role: read}]}",
        None,
    );
    assert_eq!(security.volumes().len(), 2, "peer TLS and the admin token");
}

#[test]
fn the_running_state_is_read_back_from_the_statefulset_the_builder_writes() {
    for (spec, expected) in [
        ("replicas: 3", (true, true)),
        (
            "replicas: 3\ntls: {peer: {enabled: false}}\nauth: {enabled: false}",
            (false, false),
        ),
        ("replicas: 3\nauth: {enabled: false}", (true, false)),
    ] {
        let cc = cache_cluster(spec);
        let security = resolve(&cc, None);
        let sts = crate::resources::statefulset::statefulset(&cc, 3, "img", "h", &security);
        let running = Running::of(&sts);
        assert_eq!((running.peer_tls, running.auth), expected, "{spec}");
    }
}

#[test]
fn the_generated_secrets_hold_what_the_nodes_read() {
    let cc = cache_cluster("replicas: 2\nannotations: {team: cart}");
    let names = Names::of(&cc);
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let ca = new_ca(&names, UID, now).unwrap();
    let stored = ca_secret(&cc, &ca);
    assert_eq!(stored.metadata.name.as_deref(), Some("demo-ca"));
    assert_eq!(ca_of(&stored), Some(ca.clone()));
    assert!(
        stored.metadata.owner_references.is_some(),
        "deleted with it"
    );

    let specs: BTreeMap<String, LeafSpec> = (0..2)
        .map(|i| {
            let pod = names.pod(i);
            let spec = peer_leaf_spec(&names, UID, &pod);
            (pod, spec)
        })
        .collect();
    let (issued, reasons) = leaves(None, &ca, &specs, false, now).unwrap();
    assert_eq!(
        reasons,
        [("demo-0".to_owned(), "new"), ("demo-1".to_owned(), "new")]
    );
    let secret = tls_secret(&cc, names.peer_tls(), &ca.cert_pem, &issued, Some("r1"));
    let keys: Vec<&str> = secret
        .data
        .as_ref()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "ca.crt",
            "demo-0.crt",
            "demo-0.key",
            "demo-1.crt",
            "demo-1.key"
        ]
    );
    assert_eq!(rotated_for(&secret), "r1");
    assert_eq!(
        secret.metadata.annotations.as_ref().unwrap()["team"],
        "cart"
    );
    let pods = ["demo-0".to_owned(), "demo-1".to_owned()];
    assert_eq!(
        certs::check_layout(secret.data.as_ref().unwrap(), &pods),
        Ok(()),
        "the operator's own Secret passes the check it makes of users'"
    );

    let token = new_token().unwrap();
    assert_eq!(token.len(), 43, "32 bytes, base64url without padding");
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    );
    assert_ne!(token, new_token().unwrap());
    let auth = auth_secret(&cc, &token);
    assert_eq!(auth.metadata.name.as_deref(), Some("demo-auth"));
    assert_eq!(auth.data.unwrap()[ADMIN_KEY].0, token.as_bytes());
}

#[test]
fn good_leaves_are_kept_new_pods_get_theirs_and_a_rotation_reissues_all() {
    let cc = cache_cluster("replicas: 2");
    let names = Names::of(&cc);
    let now = Timestamp::from_second(1_800_000_000).unwrap();
    let ca = new_ca(&names, UID, now).unwrap();
    let specs = |count: u32| -> BTreeMap<String, LeafSpec> {
        (0..count)
            .map(|i| (names.pod(i), peer_leaf_spec(&names, UID, &names.pod(i))))
            .collect()
    };
    let (two, _) = leaves(None, &ca, &specs(2), false, now).unwrap();
    let stored = tls_secret(&cc, names.peer_tls(), &ca.cert_pem, &two, None);

    let (three, issued) = leaves(Some(&stored), &ca, &specs(3), false, now).unwrap();
    assert_eq!(issued, [("demo-2".to_owned(), "new")]);
    assert_eq!(three["demo-0"], two["demo-0"], "kept byte for byte");
    assert_eq!(three["demo-1"], two["demo-1"]);

    let (one, issued) = leaves(Some(&stored), &ca, &specs(1), false, now).unwrap();
    assert!(issued.is_empty());
    assert_eq!(one.keys().collect::<Vec<_>>(), ["demo-0"], "demo-1 dropped");

    let (rotated, issued) = leaves(Some(&stored), &ca, &specs(2), true, now).unwrap();
    assert_eq!(issued.len(), 2);
    assert_ne!(rotated["demo-0"], two["demo-0"]);
    assert_ne!(
        rotated["demo-0"].key_pem, two["demo-0"].key_pem,
        "a new key"
    );

    let later = Timestamp::from_second(now.as_second() + 61 * 86_400).unwrap();
    let (_, issued) = leaves(Some(&stored), &ca, &specs(2), false, later).unwrap();
    assert_eq!(
        issued,
        [
            ("demo-0".to_owned(), "a third of its life is left"),
            ("demo-1".to_owned(), "a third of its life is left")
        ]
    );
}

#[test]
fn an_issuer_ref_makes_cert_manager_the_peer_source_and_no_ca_is_kept() {
    let security = secure(
        "replicas: 3\ntls: {peer: {issuerRef: {name: corp-ca}}}",
        None,
    );
    assert_eq!(
        security.peer,
        Some(TlsMount {
            source: TlsSource::CertManager,
            secret: "demo-peer-tls".to_owned()
        }),
        "the pods mount the Secret the operator puts together"
    );
    assert!(!security.peer.as_ref().unwrap().generated());
    assert!(
        !security.needs_ca(),
        "cert-manager's issuer is the trust root"
    );
    assert_eq!(security.tls_status().peer, TlsSource::CertManager);
    assert_eq!(
        security.tls_status().peer_secret_name.as_deref(),
        Some("demo-peer-tls")
    );
    // Client TLS still comes from the operator's CA, which is then kept.
    let both = secure(
        "replicas: 3\ntls: {peer: {issuerRef: {name: corp-ca}}, client: {enabled: true}}",
        None,
    );
    assert_eq!(both.client.as_ref().unwrap().source, TlsSource::Operator);
    assert!(both.needs_ca());
    // Peer TLS off: the issuer is not used.
    let off = secure(
        "replicas: 3\ntls: {peer: {enabled: false, issuerRef: {name: corp-ca}}}",
        None,
    );
    assert_eq!(off.peer, None);
}
