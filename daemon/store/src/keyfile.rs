//! The key file as a document that heare-authctl edits and writes back.
//!
//! Unlike the daemon's key set, which keeps only what verification needs, a
//! [`Document`] keeps everything: every field of every key (known or not), every top-level field,
//! in their original order (serde_json's `preserve_order`), so a rewrite changes only what the
//! command meant to change. [`StoredDocument`] remembers whether the body was encrypted, so it is
//! written back the same way. Errors never quote the file, which holds secrets.

use crate::codec::{self, CodecError, StorageSecret};
use serde_json::{Map, Value};

/// A key file that cannot be edited.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("the key file is not valid JSON (line {line}, column {column})")]
    Json { line: usize, column: usize },
    #[error("the key file is not {{\"keys\": [...]}} with an object per key")]
    Shape,
    #[error("the key file is encrypted; set STORAGE_SECRET (or storage_secret_file) to rewrite it")]
    SecretNeeded,
}

/// The top-level field in which heare-authctl counts its writes: every write stores
/// `max(previous + 1, now in Unix milliseconds)`, so the number only grows, whatever the writers'
/// clocks say, and a rewrite of an old backup is newer than anything before it. Inside an
/// encrypted file it cannot be forged, so a daemon refuses an encrypted body older than the
/// newest it has served (an old copy written back by someone who can write the store).
pub const GENERATION_FIELD: &str = "generation";

/// Every key of a key file, and whatever else the file holds — and which keys were touched since
/// [`Document::clear_touched`], so a write knows what its change object carries without copying
/// and comparing a million keys.
#[derive(Debug, Clone)]
pub struct Document {
    root: Map<String, Value>,
    touched: Touched,
}

/// Two documents are equal when they hold the same JSON, whatever was touched.
impl PartialEq for Document {
    fn eq(&self, other: &Self) -> bool {
        self.root == other.root
    }
}

/// The keys a command reached for changing: by id through [`Document::find_mut`],
/// [`Document::push`] and [`Document::remove`]; every key through [`Document::keys_mut`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Touched {
    #[default]
    Nothing,
    Ids(std::collections::BTreeSet<String>),
    Every,
}

impl Touched {
    fn add(&mut self, id: &str) {
        match self {
            Touched::Every => {}
            Touched::Ids(ids) => {
                ids.insert(id.to_string());
            }
            Touched::Nothing => *self = Touched::Ids([id.to_string()].into()),
        }
    }
}

impl Document {
    /// A file with no keys.
    pub fn empty() -> Self {
        let mut root = Map::new();
        root.insert("keys".into(), Value::Array(Vec::new()));
        Document {
            root,
            touched: Touched::Nothing,
        }
    }

    /// Parses key-file JSON.
    pub fn parse(json: &[u8]) -> Result<Self, KeyFileError> {
        let value: Value = serde_json::from_slice(json).map_err(|e| KeyFileError::Json {
            line: e.line(),
            column: e.column(),
        })?;
        let Value::Object(root) = value else {
            return Err(KeyFileError::Shape);
        };
        match root.get("keys") {
            Some(Value::Array(keys)) if keys.iter().all(Value::is_object) => Ok(Document {
                root,
                touched: Touched::Nothing,
            }),
            _ => Err(KeyFileError::Shape),
        }
    }

