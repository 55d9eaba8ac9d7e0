//! One module per command (or per pair of closely related commands).

pub mod changes;
pub mod create;
pub mod delete;
pub mod generate;
pub mod import;
pub mod lifecycle;
pub mod list;
pub mod rate_limit;
pub mod remote;
pub mod rotate;
pub mod usage;

use crate::error::CtlError;

/// Said on stderr after a new secret is printed (create, rotate).
pub const SAVE_NOW: &str = "Save the secret now: it is not stored and will not be shown again.";
use heare_auth_store::keyfile::Document;
use serde_json::{Map, Value};
use std::io::{BufRead, IsTerminal, Write};

/// Goes on only with `--yes` or a "y" typed on a terminal; otherwise a usage error saying
/// `refusal` (stdin is not a terminal) or `declined` (the answer was not yes).
pub fn confirm(yes: bool, question: &str, refusal: &str, declined: &str) -> Result<(), CtlError> {
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(CtlError::Usage(format!(
            "{refusal}: stdin is not a terminal; pass --yes"
        )));
    }
    print!("{question} [y/N] ");
    let _ = std::io::stdout().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        Ok(())
    } else {
        Err(CtlError::Usage(declined.into()))
    }
}

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
        Value::String(heare_auth_store::timestamp::format_seconds(now)),
    );
}
