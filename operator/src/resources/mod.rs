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
//! - `optional`: the NetworkPolicy and the prometheus-operator ServiceMonitor.

pub mod config;
pub mod names;
pub mod optional;
pub mod pdb;
pub mod rbac;
pub mod service;
pub mod statefulset;

pub use names::Names;
