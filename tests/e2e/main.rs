//! End-to-end tests: real `minoots` processes on private data directories
//! and ports, driven over REST, gRPC and the CLI, killed with SIGKILL and
//! restarted. Every assertion is about what a user could observe.

mod crash;
mod quickstart;
mod support;
