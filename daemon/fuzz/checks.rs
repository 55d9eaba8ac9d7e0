//! What must hold for any input to the four parsers that face hostile bytes, written once for
//! both harnesses: the cargo-fuzz targets (`fuzz_targets/*.rs`) and the proptest harness that runs
//! under plain `cargo test` (`daemon/tests/properties.rs`), which include this file by path.
//!
//! Each check takes raw bytes, runs the real parser on them and panics when an invariant breaks:
//! - [`keyfile`]: the key-file loader (`KeySet::from_json`), the editor's view of the same file
//!   (`keyfile::Document`) and the `HEARE_ENCRYPTED_V1` framing (`codec`). The two readers must
//!   agree on every file both accept (same keys, same verdicts, metadata intact), a rewrite by
//!   heare-authctl must not change what the daemon serves, errors name key ids but never a
//!   secret, and the encrypted form round-trips and refuses a missing or wrong secret.
//! - [`verify_body`]: `verify_input::presented_secret`, the bytes of a verify request's
//!   `Authorization` header and body; what it returns is what the body or header really said.
//! - [`secret_format`]: `token::secret_shape` against an independent model of the generation-1
//!   format, and the checksum catching every single-character change and adjacent swap.
//!
//! - [`notify_event`]: `change_queue::event::classify`, a notify queue message's body (anyone
//!   allowed to send to the queue writes it): never a panic, the same answer every time, and an
//!   event for the key object still counts inside an SNS envelope.
//! - [`redact`]: `redact::Redactor::field`, a client's text (a User-Agent, a forwarded path) and
//!   the secret its request presents, against a naive model (every byte covered by an occurrence,
//!   a `sec_` run or a run of at least 40 base62 characters marked, one marker per covered run):
//!   the result never holds the secret, a secret-shaped run or such a long run, stays within its
//!   bound, and is borrowed when nothing was hidden.
//!
//! The first input byte selects a mode where a target has several, so one fuzz corpus covers all.

use heare_auth_client::token::{self, CHECKSUM_LEN, SECRET_LEN, SecretShape};
use heare_auth_store::codec::{self, CodecError, StorageSecret};
use heare_auth_store::keyfile::{Document, StoredDocument};
use heare_authd::change_queue::event::{self, Notice};
use heare_authd::keyset::{KeySet, LoadError, SecretDigest, SkippedKey, Verdict};
use heare_authd::redact::{MARKER, MIN_BARE_BODY, MIN_MARKED_BYTES, Redactor};
use heare_authd::verify_input::{BadVerifyBody, bearer_token, presented_secret};
use serde_json::Value;
use std::borrow::Cow;

/// The `now` every verdict is taken at: 2025-06-15T15:06:40Z.
pub const NOW: i64 = 1_750_000_000_000;

/// The storage secret the key-file check encrypts with.
pub const STORAGE_SECRET: &str = "fuzz-storage-secret";

/// Key-file bytes, in one of three modes chosen by the first byte: 0 a stored body (plain JSON, or
/// `HEARE_ENCRYPTED_V1:` + whatever follows), 1 the rest encrypted under [`STORAGE_SECRET`] first,
/// 2 the rest as a Fernet token after the header.
pub fn keyfile(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let secret = StorageSecret::new(STORAGE_SECRET);
    match mode % 3 {
        0 => {
            if let Ok(json) = codec::decode(rest, None) {
                check_key_file(&json);
            }
            let with_secret = codec::decode(rest, Some(&secret));
            if codec::is_encrypted(rest) {
                assert!(with_secret.is_err(), "a forged token decrypted");
            } else {
                assert_eq!(
                    with_secret.unwrap_err(),
                    CodecError::NotEncrypted,
                    "a plain body is refused when a storage secret is configured"
                );
            }
        }
        1 => check_encrypted_round_trip(rest, &secret),
        _ => {
            let mut body = codec::ENCRYPTED_HEADER.to_vec();
            body.extend_from_slice(rest);
            let decoded = codec::decode(&body, Some(&secret));
            assert!(decoded.is_err(), "a token not made with the key decrypted");
            assert_eq!(
                codec::decode(&body, None).unwrap_err(),
                CodecError::SecretMissing
            );
            assert!(StoredDocument::decode(&body, Some(&secret)).is_err());
        }
    }
}

