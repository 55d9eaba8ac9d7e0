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
//!
//! Loading runs on every core ([`load`]): the `keys` array is parsed in runs by several threads
//! ([`scan`], plain key objects by hand in [`fast`], [`chunk`]) and joined into sharded digest
//! indexes ([`index`]), with the same result as one sequential pass for every input.

mod chunk;
mod fast;
mod ids;
mod index;
mod limits;
mod load;
mod overlay;
mod scan;
mod usage;

pub use limits::{
    Admission, Quota, RateState, clock as rate_clock, set_default as set_default_rate_limit,
    set_fleet as set_fleet_rate_limits,
};
pub use overlay::{ApplyError, OverlayEntry, ServedKeys};

use limits::Limits;
use usage::KeyUsage;
pub use usage::UsageReading;

pub use chunk::is_scope_token;
pub use load::Plan;

pub use heare_auth_store::secret_hash::SecretDigest;
use heare_auth_store::timestamp::UnixMillis;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

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
#[derive(Clone, Copy, Debug)]
struct Span {
    start: u32,
    len: u32,
}

/// One key, as positions in the arena. 40 bytes.
struct Record {
    id: Span,
    name: Span,
    metadata: Span,
    /// The key's scopes, separated by single spaces (scope tokens hold no space).
    scopes: Span,
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
    /// The key's position in the set, for [`KeySet::record_use`].
    pub position: u32,
    /// Whether the secret presented is a previous one of a rotated key (in its grace period).
    pub previous_secret: bool,
    pub id: &'a str,
    pub name: &'a str,
    /// The key's metadata as compact JSON text (an object).
    pub metadata_json: &'a str,
    /// The key's scopes separated by single spaces; empty for none.
    pub scopes: &'a str,
}

impl KeyView<'_> {
    /// The key's scopes.
    pub fn scopes(&self) -> impl Iterator<Item = &str> {
        self.scopes.split(' ').filter(|scope| !scope.is_empty())
    }

    /// The first of `required` the key lacks, if any.
    pub fn missing_scope<'r>(&self, required: &'r [String]) -> Option<&'r str> {
        required
            .iter()
            .find(|wanted| !self.scopes().any(|held| held == wanted.as_str()))
            .map(String::as_str)
    }
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

/// An immutable set of keys, indexed by the digest of their secrets.
pub struct KeySet {
    arena: String,
    records: Vec<Record>,
    /// Digest → record position, in shards (a power of two of them) chosen by
    /// [`SecretDigest::shard`], so that a load builds them in parallel.
    by_digest: Box<[DigestIndex]>,
    /// Previous secrets of rotated keys: digest → (record, end of grace), sharded alike.
    grace: Box<[GraceIndex]>,
    /// Per record: verifications and the last one's time ([`usage`]).
    usage: Box<[KeyUsage]>,
    /// Per record: its rate limit and GCRA state, for limited keys only ([`limits`]).
    limits: Limits,
    /// Where in the change log the key file that made this set stands.
    log: LogPosition,
}

/// Where a key file stands in its change log: the `change_seq` and `store_id` fields heare-authctl
/// writes (`None` in a file no log-aware writer has written, or when they are not a number and a
/// string).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogPosition {
    pub change_seq: Option<u64>,
    pub store_id: Option<String>,
}

impl KeySet {
    /// A set with no keys (the store holds no key file yet).
    pub fn empty() -> Self {
        KeySet {
            arena: String::new(),
            records: Vec::new(),
            by_digest: Box::new([DigestIndex::default()]),
            grace: Box::new([GraceIndex::default()]),
            usage: Box::new([]),
            limits: Limits::default(),
            log: LogPosition::default(),
        }
    }

    /// Where in the change log the key file that made this set stands.
    pub fn log_position(&self) -> &LogPosition {
        &self.log
    }

    /// Builds a set from key-file JSON, returning the keys it had to skip. Uses the host's cores.
    pub fn from_json(json: &[u8]) -> Result<(KeySet, Vec<SkippedKey>), LoadError> {
        load::load(json, Plan::for_this_host())
    }

    /// [`KeySet::from_json`] with an explicit thread plan (for tests and measurements); the
    /// result is the same for every plan.
    pub fn from_json_with(json: &[u8], plan: Plan) -> Result<(KeySet, Vec<SkippedKey>), LoadError> {
        load::load(json, plan)
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
        match self.lookup(&SecretDigest::of_secret(secret)) {
            Some((position, grace_until)) => self.judge(position, grace_until, now, 0),
            None => Verdict::Unknown,
        }
    }

