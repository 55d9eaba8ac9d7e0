//! The JSON bodies exchanged with `heare-authd`, defined once for the daemon and every client.
//!
//! The shapes follow the Python heare-auth service so that its existing HTTP clients keep
//! working: `POST /verify` answers `{"valid":true,"key_id","name","metadata","error":null}` or
//! `{"valid":false,"error":"Invalid API key"}` (and, from heare-authd only, 429
//! `{"valid":false,"error":"Rate limit exceeded","key_id","retry_after_ms"}` for a key over its
//! rate limit); `POST /refresh` answers `{"success":true,"keys_loaded":N,"timestamp":"…Z"}`;
//! `GET /health` answers `{"status":"ok"}`.
//! Types borrow where they can (`Cow`, `RawValue`) so the daemon can write a response without
//! copying a key's name or re-parsing its metadata on the verify path.

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The error text of a failed verification, identical to the Python service's.
pub const INVALID_API_KEY: &str = "Invalid API key";

/// Body of `POST /verify`. The secret may instead come as `Authorization: Bearer <secret>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VerifyRequest<'a> {
    /// The presented secret (`sec_…`). Never logged, never echoed back.
    #[serde(borrow)]
    pub api_key: Cow<'a, str>,
    /// Scopes the key must hold (all of them); a valid key without one is answered 403
    /// `Insufficient scope`. Not sent when `None` (the Python service has no scopes).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub require_scopes: Option<Vec<Cow<'a, str>>>,
}

/// The error of a valid key that lacks a scope the request requires (403).
pub const INSUFFICIENT_SCOPE: &str = "Insufficient scope";

/// The error of a key that is over its rate limit (429): neither valid nor invalid, refused for
/// now; `retry_after_ms` says when to ask again.
pub const RATE_LIMIT_EXCEEDED: &str = "Rate limit exceeded";

/// Body of every `POST /verify` answer: 200 when `valid`, 403 when refused, 429 when the key is
/// over its rate limit ([`VerifyResponse::rate_limited`]).
///
/// Serialized with `valid` first; then an accepted key's `key_id`, `name`, `metadata`, `scopes`
/// and `error: null` (the Python service's order), or a refusal's `error` followed by what it
/// names (`key_id`, then `retry_after_ms`). Absent members are not written, except `error`.
#[derive(Debug, Clone, Deserialize)]
pub struct VerifyResponse<'a> {
    /// Whether the secret belongs to a key that may be used now.
    pub valid: bool,
    /// The key's id (`key_…`), on success.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub key_id: Option<Cow<'a, str>>,
    /// The key's name, on success.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub name: Option<Cow<'a, str>>,
    /// The key's metadata object, verbatim from the key file.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Cow<'a, RawValue>>,
    /// The key's scopes, on success from heare-authd (the Python service has none; its clients
    /// ignore the field).
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub scopes: Option<Vec<Cow<'a, str>>>,
    /// `null` on success (as the Python service writes it), the reason otherwise.
    #[serde(borrow, default)]
    pub error: Option<Cow<'a, str>>,
    /// On a 429 ([`RATE_LIMIT_EXCEEDED`]): milliseconds until the key may be verified again.
    /// Absent from every other answer (and from the Python service's): not written when `None`.
    #[serde(default)]
    pub retry_after_ms: Option<u64>,
}

impl Serialize for VerifyResponse<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let named = [
            self.key_id.is_some(),
            self.name.is_some(),
            self.metadata.is_some(),
            self.scopes.is_some(),
            self.retry_after_ms.is_some(),
        ];
        let fields = 2 + named.iter().filter(|present| **present).count();
        let mut out = serializer.serialize_struct("VerifyResponse", fields)?;
        out.serialize_field("valid", &self.valid)?;
        if !self.valid {
            out.serialize_field("error", &self.error)?;
        }
        if let Some(key_id) = &self.key_id {
            out.serialize_field("key_id", key_id)?;
        }
        if let Some(name) = &self.name {
            out.serialize_field("name", name)?;
        }
        if let Some(metadata) = &self.metadata {
            out.serialize_field("metadata", metadata)?;
        }
        if let Some(scopes) = &self.scopes {
            out.serialize_field("scopes", scopes)?;
        }
        if self.valid {
            out.serialize_field("error", &self.error)?;
        }
        if let Some(retry_after_ms) = self.retry_after_ms {
            out.serialize_field("retry_after_ms", &retry_after_ms)?;
        }
        out.end()
    }
}

