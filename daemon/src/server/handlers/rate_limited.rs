//! What `/verify` and `/auth` say of a key's rate limit: the fields of the IETF draft
//! `draft-ietf-httpapi-ratelimit-headers-09` on every answer for a limited key, and the answer
//! to a request over the limit.
//!
//! `RateLimit-Policy: "key";q=REQUESTS;w=SECONDS` names the key's limit; `RateLimit:
//! "key";r=REMAINING;t=SECONDS` says how many requests would be accepted now and when the bucket
//! is full again. A refusal adds `Retry-After` (whole seconds, rounded up) and, from `/verify`,
//! the body `{"valid":false,"error":"Rate limit exceeded","key_id":…,"retry_after_ms":…}`.
//! A refusal is logged as `verification_rate_limited`, at most once a second per key.
//!
//! Both handlers settle a valid key with the scopes asked for the same way ([`Outcome`]): a
//! refusal is not counted as a use; an accepted request is, and a limited key's answer carries
//! the fields. [`settle_here`] decides with the key set's own state; a [`PendingGrant`] owns what
//! settling needs while the fleet backend decides, so that no view of the set is held across
//! the wait.

use crate::keyset::{Admission, KeyView, Quota, ServedKeys, rate_clock};
use crate::rate_limit::fleet::{FleetLimits, LimitedKey};
use crate::server::peer::Peer;
use crate::server::response::{self, Body};
use arc_swap::Guard;
use bytes::Bytes;
use heare_auth_store::rate_limit::RateLimit;
use heare_auth_store::timestamp::UnixMillis;
use hyper::header::{HeaderName, HeaderValue, RETRY_AFTER};
use hyper::{HeaderMap, Response, StatusCode};
use std::sync::Arc;

const POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const STATE: HeaderName = HeaderName::from_static("ratelimit");

/// What a valid key with the scopes asked for comes to once its request is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Over the limit, not counted as a use: the quota for the refusal, and whether it is
    /// logged ([`log_refusal`]).
    Refused { quota: Quota, log: bool },
    /// Accepted and counted as a use; for a limited key, the quota of the fields to add
    /// ([`add_fields`]).
    Granted { fields: Option<Quota> },
}

/// Decides one request of `key` (a view of `keys`) with the key set's own state, and settles it
/// at `now`.
pub fn settle_here(keys: &ServedKeys, key: &KeyView<'_>, now: UnixMillis) -> Outcome {
    let admission = keys.admit(key, rate_clock());
    settle(keys, (key.position, key.previous_secret), admission, now)
}

/// Settles `admission` for the key at `position` (a view's), its previous secret or not:
/// counts an accepted request as a use at `now`.
fn settle(
    keys: &ServedKeys,
    (position, previous_secret): (u32, bool),
    admission: Admission,
    now: UnixMillis,
) -> Outcome {
    let fields = match admission {
        Admission::Refused { quota, log } => return Outcome::Refused { quota, log },
        Admission::Allowed(quota) => Some(quota),
        Admission::Unlimited => None,
    };
    keys.record_use_at(position, previous_secret, now);
    Outcome::Granted { fields }
}

/// A valid limited key with the scopes asked for, waiting for the fleet backend's decision:
/// what settling it needs, owned, so that no view of the set is held across the wait.
pub struct PendingGrant {
    key_id: String,
    position: u32,
    previous_secret: bool,
    limit: RateLimit,
}

impl PendingGrant {
    /// `key` (a view of the set), limited by `limit`.
    pub fn of(key: &KeyView<'_>, limit: RateLimit) -> Self {
        PendingGrant {
            key_id: key.id.to_string(),
            position: key.position,
            previous_secret: key.previous_secret,
            limit,
        }
    }

    /// The key's id, for the answer and the log.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// What the fleet backend decides on.
    fn limited(&self) -> LimitedKey<'_> {
        LimitedKey {
            id: &self.key_id,
            position: self.position,
            limit: self.limit,
        }
    }

    /// Asks `fleet` (when there is none, the key is accepted unlimited) and settles its
    /// decision at `now` in `keys`, the set the key was viewed in. The set is held as an `Arc`
    /// of its own across the wait for Redis, never as a guard.
    pub async fn settle_in(
        &self,
        fleet: Option<&FleetLimits>,
        keys: Guard<Arc<ServedKeys>>,
        now: UnixMillis,
    ) -> Outcome {
        let keys = Guard::into_inner(keys);
        let admission = match fleet {
            Some(fleet) => fleet.admit(&keys, self.limited()).await,
            None => Admission::Unlimited,
        };
        settle(&keys, (self.position, self.previous_secret), admission, now)
    }
}

