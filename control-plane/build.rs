//! The admin gRPC API's code and descriptor set, from `proto/` with protox (a pure-Rust protobuf
//! compiler: no `protoc` needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "../proto/tollgate/admin/v1/admin.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["../proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("admin_descriptor.bin"), prost::Message::encode_to_vec(&fds))?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
