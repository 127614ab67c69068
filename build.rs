//! Generates the gRPC code, the reflection descriptor set and the proto3 JSON mapping (pbjson, for
//! the Connect protocol) from `proto/` with protox, a pure-Rust protobuf compiler, so that building
//! needs no system `protoc`.

use std::{env, path::PathBuf};

use prost::Message;

const PROTO: &str = "proto/amazonconnect/v1/contact_service.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let encoded = descriptors.encode_to_vec();
    std::fs::write(out_dir.join("contact_service_descriptor.bin"), &encoded)?;
    // Unknown fields and enum numbers are accepted, as the binary encoding accepts them: a client
    // built from a newer contract gets the same answer over JSON as over protobuf (an unknown
    // rehydration type is then the unspecified one, which validation names).
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .ignore_unknown_fields()
        .ignore_unknown_enum_variants()
        .build(&[".amazonconnect.v1"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
