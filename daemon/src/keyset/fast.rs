//! A fast path for parsing one key object of the plain form almost every key file uses.
//!
//! serde_json's derived visitor costs most of a million-key load. Key objects are flat: a few
//! members whose values are strings without escapes, `null`, `true` or `false`, plus the metadata
//! object. [`key`] parses exactly that form by hand and hands nested values (metadata, grace
//! secrets, scopes, unknown members that are numbers, objects or arrays) to serde_json at their
//! position. Every member [`FileKey`] has must have its arm here: an unknown member is skipped.
//! Anything else — an escape or a control character in a string, bytes that are not UTF-8, a
//! repeated or mistyped member, a missing id, a syntax error — makes it answer `None`, and the
//! caller parses the object with serde_json, which then decides (and reports any error). So the
//! fast path only ever returns what serde_json would have returned for the same bytes; a test
//! checks that on many generated objects.

use super::chunk::{FileKey, GraceSecret};
use super::scan::{parse_one, skip_whitespace};
use serde::de::IgnoredAny;
use serde_json::value::RawValue;
use std::borrow::Cow;

/// The key object starting at `pos`, and the position after it; `None`: let serde_json parse it.
pub(super) fn key(json: &[u8], pos: usize) -> Option<(FileKey<'_>, usize)> {
    if json.get(pos) != Some(&b'{') {
        return None;
    }
    let mut at = skip_whitespace(json, pos + 1);
    let mut fields = Fields::default();
    if json.get(at) == Some(&b'}') {
        return None; // no id: serde_json reports it
    }
    loop {
        let (name, after) = plain_string(json, at)?;
        at = skip_whitespace(json, after);
        if json.get(at) != Some(&b':') {
            return None;
        }
        at = skip_whitespace(json, at + 1);
        at = match name {
            "id" => string_field(json, at, &mut fields.id)?,
            "secret" => string_field(json, at, &mut fields.secret)?,
            "secret_hash" => string_field(json, at, &mut fields.secret_hash)?,
            "name" => string_field(json, at, &mut fields.name)?,
            "expires_at" => string_field(json, at, &mut fields.expires_at)?,
            "metadata" => {
                let (value, after) = match literal(json, at) {
                    Some((Literal::Null, after)) => (None, after),
                    _ => {
                        let (raw, after) = parse_one::<&RawValue>(json, at).ok()?;
                        (Some(raw), after)
                    }
                };
                set_once(&mut fields.metadata, value)?;
                after
            }
            "disabled" => {
                let (value, after) = match literal(json, at)? {
                    (Literal::Null, after) => (None, after),
                    (Literal::True, after) => (Some(true), after),
                    (Literal::False, after) => (Some(false), after),
                };
                set_once(&mut fields.disabled, value)?;
                after
            }
            "grace_secrets" => {
                let (value, after) = match literal(json, at) {
                    Some((Literal::Null, after)) => (None, after),
                    _ => {
                        let (list, after) = parse_one::<Vec<GraceSecret<'_>>>(json, at).ok()?;
                        (Some(list), after)
                    }
                };
                set_once(&mut fields.grace_secrets, value)?;
                after
            }
            "scopes" => {
                let (value, after) = match literal(json, at) {
                    Some((Literal::Null, after)) => (None, after),
                    _ => {
                        let (list, after) = parse_one::<Vec<Cow<'_, str>>>(json, at).ok()?;
                        (Some(list), after)
                    }
                };
                set_once(&mut fields.scopes, value)?;
                after
            }
            "rate_limit" => {
                let (value, after) = match literal(json, at) {
                    Some((Literal::Null, after)) => (None, after),
                    _ => {
                        let (raw, after) = parse_one::<&RawValue>(json, at).ok()?;
                        (Some(raw), after)
                    }
                };
                set_once(&mut fields.rate_limit, value)?;
                after
            }
            _ => skip_value(json, at)?,
        };
        at = skip_whitespace(json, at);
        match json.get(at) {
            Some(b',') => at = skip_whitespace(json, at + 1),
            Some(b'}') => break,
            _ => return None,
        }
    }
    let key = FileKey {
        id: Cow::Borrowed(fields.id??),
        secret: fields.secret.flatten().map(Cow::Borrowed),
        secret_hash: fields.secret_hash.flatten().map(Cow::Borrowed),
        name: fields.name.flatten().map(Cow::Borrowed),
        expires_at: fields.expires_at.flatten().map(Cow::Borrowed),
        metadata: fields.metadata.flatten(),
        disabled: fields.disabled.flatten(),
        grace_secrets: fields.grace_secrets.flatten(),
        scopes: fields.scopes.flatten(),
        rate_limit: fields.rate_limit.flatten(),
    };
    Some((key, at + 1))
}

