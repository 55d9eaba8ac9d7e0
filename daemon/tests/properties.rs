//! The fuzz targets' invariants (`daemon/fuzz/checks.rs`) under plain `cargo test`, so CI covers
//! the three hostile-input parsers in bounded time even without cargo-fuzz: proptest generates
//! structured inputs (key files with every field in valid and broken forms, then truncated or
//! corrupted; verify requests; near-valid secrets) and feeds their bytes to the same checks the
//! fuzzer runs. The committed fuzz seeds and every crash the fuzzer ever found
//! (`daemon/fuzz/seeds/<target>/`) are replayed first, as regression tests.
//! `PROPTEST_CASES=100000 cargo test -p heare-authd --test properties --release` runs longer.

#[path = "../fuzz/checks.rs"]
mod checks;

use heare_authd::keyset::{KeySet, LoadError, SecretDigest};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Map, Value, json};
use std::path::Path;

fn config(cases: u32) -> Config {
    Config {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(cases),
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------- replayed fuzz seeds

fn replay(target: &str, check: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/seeds")
        .join(target);
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        check(&std::fs::read(&path).unwrap());
        count += 1;
    }
    assert!(count > 0, "no seeds in {}", dir.display());
}

#[test]
fn fuzz_seeds_and_found_crashes_replay_cleanly() {
    replay("keyfile", checks::keyfile);
    replay("verify_body", checks::verify_body);
    replay("secret_format", checks::secret_format);
    replay("notify_event", checks::notify_event);
    replay("redact", checks::redact);
}

// ---------------------------------------------------------------- strategies

/// Text that exercises escapes, multi-byte characters, control characters and NULs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-zA-Z0-9_]{0,24}",
        1 => any::<String>(),
        1 => Just(String::new()),
        1 => "[\"\\\\\u{0}\u{1f}\u{7f}é名😀 \t\n]{1,8}",
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((text(), inner), 0..6)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
}

fn timestamp() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(json!("2020-01-01T00:00:00Z")),
        Just(json!("2999-12-31T23:59:59+02:00")),
        Just(json!("2025-06-15T15:06:40.000001")),
        Just(json!("2025-06-15")),
        Just(json!("")),
        Just(json!("next tuesday")),
        Just(json!(1_750_000_000)),
        text().prop_map(Value::from),
    ]
}

/// One key: each field absent, valid, or broken.
fn key() -> impl Strategy<Value = Value> {
    (
        prop_oneof![8 => "key_[a-z0-9]{1,6}".prop_map(Value::from), 1 => json_value()],
        prop_oneof![6 => "sec_[a-zA-Z0-9]{1,12}".prop_map(Value::from), 1 => text().prop_map(Value::from), 1 => json_value()],
        0..4u8,
        prop::option::of(text().prop_map(Value::from)),
        prop::option::of(timestamp()),
        prop::option::of(prop_oneof![4 => json_value().prop_map(|v| json!({"v": v})), 1 => json_value()]),
        prop::option::of(prop_oneof![Just(json!(true)), Just(json!(false)), Just(Value::Null), json_value()]),
        prop::option::of(prop::collection::vec((text(), timestamp()), 0..3)),
        prop::option::of((text(), json_value())),
    )
        .prop_map(
            |(id, secret, hash_form, name, expires, metadata, disabled, grace, extra)| {
                let mut key = Map::new();
                key.insert("id".into(), id);
                let plain = secret.as_str().map(str::to_string);
                match (hash_form, plain) {
                    (0, _) | (_, None) => {
                        key.insert("secret".into(), secret);
                    }
                    (1, Some(plain)) => {
                        key.insert(
                            "secret_hash".into(),
                            SecretDigest::of_secret(&plain).to_field().into(),
                        );
                    }
                    (2, Some(plain)) => {
                        key.insert("secret".into(), secret);
                        key.insert(
                            "secret_hash".into(),
                            SecretDigest::of_secret(&plain).to_field().into(),
                        );
                    }
                    (_, Some(_)) => {
                        key.insert("secret".into(), secret);
                        key.insert("secret_hash".into(), "sha256:00".into());
                    }
                }
                let fields = [
                    ("name", name),
                    ("expires_at", expires),
                    ("metadata", metadata),
                    ("disabled", disabled),
                ];
                for (field, value) in fields {
                    if let Some(value) = value {
                        key.insert(field.into(), value);
                    }
                }
                if let Some(grace) = grace {
                    let entries = grace
                        .into_iter()
                        .map(|(secret, until)| {
                            json!({"secret_hash": SecretDigest::of_secret(&secret).to_field(),
                                   "expires_at": until})
                        })
                        .collect();
                    key.insert("grace_secrets".into(), Value::Array(entries));
                }
                if let Some((name, value)) = extra {
                    key.entry(name).or_insert(value);
                }
                Value::Object(key)
            },
        )
}

