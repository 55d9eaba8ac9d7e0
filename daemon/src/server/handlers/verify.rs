//! `POST /verify`: the hot path. Takes the secret from the JSON body (`{"api_key": …}`) or from
//! `Authorization: Bearer …`, hashes it, looks it up in the current key set without a lock, and
//! answers 200 with the key's id, name and metadata, or 403 `Invalid API key`.
//!
//! The secret never leaves this function: it is not logged (failures log at most its first 4
//! characters, as the Python service), not echoed in any error, and body parse errors are
//! answered with a fixed text because serde's messages can quote the input.

use crate::keyset::Verdict;
use crate::server::body::{BodyError, read_limited};
use crate::server::peer::Peer;
use crate::server::response::{self, Body};
use crate::state::Shared;
use crate::timestamp;
use crate::verify_input::presented_secret;
use heare_auth_client::token::{SecretShape, secret_shape};
use heare_auth_client::wire::{INVALID_API_KEY, VerifyResponse};
use hyper::body::Incoming;
use hyper::header::{AUTHORIZATION, USER_AGENT};
use hyper::{HeaderMap, Request, Response, StatusCode};
use serde_json::value::RawValue;

const BAD_BODY: &str = "the body must be a JSON object {\"api_key\": \"sec_...\"} (or send Authorization: Bearer sec_...)";
const STALE: &str = "the key set is older than max_stale allows and the store cannot be read";

pub async fn handle(request: Request<Incoming>, shared: &Shared, peer: Peer) -> Response<Body> {
    let user_agent = user_agent(request.headers());
    let authorization = request.headers().get(AUTHORIZATION).cloned();
    let body = match read_limited(request).await {
        Ok((_, body)) => body,
        Err(BodyError::TooLarge) => {
            return response::error(StatusCode::PAYLOAD_TOO_LARGE, "the body is over 64 KiB");
        }
        Err(BodyError::Read) => {
            return response::error(StatusCode::BAD_REQUEST, "the body could not be read");
        }
        Err(BodyError::TimedOut) => {
            return response::error(
                StatusCode::REQUEST_TIMEOUT,
                "the body did not arrive in time",
            );
        }
    };
    let secret = match presented_secret(authorization.as_ref().map(|v| v.as_bytes()), &body) {
        Ok(secret) => secret,
        Err(_) => return response::error(StatusCode::UNPROCESSABLE_ENTITY, BAD_BODY),
    };

    let now = timestamp::now();
    let (uid, pid, address) = peer.log_fields();
    if shared.too_stale(now) {
        tracing::error!(
            peer_uid = uid,
            peer_pid = pid,
            "verification_unavailable_stale"
        );
        return response::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &VerifyResponse::invalid(STALE),
        );
    }
    if secret_shape(&secret) == SecretShape::BadChecksum {
        // A generation-1 secret with a wrong checksum is a typo or a truncation: no lookup.
        return refuse(Known::Prefix(&secret), "bad_checksum", &user_agent, peer);
    }
    let keys = shared.keys();
    match keys.verify(&secret, now) {
        Verdict::Valid(key) => {
            let Ok(metadata) = serde_json::from_str::<&RawValue>(key.metadata_json) else {
                tracing::error!(key_id = key.id, "metadata_not_json");
                return response::error(StatusCode::INTERNAL_SERVER_ERROR, "internal error");
            };
            tracing::info!(
                key_id = key.id,
                key_name = key.name,
                user_agent = user_agent,
                peer_uid = uid,
                peer_pid = pid,
                peer_addr = address,
                "verification_success"
            );
            response::json(
                StatusCode::OK,
                &VerifyResponse::valid(key.id, key.name, metadata),
            )
        }
        Verdict::Expired { key_id } => refuse(Known::Key(key_id), "expired", &user_agent, peer),
        Verdict::Disabled { key_id } => refuse(Known::Key(key_id), "disabled", &user_agent, peer),
        Verdict::Rotated { key_id } => refuse(Known::Key(key_id), "rotated", &user_agent, peer),
        Verdict::Unknown => refuse(Known::Prefix(&secret), "unknown", &user_agent, peer),
    }
}

/// What the log may say about a refused secret: the key it belongs to, or, for a secret that
/// matches no key, its first 4 characters (as the Python service logs).
enum Known<'a> {
    Key(&'a str),
    Prefix(&'a str),
}

/// 403 `Invalid API key`, logged as `verification_failed` with the reason and never the secret.
fn refuse(known: Known<'_>, reason: &str, user_agent: &str, peer: Peer) -> Response<Body> {
    let (uid, pid, address) = peer.log_fields();
    let (key_id, prefix) = match known {
        Known::Key(id) => (Some(id), None),
        Known::Prefix(secret) => (None, Some(secret.chars().take(4).collect::<String>())),
    };
    tracing::warn!(
        key_id = key_id,
        secret_prefix = prefix,
        reason = reason,
        user_agent = user_agent,
        peer_uid = uid,
        peer_pid = pid,
        peer_addr = address,
        "verification_failed"
    );
    response::json(
        StatusCode::FORBIDDEN,
        &VerifyResponse::invalid(INVALID_API_KEY),
    )
}

/// The User-Agent for the log, bounded so a client cannot bloat the log.
fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(USER_AGENT)
        .map(|v| {
            String::from_utf8_lossy(v.as_bytes())
                .chars()
                .take(256)
                .collect()
        })
        .unwrap_or_default()
}
