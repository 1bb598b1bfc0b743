//! Pure builders of the objects a CacheCluster owns. Each takes the CacheCluster (and
//! what it must know besides) and returns the object to apply with server-side apply;
//! none talks to the API, so each is unit-tested on its own.
//!
//! Layout:
//! - `names`: object names, labels and the owner reference every object carries.
//! - `config`: the node config ConfigMap, its hash, and the member-list ConfigMap.
//! - `service`: the headless peer Service and the client Service.
//! - `statefulset`: the cache pods.
//! - `pdb`: the PodDisruptionBudget, derived from the replication factor.
//! - `rbac`: the nodes' ServiceAccount, Role and RoleBinding (least privilege).
//! - `optional`: the NetworkPolicy.
//! - `monitoring`: the prometheus-operator ServiceMonitor or PodMonitor, and the
//!   PrometheusRule of the cluster's alerts.
//! - `certs`: the CA and the pods' certificates (default source), and the check of a
//!   user's TLS Secret.
//! - `cert_manager`: the cert-manager Certificate of each member, and the peer Secret
//!   put together from what it issues (`spec.tls.peer.issuerRef`).
//! - `security`: what TLS and auth a cluster runs with, its Secrets, and their mounts.

pub mod cert_manager;
pub mod certs;
pub mod config;
pub mod monitoring;
pub mod names;
pub mod optional;
pub mod pdb;
pub mod rbac;
pub mod security;
pub mod service;
pub mod statefulset;

pub use names::Names;
