//! `POST /verify`: the hot path. Takes the secret from the JSON body (`{"api_key": …}`) or from
//! `Authorization: Bearer …`, hashes it, looks it up in the current key set without a lock, and
//! answers 200 with the key's id, name and metadata, or 403 `Invalid API key`. A valid key with
//! the scopes asked for but over its rate limit is answered 429 ([`rate_limited`]).
//!
//! The secret never leaves this function: it is not logged, not echoed in any error, and body
//! parse errors are answered with a fixed text because serde's messages can quote the input. A
//! refusal logs `secret_prefix` (the Python service's field) only when the input begins with the
//! fixed token prefix `sec_` — then it is exactly that prefix; anything else (a Unix password
//! typed at the wrong prompt) is logged as `key_shaped: false` and nothing of it. The User-Agent
//! is logged with anything secret-shaped and the presented secret hidden ([`logged`]).

use crate::access_log::{AccessLog, Refused};
use crate::keyset::{KeyView, ServedKeys, Verdict};
use crate::metrics::VerifyResult;
use crate::redact::Redactor;
use crate::server::body::{BodyError, read_limited};
use crate::server::handlers::rate_limited::{Outcome, PendingGrant};
use crate::server::handlers::{logged, rate_limited};
use crate::server::peer::Peer;
use crate::server::response::{self, Body};
use crate::state::Shared;
use crate::verify_input::presented;
use bytes::Bytes;
use heare_auth_client::token::{SecretShape, secret_shape};
use heare_auth_client::wire::VerifyResponse;
use heare_auth_store::timestamp;
use heare_auth_store::timestamp::UnixMillis;
use hyper::body::Incoming;
use hyper::header::AUTHORIZATION;
use hyper::{HeaderMap, Request, Response, StatusCode};
use std::time::{Duration, Instant, SystemTime};

const BAD_BODY: &str = "the body must be a JSON object {\"api_key\": \"sec_...\"} (or send Authorization: Bearer sec_...)";
const STALE: &str = "the key set is older than max_stale allows and the store cannot be read";

/// Answers a verify and counts it by result, timed from the complete request to the answer.
pub async fn handle(request: Request<Incoming>, shared: &Shared, peer: Peer) -> Response<Body> {
    let (parts, body) = match read_limited(request).await {
        Ok(read) => read,
        Err(error) => {
            shared
                .metrics
                .verify
                .record(VerifyResult::Malformed, Duration::ZERO);
            return body_error(error);
        }
    };
    let started = Instant::now();
    let (response, result) = answer(&parts.headers, &body, shared, peer).await;
    shared.metrics.verify.record(result, started.elapsed());
    response
}

/// The answer to a request whose body could not be read.
fn body_error(error: BodyError) -> Response<Body> {
    match error {
        BodyError::TooLarge => {
            response::error(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 64 KiB")
        }
        BodyError::Read => response::error(StatusCode::BAD_REQUEST, "the body could not be read"),
        BodyError::TimedOut => response::error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        ),
    }
}

/// The answer to a complete request, and its result for the metrics.
async fn answer(
    headers: &HeaderMap,
    body: &[u8],
    shared: &Shared,
    peer: Peer,
) -> (Response<Body>, VerifyResult) {
    let authorization = headers.get(AUTHORIZATION).map(|v| v.as_bytes());
    let (secret, required) = match presented(authorization, body) {
        Ok(found) => (found.secret, found.require_scopes),
        Err(_) => {
            let refusal = response::error(StatusCode::UNPROCESSABLE_ENTITY, BAD_BODY);
            return (refusal, VerifyResult::Malformed);
        }
    };
    // The one reading of the wall clock for this verify: expiry, usage and the log line.
    let at = SystemTime::now();
    let now = timestamp::millis(at);
    let asker = Asker {
        headers,
        secret: &secret,
        peer,
        at,
        log: &shared.access_log,
    };
    if shared.too_stale(now) {
        let fields = peer.log_fields();
        tracing::error!(
            peer_uid = fields.uid,
            peer_pid = fields.pid,
            "verification_unavailable_stale"
        );
        let refusal = response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &VerifyResponse::invalid(STALE),
        );
        return (refusal, VerifyResult::Stale);
    }
    if secret_shape(&secret) == SecretShape::BadChecksum {
        // A generation-1 secret with a wrong checksum is a typo or a truncation: no lookup.
        return asker.refused(Known::Prefix(&secret), VerifyResult::BadChecksum);
    }
    let keys = shared.keys();
    let fleet = shared.fleet.as_deref();
    let (grant, name, body) = match judge(&keys, &asker, &required, now, fleet.is_some()) {
        Judged::Answered(response, result) => return (response, result),
        Judged::AskFleet { grant, name, body } => (grant, name, body),
    };
    let outcome = grant.settle_in(fleet, keys, now).await;
    asker.settled(outcome, (grant.key_id(), &name), || body)
}

