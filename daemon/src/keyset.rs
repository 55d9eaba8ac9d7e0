//! The in-memory key set: what `POST /verify` looks secrets up in.
//!
//! A [`KeySet`] is built once from key-file JSON (off to the side, while the previous set keeps
//! serving) and then only read. It never holds a raw secret: the index maps SHA-256(secret) to a
//! record, so a lookup hashes the presented secret and compares digests, which takes the same time
//! however many leading characters of a real secret an attacker guessed. The layout is compact
//! because a host may load a million keys: every string of every key lives in one arena `String`,
//! records are fixed-size spans into it, and the index maps a digest to a `u32` record position.
//!
//! Loading rules (documented in README): a key needs an `id` and either `secret` (plaintext, the
//! Python service's form) or `secret_hash` (`sha256:<hex>`, ours). A key whose own fields are
//! unusable — no secret, a malformed hash, an `expires_at` that is not ISO 8601, metadata that is
//! not an object — is skipped and reported by id, and the rest load (an unparsable expiry must
//! not silently mean "never expires"). Two keys with the same id or the same secret fail the whole
//! load, because either would make verification ambiguous.

use crate::minify::minify_json_into;
use crate::timestamp::{self, UnixMillis};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};
use std::borrow::Cow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};

/// Prefix of the `secret_hash` field: `sha256:` followed by 64 hex digits.
pub const SECRET_HASH_PREFIX: &str = "sha256:";

/// SHA-256 of a secret: the only form in which the key set knows a secret.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SecretDigest([u8; 32]);

impl SecretDigest {
    /// Hashes a presented or stored plaintext secret.
    pub fn of_secret(secret: &str) -> Self {
        SecretDigest(Sha256::digest(secret.as_bytes()).into())
    }

    /// Parses the `secret_hash` form, `sha256:<64 hex digits>`.
    pub fn parse_field(text: &str) -> Option<Self> {
        let hex = text.strip_prefix(SECRET_HASH_PREFIX)?;
        if hex.len() != 64 {
            return None;
        }
        let mut digest = [0u8; 32];
        for (byte, pair) in digest.iter_mut().zip(hex.as_bytes().chunks_exact(2)) {
            let high = (pair[0] as char).to_digit(16)?;
            let low = (pair[1] as char).to_digit(16)?;
            *byte = (high * 16 + low) as u8;
        }
        Some(SecretDigest(digest))
    }

    /// The `secret_hash` form of this digest.
    pub fn to_field(&self) -> String {
        let mut text = String::with_capacity(SECRET_HASH_PREFIX.len() + 64);
        text.push_str(SECRET_HASH_PREFIX);
        for byte in self.0 {
            text.push_str(&format!("{byte:02x}"));
        }
        text
    }
}

impl Hash for SecretDigest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // The digest is already uniformly distributed: 8 of its bytes are a perfect hash.
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(first));
    }
}

impl fmt::Debug for SecretDigest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretDigest(..)")
    }
}

/// Passes a [`SecretDigest`]'s own bits through instead of running SipHash over them.
#[derive(Default)]
struct DigestHasher(u64);

impl Hasher for DigestHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

type DigestIndex = HashMap<SecretDigest, u32, BuildHasherDefault<DigestHasher>>;
type GraceIndex = HashMap<SecretDigest, (u32, UnixMillis), BuildHasherDefault<DigestHasher>>;

/// A string of one key, as a position in the arena.
#[derive(Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

/// One key, as positions in the arena. 32 bytes.
struct Record {
    id: Span,
    name: Span,
    metadata: Span,
    /// Unix milliseconds after which the key no longer verifies; `UnixMillis::MAX` for never,
    /// [`DISABLED`] for a disabled key.
    expires_at: UnixMillis,
}

/// The `expires_at` of a disabled key: before every `now`, and told apart from a real expiry.
const DISABLED: UnixMillis = UnixMillis::MIN;

/// What the key set says of a presented secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict<'a> {
    Valid(KeyView<'a>),
    /// The secret belongs to a key whose `expires_at` has passed.
    Expired {
        key_id: &'a str,
    },
    /// The key is disabled (`"disabled": true`).
    Disabled {
        key_id: &'a str,
    },
    /// The secret was replaced by a rotation and its grace period has ended.
    Rotated {
        key_id: &'a str,
    },
    Unknown,
}

