//! The blocking client: verify a secret with one call, no async runtime needed.
//!
//! [`Client`] keeps one connection to the daemon and reuses it for every call (reconnecting when
//! the daemon closed it while idle). Secrets that cannot be valid are refused locally, before any
//! round trip: empty or oversized ones, ones with control characters, and heare-authctl
//! (generation `1`) secrets whose checksum does not match. The Python service's generation-`0`
//! secrets carry no checksum and always go to the daemon. The client's copies of a secret (the
//! request it writes) are zeroed after use.
//!
//! The client's timeout is one deadline for a whole verification: connecting, sending and reading
//! (see [`crate::transport`]). Without a socket or URL the client uses
//! [`crate::default_socket_path`], looked up only when the client is built, so a caller that names
//! its socket never reads the environment. [`ClientBuilder::server_uids`] checks who serves the
//! socket before a secret is sent.

use crate::default_socket_path;
use crate::error::Error;
use crate::token::{SecretShape, secret_shape};
use crate::transport::{Connection, Endpoint, TransportError};
use crate::wire::{ErrorResponse, RATE_LIMIT_EXCEEDED, VerifyRequest, VerifyResponse};
use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;
use zeroize::Zeroizing;

/// Longest secret worth sending (the daemon refuses bodies over 64 KiB anyway).
const MAX_SECRET_LEN: usize = 4096;

/// A verified key: who is calling.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// The key's id (`key_…`): log this, never the secret.
    pub key_id: String,
    /// The key's human name.
    pub name: String,
    /// The key's metadata object, as stored.
    pub metadata: serde_json::Value,
}

/// Builds a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    /// `None`: [`default_socket_path`], resolved by [`ClientBuilder::build`].
    endpoint: Option<Endpoint>,
    timeout: Duration,
    user_agent: String,
    server_uids: Option<Vec<u32>>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        ClientBuilder {
            endpoint: None,
            timeout: Duration::from_secs(5),
            user_agent: concat!("heare-auth-client/", env!("CARGO_PKG_VERSION")).to_string(),
            server_uids: None,
        }
    }
}

impl ClientBuilder {
    /// The daemon's Unix socket (default: [`default_socket_path`], which is
    /// `$HEARE_AUTH_SOCKET` unless the process is setuid/setgid, else
    /// `/run/heare-auth/heare-authd.sock`).
    pub fn socket(mut self, path: impl Into<PathBuf>) -> Self {
        self.endpoint = Some(Endpoint::Unix(path.into()));
        self
    }

    /// The daemon's TCP listener, as `http://host:port` (an IP address: resolving a name is not
    /// bounded by the timeout).
    pub fn url(mut self, url: &str) -> Result<Self, Error> {
        self.endpoint = Some(Endpoint::Tcp(tcp_address(url)?));
        Ok(self)
    }

    /// Bound on one verification as a whole — connecting, sending and reading the answer share
    /// one deadline (default 5 s). Past it, [`Error::Timeout`].
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Trust only a daemon running as one of `uids`: on each new connection to the Unix socket,
    /// before anything is sent, the server's uid is read with `SO_PEERCRED`; any other uid is
    /// [`Error::UntrustedServer`]. (A daemon started by systemd runs as its system user, or as
    /// root; pass both.) Over TCP there are no peer credentials, so with this option every TCP
    /// server is refused. Default: no check.
    pub fn server_uids(mut self, uids: impl IntoIterator<Item = u32>) -> Self {
        self.server_uids = Some(uids.into_iter().collect());
        self
    }

    /// The User-Agent the daemon logs with each verification.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = header_safe(&user_agent.into());
        self
    }

    /// The client; nothing is connected until the first verification.
    pub fn build(self) -> Client {
        let endpoint = self
            .endpoint
            .unwrap_or_else(|| Endpoint::Unix(default_socket_path()));
        let connection = Connection::new(endpoint, self.timeout, self.user_agent)
            .trust_server_uids(self.server_uids);
        Client {
            connection: Mutex::new(connection),
        }
    }
}

/// A client that reuses one connection to the daemon for many verifications.
pub struct Client {
    connection: Mutex<Connection>,
}