    /// The record a digest belongs to, and the end of its grace when it is a previous secret
    /// (`UnixMillis::MAX` for a current one).
    fn lookup(&self, digest: &SecretDigest) -> Option<(u32, UnixMillis)> {
        let shard = digest.shard(self.by_digest.len());
        let current = self
            .by_digest
            .get(shard)
            .and_then(|index| index.get(digest));
        match current {
            Some(&position) => Some((position, UnixMillis::MAX)),
            None => self
                .grace
                .get(shard)
                .and_then(|index| index.get(digest))
                .copied(),
        }
    }

    /// What the key at `position` says at `now`, presented with a secret whose grace ends at
    /// `grace_until`; a valid key's view carries `position + shift` (an overlay's keys are
    /// numbered after its base's).
    fn judge(
        &self,
        position: u32,
        grace_until: UnixMillis,
        now: UnixMillis,
        shift: u32,
    ) -> Verdict<'_> {
        let Some(record) = self.records.get(position as usize) else {
            return Verdict::Unknown;
        };
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
            position: position.saturating_add(shift),
            previous_secret: grace_until != UnixMillis::MAX,
            id,
            name: self.text(record.name),
            metadata_json: self.text(record.metadata),
            scopes: self.text(record.scopes),
        })
    }

    /// Counts a verification of `key` (a view of this set) at `now`.
    pub fn record_use(&self, key: &KeyView<'_>, now: UnixMillis) {
        self.record_use_at(key.position, key.previous_secret, now);
    }

    fn record_use_at(&self, position: u32, previous_secret: bool, now: UnixMillis) {
        if let Some(usage) = self.usage.get(position as usize) {
            usage.record(now, previous_secret);
        }
    }

    /// Every limited key's id with its rate state, for keys that have been used.
    fn rate_states(&self) -> impl Iterator<Item = (&str, RateState)> {
        let limited = self.limits.any();
        (0..self.records.len() as u32)
            .filter(move |_| limited)
            .filter_map(|position| Some((self.id_at(position)?, self.limits.state(position)?)))
    }

    /// Adds rate states read from an older set to the keys of this set with the same ids (the
    /// later arrival time; the refusals too when `count_refusals`).
    fn absorb_rate_states<'a>(
        &self,
        earlier: impl IntoIterator<Item = (&'a str, RateState)>,
        count_refusals: bool,
    ) {
        if !self.limits.any() {
            return;
        }
        let earlier: HashMap<&str, RateState> = earlier.into_iter().collect();
        if earlier.is_empty() {
            return;
        }
        for (position, record) in self.records.iter().enumerate() {
            if let Some(&state) = earlier.get(self.text(record.id)) {
                self.limits.absorb(position as u32, state, count_refusals);
            }
        }
    }

    /// The refusals of the key at `position` when it is limited (`None` for an unlimited key).
    fn rate_limited_at(&self, position: u32) -> Option<u64> {
        match self.limits.is_limited(position) {
            true => Some(self.limits.state(position).map_or(0, |s| s.refused)),
            false => None,
        }
    }

    /// The usage of the key at `position`.
    fn usage_at(&self, position: u32) -> Option<UsageReading> {
        self.usage.get(position as usize).map(KeyUsage::read)
    }

    /// The id of the key at `position`.
    fn id_at(&self, position: u32) -> Option<&str> {
        let record = self.records.get(position as usize)?;
        Some(self.text(record.id))
    }

    /// Every digest of the set, current and previous, with its record's position.
    fn digests(&self) -> impl Iterator<Item = (&SecretDigest, u32)> {
        let current = self.by_digest.iter().flatten().map(|(d, &p)| (d, p));
        let previous = self.grace.iter().flatten().map(|(d, &(p, _))| (d, p));
        current.chain(previous)
    }

    /// Every key's id with its usage, in the set's order.
    pub fn usage(&self) -> impl Iterator<Item = (&str, UsageReading)> {
        self.records
            .iter()
            .zip(self.usage.iter())
            .enumerate()
            .map(|(position, (record, usage))| {
                let reading = UsageReading {
                    rate_limited: self.rate_limited_at(position as u32),
                    ..usage.read()
                };
                (self.text(record.id), reading)
            })
    }

    /// Adds usage read elsewhere (an older set, a saved file) to the keys of this set with the
    /// same ids; ids this set does not have are ignored. Only used keys are looked for: their ids
    /// go in a map, and this set's ids are looked up in it (no map of a million ids is built when
    /// a few keys were used).
    pub fn absorb_usage<'a>(&self, earlier: impl IntoIterator<Item = (&'a str, UsageReading)>) {
        let used: HashMap<&str, UsageReading> = earlier
            .into_iter()
            .filter(|(_, reading)| reading.verifications > 0)
            .collect();
        if used.is_empty() {
            return;
        }
        for (record, usage) in self.records.iter().zip(self.usage.iter()) {
            if let Some(&reading) = used.get(self.text(record.id)) {
                usage.absorb(reading);
            }
        }
    }

    /// Bytes the set holds on the heap (arena, records and index), for the benchmark's report.
    pub fn heap_bytes(&self) -> usize {
        let index_entry = std::mem::size_of::<(SecretDigest, u32)>() + 1;
        self.arena.capacity()
            + self.records.capacity() * std::mem::size_of::<Record>()
            + self.usage.len() * std::mem::size_of::<KeyUsage>()
            + self.limits.heap_bytes()
            + self
                .by_digest
                .iter()
                .map(|index| index.capacity() * 8 / 7 * index_entry)
                .sum::<usize>()
            + self
                .grace
                .iter()
                .map(|index| index.capacity() * 8 / 7 * (index_entry + 8))
                .sum::<usize>()
    }

    fn text(&self, span: Span) -> &str {
        let start = span.start as usize;
        // Spans are made by `Chunk::push_text` (shifted by `index::assemble`), on char
        // boundaries of this arena.
        self.arena
            .get(start..start + span.len as usize)
            .unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use heare_auth_store::timestamp;

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
                position: 0,
                previous_secret: false,
                id: "key_a",
                name: "A",
                metadata_json: r#"{"env":"prod"}"#,
                scopes: "",
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
    fn scopes_load_and_a_key_with_a_bad_scope_is_skipped() {
        let (set, skipped) = load(
            r#"{"keys":[
              {"id":"key_s","secret":"s1","scopes":["read","write:all"]},
              {"id":"key_none","secret":"s2"},
              {"id":"key_bad","secret":"s3","scopes":["has space"]},
              {"id":"key_quote","secret":"s4","scopes":["a\"b"]}]}"#,
        );
        let ids: Vec<_> = skipped.iter().map(|s| s.key_id.as_str()).collect();
        assert_eq!(ids, ["key_bad", "key_quote"]);
        assert!(skipped[0].reason.contains("scope token"));
        match set.verify("s1", NOW) {
            Verdict::Valid(key) => {
                assert_eq!(key.scopes().collect::<Vec<_>>(), ["read", "write:all"]);
                assert_eq!(key.missing_scope(&["read".into()]), None);
                let wanted = ["read".to_string(), "admin".to_string()];
                assert_eq!(key.missing_scope(&wanted), Some("admin"));
            }
            other => panic!("{other:?}"),
        }
        match set.verify("s2", NOW) {
            Verdict::Valid(key) => {
                assert_eq!(key.scopes().count(), 0);
                assert_eq!(key.missing_scope(&["read".into()]), Some("read"));
                assert_eq!(key.missing_scope(&[]), None);
            }
            other => panic!("{other:?}"),
        }
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
    fn an_empty_secret_never_loads_in_any_form() {
        let empty_hash = SecretDigest::of_secret("").to_field();
        let (set, skipped) = load(&format!(
            r#"{{"keys":[
              {{"id":"key_empty","secret":""}},
              {{"id":"key_empty_hash","secret_hash":"{empty_hash}"}},
              {{"id":"key_empty_grace","secret":"s4","grace_secrets":[
                {{"secret_hash":"{empty_hash}","expires_at":"2999-01-01T00:00:00Z"}}]}},
              {{"id":"key_good","secret":"s3"}}]}}"#
        ));
        let ids: Vec<_> = skipped.iter().map(|s| s.key_id.as_str()).collect();
        assert_eq!(ids, ["key_empty", "key_empty_hash", "key_empty_grace"]);
        assert!(skipped[0].reason.contains("empty"));
        assert_eq!(set.len(), 1);
        assert_eq!(set.verify("", NOW), Verdict::Unknown);
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

