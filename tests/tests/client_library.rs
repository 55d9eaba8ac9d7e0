//! heare-auth-client against the real daemon: every error kind, connection reuse across the
//! daemon's idle timeout, TCP, and no secret in any error's text or Debug output; against
//! `fake-authd`: a setuid program ignores `$HEARE_AUTH_SOCKET`, and `server_uids` refuses a server
//! of another uid before sending it anything.

mod common;

use common::{FakeDaemon, NOBODY, open_dir, valid_for};
use heare_auth_client::{AsyncClient, Client, Error};
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::wait_until;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::Duration;

const SECRET: &str = "sec_0ClientLibrarySecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn start(dir: &Path, extra: &[&str], config: &str) -> Daemon {
    let store = dir.join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_client", SECRET)])).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .args(extra.iter().copied())
        .config(config)
        .start()
        .unwrap()
}

fn assert_no_secret(error: &Error, secret: &str) {
    let text = format!("{error} {error:?}");
    assert!(!text.contains(secret), "secret in error: {text}");
}

#[test]
fn verifies_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &[], "");
    let client = Client::builder()
        .socket(&daemon.socket)
        .user_agent("client-test/1")
        .build();
    let key = client.verify(SECRET).unwrap();
    assert_eq!(key.key_id, "key_client");
    assert_eq!(key.name, "name of key_client");
    assert_eq!(key.metadata["env"], "test");
    let wrong = "sec_0WrongSecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
    let error = client.verify(wrong).unwrap_err();
    assert!(matches!(error, Error::InvalidKey), "{error:?}");
    assert_no_secret(&error, wrong);
    let success = daemon.wait_events("verification_success");
    assert_eq!(success[0]["user_agent"], "client-test/1");

    // The one-call form uses $HEARE_AUTH_SOCKET; it is checked with a child process (tests
    // must not change this process's environment while others run).
    let example = heare_auth_tests::daemon::binary("examples/verify");
    let output = std::process::Command::new(example)
        .arg(SECRET)
        .env("HEARE_AUTH_SOCKET", &daemon.socket)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("key_client"));
}

#[test]
fn a_bad_checksum_is_refused_without_a_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), &[], "");
    let client = Client::builder().socket(&daemon.socket).build();
    let body = format!("sec_1{}", "A".repeat(53));
    let bad = format!("{body}zzzzzz");
    let error = client.verify(&bad).unwrap_err();
    assert!(matches!(error, Error::MalformedKey(_)), "{error:?}");
    assert_no_secret(&error, &bad);
    // A Python (generation 0) secret always reaches the daemon.
    assert!(matches!(
        client.verify("sec_0NotAChecksummedSecret"),
        Err(Error::InvalidKey)
    ));
    daemon.wait_events("verification_failed");
    let failed = daemon.events("verification_failed");
    assert_eq!(
        failed.len(),
        1,
        "only the generation-0 secret reached the daemon: {failed:?}"
    );
}

#[test]
fn unavailable_permission_timeout_and_protocol_errors() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    let error = Client::builder()
        .socket(&missing)
        .build()
        .verify(SECRET)
        .unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
    assert!(error.to_string().contains("missing.sock"));
    assert_no_secret(&error, SECRET);

    // A socket file nobody accepts on: connection refused.
    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    let error = Client::builder()
        .socket(&stale)
        .build()
        .verify(SECRET)
        .unwrap_err();
    assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");

    // A server that accepts and never answers: timeout.
    let silent_path = dir.path().join("silent.sock");
    let silent = UnixListener::bind(&silent_path).unwrap();
    let holder = std::thread::spawn(move || {
        let (mut stream, _) = silent.accept().unwrap();
        let mut sink = [0u8; 1024];
        let _ = stream.read(&mut sink);
        std::thread::sleep(Duration::from_secs(2));
    });
    let error = Client::builder()
        .socket(&silent_path)
        .timeout(Duration::from_millis(300))
        .build()
        .verify(SECRET)
        .unwrap_err();
    assert!(matches!(error, Error::Timeout(_)), "{error:?}");
    assert_no_secret(&error, SECRET);
    holder.join().unwrap();

    // Something that is not heare-authd: protocol error.
    let other_path = dir.path().join("other.sock");
    let other = UnixListener::bind(&other_path).unwrap();
    let talker = std::thread::spawn(move || {
        use std::io::Write;
        let (mut stream, _) = other.accept().unwrap();
        let mut sink = [0u8; 1024];
        let _ = stream.read(&mut sink);
        let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.2\r\n");
    });
    let error = Client::builder()
        .socket(&other_path)
        .build()
        .verify(SECRET)
        .unwrap_err();
    assert!(matches!(error, Error::Protocol(_)), "{error:?}");
    talker.join().unwrap();
}

#[test]
fn permission_denied_names_the_group() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "switches to uid 65534 with setpriv; run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let daemon = start(dir.path(), &[], "");
    // The client runs as nobody: the socket is 0660 root:root.
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(env!("CARGO_BIN_EXE_client-probe"))
        .arg(&daemon.socket)
        .arg(SECRET)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("PermissionDenied"), "{stdout}");
    assert!(stdout.contains("group"), "{stdout}");
    assert!(!stdout.contains(SECRET));
}

#[test]
fn one_connection_survives_the_daemons_idle_timeout_and_tcp_works() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let daemon = start(
        dir.path(),
        &["--listen-tcp", &address],
        "idle_timeout = \"1s\"\n",
    );
    let client = Client::builder().socket(&daemon.socket).build();
    for _ in 0..100 {
        client.verify(SECRET).unwrap();
    }
    // The daemon closes the idle connection; the client reconnects on its own.
    std::thread::sleep(Duration::from_millis(1800));
    assert_eq!(client.verify(SECRET).unwrap().key_id, "key_client");

    let tcp = Client::builder()
        .url(&format!("http://{address}"))
        .unwrap()
        .build();
    assert_eq!(tcp.verify(SECRET).unwrap().key_id, "key_client");
    assert!(matches!(tcp.verify("sec_0nope"), Err(Error::InvalidKey)));
    assert!(wait_until(Duration::from_secs(5), || daemon
        .events("verification_success")
        .len()
        >= 102));
}

