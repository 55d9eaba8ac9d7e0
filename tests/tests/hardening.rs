//! Smaller holes found in review, each performed against the real binaries: an empty secret that
//! verified, a Unix password typed at the wrong prompt landing in the log, a configuration error
//! quoting the storage secret, a daemon whose memory and environment (STORAGE_SECRET) any
//! other process of its user could read, and secret files (a FIFO, a link, a huge file planted by
//! the owner of their directory) that hung or fed the start and heare-authctl.

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::{DaemonBuilder, binary};
use heare_auth_tests::http::Request;
use heare_auth_tests::keys::{TestKey, key_file, secret_hash};
use heare_auth_tests::process::Group;
use heare_auth_tests::wait_until;
use serde_json::json;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const SECRET: &str = "sec_0HardeningTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

#[test]
fn an_empty_secret_never_verifies_and_import_refuses_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys.json");
    let file = json!({"keys": [
        {"id": "key_empty", "secret": ""},
        {"id": "key_empty_hash", "secret_hash": secret_hash("")},
        {"id": "key_good", "secret": SECRET},
    ]});
    std::fs::write(&store, file.to_string()).unwrap();
    let url = format!("file://{}", store.display());
    let daemon = DaemonBuilder::new(dir.path())
        .args(["--store", &url])
        .start()
        .unwrap();
    for request in [
        Request::new("POST", "/verify").body(r#"{"api_key": ""}"#),
        Request::new("POST", "/verify").body(r#"{"api_key": "  "}"#),
    ] {
        let answer = daemon.request(&request).unwrap();
        assert_ne!(
            answer.status, 200,
            "an empty secret verified: {}",
            answer.body
        );
    }
    assert_eq!(daemon.verify(SECRET).status, 200);
    let warnings = daemon.status()["load_warnings"].to_string();
    assert!(
        warnings.contains("key_empty") && warnings.contains("key_empty_hash"),
        "{warnings}"
    );
    assert!(warnings.contains("empty"), "{warnings}");

    let before = std::fs::read(&store).unwrap();
    let import = dir.path().join("python-keys.json");
    std::fs::write(
        &import,
        json!({"keys": [{"id": "key_imported_empty", "secret": ""}]}).to_string(),
    )
    .unwrap();
    let ctl = Ctl::new(dir.path(), &url, &daemon.socket);
    let output = ctl.run(&["import", import.to_str().unwrap(), "--no-reload"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("empty secret"));
    assert_eq!(
        std::fs::read(&store).unwrap(),
        before,
        "a refused import wrote"
    );
}

#[test]
fn a_password_typed_as_a_key_never_reaches_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_h", SECRET)])).unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap();
    let password = "Qz7#Hunter2xKorrect";
    assert_eq!(daemon.verify(password).status, 403);
    let bearer = Request::new("POST", "/verify").header("Authorization", "Bearer Tr0ub4dor&3Wq");
    assert_eq!(daemon.request(&bearer).unwrap().status, 403);
    let unknown_key = format!("sec_0{}", "Z".repeat(59));
    assert_eq!(daemon.verify(&unknown_key).status, 403);

    let failed = daemon.wait_events("verification_failed");
    assert!(wait_until(Duration::from_secs(5), || daemon
        .events("verification_failed")
        .len()
        == 3));
    let failed = daemon
        .events("verification_failed")
        .into_iter()
        .chain(failed);
    let (shaped, not_shaped): (Vec<_>, Vec<_>) =
        failed.partition(|event| event.get("secret_prefix").is_some());
    assert!(shaped.iter().all(|e| e["secret_prefix"] == "sec_"));
    assert!(!not_shaped.is_empty());
    for event in &not_shaped {
        assert_eq!(event["key_shaped"], false, "{event}");
    }
    let log = daemon.log();
    for typed in [password, "Tr0ub4dor&3Wq"] {
        for window in typed.as_bytes().windows(4) {
            let piece = std::str::from_utf8(window).unwrap();
            assert!(
                !log.contains(piece),
                "{piece:?} of a typed password is in the log"
            );
        }
    }
}

#[test]
fn a_configuration_error_never_quotes_the_storage_secret() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("heare-authd.toml");
    for value in [
        "98765432123456789",
        "987654321.123456789",
        "true",
        "[\"hunter2hunter2\"]",
        "{ inner = \"hunter2hunter2\" }",
        "2026-12-01T00:00:00Z",
        "\"hunter2hunter2",
    ] {
        std::fs::write(
            &config,
            format!("log_level = \"info\"\nstorage_secret = {value}\n"),
        )
        .unwrap();
        let output = Command::new(binary("heare-authd"))
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(2), "{value}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains("storage_secret"), "{value}: {text}");
        for piece in ["98765", "hunter2", "2026-12-01", "true"] {
            assert!(
                !text.contains(piece),
                "{value}: the value was quoted: {text}"
            );
        }
    }
}