    /// Pretty-printed with indent 2, as the Python service writes it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut json = serde_json::to_vec_pretty(&self.root).unwrap_or_default();
        json.push(b'\n');
        json
    }

    /// The write count ([`GENERATION_FIELD`]); `None` for a file no heare-authctl has written.
    pub fn generation(&self) -> Option<u64> {
        self.root.get(GENERATION_FIELD).and_then(Value::as_u64)
    }

    /// Sets the write count to `generation` (the next write is newer than it): for a file
    /// rewritten on purpose over an older or future-dated one.
    pub fn reset_generation(&mut self, generation: u64) {
        self.root
            .insert(GENERATION_FIELD.into(), Value::from(generation));
    }

    /// Marks the document as one write newer than it was, at `now_ms`.
    pub fn advance_generation(&mut self, now_ms: u64) {
        let next = match self.generation() {
            Some(previous) => previous.saturating_add(1).max(now_ms),
            None => now_ms,
        };
        self.root.insert(GENERATION_FIELD.into(), Value::from(next));
    }

    /// The number of the last change of the log the document contains
    /// ([`crate::change::CHANGE_SEQ_FIELD`]); `None` for a file no log-aware writer wrote last.
    pub fn change_seq(&self) -> Option<u64> {
        self.root
            .get(crate::change::CHANGE_SEQ_FIELD)
            .and_then(Value::as_u64)
    }

    pub fn set_change_seq(&mut self, seq: u64) {
        self.root
            .insert(crate::change::CHANGE_SEQ_FIELD.into(), Value::from(seq));
    }

    /// The store's identity ([`crate::change::STORE_ID_FIELD`]), written once.
    pub fn store_id(&self) -> Option<&str> {
        self.root
            .get(crate::change::STORE_ID_FIELD)
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty())
    }

    pub fn set_store_id(&mut self, id: &str) {
        self.root
            .insert(crate::change::STORE_ID_FIELD.into(), Value::from(id));
    }

    /// The top-level fields other than `keys`.
    pub fn other_fields(&self) -> impl Iterator<Item = (&String, &Value)> {
        self.root.iter().filter(|(name, _)| *name != "keys")
    }

    /// The keys, each a JSON object.
    pub fn keys(&self) -> impl Iterator<Item = &Map<String, Value>> {
        self.key_array().iter().filter_map(Value::as_object)
    }

    /// Mutable access to every key (all count as touched).
    pub fn keys_mut(&mut self) -> impl Iterator<Item = &mut Map<String, Value>> {
        self.touched = Touched::Every;
        self.key_array_mut()
            .iter_mut()
            .filter_map(Value::as_object_mut)
    }

    /// The key with `id`.
    pub fn find(&self, id: &str) -> Option<&Map<String, Value>> {
        self.keys()
            .find(|key| key.get("id").and_then(Value::as_str) == Some(id))
    }

    /// The key with `id`, to change (it counts as touched).
    pub fn find_mut(&mut self, id: &str) -> Option<&mut Map<String, Value>> {
        self.touched.add(id);
        self.key_array_mut()
            .iter_mut()
            .filter_map(Value::as_object_mut)
            .find(|key| key.get("id").and_then(Value::as_str) == Some(id))
    }

    /// Appends a key (touched, by its id).
    pub fn push(&mut self, key: Map<String, Value>) {
        if let Some(id) = key.get("id").and_then(Value::as_str) {
            self.touched.add(id);
        }
        self.key_array_mut().push(Value::Object(key));
    }

    /// What was touched since [`Document::clear_touched`] (or the document was read).
    pub fn touched(&self) -> &Touched {
        &self.touched
    }

    /// Starts counting touched keys anew.
    pub fn clear_touched(&mut self) {
        self.touched = Touched::Nothing;
    }

    /// Removes the key with `id` (touched); returns whether there was one.
    pub fn remove(&mut self, id: &str) -> bool {
        self.touched.add(id);
        let keys = self.key_array_mut();
        let before = keys.len();
        keys.retain(|key| key.get("id").and_then(Value::as_str) != Some(id));
        keys.len() != before
    }

    fn key_array(&self) -> &[Value] {
        match self.root.get("keys") {
            Some(Value::Array(keys)) => keys,
            _ => &[],
        }
    }

    fn key_array_mut(&mut self) -> &mut Vec<Value> {
        let slot = self
            .root
            .entry("keys")
            .or_insert_with(|| Value::Array(Vec::new()));
        if !slot.is_array() {
            *slot = Value::Array(Vec::new());
        }
        match slot {
            Value::Array(keys) => keys,
            _ => unreachable!("made an array just above"),
        }
    }
}

/// A document together with how it was stored.
#[derive(Debug, Clone)]
pub struct StoredDocument {
    pub document: Document,
    /// The body was `HEARE_ENCRYPTED_V1:`; it must be written back encrypted.
    pub encrypted: bool,
}

impl StoredDocument {
    /// Decodes a stored body (decrypting it when needed); a plain body is refused when a storage
    /// secret is configured ([`codec::decode`]).
    pub fn decode(body: &[u8], secret: Option<&StorageSecret>) -> Result<Self, KeyFileError> {
        Self::parse(body, codec::decode(body, secret)?.as_ref())
    }

