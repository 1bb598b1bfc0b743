//! kache-api: what the cache node and the operator must agree on, written once.
//!
//! The operator writes the member list and the node settings; the node reads them and
//! answers `GET /v1/cluster`, which the operator reads back. Each of those crosses a
//! process boundary, so each is defined here, once, and both sides use the same type:
//! a field renamed on one side cannot silently become a missing field on the other.
//!
//! Layout:
//! - [`members`]: the epoch-numbered member list (`members.yaml`), its validation rules.
//! - [`report`]: a node's report, `GET /v1/cluster`.
//! - [`env`]: the `KACHE_*` environment variables the node reads and the operator sets.
//! - [`logs`]: the log line formats both binaries offer (`--log-format`).
//! - [`units`]: byte sizes, durations and Kubernetes quantities, parsed one way.
//! - [`upstreams`]: the read-through upstreams (`spec.upstreams[]`, `upstreams.yaml`).
//!
//! The crate has no runtime: it is serde types and pure functions, so the operator does
//! not link the node's server and the node does not link the operator's client.

pub mod env;
pub mod logs;
pub mod members;
pub mod report;
pub mod units;
pub mod upstreams;
