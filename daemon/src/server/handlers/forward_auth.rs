//! `/auth`, any method: the forward-auth answer for nginx `auth_request`, Caddy `forward_auth`,
//! Traefik `ForwardAuth` and Envoy `ext_authz` (HTTP). The same lock-free lookup as `/verify`;
//! the request body is ignored.
//!
//! The key comes from `Authorization: Bearer`, else the configured headers (`X-API-Key` by
//! default), else — only when configured — a query parameter. Required scopes come from
//! `?scope=S` (repeatable) and `X-Heare-Require-Scope: S1 S2`; all are required. A valid key gets
//! `200` with an empty body and identity headers (`X-Heare-Key-Id`, `X-Heare-Key-Name`,
//! `X-Heare-Key-Scopes`, and metadata fields mapped to headers); a value that cannot be a header
//! value is left out and logged by key id. No key or a bad one: `401` with `WWW-Authenticate:
//! Bearer realm="heare-auth"` (`error="invalid_token"` for a bad one); a missing scope: `403`
//! with `error="insufficient_scope"` (RFC 6750); a key over its rate limit: `429` with
//! `Retry-After` and the draft's `RateLimit` fields ([`rate_limited`]), which a 200 for a limited
//! key carries too. Logged as `forward_auth_success` /
//! `forward_auth_failed` with the original method and path (never the query string, path
//! parameters or fragment), secrets hidden ([`logged`]).

use crate::access_log::{AccessLog, Forwarded};
use crate::config::ForwardAuthSettings;
use crate::keyset::{KeyView, ServedKeys, Verdict, is_scope_token};
use crate::metrics::VerifyResult;
use crate::redact::Redactor;
use crate::server::handlers::rate_limited::{Outcome, PendingGrant};
use crate::server::handlers::{logged, rate_limited};
use crate::server::peer::Peer;
use crate::server::response::Body;
use crate::state::Shared;
use crate::verify_input::bearer_token;
use bytes::Bytes;
use heare_auth_client::token::{SecretShape, secret_shape};
use heare_auth_store::timestamp;
use heare_auth_store::timestamp::UnixMillis;
use http_body_util::Full;
use hyper::header::{
    AUTHORIZATION, CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE,
};
use hyper::{HeaderMap, Request, Response, StatusCode};
use std::time::Instant;
use std::time::SystemTime;

const REALM: &str = r#"Bearer realm="heare-auth""#;

/// Answers `/auth` and counts it like a verify. No answer may be cached: a revoked key must stop
/// working at once, and one cached 200 would let every later request in.
pub async fn handle<B>(request: &Request<B>, shared: &Shared, peer: Peer) -> Response<Body> {
    let started = Instant::now();
    let asked = Asked::of(request, &shared.forward_auth);
    let (mut answer, result) = answer(&asked, shared, peer).await;
    shared.metrics.verify.record(result, started.elapsed());
    answer
        .headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    answer
}

/// What a forward-auth request asks, taken from its head.
struct Asked<'r> {
    key: Option<String>,
    required: Result<Vec<String>, ()>,
    headers: &'r HeaderMap,
}

impl<'r> Asked<'r> {
    fn of<B>(request: &'r Request<B>, settings: &ForwardAuthSettings) -> Self {
        let headers = request.headers();
        let query = request.uri().query().unwrap_or("");
        Asked {
            key: presented_key(headers, query, settings),
            required: required_scopes(headers, query),
            headers,
        }
    }
}

/// The key: bearer token, else the first configured header, else the query parameter if set.
fn presented_key(
    headers: &HeaderMap,
    query: &str,
    settings: &ForwardAuthSettings,
) -> Option<String> {
    if let Some(token) = headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer_token(v.as_bytes()))
    {
        return Some(token.to_string());
    }
    for name in &settings.key_headers {
        if let Some(value) = headers.get(name).and_then(|v| v.to_str().ok()) {
            let value = value.trim();
            if !value.is_empty() {
                return Some(value.to_string());
            }
        }
    }
    let parameter = settings.key_query_param.as_deref()?;
    query_values(query, parameter).ok()?.into_iter().next()
}

