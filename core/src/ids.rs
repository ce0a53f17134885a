//! Identifiers. Timer ids are UUIDv7 (time-ordered, so listing by id lists in
//! creation order) built from the engine's seeded RNG, never from OS
//! randomness. Tenant ids are validated strings.

use rand_chacha::ChaCha12Rng;
use rand_core::{RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use std::fmt;

use crate::error::ValidationError;
use crate::time::WallMs;

/// A timer's identity: a UUIDv7.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TimerId(pub uuid::Uuid);

impl TimerId {
    /// Parses a timer id, naming `field` in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        uuid::Uuid::try_parse(text).map(TimerId).map_err(|_| ValidationError::new(field, "must be a UUID"))
    }

    /// The shard this timer belongs to: a stable hash of the id (FNV-1a,
    /// 32-bit) reduced to [`VIRTUAL_SHARDS`]. Leases own ranges of these.
    pub fn shard(&self) -> u32 {
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self.0.as_bytes() {
            hash ^= u32::from(*byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        hash % VIRTUAL_SHARDS
    }
}

/// Number of virtual shards a timer id hashes into. Fixed forever: it is
/// persisted with every timer.
pub const VIRTUAL_SHARDS: u32 = 1024;

/// SplitMix64's increment (2^64 / φ), the step between the inputs it mixes.
pub const GOLDEN_GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;

/// SplitMix64's finaliser: nearby inputs give unrelated bits. Derives
/// seeds from seeds (a lease tenure from an incarnation's seed, the
/// simulator's per-node seeds).
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl fmt::Display for TimerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// A tenant's identity: 1–64 characters of `[A-Za-z0-9._-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TenantId(String);

impl TenantId {
    /// Validates a tenant id, naming `field` in the error.
    pub fn parse(field: &str, text: &str) -> Result<Self, ValidationError> {
        let ok_chars = text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if text.is_empty() || text.len() > crate::limits::TENANT_ID_LEN_MAX || !ok_chars {
            return Err(ValidationError::new(
                field,
                "must be 1-64 characters of letters, digits, '.', '_' or '-'",
            ));
        }
        Ok(TenantId(text.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Generates UUIDv7 timer ids from a seeded RNG: 48 bits of wall-clock
/// milliseconds followed by 74 random bits.
#[derive(Debug, Clone)]
pub struct IdGenerator {
    rng: ChaCha12Rng,
    last: u128,
}

impl IdGenerator {
    /// A generator whose sequence is fixed by `seed`.
    pub fn from_seed(seed: u64) -> Self {
        Self { rng: ChaCha12Rng::seed_from_u64(seed), last: 0 }
    }

    /// The next id, stamped with `wall_ms` (clamped to the UUIDv7 range).
    /// Ids from one generator strictly increase, also within one millisecond
    /// or when the wall clock steps back (RFC 9562 §6.2, method 2: the
    /// previous id's random bits plus one), so listing by id lists in
    /// creation order.
    pub fn next_id(&mut self, wall_ms: WallMs) -> TimerId {
        let mut random = [0u8; 10];
        self.rng.fill_bytes(&mut random);
        let millis = wall_ms.clamp(0, (1i64 << 48) - 1) as u64;
        let mut id = uuid::Builder::from_unix_timestamp_millis(millis, &random).into_uuid();
        if id.as_u128() <= self.last {
            id = Self::successor(self.last);
        }
        self.last = id.as_u128();
        TimerId(id)
    }

    /// The smallest valid UUIDv7 greater than `previous`.
    fn successor(previous: u128) -> uuid::Uuid {
        // Version (bits 76..80) and variant (bits 62..64) are fixed; count in the rest.
        const VERSION_MASK: u128 = 0xF << 76;
        const VARIANT_MASK: u128 = 0b11 << 62;
        const FIXED: u128 = VERSION_MASK | VARIANT_MASK;
        let mut next = previous | FIXED; // set fixed bits so +1 carries over them
        next = next.wrapping_add(1);
        let value = (next & !FIXED) | (0x7 << 76) | (0b10 << 62);
        uuid::Uuid::from_u128(value)
    }

    /// A random u64 from the same seeded stream (for jitter and the like).
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_deterministic_time_ordered_v7() {
        let mut a = IdGenerator::from_seed(7);
        let mut b = IdGenerator::from_seed(7);
        let first = a.next_id(1_000);
        assert_eq!(first, b.next_id(1_000));
        assert_eq!(first.0.get_version_num(), 7);
        let later = a.next_id(2_000);
        assert!(later > first, "a later millisecond sorts after");
        assert!(first.shard() < VIRTUAL_SHARDS);
    }

    #[test]
    fn ids_strictly_increase_within_a_millisecond_and_across_backward_steps() {
        let mut ids = IdGenerator::from_seed(1);
        let mut last = ids.next_id(5_000);
        for wall_ms in [5_000, 5_000, 4_000, 5_000, 5_001] {
            let id = ids.next_id(wall_ms);
            assert!(id > last, "{id} after {last}");
            assert_eq!(id.0.get_version_num(), 7);
            assert_eq!(id.0.get_variant(), uuid::Variant::RFC4122);
            last = id;
        }
    }

    #[test]
    fn tenant_rules() {
        assert!(TenantId::parse("tenantId", "tenant-local").is_ok());
        let err = TenantId::parse("tenantId", "bad tenant").unwrap_err();
        assert_eq!(err.field, "tenantId");
        assert!(TenantId::parse("tenantId", "").is_err());
        assert!(TenantId::parse("tenantId", &"x".repeat(65)).is_err());
    }
}
