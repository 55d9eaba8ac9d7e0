//! `import FILE` (a Python-service key file into the store, hashing its secrets) and `migrate`
//! (`--hash-secrets`: no plaintext secret left in the store; `--encrypt`: a plain file encrypted
//! under the configured storage secret). Both validate everything first and write once, so an
//! error changes nothing. The file given to `import` is the administrator's own, so it may be
//! plain JSON even when a storage secret is configured.

use crate::context::{Context, Reading};
use crate::daemon_link;
use crate::error::CtlError;
use crate::keyview;
use heare_auth_store::WriteCondition;
use heare_auth_store::keyfile::{Document, StoredDocument};
use heare_auth_store::secret_hash::SecretDigest;
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
    let incoming = heare_auth_store::keyfile::StoredDocument::decode_accepting_plaintext(
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
    crate::commit::edit(context, "import", |document| {
        check_unique(document, &new_keys)?;
        for key in &new_keys {
            document.push(key.clone());
        }
        Ok(())
    })
    .await?;
    println!("imported {count} keys (secrets stored as hashes)");
    daemon_link::reload_and_report(context.socket(), no_reload);
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

/// What `migrate` does.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    /// Replace plaintext secrets by their hashes.
    pub hash_secrets: bool,
    /// Encrypt a plain file under the storage secret (after showing its keys).
    pub encrypt: bool,
    /// Do not ask before encrypting.
    pub yes: bool,
}

pub async fn migrate(
    context: &Context,
    migration: Migration,
    no_reload: bool,
) -> Result<(), CtlError> {
    if migration.encrypt {
        encrypt(context, migration, no_reload).await
    } else {
        hash_secrets(context, no_reload).await
    }
}

async fn hash_secrets(context: &Context, no_reload: bool) -> Result<(), CtlError> {
    let (total, hashed) =
        crate::commit::edit(context, "migrate", |document| Ok(hash_all(document))).await?;
    println!("{hashed} of {total} keys had a plaintext secret; the store now holds only hashes");
    daemon_link::reload_and_report(context.socket(), no_reload);
    Ok(())
}

/// Replaces every plaintext secret by its hash; (keys, of which hashed).
fn hash_all(document: &mut Document) -> (usize, usize) {
    let mut hashed = 0;
    let mut total = 0;
    for key in document.keys_mut() {
        total += 1;
        if hash_secret(key) {
            hashed += 1;
        }
    }
    (total, hashed)
}

/// A key as the operator must review it before vouching for it: every field, a plaintext secret
/// as a fingerprint of its hash, each `secret_hash` (also in `grace_secrets`, which would let
/// another secret in) as its first 12 hex digits.
fn reviewed(key: &Map<String, Value>) -> Value {
    let fingerprint = |hash: &str| {
        let short: String = hash.chars().take(SHOWN_HASH).collect();
        Value::String(format!("{short}…"))
    };
    let mut shown = key.clone();
    if let Some(Value::String(secret)) = shown.remove("secret") {
        let hash = SecretDigest::of_secret(&secret).to_field();
        shown.insert("secret (plaintext, hash)".into(), fingerprint(&hash));
    }
    if let Some(Value::String(hash)) = shown.get("secret_hash").cloned() {
        shown.insert("secret_hash".into(), fingerprint(&hash));
    }
    if let Some(Value::Array(entries)) = shown.get_mut("grace_secrets") {
        for entry in entries.iter_mut() {
            if let Some(Value::String(hash)) = entry.get("secret_hash").cloned() {
                entry["secret_hash"] = fingerprint(&hash);
            }
        }
    }
    Value::Object(shown)
}

/// Characters of a `secret_hash` shown for review: `sha256:` and 12 hex digits.
const SHOWN_HASH: usize = 19;

/// Prints every key with every field (hashes as fingerprints) and the top-level fields, as they
/// would be encrypted; returns how many keys.
fn show_for_review(document: &Document) -> usize {
    let now = heare_auth_store::timestamp::now();
    let keys: Vec<_> = document.keys().collect();
    println!(
        "The store holds {} keys; every field of each, as it would be encrypted:",
        keys.len()
    );
    for key in &keys {
        println!(
            "  {} ({})",
            keyview::text(&reviewed(key)),
            keyview::state(key, now)
        );
    }
    for (name, value) in document.other_fields() {
        println!("  top-level {name}: {}", keyview::text(value));
    }
    keys.len()
}

/// The reviewed store with its log identity: a store without one gets it now, after the
/// operator confirmed (a refused migration writes nothing), by a write of its own; read again, it
/// must hold exactly the keys reviewed.
async fn identified(
    context: &Context,
    reviewed: StoredDocument,
    condition: WriteCondition,
) -> Result<(StoredDocument, WriteCondition), CtlError> {
    if reviewed.document.store_id().is_some() {
        return Ok((reviewed, condition));
    }
    crate::commit::prepare(context, Reading::Encrypting).await?;
    let (again, condition) = context.read_as(Reading::Encrypting).await?;
    if !again.document.keys().eq(reviewed.document.keys()) {
        return Err(CtlError::Conflict(format!(
            "{} changed while its keys were being reviewed; nothing was encrypted, run again",
            context.store.describe()
        )));
    }
    Ok((again, condition))
}

/// `migrate --encrypt`: a plain file is read once, its keys shown, and after confirmation
/// written back encrypted — only if the store still holds what was shown. Whoever could write a
/// plain file may have added keys: the operator vouches for what is encrypted.
async fn encrypt(context: &Context, migration: Migration, no_reload: bool) -> Result<(), CtlError> {
    if context.config.store.storage_secret.is_none() {
        return Err(CtlError::Usage(
            "migrate --encrypt needs a storage secret: set STORAGE_SECRET, storage_secret_file or the systemd credential storage_secret".into(),
        ));
    }
    let (stored, condition) = context.read_as(Reading::Encrypting).await?;
    let key_count = show_for_review(&stored.document);
    super::confirm(
        migration.yes,
        "Encrypt exactly these keys? Anyone who could write the store may have added or changed some.",
        "refusing to encrypt keys nobody has reviewed",
        "not encrypted",
    )?;
    let (read_as, condition) = identified(context, stored, condition).await?;
    let mut stored = read_as.clone();
    stored.encrypted = true;
    let (total, hashed) = if migration.hash_secrets {
        hash_all(&mut stored.document)
    } else {
        (key_count, 0)
    };
    crate::commit::write_once(
        context,
        "migrate",
        &stored,
        &read_as,
        condition,
        "changed while its keys were being reviewed",
    )
    .await?;
    if migration.hash_secrets {
        println!(
            "{hashed} of {total} keys had a plaintext secret; the store now holds only hashes"
        );
    }
    println!("the store is encrypted (HEARE_ENCRYPTED_V1), {total} keys");
    daemon_link::reload_and_report(context.socket(), no_reload);
    Ok(())
}