/// The members seen so far: `None` not seen, `Some(None)` seen as `null`.
#[derive(Default)]
struct Fields<'a> {
    id: Option<Option<&'a str>>,
    secret: Option<Option<&'a str>>,
    secret_hash: Option<Option<&'a str>>,
    name: Option<Option<&'a str>>,
    expires_at: Option<Option<&'a str>>,
    metadata: Option<Option<&'a RawValue>>,
    disabled: Option<Option<bool>>,
    grace_secrets: Option<Option<Vec<GraceSecret<'a>>>>,
    scopes: Option<Option<Vec<Cow<'a, str>>>>,
    rate_limit: Option<Option<&'a RawValue>>,
}

/// Records a member's value; `None` when the member was already seen (serde_json refuses a
/// repeated member of a struct).
fn set_once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// A string member (`null` allowed); returns the position after the value.
fn string_field<'a>(
    json: &'a [u8],
    at: usize,
    slot: &mut Option<Option<&'a str>>,
) -> Option<usize> {
    let (value, after) = match literal(json, at) {
        Some((Literal::Null, after)) => (None, after),
        Some(_) => return None,
        None => {
            let (text, after) = plain_string(json, at)?;
            (Some(text), after)
        }
    };
    set_once(slot, value)?;
    Some(after)
}

/// Skips a member's value: strings and literals here, anything else checked by serde_json.
fn skip_value(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => plain_string(json, at).map(|(_, after)| after),
        b'n' | b't' | b'f' => literal(json, at).map(|(_, after)| after),
        _ => parse_one::<IgnoredAny>(json, at)
            .ok()
            .map(|(_, after)| after),
    }
}

enum Literal {
    Null,
    True,
    False,
}

/// `null`, `true` or `false` at `at`. What follows is checked by the caller (a `,` or `}`).
fn literal(json: &[u8], at: usize) -> Option<(Literal, usize)> {
    let rest = json.get(at..)?;
    if rest.starts_with(b"null") {
        Some((Literal::Null, at + 4))
    } else if rest.starts_with(b"true") {
        Some((Literal::True, at + 4))
    } else if rest.starts_with(b"false") {
        Some((Literal::False, at + 5))
    } else {
        None
    }
}

/// A string at `at` with no escape and no control character, as UTF-8 text, and the position
/// after its closing quote.
fn plain_string(json: &[u8], at: usize) -> Option<(&str, usize)> {
    if json.get(at) != Some(&b'"') {
        return None;
    }
    let start = at + 1;
    let rest = json.get(start..)?;
    let length = first_special(rest);
    if rest.get(length) != Some(&b'"') {
        return None;
    }
    let text = std::str::from_utf8(&rest[..length]).ok()?;
    Some((text, start + length + 1))
}

