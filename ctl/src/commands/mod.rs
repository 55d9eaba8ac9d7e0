//! One module per command (or per pair of closely related commands).

pub mod create;
pub mod delete;
pub mod generate;
pub mod import;
pub mod lifecycle;
pub mod list;
pub mod remote;
pub mod rotate;

use crate::error::CtlError;
use heare_authd::keyfile::Document;
use serde_json::{Map, Value};

/// The key `id` of `document`, or exit code 3.
pub fn key_mut<'d>(
    document: &'d mut Document,
    id: &str,
) -> Result<&'d mut Map<String, Value>, CtlError> {
    document
        .find_mut(id)
        .ok_or_else(|| CtlError::NotFound(id.to_string()))
}

/// Marks a key as changed now.
pub fn touch(key: &mut Map<String, Value>, now: i64) {
    key.insert(
        "updated_at".into(),
        Value::String(heare_authd::timestamp::format_seconds(now)),
    );
}