/// A key file's bytes, written as the Python service or ctl would, then possibly damaged.
fn key_file_bytes() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(key(), 0..8),
        any::<bool>(),
        prop::option::of((text(), json_value())),
        0..6u8,
        any::<prop::sample::Index>(),
        any::<u8>(),
    )
        .prop_map(|(keys, pretty, extra, damage, at, byte)| {
            let mut root = Map::new();
            if let Some((name, value)) = extra {
                root.insert(name, value);
            }
            root.insert("keys".into(), Value::Array(keys));
            let mut bytes = if pretty {
                serde_json::to_vec_pretty(&root).unwrap()
            } else {
                serde_json::to_vec(&root).unwrap()
            };
            if !bytes.is_empty() {
                let at = at.index(bytes.len());
                match damage {
                    0 => bytes.truncate(at),
                    1 => bytes[at] = byte,
                    2 => bytes.insert(at, byte),
                    _ => {}
                }
            }
            bytes
        })
}

fn with_mode(mode: u8, bytes: &[u8]) -> Vec<u8> {
    let mut data = vec![mode];
    data.extend_from_slice(bytes);
    data
}

// ---------------------------------------------------------------- properties

proptest! {
    #![proptest_config(config(400))]

    #[test]
    fn key_files_plain(bytes in key_file_bytes()) {
        checks::keyfile(&with_mode(0, &bytes));
    }

    #[test]
    fn key_files_encrypted(bytes in key_file_bytes()) {
        checks::keyfile(&with_mode(1, &bytes));
    }

    #[test]
    fn key_files_raw_bytes(mode in 0..3u8, bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        checks::keyfile(&with_mode(mode, &bytes));
    }
}