impl<'a> VerifyResponse<'a> {
    /// A successful verification of the key `key_id`.
    pub fn valid(key_id: &'a str, name: &'a str, metadata: &'a RawValue) -> Self {
        VerifyResponse {
            valid: true,
            key_id: Some(Cow::Borrowed(key_id)),
            name: Some(Cow::Borrowed(name)),
            metadata: Some(Cow::Borrowed(metadata)),
            scopes: None,
            error: None,
            retry_after_ms: None,
        }
    }

    /// A refused verification; `error` says why (normally [`INVALID_API_KEY`]).
    pub fn invalid(error: &'a str) -> Self {
        VerifyResponse {
            valid: false,
            key_id: None,
            name: None,
            metadata: None,
            scopes: None,
            error: Some(Cow::Borrowed(error)),
            retry_after_ms: None,
        }
    }

    /// The 429 answer for the key `key_id`, over its rate limit: it may be verified again in
    /// `retry_after_ms` milliseconds. Written
    /// `{"valid":false,"error":"Rate limit exceeded","key_id":…,"retry_after_ms":…}`.
    pub fn rate_limited(key_id: &'a str, retry_after_ms: u64) -> Self {
        VerifyResponse {
            valid: false,
            key_id: Some(Cow::Borrowed(key_id)),
            name: None,
            metadata: None,
            scopes: None,
            error: Some(Cow::Borrowed(RATE_LIMIT_EXCEEDED)),
            retry_after_ms: Some(retry_after_ms),
        }
    }
}

/// Body of a `POST /refresh` answer: 200 on success, 500 when the store could not be loaded
/// (the daemon then keeps serving its previous key set, whose size `keys_loaded` gives).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefreshResponse {
    /// Whether the store was read and a new set published.
    pub success: bool,
    /// Keys served after the refresh (the previous set's count when it failed).
    pub keys_loaded: usize,
    /// When the refresh finished, RFC 3339 in UTC with a `Z`.
    pub timestamp: String,
    /// Why the refresh failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Body of `GET /health`: deliberately opaque, always `{"status":"ok"}` while serving.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HealthResponse {
    /// Always `ok`.
    pub status: String,
}

