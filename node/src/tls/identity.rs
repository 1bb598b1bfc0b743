//! Who a peer certificate names: its `kache://<cluster-id>/<member-id>` URI SANs.
//!
//! A member's certificate carries `kache://<cluster-id>/<member-id>` (the CacheCluster's
//! UID and the pod name); a certificate shared by every member may carry
//! `kache://<cluster-id>/*` instead, which names any member of that cluster (weaker: one
//! leaked key speaks for all of them). Other SANs (the pod's DNS names) are for people
//! and other tools: kache checks none of them, since pod IPs and names move.

use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The URI scheme of a kache peer identity.
const SCHEME: &str = "kache://";

/// One `kache://` URI of a certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerName {
    /// The cluster part: the CacheCluster's UID.
    pub cluster: String,
    pub member: MemberName,
}

/// The member part of a [`PeerName`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberName {
    /// `kache://<cluster>/<member-id>`: one member.
    One(String),
    /// `kache://<cluster>/*`: any member of the cluster (a shared certificate).
    Any,
}

impl PeerName {
    /// Parses `kache://<cluster>/<member>`; anything else (another scheme, an empty or
    /// missing part, more path segments) is `None`.
    pub fn parse(uri: &str) -> Option<Self> {
        let rest = uri.strip_prefix(SCHEME)?;
        let (cluster, member) = rest.split_once('/')?;
        if cluster.is_empty() || member.is_empty() || member.contains('/') {
            return None;
        }
        let member = match member {
            "*" => MemberName::Any,
            id => MemberName::One(id.to_owned()),
        };
        Some(Self {
            cluster: cluster.to_owned(),
            member,
        })
    }

    /// Whether this name belongs to `cluster_id`; a node without a cluster id (local
    /// runs) takes any cluster.
    pub fn in_cluster(&self, cluster_id: &str) -> bool {
        cluster_id.is_empty() || self.cluster == cluster_id
    }

    /// Whether this name stands for `member` (its own name, or the wildcard).
    pub fn names(&self, member: &str) -> bool {
        match &self.member {
            MemberName::One(id) => id == member,
            MemberName::Any => true,
        }
    }
}

/// Every `kache://` URI SAN of a DER certificate that parses; an unparsable certificate
/// names nobody.
pub fn peer_names(der: &[u8]) -> Vec<PeerName> {
    let Ok((_, cert)) = X509Certificate::from_der(der) else {
        return Vec::new();
    };
    uri_sans(&cert)
        .into_iter()
        .filter_map(PeerName::parse)
        .collect()
}

/// The URI SANs of `cert`.
pub fn uri_sans<'a>(cert: &'a X509Certificate<'_>) -> Vec<&'a str> {
    let Ok(Some(san)) = cert.subject_alternative_name() else {
        return Vec::new();
    };
    san.value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::URI(uri) => Some(*uri),
            _ => None,
        })
        .collect()
}

/// The one name of `names` this node takes from a caller in `cluster_id`: a member's own
/// name before a wildcard, so that a certificate carrying both is checked as the member.
pub fn caller_name(names: Vec<PeerName>, cluster_id: &str) -> Option<PeerName> {
    let mut ours = names.into_iter().filter(|name| name.in_cluster(cluster_id));
    let first = ours.next()?;
    if matches!(first.member, MemberName::One(_)) {
        return Some(first);
    }
    Some(
        ours.find(|name| matches!(name.member, MemberName::One(_)))
            .unwrap_or(first),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kache_uris_parse_and_everything_else_does_not() {
        assert_eq!(
            PeerName::parse("kache://uid-1/node-0"),
            Some(PeerName {
                cluster: "uid-1".into(),
                member: MemberName::One("node-0".into())
            })
        );
        assert_eq!(
            PeerName::parse("kache://uid-1/*").map(|n| n.member),
            Some(MemberName::Any)
        );
        for bad in [
            "https://uid-1/node-0",
            "kache://uid-1",
            "kache:///node-0",
            "kache://uid-1/",
            "kache://uid-1/a/b",
            "spiffe://uid-1/node-0",
        ] {
            assert_eq!(PeerName::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn cluster_and_member_checks() {
        let one = PeerName::parse("kache://uid-1/node-0").expect("parses");
        let any = PeerName::parse("kache://uid-1/*").expect("parses");
        assert!(one.in_cluster("uid-1") && one.in_cluster(""));
        assert!(!one.in_cluster("uid-2"));
        assert!(one.names("node-0") && !one.names("node-1"));
        assert!(any.names("node-7"));
        let chosen = caller_name(vec![any.clone(), one.clone()], "uid-1");
        assert_eq!(
            chosen,
            Some(one),
            "the member's own name before the wildcard"
        );
        assert_eq!(caller_name(vec![any], "uid-2"), None, "another cluster");
    }

    #[test]
    fn uri_sans_are_read_from_a_real_certificate() {
        let mut params =
            rcgen::CertificateParams::new(vec!["node-0.kache.ns.svc".to_owned()]).expect("params");
        params.subject_alt_names.extend([
            rcgen::SanType::URI("kache://uid-1/node-0".try_into().expect("ia5")),
            rcgen::SanType::URI("https://example.com/x".try_into().expect("ia5")),
        ]);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = params.self_signed(&key).expect("cert");
        assert_eq!(
            peer_names(cert.der()),
            vec![PeerName::parse("kache://uid-1/node-0").expect("parses")]
        );
        assert!(peer_names(b"not a certificate").is_empty());
    }
}