impl Client {
    /// A builder with the defaults (default socket, 5 s timeout).
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// Verifies `secret`: the key it belongs to, or why not.
    pub fn verify(&self, secret: &str) -> Result<Verified, Error> {
        check_locally(secret)?;
        // The request holds the secret: zeroed when dropped, whatever happens.
        let body = Zeroizing::new(
            serde_json::to_vec(&VerifyRequest {
                api_key: Cow::Borrowed(secret),
                require_scopes: None,
            })
            .map_err(|_| Error::MalformedKey("not encodable as JSON"))?,
        );
        let mut connection = self.connection.lock().unwrap_or_else(|p| p.into_inner());
        let endpoint = connection.endpoint().clone();
        let answer = connection
            .request(
                "POST",
                "/verify",
                &[("Content-Type", "application/json")],
                &body,
            )
            .map_err(|error| from_transport(error, &endpoint))?;
        drop(connection);
        interpret(answer.status, &answer.body)
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").finish_non_exhaustive()
    }
}

/// `host:port` of an `http://host:port` URL.
pub(crate) fn tcp_address(url: &str) -> Result<String, Error> {
    url.strip_prefix("http://")
        .map(|rest| rest.trim_end_matches('/'))
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
        .map(str::to_string)
        .ok_or(Error::Protocol(format!("{url:?} is not http://host:port")))
}

/// A header value cannot hold line breaks: keep what is printable.
pub(crate) fn header_safe(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).collect()
}

/// Refuses, without a round trip, secrets that cannot be valid.
pub fn check_locally(secret: &str) -> Result<(), Error> {
    if secret.is_empty() {
        return Err(Error::MalformedKey("empty"));
    }
    if secret.len() > MAX_SECRET_LEN {
        return Err(Error::MalformedKey("longer than 4096 bytes"));
    }
    if secret.chars().any(char::is_control) {
        return Err(Error::MalformedKey("contains control characters"));
    }
    if secret_shape(secret) == SecretShape::BadChecksum {
        return Err(Error::MalformedKey(
            "checksum mismatch (a typo or a truncated key)",
        ));
    }
    Ok(())
}

/// Turns the daemon's answer into a result: 200 a verified key, 403 [`Error::InvalidKey`], 429
/// [`Error::RateLimited`], anything else (or a 200 or 429 whose body is not what heare-authd
/// writes) [`Error::Protocol`] — never a key, never `InvalidKey`.
pub fn interpret(status: u16, body: &[u8]) -> Result<Verified, Error> {
    match status {
        200 => {
            let answer: VerifyResponse<'_> = serde_json::from_slice(body).map_err(|_| {
                Error::Protocol("a 200 answer that is not a verify response".into())
            })?;
            let (Some(key_id), true) = (answer.key_id, answer.valid) else {
                return Err(Error::Protocol("a 200 answer without a key id".into()));
            };
            let metadata = match answer.metadata {
                Some(raw) => serde_json::from_str(raw.get())
                    .map_err(|_| Error::Protocol("metadata is not JSON".into()))?,
                None => serde_json::Value::Object(Default::default()),
            };
            Ok(Verified {
                key_id: key_id.into_owned(),
                name: answer.name.map(Cow::into_owned).unwrap_or_default(),
                metadata,
            })
        }
        403 => Err(Error::InvalidKey),
        429 => Err(rate_limited(body)),
        other => {
            let reason = serde_json::from_slice::<ErrorResponse>(body)
                .map(|e| e.error)
                .or_else(|_| {
                    serde_json::from_slice::<VerifyResponse<'_>>(body)
                        .map(|v| v.error.map(Cow::into_owned).unwrap_or_default())
                })
                .unwrap_or_default();
            Err(Error::Protocol(format!("HTTP {other}: {reason}")))
        }
    }
}

/// The error of a 429: [`Error::RateLimited`] when the body is heare-authd's
/// `{"valid":false,"error":"Rate limit exceeded","key_id":…,"retry_after_ms":…}`; otherwise
/// (a proxy's own 429, garbage) [`Error::Protocol`].
fn rate_limited(body: &[u8]) -> Error {
    let Ok(answer) = serde_json::from_slice::<VerifyResponse<'_>>(body) else {
        return Error::Protocol("HTTP 429 with an answer that is not a verify response".into());
    };
    match answer {
        VerifyResponse {
            valid: false,
            error: Some(error),
            key_id: Some(key_id),
            retry_after_ms: Some(ms),
            ..
        } if error == RATE_LIMIT_EXCEEDED => Error::RateLimited {
            key_id: key_id.into_owned(),
            retry_after: Duration::from_millis(ms),
        },
        _ => Error::Protocol("HTTP 429 without a rate-limited key id and retry_after_ms".into()),
    }
}

