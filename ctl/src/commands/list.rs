//! `list` and `show`: what is in the store, never a secret or a hash.

use crate::context::Context;
use crate::error::CtlError;
use crate::keyview;
use heare_auth_store::timestamp;
use serde_json::Value;

pub async fn list(context: &Context, detailed: bool, json: bool) -> Result<(), CtlError> {
    let (stored, _) = context.read().await?;
    let now = timestamp::now();
    let keys: Vec<Value> = stored
        .document
        .keys()
        .map(|k| keyview::public(k, now))
        .collect();
    if json {
        println!("{}", Value::Array(keys));
        return Ok(());
    }
    let mut columns = vec![
        "ID",
        "NAME",
        "CREATED",
        "EXPIRES",
        "STATE",
        "SCOPES",
        "RATE_LIMIT",
    ];
    let mut fields = vec![
        "id",
        "name",
        "created_at",
        "expires_at",
        "state",
        "scopes",
        "rate_limit",
    ];
    if detailed {
        columns.extend(["UPDATED", "SECRET", "METADATA"]);
        fields.extend(["updated_at", "secret_storage", "metadata"]);
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|key| fields.iter().map(|f| keyview::cell(key, f)).collect())
        .collect();
    keyview::print_table(&columns, &rows);
    Ok(())
}

pub async fn show(context: &Context, id: &str, json: bool) -> Result<(), CtlError> {
    let (stored, _) = context.read().await?;
    let key = stored
        .document
        .find(id)
        .ok_or_else(|| CtlError::NotFound(id.to_string()))?;
    let view = keyview::public(key, timestamp::now());
    if json {
        println!("{view}");
        return Ok(());
    }
    for field in [
        "id",
        "name",
        "state",
        "created_at",
        "updated_at",
        "expires_at",
        "secret_storage",
        "scopes",
        "rate_limit",
        "metadata",
    ] {
        println!(
            "{:<15} {}",
            format!("{field}:"),
            keyview::cell(&view, field)
        );
    }
    Ok(())
}