#[test]
fn no_other_process_of_the_daemons_user_can_read_its_memory_or_environment() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test runs the daemon as uid 65534 with setpriv and must run as root (CI does)"
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(65534), Some(65534)).unwrap();
    let storage_secret = "storage-secret-in-the-environment";
    let mut daemon = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(binary("heare-authd"))
        .arg("--store")
        .arg(format!("file://{}", state.join("keys.json").display()))
        .arg("--socket")
        .arg(state.join("d.sock"))
        .env("STORAGE_SECRET", storage_secret)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || state.join("d.sock").exists()),
        "the daemon did not start"
    );
    // setpriv execs the daemon: same pid.
    let pid = daemon.id();
    let read_as_same_user = |file: &str| {
        Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["cat", &format!("/proc/{pid}/{file}")])
            .output()
            .unwrap()
    };
    let environ = read_as_same_user("environ");
    let maps = read_as_same_user("maps");
    let _ = daemon.kill();
    let _ = daemon.wait();
    for (file, output) in [("environ", environ), ("maps", maps)] {
        assert!(
            !output.status.success(),
            "another process of the daemon's user read /proc/PID/{file}"
        );
        assert!(!String::from_utf8_lossy(&output.stdout).contains(storage_secret));
    }
}

#[test]
fn a_blank_storage_secret_is_refused_since_its_key_is_public() {
    let dir = tempfile::tempdir().unwrap();
    // Anyone can encrypt under sha256(""): a forged key file an empty secret would accept.
    let store = dir.path().join("keys.json");
    let forged = heare_auth_store::codec::encode_encrypted(
        &key_file(&[TestKey::new("key_forged", SECRET)]),
        &heare_auth_store::codec::StorageSecret::new(""),
    );
    std::fs::write(&store, forged).unwrap();
    let blank_file = dir.path().join("blank-secret");
    std::fs::write(&blank_file, " \t\n").unwrap();
    let config = dir.path().join("heare-authd.toml");
    let cases: [(&str, Option<&str>); 4] = [
        ("storage_secret = \"\"\n", None),
        ("storage_secret = \"   \"\n", None),
        ("", Some("")),
        (
            &format!(
                "storage_secret_file = {:?}\n",
                blank_file.display().to_string()
            ),
            None,
        ),
    ];
    for (text, env) in cases {
        std::fs::write(&config, text).unwrap();
        for check in [true, false] {
            let mut command = Command::new(binary("heare-authd"));
            command
                .arg("--config")
                .arg(&config)
                .arg("--store")
                .arg(format!("file://{}", store.display()))
                .arg("--socket")
                .arg(dir.path().join("d.sock"))
                .env_remove("STORAGE_SECRET");
            if check {
                command.arg("--check-config");
            }
            if let Some(value) = env {
                command.env("STORAGE_SECRET", value);
            }
            let output = command.output().unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(2), "{text:?} {env:?}: {stderr}");
            assert!(stderr.contains("empty or blank"), "{stderr}");
            assert!(
                !dir.path().join("d.sock").exists(),
                "the forged file was served"
            );
        }
    }
}

#[test]
fn key_names_cannot_drive_the_operators_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys.json");
    let file = json!({"keys": [
        {"id": "key_escape", "secret": SECRET, "name": "\u{1b}[2J\u{1b}[Hall fine\rkey_fake",
         "metadata": {"note": "\u{1b}]0;owned\u{7}"}},
    ]});
    std::fs::write(&store, file.to_string()).unwrap();
    let ctl = Ctl::new(
        dir.path(),
        &format!("file://{}", store.display()),
        &dir.path().join("none.sock"),
    );
    for args in [
        vec!["list"],
        vec!["list", "--detailed"],
        vec!["show", "key_escape"],
    ] {
        let out = ctl.ok(&args);
        assert!(
            !out.bytes().any(|b| b == 0x1b || b == b'\r' || b == 0x07),
            "{args:?} printed a control character: {out:?}"
        );
        assert!(out.contains("key_escape"), "{out}");
    }
}

/// `nobody`, the owner of a directory the secret files were put in.
const NOBODY: u32 = 65534;

/// A directory `nobody` owns (as the daemon's user owns its state directory), in `root`.
fn nobodys_directory(root: &Path) -> PathBuf {
    assert!(
        nix::unistd::geteuid().is_root(),
        "switches to nobody with setpriv: run as root (CI does)"
    );
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = root.join("theirs");
    std::fs::create_dir(&theirs).unwrap();
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    theirs
}

/// Runs `program args` as `nobody`: the directory's owner planting something.
fn as_nobody(program: &str, args: &[&str]) {
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(program)
        .args(args)
        .status()
        .expect("run setpriv");
    assert!(status.success(), "nobody's {program} {args:?} failed");
}

/// The configuration naming `path` as `setting`'s secret file.
fn secret_file_config(setting: &str, path: &Path) -> String {
    match setting {
        "storage_secret_file" => {
            format!("storage_secret_file = {:?}\n", path.display().to_string())
        }
        _ => format!(
            "[stats]\nprotocol = \"udp\"\ndest_host = \"127.0.0.1\"\ndest_port = 8125\nsecret_file = {:?}\n",
            path.display().to_string()
        ),
    }
}

