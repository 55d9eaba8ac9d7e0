//! `import FILE` (a Python-service key file into the store, hashing its secrets) and `migrate`
//! (`--hash-secrets`: no plaintext secret left in the store; `--encrypt`: a plain file encrypted
//! under the configured storage secret). Both validate everything first and write once, so an
//! error changes nothing. The file given to `import` is the administrator's own, so it may be
//! plain JSON even when a storage secret is configured.

use crate::context::{Context, Reading};
use crate::daemon_link;
use crate::error::CtlError;
use heare_authd::keyfile::Document;
use heare_authd::keyset::SecretDigest;
use serde_json::{Map, Value, json};
use std::collections::HashSet;
use std::path::Path;

/// Replaces a plaintext `secret` with `secret_hash`; returns whether it did.
fn hash_secret(key: &mut Map<String, Value>) -> bool {
    let Some(Value::String(secret)) = key.remove("secret") else {
        return false;
    };
    key.insert(
        "secret_hash".into(),
        json!(SecretDigest::of_secret(&secret).to_field()),
    );
    true
}

fn digest_of(key: &Map<String, Value>) -> Option<String> {
    match (key.get("secret_hash"), key.get("secret")) {
        (Some(Value::String(hash)), _) => Some(hash.to_ascii_lowercase()),
        (_, Some(Value::String(plain))) => Some(SecretDigest::of_secret(plain).to_field()),
        _ => None,
    }
}

pub async fn import(context: &Context, file: &Path, no_reload: bool) -> Result<(), CtlError> {
    let body = std::fs::read(file)
        .map_err(|e| CtlError::Usage(format!("cannot read {}: {e}", file.display())))?;
    let incoming = heare_authd::keyfile::StoredDocument::decode_accepting_plaintext(
        &body,
        context.config.store.storage_secret.as_ref(),
    )?
    .document;
    let mut new_keys = Vec::new();
    for key in incoming.keys() {
        let id = key
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        let Some(id) = id else {
            return Err(CtlError::Usage(
                "a key in the file has no id; nothing imported".into(),
            ));
        };
        match digest_of(key) {
            None => {
                return Err(CtlError::Usage(format!(
                    "key {id} has no secret; nothing imported"
                )));
            }
            Some(digest) if digest == SecretDigest::of_secret("").to_field() => {
                return Err(CtlError::Usage(format!(
                    "key {id} has an empty secret, which must never verify; nothing imported"
                )));
            }
            Some(_) => {}
        }
        let mut key = key.clone();
        hash_secret(&mut key);
        new_keys.push(key);
    }
    let count = new_keys.len();
    context
        .edit(|document| {
            check_unique(document, &new_keys)?;
            for key in &new_keys {
                document.push(key.clone());
            }
            Ok(())
        })
        .await?;
    println!("imported {count} keys (secrets stored as hashes)");
    daemon_link::reload_after_write(context.socket(), no_reload);
    Ok(())
}

/// Ids and secrets of `new_keys` must not repeat, among themselves or with the store's.
fn check_unique(document: &Document, new_keys: &[Map<String, Value>]) -> Result<(), CtlError> {
    let mut ids = HashSet::new();
    let mut digests = HashSet::new();
    for key in document.keys().chain(new_keys) {
        let id = key
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if !ids.insert(id.clone()) {
            return Err(CtlError::Usage(format!(
                "key id {id} is already in use; nothing imported"
            )));
        }
        if let Some(digest) = digest_of(key)
            && !digests.insert(digest)
        {
            return Err(CtlError::Usage(format!(
                "key {id} has a secret already in use; nothing imported"
            )));
        }
    }
    Ok(())
}

pub async fn migrate(
    context: &Context,
    hash_secrets: bool,
    encrypt: bool,
    no_reload: bool,
) -> Result<(), CtlError> {
    if encrypt && context.config.store.storage_secret.is_none() {
        return Err(CtlError::Usage(
            "migrate --encrypt needs a storage secret: set STORAGE_SECRET, storage_secret_file or the systemd credential storage_secret".into(),
        ));
    }
    let reading = if encrypt {
        Reading::Encrypting
    } else {
        Reading::AsStored
    };
    let (total, hashed) = context
        .edit_as(reading, |document| {
            let mut hashed = 0;
            let mut total = 0;
            for key in document.keys_mut() {
                total += 1;
                if hash_secrets && hash_secret(key) {
                    hashed += 1;
                }
            }
            Ok((total, hashed))
        })
        .await?;
    if hash_secrets {
        println!(
            "{hashed} of {total} keys had a plaintext secret; the store now holds only hashes"
        );
    }
    if encrypt {
        println!("the store is encrypted (HEARE_ENCRYPTED_V1), {total} keys");
    }
    daemon_link::reload_after_write(context.socket(), no_reload);
    Ok(())
}