    /// As [`StoredDocument::decode`], accepting a plain body whatever the configuration: for a
    /// file the administrator vouches for (`import`, `migrate --encrypt`).
    pub fn decode_accepting_plaintext(
        body: &[u8],
        secret: Option<&StorageSecret>,
    ) -> Result<Self, KeyFileError> {
        Self::parse(
            body,
            codec::decode_accepting_plaintext(body, secret)?.as_ref(),
        )
    }

    fn parse(body: &[u8], json: &[u8]) -> Result<Self, KeyFileError> {
        Ok(StoredDocument {
            document: Document::parse(json)?,
            encrypted: codec::is_encrypted(body),
        })
    }

    /// Encodes the document for the store, encrypted if it was read encrypted.
    pub fn encode(&self, secret: Option<&StorageSecret>) -> Result<Vec<u8>, KeyFileError> {
        let json = self.document.to_json();
        if !self.encrypted {
            return Ok(json);
        }
        let secret = secret.ok_or(KeyFileError::SecretNeeded)?;
        Ok(codec::encode_encrypted(&json, secret))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generation_only_grows_whatever_the_clock_says() {
        let mut document = Document::empty();
        assert_eq!(document.generation(), None);
        document.advance_generation(1_000);
        assert_eq!(document.generation(), Some(1_000));
        document.advance_generation(500);
        assert_eq!(
            document.generation(),
            Some(1_001),
            "a clock behind the last writer's"
        );
        document.advance_generation(5_000);
        assert_eq!(document.generation(), Some(5_000));
        let text = String::from_utf8(document.to_json()).unwrap();
        assert!(text.contains("\"generation\": 5000"), "{text}");
    }

    const FILE: &str = r#"{
  "version": 7,
  "keys": [
    {"id": "key_a", "secret": "s1", "name": "A", "x-owner": {"team": "core"}, "metadata": {"z": 1, "a": 2}},
    {"id": "key_b", "secret_hash": "sha256:00", "future_field": [1, 2]}
  ],
  "comment": "kept"
}"#;

    #[test]
    fn unknown_fields_and_order_survive_a_rewrite() {
        let mut document = Document::parse(FILE.as_bytes()).unwrap();
        document
            .find_mut("key_a")
            .unwrap()
            .insert("name".into(), "renamed".into());
        let text = String::from_utf8(document.to_json()).unwrap();
        let again: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(again["version"], 7);
        assert_eq!(again["comment"], "kept");
        assert_eq!(again["keys"][0]["x-owner"]["team"], "core");
        assert_eq!(again["keys"][1]["future_field"][1], 2);
        assert_eq!(again["keys"][0]["name"], "renamed");
        assert!(text.find("\"version\"").unwrap() < text.find("\"keys\"").unwrap());
        assert!(text.find("\"z\"").unwrap() < text.find("\"a\": 2").unwrap());
    }

    #[test]
    fn remove_and_push() {
        let mut document = Document::parse(FILE.as_bytes()).unwrap();
        assert!(document.remove("key_a"));
        assert!(!document.remove("key_a"));
        let mut key = Map::new();
        key.insert("id".into(), "key_c".into());
        document.push(key);
        let ids: Vec<_> = document
            .keys()
            .map(|k| k["id"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["key_b", "key_c"]);
    }

    #[test]
    fn encrypted_documents_are_written_back_encrypted() {
        let secret = StorageSecret::new("s");
        let body = codec::encode_encrypted(FILE.as_bytes(), &secret);
        let stored = StoredDocument::decode(&body, Some(&secret)).unwrap();
        assert!(stored.encrypted);
        let written = stored.encode(Some(&secret)).unwrap();
        assert!(codec::is_encrypted(&written));
        assert!(matches!(
            stored.encode(None),
            Err(KeyFileError::SecretNeeded)
        ));
    }

    #[test]
    fn errors_do_not_quote_the_file() {
        for bad in [
            r#"{"keys": "sec_leak"}"#,
            r#"["sec_leak"]"#,
            r#"{"keys": ["sec_leak"]}"#,
            "{\"sec_leak",
        ] {
            let error = Document::parse(bad.as_bytes()).unwrap_err();
            assert!(!error.to_string().contains("sec_leak"), "{error}");
        }
    }
}
