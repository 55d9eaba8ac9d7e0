//! Checks on what an operator typed, before anything is written: a refused command changes
//! nothing and says why in one line (exit code 2).

use crate::error::CtlError;
use heare_auth_store::rate_limit::{RateLimit, RateLimitError};
use heare_auth_store::{duration, timestamp};
use serde_json::{Map, Value};

pub const MAX_NAME_CHARS: usize = 200;
pub const MAX_METADATA_BYTES: usize = 16 * 1024;

pub fn name(name: &str) -> Result<String, CtlError> {
    let name = name.trim();
    if name.is_empty() {
        return Err(CtlError::Usage("--name must not be empty".into()));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(CtlError::Usage(format!(
            "--name is longer than {MAX_NAME_CHARS} characters"
        )));
    }
    Ok(name.to_string())
}

/// Metadata from `--metadata JSON` or `--meta k=v …`: a JSON object of bounded size.
pub fn metadata(json: Option<&str>, pairs: &[String]) -> Result<Map<String, Value>, CtlError> {
    let object = match json {
        Some(text) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(object)) => object,
            Ok(_) => return Err(CtlError::Usage("--metadata must be a JSON object".into())),
            Err(e) => {
                return Err(CtlError::Usage(format!(
                    "--metadata is not valid JSON: {e}"
                )));
            }
        },
        None => {
            let mut object = Map::new();
            for pair in pairs {
                let (key, value) = pair
                    .split_once('=')
                    .filter(|(key, _)| !key.is_empty())
                    .ok_or_else(|| CtlError::Usage(format!("--meta {pair:?} is not KEY=VALUE")))?;
                object.insert(key.to_string(), Value::String(value.to_string()));
            }
            object
        }
    };
    let size = serde_json::to_vec(&object).map(|v| v.len()).unwrap_or(0);
    if size > MAX_METADATA_BYTES {
        return Err(CtlError::Usage(format!(
            "metadata is {size} bytes, over {MAX_METADATA_BYTES}"
        )));
    }
    Ok(object)
}

/// An expiry from `--expires-at TIME` or `--expires-in DURATION`, normalised to RFC 3339 UTC;
/// it must lie in the future unless `force`.
pub fn expiry(
    at: Option<&str>,
    within: Option<&str>,
    force: bool,
    now: i64,
) -> Result<Option<String>, CtlError> {
    let millis = match (at, within) {
        (Some(text), _) => {
            timestamp::parse(text).map_err(|e| CtlError::Usage(format!("expiry: {e}")))?
        }
        (None, Some(text)) => {
            let span =
                duration::parse(text).map_err(|e| CtlError::Usage(format!("--expires-in: {e}")))?;
            now.saturating_add(span.as_millis() as i64)
        }
        (None, None) => return Ok(None),
    };
    if millis <= now && !force {
        return Err(CtlError::Usage(
            "the expiry is not in the future (use --force to set it anyway)".into(),
        ));
    }
    Ok(Some(timestamp::format_seconds(millis)))
}

/// Scopes as given (repeatable flags): each an RFC 6750 scope token (what the daemon accepts), in
/// the order given without repeats, at most 64.
pub fn scopes(given: &[String]) -> Result<Vec<String>, CtlError> {
    let mut scopes: Vec<String> = Vec::new();
    for scope in given {
        if !heare_authd::keyset::is_scope_token(scope) {
            return Err(CtlError::Usage(format!(
                "scope {:?} is not a scope token: 1 to 128 visible ASCII characters, no space, comma, quote or backslash",
                crate::keyview::shown(scope)
            )));
        }
        if !scopes.contains(scope) {
            scopes.push(scope.clone());
        }
    }
    if scopes.len() > 64 {
        return Err(CtlError::Usage("a key holds at most 64 scopes".into()));
    }
    Ok(scopes)
}

/// A rate limit from `REQUESTS/PERIOD` and an optional burst, checked as the daemon reads it.
pub fn rate_limit(text: &str, burst: Option<u64>) -> Result<RateLimit, CtlError> {
    RateLimit::parse(text, burst).map_err(|error| match error {
        RateLimitError::Text(_) => CtlError::Usage(error.to_string()),
        other => {
            let quoted: String = text.chars().take(40).collect();
            CtlError::Usage(format!("rate limit {quoted:?}: {other}"))
        }
    })
}

/// The limit `rate-limit KEY LIMIT` sets: `none` (no `--burst`) removes the key's limit.
pub fn limit_or_none(text: &str, burst: Option<u64>) -> Result<Option<RateLimit>, CtlError> {
    match (text.trim(), burst) {
        ("none", None) => Ok(None),
        ("none", Some(_)) => Err(CtlError::Usage(
            "--burst needs a limit: `none` removes the key's rate limit".into(),
        )),
        _ => rate_limit(text, burst).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rate_limits_are_checked_and_refusals_are_usage_errors() {
        let limit = rate_limit("100/1m", None).unwrap();
        assert_eq!((limit.requests, limit.burst), (100, 100));
        assert_eq!(limit.per, Duration::from_secs(60));
        assert_eq!(rate_limit("10/1s", Some(25)).unwrap().burst, 25);
        for (text, burst) in [
            ("abc", None),
            ("0/1m", None),
            ("10/0s", None),
            ("5/1s", Some(0)),
        ] {
            let refused = rate_limit(text, burst);
            assert!(
                matches!(&refused, Err(CtlError::Usage(why)) if why.contains("rate limit")),
                "{text}: {refused:?}"
            );
        }
    }

    #[test]
    fn none_removes_and_takes_no_burst() {
        assert_eq!(limit_or_none("none", None).unwrap(), None);
        assert_eq!(
            limit_or_none("5/1s", Some(2))
                .unwrap()
                .map(|l| l.to_string()),
            Some("5/1s burst 2".to_string())
        );
        assert!(matches!(
            limit_or_none("none", Some(3)),
            Err(CtlError::Usage(_))
        ));
        assert!(matches!(
            limit_or_none("None", None),
            Err(CtlError::Usage(_))
        ));
    }
}
