//! cert-manager as the peer certificates' source (`spec.tls.peer.issuerRef`), with a
//! stand-in for cert-manager: its `certificates.cert-manager.io` CRD (v1, any fields) and
//! a signer in this test that issues what each Certificate asks for, as cert-manager's CA
//! issuer would (`tls.crt`, `tls.key`, `ca.crt`, then `Ready`). A 2-member cluster at
//! RF=2 becomes Available on those certificates alone: its members serve, and hand each
//! other the keys, with the stand-in's certificate each (checked by fingerprint), and
//! `<name>-peer-tls` trusts the stand-in's CA. Real cert-manager is not run here.

use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

use super::tls_auth::{fingerprint, secret_data, served_peer_fingerprint};
use super::*;

const NAME: &str = "issued";
const ISSUER: &str = "stand-in";

/// The stand-in `certificates.cert-manager.io` CRD: served, namespaced, any fields, with
/// the status subresource the signer writes `Ready` through.
const CERTIFICATE_CRD: &str = "apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: certificates.cert-manager.io}
spec:
  group: cert-manager.io
  scope: Namespaced
  names: {kind: Certificate, listKind: CertificateList, plural: certificates, singular: certificate}
  versions:
    - name: v1
      served: true
      storage: true
      subresources: {status: {}}
      schema:
        openAPIV3Schema:
          type: object
          x-kubernetes-preserve-unknown-fields: true
";

fn certificates(client: &Client) -> Api<DynamicObject> {
    let resource = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cert-manager.io", "v1", "Certificate"),
        "certificates",
    );
    Api::namespaced_with(client.clone(), NS, &resource)
}

