//! The units in `systemd/`, checked by systemd itself: `systemd-analyze verify` must print nothing
//! (it only warns about typos, so any output fails the test), and the service's exposure score
//! must be at most 1.5 ("OK") by `systemd-analyze security --offline=yes --threshold=15`.

use heare_auth_tests::daemon::binary;
use std::path::{Path, PathBuf};
use std::process::Command;

fn units_with_built_binary(dir: &Path) -> (PathBuf, PathBuf) {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let service = std::fs::read_to_string(source.join("heare-authd.service")).unwrap();
    assert!(service.contains("ExecStart=/usr/sbin/heare-authd"));
    // verify checks that ExecStart exists: point it at the binary this test run built.
    let service = service.replace(
        "/usr/sbin/heare-authd",
        &binary("heare-authd").display().to_string(),
    );
    let service_path = dir.join("heare-authd.service");
    let socket_path = dir.join("heare-authd.socket");
    std::fs::write(&service_path, service).unwrap();
    std::fs::copy(source.join("heare-authd.socket"), &socket_path).unwrap();
    (service_path, socket_path)
}

#[test]
fn units_verify_cleanly_and_the_service_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let (service, socket) = units_with_built_binary(dir.path());
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&socket)
        .arg(&service)
        .output()
        .expect("systemd-analyze (package systemd)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    assert!(
        verify.status.success() && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );

    let security = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--threshold=15"])
        .arg(&service)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&security.stdout);
    assert!(security.status.success(), "exposure above 1.5:\n{report}");
    assert!(report.contains("Overall exposure level"), "{report}");
}

#[test]
fn sysusers_snippet_parses() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    let sysusers = Command::new("systemd-sysusers")
        .args(["--dry-run"])
        .arg(source.join("heare-auth.sysusers"))
        .output()
        .expect("systemd-sysusers");
    let said = String::from_utf8_lossy(&sysusers.stderr);
    assert!(sysusers.status.success(), "{said}");
    assert!(
        !said.contains("Failed") && !said.contains("Syntax"),
        "{said}"
    );
}