fn check_encrypted_round_trip(json: &[u8], secret: &StorageSecret) {
    let body = codec::encode_encrypted(json, secret);
    assert!(codec::is_encrypted(&body));
    assert_eq!(
        codec::decode(&body, Some(secret)).unwrap().as_ref(),
        json,
        "decrypting what was encrypted gives it back"
    );
    assert_eq!(
        codec::decode(&body, None).unwrap_err(),
        CodecError::SecretMissing
    );
    assert_eq!(
        codec::decode(&body, Some(&StorageSecret::new("another secret"))).unwrap_err(),
        CodecError::WrongSecretOrCorrupt
    );
    // A flipped byte anywhere in the token is caught by the HMAC (or the base64 framing).
    if !json.is_empty() {
        let mut tampered = body.clone();
        let at = codec::ENCRYPTED_HEADER.len() + json[0] as usize % (body.len() - 19);
        tampered[at] = if tampered[at] == b'A' { b'B' } else { b'A' };
        if tampered != body {
            assert!(codec::decode(&tampered, Some(secret)).is_err(), "tampering");
        }
    }
    match (
        StoredDocument::decode(&body, Some(secret)),
        Document::parse(json),
    ) {
        (Ok(stored), Ok(plain)) => {
            assert!(stored.encrypted);
            assert_eq!(stored.document, plain);
            let written = stored.encode(Some(secret)).unwrap();
            assert!(codec::is_encrypted(&written), "written back encrypted");
            let again = StoredDocument::decode(&written, Some(secret)).unwrap();
            assert_eq!(again.document, plain);
        }
        (Err(_), Err(_)) => {}
        (stored, plain) => panic!(
            "encrypted and plain forms disagree: {:?} vs {:?}",
            stored.map(|_| ()),
            plain.map(|_| ())
        ),
    }
}

/// Plain key-file JSON through both readers.
pub fn check_key_file(json: &[u8]) {
    let loaded = KeySet::from_json(json);
    let document = Document::parse(json);
    if let Ok(document) = &document {
        // The editor's rewrite reads back as the same document.
        let rewritten = document.to_json();
        assert_eq!(&Document::parse(&rewritten).unwrap(), document);
    }
    let ids: Vec<String> = match &document {
        Ok(document) => document
            .keys()
            .filter_map(|key| key.get("id").and_then(Value::as_str))
            .map(str::to_string)
            .collect(),
        Err(_) => Vec::new(),
    };
    match &loaded {
        Err(error) => check_load_error(error, document.is_ok().then_some(&ids[..])),
        Ok((set, skipped)) => {
            for skip in skipped {
                assert!(skip.key_id.chars().count() <= 64);
                if document.is_ok() {
                    assert!(
                        ids.iter().any(|id| id.starts_with(&skip.key_id)),
                        "a skipped key is reported by a prefix of its id"
                    );
                }
            }
            if let Ok(document) = &document {
                check_agreement(set, skipped, document);
                // What heare-authctl writes back serves exactly the same keys.
                let (again, again_skipped) = KeySet::from_json(&document.to_json())
                    .unwrap_or_else(|e| panic!("the rewritten file no longer loads: {e}"));
                assert_eq!(again.len(), set.len());
                assert_eq!(again_skipped, *skipped);
                for key in document.keys() {
                    if let Some(secret) = key.get("secret").and_then(Value::as_str) {
                        assert_same_verdict(&again.verify(secret, NOW), &set.verify(secret, NOW));
                    }
                }
            }
        }
    }
}

