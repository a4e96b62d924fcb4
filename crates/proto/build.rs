//! Compiles proto/ with protox (no system protoc) and generates the prost types and tonic
//! stubs. The encoded descriptor set keeps the custom field options (sensitivity classes),
//! which the router's descriptor-driven redaction and validation read at run time.

use std::{env, fs, path::PathBuf};

const PROTOS: &[&str] = &[
    "henvis/options/v1/options.proto",
    "henvis/events/v1/events.proto",
    "henvis/broker/v1/broker.proto",
    "henvis/police/v1/police.proto",
    "henvis/health/v1/health.proto",
    "henvis/social/v1/social.proto",
    "henvis/ngo/v1/ngo.proto",
    "henvis/admin/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let mut compiler = protox::Compiler::new([&root])?;
    compiler.include_source_info(true).include_imports(true);
    compiler.open_files(PROTOS)?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    // Encoded by protox itself so extension options survive (prost-types would drop them).
    fs::write(out.join("henvis_descriptor.bin"), compiler.encode_file_descriptor_set())?;
    tonic_prost_build::configure()
        .include_file("henvis.rs")
        // decode errors are the client's (INVALID_ARGUMENT), oversized requests named
        .codec_path("crate::codec::HenvisCodec")
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
