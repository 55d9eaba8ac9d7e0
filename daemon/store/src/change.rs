//! A change object: one numbered entry of the change log kept beside the key object
//! (`<key object>.changes/<number, 20 digits>.json`).
//!
//! It holds what a daemon needs to apply the change without reading the key object — for each
//! key touched, its stored form after the change (`secret_hash`, never a plaintext secret), or
//! its removal — and the record of who made it: time, author, heare-authctl's version and the
//! operator's reason. A `snapshot` change holds no keys: it tells a daemon to load the key
//! object, which contains that change (a change of more than [`MAX_KEYS`] keys is written so).
//!
//! Inside what is encrypted it carries its own number and the store's identity (an id written
//! once into the key object), so a change object copied to another number or from another store
//! by someone who can write the bucket but holds no storage secret is refused by
//! [`Change::decode`]. Under a storage secret a plain change object is refused, as a plain key
//! object is. Errors never quote the object.

use crate::codec::{self, CodecError, StorageSecret};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The `format` field of every change object this version writes and reads.
pub const FORMAT: &str = "heare-auth-change/1";

/// The most keys one change object lists; a bigger change is written as a `snapshot`.
pub const MAX_KEYS: usize = 1000;

/// The operation of a change that tells daemons to load the key object.
pub const SNAPSHOT: &str = "snapshot";

/// The top-level field of the key object holding the number of the last change it contains.
pub const CHANGE_SEQ_FIELD: &str = "change_seq";

/// The top-level field of the key object holding the store's identity.
pub const STORE_ID_FIELD: &str = "store_id";

/// Who made a change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Author {
    /// The name of the user heare-authctl ran as.
    pub user: String,
    /// The name the session was logged in as (the kernel's audit login uid), when it differs
    /// from `user` (someone who became root with sudo or su).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<String>,
    pub host: String,
    /// The AWS principal that wrote the change (STS `GetCallerIdentity`), when it was known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_principal: Option<String>,
}

/// One key's state after a change: its stored form, or `None` when it was deleted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyChange {
    pub id: String,
    pub key: Option<Map<String, Value>>,
}

/// One change object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub format: String,
    /// Its own number in the log.
    pub seq: u64,
    /// The identity of the store it belongs to ([`STORE_ID_FIELD`]).
    pub store_id: String,
    /// `create`, `delete`, `rotate`, … or [`SNAPSHOT`]: a label for people; what a daemon applies
    /// is `keys`, whatever the operation is called.
    pub operation: String,
    #[serde(default)]
    pub keys: Vec<KeyChange>,
    /// When it was made, RFC 3339 in UTC.
    pub time: String,
    pub author: Author,
    pub ctl_version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Why a change object cannot be used. The texts never quote the object.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("it is not a change object (line {line}, column {column})")]
    Json { line: usize, column: usize },
    #[error("its format is not {FORMAT}")]
    Format,
    #[error(
        "it says it is change {inner}, but it is stored as change {name} (copied from elsewhere?)"
    )]
    WrongNumber { inner: u64, name: u64 },
    #[error("it belongs to another store (its store id differs from the key object's)")]
    WrongStore,
    #[error("it lists {0} keys, more than the {MAX_KEYS} a change object may")]
    TooManyKeys(usize),
    #[error("its entry {0} is not a key with that id and without a plaintext secret")]
    BadKey(usize),
}

impl Change {
    /// Whether daemons load the key object for it instead of applying its keys.
    pub fn is_snapshot(&self) -> bool {
        self.operation == SNAPSHOT
    }

    /// The bytes to store: compact JSON, encrypted when a storage secret is configured.
    pub fn encode(&self, secret: Option<&StorageSecret>) -> Vec<u8> {
        let json = serde_json::to_vec(self).unwrap_or_default();
        match secret {
            Some(secret) => codec::encode_encrypted(&json, secret),
            None => json,
        }
    }

    /// Decodes the object stored as change `seq` of the store `store_id`, refusing a plain body
    /// under a storage secret, another number or store inside, and keys that are not well-formed.
    pub fn decode(
        body: &[u8],
        secret: Option<&StorageSecret>,
        seq: u64,
        store_id: &str,
    ) -> Result<Change, ChangeError> {
        let change = Self::parse(body, secret)?;
        change.check(seq, store_id)?;
        Ok(change)
    }

    /// As [`Change::decode`] for a reader that does not know the store's identity and takes the
    /// one the change names (a key object that lost its own to a writer that keeps no log).
    pub fn decode_naming_store(
        body: &[u8],
        secret: Option<&StorageSecret>,
        seq: u64,
    ) -> Result<Change, ChangeError> {
        let change = Self::parse(body, secret)?;
        change.check(seq, &change.store_id)?;
        Ok(change)
    }