/// The bytes of a verify request in the target's layout: header length (255: none), header, body.
fn verify_request() -> impl Strategy<Value = Vec<u8>> {
    let header = prop_oneof![
        Just(None),
        "(B|b)earer {1,3}[ -~]{0,80}".prop_map(|h| Some(h.into_bytes())),
        prop::collection::vec(any::<u8>(), 0..80).prop_map(Some),
    ];
    let body = prop_oneof![
        text().prop_map(|secret| json!({ "api_key": secret }).to_string().into_bytes()),
        json_value().prop_map(|v| json!({ "api_key": v }).to_string().into_bytes()),
        json_value().prop_map(|v| v.to_string().into_bytes()),
        "[ \t\r\n]{0,4}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..200),
    ];
    (header, body).prop_map(|(header, body)| {
        let mut data = Vec::new();
        match header {
            None => data.push(255),
            Some(header) => {
                data.push(header.len() as u8);
                data.extend_from_slice(&header);
            }
        }
        data.extend_from_slice(&body);
        data
    })
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn verify_requests(data in verify_request()) {
        checks::verify_body(&data);
    }

    #[test]
    fn secrets_as_text(mode in 0..2u8, text in prop_oneof![
        any::<String>(),
        "sec_1[0-9A-Za-z]{59}",
        "sec_[0-9][0-9A-Za-z_\u{0}é]{59}",
    ]) {
        checks::secret_format(&with_mode(mode, text.as_bytes()));
    }

    #[test]
    fn notify_messages(text in prop_oneof![
        text(),
        json_value().prop_map(|v| v.to_string()),
        (text(), text()).prop_map(|(bucket, key)| serde_json::json!({"Records": [
            {"eventSource": "aws:s3", "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}
        ]}).to_string()),
    ]) {
        checks::notify_event(text.as_bytes());
    }

    #[test]
    fn generated_secrets_catch_typos(bytes in prop::collection::vec(any::<u8>(), 62)) {
        checks::secret_format(&with_mode(1, &bytes));
    }
}

/// A client's text built from pieces that meet at every boundary: the secret, pieces of it,
/// `sec_` runs (whole, truncated, bare), base62 runs around the 40 characters that hide a bare
/// run (alone or joined to their neighbours), key ids, the marker and its pieces, and other text.
fn client_text(secret: String) -> impl Strategy<Value = String> {
    let half = secret
        .chars()
        .take(secret.chars().count() / 2)
        .collect::<String>();
    let piece = prop_oneof![
        3 => Just(secret),
        1 => Just(half),
        2 => "sec_[0-9A-Za-z]{0,64}",
        2 => "[0-9A-Za-z]{15,45}",
        1 => "key_[0-9A-Za-z]{1,19}",
        1 => prop::sample::select(vec!["[redacted]", "[red", "acted]", "sec", "_", "%73", ";"])
            .prop_map(str::to_string),
        3 => text(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// Presented secrets: generated ones, imported words (short ones too), periodic ones, ones that
/// hold or end like the marker, and anything.
fn presented_secret() -> impl Strategy<Value = String> {
    prop_oneof![
        "sec_[01][0-9A-Za-z]{59}",
        "sec_[0-9A-Za-z]{0,6}",
        "[a-z0-9]{1,16}",
        "(ab){30,80}",
        "(ab){1,6}a?",
        "(hunter2){2,3}",
        "[a-z]{0,3}\\[redacted\\][a-z]{0,3}",
        "[a-z]{1,6}(d\\]|\\[r)",
        any::<String>(),
    ]
}

proptest! {
    #![proptest_config(config(2000))]

    /// For any text and any presented secret: never the secret, never a secret-shaped run,
    /// within the bound, what the naive model writes, and borrowed when nothing is hidden.
    #[test]
    fn redacted_fields_hold_no_secret(
        (secret, text) in presented_secret().prop_flat_map(|s| (Just(s.clone()), client_text(s))),
        limit in prop_oneof![Just(255u8), 0..255u8],
    ) {
        let mut data = vec![limit, secret.len().min(255) as u8];
        data.extend_from_slice(secret.as_bytes());
        data.extend_from_slice(text.as_bytes());
        checks::redact(&data);
    }
}

// ---------------------------------------------------------------- ambiguous files that must not load

/// A key's secret that another key still accepts as a grace secret would make verification
/// ambiguous; the load must fail as for any duplicate secret, in either order.
#[test]
fn a_secret_equal_to_another_keys_grace_secret_fails_the_load() {
    let grace = json!([{"secret_hash": SecretDigest::of_secret("sec_shared").to_field(),
                        "expires_at": "2999-01-01T00:00:00Z"}]);
    let rotated = json!({"id": "key_rotated", "secret": "sec_new", "grace_secrets": grace});
    let other = json!({"id": "key_other", "secret": "sec_shared"});
    for keys in [
        json!([rotated.clone(), other.clone()]),
        json!([other, rotated]),
    ] {
        let file = json!({ "keys": keys }).to_string();
        let result = KeySet::from_json(file.as_bytes());
        assert!(
            matches!(result, Err(LoadError::DuplicateSecret { .. })),
            "{file}: {:?}",
            result.map(|(set, _)| set.len())
        );
    }
}

/// A file with two `keys` arrays is refused rather than served from the first while the editor
/// (and the Python service) see the last.
#[test]
fn a_file_with_two_keys_arrays_is_refused() {
    let file =
        br#"{"keys":[{"id":"key_a","secret":"sec_a"}],"keys":[{"id":"key_b","secret":"sec_b"}]}"#;
    assert!(KeySet::from_json(file).is_err());
}
