//! Compiles the `.proto` contract with `protox` (a pure-Rust protobuf compiler), so the crate
//! builds with plain `cargo` on a fresh machine: no system `protoc`. The encoded descriptor
//! set is also written out for gRPC server reflection.

use prost::Message;
use std::path::PathBuf;

const FILES: &[&str] = &[
    "proto/interop/v1/common.proto",
    "proto/interop/v1/submission.proto",
    "proto/interop/v1/field_office.proto",
    "proto/interop/v1/admin.proto",
    "proto/interop/v1/matcher.proto",
    "proto/interop/v1/criminal_history.proto",
    "proto/interop/v1/complaint.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for f in FILES {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(FILES, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("interop_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        // Malformed messages are INVALID_ARGUMENT, not INTERNAL (src/codec.rs).
        .codec_path("crate::codec::StrictCodec")
        .compile_fds(fds)?;
    Ok(())
}
