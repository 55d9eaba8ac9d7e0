//! Files on disk: the socket gets exactly the configured mode and group; every file the daemon or
//! heare-authctl writes (last-known-good cache, a created key file, rewritten key files, lock and
//! temporary files) is 0600 or 0640 and never world-readable, and every directory they create is
//! writable by the owner only — even under `umask 000`, which these tests set for themselves and
//! every process they start, so nothing can rely on a friendly umask.

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::DaemonBuilder;
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::wait_until;
use nix::sys::stat::{Mode, umask};
use nix::unistd::Group;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

const SECRET: &str = "sec_0FileModesTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// Files the test harness itself writes (not the daemon or ctl).
const HARNESS_FILES: [&str; 4] = ["heare-authd.toml", "daemon.log", "ctl.toml", "seed.json"];

fn hostile_umask() {
    umask(Mode::empty());
}

/// The test's own directory: made under the hostile umask it would be world-writable, and the
/// daemon refuses to put its socket where another user could replace it.
fn private_tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

/// Every file and directory under `dir` not written by the harness: files 0600/0640, directories
/// not writable by group or others; sockets are checked separately.
fn assert_private_tree(dir: &Path) -> Vec<(PathBuf, u32)> {
    let mut seen = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let metadata = std::fs::symlink_metadata(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let bits = metadata.permissions().mode() & 0o7777;
        if metadata.is_dir() {
            assert_eq!(
                bits & 0o022,
                0,
                "{} is writable by others: {bits:o}",
                path.display()
            );
            seen.extend(assert_private_tree(&path));
        } else if metadata.file_type().is_file() && !HARNESS_FILES.contains(&name.as_str()) {
            assert!(
                bits == 0o600 || bits == 0o640,
                "{} has mode {bits:o}",
                path.display()
            );
            seen.push((path, bits));
        }
    }
    seen
}

#[test]
fn the_socket_has_the_configured_mode_and_group() {
    hostile_umask();
    let nogroup = Group::from_name("nogroup")
        .unwrap()
        .or_else(|| Group::from_name("nobody").unwrap())
        .expect("a nogroup or nobody group");
    for (socket_mode, group) in [
        ("0600", None),
        ("0660", Some(&nogroup)),
        ("0640", Some(&nogroup)),
        ("0666", None),
    ] {
        let dir = private_tempdir();
        let store = dir.path().join("keys.json");
        std::fs::write(&store, key_file(&[TestKey::new("key_modes", SECRET)])).unwrap();
        let mut builder = DaemonBuilder::new(dir.path())
            .arg("--store")
            .arg(format!("file://{}", store.display()))
            .args(["--socket-mode", socket_mode])
            // The socket in a directory the daemon has to create.
            .socket(dir.path().join("run/sub/heare-authd.sock"));
        if let Some(group) = group {
            builder = builder.args(["--socket-group", &group.name]);
        }
        let daemon = builder.start().unwrap();
        let metadata = std::fs::metadata(&daemon.socket).unwrap();
        assert_eq!(
            format!("{:04o}", metadata.permissions().mode() & 0o7777),
            socket_mode
        );
        let expected_gid =
            group.map_or_else(|| nix::unistd::getegid().as_raw(), |g| g.gid.as_raw());
        assert_eq!(metadata.gid(), expected_gid, "group of the socket");
        for created in [dir.path().join("run"), dir.path().join("run/sub")] {
            let bits = mode(&created);
            assert_eq!(bits & 0o022, 0, "{} created {bits:o}", created.display());
        }
        assert_eq!(daemon.verify(SECRET).status, 200);
    }
}

#[test]
fn the_daemon_writes_only_private_files() {
    hostile_umask();
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("modes").unwrap();
    s3.put_object(
        "modes",
        "keys.json",
        &key_file(&[TestKey::new("key_modes", SECRET)]),
    )
    .unwrap();
    let dir = private_tempdir();
    let cache = dir.path().join("keys.cache");
    let daemon = DaemonBuilder::new(dir.path())
        .args(["--store", "s3://modes/keys.json", "--s3-path-style"])
        .arg("--cache")
        .arg(cache.display().to_string())
        .envs(s3.env_for_client())
        .start()
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || cache.exists()));
    assert_eq!(mode(&cache), 0o600);
    assert_eq!(daemon.refresh().status, 200);
    assert_eq!(mode(&cache), 0o600, "rewritten cache");
    drop(daemon);

    // A key file the daemon creates, in directories it creates.
    let store = dir.path().join("state/deeper/keys.json");
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .socket(dir.path().join("second.sock"))
        .start()
        .unwrap();
    assert_eq!(daemon.status()["keys_loaded"], 0);
    assert_eq!(mode(&store), 0o600);
    let files = assert_private_tree(dir.path());
    assert!(files.iter().any(|(path, _)| path == &cache));
    assert!(files.iter().any(|(path, _)| path == &store));
}

#[test]
fn heare_authctl_writes_only_private_files_and_keeps_a_stricter_mode() {
    hostile_umask();
    let dir = private_tempdir();
    let store = dir.path().join("keys.json");
    let url = format!("file://{}", store.display());
    let socket = dir.path().join("none.sock");
    let ctl = Ctl::new(dir.path(), &url, &socket);
    // A new store file.
    ctl.create(&["--name", "first", "--no-reload"]);
    assert_eq!(mode(&store), 0o600, "a store file ctl creates");
    // An existing 0640 file stays 0640; a 0600 one stays 0600, through every kind of write.
    for kept in [0o640, 0o600] {
        std::fs::set_permissions(&store, std::fs::Permissions::from_mode(kept)).unwrap();
        let (id, _) = ctl.create(&["--name", "second", "--no-reload"]);
        assert_eq!(mode(&store), kept);
        ctl.ok(&["rotate", &id, "--no-reload"]);
        ctl.ok(&["disable", &id, "--no-reload"]);
        ctl.ok(&["delete", &id, "--yes", "--no-reload"]);
        assert_eq!(mode(&store), kept);
    }
    // Encrypted, and an import.
    let encrypted = Ctl::new(dir.path(), &url, &socket)
        .env(vec![("STORAGE_SECRET".into(), "file-modes-storage".into())]);
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, key_file(&[TestKey::new("key_imported", SECRET)])).unwrap();
    std::fs::remove_file(&store).unwrap();
    encrypted.ok(&["import", seed.to_str().unwrap(), "--no-reload"]);
    assert_eq!(mode(&store), 0o600);
    let files = assert_private_tree(dir.path());
    assert!(
        files
            .iter()
            .all(|(path, _)| !path.file_name().unwrap().to_string_lossy().contains(".tmp")),
        "temporary files left behind: {files:?}"
    );
}