    /// As [`Change::decode`] for a body kept away from its name (a daemon's cache of the changes
    /// it applied): the number and store inside are taken as they are, for the caller to check.
    pub fn decode_kept(body: &[u8], secret: Option<&StorageSecret>) -> Result<Change, ChangeError> {
        let change = Self::parse(body, secret)?;
        change.check(change.seq, &change.store_id)?;
        Ok(change)
    }

    fn parse(body: &[u8], secret: Option<&StorageSecret>) -> Result<Change, ChangeError> {
        let json = codec::decode(body, secret)?;
        serde_json::from_slice(&json).map_err(|e| ChangeError::Json {
            line: e.line(),
            column: e.column(),
        })
    }

    fn check(&self, seq: u64, store_id: &str) -> Result<(), ChangeError> {
        if self.format != FORMAT {
            return Err(ChangeError::Format);
        }
        if self.seq != seq {
            return Err(ChangeError::WrongNumber {
                inner: self.seq,
                name: seq,
            });
        }
        if self.store_id != store_id {
            return Err(ChangeError::WrongStore);
        }
        if self.keys.len() > MAX_KEYS {
            return Err(ChangeError::TooManyKeys(self.keys.len()));
        }
        match self.keys.iter().position(|entry| !entry.is_well_formed()) {
            Some(index) => Err(ChangeError::BadKey(index)),
            None => Ok(()),
        }
    }
}

impl KeyChange {
    /// A non-empty id, and a stored form (if any) with the same id and no plaintext secret.
    fn is_well_formed(&self) -> bool {
        let key_matches = match &self.key {
            None => true,
            Some(key) => {
                key.get("id").and_then(Value::as_str) == Some(self.id.as_str())
                    && !key.contains_key("secret")
            }
        };
        !self.id.is_empty() && key_matches
    }
}

/// The name of change `seq` within the log: 20 digits and `.json`.
pub fn object_name(seq: u64) -> String {
    format!("{seq:020}.json")
}

/// The number a log entry's name stands for; `None` for any other name.
pub fn seq_of_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".json")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Change {
        let mut key = Map::new();
        key.insert("id".into(), "key_a".into());
        key.insert("secret_hash".into(), "sha256:00".into());
        Change {
            format: FORMAT.into(),
            seq,
            store_id: "store_x".into(),
            operation: "create".into(),
            keys: vec![KeyChange {
                id: "key_a".into(),
                key: Some(key),
            }],
            time: "2026-12-03T20:00:00Z".into(),
            author: Author {
                user: "root".into(),
                login: Some("alice".into()),
                host: "h1".into(),
                aws_principal: None,
            },
            ctl_version: "0.1.0".into(),
            reason: Some("ticket 7".into()),
        }
    }

    #[test]
    fn names_are_twenty_digits_and_read_back() {
        assert_eq!(object_name(42), "00000000000000000042.json");
        assert_eq!(seq_of_name("00000000000000000042.json"), Some(42));
        assert_eq!(seq_of_name("42.json"), None);
        assert_eq!(seq_of_name("0000000000000000004x.json"), None);
        assert_eq!(seq_of_name("00000000000000000042.json.tmp"), None);
    }

    #[test]
    fn a_change_reads_back_only_under_its_own_number_and_store() {
        let body = sample(7).encode(None);
        assert_eq!(
            Change::decode(&body, None, 7, "store_x").unwrap(),
            sample(7)
        );
        assert!(matches!(
            Change::decode(&body, None, 8, "store_x"),
            Err(ChangeError::WrongNumber { inner: 7, name: 8 })
        ));
        assert!(matches!(
            Change::decode(&body, None, 7, "store_y"),
            Err(ChangeError::WrongStore)
        ));
    }

    #[test]
    fn encrypted_under_a_secret_and_plain_refused_there() {
        let secret = StorageSecret::new("a storage secret of some length");
        let body = sample(1).encode(Some(&secret));
        assert!(codec::is_encrypted(&body));
        assert!(Change::decode(&body, Some(&secret), 1, "store_x").is_ok());
        let plain = sample(1).encode(None);
        assert!(Change::decode(&plain, Some(&secret), 1, "store_x").is_err());
    }

    #[test]
    fn a_plaintext_secret_or_a_mismatched_id_is_refused() {
        let mut change = sample(1);
        if let Some(key) = change.keys[0].key.as_mut() {
            key.insert("secret".into(), "sec_plain".into());
        }
        let error = Change::decode(&change.encode(None), None, 1, "store_x").unwrap_err();
        assert!(matches!(error, ChangeError::BadKey(0)));
        assert!(!error.to_string().contains("sec_plain"));
        let mut change = sample(1);
        change.keys[0].id = "key_b".into();
        assert!(Change::decode(&change.encode(None), None, 1, "store_x").is_err());
    }
}
