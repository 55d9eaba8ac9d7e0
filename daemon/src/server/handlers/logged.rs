//! What a log line may show of a request's own text: the User-Agent (`/verify`, `/auth`) and the
//! original method and path a proxy forwards to `/auth`. Each is read here, bounded to
//! [`FIELD_CHARS`] characters so a client cannot bloat the log, and passed through
//! [`Redactor::field`] with the secret the request presents; a handler that logs another client
//! value reads it here too, so nothing from a request reaches the log around the redaction.

use crate::redact::{MARKER, Redactor};
use hyper::HeaderMap;
use hyper::header::USER_AGENT;
use std::borrow::Cow;

/// Characters of a client value a log line shows at most.
pub const FIELD_CHARS: usize = 256;

/// The User-Agent for the log (`""` when there is none); borrowed from the request unless it is
/// not UTF-8 or something in it had to be hidden.
pub fn user_agent<'h>(headers: &'h HeaderMap, redactor: &Redactor<'_>) -> Cow<'h, str> {
    match headers.get(USER_AGENT) {
        None => Cow::Borrowed(""),
        Some(value) => bounded(String::from_utf8_lossy(value.as_bytes()), redactor),
    }
}

/// The original request's method and path, as the proxy reports them (`X-Forwarded-Method` or
/// `X-Original-Method`, `X-Forwarded-Uri` or `X-Original-URI`). The path is cut at the first
/// `?`, `;` or `#`: query strings, path parameters (`/p;api_key=…`) and fragments are where
/// clients put keys. A path with `%` escapes that would have something hidden once decoded (a
/// secret spelled `%73ec_…`, or the presented secret escaped) is logged as the marker alone.
pub fn original<'h>(
    headers: &'h HeaderMap,
    redactor: &Redactor<'_>,
) -> (Option<Cow<'h, str>>, Option<Cow<'h, str>>) {
    let first = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|name| headers.get(*name).and_then(|v| v.to_str().ok()))
    };
    let method = first(["x-forwarded-method", "x-original-method"])
        .map(|method| redactor.field(method, FIELD_CHARS));
    let path = first(["x-forwarded-uri", "x-original-uri"]).map(|uri| {
        let path = uri.split(['?', ';', '#']).next().unwrap_or_default();
        if path.contains('%') && redactor.would_hide(&decoded(path)) {
            return Cow::Borrowed(MARKER);
        }
        redactor.field(path, FIELD_CHARS)
    });
    (method, path)
}

/// `path` with its `%XX` escapes decoded once (not UTF-8: with replacement characters).
fn decoded(path: &str) -> Cow<'_, str> {
    percent_encoding::percent_decode_str(path).decode_utf8_lossy()
}

/// [`Redactor::field`] of a value that may already be owned.
fn bounded<'h>(text: Cow<'h, str>, redactor: &Redactor<'_>) -> Cow<'h, str> {
    match text {
        Cow::Borrowed(text) => redactor.field(text, FIELD_CHARS),
        Cow::Owned(text) => Cow::Owned(redactor.field(&text, FIELD_CHARS).into_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    const SECRET: &str = "sec_0LoggedFieldsSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.insert(*name, HeaderValue::from_bytes(value.as_bytes()).unwrap());
        }
        headers
    }

    #[test]
    fn user_agents_are_bounded_by_characters_and_redacted() {
        let none = Redactor::new(None);
        assert_eq!(user_agent(&HeaderMap::new(), &none), "");
        let long = headers(&[("user-agent", &"a".repeat(300))]);
        assert_eq!(user_agent(&long, &none).len(), 256);
        let wide = headers(&[("user-agent", &"é".repeat(300))]);
        assert_eq!(user_agent(&wide, &none).chars().count(), 256);
        let mut lossy = HeaderMap::new();
        lossy.insert(USER_AGENT, HeaderValue::from_bytes(b"x\xffy").unwrap());
        assert_eq!(user_agent(&lossy, &none), "x\u{fffd}y");
        let leaky = headers(&[("user-agent", &format!("tool/1 ({SECRET}) hunter2hunter2"))]);
        assert_eq!(
            user_agent(&leaky, &none),
            "tool/1 ([redacted]) hunter2hunter2"
        );
        let word = Redactor::new(Some("hunter2hunter2"));
        assert_eq!(user_agent(&leaky, &word), "tool/1 ([redacted]) [redacted]");
    }

    #[test]
    fn the_original_path_loses_query_parameters_and_fragment() {
        let none = Redactor::new(None);
        for (uri, logged) in [
            ("/api/x?api_key=sec_0abc", "/api/x"),
            ("/api/x;api_key=hunter2hunter2", "/api/x"),
            ("/api/x#hunter2hunter2", "/api/x"),
            ("/a;b?c#d", "/a"),
        ] {
            let sent = headers(&[("x-original-uri", uri), ("x-forwarded-method", "DELETE")]);
            let (method, path) = original(&sent, &none);
            assert_eq!(method.as_deref(), Some("DELETE"));
            assert_eq!(path.as_deref(), Some(logged), "{uri}");
        }
        let sent = headers(&[("x-forwarded-uri", "/b"), ("x-original-uri", "/a")]);
        assert_eq!(original(&sent, &none).1.as_deref(), Some("/b"));
        assert_eq!(original(&HeaderMap::new(), &none), (None, None));
    }

    #[test]
    fn the_original_path_and_method_are_redacted_as_sent_and_decoded() {
        let word = Redactor::new(Some("hunter2 hunter2"));
        for (uri, logged) in [
            (format!("/p/{SECRET}/q"), "/p/[redacted]/q"),
            ("/p/hunter2%20hunter2".to_string(), "[redacted]"),
            (format!("/p/%73{}", &SECRET[1..]), "[redacted]"),
            ("/p/%20/x".to_string(), "/p/%20/x"),
            ("/p/%zz".to_string(), "/p/%zz"),
        ] {
            let sent = headers(&[("x-original-uri", &uri)]);
            assert_eq!(original(&sent, &word).1.as_deref(), Some(logged), "{uri}");
        }
        let sent = headers(&[("x-original-method", &format!("GET{SECRET}"))]);
        assert_eq!(original(&sent, &word).0.as_deref(), Some("GET[redacted]"));
    }
}