#[test]
fn the_async_client_verifies_and_reports_errors() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let address = format!("127.0.0.1:{port}");
    let daemon = start(dir.path(), &["--listen-tcp", &address], "");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = AsyncClient::unix(&daemon.socket).user_agent("async-test/1");
        let key = client.verify(SECRET).await.unwrap();
        assert_eq!(key.key_id, "key_client");
        assert!(matches!(
            client.verify("sec_0nope").await,
            Err(Error::InvalidKey)
        ));
        let tcp = AsyncClient::url(&format!("http://{address}")).unwrap();
        assert_eq!(tcp.verify(SECRET).await.unwrap().name, "name of key_client");
        let missing = AsyncClient::unix(dir.path().join("missing.sock"));
        let error = missing.verify(SECRET).await.unwrap_err();
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
        assert_no_secret(&error, SECRET);
    });
}

/// Runs `program --default SECRET` as nobody with `$HEARE_AUTH_SOCKET` set to `socket`.
fn probe_as_nobody(program: &Path, socket: &Path) -> String {
    let output = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program)
        .args(["--default", SECRET])
        .env("HEARE_AUTH_SOCKET", socket)
        .output()
        .unwrap();
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_setuid_program_ignores_heare_auth_socket() {
    common::assert_root();
    // A directory on a filesystem that honours setuid bits (the build's, not a nosuid /tmp).
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let flags = nix::sys::statvfs::statvfs(dir.path()).unwrap().flags();
    assert!(
        !flags.contains(nix::sys::statvfs::FsFlags::ST_NOSUID),
        "{} is mounted nosuid: setuid cannot be tested there",
        dir.path().display()
    );
    let fake = FakeDaemon::start(dir.path(), "evil", &valid_for("root"));
    let probe = dir.path().join("client-probe");
    std::fs::copy(env!("CARGO_BIN_EXE_client-probe"), &probe).unwrap();
    nix::unistd::chown(&probe, Some(0.into()), Some(0.into())).unwrap();
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let out = probe_as_nobody(&probe, &fake.socket);
    assert!(out.contains("euid=0 uid=65534"), "not run setuid: {out}");
    assert!(
        out.contains(&format!(
            "socket={} ",
            heare_auth_client::DEFAULT_SOCKET_PATH
        )),
        "{out}"
    );
    assert!(!out.contains("Ok("), "{out}");
    assert_eq!(fake.connections(), 0, "the setuid program reached the fake");

    // The same program without the setuid bit follows the variable (so the check above could
    // fail): the fake is reached and believed.
    std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = probe_as_nobody(&probe, &fake.socket);
    assert!(out.contains("euid=65534 uid=65534"), "{out}");
    assert!(
        out.contains(&format!("socket={} ", fake.socket.display())),
        "{out}"
    );
    assert!(out.contains("Ok("), "{out}");
    assert_eq!(fake.connections(), 1);
}

#[test]
fn server_uids_refuse_a_server_of_another_uid_before_sending_anything() {
    common::assert_root();
    let dir = tempfile::tempdir().unwrap();
    open_dir(dir.path());
    let fake = FakeDaemon::start_as(dir.path(), "evil", &valid_for("alice"), NOBODY);
    let error = Client::builder()
        .socket(&fake.socket)
        .server_uids([0])
        .build()
        .verify(SECRET)
        .unwrap_err();
    assert_untrusted_nobody(&error);
    assert!(error.to_string().contains("uid 65534"), "{error}");
    assert_no_secret(&error, SECRET);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let error = runtime
        .block_on(
            AsyncClient::unix(&fake.socket)
                .server_uids([0])
                .verify(SECRET),
        )
        .unwrap_err();
    assert_untrusted_nobody(&error);
    for n in 1..=2 {
        let lines = fake.connection_lines(n);
        assert!(
            !lines.iter().any(|line| line.starts_with("request")),
            "sent to an untrusted server: {lines:?}"
        );
    }

    // Trusting that uid, both clients are answered (the refusals above came from the check).
    let trusted = Client::builder()
        .socket(&fake.socket)
        .server_uids([0, NOBODY])
        .build();
    assert_eq!(trusted.verify(SECRET).unwrap().key_id, "key_evil");
    let key = runtime
        .block_on(
            AsyncClient::unix(&fake.socket)
                .server_uids([NOBODY])
                .verify(SECRET),
        )
        .unwrap();
    assert_eq!(key.key_id, "key_evil");

    // The real daemon, run by root here, passes [0]; over TCP nothing can be checked.
    let daemon = start(dir.path(), &[], "");
    let client = Client::builder()
        .socket(&daemon.socket)
        .server_uids([0])
        .build();
    assert_eq!(client.verify(SECRET).unwrap().key_id, "key_client");
    let tcp = Client::builder()
        .url("http://127.0.0.1:9")
        .unwrap()
        .server_uids([0])
        .build();
    assert!(matches!(
        tcp.verify(SECRET),
        Err(Error::UntrustedServer { uid: None, .. })
    ));
}

/// The error of a client that refused a server run by uid 65534.
fn assert_untrusted_nobody(error: &Error) {
    assert!(
        matches!(
            error,
            Error::UntrustedServer {
                uid: Some(NOBODY),
                ..
            }
        ),
        "{error:?}"
    );
}