/// A load error names key ids (which are not secret) and nothing else from the file.
fn check_load_error(error: &LoadError, ids: Option<&[String]>) {
    let text = error.to_string();
    assert!(!text.is_empty());
    let Some(ids) = ids else { return };
    match error {
        LoadError::DuplicateId(id) => assert!(ids.contains(id), "{text}"),
        LoadError::DuplicateSecret { first, second } => {
            assert!(
                ids.contains(first) || first == "(a current or previous secret)",
                "{text}"
            );
            assert!(ids.contains(second), "{text}");
        }
        LoadError::Syntax { .. } | LoadError::Shape { .. } | LoadError::TooLarge => {}
    }
}

/// Both readers accepted the file: every key the editor sees is served, or skipped, as its
/// fields say.
fn check_agreement(set: &KeySet, skipped: &[SkippedKey], document: &Document) {
    assert_eq!(
        set.len() + skipped.len(),
        document.keys().count(),
        "every key is either loaded or skipped"
    );
    for key in document.keys() {
        let Some(id) = key.get("id").and_then(Value::as_str) else {
            panic!("the loader accepted a key without a string id");
        };
        let Some(secret) = key.get("secret").and_then(Value::as_str) else {
            continue;
        };
        // A skipped key's secret is not indexed: another key may hold the same one.
        if skipped.iter().any(|skip| id.starts_with(&skip.key_id)) {
            continue;
        }
        let verdict = set.verify(secret, NOW);
        let plain = key.get("secret_hash").is_none()
            && key.get("expires_at").is_none_or(Value::is_null)
            && key
                .get("disabled")
                .is_none_or(|d| d == false || d.is_null())
            && key
                .get("metadata")
                .is_none_or(|m| m.is_object() || m.is_null())
            && key
                .get("grace_secrets")
                .is_none_or(|g| g.is_null() || g.as_array().is_some_and(Vec::is_empty));
        match verdict {
            Verdict::Valid(view) => {
                assert_eq!(view.id, id);
                assert_eq!(
                    view.name,
                    key.get("name").and_then(Value::as_str).unwrap_or("")
                );
                let served: Value = serde_json::from_str(view.metadata_json)
                    .unwrap_or_else(|e| panic!("served metadata is not JSON ({e})"));
                let expected = match key.get("metadata") {
                    None | Some(Value::Null) => Value::Object(Default::default()),
                    Some(metadata) => metadata.clone(),
                };
                assert_eq!(served, expected, "metadata served as written");
            }
            Verdict::Expired { key_id }
            | Verdict::Disabled { key_id }
            | Verdict::Rotated { key_id } => {
                assert_eq!(key_id, id);
                assert!(!plain, "a key with no expiry and not disabled was refused");
            }
            Verdict::Unknown => assert!(!plain, "a plain key {id:?} was not loaded"),
        }
        if let Some(hash) = key.get("secret_hash").and_then(Value::as_str)
            && SecretDigest::parse_field(hash) != Some(SecretDigest::of_secret(secret))
        {
            assert_eq!(verdict_id(&set.verify(secret, NOW)), None);
        }
    }
}

/// The same verdict, metadata compared as JSON values (a rewrite may respell numbers and escapes).
fn assert_same_verdict(left: &Verdict<'_>, right: &Verdict<'_>) {
    match (left, right) {
        (Verdict::Valid(a), Verdict::Valid(b)) => {
            assert_eq!((a.id, a.name), (b.id, b.name));
            let a: Value = serde_json::from_str(a.metadata_json).unwrap();
            let b: Value = serde_json::from_str(b.metadata_json).unwrap();
            assert_eq!(a, b);
        }
        _ => assert_eq!(left, right),
    }
}