/// Body of the admin-only `GET /status`: what the daemon serves and how fresh it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusResponse {
    /// The daemon's version (`heare-authd --version`).
    pub daemon_version: String,
    /// Keys in the set being served.
    pub keys_loaded: usize,
    /// The store URL, without credentials.
    pub store: String,
    /// The store's version token (S3 ETag, or the file's identity) of the set being served.
    pub store_version: Option<String>,
    /// When the store was last read successfully (RFC 3339, UTC).
    pub last_load_at: Option<String>,
    /// When the daemon last tried to read the store.
    pub last_attempt_at: Option<String>,
    /// Why the last attempt failed; `None` once an attempt succeeds.
    pub last_error: Option<String>,
    /// True while the set being served could not be confirmed by the store (the last attempt
    /// failed, or the set came from the last-known-good cache at start).
    pub stale: bool,
    /// Where the set being served came from: `store` or `cache`.
    pub source: String,
    /// Keys of the file that were skipped, by id, with the reason.
    pub load_warnings: Vec<String>,
    /// Why the last-known-good cache could not be written after a load (full disk, read-only
    /// directory, …). The loaded set is served all the same, but a restart while the store is
    /// unreachable would find only an older cache, or none. `None` once a write succeeds, and when
    /// no cache is configured. Absent from the answers of daemons older than this field.
    #[serde(default)]
    pub cache_error: Option<String>,
    /// The highest `generation` of an encrypted key file the daemon has served (its guard
    /// against an older copy written back; heare-authctl refuses to edit an older file). `None`
    /// before any, and from daemons older than this field.
    #[serde(default)]
    pub generation_served: Option<u64>,
    /// The number of the last change of the store's change log the keys served contain: the key
    /// object's `change_seq` plus the changes applied from the log since. `None` when the key
    /// object names no place in a log (no log-aware writer wrote it), and from older daemons.
    #[serde(default)]
    pub change_seq: Option<u64>,
    /// Keys changed by the log since the key object was loaded (the overlay over the loaded
    /// set; folded into a new one past 10,000). 0 from older daemons.
    #[serde(default)]
    pub overlay_keys: usize,
    /// Log lines dropped because the log sink was slower than the daemon.
    pub log_lines_dropped: u64,
    /// Verify requests since the daemon started, by result (`valid`, `unknown`, `expired`,
    /// `disabled`, `rotated`, `bad_checksum`, `malformed`, `stale`), in that order. Empty from
    /// daemons older than this field.
    #[serde(default)]
    pub verify_results: Vec<(String, u64)>,
    /// Seconds since the daemon started.
    pub uptime_seconds: u64,
    /// The notify queue (`notify_queue`), when one is configured; absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifyStatus>,
    /// Every listener: the Unix socket, the TCP listener and the metrics listener, as configured
    /// or handed over by systemd. Empty from daemons older than this field.
    #[serde(default)]
    pub listeners: Vec<ListenerStatus>,
    /// The fleet-wide rate-limit backend (Redis), when one is configured; `None` for the local
    /// backend and from daemons older than this field.
    #[serde(default)]
    pub rate_limit_backend: Option<RateLimitBackendStatus>,
}

/// The fleet-wide rate-limit backend as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitBackendStatus {
    /// `redis`.
    pub backend: String,
    /// Whether the last decision asked of it was answered in time.
    pub up: bool,
    /// Decisions it did not answer in time since start (each decided by `on_backend_error`).
    pub errors: u64,
    /// Why the last one failed (never holds a password).
    pub last_error: Option<String>,
}

/// One listener as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerStatus {
    /// `unix` (the verify socket), `tcp` (the verify TCP listener) or `metrics`.
    pub name: String,
    /// The socket's path, or the TCP listener's `ip:port`.
    pub address: String,
    /// `listening`, or `failing` while the daemon cannot bind the address (another process
    /// holds it); the daemon keeps trying and takes it once it is free.
    pub state: String,
    /// Why the last bind failed, while `failing`; `None` while listening.
    pub error: Option<String>,
}

/// The notify queue as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotifyStatus {
    /// The queue's URL.
    pub queue: String,
    /// `starting` (no call has ended yet), `receiving` (the last call succeeded) or `failing`.
    pub state: String,
    /// When a receive last answered (RFC 3339, UTC).
    pub last_receive_at: Option<String>,
    /// The last failed queue call's error, kept after recovery (see `last_error_at`).
    pub last_error: Option<String>,
    /// When that call failed (RFC 3339, UTC).
    pub last_error_at: Option<String>,
    /// Failed queue calls since start.
    pub errors: u64,
    /// Messages since start by what they meant: `reload` (an event for the key object),
    /// `ignored` (another object, S3's test event), `invalid` (not an S3 event).
    pub messages: Vec<(String, u64)>,
}

/// One key's usage, as `GET /usage` lists it and the usage files and fleet reports hold it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyUsage {
    /// The key's id.
    pub key_id: String,
    /// Verifications since the key was first seen by this daemon (kept across reloads and
    /// restarts).
    pub verifications: u64,
    /// The last verification (RFC 3339, UTC); `None` when there has been none.
    pub last_verified_at: Option<String>,
    /// Whether the last verification used a previous secret of a rotated key, still in its grace
    /// period: a client has not switched to the new secret yet.
    #[serde(default)]
    pub last_used_previous_secret: bool,
    /// Requests refused by the key's rate limit; present only for a key that has a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limited: Option<u64>,
}

