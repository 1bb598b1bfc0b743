//! The peer protocol (`proto/peer.proto`) over tonic.
//!
//! - [`server`]: what this node answers on `--grpc-addr`.
//! - [`client`]: the pool of channels this node uses to reach other members.
//!
//! Both build on [`super::wire`] (generated types, conversions, the protocol version);
//! neither imports the other. A failed peer call is an error to the caller, never an
//! empty result.

pub mod client;
pub mod server;

pub use client::PeerClients;
pub use server::PeerService;