/// Every `scope=` of the query and every scope of `X-Heare-Require-Scope`; `Err` when one is not a
/// scope token (a proxy configuration error: refused, never ignored).
fn required_scopes(headers: &HeaderMap, query: &str) -> Result<Vec<String>, ()> {
    let mut scopes = query_values(query, "scope")?;
    for value in headers.get_all("x-heare-require-scope") {
        let text = value.to_str().map_err(|_| ())?;
        scopes.extend(text.split_ascii_whitespace().map(str::to_string));
    }
    let fine = scopes.len() <= MAX_REQUIRED && scopes.iter().all(|scope| is_scope_token(scope));
    match fine {
        true => Ok(scopes),
        false => Err(()),
    }
}

/// Scopes one request may require (a key holds at most 64).
const MAX_REQUIRED: usize = 64;

/// The percent-decoded values of `name` in a query string; `Err` when one does not decode (a
/// requirement must never be dropped because it was written oddly).
fn query_values(query: &str, name: &str) -> Result<Vec<String>, ()> {
    query
        .split('&')
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
        .filter(|(key, _)| *key == name)
        .map(|(_, value)| percent_decode(value).ok_or(()))
        .collect()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            byte => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

async fn answer(asked: &Asked<'_>, shared: &Shared, peer: Peer) -> (Response<Body>, VerifyResult) {
    // The one reading of the wall clock for this request: expiry, usage and the log line.
    let at = SystemTime::now();
    let record = Record {
        log: &shared.access_log,
        at,
        peer,
    };
    let Ok(required) = &asked.required else {
        let answer = json_answer(
            StatusCode::BAD_REQUEST,
            r#"{"error":"a required scope is not a scope token"}"#,
        );
        record.failed(asked, None, "bad_scope_request");
        return (answer, VerifyResult::Malformed);
    };
    let Some(key) = &asked.key else {
        record.failed(asked, None, "no_key");
        return (unauthorized(false), VerifyResult::Malformed);
    };
    let now = timestamp::millis(at);
    if shared.too_stale(now) {
        record.failed(asked, None, "stale");
        let answer = json_answer(
            StatusCode::SERVICE_UNAVAILABLE,
            r#"{"error":"the key set is too old to trust"}"#,
        );
        return (answer, VerifyResult::Stale);
    }
    if secret_shape(key) == SecretShape::BadChecksum {
        record.failed(asked, None, "bad_checksum");
        return (unauthorized(true), VerifyResult::BadChecksum);
    }
    let keys = shared.keys();
    let fleet = shared.fleet.as_deref();
    let (grant, identity) = match judge(
        &keys,
        key,
        required,
        (asked, shared, &record),
        now,
        fleet.is_some(),
    ) {
        Judged::Answered(answer, result) => return (answer, result),
        Judged::AskFleet { grant, identity } => (grant, identity),
    };
    let outcome = grant.settle_in(fleet, keys, now).await;
    settled(outcome, grant.key_id(), || identity, (asked, &record))
}

/// What the key set says of the key: the answer, or a granted limited key whose request the
/// fleet backend must decide (only when `fleet` is configured).
fn judge(
    keys: &ServedKeys,
    key: &str,
    required: &[String],
    (asked, shared, record): (&Asked<'_>, &Shared, &Record<'_>),
    now: UnixMillis,
    fleet: bool,
) -> Judged {
    let (result, key_id) = match keys.verify(key, now) {
        Verdict::Valid(view) => match view.missing_scope(required) {
            None => {
                if fleet && let Some(limit) = keys.limit_of(&view) {
                    let identity = identity_answer(&view, shared);
                    let grant = PendingGrant::of(&view, limit);
                    return Judged::AskFleet { grant, identity };
                }
                let outcome = rate_limited::settle_here(keys, &view, now);
                let identity = || identity_answer(&view, shared);
                let (answer, result) = settled(outcome, view.id, identity, (asked, record));
                return Judged::Answered(answer, result);
            }
            Some(_) => {
                record.failed(asked, Some(view.id), "insufficient_scope");
                return Judged::Answered(insufficient(required), VerifyResult::InsufficientScope);
            }
        },
        Verdict::Expired { key_id } => (VerifyResult::Expired, Some(key_id)),
        Verdict::Disabled { key_id } => (VerifyResult::Disabled, Some(key_id)),
        Verdict::Rotated { key_id } => (VerifyResult::Rotated, Some(key_id)),
        Verdict::Unknown => (VerifyResult::Unknown, None),
    };
    record.failed(asked, key_id, result.name());
    Judged::Answered(unauthorized(true), result)
}

/// The key set's judgement of one request: the answer, or a valid limited key with the scopes
/// asked for, its 200 built already (not logged, see [`identity_answer`]), waiting for the
/// fleet backend's decision (owned, so that no view of the set is held across the wait).
enum Judged {
    Answered(Response<Body>, VerifyResult),
    AskFleet {
        grant: PendingGrant,
        identity: (Response<Body>, Vec<String>),
    },
}

/// The answer to the key `key_id` once `outcome` is settled: 429, or the 200 `identity` makes
/// ([`identity_answer`]), logged.
fn settled(
    outcome: Outcome,
    key_id: &str,
    identity: impl FnOnce() -> (Response<Body>, Vec<String>),
    (asked, record): (&Asked<'_>, &Record<'_>),
) -> (Response<Body>, VerifyResult) {
    match outcome {
        Outcome::Refused { quota, log } => {
            rate_limited::log_refusal(log, key_id, &quota, record.peer, "auth");
            record.failed(asked, Some(key_id), "rate_limited");
            (too_many(&quota), VerifyResult::RateLimited)
        }
        Outcome::Granted { fields } => {
            let (mut answer, left_out) = identity();
            granted(key_id, &left_out, asked, record);
            if let Some(quota) = fields {
                rate_limited::add_fields(answer.headers_mut(), &quota);
            }
            (answer, VerifyResult::Valid)
        }
    }
}

/// 200, empty body, the identity headers; and the headers that had to be sent empty.
fn identity_answer(key: &KeyView<'_>, shared: &Shared) -> (Response<Body>, Vec<String>) {
    let mut answer = Response::new(Full::new(Bytes::new()));
    let scopes = key.scopes().collect::<Vec<_>>().join(",");
    let headers = answer.headers_mut();
    let mut left_out = Vec::new();
    for (name, value) in [
        ("x-heare-key-id", key.id),
        ("x-heare-key-name", key.name),
        ("x-heare-key-scopes", scopes.as_str()),
    ] {
        // Every identity header is sent, empty when its value cannot be: a proxy that copies
        // only the headers present (Envoy) then still replaces what the client sent.
        let value = header_value(value).unwrap_or_else(|| {
            left_out.push(name.to_string());
            HeaderValue::from_static("")
        });
        headers.insert(HeaderName::from_static(name), value);
    }
    left_out.extend(
        map_metadata(key, &shared.forward_auth, headers)
            .into_iter()
            .map(str::to_string),
    );
    (answer, left_out)
}

/// Logs a granted request of `key_id`, and the identity headers it had to send empty.
fn granted(key_id: &str, left_out: &[String], asked: &Asked<'_>, record: &Record<'_>) {
    if !left_out.is_empty() {
        tracing::warn!(key_id, headers = ?left_out, "forward_auth_headers_omitted");
    }
    record.granted(asked, key_id);
}

/// Copies the configured metadata fields into headers; returns the headers left out (a value
/// that is not a string or a number, or cannot be a header value).
fn map_metadata<'s>(
    key: &KeyView<'_>,
    settings: &'s ForwardAuthSettings,
    headers: &mut HeaderMap,
) -> Vec<&'s str> {
    if settings.metadata_headers.is_empty() {
        return Vec::new();
    }
    let Ok(metadata) =
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(key.metadata_json)
    else {
        return Vec::new();
    };
    let mut left_out = Vec::new();
    for (header, field) in &settings.metadata_headers {
        let text = match metadata.get(field) {
            None => String::new(),
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(serde_json::Value::Number(number)) => number.to_string(),
            Some(_) => {
                left_out.push(header.as_str());
                String::new()
            }
        };
        // Sent empty when the key has no such field or its value cannot be a header value, so
        // that the client's own never passes a proxy that copies only present headers.
        let value = header_value(&text).unwrap_or_else(|| {
            left_out.push(header.as_str());
            HeaderValue::from_static("")
        });
        headers.insert(header.clone(), value);
    }
    left_out
}