/// What the key set says of the secret: the answer, or a granted limited key whose request the
/// fleet backend must decide (only when `fleet` is configured).
fn judge(
    keys: &ServedKeys,
    asker: &Asker<'_>,
    required: &[String],
    now: UnixMillis,
    fleet: bool,
) -> Judged {
    let secret = asker.secret;
    let (response, result) = match keys.verify(secret, now) {
        Verdict::Valid(key) if key.missing_scope(required).is_some() => {
            asker.log_refusal(Known::Key(key.id), "insufficient_scope");
            let refusal =
                response::json_bytes(StatusCode::FORBIDDEN, Bytes::from_static(INSUFFICIENT_BODY));
            (refusal, VerifyResult::InsufficientScope)
        }
        Verdict::Valid(key) => {
            if fleet && let Some(limit) = keys.limit_of(&key) {
                let (name, body) = (key.name.to_string(), valid_body(&key));
                let grant = PendingGrant::of(&key, limit);
                return Judged::AskFleet { grant, name, body };
            }
            let outcome = rate_limited::settle_here(keys, &key, now);
            asker.settled(outcome, (key.id, key.name), || valid_body(&key))
        }
        Verdict::Expired { key_id } => asker.refused(Known::Key(key_id), VerifyResult::Expired),
        Verdict::Disabled { key_id } => asker.refused(Known::Key(key_id), VerifyResult::Disabled),
        Verdict::Rotated { key_id } => asker.refused(Known::Key(key_id), VerifyResult::Rotated),
        Verdict::Unknown => asker.refused(Known::Prefix(secret), VerifyResult::Unknown),
    };
    Judged::Answered(response, result)
}

/// The key set's judgement of one request: the answer, or a valid limited key with the scopes
/// asked for, its name and 200 body, waiting for the fleet backend's decision (owned, so that no
/// view of the set is held across the wait).
enum Judged {
    Answered(Response<Body>, VerifyResult),
    AskFleet {
        grant: PendingGrant,
        name: String,
        body: Vec<u8>,
    },
}

/// Who asked, with what, and where that goes in the log: the User-Agent is read and redacted
/// only for a line that is written.
struct Asker<'a> {
    headers: &'a HeaderMap,
    secret: &'a str,
    peer: Peer,
    at: SystemTime,
    log: &'a AccessLog,
}

impl Asker<'_> {
    /// The answer to the key `(id, name)` once `outcome` is settled: 429, or the 200 with the
    /// `body` made, logged.
    fn settled(
        &self,
        outcome: Outcome,
        (id, name): (&str, &str),
        body: impl FnOnce() -> Vec<u8>,
    ) -> (Response<Body>, VerifyResult) {
        match outcome {
            Outcome::Refused { quota, log } => {
                rate_limited::log_refusal(log, id, &quota, self.peer, "verify");
                let refusal = rate_limited::verify_refusal(id, &quota);
                (refusal, VerifyResult::RateLimited)
            }
            Outcome::Granted { fields } => {
                self.log_success(id, name);
                let mut answer = response::json_bytes(StatusCode::OK, body());
                if let Some(quota) = fields {
                    rate_limited::add_fields(answer.headers_mut(), &quota);
                }
                (answer, VerifyResult::Valid)
            }
        }
    }

    /// Logs `verification_success` for the key `id` named `name`.
    fn log_success(&self, id: &str, name: &str) {
        if self.log.logs_verify_successes() {
            let user_agent = logged::user_agent(self.headers, &Redactor::new(Some(self.secret)));
            let fields = self.peer.log_fields();
            self.log
                .verification_success(self.at, id, name, &user_agent, fields);
        }
    }

    /// 403 `Invalid API key` with `result`, logged as `verification_failed`.
    fn refused(&self, known: Known<'_>, result: VerifyResult) -> (Response<Body>, VerifyResult) {
        self.log_refusal(known, result.name());
        let refusal = response::json_bytes(StatusCode::FORBIDDEN, Bytes::from_static(INVALID_BODY));
        (refusal, result)
    }

    /// Logs `verification_failed` with the reason, the key or what may be said of the secret
    /// (never the secret).
    fn log_refusal(&self, known: Known<'_>, reason: &str) {
        if !self.log.logs_verify_refusals() {
            return;
        }
        let (key_id, secret_prefix, key_shaped) = match known {
            Known::Key(id) => (Some(id), None, None),
            Known::Prefix(secret) => match secret_prefix(secret) {
                Some(prefix) => (None, Some(prefix), None),
                None => (None, None, Some(false)),
            },
        };
        let refused = Refused {
            key_id,
            secret_prefix,
            key_shaped,
            reason,
        };
        let user_agent = logged::user_agent(self.headers, &Redactor::new(Some(self.secret)));
        self.log
            .verification_failed(self.at, &refused, &user_agent, self.peer.log_fields());
    }
}

