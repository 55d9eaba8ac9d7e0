//! What a log line may show of a request's own text: the User-Agent (`/verify`, `/auth`) and the
//! original method and path a proxy forwards to `/auth`. Each is read here and passed through
//! one function, [`fit`]. A value holding a `%` is percent-decoded again and again until nothing
//! changes (at most [`DECODE_ROUNDS`] times) and logged as the marker alone if the redactor would
//! hide anything at any round (a secret spelled `%73ec_…`, escaped twice as `%2573ec_…` or
//! `sec%255F…`, the presented secret escaped) or if an escape is still left after the last round.
//! Otherwise the value as sent goes through [`Redactor::field`] with the secret the request
//! presents, bounded to [`FIELD_CHARS`] characters so a client cannot bloat the log. Decoded
//! bytes that are not UTF-8 read as U+FFFD, never as ASCII: an overlong `%C1%B3ec_…` hides
//! nothing once decoded, but the secret's body after it is a long base62 run, hidden as sent
//! (an imported word spelled so is not). A handler that logs another client value reads it here
//! too, so nothing from a request reaches the log around the redaction. A value without `%`
//! costs no decoding, and one with nothing to hide no allocation (unless it has escapes to
//! decode).

use crate::redact::{MARKER, Redactor};
use hyper::HeaderMap;
use hyper::header::USER_AGENT;
use percent_encoding::percent_decode;
use std::borrow::Cow;

/// Characters of a client value a log line shows at most.
pub const FIELD_CHARS: usize = 256;

/// How many times a value is percent-decoded at most to look for a secret in it.
pub const DECODE_ROUNDS: usize = 3;

/// The User-Agent for the log (`""` when there is none); borrowed from the request unless it is
/// not UTF-8 or something in it had to be hidden.
pub fn user_agent<'h>(headers: &'h HeaderMap, redactor: &Redactor<'_>) -> Cow<'h, str> {
    match headers.get(USER_AGENT) {
        None => Cow::Borrowed(""),
        Some(value) => fit(String::from_utf8_lossy(value.as_bytes()), redactor),
    }
}

/// The original request's method and path, as the proxy reports them (`X-Forwarded-Method` or
/// `X-Original-Method`, `X-Forwarded-Uri` or `X-Original-URI`). The path is cut at the first
/// `?`, `;` or `#`: query strings, path parameters (`/p;api_key=…`) and fragments are where
/// clients put keys.
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
        .map(|method| fit(Cow::Borrowed(method), redactor));
    let path = first(["x-forwarded-uri", "x-original-uri"]).map(|uri| {
        let path = uri.split(['?', ';', '#']).next().unwrap_or_default();
        fit(Cow::Borrowed(path), redactor)
    });
    (method, path)
}

/// A client value fit for the log (see the module's paragraph): the marker alone when its
/// escapes would reveal something, else [`Redactor::field`] of it as sent.
fn fit<'h>(text: Cow<'h, str>, redactor: &Redactor<'_>) -> Cow<'h, str> {
    if text.contains('%') && escapes_hide(&text, redactor) {
        return Cow::Borrowed(MARKER);
    }
    match text {
        Cow::Borrowed(text) => redactor.field(text, FIELD_CHARS),
        Cow::Owned(text) => Cow::Owned(redactor.field(&text, FIELD_CHARS).into_owned()),
    }
}

/// Whether `text`, percent-decoded up to [`DECODE_ROUNDS`] times (each round's bytes read as
/// UTF-8 with replacement characters), has something to hide at any round, or still holds an
/// escape after the last.
fn escapes_hide(text: &str, redactor: &Redactor<'_>) -> bool {
    let mut current = Cow::Borrowed(text.as_bytes());
    for _ in 0..DECODE_ROUNDS {
        let Cow::Owned(decoded) = Cow::from(percent_decode(&current)) else {
            return false;
        };
        if redactor.would_hide(&String::from_utf8_lossy(&decoded)) {
            return true;
        }
        current = Cow::Owned(decoded);
    }
    matches!(Cow::from(percent_decode(&current)), Cow::Owned(_))
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
        let long = headers(&[("user-agent", &"ab ".repeat(100))]);
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

    #[test]
    fn escapes_are_decoded_in_every_field_until_nothing_changes() {
        let word = Redactor::new(Some("hunter2 hunter2"));
        let body = &SECRET[4..];
        let marked = |name: &'static str, value: &str| {
            let sent = headers(&[(name, value)]);
            let logged = match name {
                "user-agent" => user_agent(&sent, &word),
                "x-forwarded-method" => original(&sent, &word).0.unwrap(),
                _ => original(&sent, &word).1.unwrap(),
            };
            logged == MARKER
        };
        for (name, value) in [
            ("x-original-uri", format!("/p/%2573ec_{body}")),
            ("x-original-uri", format!("/p/sec%255F{body}")),
            ("x-original-uri", format!("/p/%C1%B3ec_{body}")),
            ("x-original-uri", "/p/hunter2%252520hunter2".to_string()),
            ("user-agent", format!("tool (sec%5F{body})")),
            ("user-agent", "tool hunter2%20hunter2".to_string()),
            ("x-forwarded-method", format!("%73ec_{body}")),
            ("x-forwarded-method", "%2573ec_0".to_string()),
            // Escaped four times: still an escape after three rounds.
            ("x-original-uri", "/p/%2525252541".to_string()),
        ] {
            assert!(marked(name, &value), "{name}: {value}");
        }
        for (name, value) in [
            ("x-original-uri", "/p/%252541"),
            ("x-original-uri", "/100%25"),
            ("user-agent", "tool/1 (50%)"),
            ("user-agent", "tool/1 (%7e)"),
            ("x-forwarded-method", "GET%"),
        ] {
            assert!(!marked(name, value), "{name}: {value}");
        }
    }

    #[test]
    fn a_value_with_nothing_to_decode_or_hide_is_borrowed() {
        let word = Redactor::new(Some("hunter2 hunter2"));
        for value in ["/orders/7", "/100%", "/a%zz", "/p/key_0AbCdEfGh0123456789"] {
            let sent = headers(&[("x-original-uri", value), ("x-forwarded-method", value)]);
            let (method, path) = original(&sent, &word);
            assert!(
                matches!(method, Some(Cow::Borrowed(m)) if m == value),
                "{value}"
            );
            assert!(
                matches!(path, Some(Cow::Borrowed(p)) if p == value),
                "{value}"
            );
        }
    }
}
