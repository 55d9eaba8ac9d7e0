//! The C ABI for real: `tests/c/verify.c` is compiled with `cc` against the checked-in
//! `client/ffi/include/heare_auth.h` and `libheare_auth.so`, then run against a running daemon,
//! and against `fake-authd` answering what the real daemon never would.

mod common;

use common::{FakeDaemon, compile_c};
use heare_auth_tests::daemon::DaemonBuilder;
use heare_auth_tests::keys::{TestKey, key_file};
use std::path::Path;
use std::process::Command;

const SECRET: &str = "sec_0CAbiTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

/// Runs the compiled program: (exit status, trimmed stdout).
fn run(program: &Path, socket: &Path, secret: &str) -> (Option<i32>, String) {
    let output = Command::new(program)
        .arg(socket)
        .arg(secret)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).trim().to_string(),
    )
}

#[test]
fn a_c_program_verifies_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("verify");
    compile_c(&program);
    let store = dir.path().join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_c", SECRET)])).unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap();
    let (code, out) = run(&program, &daemon.socket, SECRET);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, r#"0 key_c|name of key_c|{"env":"test","id":"key_c"}"#);
    let (code, out) = run(&program, &daemon.socket, "sec_0wrong");
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out, "1 invalid API key");
    let bad_checksum = format!("sec_1{}", "0".repeat(59));
    assert_eq!(run(&program, &daemon.socket, &bad_checksum).0, Some(2));
    let (code, out) = run(&program, &dir.path().join("none.sock"), SECRET);
    assert_eq!(code, Some(3));
    assert!(out.contains("is it running"));
}

#[test]
fn a_nul_byte_in_an_answer_is_a_protocol_error_not_a_shorter_string() {
    // `key_admin\0-imported-by-bob` must not reach C as `key_admin`.
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("verify");
    compile_c(&program);
    let answers = [
        r#"{"valid":true,"key_id":"key_admin\u0000-imported-by-bob","name":"n","metadata":{},"error":null}"#,
        r#"{"valid":true,"key_id":"key_bob","name":"admin\u0000 (bob's)","metadata":{},"error":null}"#,
    ];
    for (n, answer) in answers.iter().enumerate() {
        let fake = FakeDaemon::start(dir.path(), &format!("nul{n}"), answer);
        let (code, out) = run(&program, &fake.socket, SECRET);
        assert_eq!(code, Some(6), "{answer}: {out}");
        assert!(out.starts_with("6 unexpected answer"), "{out}");
        assert!(!out.contains("key_admin"), "{out}");
    }
    // The same fake without the NUL is believed: the status above comes from the NUL.
    let clean = r#"{"valid":true,"key_id":"key_admin-imported-by-bob","name":"n","metadata":{},"error":null}"#;
    let fake = FakeDaemon::start(dir.path(), "clean", clean);
    let (code, out) = run(&program, &fake.socket, SECRET);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, "0 key_admin-imported-by-bob|n|{}");
}

#[test]
fn a_key_over_its_rate_limit_is_heare_auth_rate_limited() {
    let dir = tempfile::tempdir().unwrap();
    // tests/c/rate_limited.c, built as compile_c builds verify.c.
    let library_dir = heare_auth_tests::daemon::binary("libheare_auth.so")
        .parent()
        .unwrap()
        .to_path_buf();
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let limited_program = dir.path().join("rate_limited");
    let status = Command::new("cc")
        .args(["-Wall", "-Werror", "-o"])
        .arg(&limited_program)
        .arg(workspace.join("tests/c/rate_limited.c"))
        .arg("-I")
        .arg(workspace.join("client/ffi/include"))
        .arg("-L")
        .arg(&library_dir)
        .arg(format!("-Wl,-rpath,{}", library_dir.display()))
        .arg("-lheare_auth")
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
    let program = dir.path().join("verify");
    compile_c(&program);

    // key_limited: one verification an hour (burst = requests = 1); key_c: no limit.
    let limited = "sec_0CAbiRateLimitedSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let mut file: serde_json::Value = serde_json::from_slice(&key_file(&[
        TestKey::new("key_limited", limited),
        TestKey::new("key_c", SECRET),
    ]))
    .unwrap();
    file["keys"][0]["rate_limit"] = serde_json::json!({"requests": 1, "per": "1h"});
    let store = dir.path().join("keys.json");
    std::fs::write(&store, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap();

    // First verification accepted, the second HEARE_AUTH_RATE_LIMITED (by the header's name).
    let (code, out) = run(&limited_program, &daemon.socket, limited);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        out,
        "0 9 the API key is over its rate limit: refused for now, try again later"
    );
    // And again from verify.c: still limited, status 9, neither valid (0) nor invalid (1).
    let (code, out) = run(&program, &daemon.socket, limited);
    assert_eq!(code, Some(9), "{out}");
    assert!(
        out.starts_with("9 the API key is over its rate limit"),
        "{out}"
    );
    assert!(!out.contains(limited), "{out}");
    // The limit is the key's own: the other key of the file still verifies.
    let (code, out) = run(&program, &daemon.socket, SECRET);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.starts_with("0 key_c|"), "{out}");
}