/// Adds `RateLimit-Policy` and `RateLimit` for `quota`.
///
/// Both values are written with `itoa` into one buffer that the two header values share without a
/// copy: one allocation, where two `format!` texts each copied into its value made four. Measured
/// with callgrind (`heare-auth-bench --rate-limits --only instructions`): 1,365 instructions a
/// verify this way, 2,746 the other, of a limited key's whole verify of about 29,500.
pub fn add_fields(headers: &mut HeaderMap, quota: &Quota) {
    let limit = &quota.limit;
    let mut text = Vec::with_capacity(64);
    write_field(
        &mut text,
        b"\"key\";q=",
        limit.requests,
        b";w=",
        limit.window_seconds(),
    );
    let policy_end = text.len();
    write_field(
        &mut text,
        b"\"key\";r=",
        quota.remaining,
        b";t=",
        quota.reset_seconds(),
    );
    let text = Bytes::from(text);
    let values = [
        (POLICY, text.slice(..policy_end)),
        (STATE, text.slice(policy_end..)),
    ];
    for (name, value) in values {
        // Digits, quotes, letters, `=` and `;`: always a header value.
        if let Ok(value) = HeaderValue::from_maybe_shared(value) {
            headers.insert(name, value);
        }
    }
}

/// Appends `first` `a` `second` `b` to `text`, the numbers in decimal.
fn write_field(text: &mut Vec<u8>, first: &[u8], a: u64, second: &[u8], b: u64) {
    text.extend_from_slice(first);
    text.extend_from_slice(itoa::Buffer::new().format(a).as_bytes());
    text.extend_from_slice(second);
    text.extend_from_slice(itoa::Buffer::new().format(b).as_bytes());
}

/// Adds the fields and `Retry-After` of a refusal.
pub fn add_refusal_fields(headers: &mut HeaderMap, quota: &Quota) {
    add_fields(headers, quota);
    headers.insert(RETRY_AFTER, quota.retry_after_seconds().into());
}

/// The `/verify` answer to a request over `key_id`'s limit: 429 and its body.
pub fn verify_refusal(key_id: &str, quota: &Quota) -> Response<Body> {
    let mut body = Vec::with_capacity(96 + key_id.len());
    body.extend_from_slice(br#"{"valid":false,"error":"Rate limit exceeded","key_id":"#);
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, key_id);
    body.extend_from_slice(
        format!(r#","retry_after_ms":{}}}"#, quota.retry_after_millis()).as_bytes(),
    );
    let mut answer = response::json_bytes(StatusCode::TOO_MANY_REQUESTS, body);
    add_refusal_fields(answer.headers_mut(), quota);
    answer
}

/// Logs `verification_rate_limited` for a refusal whose turn it is (`log`).
pub fn log_refusal(log: bool, key_id: &str, quota: &Quota, peer: Peer, endpoint: &str) {
    if !log {
        return;
    }
    let fields = peer.log_fields();
    tracing::warn!(
        key_id,
        endpoint,
        limit = %quota.limit,
        retry_after_ms = quota.retry_after_millis(),
        peer_uid = fields.uid,
        peer_pid = fields.pid,
        "verification_rate_limited"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use heare_auth_store::rate_limit::RateLimit;
    use http_body_util::BodyExt;

    fn quota() -> Quota {
        Quota {
            limit: RateLimit::parse("100/1m", None).unwrap_or_else(|e| panic!("{e}")),
            remaining: 0,
            reset_nanos: 1_500_000_000,
            retry_after_nanos: 600_000_001,
        }
    }

    #[tokio::test]
    async fn a_refusal_names_the_key_and_when_to_retry() {
        let answer = verify_refusal("key_\"q", &quota());
        assert_eq!(answer.status(), StatusCode::TOO_MANY_REQUESTS);
        let headers = answer.headers().clone();
        assert_eq!(headers["retry-after"], "1");
        assert_eq!(headers["ratelimit-policy"], "\"key\";q=100;w=60");
        assert_eq!(headers["ratelimit"], "\"key\";r=0;t=2");
        let body = answer.into_body().collect().await.map(|b| b.to_bytes());
        let body: serde_json::Value =
            serde_json::from_slice(&body.unwrap_or_default()).unwrap_or_default();
        assert_eq!(
            body,
            serde_json::json!({"valid": false, "error": "Rate limit exceeded",
                "key_id": "key_\"q", "retry_after_ms": 601})
        );
    }
}
