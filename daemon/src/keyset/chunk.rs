//! One run of consecutive keys of the file, turned into records by one thread.
//!
//! A [`Chunk`] takes parsed keys in file order and applies the per-key rules: which secret form is
//! used, whether `expires_at`, metadata and grace secrets are usable (a key whose fields are not is
//! skipped and reported by id), and the compact layout (strings into the chunk's own arena,
//! metadata minified). It hashes each secret and each id, so the expensive per-key work runs on
//! whichever thread parsed the key. What needs every key at once — duplicate ids and secrets, the
//! digest index — is [`super::index`]'s job.

use super::{DISABLED, LoadError, Record, SecretDigest, SkippedKey, Span};
use crate::minify::minify_json_into;
use heare_auth_store::rate_limit::RateLimit;
use heare_auth_store::timestamp::{self, UnixMillis};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::hash::{BuildHasher, RandomState};

/// One key as the file holds it; fields the daemon does not use are skipped by serde.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug))]
pub(super) struct FileKey<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    #[serde(borrow, default)]
    pub secret: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub secret_hash: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub name: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub expires_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub metadata: Option<&'a RawValue>,
    #[serde(default)]
    pub disabled: Option<bool>,
    #[serde(borrow, default)]
    pub grace_secrets: Option<Vec<GraceSecret<'a>>>,
    #[serde(borrow, default)]
    pub scopes: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub rate_limit: Option<&'a RawValue>,
}

/// A previous secret of a rotated key, still accepted until `expires_at`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Debug, PartialEq))]
pub(super) struct GraceSecret<'a> {
    #[serde(borrow)]
    secret_hash: Cow<'a, str>,
    #[serde(borrow)]
    expires_at: Cow<'a, str>,
}

/// A grace secret of a chunk's key: digest, the key's position in the chunk, end of grace.
pub(super) type GraceEntry = (SecretDigest, u32, UnixMillis);

/// Consecutive keys of the file as records over a chunk-local arena.
pub(super) struct Chunk {
    pub arena: String,
    pub records: Vec<Record>,
    /// The digest of each record's current secret (same positions as `records`).
    pub digests: Vec<SecretDigest>,
    /// A hash of each record's id (same positions), to find duplicate ids without a map.
    pub id_hashes: Vec<u64>,
    pub grace: Vec<GraceEntry>,
    /// The chunk-local positions of keys with their own rate limit, and the limits.
    pub limits: Vec<(u32, RateLimit)>,
    pub skipped: Vec<SkippedKey>,
    /// A string or record position that does not fit the layout's `u32`s.
    pub too_large: bool,
    id_hasher: RandomState,
}

impl Chunk {
    /// A chunk expecting about `keys` keys; `id_hasher` must be the same for every chunk of a load.
    pub fn new(keys: usize, id_hasher: RandomState) -> Self {
        Chunk {
            arena: String::with_capacity(keys * 64),
            records: Vec::with_capacity(keys),
            digests: Vec::with_capacity(keys),
            id_hashes: Vec::with_capacity(keys),
            grace: Vec::new(),
            limits: Vec::new(),
            skipped: Vec::new(),
            too_large: false,
            id_hasher,
        }
    }

    /// The text of a span of this chunk's arena.
    pub fn text(&self, span: Span) -> &str {
        let start = span.start as usize;
        self.arena
            .get(start..start + span.len as usize)
            .unwrap_or("")
    }

    /// Adds a key, or records why it is skipped.
    pub fn add(&mut self, key: FileKey<'_>) {
        if let Err(reason) = self.try_add(&key) {
            self.skipped.push(SkippedKey {
                key_id: key.id.chars().take(64).collect(),
                reason: reason.to_string(),
            });
        }
    }

