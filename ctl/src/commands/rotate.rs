//! `rotate`: a new secret for the same key id. The old secret moves to `grace_secrets` with an
//! end time (now + grace, never past the key's own expiry); the daemon accepts it until then and
//! refuses it after, with no reload needed at the boundary. Grace entries already over are
//! dropped, and a plaintext `secret` is replaced by the new hash.

use crate::context::Context;
use crate::daemon_link;
use crate::error::CtlError;
use crate::secrets;
use heare_auth_store::secret_hash::SecretDigest;
use heare_auth_store::{duration, timestamp};
use serde_json::{Map, Value, json};

pub async fn run(
    context: &Context,
    id: &str,
    grace: &str,
    as_json: bool,
    no_reload: bool,
) -> Result<(), CtlError> {
    let grace = duration::parse(grace).map_err(|e| CtlError::Usage(format!("--grace: {e}")))?;
    let secret = secrets::new_secret();
    let now = timestamp::now();
    let grace_until = crate::commit::edit(context, "rotate", |document| {
        let key = super::key_mut(document, id)?;
        let until = grace_end(key, now, grace);
        let mut kept = current_grace(key, now);
        if let Some(old_hash) = current_hash(key)
            && until > now
        {
            kept.push(json!({"secret_hash": old_hash, "expires_at": timestamp::format(until)}));
        }
        key.remove("secret");
        key.insert(
            "secret_hash".into(),
            json!(SecretDigest::of_secret(&secret).to_field()),
        );
        if kept.is_empty() {
            key.remove("grace_secrets");
        } else {
            key.insert("grace_secrets".into(), Value::Array(kept));
        }
        super::touch(key, now);
        Ok(until)
    })
    .await?;
    let grace_until = timestamp::format(grace_until);
    if as_json {
        // One JSON object, so the reload's outcome comes before it is printed; asked with a short
        // deadline, since the object holds the only copy of the new secret.
        let daemon = daemon_link::reload_within(
            context.socket(),
            no_reload,
            daemon_link::JSON_RELOAD_TIMEOUT,
        );
        let out = json!({"id": id, "secret": secret, "old_secret_valid_until": grace_until,
                         "daemon": daemon.to_json()});
        println!("{out}");
        eprintln!("{}", super::SAVE_NOW);
        daemon.report();
    } else {
        // The secret is shown before the reload, which may wait for the daemon.
        println!("Rotated {id}:");
        println!("  New secret:         {secret}");
        println!("  Old secret valid until {grace_until}");
        eprintln!("{}", super::SAVE_NOW);
        daemon_link::reload_and_report(context.socket(), no_reload);
    }
    Ok(())
}

/// When the old secret stops working: now + grace, never past the key's own expiry.
fn grace_end(key: &Map<String, Value>, now: i64, grace: std::time::Duration) -> i64 {
    let key_expiry = key
        .get("expires_at")
        .and_then(Value::as_str)
        .and_then(|t| timestamp::parse(t).ok());
    now.saturating_add(grace.as_millis() as i64)
        .min(key_expiry.unwrap_or(i64::MAX))
}

/// The `secret_hash` of the key's current secret, whichever form it is stored in.
fn current_hash(key: &Map<String, Value>) -> Option<String> {
    match (key.get("secret_hash"), key.get("secret")) {
        (Some(Value::String(hash)), _) => Some(hash.clone()),
        (_, Some(Value::String(plain))) => Some(SecretDigest::of_secret(plain).to_field()),
        _ => None,
    }
}

/// The key's grace entries that have not ended by `now`.
fn current_grace(key: &Map<String, Value>, now: i64) -> Vec<Value> {
    let Some(entries) = key.get("grace_secrets").and_then(Value::as_array) else {
        return Vec::new();
    };
    entries
        .iter()
        .filter(|entry| {
            entry
                .get("expires_at")
                .and_then(Value::as_str)
                .and_then(|t| timestamp::parse(t).ok())
                .is_some_and(|end| end > now)
        })
        .cloned()
        .collect()
}
