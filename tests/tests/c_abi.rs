//! The C ABI for real: `tests/c/verify.c` is compiled with `cc` against the checked-in
//! `client/ffi/include/heare_auth.h` and `libheare_auth.so`, then run against a running daemon.

use heare_auth_tests::daemon::{DaemonBuilder, binary};
use heare_auth_tests::keys::{TestKey, key_file};
use std::path::{Path, PathBuf};
use std::process::Command;

const SECRET: &str = "sec_0CAbiTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn compile(out: &Path) {
    let library_dir = binary("libheare_auth.so").parent().unwrap().to_path_buf();
    let status = Command::new("cc")
        .arg("-Wall")
        .arg("-Werror")
        .arg("-o")
        .arg(out)
        .arg(workspace().join("tests/c/verify.c"))
        .arg("-I")
        .arg(workspace().join("client/ffi/include"))
        .arg("-L")
        .arg(&library_dir)
        .arg(format!("-Wl,-rpath,{}", library_dir.display()))
        .arg("-lheare_auth")
        .status()
        .expect("run cc");
    assert!(status.success(), "cc failed");
}

#[test]
fn a_c_program_verifies_through_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("verify");
    compile(&program);
    let store = dir.path().join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_c", SECRET)])).unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap();
    let run = |secret: &str| {
        let output = Command::new(&program)
            .arg(&daemon.socket)
            .arg(secret)
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        )
    };
    let (code, out) = run(SECRET);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, r#"0 key_c|name of key_c|{"env":"test","id":"key_c"}"#);
    let (code, out) = run("sec_0wrong");
    assert_eq!(code, Some(1), "{out}");
    assert_eq!(out, "1 invalid API key");
    let bad_checksum = format!("sec_1{}", "0".repeat(59));
    assert_eq!(run(&bad_checksum).0, Some(2));
    let missing = Command::new(&program)
        .arg(dir.path().join("none.sock"))
        .arg(SECRET)
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&missing.stdout).contains("is it running"));
}
