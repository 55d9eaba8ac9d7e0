//! How a key is shown: the JSON object of `list --json`/`show --json` and the table rows. Never a
//! secret or a hash.

use heare_auth_store::timestamp;
use serde_json::{Map, Value, json};

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
        "state": state(key, now),
        "secret_storage": secret_storage,
    })
}

/// A column value as text. Control characters are escaped (`\u{1b}`): whoever can write the
/// store must not be able to move the cursor or rewrite rows on the operator's terminal.
pub fn text(value: &Value) -> String {
    let text = match value {
        Value::Null => return "-".to_string(),
        Value::String(text) => text.clone(),
        other => other.to_string(),
    };
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
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