#[cfg(test)]
mod parallel_tests {
    //! The parallel loader against the one-thread loader on files built to fool the split: strings
    //! holding `}, {` and whole fake key objects, escapes, skipped keys, duplicates and damage.
    use super::*;

    const NOW: UnixMillis = 1_750_000_000_000;

    struct Dice(u64);

    impl Dice {
        fn next(&mut self, below: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % below
        }
    }

    fn key_file(dice: &mut Dice, keys: usize) -> (String, Vec<String>) {
        let tricky = [
            "plain",
            "}, {",
            "}, {\\\"id\\\": \\\"key_fake\\\", \\\"secret\\\": \\\"sec_fake\\\"}, {",
            "a\\\\\"}, {",
            "\\u007d, \\u007b",
            "名前 😀",
        ];
        let mut secrets = Vec::new();
        let mut out = String::from("{\"version\": {\"a\": [\"}, {\"]},\n \"keys\": [\n");
        for n in 0..keys {
            if n > 0 {
                out.push_str([",", " ,\n  ", ",\n"][dice.next(3) as usize]);
            }
            let secret = match dice.next(40) {
                0 => "sec_repeated".to_string(),
                _ => format!("sec_{n}_{}", dice.next(1000)),
            };
            let id = match dice.next(40) {
                0 => "key_repeated".to_string(),
                _ => format!("key_{n}"),
            };
            let name = tricky[dice.next(tricky.len() as u64) as usize];
            let extra = match dice.next(8) {
                0 => ", \"expires_at\": \"not a time\"".to_string(),
                1 => ", \"metadata\": [1]".to_string(),
                2 => ", \"disabled\": true".to_string(),
                3 => format!(", \"metadata\": {{\"n\": \"{name}\", \"k\": [{{}}, {{}}]}}"),
                4 => format!(
                    ", \"grace_secrets\": [{{\"secret_hash\": \"{}\", \"expires_at\": \"2999-01-01T00:00:00Z\"}}]",
                    SecretDigest::of_secret(&format!("sec_old_{}", dice.next(200))).to_field()
                ),
                _ => String::new(),
            };
            out.push_str(&format!(
                "{{\"id\": \"{id}\", \"secret\": \"{secret}\", \"name\": \"{name}\"{extra}}}"
            ));
            secrets.push(secret);
        }
        out.push_str("\n], \"tail\": \"}, {\"}\n");
        (out, secrets)
    }