/// The 403 body of a missing scope (what serde_json writes, checked by a test).
const INSUFFICIENT_BODY: &[u8] = br#"{"valid":false,"error":"Insufficient scope"}"#;

/// The 200 body, `{"valid":true,"key_id":…,"name":…,"metadata":…,"scopes":[…],"error":null}`, byte for byte
/// what serde_json writes for [`VerifyResponse::valid`], written straight into one buffer: the
/// metadata is the key set's compact JSON text, validated when the set was loaded, so it is
/// copied rather than parsed again on every verify.
fn valid_body(key: &KeyView<'_>) -> Vec<u8> {
    let mut body = Vec::with_capacity(64 + key.id.len() + key.name.len() + key.metadata_json.len());
    body.extend_from_slice(br#"{"valid":true,"key_id":"#);
    // Writing a string into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut body, key.id);
    body.extend_from_slice(br#","name":"#);
    let _ = serde_json::to_writer(&mut body, key.name);
    body.extend_from_slice(br#","metadata":"#);
    body.extend_from_slice(key.metadata_json.as_bytes());
    body.extend_from_slice(br#","scopes":["#);
    for (i, scope) in key.scopes().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        // Scope tokens hold no character JSON escapes.
        body.push(b'"');
        body.extend_from_slice(scope.as_bytes());
        body.push(b'"');
    }
    body.extend_from_slice(br#"],"error":null}"#);
    body
}

/// What the log may say about a refused secret: the key it belongs to, or, for a secret that
/// matches no key, whether it is key-shaped ([`secret_prefix`]).
enum Known<'a> {
    Key(&'a str),
    Prefix(&'a str),
}

/// The 403 body: what serde_json writes for `VerifyResponse::invalid(INVALID_API_KEY)`
/// (`heare_auth_client::wire::INVALID_API_KEY`, checked by a test).
const INVALID_BODY: &[u8] = br#"{"valid":false,"error":"Invalid API key"}"#;

/// The fixed token prefix `sec_` when `secret` begins with it (what the Python service's 4-character
/// `secret_prefix` shows for a real key); `None` for anything else, of which nothing is logged.
fn secret_prefix(secret: &str) -> Option<&'static str> {
    const PREFIX: &str = "sec_";
    secret.starts_with(PREFIX).then_some(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use heare_auth_client::wire::{INSUFFICIENT_SCOPE, INVALID_API_KEY};
    use serde_json::value::RawValue;
    use std::borrow::Cow;

    #[test]
    fn hand_written_bodies_are_what_serde_writes() {
        for (id, name, metadata, scopes) in [
            ("key_1", "svc", "{}", ""),
            (
                "key_\"2\"",
                "tab\there \\ é😀 \u{1}",
                r#"{"env":"prod","n":[1,{"x":null}]}"#,
                "read write:all a{b}~!",
            ),
        ] {
            let key = KeyView {
                position: 0,
                previous_secret: false,
                id,
                name,
                metadata_json: metadata,
                scopes,
            };
            let raw: &RawValue = serde_json::from_str(metadata).unwrap();
            let mut answer = VerifyResponse::valid(id, name, raw);
            answer.scopes = Some(key.scopes().map(Cow::Borrowed).collect());
            let expected = serde_json::to_vec(&answer).unwrap();
            assert_eq!(valid_body(&key), expected);
        }
        let expected = serde_json::to_vec(&VerifyResponse::invalid(INVALID_API_KEY)).unwrap();
        assert_eq!(INVALID_BODY, expected);
        let expected = serde_json::to_vec(&VerifyResponse::invalid(INSUFFICIENT_SCOPE)).unwrap();
        assert_eq!(INSUFFICIENT_BODY, expected);
    }

    #[test]
    fn only_the_fixed_token_prefix_is_ever_logged() {
        assert_eq!(secret_prefix("sec_0abc"), Some("sec_"));
        assert_eq!(secret_prefix("hunter2"), None);
        assert_eq!(secret_prefix("sec"), None);
        assert_eq!(secret_prefix("Sec_abc"), None);
    }
}