/// Runs `command` as the leader of a process group of its own, for at most 20 s: its exit
/// status and stderr, or `None` when it had not finished (the whole group is then stopped).
fn run_bounded(command: &mut Command, dir: &Path) -> (Option<std::process::ExitStatus>, String) {
    let stderr = dir.join("bounded.stderr");
    command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let mut group = Group::spawn(command).unwrap();
    let mut status = None;
    wait_until(Duration::from_secs(20), || {
        status = group.try_wait().ok().flatten();
        status.is_some()
    });
    drop(group);
    (status, std::fs::read_to_string(&stderr).unwrap_or_default())
}

/// The daemon's start and `heare-authctl list` (which reads the daemon's configuration, as root)
/// with `config`: each must end by itself with exit 2 and an error holding `expected`.
fn start_and_ctl_refuse(dir: &Path, config: &str, expected: &str) {
    let store = dir.join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_h", SECRET)])).unwrap();
    let url = format!("file://{}", store.display());
    let config_path = dir.join("daemon.toml");
    std::fs::write(&config_path, config).unwrap();
    let socket = dir.join("d.sock");
    let mut daemon = Command::new(binary("heare-authd"));
    daemon
        .arg("--config")
        .arg(&config_path)
        .args(["--store", &url])
        .arg("--socket")
        .arg(&socket)
        .env_clear();
    let ctl = Ctl::new(dir, &url, &socket).config_text(config);
    for (who, mut command) in [
        ("heare-authd", daemon),
        ("heare-authctl list", ctl.command(&["list"])),
    ] {
        let (status, stderr) = run_bounded(&mut command, dir);
        assert!(status.is_some(), "{who} hung on {config:?}");
        assert_eq!(status.and_then(|s| s.code()), Some(2), "{who}: {stderr}");
        assert!(stderr.contains(expected), "{who}: {stderr}");
        assert!(!socket.exists(), "{who} served");
    }
}

/// The directory holding `storage_secret_file` or `[stats] secret_file` belongs to another user,
/// who plants a FIFO at the name. Before, the daemon's start and every heare-authctl command
/// blocked for ever in `open` (no timeout covers it, `--lock-timeout` included); now both end at
/// once with exit 2, naming the setting and the file. The configuration file itself (`--config`)
/// gets the same check.
#[test]
fn a_fifo_planted_at_a_secret_file_hangs_neither_the_start_nor_ctl() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = nobodys_directory(dir.path());
    for setting in ["storage_secret_file", "stats.secret_file"] {
        let fifo = theirs.join(setting);
        as_nobody("mkfifo", &[fifo.to_str().unwrap()]);
        let expected = format!(
            "setting {setting}: refusing {}: it is not a regular file",
            fifo.display()
        );
        start_and_ctl_refuse(dir.path(), &secret_file_config(setting, &fifo), &expected);
    }
    let fifo = theirs.join("config.toml");
    as_nobody("mkfifo", &[fifo.to_str().unwrap()]);
    let (status, stderr) = run_bounded(
        Command::new(binary("heare-authd"))
            .arg("--config")
            .arg(&fifo)
            .arg("--check-config")
            .env_clear(),
        dir.path(),
    );
    assert_eq!(status.and_then(|s| s.code()), Some(2), "{stderr}");
    assert!(
        stderr.contains("configuration file") && stderr.contains("not a regular file"),
        "{stderr}"
    );
}

/// The same directory's owner plants a link at the secret file's name, to a root-only file they
/// cannot read (root's heare-authctl would use its content as the storage secret, telling them
/// whether it is blank or large and deriving from it a key they may test guesses against), or a
/// file too large to be a secret (64 KiB + 1): both refused, at start and by heare-authctl, with
/// the setting named.
#[test]
fn a_link_or_a_huge_file_at_a_secret_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let theirs = nobodys_directory(dir.path());
    let root_only = dir.path().join("root-only");
    std::fs::write(&root_only, "a root-only file\n").unwrap();
    std::fs::set_permissions(&root_only, std::fs::Permissions::from_mode(0o600)).unwrap();
    for setting in ["storage_secret_file", "stats.secret_file"] {
        let link = theirs.join(format!("{setting}.link"));
        as_nobody(
            "ln",
            &["-s", root_only.to_str().unwrap(), link.to_str().unwrap()],
        );
        let expected = format!(
            "setting {setting}: refusing {}: it is a symbolic link",
            link.display()
        );
        start_and_ctl_refuse(dir.path(), &secret_file_config(setting, &link), &expected);

        let huge = theirs.join(format!("{setting}.huge"));
        as_nobody(
            "sh",
            &[
                "-c",
                &format!("head -c 65537 /dev/zero | tr '\\0' a > {}", huge.display()),
            ],
        );
        let expected = format!(
            "setting {setting}: refusing {}: it is larger than 65536 bytes",
            huge.display()
        );
        start_and_ctl_refuse(dir.path(), &secret_file_config(setting, &huge), &expected);
    }
}
