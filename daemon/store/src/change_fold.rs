//! Between the key object and its change objects: which keys a write changed, in the stored form
//! a change object carries ([`changed_keys`]), and a change folded back into a key object
//! ([`fold`]) — what heare-authctl does when it finds the key object behind the log (an earlier
//! writer stopped between committing its change and rewriting the key object).
//!
//! A change object never holds a plaintext secret: a key stored with `secret` is carried with its
//! `secret_hash` instead. Folding puts the plaintext back when the key object still holds it and
//! the hash is of it, so a key file the Python service (which cannot read hashes) verifies keeps
//! verifying there.

use crate::change::KeyChange;
use crate::keyfile::Document;
use crate::secret_hash::SecretDigest;
use serde_json::{Map, Value};
use std::collections::{HashMap, HashSet};

/// The keys that differ between `before` and `after`, in `after`'s order, then the keys removed.
/// Keys without a string id are not carried (no daemon serves them).
pub fn changed_keys(before: &Document, after: &Document) -> Vec<KeyChange> {
    let old: HashMap<&str, &Map<String, Value>> = by_id(before).collect();
    let mut seen = HashSet::new();
    let mut changes = Vec::new();
    for (id, key) in by_id(after) {
        seen.insert(id);
        if old.get(id) != Some(&key) {
            changes.push(KeyChange {
                id: id.to_string(),
                key: Some(stored_form(key)),
            });
        }
    }
    for (id, _) in by_id(before) {
        if !seen.contains(id) {
            changes.push(KeyChange {
                id: id.to_string(),
                key: None,
            });
        }
    }
    changes
}

fn by_id(document: &Document) -> impl Iterator<Item = (&str, &Map<String, Value>)> {
    document
        .keys()
        .filter_map(|key| Some((key.get("id")?.as_str()?, key)))
}

/// The key as a change object carries it: a plaintext `secret` replaced by its `secret_hash`. A
/// key holding both (which no daemon serves) is carried with neither, so it stays unserved.
pub fn stored_form(key: &Map<String, Value>) -> Map<String, Value> {
    let mut stored = key.clone();
    match stored.remove("secret") {
        Some(Value::String(secret)) if !stored.contains_key("secret_hash") => {
            let hash = SecretDigest::of_secret(&secret).to_field();
            stored.insert("secret_hash".into(), Value::String(hash));
        }
        Some(_) => {
            stored.remove("secret_hash");
        }
        None => {}
    }
    stored
}

/// Applies a change's keys to `document`: a replaced key keeps its place, a new one is appended,
/// a removed one goes. Returns how many keys it touched.
pub fn fold(document: &mut Document, keys: &[KeyChange]) -> usize {
    for change in keys {
        match &change.key {
            None => {
                document.remove(&change.id);
            }
            Some(new) => {
                let new = with_plaintext_kept(document.find(&change.id), new);
                match document.find_mut(&change.id) {
                    Some(slot) => *slot = new,
                    None => document.push(new),
                }
            }
        }
    }
    keys.len()
}

/// `new`, with the plaintext `secret` of `old` in place of `secret_hash` when it is its hash.
fn with_plaintext_kept(
    old: Option<&Map<String, Value>>,
    new: &Map<String, Value>,
) -> Map<String, Value> {
    let plain = old
        .and_then(|old| old.get("secret"))
        .and_then(Value::as_str);
    let hash = new.get("secret_hash").and_then(Value::as_str);
    let mut kept = new.clone();
    if let (Some(plain), Some(hash)) = (plain, hash)
        && SecretDigest::of_secret(plain).to_field() == hash
    {
        kept.remove("secret_hash");
        kept.insert("secret".into(), Value::String(plain.to_string()));
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> Document {
        Document::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn only_what_changed_is_carried_and_never_a_plaintext_secret() {
        let before = doc(r#"{"keys": [{"id": "key_a", "secret": "s1", "name": "A"},
                         {"id": "key_b", "secret_hash": "sha256:bb", "name": "B"},
                         {"id": "key_c", "secret": "s3"}]}"#);
        let after = doc(r#"{"keys": [{"id": "key_a", "secret": "s1", "name": "A2"},
                         {"id": "key_b", "secret_hash": "sha256:bb", "name": "B"},
                         {"id": "key_d", "secret_hash": "sha256:dd"}]}"#);
        let changes = changed_keys(&before, &after);
        let ids: Vec<_> = changes
            .iter()
            .map(|c| (c.id.as_str(), c.key.is_some()))
            .collect();
        assert_eq!(ids, [("key_a", true), ("key_d", true), ("key_c", false)]);
        let a = changes[0].key.as_ref().unwrap();
        assert!(!a.contains_key("secret"));
        assert_eq!(
            a["secret_hash"],
            Value::String(SecretDigest::of_secret("s1").to_field())
        );
    }

    #[test]
    fn folding_a_change_gives_the_writers_document_with_plaintext_kept() {
        let before = doc(r#"{"keys": [{"id": "key_a", "secret": "s1", "name": "A"},
                         {"id": "key_c", "secret": "s3"}], "generation": 5}"#);
        let after = doc(r#"{"keys": [{"id": "key_a", "secret": "s1", "name": "A2"},
                         {"id": "key_d", "secret_hash": "sha256:dd"}], "generation": 5}"#);
        let mut folded = before.clone();
        assert_eq!(fold(&mut folded, &changed_keys(&before, &after)), 3);
        assert_eq!(folded, after);
    }

    #[test]
    fn a_key_with_both_forms_stays_unserved() {
        let mut key = Map::new();
        key.insert("id".into(), "key_a".into());
        key.insert("secret".into(), "s1".into());
        key.insert("secret_hash".into(), "sha256:aa".into());
        let stored = stored_form(&key);
        assert!(!stored.contains_key("secret") && !stored.contains_key("secret_hash"));
    }
}
