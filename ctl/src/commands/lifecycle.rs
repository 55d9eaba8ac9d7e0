//! `expire`, `disable`, `enable`, `scopes`: a key's life and rights without deleting it.

use crate::context::Context;
use crate::daemon_link;
use crate::error::CtlError;
use crate::validate;
use heare_auth_store::timestamp;
use serde_json::{Value, json};

pub async fn expire(
    context: &Context,
    id: &str,
    at: Option<&str>,
    now_flag: bool,
    force: bool,
    no_reload: bool,
) -> Result<(), CtlError> {
    let now = timestamp::now();
    let when = if now_flag {
        timestamp::format_seconds(now)
    } else {
        validate::expiry(at, None, force, now)?
            .ok_or_else(|| CtlError::Usage("give --at TIME or --now".into()))?
    };
    crate::commit::edit(context, "expire", |document| {
        let key = super::key_mut(document, id)?;
        key.insert("expires_at".into(), json!(when));
        super::touch(key, now);
        Ok(())
    })
    .await?;
    println!("{id} expires at {when}");
    daemon_link::reload_and_report(context.socket(), no_reload);
    Ok(())
}

pub async fn set_disabled(
    context: &Context,
    id: &str,
    disabled: bool,
    no_reload: bool,
) -> Result<(), CtlError> {
    let now = timestamp::now();
    crate::commit::edit(
        context,
        if disabled { "disable" } else { "enable" },
        |document| {
            let key = super::key_mut(document, id)?;
            if disabled {
                key.insert("disabled".into(), Value::Bool(true));
            } else {
                key.remove("disabled");
            }
            super::touch(key, now);
            Ok(())
        },
    )
    .await?;
    println!("{id} {}", if disabled { "disabled" } else { "enabled" });
    daemon_link::reload_and_report(context.socket(), no_reload);
    Ok(())
}

/// `scopes KEY --add S --remove S`: removes, then adds (no repeats); an empty list removes the
/// field. Prints the scopes the key then holds.
pub async fn scopes(
    context: &Context,
    id: &str,
    add: &[String],
    remove: &[String],
    no_reload: bool,
) -> Result<(), CtlError> {
    let add = validate::scopes(add)?;
    if add.is_empty() && remove.is_empty() {
        return Err(CtlError::Usage("give --add SCOPE or --remove SCOPE".into()));
    }
    let now = timestamp::now();
    let mut held: Vec<String> = Vec::new();
    crate::commit::edit(context, "scopes", |document| {
        let key = super::key_mut(document, id)?;
        let current: Vec<String> = key
            .get("scopes")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|scope| scope.as_str().map(str::to_string))
            .filter(|scope| !remove.contains(scope))
            .collect();
        held = validate::scopes(&[current, add.clone()].concat())?;
        match held.is_empty() {
            true => key.remove("scopes"),
            false => key.insert("scopes".into(), json!(held)),
        };
        super::touch(key, now);
        Ok(())
    })
    .await?;
    let shown = if held.is_empty() {
        "(none)".to_string()
    } else {
        held.join(" ")
    };
    println!("{id} scopes: {}", crate::keyview::text(&json!(shown)));
    daemon_link::reload_and_report(context.socket(), no_reload);
    Ok(())
}