/// A signer standing in for cert-manager: every 500 ms it issues a Secret for each
/// Certificate in NS whose Secret does not exist. Stops when dropped.
struct StandIn {
    ca_pem: String,
    /// The certificate (PEM) issued into each Secret, by Secret name.
    issued: Arc<Mutex<BTreeMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    fn start(client: Client) -> Self {
        let mut params = CertificateParams::default();
        params
            .distinguished_name
            .push(DnType::CommonName, "kache e2e stand-in CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let ca_pem = params.self_signed(&key).unwrap().pem();
        let issuer = Issuer::new(params, key);
        let issued: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let task = tokio::spawn(sign_forever(client, issuer, ca_pem.clone(), issued.clone()));
        Self {
            ca_pem,
            issued,
            task,
        }
    }

    fn issued(&self, secret: &str) -> Option<String> {
        self.issued.lock().get(secret).cloned()
    }
}

async fn sign_forever(
    client: Client,
    issuer: Issuer<'static, KeyPair>,
    ca_pem: String,
    issued: Arc<Mutex<BTreeMap<String, String>>>,
) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NS);
    let certificates = certificates(&client);
    loop {
        match certificates.list(&ListParams::default()).await {
            Ok(list) => {
                for certificate in list {
                    if let Err(error) = sign_one(
                        &secrets,
                        &certificates,
                        &certificate,
                        &issuer,
                        &ca_pem,
                        &issued,
                    )
                    .await
                    {
                        log(&format!(
                            "stand-in signer: {}: {error}",
                            certificate.name_any()
                        ));
                    }
                }
            }
            Err(error) => log(&format!("stand-in signer: list Certificates: {error}")),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Issues `certificate` into its Secret unless the Secret exists, with exactly the URIs,
/// DNS names and usages it asks for, and marks it Ready.
async fn sign_one(
    secrets: &Api<Secret>,
    certificates: &Api<DynamicObject>,
    certificate: &DynamicObject,
    issuer: &Issuer<'static, KeyPair>,
    ca_pem: &str,
    issued: &Mutex<BTreeMap<String, String>>,
) -> Result<(), String> {
    let spec = &certificate.data["spec"];
    let secret_name = spec["secretName"].as_str().ok_or("no spec.secretName")?;
    if secrets
        .get_opt(secret_name)
        .await
        .map_err(|e| e.to_string())?
        .is_some()
    {
        return Ok(());
    }
    let strings = |field: &str| -> Vec<String> {
        spec[field]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect()
    };
    let mut params = CertificateParams::default();
    for uri in strings("uris") {
        params.subject_alt_names.push(SanType::URI(
            uri.as_str().try_into().map_err(|e| format!("{e}"))?,
        ));
    }
    for dns in strings("dnsNames") {
        params.subject_alt_names.push(SanType::DnsName(
            dns.as_str().try_into().map_err(|e| format!("{e}"))?,
        ));
    }
    for usage in strings("usages") {
        match usage.as_str() {
            "digital signature" => params.key_usages.push(KeyUsagePurpose::DigitalSignature),
            "key encipherment" => params.key_usages.push(KeyUsagePurpose::KeyEncipherment),
            "server auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ServerAuth),
            "client auth" => params
                .extended_key_usages
                .push(ExtendedKeyUsagePurpose::ClientAuth),
            other => return Err(format!("the stand-in does not sign usage {other:?}")),
        }
    }
    params.use_authority_key_identifier_extension = true;
    // ECDSA P-256, PKCS#8 PEM: what privateKey {ECDSA, 256, PKCS8} asks cert-manager for.
    let key = KeyPair::generate().map_err(|e| e.to_string())?;
    let cert_pem = params
        .signed_by(&key, issuer)
        .map_err(|e| e.to_string())?
        .pem();
    let bytes = |text: &str| ByteString(text.as_bytes().to_vec());
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: Some(NS.to_owned()),
            ..kube::api::ObjectMeta::default()
        },
        type_: Some("kubernetes.io/tls".to_owned()),
        data: Some(BTreeMap::from([
            ("tls.crt".to_owned(), bytes(&cert_pem)),
            ("tls.key".to_owned(), bytes(&key.serialize_pem())),
            ("ca.crt".to_owned(), bytes(ca_pem)),
        ])),
        ..Secret::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .map_err(|e| e.to_string())?;
    issued.lock().insert(secret_name.to_owned(), cert_pem);
    let ready = serde_json::json!({"status": {"conditions": [{
        "type": "Ready", "status": "True", "reason": "Issued",
        "message": "Certificate is up to date and has not expired",
    }]}});
    certificates
        .patch_status(
            &certificate.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&ready),
        )
        .await
        .map_err(|e| e.to_string())?;
    log(&format!("stand-in signer: issued {secret_name}"));
    Ok(())
}

/// Installs the stand-in Certificate CRD and waits until it is served. Called before the
/// RBAC checks, since `kubectl auth can-i` answers no for a resource the server lacks.
pub fn install_crd() {
    apply(CERTIFICATE_CRD);
    must(
        "kubectl",
        &[
            "wait",
            "--for=condition=established",
            "crd/certificates.cert-manager.io",
            "--timeout=60s",
        ],
        None,
    );
}

