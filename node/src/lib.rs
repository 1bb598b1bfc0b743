//! kache-node: one cache node.
pub mod clock;
pub mod store;