/// A verified key, borrowed from the set.
#[derive(Debug, PartialEq, Eq)]
pub struct KeyView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    /// The key's metadata as compact JSON text (an object).
    pub metadata_json: &'a str,
}

/// A key of the file that was skipped, and why. Never contains a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedKey {
    pub key_id: String,
    pub reason: String,
}

impl fmt::Display for SkippedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {} skipped: {}", self.key_id, self.reason)
    }
}

/// Why key-file JSON could not become a key set. The texts never quote the file's content,
/// because the content holds secrets.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("the key file is not valid JSON: {problem} at line {line}, column {column}")]
    Syntax {
        problem: &'static str,
        line: usize,
        column: usize,
    },
    #[error(
        "the key file is JSON but not a key file ({{\"keys\": [...]}} with an id and a secret per key) at line {line}, column {column}"
    )]
    Shape { line: usize, column: usize },
    #[error("two keys have the id {0:?}: ids must be unique")]
    DuplicateId(String),
    #[error("keys {first:?} and {second:?} have the same secret: secrets must be unique")]
    DuplicateSecret { first: String, second: String },
    #[error("the key file is too large for one key set (over 4 GiB of ids, names and metadata)")]
    TooLarge,
}

impl LoadError {
    fn from_json(error: &serde_json::Error) -> Self {
        let (line, column) = (error.line(), error.column());
        match error.classify() {
            serde_json::error::Category::Syntax => LoadError::Syntax {
                problem: "syntax error",
                line,
                column,
            },
            serde_json::error::Category::Eof => LoadError::Syntax {
                problem: "the file ends early (truncated?)",
                line,
                column,
            },
            serde_json::error::Category::Io => LoadError::Syntax {
                problem: "read error",
                line,
                column,
            },
            serde_json::error::Category::Data => LoadError::Shape { line, column },
        }
    }
}

/// An immutable set of keys, indexed by the digest of their secrets.
pub struct KeySet {
    arena: String,
    records: Vec<Record>,
    by_digest: DigestIndex,
    /// Previous secrets of rotated keys: digest → (record, end of grace).
    grace: GraceIndex,
}

impl KeySet {
    /// A set with no keys (the store holds no key file yet).
    pub fn empty() -> Self {
        KeySet {
            arena: String::new(),
            records: Vec::new(),
            by_digest: DigestIndex::default(),
            grace: GraceIndex::default(),
        }
    }

    /// Builds a set from key-file JSON, returning the keys it had to skip.
    pub fn from_json(json: &[u8]) -> Result<(KeySet, Vec<SkippedKey>), LoadError> {
        // Two stages on two threads: this one parses JSON into borrowed keys, a scoped worker
        // hashes and indexes them. On a million-key file that halves the wall time.
        let capacity = estimate_key_count(json);
        std::thread::scope(|scope| {
            let (batches, inbox) = std::sync::mpsc::sync_channel::<Vec<FileKey<'_>>>(4);
            let worker = scope.spawn(move || {
                let mut builder = Builder::with_capacity(capacity);
                'batches: for batch in inbox {
                    for key in batch {
                        if let Err(error) = builder.add(key) {
                            builder.error = Some(error);
                            break 'batches;
                        }
                    }
                }
                builder
            });
            let mut deserializer = serde_json::Deserializer::from_slice(json);
            let parsed = FileSeed {
                sink: KeySink::new(batches),
            }
            .deserialize(&mut deserializer)
            .and_then(|()| deserializer.end());
            let mut builder = worker
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            if let Some(error) = builder.error.take() {
                return Err(error);
            }
            parsed.map_err(|error| LoadError::from_json(&error))?;
            Ok(builder.finish())
        })
    }

    /// Number of keys in the set.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Looks a presented secret up at time `now`.
    pub fn verify(&self, secret: &str, now: UnixMillis) -> Verdict<'_> {
        let digest = SecretDigest::of_secret(secret);
        let (position, grace_until) = match self.by_digest.get(&digest) {
            Some(&position) => (position, UnixMillis::MAX),
            None => match self.grace.get(&digest) {
                Some(&(position, until)) => (position, until),
                None => return Verdict::Unknown,
            },
        };
        let record = &self.records[position as usize];
        let id = self.text(record.id);
        if record.expires_at == DISABLED {
            return Verdict::Disabled { key_id: id };
        }
        if now >= record.expires_at {
            return Verdict::Expired { key_id: id };
        }
        if now >= grace_until {
            return Verdict::Rotated { key_id: id };
        }
        Verdict::Valid(KeyView {
            id,
            name: self.text(record.name),
            metadata_json: self.text(record.metadata),
        })
    }

    /// Bytes the set holds on the heap (arena, records and index), for the benchmark's report.
    pub fn heap_bytes(&self) -> usize {
        let index_entry = std::mem::size_of::<(SecretDigest, u32)>() + 1;
        self.arena.capacity()
            + self.records.capacity() * std::mem::size_of::<Record>()
            + self.by_digest.capacity() * 8 / 7 * index_entry
            + self.grace.capacity() * 8 / 7 * (index_entry + 8)
    }

    fn text(&self, span: Span) -> &str {
        let start = span.start as usize;
        // Spans are made by `Builder::push_text` from this arena, on char boundaries.
        self.arena
            .get(start..start + span.len as usize)
            .unwrap_or("")
    }
}