/// The index of the first `"`, `\` or control character in `bytes` (its length if none), looked
/// for 8 bytes at a time.
fn first_special(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGH_BITS;
    let mut at = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let found = (word.wrapping_sub(ONES * 0x20) & !word & HIGH_BITS)
            | zero_byte(word ^ (ONES * u64::from(b'"')))
            | zero_byte(word ^ (ONES * u64::from(b'\\')));
        if found != 0 {
            break;
        }
        at += 8;
    }
    at + bytes[at..]
        .iter()
        .position(|&byte| byte == b'"' || byte == b'\\' || byte < 0x20)
        .unwrap_or(bytes.len() - at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the fast path returned must be what serde_json returns.
    fn same_as_serde(json: &[u8]) -> bool {
        let serde = parse_one::<FileKey<'_>>(json, 0);
        let Some((fast, end)) = key(json, 0) else {
            return false;
        };
        let Ok((slow, slow_end)) = serde else {
            panic!(
                "fast path accepted what serde refuses: {}",
                String::from_utf8_lossy(json)
            );
        };
        fn raw(value: Option<&RawValue>) -> Option<&str> {
            value.map(RawValue::get)
        }
        assert_eq!(end, slow_end, "{}", String::from_utf8_lossy(json));
        assert_eq!(fast.id, slow.id);
        assert_eq!(fast.secret, slow.secret);
        assert_eq!(fast.secret_hash, slow.secret_hash);
        assert_eq!(fast.name, slow.name);
        assert_eq!(fast.expires_at, slow.expires_at);
        assert_eq!(raw(fast.metadata), raw(slow.metadata));
        assert_eq!(fast.disabled, slow.disabled);
        assert_eq!(fast.grace_secrets, slow.grace_secrets);
        assert_eq!(fast.scopes, slow.scopes);
        assert_eq!(raw(fast.rate_limit), raw(slow.rate_limit));
        true
    }

    #[test]
    fn plain_keys_take_the_fast_path() {
        for json in [
            r#"{"id":"k","secret":"s"}"#,
            "{\n  \"id\": \"key_0abc\",\n  \"secret\": \"sec_0xyz\",\n  \"name\": \"svc-1\",\n  \"secret_type\": \"shared_secret\",\n  \"created_at\": \"2025-01-20T10:30:00Z\",\n  \"updated_at\": null,\n  \"expires_at\": null,\n  \"metadata\": {\n    \"env\": \"prod\",\n    \"team\": 3\n  }\n}",
            r#"{"id":"k","secret_hash":"sha256:00","disabled":true,"grace_secrets":[{"secret_hash":"x","expires_at":"y"}],"n":-1.5e3,"o":{"a":[1,{}]},"b":false,"名前":"é😀"}"#,
            r#"{"id":"k","metadata":null,"grace_secrets":null,"disabled":null,"name":null}"#,
            r#"{"id":"k","secret":"s","scopes":["read","write:all"]}"#,
            r#"{"id":"k","scopes":["a\u0062"],"secret_hash":"sha256:00"}"#,
            r#"{"id":"k","scopes":null}"#,
            r#"{"id":"k","scopes":[]}"#,
            r#"{"id":"k","rate_limit":{"requests":5,"per":"1s"},"secret":"s"}"#,
            r#"{"id":"k","rate_limit":null}"#,
            r#"{"id":"k","rate_limit":"100/1m"}"#,
        ] {
            assert!(same_as_serde(json.as_bytes()), "{json}");
        }
    }

    #[test]
    fn anything_unusual_is_left_to_serde() {
        for json in [
            r#"{"id":"k\n","secret":"s"}"#,
            r#"{"id":"k\"q","secret":"s"}"#,
            "{\"id\":\"k\u{1}\",\"secret\":\"s\"}",
            r#"{"id":"k","id":"k2"}"#,
            r#"{"id":null}"#,
            r#"{"id":5}"#,
            r#"{"secret":"s"}"#,
            r#"{}"#,
            r#"{"id":"k",}"#,
            r#"{"id":"k" "secret":"s"}"#,
            r#"{"id":"k","disabled":"yes"}"#,
            r#"{"id":"k","disabled":nul}"#,
            r#"{"id":"k","x":nullx}"#,
            r#"{"id":"k","x":tru}"#,
            r#"{"id":"k","x":01}"#,
            r#"{"id":"k","grace_secrets":[{"secret_hash":"x"}]}"#,
            r#"{"id":"k","metadata":{"a":}}"#,
            r#"{"id":"k""#,
            r#"{"id":"k"#,
            r#"{"i\u0064":"k"}"#,
            r#"{"id":"k","scopes":"read"}"#,
            r#"{"id":"k","scopes":[1]}"#,
            r#"{"id":"k","scopes":["a"],"scopes":["b"]}"#,
            r#"{"id":"k","scopes":["a"}"#,
        ] {
            assert!(!same_as_serde(json.as_bytes()), "{json}");
        }
        let invalid_utf8 = b"{\"id\":\"k\xff\",\"secret\":\"s\"}";
        assert!(!same_as_serde(invalid_utf8));
        let ignored_invalid_utf8 = b"{\"id\":\"k\",\"x\":\"\xff\"}";
        assert!(!same_as_serde(ignored_invalid_utf8));
    }

    #[test]
    fn every_cut_and_every_changed_byte_agrees_with_serde() {
        let base = "{ \"id\" : \"key_1\", \"secret\":\"sec_abcdefghijklmnop\",\"name\":\"n é\",\"x\":[1,\"}\"],\"metadata\":{\"a\":\"b\"},\"disabled\":false,\"expires_at\":null,\"scopes\":[\"read\"] }";
        let replacements = [
            b'"', b'\\', b'}', b'{', b',', b':', b' ', b'n', b'0', 0x01, 0xff,
        ];
        for cut in 0..=base.len() {
            let _ = same_as_serde(&base.as_bytes()[..cut]);
        }
        for at in 0..base.len() {
            for &byte in &replacements {
                let mut changed = base.as_bytes().to_vec();
                changed[at] = byte;
                let _ = same_as_serde(&changed);
            }
        }
    }

    #[test]
    fn specials_are_found_at_every_position() {
        for length in 0..24 {
            for special in [b'"', b'\\', 0x00, 0x1f] {
                for position in 0..length {
                    let mut bytes = vec![b'a'; length];
                    bytes[position] = special;
                    assert_eq!(first_special(&bytes), position);
                }
                assert_eq!(first_special(&vec![0xc3; length]), length);
            }
        }
    }
}
