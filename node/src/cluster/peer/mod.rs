//! The peer protocol (`proto/peer.proto`): over tonic, and its single-key hot calls
//! (`Get`, `Apply`) also over a lean framing of the same messages.
//!
//! - [`server`]: what this node answers on `--grpc-addr`, and the transport limits.
//! - [`lean`]: the lean transport (frames, its server and its connections).
//! - [`incoming`]: the peer port, which hands each connection to tonic or to [`lean`]
//!   (by its first bytes, or under mutual TLS by ALPN).
//! - [`stream`]: the connection type tonic serves, carrying the caller's identity.
//! - [`authorize`]: under mutual TLS, each call's caller checked against the member list.
//! - [`client`]: the pool of channels and lean connections this node uses to reach
//!   other members.
//!
//! All build on [`super::wire`] (generated types, conversions, the protocol version). A
//! failed peer call is an error to the caller, never an empty result.

pub mod authorize;
pub mod client;
pub mod incoming;
pub mod lean;
pub mod server;
pub mod stream;

pub use client::PeerClients;
pub use incoming::incoming;
pub use server::PeerService;
