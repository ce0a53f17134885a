//! The `minoots` binary: `serve` runs a node; `migrate` prepares a store;
//! `timers` and `bench` talk to a running server over gRPC; `keys` manages API
//! keys in a local store. Every flag has an environment-variable equivalent.

mod actions_setup;
mod bench;
mod cli;
mod client;
mod config;
mod dlq_cmd;
mod grpc_server;
mod jwt;
mod keys_cmd;
mod listen;
mod orchestrator;
mod secrets;
mod serve;
mod tenants_cmd;
mod timers_cmd;

use clap::Parser;

/// mimalloc: glibc's malloc cost a quarter of the server under load (see Cargo.toml).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
