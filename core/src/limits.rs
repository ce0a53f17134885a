//! Every bound a client meets, in one place and named one way (`*_MAX`,
//! `*_MIN`, units last). The validation, both APIs and the action runner read
//! them from here, so the error a client gets and the bound the service
//! enforces cannot drift apart; the README's tables quote them.
//!
//! One policy for pages, REST and gRPC alike ([`page_size`]): no size asked →
//! [`PAGE_SIZE_DEFAULT`]; 1 to [`PAGE_SIZE_MAX`] → as asked; anything else
//! is refused, naming the field. (gRPC cannot tell 0 from "not set", so its
//! 0 means the default; REST's explicit `limit=0` is refused.)

use crate::error::ValidationError;

/// The longest single delay or distance into the future accepted: 10 years.
pub const FUTURE_MAX_MS: i64 = 10 * 366 * 24 * 3_600_000;
/// The shortest interval period accepted.
pub const EVERY_MIN_MS: u64 = 10;
/// How far in the past a `fireAt` may lie by default (a client whose clock is
/// a little behind): 60 s. Such a timer fires at once; its due time stays the
/// requested instant, so the recorded lateness shows the difference.
pub const PAST_FIRE_TOLERANCE_DEFAULT_MS: u64 = 60_000;
/// At most this many labels per timer.
pub const LABELS_MAX: usize = 64;
/// Label keys: 1–63 characters of `[A-Za-z0-9._/-]`.
pub const LABEL_KEY_LEN_MAX: usize = 63;
/// Label values: at most 256 characters.
pub const LABEL_VALUE_LEN_MAX: usize = 256;
/// `name`, `requestedBy`, cancel `reason`: at most 256 characters.
pub const TEXT_LEN_MAX: usize = 256;
/// `idempotencyKey`: 1–128 characters.
pub const IDEMPOTENCY_KEY_LEN_MAX: usize = 128;
/// `metadata`, `actionBundle`, `agentBinding`: at most 64 KiB each, as JSON.
pub const JSON_BYTES_MAX: usize = 64 * 1024;
/// At most this many timers in one batch.
pub const BATCH_MAX: usize = 1_000;
/// Tenant ids: 1–64 characters of `[A-Za-z0-9._-]`.
pub const TENANT_ID_LEN_MAX: usize = 64;

/// Most actions in one bundle.
pub const ACTIONS_MAX: usize = 16;
/// Longest action id.
pub const ACTION_ID_LEN_MAX: usize = 64;
/// Most attempts one delivery may be given.
pub const ATTEMPTS_MAX: u32 = 100;
/// Longest backoff delay.
pub const BACKOFF_MAX_MS: u64 = 86_400_000;
/// Longest per-action timeout.
pub const TIMEOUT_MAX_MS: u64 = 300_000;
/// Most actions of one fire run at once.
pub const CONCURRENCY_MAX: u32 = 16;
/// Most arguments of a command.
pub const COMMAND_ARGS_MAX: usize = 64;
/// Longest `file` path (the base directory and tenant directory come on top).
pub const FILE_PATH_BYTES_MAX: usize = 1_024;
/// Longest part of a `file` path (the usual filesystem limit on a name).
pub const FILE_NAME_BYTES_MAX: usize = 255;

/// The page size when a client asks for none.
pub const PAGE_SIZE_DEFAULT: u32 = 100;
/// The largest page any list returns (timers, fires, attempts, dead letters).
pub const PAGE_SIZE_MAX: u32 = 1_000;

/// The page policy: `None` → [`PAGE_SIZE_DEFAULT`]; `1..=`[`PAGE_SIZE_MAX`]
/// → as asked; else refused, naming `field`.
pub fn page_size(field: &str, requested: Option<u32>) -> Result<u32, ValidationError> {
    match requested {
        None => Ok(PAGE_SIZE_DEFAULT),
        Some(size) if (1..=PAGE_SIZE_MAX).contains(&size) => Ok(size),
        Some(_) => {
            Err(ValidationError::new(field, format!("must be a whole number from 1 to {PAGE_SIZE_MAX}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_sizes_default_pass_or_are_refused_naming_the_field() {
        assert_eq!(page_size("limit", None), Ok(PAGE_SIZE_DEFAULT));
        assert_eq!(page_size("limit", Some(1)), Ok(1));
        assert_eq!(page_size("limit", Some(PAGE_SIZE_MAX)), Ok(PAGE_SIZE_MAX));
        for refused in [0, PAGE_SIZE_MAX + 1, u32::MAX] {
            let error = page_size("page_size", Some(refused)).expect_err("refused");
            assert_eq!(error.field, "page_size");
            assert_eq!(error.message, "must be a whole number from 1 to 1000");
        }
    }
}
