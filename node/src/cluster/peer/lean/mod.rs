//! The lean peer transport: the single-key hot calls (`Get` and `Apply`) without HTTP/2.
//!
//! A request a node does not own is coordinated there and costs one peer call per
//! replica. Over tonic each call pays HPACK headers, h2 framing, flow-control frames and a
//! task, and that made a forwarded GET run at about a quarter of the owner's rate
//! (docs/benchmarks.md, "Forwarding"). This transport carries the *same prost messages*
//! (`proto::GetRequest`/`GetResponse`/`ApplyRequest`/`ApplyResponse`) in length-prefixed
//! frames over one multiplexed TCP connection per peer; everything else (streams, hello,
//! digests, release, hinted hand-offs) stays on gRPC.
//!
//! - [`frame`]: the preface and the frame format (`length | id | kind | body`).
//! - [`server`]: answers a connection's frames with the handlers the gRPC service runs.
//! - [`client`]: one connection per peer address, its writer and reader tasks.
//!
//! The listener that tells a lean connection from a gRPC one on the shared peer port is
//! [`super::incoming`]: one port keeps the NetworkPolicy, and later mTLS, in one place.
//!
//! Invariants:
//! - **Same semantics as gRPC.** The server calls [`super::PeerService::serve_get`] and
//!   [`super::PeerService::serve_apply`], the bodies of the gRPC methods; an error travels
//!   as its tonic `Code` and message, so callers see the `Status` they would have seen
//!   (`is_syncing` included). Transport failures are `UNAVAILABLE` and a timeout is
//!   `CANCELLED` "Timeout expired", as tonic reports them.
//! - **Unknown outcome is a failure.** A connection that breaks fails every call in flight
//!   with `UNAVAILABLE`; a write may or may not have landed, as with a failed gRPC call,
//!   and versions make a retry harmless.
//! - **A peer without the transport is still reached.** A client whose preface is not
//!   echoed sends nothing more and its calls go over gRPC (see `PeerClients`), so nodes
//!   with and without this transport run side by side.
//! - **Bounded.** A frame is at most the peer message limit (checked from its length,
//!   before it is buffered); a client has at most [`client::MAX_IN_FLIGHT`] calls in flight
//!   per connection; a server holds one read buffer and a bounded batch of answers per
//!   connection and stops reading a peer that stops reading. Garbage or an oversized
//!   frame closes only that connection, with a log line. Either end closes a connection
//!   that hears nothing for [`IDLE_TIMEOUT`] (a client pings every [`KEEPALIVE_INTERVAL`]),
//!   or that cannot write for [`WRITE_TIMEOUT`].

use std::time::Duration;

pub mod client;
pub mod frame;
pub mod server;

pub use client::{CallError, Connection};
pub use server::LeanServer;

/// A client pings this often, whatever else it sends, so both ends hear from a live peer.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Nothing heard for this long: the peer is gone without a FIN (as the gRPC keepalive:
/// a ping interval plus its 20 s timeout).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// A write that makes no progress for this long: the peer stopped reading.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(20);

#[cfg(test)]
mod tests;