/// One key as the file holds it; fields the daemon does not use are skipped by serde.
#[derive(Deserialize)]
struct FileKey<'a> {
    #[serde(borrow)]
    id: Cow<'a, str>,
    #[serde(borrow, default)]
    secret: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    secret_hash: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    expires_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    metadata: Option<&'a RawValue>,
    #[serde(default)]
    disabled: Option<bool>,
    #[serde(borrow, default)]
    grace_secrets: Option<Vec<GraceSecret<'a>>>,
}

/// A previous secret of a rotated key, still accepted until `expires_at`.
#[derive(Deserialize)]
struct GraceSecret<'a> {
    #[serde(borrow)]
    secret_hash: Cow<'a, str>,
    #[serde(borrow)]
    expires_at: Cow<'a, str>,
}

#[derive(Default)]
struct Builder {
    arena: String,
    records: Vec<Record>,
    by_digest: DigestIndex,
    grace: GraceIndex,
    /// Id hash → position of the first key with that hash, to find duplicate ids without
    /// copying every id (the arena holds the text to compare).
    ids: HashMap<u64, u32, BuildHasherDefault<DigestHasher>>,
    id_hasher: std::collections::hash_map::RandomState,
    skipped: Vec<SkippedKey>,
    error: Option<LoadError>,
}

impl Builder {
    fn with_capacity(keys: usize) -> Self {
        let mut builder = Builder::default();
        builder.records.reserve(keys);
        builder.by_digest.reserve(keys);
        builder.ids.reserve(keys);
        builder
    }