/// `text` as a header value when it is visible ASCII with inner spaces (no CR, LF, NUL, other
/// controls or non-ASCII); `None` otherwise.
fn header_value(text: &str) -> Option<HeaderValue> {
    let fine = text.bytes().all(|b| (0x20..0x7F).contains(&b)) && text.trim() == text;
    if !fine {
        return None;
    }
    HeaderValue::from_str(text).ok()
}

fn unauthorized(bad_key: bool) -> Response<Body> {
    let (challenge, body): (&str, &'static str) = match bad_key {
        true => (
            r#"Bearer realm="heare-auth", error="invalid_token""#,
            r#"{"error":"Invalid API key"}"#,
        ),
        false => (REALM, r#"{"error":"an API key is required"}"#),
    };
    let mut answer = json_answer(StatusCode::UNAUTHORIZED, body);
    if let Ok(value) = HeaderValue::from_str(challenge) {
        answer.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    answer
}

fn insufficient(required: &[String]) -> Response<Body> {
    let mut answer = json_answer(StatusCode::FORBIDDEN, r#"{"error":"Insufficient scope"}"#);
    let challenge = format!(
        r#"Bearer realm="heare-auth", error="insufficient_scope", scope="{}""#,
        required.join(" ")
    );
    if let Ok(value) = HeaderValue::from_str(&challenge) {
        answer.headers_mut().insert(WWW_AUTHENTICATE, value);
    }
    answer
}

/// 429 with `Retry-After` and the rate-limit fields.
fn too_many(quota: &crate::keyset::Quota) -> Response<Body> {
    let mut answer = json_answer(
        StatusCode::TOO_MANY_REQUESTS,
        r#"{"error":"Rate limit exceeded"}"#,
    );
    rate_limited::add_refusal_fields(answer.headers_mut(), quota);
    answer
}

fn json_answer(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut answer = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

/// Where a request's `/auth` line goes, with the time and the peer.
struct Record<'a> {
    log: &'a AccessLog,
    at: SystemTime,
    peer: Peer,
}

impl Record<'_> {
    /// Logs `forward_auth_success` for the key.
    fn granted(&self, asked: &Asked<'_>, key_id: &str) {
        if self.log.logs_auth_successes() {
            let fields = |request: &Forwarded<'_>| {
                self.log
                    .forward_auth_success(self.at, key_id, request, self.peer.log_fields());
            };
            with_forwarded(asked, fields);
        }
    }

    /// Logs `forward_auth_failed` with the key when known, and why.
    fn failed(&self, asked: &Asked<'_>, key_id: Option<&str>, reason: &str) {
        if self.log.logs_auth_refusals() {
            let fields = |request: &Forwarded<'_>| {
                self.log.forward_auth_failed(
                    self.at,
                    key_id,
                    reason,
                    request,
                    self.peer.log_fields(),
                );
            };
            with_forwarded(asked, fields);
        }
    }
}