fn verdict_id<'a>(verdict: &Verdict<'a>) -> Option<&'a str> {
    match verdict {
        Verdict::Valid(view) => Some(view.id),
        Verdict::Expired { key_id }
        | Verdict::Disabled { key_id }
        | Verdict::Rotated { key_id } => Some(key_id),
        Verdict::Unknown => None,
    }
}

/// A verify request as bytes: the first byte is the length of the `Authorization` value that
/// follows (255: no header), the rest is the body.
pub fn verify_body(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let (authorization, body) = if split == 255 {
        (None, rest)
    } else {
        let at = (split as usize).min(rest.len());
        (Some(&rest[..at]), &rest[at..])
    };
    let presented = presented_secret(authorization, body);
    let bearer = authorization.and_then(bearer_token);
    if let Some(token) = bearer {
        assert!(!token.is_empty() && token.trim() == token);
        assert!(token.bytes().all(|b| b == b'\t' || (32..127).contains(&b)));
    }
    match (&presented, body.trim_ascii().is_empty(), bearer) {
        (Ok(secret), true, Some(token)) => assert_eq!(secret, token),
        (Ok(secret), _, _) => {
            // Taken from the body: the body is UTF-8 and says exactly that. (Fields the daemon
            // ignores are skipped, not decoded: a lone surrogate escape in one is accepted, as
            // the Python service's json module accepts it; serde_json's Value refuses it.)
            assert!(
                std::str::from_utf8(body).is_ok(),
                "accepted a body that is not UTF-8"
            );
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(map)) => assert_eq!(
                    map.get("api_key").and_then(Value::as_str),
                    Some(secret.as_ref())
                ),
                Ok(Value::Array(items)) => assert_eq!(items, [Value::from(secret.as_ref())]),
                Ok(other) => panic!("accepted {other}"),
                Err(_) => {}
            }
        }
        (Err(BadVerifyBody), blank, bearer) => assert!(!(blank && bearer.is_some())),
    }
    // Whatever was presented goes through the rest of the verify path without a panic.
    if let Ok(secret) = &presented {
        check_lookup(secret);
    }
    // Any text, written by a real client, comes back exactly.
    let text = String::from_utf8_lossy(rest);
    let body = serde_json::json!({ "api_key": text, "user_agent": "fuzz" }).to_string();
    assert_eq!(
        presented_secret(authorization, body.as_bytes()).unwrap(),
        text
    );
}

/// The verify path after the parse: shape check, lookup, the 4-character log prefix.
fn check_lookup(secret: &str) {
    thread_local! {
        static SET: KeySet = KeySet::from_json(
            br#"{"keys":[{"id":"key_a","secret":"sec_0known"},{"id":"key_b","secret":"x"}]}"#,
        )
        .map(|(set, _)| set)
        .unwrap_or_else(|_| KeySet::empty());
    }
    let _ = token::secret_shape(secret);
    let prefix: String = secret.chars().take(4).collect();
    assert!(prefix.len() <= 16);
    SET.with(|set| {
        let verdict = set.verify(secret, NOW);
        let expected = match secret {
            "sec_0known" => Some("key_a"),
            "x" => Some("key_b"),
            _ => None,
        };
        assert_eq!(verdict_id(&verdict), expected);
    });
}