    fn add(&mut self, key: FileKey<'_>) -> Result<(), LoadError> {
        let id = key.id.as_ref();
        let skip = |reason: &str| SkippedKey {
            key_id: id.chars().take(64).collect(),
            reason: reason.to_string(),
        };
        let digest = match (&key.secret, &key.secret_hash) {
            (Some(secret), None) => SecretDigest::of_secret(secret),
            (None, Some(hash)) => match SecretDigest::parse_field(hash) {
                Some(digest) => digest,
                None => {
                    self.skipped
                        .push(skip("secret_hash is not sha256:<64 hex digits>"));
                    return Ok(());
                }
            },
            (Some(secret), Some(hash)) => {
                let digest = SecretDigest::of_secret(secret);
                if SecretDigest::parse_field(hash) != Some(digest) {
                    self.skipped
                        .push(skip("secret and secret_hash are both set and disagree"));
                    return Ok(());
                }
                digest
            }
            (None, None) => {
                self.skipped
                    .push(skip("it has neither secret nor secret_hash"));
                return Ok(());
            }
        };
        let expires_at = match key.expires_at.as_deref().map(str::trim) {
            None | Some("") => UnixMillis::MAX,
            Some(text) => match timestamp::parse(text) {
                Ok(at) => at,
                Err(_) => {
                    self.skipped
                        .push(skip("expires_at is not an ISO 8601 timestamp"));
                    return Ok(());
                }
            },
        };
        let mut grace = Vec::new();
        for previous in key.grace_secrets.iter().flatten() {
            match (
                SecretDigest::parse_field(&previous.secret_hash),
                timestamp::parse(&previous.expires_at),
            ) {
                (Some(digest), Ok(until)) => grace.push((digest, until)),
                _ => {
                    self.skipped.push(skip(
                        "a grace_secrets entry needs secret_hash sha256:<hex> and an ISO 8601 expires_at",
                    ));
                    return Ok(());
                }
            }
        }
        let expires_at = if key.disabled == Some(true) {
            DISABLED
        } else {
            expires_at
        };
        let metadata = match key.metadata.map(RawValue::get) {
            None | Some("null") => "{}",
            Some(raw) if raw.trim_start().starts_with('{') => raw,
            Some(_) => {
                self.skipped.push(skip("metadata is not a JSON object"));
                return Ok(());
            }
        };

        let position = u32::try_from(self.records.len()).map_err(|_| LoadError::TooLarge)?;
        match self.ids.entry(self.id_hasher.hash_one(id)) {
            Entry::Occupied(first) => {
                let first = self.records[*first.get() as usize].id;
                if self.text(first) == id {
                    return Err(LoadError::DuplicateId(id.to_string()));
                }
                // Two different ids with the same 64-bit hash: not a duplicate.
            }
            Entry::Vacant(slot) => {
                slot.insert(position);
            }
        }
        match self.by_digest.entry(digest) {
            Entry::Occupied(existing) => {
                let first = self.records[*existing.get() as usize].id;
                return Err(LoadError::DuplicateSecret {
                    first: self.text(first).to_string(),
                    second: id.to_string(),
                });
            }
            Entry::Vacant(slot) => {
                slot.insert(position);
            }
        }
        for (previous, until) in grace {
            if self.by_digest.contains_key(&previous) || self.grace.contains_key(&previous) {
                return Err(LoadError::DuplicateSecret {
                    first: "(a current or previous secret)".to_string(),
                    second: id.to_string(),
                });
            }
            self.grace.insert(previous, (position, until));
        }
        let id = self.push_text(id, false)?;
        let name = self.push_text(key.name.as_deref().unwrap_or(""), false)?;
        let metadata = self.push_text(metadata, true)?;
        self.records.push(Record {
            id,
            name,
            metadata,
            expires_at,
        });
        Ok(())
    }

    fn text(&self, span: Span) -> &str {
        let start = span.start as usize;
        self.arena
            .get(start..start + span.len as usize)
            .unwrap_or("")
    }

    fn push_text(&mut self, text: &str, minify: bool) -> Result<Span, LoadError> {
        let start = u32::try_from(self.arena.len()).map_err(|_| LoadError::TooLarge)?;
        if minify {
            minify_json_into(text, &mut self.arena);
        } else {
            self.arena.push_str(text);
        }
        let len =
            u32::try_from(self.arena.len() - start as usize).map_err(|_| LoadError::TooLarge)?;
        Ok(Span { start, len })
    }

    fn finish(mut self) -> (KeySet, Vec<SkippedKey>) {
        self.arena.shrink_to_fit();
        self.records.shrink_to_fit();
        self.by_digest.shrink_to_fit();
        self.grace.shrink_to_fit();
        let set = KeySet {
            arena: self.arena,
            records: self.records,
            by_digest: self.by_digest,
            grace: self.grace,
        };
        (set, self.skipped)
    }
}

/// Roughly how many keys a file holds (occurrences of `"id"`), so the index is sized once
/// instead of rehashing as it grows; bounded by the body size so a hostile file cannot make it
/// reserve more than the body itself could fill.
fn estimate_key_count(json: &[u8]) -> usize {
    memchr::memmem::find_iter(json, b"\"id\"")
        .count()
        .min(json.len() / 16)
}

/// Hands parsed keys to the indexing worker in batches. Dropping it flushes the last batch and
/// ends the worker's input.
struct KeySink<'de> {
    batch: Vec<FileKey<'de>>,
    worker: std::sync::mpsc::SyncSender<Vec<FileKey<'de>>>,
}

impl<'de> KeySink<'de> {
    const BATCH: usize = 4096;

    fn new(worker: std::sync::mpsc::SyncSender<Vec<FileKey<'de>>>) -> Self {
        KeySink {
            batch: Vec::with_capacity(Self::BATCH),
            worker,
        }
    }

