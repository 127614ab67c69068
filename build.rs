//! Generates the gRPC code and the reflection descriptor set from `proto/` with protox, a pure-Rust
//! protobuf compiler, so that building needs no system `protoc`.

use std::{env, path::PathBuf};

use prost::Message;

const PROTO: &str = "proto/amazonconnect/v1/contact_service.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("contact_service_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