/// Calls `log` with what the line shows of the proxied request, each value redacted.
fn with_forwarded(asked: &Asked<'_>, log: impl FnOnce(&Forwarded<'_>)) {
    let redactor = Redactor::new(asked.key.as_deref());
    let (method, path) = logged::original(asked.headers, &redactor);
    log(&Forwarded {
        user_agent: &logged::user_agent(asked.headers, &redactor),
        method: method.as_deref(),
        path: path.as_deref(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_header_values() {
        let both = vec!["a".to_string(), "b:c".to_string()];
        assert_eq!(query_values("scope=a&x=1&scope=b%3Ac", "scope"), Ok(both));
        assert_eq!(query_values("scope=%zz", "scope"), Err(()));
        assert_eq!(query_values("scope=%ff", "scope"), Err(()), "not UTF-8");
        let mut headers = HeaderMap::new();
        assert_eq!(
            required_scopes(&headers, "scope="),
            Err(()),
            "an empty scope"
        );
        assert_eq!(required_scopes(&headers, "scope"), Err(()), "a bare name");
        assert_eq!(required_scopes(&headers, "scope=a,b"), Err(()), "a comma");
        headers.insert(
            "x-heare-require-scope",
            HeaderValue::from_static("read  write"),
        );
        let all = vec!["x".to_string(), "read".to_string(), "write".to_string()];
        assert_eq!(required_scopes(&headers, "scope=x"), Ok(all));
        let many = vec!["scope=s"; 65].join("&");
        assert_eq!(required_scopes(&HeaderMap::new(), &many), Err(()));
        assert!(header_value("alice").is_some());
        assert!(header_value("a\r\nX-Evil: 1").is_none());
        assert!(header_value("caf\u{e9}").is_none());
        assert!(header_value("nul\0").is_none());
        assert!(header_value(" padded").is_none());
    }
}
