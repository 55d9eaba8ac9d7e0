//! pam_heare_auth.so for real: a PAM service file in a private /etc/pam.d (bubblewrap binds it
//! over the host's), `pamtester SERVICE USER authenticate` with the key on stdin, against a
//! running daemon. Needs pamtester and bubblewrap (tests/run and .ci/run install them) and root.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder, binary};
use serde_json::json;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

const ALICE: &str = "sec_0AlicesPamSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const BOB: &str = "sec_0BobsPamSecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

fn start(dir: &Path) -> Daemon {
    let store = dir.join("keys.json");
    let file = json!({"keys": [
        {"id": "key_alice", "secret": ALICE, "name": "alice's key", "metadata": {"unix_user": "alice"}},
        {"id": "key_bob", "secret": BOB, "name": "bob's key", "metadata": {"unix_user": "bob"}},
    ]});
    std::fs::write(&store, file.to_string()).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap()
}

fn service(dir: &Path, socket: &Path, options: &str) {
    let pam_dir = dir.join("pam.d");
    std::fs::create_dir_all(&pam_dir).unwrap();
    let module = binary("libpam_heare_auth.so");
    std::fs::write(
        pam_dir.join("heare-test"),
        format!(
            "auth required {} socket={} timeout=2000 {options}\naccount required pam_permit.so\n",
            module.display(),
            socket.display()
        ),
    )
    .unwrap();
}

/// Runs pamtester for `user` with `key` on stdin; returns (success, output).
fn pamtester(dir: &Path, user: &str, key: &str) -> (bool, String) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "bubblewrap's bind over /etc/pam.d needs root (CI is)"
    );
    let mut child = Command::new("bwrap")
        .args(["--bind", "/", "/", "--bind"])
        .arg(dir.join("pam.d"))
        .args([
            "/etc/pam.d",
            "--dev",
            "/dev",
            "pamtester",
            "heare-test",
            user,
            "authenticate",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bwrap + pamtester (install bubblewrap and pamtester)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{key}\n").as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[test]
fn keys_authenticate_their_own_user_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path());
    service(dir.path(), &daemon.socket, "user_field=unix_user");

    let (ok, out) = pamtester(dir.path(), "alice", ALICE);
    assert!(ok && out.contains("successfully authenticated"), "{out}");
    let (ok, out) = pamtester(dir.path(), "alice", "sec_0wrong");
    assert!(!ok && out.contains("Authentication failure"), "{out}");
    let (ok, out) = pamtester(dir.path(), "alice", BOB);
    assert!(
        !ok && out.contains("Authentication failure"),
        "bob's key must not log in as alice: {out}"
    );
    let (ok, _) = pamtester(dir.path(), "bob", BOB);
    assert!(ok);

    daemon.stop();
    let (ok, out) = pamtester(dir.path(), "alice", ALICE);
    assert!(
        !ok && out.contains("cannot retrieve authentication info"),
        "daemon stopped: {out}"
    );
}

#[test]
fn without_user_field_any_valid_key_authenticates() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    service(dir.path(), &daemon.socket, "");
    let (ok, out) = pamtester(dir.path(), "alice", BOB);
    assert!(ok, "{out}");
    let (ok, _) = pamtester(dir.path(), "alice", "sec_0wrong");
    assert!(!ok);
}
