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

/// Fails the scenario with a message unless `$cond` holds.
macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// Fails the scenario unless `$actual == $expected`, showing both.
macro_rules! ensure_eq {
    ($actual:expr, $expected:expr, $what:expr) => {{
        let actual = $actual;
        let expected = $expected;
        if actual != expected {
            return Err(format!("{}: expected {:?}, got {:?}", $what, expected, actual));
        }
    }};
}

pub mod conformance;
pub mod durability;
pub mod model_store;
pub mod rng;
