//! Generates the `minoots.timer.v1` and `minoots.raft.v1` code with madsim-tonic-build, which writes
//! two copies: `$OUT_DIR/<pkg>.rs` (real tonic) and `$OUT_DIR/sim/<pkg>.rs`
//! (the simulator's transport); `tonic::include_proto!` picks one by
//! `cfg(madsim)`. Also writes the encoded file descriptor set that gRPC
//! reflection serves. protoc comes vendored (there is no system protoc).
//!
//! With the `contract-client` feature it also compiles the contract-only
//! proto (MINOOTS's interface, no extensions) into `$OUT_DIR/contract/`,
//! client side only, for wire-compatibility tests.

use std::path::PathBuf;

fn prost_config() -> Result<prost_build::Config, Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    Ok(config)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    tonic_build::configure()
        // BTreeMap keeps map fields (labels) in a deterministic order, which
        // the simulator's traces rely on.
        .btree_map(["."])
        .file_descriptor_set_path(out_dir.join("minoots_descriptor.bin"))
        .compile_protos_with_config(prost_config()?, &["proto/minoots/timer/v1/timer.proto"], &["proto"])?;
    tonic_build::configure().compile_protos_with_config(
        prost_config()?,
        &["proto/minoots/raft/v1/raft.proto"],
        &["proto"],
    )?;

    if std::env::var_os("CARGO_FEATURE_CONTRACT_CLIENT").is_some() {
        let contract_dir = out_dir.join("contract");
        std::fs::create_dir_all(&contract_dir)?;
        tonic_build::configure().build_server(false).out_dir(&contract_dir).compile_protos_with_config(
            prost_config()?,
            &["contract/minoots/timer/v1/timer.proto"],
            &["contract"],
        )?;
    }
    Ok(())
}