/// Secret-format bytes: the first byte picks a mode. 0: the rest as text, classified and compared
/// with the model; 1: the rest mapped onto base62 as the body of a generation-1 secret, which must
/// check, and whose every one-character change and adjacent swap must not.
pub fn secret_format(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let text = String::from_utf8_lossy(rest);
        assert_eq!(token::secret_shape(&text), model_shape(&text), "{text:?}");
        if token::secret_shape(&text) == SecretShape::BadChecksum {
            assert!(heare_auth_client::blocking::check_locally(&text).is_err());
        }
        return;
    }
    let mut body = String::from("sec_1");
    for i in 0..SECRET_LEN - CHECKSUM_LEN - 5 {
        let byte = rest.get(i).copied().unwrap_or(i as u8);
        body.push(token::BASE62[byte as usize % 62] as char);
    }
    let secret = format!("{body}{}", token::checksum_for(&body));
    assert_eq!(token::secret_shape(&secret), SecretShape::Checked);
    assert!(heare_auth_client::blocking::check_locally(&secret).is_ok());
    assert_eq!(
        token::secret_shape(&secret[..SECRET_LEN - 1]),
        SecretShape::Unchecked
    );
    let bytes = secret.as_bytes();
    let change = rest.get(60).copied().unwrap_or(0) as usize;
    let position = 5 + change % (SECRET_LEN - 5);
    let replacement = token::BASE62[(rest.get(61).copied().unwrap_or(1) as usize) % 62];
    if replacement != bytes[position] {
        let mut typo = bytes.to_vec();
        typo[position] = replacement;
        let typo = String::from_utf8(typo).unwrap();
        assert_eq!(
            token::secret_shape(&typo),
            SecretShape::BadChecksum,
            "{typo}"
        );
    }
    // Adjacent swaps inside the checksummed part (a swap that also moves a checksum character
    // is only caught with probability 1 - 62^-6, not always).
    if position + 1 < SECRET_LEN - CHECKSUM_LEN && bytes[position] != bytes[position + 1] {
        let mut swapped = bytes.to_vec();
        swapped.swap(position, position + 1);
        let swapped = String::from_utf8(swapped).unwrap();
        assert_eq!(token::secret_shape(&swapped), SecretShape::BadChecksum);
    }
}

/// The generation-1 format from its definition, with a table-driven CRC-32 written independently
/// of `token::crc32`.
fn model_shape(text: &str) -> SecretShape {
    let bytes = text.as_bytes();
    if bytes.len() != 64 || !text.starts_with("sec_1") {
        return SecretShape::Unchecked;
    }
    if !bytes[4..].iter().all(u8::is_ascii_alphanumeric) {
        return SecretShape::BadChecksum;
    }
    let mut crc = model_crc32(&bytes[..58]) as u64;
    let mut digits = [0u8; 6];
    for slot in digits.iter_mut().rev() {
        *slot =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"[(crc % 62) as usize];
        crc /= 62;
    }
    if digits == bytes[58..] {
        SecretShape::Checked
    } else {
        SecretShape::BadChecksum
    }
}

fn model_crc32(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        (0..256u32)
            .map(|n| {
                (0..8).fold(n, |c, _| {
                    if c & 1 == 1 {
                        0xEDB8_8320 ^ (c >> 1)
                    } else {
                        c >> 1
                    }
                })
            })
            .collect()
    });
    !bytes.iter().fold(!0u32, |crc, &b| {
        table[((crc ^ u32::from(b)) & 0xFF) as usize] ^ (crc >> 8)
    })
}

/// A queue message's body, as given and wrapped in an SNS envelope.
pub fn notify_event(data: &[u8]) {
    let body = String::from_utf8_lossy(data);
    let direct = event::classify(&body, "auth", "keys.json");
    assert_eq!(
        direct,
        event::classify(&body, "auth", "keys.json"),
        "deterministic"
    );
    // Not "text that is not JSON is never an event": serde_json skips the fields an event does
    // not read without checking their escapes (a lone `\ud800` there), which is harmless.
    let Ok(parsed) = serde_json::from_str::<Value>(&body) else {
        return;
    };
    if parsed.get("Type").and_then(Value::as_str) == Some("Notification") {
        return; // already an envelope: SNS does not nest them
    }
    let envelope = serde_json::json!({"Type": "Notification", "Message": body}).to_string();
    let wrapped = event::classify(&envelope, "auth", "keys.json");
    if direct == Notice::Ours && envelope.len() <= event::MAX_BODY {
        assert_eq!(
            wrapped,
            Notice::Ours,
            "an event for the object counts in an envelope too"
        );
    }
}

