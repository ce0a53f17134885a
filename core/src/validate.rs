//! Validation rules for drafts (see [`crate::draft::validate`]).

use crate::draft::{TimerDraft, ValidTimer};
use crate::error::ValidationError;
use crate::time::{Now, WallMs};

pub(crate) fn validate(draft: &TimerDraft, now: Now) -> Result<ValidTimer, ValidationError> {
    let _ = (draft, now);
    todo!("validation rules")
}

pub(crate) fn parse_duration_text(field: &str, text: &str) -> Result<u64, ValidationError> {
    let _ = (field, text);
    todo!("duration parsing")
}

pub(crate) fn parse_instant(field: &str, text: &str) -> Result<WallMs, ValidationError> {
    let _ = (field, text);
    todo!("instant parsing")
}
