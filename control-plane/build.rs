//! Generates the gRPC admin API (`tollgate.admin.v1`) from proto/tollgate/admin/v1/admin.proto
//! with protox (a protobuf compiler in Rust: no `protoc` to install) and tonic-prost-build, and
//! keeps the encoded file descriptor set for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../proto");
    let file = root.join("tollgate/admin/v1/admin.proto");
    println!("cargo:rerun-if-changed={}", file.display());
    let fds = protox::compile([&file], [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("tollgate_admin_v1_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds)?;
    Ok(())
}
