//! Between the key object and its change objects: the keys a write touched, in the stored form
//! a change object carries ([`touched_keys`]), and a change folded back into a key object
//! ([`fold`]) — what heare-authctl does when it finds the key object behind the log (an earlier
//! writer stopped between committing its change and rewriting the key object).
//!
//! A change object never holds a plaintext secret: a key stored with `secret` is carried with its
//! `secret_hash` instead. Folding puts the plaintext back when the key object still holds it and
//! the hash is of it, so a key file the Python service (which cannot read hashes) verifies keeps
//! verifying there.

use crate::change::KeyChange;
use crate::keyfile::{Document, Touched};
use crate::secret_hash::SecretDigest;
use serde_json::{Map, Value};
use std::collections::{BTreeSet, HashSet};

/// The keys `document` says were touched, as they are now (in the document's order), then those
/// touched and no longer there (removed); `None` when every key was touched (the change is then
/// a snapshot). One pass over the keys, no copy of the document.
pub fn touched_keys(document: &Document) -> Option<Vec<KeyChange>> {
    let ids: &BTreeSet<String> = match document.touched() {
        Touched::Nothing => return Some(Vec::new()),
        Touched::Ids(ids) => ids,
        Touched::Every => return None,
    };
    let mut present = HashSet::new();
    let mut changes = Vec::new();
    for key in document.keys() {
        let Some(id) = key.get("id").and_then(Value::as_str) else {
            continue;
        };
        if ids.contains(id) && present.insert(id) {
            changes.push(KeyChange {
                id: id.to_string(),
                key: Some(stored_form(key)),
            });
        }
    }
    changes.extend(
        ids.iter()
            .filter(|id| !present.contains(id.as_str()))
            .map(|id| KeyChange {
                id: id.clone(),
                key: None,
            }),
    );
    Some(changes)
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

    fn edited(before: &Document) -> Document {
        let mut after = before.clone();
        after.clear_touched();
        after
            .find_mut("key_a")
            .unwrap()
            .insert("name".into(), "A2".into());
        after.remove("key_c");
        let mut new = Map::new();
        new.insert("id".into(), "key_d".into());
        new.insert("secret_hash".into(), "sha256:dd".into());
        after.push(new);
        after
    }

    #[test]
    fn only_what_was_touched_is_carried_and_never_a_plaintext_secret() {
        let before = doc(r#"{"keys": [{"id": "key_a", "secret": "s1", "name": "A"},
                         {"id": "key_b", "secret_hash": "sha256:bb", "name": "B"},
                         {"id": "key_c", "secret": "s3"}]}"#);
        let changes = touched_keys(&edited(&before)).unwrap();
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
        let mut all = before.clone();
        let _ = all.keys_mut().count();
        assert_eq!(touched_keys(&all), None, "every key touched: a snapshot");
    }

    #[test]
    fn folding_a_change_gives_the_writers_document_with_plaintext_kept() {
        let before = doc(r#"{"keys": [{"id": "key_a", "secret": "s1", "name": "A"},
                         {"id": "key_c", "secret": "s3"}], "generation": 5}"#);
        let after = edited(&before);
        let mut folded = before.clone();
        assert_eq!(fold(&mut folded, &touched_keys(&after).unwrap()), 3);
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
