//! How a key is shown: the JSON object of `list --json`/`show --json` and the table rows. Never a
//! secret or a hash.

use heare_auth_store::rate_limit::{RateLimit, RateLimitError};
use heare_auth_store::timestamp;
use serde_json::{Map, Value, json};

/// How a `rate_limit` member that is not a limit is shown (never as no limit).
pub const INVALID_LIMIT: &str = "invalid";

/// A key's state at `now`: active, expired or disabled.
pub fn state(key: &Map<String, Value>, now: i64) -> &'static str {
    if key.get("disabled").and_then(Value::as_bool) == Some(true) {
        return "disabled";
    }
    match key.get("expires_at").and_then(Value::as_str) {
        Some(text) if !text.trim().is_empty() => match timestamp::parse(text) {
            Ok(at) if at <= now => "expired",
            Ok(_) => "active",
            Err(_) => "invalid-expiry",
        },
        _ => "active",
    }
}

/// The public view of a key.
pub fn public(key: &Map<String, Value>, now: i64) -> Value {
    let field = |name: &str| key.get(name).cloned().unwrap_or(Value::Null);
    let secret_storage = if key.contains_key("secret") {
        "plaintext"
    } else {
        "hashed"
    };
    json!({
        "id": field("id"),
        "name": field("name"),
        "created_at": field("created_at"),
        "updated_at": field("updated_at"),
        "expires_at": field("expires_at"),
        "metadata": key.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "scopes": key.get("scopes").cloned().unwrap_or_else(|| json!([])),
        "rate_limit": rate_limit_json(key),
        "state": state(key, now),
        "secret_storage": secret_storage,
    })
}

/// A key's own `rate_limit`: `None` without the member, an error when it is not a limit.
pub fn rate_limit(key: &Map<String, Value>) -> Result<Option<RateLimit>, RateLimitError> {
    // `null` is no limit, as the daemon reads it (and as for its other optional members).
    key.get("rate_limit")
        .filter(|value| !value.is_null())
        .map(RateLimit::from_field)
        .transpose()
}

/// A limit as the JSON output shows it: the key file's object, `burst` always present.
pub fn limit_json(limit: &RateLimit) -> Value {
    let mut field = limit.to_field();
    if let Value::Object(object) = &mut field {
        object.insert("burst".into(), limit.burst.into());
    }
    field
}

/// The `rate_limit` of the JSON view: [`limit_json`], `null` for none, `"invalid"` for a member
/// that is not a limit.
pub fn rate_limit_json(key: &Map<String, Value>) -> Value {
    match rate_limit(key) {
        Ok(None) => Value::Null,
        Ok(Some(limit)) => limit_json(&limit),
        Err(_) => json!(INVALID_LIMIT),
    }
}

/// The text of a view's `rate_limit`: `100/1m`, `10/1s burst 25`, `-` for none, `invalid`.
pub fn rate_limit_text(shown: &Value) -> String {
    match shown {
        Value::Null => "-".to_string(),
        other => RateLimit::from_field(other)
            .map_or_else(|_| INVALID_LIMIT.to_string(), |limit| limit.to_string()),
    }
}

/// The text of the view's `field`, as a table cell or a `show` line.
pub fn cell(view: &Value, field: &str) -> String {
    match field {
        "rate_limit" => rate_limit_text(&view[field]),
        _ => text(&view[field]),
    }
}

/// A column value as text. Control characters are escaped (`\u{1b}`), and so are the invisible
/// ones that reorder or hide text (bidi controls, zero-width characters): whoever can write the
/// store must not be able to move the cursor, rewrite rows or make two ids look alike on the
/// operator's terminal.
pub fn text(value: &Value) -> String {
    let text = match value {
        Value::Null => return "-".to_string(),
        Value::String(text) => text.clone(),
        Value::Array(items) if items.iter().all(Value::is_string) => {
            let joined: Vec<&str> = items.iter().filter_map(Value::as_str).collect();
            match joined.is_empty() {
                true => return "-".to_string(),
                false => joined.join(","),
            }
        }
        other => other.to_string(),
    };
    if !text.chars().any(unsafe_on_terminal) {
        return text;
    }
    text.chars()
        .map(|c| {
            if unsafe_on_terminal(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// [`text`] of a string (from the store, S3 or the daemon) for the terminal.
pub fn shown(text: &str) -> String {
    self::text(&Value::String(text.to_string()))
}

/// Control characters, bidi controls and zero-width characters (Unicode category Cf's that
/// matter on a terminal).
fn unsafe_on_terminal(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// Prints `rows` under `columns`, each column as wide as its widest cell, two spaces apart.
pub fn print_table(columns: &[&str], rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..columns.len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |cell| cell.chars().count()))
                .chain([columns[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        cells
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let header: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
    println!("{}", line(&header));
    for row in rows {
        println!("{}", line(row));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invisible_and_control_characters_are_escaped() {
        assert_eq!(text(&json!("plain-id")), "plain-id");
        assert_eq!(text(&json!("a\rb")), "a\\rb");
        assert_eq!(text(&json!("key\u{202E}gpj")), "key\\u{202e}gpj");
        assert_eq!(text(&json!("k\u{200B}ey")), "k\\u{200b}ey");
        assert_eq!(text(&json!("\u{1b}[2J")), "\\u{1b}[2J");
    }

    fn key_with(limit: Option<Value>) -> Map<String, Value> {
        let mut key = Map::new();
        key.insert("id".into(), json!("key_x"));
        if let Some(limit) = limit {
            key.insert("rate_limit".into(), limit);
        }
        key
    }

    #[test]
    fn rate_limits_show_as_text_and_key_file_objects() {
        let cases = [
            (None, Value::Null, "-"),
            (
                Some(json!({"requests": 100, "per": "1m"})),
                json!({"requests": 100, "per": "1m", "burst": 100}),
                "100/1m",
            ),
            (
                Some(json!({"requests": 10, "per": "1s", "burst": 25})),
                json!({"requests": 10, "per": "1s", "burst": 25}),
                "10/1s burst 25",
            ),
        ];
        for (stored, json_form, shown) in cases {
            let view = public(&key_with(stored), 0);
            assert_eq!(view["rate_limit"], json_form);
            assert_eq!(cell(&view, "rate_limit"), shown);
        }
    }

    #[test]
    fn a_malformed_rate_limit_is_shown_invalid_never_unlimited() {
        for stored in [
            json!("100/1m"),
            json!({"requests": 0, "per": "1m"}),
            json!({"requests": 10, "per": "0s"}),
            json!({"requests": 10, "per": "1m", "extra": 1}),
        ] {
            let view = public(&key_with(Some(stored.clone())), 0);
            assert_eq!(view["rate_limit"], json!("invalid"), "{stored}");
            assert_eq!(cell(&view, "rate_limit"), "invalid", "{stored}");
        }
    }
}
