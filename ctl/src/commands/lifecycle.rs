//! `expire`, `disable`, `enable`: a key's life without deleting it.

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
    context
        .edit(|document| {
            let key = super::key_mut(document, id)?;
            key.insert("expires_at".into(), json!(when));
            super::touch(key, now);
            Ok(())
        })
        .await?;
    println!("{id} expires at {when}");
    daemon_link::reload_after_write(context.socket(), no_reload);
    Ok(())
}

pub async fn set_disabled(
    context: &Context,
    id: &str,
    disabled: bool,
    no_reload: bool,
) -> Result<(), CtlError> {
    let now = timestamp::now();
    context
        .edit(|document| {
            let key = super::key_mut(document, id)?;
            if disabled {
                key.insert("disabled".into(), Value::Bool(true));
            } else {
                key.remove("disabled");
            }
            super::touch(key, now);
            Ok(())
        })
        .await?;
    println!("{id} {}", if disabled { "disabled" } else { "enabled" });
    daemon_link::reload_after_write(context.socket(), no_reload);
    Ok(())
}
