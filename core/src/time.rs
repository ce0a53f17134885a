//! Time as an input. The engine never reads a clock: every input carries a
//! [`Now`], and the engine answers with the wall-clock instant at which it
//! wants to be ticked next.
//!
//! - `wall_ms` is UTC milliseconds since the Unix epoch. Due times are wall
//!   times. It may jump in either direction (NTP steps); the engine stays
//!   correct when it does, because the store re-checks every fire against its
//!   own clock.
//! - `mono_ms` is a monotonic millisecond counter (arbitrary origin) for
//!   leases and timeouts. The engine asserts that it never decreases.

use serde::{Deserialize, Serialize};

/// Wall-clock milliseconds since the Unix epoch (UTC).
pub type WallMs = i64;

/// The time of an input, as read by the driver's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Now {
    /// UTC milliseconds since the Unix epoch; may step in either direction.
    pub wall_ms: WallMs,
    /// Monotonic milliseconds; never decreases.
    pub mono_ms: u64,
}

impl Now {
    /// A `Now` for tests and for drivers that already hold both readings.
    pub const fn new(wall_ms: WallMs, mono_ms: u64) -> Self {
        Self { wall_ms, mono_ms }
    }
}

/// Formats a wall time as RFC 3339 with milliseconds (`2026-01-02T03:04:05.678Z`).
/// Out-of-range values (beyond year 9999) are formatted as a plain number.
pub fn format_wall_ms(wall_ms: WallMs) -> String {
    match chrono::DateTime::from_timestamp_millis(wall_ms) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        None => wall_ms.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_rfc3339_millis() {
        assert_eq!(format_wall_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_wall_ms(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