    /// Queues a key; false once the worker has stopped (it found an error).
    fn push(&mut self, key: FileKey<'de>) -> bool {
        self.batch.push(key);
        if self.batch.len() < Self::BATCH {
            return true;
        }
        let full = std::mem::replace(&mut self.batch, Vec::with_capacity(Self::BATCH));
        self.worker.send(full).is_ok()
    }
}

impl Drop for KeySink<'_> {
    fn drop(&mut self) {
        if !self.batch.is_empty() {
            let _ = self.worker.send(std::mem::take(&mut self.batch));
        }
    }
}

/// Walks `{"keys": [...]}` and hands each key on as it is parsed, so a million-key file never
/// exists as a million parsed structs at once.
struct FileSeed<'de> {
    sink: KeySink<'de>,
}

impl<'de> DeserializeSeed<'de> for FileSeed<'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(r#"an object {"keys": [...]}"#)
    }
    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let mut saw_keys = false;
        while let Some(field) = map.next_key::<Cow<'de, str>>()? {
            if field == "keys" && !saw_keys {
                saw_keys = true;
                map.next_value_seed(KeysSeed {
                    sink: &mut self.sink,
                })?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        if saw_keys {
            Ok(())
        } else {
            Err(de::Error::missing_field("keys"))
        }
    }
}

struct KeysSeed<'s, 'de> {
    sink: &'s mut KeySink<'de>,
}