pub(crate) fn from_transport(error: TransportError, endpoint: &Endpoint) -> Error {
    match error {
        TransportError::NoSocket(path) => Error::Unavailable {
            endpoint: path.display().to_string(),
            reason: "the socket does not exist".into(),
        },
        TransportError::Refused(_) => Error::Unavailable {
            endpoint: endpoint.to_string(),
            reason: "connection refused".into(),
        },
        TransportError::PermissionDenied(path) => Error::PermissionDenied(path),
        TransportError::Timeout(timeout) => Error::Timeout(timeout),
        TransportError::UntrustedServer(uid) => Error::UntrustedServer {
            endpoint: endpoint.to_string(),
            uid,
        },
        TransportError::Io(error) => Error::Unavailable {
            endpoint: endpoint.to_string(),
            reason: error.to_string(),
        },
        TransportError::Protocol => Error::Protocol("not an HTTP answer".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_checks() {
        assert!(matches!(check_locally(""), Err(Error::MalformedKey(_))));
        assert!(matches!(
            check_locally("sec_\n"),
            Err(Error::MalformedKey(_))
        ));
        assert!(check_locally("sec_0anything").is_ok());
        let bad = format!("sec_1{}", "0".repeat(59));
        assert_eq!(bad.len(), 64);
        assert!(matches!(check_locally(&bad), Err(Error::MalformedKey(_))));
    }

    #[test]
    fn answers_are_interpreted() {
        let ok = br#"{"valid":true,"key_id":"key_1","name":"n","metadata":{"a":1},"error":null}"#;
        let verified = interpret(200, ok).unwrap();
        assert_eq!(verified.key_id, "key_1");
        assert_eq!(verified.metadata["a"], 1);
        assert!(matches!(
            interpret(403, br#"{"valid":false,"error":"Invalid API key"}"#),
            Err(Error::InvalidKey)
        ));
        assert!(
            matches!(interpret(503, br#"{"valid":false,"error":"stale"}"#), Err(Error::Protocol(m)) if m.contains("stale"))
        );
        assert!(matches!(
            interpret(200, b"garbage"),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn a_429_is_rate_limited_and_nothing_else() {
        let body = br#"{"valid":false,"error":"Rate limit exceeded","key_id":"key_1","retry_after_ms":1500}"#;
        match interpret(429, body) {
            Err(Error::RateLimited {
                key_id,
                retry_after,
            }) => {
                assert_eq!(key_id, "key_1");
                assert_eq!(retry_after, Duration::from_millis(1500));
            }
            other => panic!("{other:?}"),
        }
        // The body the daemon builds with the shared wire type reads back the same way.
        let written = serde_json::to_vec(&VerifyResponse::rate_limited("key_2", 0)).unwrap();
        assert!(matches!(
            interpret(429, &written),
            Err(Error::RateLimited { key_id, retry_after }) if key_id == "key_2" && retry_after.is_zero()
        ));
    }

    #[test]
    fn a_429_that_is_not_heare_authds_is_a_protocol_error() {
        for body in [
            b"garbage".as_slice(),
            b"",
            b"<html>429 Too Many Requests</html>",
            br#"{"error":"Rate limit exceeded"}"#,
            // Missing the key id or the wait, another error text, or claiming to be valid.
            br#"{"valid":false,"error":"Rate limit exceeded","retry_after_ms":5}"#,
            br#"{"valid":false,"error":"Rate limit exceeded","key_id":"key_1"}"#,
            br#"{"valid":false,"error":"Invalid API key","key_id":"key_1","retry_after_ms":5}"#,
            br#"{"valid":true,"error":"Rate limit exceeded","key_id":"key_1","retry_after_ms":5}"#,
            br#"{"valid":true,"key_id":"key_1","name":"n","metadata":{},"error":null}"#,
            br#"{"valid":false,"error":"Rate limit exceeded","key_id":"key_1","retry_after_ms":-1}"#,
        ] {
            let result = interpret(429, body);
            assert!(
                matches!(result, Err(Error::Protocol(_))),
                "{}: {result:?}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn url_endpoints() {
        assert!(Client::builder().url("http://127.0.0.1:8080").is_ok());
        assert!(Client::builder().url("https://x").is_err());
        assert!(Client::builder().url("http://x/path").is_err());
    }
}
