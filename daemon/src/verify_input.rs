//! The secret a `POST /verify` request presents, taken from its raw bytes.
//!
//! A client sends the secret either as the JSON body `{"api_key": "…"}` or, with an empty body, as
//! `Authorization: Bearer …`. This module is that choice and that parse and nothing else: a pure
//! function of the header's bytes and the body's bytes, with no I/O, so the server's handler and
//! the fuzz targets (`daemon/fuzz`) exercise exactly the same code on hostile input. Errors carry
//! no text from the request, because the request holds a secret.

use heare_auth_client::wire::VerifyRequest;
use std::borrow::Cow;

/// The request carries no usable secret: the body is not `{"api_key": "<string>"}` and there is no
/// bearer token standing in for an empty body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the body is not a JSON object with an api_key string")]
pub struct BadVerifyBody;

/// What a verify request presents: the secret, and the scopes the key must hold.
#[derive(Debug, PartialEq, Eq)]
pub struct Presented<'a> {
    pub secret: Cow<'a, str>,
    /// `require_scopes` of the body, each a scope token; empty when there are none.
    pub require_scopes: Vec<String>,
}

/// The secret of a verify request: the bearer token of `authorization` (the raw header value) when
/// the body is empty or only whitespace, else the body's `api_key`.
pub fn presented_secret<'a>(
    authorization: Option<&[u8]>,
    body: &'a [u8],
) -> Result<Cow<'a, str>, BadVerifyBody> {
    presented(authorization, body).map(|presented| presented.secret)
}

/// [`presented_secret`] with the body's `require_scopes` (a list of scope tokens, or absent).
pub fn presented<'a>(
    authorization: Option<&[u8]>,
    body: &'a [u8],
) -> Result<Presented<'a>, BadVerifyBody> {
    if body.trim_ascii().is_empty()
        && let Some(token) = authorization.and_then(bearer_token)
    {
        return Ok(Presented {
            secret: Cow::Owned(token.to_string()),
            require_scopes: Vec::new(),
        });
    }
    // Checked as a whole first: serde skips ignored fields without validating their UTF-8, and a
    // body that is not UTF-8 is not JSON (the Python service answers 422 too).
    let body = std::str::from_utf8(body).map_err(|_| BadVerifyBody)?;
    // serde reads a struct from a JSON array too (`["sec_…"]`); the Python service answers 422.
    if !body.trim_ascii_start().starts_with('{') {
        return Err(BadVerifyBody);
    }
    let request = serde_json::from_str::<VerifyRequest<'a>>(body).map_err(|_| BadVerifyBody)?;
    let require_scopes: Vec<String> = request
        .require_scopes
        .unwrap_or_default()
        .into_iter()
        .map(Cow::into_owned)
        .collect();
    if !require_scopes
        .iter()
        .all(|scope| crate::keyset::is_scope_token(scope))
    {
        return Err(BadVerifyBody);
    }
    Ok(Presented {
        secret: request.api_key,
        require_scopes,
    })
}

/// The token of an `Authorization: Bearer <token>` header value (scheme case-insensitive, token
/// trimmed, never empty). A value with bytes outside visible ASCII and tab has no token, as
/// `HeaderValue::to_str` would refuse it.
pub fn bearer_token(value: &[u8]) -> Option<&str> {
    if !value.iter().all(|&b| b == b'\t' || (32..127).contains(&b)) {
        return None;
    }
    let value = std::str::from_utf8(value).ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_required() {
        assert_eq!(bearer_token(b"bearer sec_abc"), Some("sec_abc"));
        assert_eq!(bearer_token(b"  Bearer   sec_abc \t"), Some("sec_abc"));
        assert_eq!(bearer_token(b"Basic dXNlcjpwYXNz"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert_eq!(bearer_token(b"Bearer sec\x00abc"), None);
        assert_eq!(bearer_token("Bearer sec_é".as_bytes()), None);
    }

    #[test]
    fn required_scopes_come_from_the_body_and_must_be_tokens() {
        let body = br#"{"api_key": "k", "require_scopes": ["read", "write:all"]}"#;
        let found = presented(None, body).unwrap();
        assert_eq!(found.require_scopes, ["read", "write:all"]);
        assert_eq!(
            presented(None, br#"{"api_key": "k"}"#)
                .unwrap()
                .require_scopes,
            Vec::<String>::new()
        );
        for bad in [
            &br#"{"api_key": "k", "require_scopes": ["two words"]}"#[..],
            br#"{"api_key": "k", "require_scopes": [""]}"#,
            br#"{"api_key": "k", "require_scopes": "read"}"#,
            br#"{"api_key": "k", "require_scopes": [5]}"#,
        ] {
            assert_eq!(presented(None, bad), Err(BadVerifyBody));
        }
    }

    #[test]
    fn body_wins_over_bearer_unless_blank() {
        let body = br#"{"api_key": "from_body"}"#;
        assert_eq!(
            presented_secret(Some(b"Bearer from_header"), body).unwrap(),
            "from_body"
        );
        assert_eq!(
            presented_secret(Some(b"Bearer from_header"), b" \r\n").unwrap(),
            "from_header"
        );
        assert_eq!(presented_secret(None, b""), Err(BadVerifyBody));
        assert_eq!(presented_secret(Some(b"Basic x"), b""), Err(BadVerifyBody));
        assert_eq!(
            presented_secret(None, br#"{"api_key": 5}"#),
            Err(BadVerifyBody)
        );
        assert_eq!(
            presented_secret(None, br#" ["sec_in_an_array"]"#),
            Err(BadVerifyBody)
        );
        assert_eq!(
            presented_secret(None, b" \n{\"api_key\": \"spaced\"}").unwrap(),
            "spaced"
        );
        assert_eq!(
            presented_secret(None, br#"{"api_key": "a\u0000b"}"#).unwrap(),
            "a\0b"
        );
        assert_eq!(
            presented_secret(None, b"{\"api_key\": \"x\", \"other\": \"\x9a\"}"),
            Err(BadVerifyBody),
            "invalid UTF-8 in a field the daemon ignores"
        );
    }
}