/// A client's text and the secret its request presents: the first byte is the bound in
/// characters, the second the secret's length in bytes (cut where it would not be whole); both
/// are read as UTF-8 with replacement characters.
pub fn redact(data: &[u8]) {
    let [limit, length, rest @ ..] = data else {
        return;
    };
    let (secret, text) = rest.split_at(usize::from(*length).min(rest.len()));
    let (secret, text) = (
        String::from_utf8_lossy(secret),
        String::from_utf8_lossy(text),
    );
    let limit = usize::from(*limit);
    let presented = (!secret.is_empty()).then_some(secret.as_ref());
    let redactor = Redactor::new(presented);
    let out = redactor.field(&text, limit);
    let expected = model_redacted(&text, &secret, limit);
    assert_eq!(
        out, expected,
        "{text:?} presenting {secret:?}, {limit} characters"
    );
    assert!(out.chars().count() <= limit);
    if !secret.is_empty() && !MARKER.contains(secret.as_ref()) {
        assert!(!out.contains(secret.as_ref()), "{out:?} holds {secret:?}");
    }
    assert!(
        model_covered(&out, "").iter().all(|c| !c),
        "{out:?} holds a secret-shaped run"
    );
    let cut = text
        .char_indices()
        .nth(limit)
        .map_or(text.len(), |(at, _)| at);
    if !model_covered(&text, &secret)[..cut].contains(&true) {
        assert!(
            matches!(out, Cow::Borrowed(t) if t == &text[..cut]),
            "{text:?}"
        );
    }
    let anything = model_covered(&text, &secret).contains(&true);
    assert_eq!(redactor.would_hide(&text), anything, "{text:?}");
}

/// Which bytes of `text` an occurrence of `secret` (when not empty), a `sec_` run or a whole run
/// of at least [`MIN_BARE_BODY`] base62 characters covers.
fn model_covered(text: &str, secret: &str) -> Vec<bool> {
    let bytes = text.as_bytes();
    let mut covered = vec![false; bytes.len()];
    let mut run_start = 0;
    for at in 0..=bytes.len() {
        if bytes.get(at).is_some_and(u8::is_ascii_alphanumeric) {
            continue;
        }
        if at - run_start >= MIN_BARE_BODY {
            covered[run_start..at].fill(true);
        }
        run_start = at + 1;
    }
    for start in 0..bytes.len() {
        if !secret.is_empty() && bytes[start..].starts_with(secret.as_bytes()) {
            covered[start..start + secret.len()].fill(true);
        }
        if bytes[start..].starts_with(b"sec_") {
            let run = bytes[start + 4..]
                .iter()
                .take_while(|b| b.is_ascii_alphanumeric())
                .count();
            if run > 0 {
                covered[start..start + 4 + run].fill(true);
            }
        }
    }
    covered
}

/// What `Redactor::field` must write: the first `limit` characters, each covered run that starts
/// among them one marker (a run that crosses the bound ends the text); the marker alone when a
/// short secret occurs there or the result still spells the secret.
fn model_redacted(text: &str, secret: &str, limit: usize) -> String {
    let covered = model_covered(text, secret);
    let cut = text
        .char_indices()
        .nth(limit)
        .map_or(text.len(), |(at, _)| at);
    let short_found = !secret.is_empty()
        && secret.len() < MIN_MARKED_BYTES
        && (0..cut).any(|start| text.as_bytes()[start..].starts_with(secret.as_bytes()));
    let mut out = String::new();
    let mut at = 0;
    while at < cut {
        if covered[at] {
            out.push_str(MARKER);
            while covered.get(at) == Some(&true) {
                at += 1;
            }
        } else {
            let c = text[at..].chars().next().unwrap();
            out.push(c);
            at += c.len_utf8();
        }
    }
    if short_found || (!secret.is_empty() && out.contains(secret)) {
        out = MARKER.to_string();
    }
    out.chars().take(limit).collect()
}