    /// Checks the key's fields, in the order their errors are reported, then stores it.
    fn try_add(&mut self, key: &FileKey<'_>) -> Result<(), &'static str> {
        let digest = current_digest(key)?;
        let expires_at = expiry(key)?;
        let grace = grace_secrets(key)?;
        let metadata = metadata_text(key)?;
        let scopes = scopes_text(key)?;
        let limit = rate_limit(key)?;
        let expires_at = if key.disabled == Some(true) {
            DISABLED
        } else {
            expires_at
        };
        if let Some(limit) = limit
            && let Ok(position) = u32::try_from(self.records.len())
        {
            self.limits.push((position, limit));
        }
        self.push_key(key, digest, expires_at, &grace, (metadata, &scopes));
        Ok(())
    }

    /// Stores a checked key: its strings into the arena, its record, digest, id hash and grace
    /// secrets. A key past the `u32` positions marks the chunk too large instead.
    fn push_key(
        &mut self,
        key: &FileKey<'_>,
        digest: SecretDigest,
        expires_at: UnixMillis,
        grace: &[(SecretDigest, UnixMillis)],
        (metadata, scopes): (&str, &str),
    ) {
        let Ok(position) = u32::try_from(self.records.len()) else {
            self.too_large = true;
            return;
        };
        self.grace.extend(
            grace
                .iter()
                .map(|&(previous, until)| (previous, position, until)),
        );
        let id = self.push_text(&key.id, false);
        let name = self.push_text(key.name.as_deref().unwrap_or(""), false);
        let metadata = self.push_text(metadata, true);
        let scopes = self.push_text(scopes, false);
        self.records.push(Record {
            id,
            name,
            metadata,
            scopes,
            expires_at,
        });
        self.digests.push(digest);
        self.id_hashes
            .push(self.id_hasher.hash_one(key.id.as_ref()));
    }

    fn push_text(&mut self, text: &str, minify: bool) -> Span {
        let start = self.arena.len();
        if minify {
            minify_json_into(text, &mut self.arena);
        } else {
            self.arena.push_str(text);
        }
        match (
            u32::try_from(start),
            u32::try_from(self.arena.len() - start),
        ) {
            (Ok(start), Ok(len)) => Span { start, len },
            _ => {
                self.too_large = true;
                Span { start: 0, len: 0 }
            }
        }
    }

    /// Turns a layout overflow into the load's error.
    pub fn check_size(&self) -> Result<(), LoadError> {
        if self.too_large {
            Err(LoadError::TooLarge)
        } else {
            Ok(())
        }
    }
}

/// The digest of the key's current secret, from `secret` or `secret_hash` (both: they must agree).
fn current_digest(key: &FileKey<'_>) -> Result<SecretDigest, &'static str> {
    let digest = match (&key.secret, &key.secret_hash) {
        (Some(secret), None) => SecretDigest::of_secret(secret),
        (None, Some(hash)) => {
            SecretDigest::parse_field(hash).ok_or("secret_hash is not sha256:<64 hex digits>")?
        }
        (Some(secret), Some(hash)) => {
            let digest = SecretDigest::of_secret(secret);
            if SecretDigest::parse_field(hash) != Some(digest) {
                return Err("secret and secret_hash are both set and disagree");
            }
            digest
        }
        (None, None) => return Err("it has neither secret nor secret_hash"),
    };
    if digest.is_of_empty_secret() {
        return Err("its secret is empty");
    }
    Ok(digest)
}

/// When the key stops verifying: its `expires_at`, or never when it has none (or an empty one).
fn expiry(key: &FileKey<'_>) -> Result<UnixMillis, &'static str> {
    match key.expires_at.as_deref().map(str::trim) {
        None | Some("") => Ok(UnixMillis::MAX),
        Some(text) => timestamp::parse(text).map_err(|_| "expires_at is not an ISO 8601 timestamp"),
    }
}

/// The key's previous secrets and the end of each one's grace; every entry must be usable.
fn grace_secrets(key: &FileKey<'_>) -> Result<Vec<(SecretDigest, UnixMillis)>, &'static str> {
    key.grace_secrets
        .iter()
        .flatten()
        .map(|previous| {
            match (
                SecretDigest::parse_field(&previous.secret_hash),
                timestamp::parse(&previous.expires_at),
            ) {
                (Some(digest), Ok(until)) if !digest.is_of_empty_secret() => Ok((digest, until)),
                _ => Err(
                    "a grace_secrets entry needs secret_hash sha256:<hex> of a non-empty secret and an ISO 8601 expires_at",
                ),
            }
        })
        .collect()
}

/// Scopes a key may hold, and the characters of each.
const MAX_SCOPES: usize = 64;
const MAX_SCOPE_CHARS: usize = 128;

/// Whether `scope` is a scope token: RFC 6750's (visible ASCII except space, `"` and `\`) without
/// `,`, since `X-Heare-Key-Scopes` lists scopes separated by commas (`read,admin` must never
/// read as two scopes).
pub fn is_scope_token(scope: &str) -> bool {
    !scope.is_empty()
        && scope.len() <= MAX_SCOPE_CHARS
        && scope.bytes().all(|b| {
            let rfc_6750 = b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b);
            rfc_6750 && b != b','
        })
}

/// The key's own rate limit; a member that is not exactly a limit skips the key (it must never
/// load unlimited).
fn rate_limit(key: &FileKey<'_>) -> Result<Option<RateLimit>, &'static str> {
    let Some(raw) = key.rate_limit else {
        return Ok(None);
    };
    const UNUSABLE: &str = "its rate_limit is not {\"requests\": N, \"per\": \"1m\"} with an optional \"burst\" (whole numbers of at least 1, a period from 1ms to 366d)";
    let value: serde_json::Value = serde_json::from_str(raw.get()).map_err(|_| UNUSABLE)?;
    if value.is_null() {
        return Ok(None);
    }
    RateLimit::from_field(&value)
        .map(Some)
        .map_err(|_| UNUSABLE)
}

/// The key's scopes joined by single spaces (empty when it has none); every scope must be a
/// scope token, at most [`MAX_SCOPES`] of them.
fn scopes_text(key: &FileKey<'_>) -> Result<String, &'static str> {
    let scopes = key.scopes.as_deref().unwrap_or_default();
    if scopes.len() > MAX_SCOPES {
        return Err("it has more than 64 scopes");
    }
    if !scopes.iter().all(|scope| is_scope_token(scope)) {
        return Err(
            "a scope is not a scope token (1 to 128 visible ASCII characters, no space, comma, quote or backslash)",
        );
    }
    Ok(scopes.join(" "))
}

/// The key's metadata as JSON text: an object, or `{}` when it has none.
fn metadata_text<'a>(key: &FileKey<'a>) -> Result<&'a str, &'static str> {
    match key.metadata.map(RawValue::get) {
        None | Some("null") => Ok("{}"),
        Some(raw) if raw.trim_start().starts_with('{') => Ok(raw),
        Some(_) => Err("metadata is not a JSON object"),
    }
}
