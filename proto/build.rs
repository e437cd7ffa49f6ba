//! Compiles `reid/v1/*.proto` in pure Rust (protox, no protoc) and generates the tonic code,
//! plus the encoded descriptor set that server reflection serves.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "reid/v1/common.proto",
    "reid/v1/embedder.proto",
    "reid/v1/identity.proto",
    "reid/v1/ingester.proto",
    "reid/v1/trainer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("reid_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
