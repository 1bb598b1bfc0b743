//! Generates the peer protocol's Rust types and tonic service from `proto/peer.proto`.
//!
//! The proto is parsed by `protox`, a protobuf compiler written in Rust, so building kache
//! needs no `protoc` on the machine.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/peer.proto");
    let descriptors = protox::compile(["peer.proto"], ["../proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