/// A daemon's usage as written to its state directory and to a fleet report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The host that wrote it (`/etc/machine-id`, or `host_id` in its configuration); empty in
    /// the local state file.
    #[serde(default)]
    pub host_id: String,
    /// When it was written (RFC 3339, UTC).
    pub written_at: String,
    /// Keys with at least one verification.
    pub keys: Vec<KeyUsage>,
}

/// Body of every error answer that is not a verification result (404, 405, 413, 422, 403 on
/// admin routes, 500, 503).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorResponse {
    /// What was wrong with the request, in words.
    pub error: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_answer_has_the_python_shape() {
        let metadata = RawValue::from_string(r#"{"env":"prod"}"#.to_string()).unwrap();
        let body =
            serde_json::to_string(&VerifyResponse::valid("key_1", "Prod", &metadata)).unwrap();
        assert_eq!(
            body,
            r#"{"valid":true,"key_id":"key_1","name":"Prod","metadata":{"env":"prod"},"error":null}"#
        );
    }

    #[test]
    fn invalid_answer_has_only_valid_and_error() {
        let body = serde_json::to_string(&VerifyResponse::invalid(INVALID_API_KEY)).unwrap();
        assert_eq!(body, r#"{"valid":false,"error":"Invalid API key"}"#);
    }

    #[test]
    fn rate_limited_answer_has_the_contract_shape() {
        let body = serde_json::to_string(&VerifyResponse::rate_limited("key_1", 1500)).unwrap();
        assert_eq!(
            body,
            r#"{"valid":false,"error":"Rate limit exceeded","key_id":"key_1","retry_after_ms":1500}"#
        );
        let parsed: VerifyResponse = serde_json::from_str(&body).unwrap();
        assert!(!parsed.valid);
        assert_eq!(parsed.error.as_deref(), Some(RATE_LIMIT_EXCEEDED));
        assert_eq!(parsed.key_id.as_deref(), Some("key_1"));
        assert_eq!(parsed.retry_after_ms, Some(1500));
    }

    #[test]
    fn valid_answer_with_scopes_keeps_its_order() {
        let metadata = RawValue::from_string("{}".to_string()).unwrap();
        let mut answer = VerifyResponse::valid("key_1", "N", &metadata);
        answer.scopes = Some(vec![Cow::Borrowed("read")]);
        assert_eq!(
            serde_json::to_string(&answer).unwrap(),
            r#"{"valid":true,"key_id":"key_1","name":"N","metadata":{},"scopes":["read"],"error":null}"#
        );
        let parsed: VerifyResponse = serde_json::from_str(
            r#"{"valid":true,"key_id":"key_1","name":"N","metadata":{},"error":null}"#,
        )
        .unwrap();
        assert_eq!(parsed.retry_after_ms, None);
    }

    #[test]
    fn answers_round_trip_for_clients() {
        let text =
            r#"{"valid":true,"key_id":"key_1","name":"N","metadata":{"a":[1,2]},"error":null}"#;
        let parsed: VerifyResponse = serde_json::from_str(text).unwrap();
        assert!(parsed.valid);
        assert_eq!(parsed.key_id.as_deref(), Some("key_1"));
        assert_eq!(parsed.metadata.unwrap().get(), r#"{"a":[1,2]}"#);
    }

    #[test]
    fn status_of_a_daemon_without_cache_error_still_parses() {
        let text = r#"{"daemon_version":"0.1.0","keys_loaded":2,"store":"file:///k","store_version":null,"last_load_at":null,"last_attempt_at":null,"last_error":null,"stale":false,"source":"store","load_warnings":[],"log_lines_dropped":0,"uptime_seconds":5}"#;
        let parsed: StatusResponse = serde_json::from_str(text).unwrap();
        assert_eq!(parsed.keys_loaded, 2);
        assert_eq!(parsed.cache_error, None);
        let with_error = text.replace(
            r#""uptime_seconds""#,
            r#""cache_error":"disk full","uptime_seconds""#,
        );
        let parsed: StatusResponse = serde_json::from_str(&with_error).unwrap();
        assert_eq!(parsed.cache_error.as_deref(), Some("disk full"));
    }
}