    fn plan(threads: usize) -> Plan {
        Plan {
            threads,
            min_parallel_bytes: 0,
            fast_path: true,
        }
    }

    fn same_result(json: &[u8], secrets: &[String]) {
        let one = KeySet::from_json_with(json, plan(1));
        for threads in [2, 3, 4, 7] {
            let many = KeySet::from_json_with(json, plan(threads));
            match (&one, &many) {
                (Ok((a, a_skipped)), Ok((b, b_skipped))) => {
                    assert_eq!(a.len(), b.len());
                    assert_eq!(a_skipped, b_skipped);
                    for secret in secrets.iter().map(String::as_str).chain(["sec_old_7", "x"]) {
                        assert_eq!(a.verify(secret, NOW), b.verify(secret, NOW), "{secret}");
                    }
                }
                (Err(a), Err(b)) => assert_eq!(a, b, "threads {threads}"),
                (a, b) => panic!(
                    "threads {threads}: {:?} vs {:?}",
                    a.as_ref().map(|(s, _)| s.len()),
                    b.as_ref().map(|(s, _)| s.len())
                ),
            }
        }
    }

    #[test]
    fn every_thread_count_gives_the_same_result() {
        let mut dice = Dice(0x9e37_79b9_7f4a_7c15);
        for round in 0..60 {
            let (json, secrets) = key_file(&mut dice, 1 + round * 7);
            same_result(json.as_bytes(), &secrets);
            // Damaged copies: truncated, and one byte changed, at several places.
            for cut in [json.len() / 3, json.len() / 2, json.len() * 4 / 5] {
                same_result(&json.as_bytes()[..cut], &secrets);
                let mut changed = json.clone().into_bytes();
                changed[cut] = [b'}', b',', b'"', b'{', b'x'][dice.next(5) as usize];
                same_result(&changed, &secrets);
            }
        }
    }

    #[test]
    fn a_large_file_is_split_and_indexed_in_shards() {
        let mut json = String::from("{\"keys\":[");
        for n in 0..40_000 {
            if n > 0 {
                json.push(',');
            }
            json.push_str(&format!(
                "{{\"id\":\"key_{n}\",\"secret\":\"sec_{n}\",\"name\":\"n{n}\",\"metadata\":{{\"n\": {n}}}}}"
            ));
        }
        json.push_str("]}");
        let (set, skipped) = KeySet::from_json_with(json.as_bytes(), plan(2)).unwrap();
        assert!(skipped.is_empty());
        assert_eq!(set.len(), 40_000);
        assert_eq!(set.by_digest.len(), 2, "indexed in two shards");
        for n in [0, 1, 19_999, 20_000, 39_999] {
            assert_eq!(
                set.verify(&format!("sec_{n}"), NOW),
                Verdict::Valid(KeyView {
                    position: n,
                    previous_secret: false,
                    id: &format!("key_{n}"),
                    name: &format!("n{n}"),
                    metadata_json: &format!("{{\"n\":{n}}}"),
                    scopes: "",
                })
            );
        }
        let duplicated = json.replace("\"sec_30000\"", "\"sec_10\"");
        assert_eq!(
            KeySet::from_json_with(duplicated.as_bytes(), plan(2)).err(),
            Some(LoadError::DuplicateSecret {
                first: "key_10".into(),
                second: "key_30000".into()
            })
        );
        let duplicated = json.replace("\"key_30000\"", "\"key_20001\"");
        assert_eq!(
            KeySet::from_json_with(duplicated.as_bytes(), plan(2)).err(),
            Some(LoadError::DuplicateId("key_20001".into()))
        );
    }
}
