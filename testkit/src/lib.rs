//! # minoots-testkit
//!
//! What the tests of several crates share, kept out of every production
//! crate: the store conformance suite ([`conformance`], run against the
//! model, SQLite and PostgreSQL) and [`model_store::ModelStore`], the
//! reference `StoreModel` behind the driver's `Store` and `KeyStore` traits
//! (driver, relay, REST and gRPC tests; the simulator's key store), and
//! [`rng::SeededRng`], the one seeded generator of every test and of the
//! simulator. Used only as a dev-dependency, and by the simulator.
#![forbid(unsafe_code)]

pub mod conformance;
pub mod model_store;
pub mod rng;