impl<'de> DeserializeSeed<'de> for KeysSeed<'_, 'de> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for KeysSeed<'_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of keys")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while let Some(key) = seq.next_element::<FileKey<'de>>()? {
            if !self.sink.push(key) {
                return Err(de::Error::custom("stopped: see the builder's error"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = 1_750_000_000_000;

    fn load(json: &str) -> (KeySet, Vec<SkippedKey>) {
        KeySet::from_json(json.as_bytes()).unwrap()
    }

    #[test]
    fn plaintext_and_hashed_secrets_verify() {
        let hash = SecretDigest::of_secret("sec_hashed").to_field();
        let (set, skipped) = load(&format!(
            r#"{{"keys":[
              {{"id":"key_a","secret":"sec_plain","name":"A","metadata":{{"env": "prod"}}}},
              {{"id":"key_b","secret_hash":"{hash}","name":"B"}}]}}"#
        ));
        assert!(skipped.is_empty());
        assert_eq!(set.len(), 2);
        assert_eq!(
            set.verify("sec_plain", NOW),
            Verdict::Valid(KeyView {
                id: "key_a",
                name: "A",
                metadata_json: r#"{"env":"prod"}"#
            })
        );
        match set.verify("sec_hashed", NOW) {
            Verdict::Valid(view) => {
                assert_eq!(view.id, "key_b");
                assert_eq!(view.metadata_json, "{}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(set.verify("sec_other", NOW), Verdict::Unknown);
        assert_eq!(set.verify("", NOW), Verdict::Unknown);
    }

    #[test]
    fn expiry_is_checked_against_now() {
        let (set, _) =
            load(r#"{"keys":[{"id":"key_e","secret":"s","expires_at":"2025-06-15T12:00:00Z"}]}"#);
        let expiry = timestamp::parse("2025-06-15T12:00:00Z").unwrap();
        assert!(matches!(set.verify("s", expiry - 1), Verdict::Valid(_)));
        assert_eq!(
            set.verify("s", expiry),
            Verdict::Expired { key_id: "key_e" }
        );
    }

    #[test]
    fn python_file_with_every_field_loads() {
        let (set, skipped) = load(
            r#"{"keys": [
  {"id": "key_0ABCDEFGH0123456789", "secret": "sec_x", "name": "Production API",
   "secret_type": "shared_secret", "created_at": "2024-01-20T10:30:00Z",
   "updated_at": null, "expires_at": null, "metadata": {"env": "prod", "n": [1, 2]}},
  {"id": "key_old", "secret": "sec_y", "name": "Old", "created_at": "2023-01-01T00:00:00"}
], "version": 3}"#,
        );
        assert!(skipped.is_empty());
        assert_eq!(set.len(), 2);
        match set.verify("sec_x", NOW) {
            Verdict::Valid(view) => assert_eq!(view.metadata_json, r#"{"env":"prod","n":[1,2]}"#),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unusable_keys_are_skipped_by_id_and_the_rest_load() {
        let (set, skipped) = load(
            r#"{"keys":[
              {"id":"key_bad_expiry","secret":"s1","expires_at":"next tuesday"},
              {"id":"key_no_secret"},
              {"id":"key_bad_hash","secret_hash":"md5:abc"},
              {"id":"key_bad_meta","secret":"s2","metadata":[1]},
              {"id":"key_good","secret":"s3"}]}"#,
        );
        assert_eq!(set.len(), 1);
        let ids: Vec<_> = skipped.iter().map(|s| s.key_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "key_bad_expiry",
                "key_no_secret",
                "key_bad_hash",
                "key_bad_meta"
            ]
        );
        assert_eq!(set.verify("s1", NOW), Verdict::Unknown);
        assert!(matches!(set.verify("s3", NOW), Verdict::Valid(_)));
    }

    #[test]
    fn duplicates_fail_the_load_without_naming_the_secret() {
        let error = KeySet::from_json(
            br#"{"keys":[{"id":"k1","secret":"sec_dup"},{"id":"k2","secret":"sec_dup"}]}"#,
        )
        .err()
        .unwrap();
        assert_eq!(
            error,
            LoadError::DuplicateSecret {
                first: "k1".into(),
                second: "k2".into()
            }
        );
        assert!(!error.to_string().contains("sec_dup"));
        let error =
            KeySet::from_json(br#"{"keys":[{"id":"k1","secret":"a"},{"id":"k1","secret":"b"}]}"#)
                .err()
                .unwrap();
        assert_eq!(error, LoadError::DuplicateId("k1".into()));
    }

    #[test]
    fn malformed_files_are_errors_that_never_quote_the_content() {
        for (json, secret) in [
            (r#"{"keys":[{"id":"k","secret":"sec_leak1"}"#, "sec_leak1"),
            (r#"{"keys":{"id":"k","secret":"sec_leak2"}}"#, "sec_leak2"),
            (
                r#"{"keys":[{"id":"k","secret":["sec_leak3"]}]}"#,
                "sec_leak3",
            ),
            (r#"{"keys":[{"id":5,"secret":"sec_leak4"}]}"#, "sec_leak4"),
            (r#"["sec_leak5"]"#, "sec_leak5"),
            (r#"{"nokeys":"sec_leak6"}"#, "sec_leak6"),
            ("", "x"),
            ("{\"keys\":[]} trailing", "trailing"),
        ] {
            let error = KeySet::from_json(json.as_bytes()).err().unwrap();
            assert!(!error.to_string().contains(secret), "{error}");
        }
    }

    #[test]
    fn disabled_keys_and_rotated_secrets() {
        let old = SecretDigest::of_secret("sec_old").to_field();
        let (set, skipped) = load(&format!(
            r#"{{"keys":[
              {{"id":"key_off","secret":"sec_off","disabled":true}},
              {{"id":"key_rot","secret_hash":"{}","grace_secrets":[
                  {{"secret_hash":"{old}","expires_at":"2025-06-15T12:00:00Z"}}]}}]}}"#,
            SecretDigest::of_secret("sec_new").to_field()
        ));
        assert!(skipped.is_empty(), "{skipped:?}");
        assert_eq!(
            set.verify("sec_off", NOW),
            Verdict::Disabled { key_id: "key_off" }
        );
        let boundary = timestamp::parse("2025-06-15T12:00:00Z").unwrap();
        assert!(matches!(
            set.verify("sec_old", boundary - 1),
            Verdict::Valid(_)
        ));
        assert_eq!(
            set.verify("sec_old", boundary),
            Verdict::Rotated { key_id: "key_rot" }
        );
        assert!(matches!(
            set.verify("sec_new", boundary + 1),
            Verdict::Valid(_)
        ));
    }

    #[test]
    fn secret_hash_field_round_trips() {
        let digest = SecretDigest::of_secret("abc");
        let field = digest.to_field();
        assert_eq!(
            field,
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(SecretDigest::parse_field(&field), Some(digest));
        assert_eq!(
            SecretDigest::parse_field(&field.to_uppercase().replace("SHA256", "sha256")),
            Some(digest)
        );
        assert_eq!(SecretDigest::parse_field("sha256:zz"), None);
    }
}
