//! Compiles the `.proto` files with protox (pure Rust, no system `protoc`)
//! and writes the encoded descriptor set that gRPC reflection serves.

use std::{env, fs, path::PathBuf};

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    // `embed_migrations!` does not notice new migration folders on its own.
    println!("cargo:rerun-if-changed=migrations");

    // google.rpc's error details ride along so that reflection serves
    // them: grpcurl and other reflection clients then decode the details of
    // every error without a local copy of the protos.
    let descriptors = protox::compile(
        [
            "punctual/v1/scheduler.proto",
            "google/rpc/error_details.proto",
            "google/rpc/status.proto",
            "google/rpc/code.proto",
        ],
        ["proto"],
    )?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("punctual_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
