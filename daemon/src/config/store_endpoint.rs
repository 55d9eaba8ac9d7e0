//! Whether the S3 (and SQS) endpoint the daemon talks to could be someone else.
//!
//! An endpoint override (`[s3] endpoint`, `--s3-endpoint`, what the AWS SDK resolved from its
//! environment — `AWS_ENDPOINT_URL`, a profile's `endpoint_url` — and the service-specific
//! `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL_SQS`) in plain `http://` (in any letter case) is
//! authenticated by nothing: off this host anyone on the path can answer, and on this host any
//! local user can bind an unprivileged loopback port while the real server is down. Without a
//! storage secret the daemon then serves whatever key set that answer holds. With a storage
//! secret a forged body is refused (it does not decrypt), so only then is plain http harmless to
//! the key set. This module only finds such endpoints; the daemon warns about each at start
//! (`store_endpoint_unprotected`).

use super::StoreSettings;
use crate::ports;

/// The AWS SDK's environment variables that override where S3 and SQS calls go.
const ENDPOINT_VARIABLES: [&str; 3] = [
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_ENDPOINT_URL_SQS",
];

/// The endpoint overrides in effect that anyone but the real server could answer, each as
/// `http://host[:port]` (never a user or password the URL may hold) with why; empty when a
/// storage secret protects the key object or no override is plain http.
/// `resolved` is what the store's client resolved ([`heare_auth_store::KeyStore::endpoint`]).
pub fn unprotected(
    settings: &StoreSettings,
    resolved: Option<String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Vec<(String, &'static str)> {
    if settings.storage_secret.is_some() {
        return Vec::new();
    }
    let configured = settings.s3.endpoint.clone().into_iter().chain(resolved);
    let from_env = ENDPOINT_VARIABLES.iter().filter_map(|name| env(name));
    let mut found: Vec<(String, &'static str)> = Vec::new();
    for endpoint in configured.chain(from_env) {
        let Some(authority) = plain_http_authority(&endpoint) else {
            continue;
        };
        let shown = format!("http://{authority}");
        if let Some(why) = why_unprotected(authority)
            && !found.iter().any(|(seen, _)| *seen == shown)
        {
            found.push((shown, why));
        }
    }
    found
}

/// The `host[:port]` of a plain `http://` URL, without any user information; `None` for any
/// other scheme.
fn plain_http_authority(endpoint: &str) -> Option<&str> {
    let endpoint = endpoint.trim();
    let scheme = endpoint.get(..7)?;
    let rest = scheme
        .eq_ignore_ascii_case("http://")
        .then(|| &endpoint[7..])?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    authority.rsplit('@').next()
}

/// Why a plain-http `host[:port]` is not authenticated, or `None` for a loopback port only root
/// can bind.
fn why_unprotected(authority: &str) -> Option<&'static str> {
    let (host, port) = split_port(authority);
    let port = port.unwrap_or(80);
    match ports::is_loopback_host(host) {
        true if ports::is_privileged(port) => None,
        true => Some("plain http on a loopback port any local user can bind"),
        false => Some("plain http off this host"),
    }
}

/// `host` and its port from `host[:port]` (IPv6 in brackets); a port that does not parse counts
/// as an unprivileged one.
fn split_port(authority: &str) -> (&str, Option<u16>) {
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => match v6.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (v6, None),
        },
        None => match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        },
    };
    (host, port.map(|p| p.parse().unwrap_or(u16::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_http_is_unprotected_unless_on_a_privileged_loopback_port() {
        for endpoint in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9000/bucket",
            "http://user@127.0.0.1:9000",
            "http://127.0.0.1:nonsense",
            "http://minio.internal",
            "http://minio.internal:9000",
            "http://10.0.0.5:80",
            "HTTP://127.0.0.1:9321",
            "hTtP://localhost:9322/",
        ] {
            let authority = plain_http_authority(endpoint).unwrap();
            assert!(!authority.contains('@'), "{authority}");
            assert!(why_unprotected(authority).is_some(), "{endpoint}");
        }
        for endpoint in [
            "https://s3.example.com",
            "https://127.0.0.1:9000",
            "HTTPS://x",
            "http:/",
        ] {
            assert!(plain_http_authority(endpoint).is_none(), "{endpoint}");
        }
        for authority in ["127.0.0.1", "[::1]"] {
            assert_eq!(
                why_unprotected(authority).is_none(),
                ports::is_privileged(80)
            );
        }
        for port in [22, 443, 1000] {
            let privileged = format!("127.0.0.1:{port}");
            assert_eq!(
                why_unprotected(&privileged).is_none(),
                ports::is_privileged(port)
            );
        }
    }
}