/// The scenario: the stand-in signer (the CRD is in since `install_crd`), then
/// cc/issued on cert-manager certificates.
pub async fn issued_by_cert_manager(client: &Client, http: &reqwest::Client) {
    log("cert-manager stand-in: a signer for the Certificate CRD");
    install_crd();
    let signer = StandIn::start(client.clone());

    log(&format!(
        "apply cc/{NAME}: 2 replicas, RF 2, peer certificates from issuerRef {ISSUER}"
    ));
    apply(&cache_cluster_yaml(
        NAME,
        2,
        2,
        &format!("  tls: {{peer: {{issuerRef: {{name: {ISSUER}}}}}}}\n"),
    ));
    let status = wait_available(client, NAME, 2, Duration::from_secs(180)).await;
    assert_eq!(status["tls"]["peer"], "CertManager", "{status}");
    assert_eq!(
        status["tls"]["peerSecretName"],
        format!("{NAME}-peer-tls"),
        "{status}"
    );
    let secured = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Secured")
        .cloned()
        .unwrap_or(Json::Null);
    assert_eq!(secured["status"], "True", "{secured}");
    assert!(
        secured["message"]
            .as_str()
            .unwrap_or_default()
            .contains("from cert-manager"),
        "{secured}"
    );

    // The Certificates the operator applied: one per member, as built.
    let uid = cache_clusters(client)
        .get(NAME)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    for ordinal in 0..2 {
        let name = format!("{NAME}-peer-{ordinal}");
        let certificate = certificates(client).get(&name).await.unwrap();
        let spec = &certificate.data["spec"];
        assert_eq!(spec["secretName"], name.as_str(), "{spec}");
        assert_eq!(
            spec["issuerRef"],
            serde_json::json!({"name": ISSUER, "kind": "Issuer", "group": "cert-manager.io"}),
            "{spec}"
        );
        assert_eq!(
            spec["uris"],
            serde_json::json!([format!("kache://{uid}/{NAME}-{ordinal}")]),
            "{spec}"
        );
        assert_eq!(spec["privateKey"]["encoding"], "PKCS8", "{spec}");
        let owners = certificate.metadata.owner_references.unwrap_or_default();
        assert!(
            owners
                .iter()
                .any(|o| o.uid == uid && o.kind == "CacheCluster"),
            "{name} is not owned by cc/{NAME}: {owners:?}"
        );
    }

    // Keys written through each pod are read through both: the members replicate to
    // each other over mutual TLS with the stand-in's certificates.
    let ips = pod_ips(client, NAME).await;
    assert_eq!(ips.len(), 2, "{ips:?}");
    let mut keys = BTreeMap::new();
    for i in 0..200 {
        let (key, value) = (format!("issued-{i}"), format!("value-{i}"));
        put(http, &ips[&(i % 2)], &key, &value).await.unwrap();
        keys.insert(key, value);
    }
    for ip in ips.values() {
        check_all(http, ip, &keys).await;
    }

    // What the pods mount and serve is what the stand-in issued.
    let mounted = secret_data(client, &format!("{NAME}-peer-tls")).await;
    assert_eq!(
        String::from_utf8_lossy(&mounted["ca.crt"]).trim(),
        signer.ca_pem.trim(),
        "{NAME}-peer-tls trusts the stand-in's CA, and only it"
    );
    for (ordinal, ip) in &ips {
        let issued = signer
            .issued(&format!("{NAME}-peer-{ordinal}"))
            .unwrap_or_else(|| panic!("the stand-in issued nothing for {NAME}-{ordinal}"));
        assert_eq!(
            mounted[&format!("{NAME}-{ordinal}.crt")],
            issued.as_bytes(),
            "{NAME}-peer-tls holds the stand-in's certificate for {NAME}-{ordinal}"
        );
        let expected = fingerprint(issued.as_bytes());
        let served = eventually(
            &format!("{NAME}-{ordinal} reports its peer certificate"),
            Duration::from_secs(30),
            || served_peer_fingerprint(http, ip),
        )
        .await;
        assert_eq!(
            served, expected,
            "{NAME}-{ordinal} serves another certificate than the stand-in issued"
        );
    }
    log(&format!(
        "cc/{NAME}: Available on the stand-in's certificates; {} keys through both pods; each \
         serves the certificate the stand-in issued",
        keys.len()
    ));

    must(
        "kubectl",
        &["-n", NS, "delete", "cc", NAME, "--wait=true"],
        None,
    );
    drop(signer);
    // cert-manager does not own its Secrets to the Certificate by default: they stay.
    must(
        "kubectl",
        &[
            "-n",
            NS,
            "delete",
            "secret",
            &format!("{NAME}-peer-0"),
            &format!("{NAME}-peer-1"),
            "--ignore-not-found",
        ],
        None,
    );
}
