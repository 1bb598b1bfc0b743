//! `spec.tls` and `spec.auth`: mutual TLS between members, TLS on the client ports, and
//! the tokens clients authenticate with. docs/security.md has the threat model and the
//! layout of the Secrets the nodes read.
//!
//! `enabled` is optional on purpose, for peer TLS and auth: unset means on for a cluster
//! the operator creates, and "keep what runs" for a cluster that already runs without it
//! (stored before these fields existed). Turning either on restarts every pod, and peer
//! TLS cannot be turned on one pod at a time (a TLS member and a plaintext member cannot
//! talk), so an operator upgrade never does it on its own; the `Secured` condition and the
//! `Auth` column say what runs. `resources::security::resolve` decides.

use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// TLS of the peer port (mutual) and of the client ports.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsSpec {
    /// Mutual TLS between members on the peer (gRPC) port.
    #[serde(default)]
    pub peer: PeerTls,
    /// TLS on the HTTP and RESP ports.
    #[serde(default)]
    pub client: ClientTls,
}

/// Mutual TLS between the members.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.issuerRef) || !has(self.secretName) || self.secretName == ''"
).message("tls.peer: set issuerRef (cert-manager issues the certificates) or secretName (your own Secret), not both"))]
#[serde(rename_all = "camelCase")]
pub struct PeerTls {
    /// Members accept peer calls only over TLS 1.3 with a certificate of this cluster.
    /// Unset: on for a new cluster; a cluster already running without it keeps running
    /// without it until this is set to true (see docs/operations.md: it needs every pod
    /// restarted at once). false turns it off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// A Secret you manage, in the layout of docs/security.md (`ca.crt`, and
    /// `<pod>.crt`/`<pod>.key` for every pod or `tls.crt`/`tls.key`). The operator only
    /// reads it. Unset or empty: the operator's own CA issues `<name>-peer-tls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_name")]
    pub secret_name: Option<String>,
    /// A cert-manager issuer: the operator applies one cert-manager `Certificate` per pod
    /// (`<name>-peer-<ordinal>`) and copies what cert-manager issues into
    /// `<name>-peer-tls`. Needs cert-manager, and the chart's `rbac.certManager=true`.
    /// Not together with secretName.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer_ref: Option<IssuerRef>,
}

/// The cert-manager issuer that signs the members' certificates.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IssuerRef {
    /// The Issuer (in the CacheCluster's namespace) or ClusterIssuer.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Issuer or ClusterIssuer.
    #[serde(default)]
    pub kind: IssuerKind,
    /// The issuer's API group: cert-manager.io, or an external issuer's.
    #[serde(default = "cert_manager_group")]
    #[schemars(length(min = 1, max = 253))]
    pub group: String,
}

/// Whether the issuer is namespaced or cluster-wide.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, schemars::JsonSchema,
)]
pub enum IssuerKind {
    #[default]
    Issuer,
    ClusterIssuer,
}

impl IssuerKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Issuer => "Issuer",
            Self::ClusterIssuer => "ClusterIssuer",
        }
    }
}

fn cert_manager_group() -> String {
    "cert-manager.io".to_owned()
}

/// TLS on the client ports (HTTP and RESP).
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientTls {
    /// Serve HTTP and RESP over TLS only. Clients then trust `ca.crt` of the Secret.
    /// Changing it restarts the pods one at a time.
    #[serde(default)]
    pub enabled: bool,
    /// A Secret you manage, in the same layout as the peer one. Unset or empty: the
    /// operator's CA issues `<name>-client-tls`, with the client Service's DNS names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_secret_name")]
    pub secret_name: Option<String>,
}

/// Who may use the client API and RESP.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[x_kube(validation = Rule::new(
    "!has(self.tokens) || self.tokens.all(t, self.tokens.exists_one(u, u.secretName == t.secretName))"
).message("auth.tokens: each secretName may appear once (a Secret is mounted with one role); give the Secret's users one role, or split them into two Secrets"))]
#[serde(rename_all = "camelCase")]
pub struct AuthSpec {
    /// Require a token on everything but /healthz, /readyz, /metrics, /v1/cluster and
    /// /v1/openapi.json. Unset: on for a new cluster, with a generated admin token in
    /// `<name>-auth`; a cluster already running without auth stays open until this is
    /// set to true. false opens the cluster to anyone who reaches its ports (the `Auth`
    /// column says Open).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Secrets of more users: each key of a Secret is a user name, its value the token.
    /// Every user of one Secret gets its role.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tokens: Vec<TokenSecret>,
}

/// A Secret of tokens and the role its users get.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenSecret {
    /// A Secret in the CacheCluster's namespace; each key is a user, its value the token.
    /// It may be created later: the nodes read it once it exists.
    #[schemars(
        length(min = 1, max = 253),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub secret_name: String,
    /// read (GET keys, batch get, placement, stats), readwrite (+ PUT, DELETE, batch
    /// put) or admin (+ flushes and config changes).
    pub role: Role,
}

/// What a token may do.
#[derive(
    Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Read,
    Readwrite,
    Admin,
}

impl Role {
    /// The directory name the nodes read the role from (`<auth-dir>/<role>/...`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Readwrite => "readwrite",
            Self::Admin => "admin",
        }
    }
}

/// A DNS-1123 subdomain (a Secret name), or empty for "unset", as the contract's
/// example writes it.
fn optional_secret_name(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "maxLength": 253,
        "pattern": r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)?$",
        "nullable": true
    })
}

/// The Secret name when one is set; an empty string is unset.
pub fn secret_name(name: Option<&String>) -> Option<&str> {
    name.map(String::as_str).filter(|n| !n.is_empty())
}
