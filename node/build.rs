//! Generates the peer protocol's Rust types and tonic service from `proto/peer.proto`.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../proto/peer.proto");
    tonic_prost_build::configure().compile_protos(&["../proto/peer.proto"], &["../proto"])?;
    Ok(())
}
