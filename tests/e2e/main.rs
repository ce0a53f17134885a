//! End-to-end tests: real `minoots` processes on private data directories
//! and ports, driven over REST, gRPC and the CLI, killed with SIGKILL and
//! restarted. Every assertion is about what a user could observe. The
//! cluster tests (`cluster`) run three nodes on a private PostgreSQL server
//! (`pg`, shared with the store's tests); the Raft tests (`raft`) run three
//! nodes on their own data directories, with the same harness.

mod actions;
mod bench;
mod cluster;
mod connections;
mod crash;
mod firing_fairness;
mod jwt;
#[path = "../support/pg.rs"]
mod pg;
mod quickstart;
mod raft;
mod support;
