//! What can go wrong when verifying a key, typed by what the caller should do. No variant holds
//! the secret, so neither `Display` nor `Debug` of an error can reveal it.

use std::path::PathBuf;
use std::time::Duration;

/// Why a verification did not return a key.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The daemon does not know the secret, or the key is expired, disabled or rotated out.
    #[error("invalid API key")]
    InvalidKey,
    /// The secret cannot be a valid key (empty, too long, control characters, or a heare-authctl
    /// secret whose checksum does not match — a typo or a truncation); refused without asking
    /// the daemon.
    #[error("malformed API key: {0}")]
    MalformedKey(&'static str),
    /// Nothing to talk to: no socket, connection refused, or the TCP address does not answer.
    #[error(
        "heare-authd is unavailable at {endpoint}: {reason} (is it running? systemctl status heare-authd)"
    )]
    Unavailable {
        /// The socket path or URL tried.
        endpoint: String,
        /// What the operating system said.
        reason: String,
    },
    /// The socket exists but this process may not connect to it.
    #[error(
        "permission denied on {0}: add this process's user to the socket's group (usually heare-auth-clients) and start a new session"
    )]
    PermissionDenied(PathBuf),
    /// The daemon did not answer in time: connecting, sending and reading together took longer
    /// than the client's timeout (one deadline for all three).
    #[error("heare-authd did not answer within {0:?}")]
    Timeout(Duration),
    /// The process serving the socket does not run as a uid the client was told to trust
    /// ([`crate::ClientBuilder::server_uids`]), or its credentials cannot be checked (TCP). Nothing
    /// was sent to it.
    #[error("the server at {endpoint} is not trusted to be heare-authd: {}", untrusted_reason(*.uid))]
    UntrustedServer {
        /// The socket path or URL.
        endpoint: String,
        /// The server's uid (from `SO_PEERCRED`); `None` when it cannot be known (TCP).
        uid: Option<u32>,
    },
    /// The secret belongs to a key that is over its rate limit (HTTP 429): refused for now, and
    /// reported by the daemon neither as valid nor as invalid. Asking again before `retry_after`
    /// has passed is refused the same way.
    #[error(
        "API key {key_id} is over its rate limit: retry in {}",
        retry_text(*.retry_after)
    )]
    RateLimited {
        /// The key's id (`key_…`), never the secret.
        key_id: String,
        /// How long until the key may be verified again (the daemon's `retry_after_ms`).
        retry_after: Duration,
    },
    /// The daemon answered, but not as expected (another program on the socket, a version
    /// mismatch, or the daemon refusing to verify, e.g. 503 when its key set is too stale).
    #[error("unexpected answer from heare-authd: {0}")]
    Protocol(String),
}

fn untrusted_reason(uid: Option<u32>) -> String {
    match uid {
        Some(uid) => format!("it runs as uid {uid}, not one of the trusted uids"),
        None => "its credentials cannot be checked over TCP".into(),
    }
}

/// A wait as people read it: `250 ms`, `1.5 s`, `2 min 5 s`, `1 h 0 min 0 s` (whole seconds,
/// rounded up, from a minute on).
fn retry_text(wait: Duration) -> String {
    let ms = wait.as_millis();
    if ms < 1000 {
        return format!("{ms} ms");
    }
    if ms < 60_000 {
        return format!("{:.1} s", wait.as_secs_f64());
    }
    let seconds = ms.div_ceil(1000);
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours == 0 {
        format!("{minutes} min {seconds} s")
    } else {
        format!("{hours} h {minutes} min {seconds} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limited_says_which_key_and_when() {
        let error = Error::RateLimited {
            key_id: "key_1".into(),
            retry_after: Duration::from_millis(3_599_001),
        };
        assert_eq!(
            error.to_string(),
            "API key key_1 is over its rate limit: retry in 1 h 0 min 0 s"
        );
        for (ms, text) in [
            (0, "0 ms"),
            (250, "250 ms"),
            (1500, "1.5 s"),
            (60_000, "1 min 0 s"),
            (125_000, "2 min 5 s"),
            (3_661_000, "1 h 1 min 1 s"),
        ] {
            assert_eq!(retry_text(Duration::from_millis(ms)), text, "{ms}");
        }
    }
}
