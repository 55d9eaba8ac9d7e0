//! The change log written by heare-authctl, end to end with the real binary: every kind of write
//! commits a numbered change object beside the key object (no secret in it, the key file's owner
//! and mode), `log` tells the history, racing writers on s3s leave no gap and lose nothing, a
//! writer killed between its commit and the key object's rewrite is caught up by the next one,
//! and an invalid, replayed or planted object stops writers until `compact --drop-invalid`.

use heare_auth_store::codec::{StorageSecret, decode};
use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::process::Group;
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::wait_until;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// ctl on a file store in `dir` with no daemon to reload.
fn file_ctl(dir: &Path) -> Ctl {
    let url = format!("file://{}", dir.join("keys.json").display());
    Ctl::new(dir, &url, &dir.join("none.sock"))
}

fn changes_dir(dir: &Path) -> PathBuf {
    dir.join("keys.json.changes")
}

fn change_path(dir: &Path, seq: u64) -> PathBuf {
    changes_dir(dir).join(format!("{seq:020}.json"))
}

fn change(dir: &Path, seq: u64) -> Value {
    serde_json::from_slice(&std::fs::read(change_path(dir, seq)).unwrap()).unwrap()
}

fn key_object(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("keys.json")).unwrap()).unwrap()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn every_kind_of_write_is_one_numbered_change_without_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let imported = TestKey::new("key_0imported00", "sec_imported_plaintext_secret_value");
    std::fs::write(dir.path().join("import.json"), key_file(&[imported])).unwrap();
    // The store starts as the Python service wrote it: a plaintext secret.
    let python = TestKey::new("key_0python0000", "sec_python_plaintext_secret_value0");
    std::fs::write(dir.path().join("keys.json"), key_file(&[python])).unwrap();
    let ctl = file_ctl(dir.path());
    let (id, secret) = ctl.create(&["--name", "A", "--no-reload", "--reason", "ticket 7"]);
    let import = dir.path().join("import.json").display().to_string();
    let steps: Vec<(&str, Vec<&str>)> = vec![
        ("rotate", vec!["rotate", &id, "--json", "--no-reload"]),
        ("disable", vec!["disable", &id, "--no-reload"]),
        ("enable", vec!["enable", &id, "--no-reload"]),
        (
            "scopes",
            vec!["scopes", &id, "--add", "read", "--no-reload"],
        ),
        (
            "expire",
            vec!["expire", &id, "--at", "2099-01-01T00:00:00Z", "--no-reload"],
        ),
        ("import", vec!["import", &import, "--no-reload"]),
        ("delete", vec!["delete", &id, "--yes", "--no-reload"]),
    ];
    let mut rotated = String::new();
    for (_, args) in &steps {
        let out = ctl.ok(args);
        if args[0] == "rotate" {
            let json: Value = serde_json::from_str(&out).unwrap();
            rotated = json["secret"].as_str().unwrap().to_string();
        }
    }
    let first = change(dir.path(), 1);
    assert_eq!(first["operation"], "create");
    assert_eq!(first["reason"], "ticket 7");
    assert_eq!(first["keys"][0]["id"], id.as_str());
    assert!(first["author"]["user"].is_string() && first["author"]["host"].is_string());
    for (n, (operation, _)) in steps.iter().enumerate() {
        let seq = n as u64 + 2;
        assert_eq!(
            change(dir.path(), seq)["operation"],
            *operation,
            "change {seq}"
        );
        assert_eq!(change(dir.path(), seq)["seq"], seq);
    }
    let deleted = change(dir.path(), 8);
    assert_eq!(deleted["keys"][0]["key"], Value::Null, "{deleted}");
    assert!(!change_path(dir.path(), 9).exists());

    let object = key_object(dir.path());
    assert_eq!(object["change_seq"], 8);
    let store_id = object["store_id"].as_str().unwrap();
    assert!(
        store_id.starts_with("store_") && store_id.len() == 26,
        "{store_id}"
    );
    assert_eq!(first["store_id"], store_id);
    // The key object stays the Python service's document: its plaintext key is intact.
    assert_eq!(
        object["keys"][0]["secret"],
        "sec_python_plaintext_secret_value0"
    );

    let key_mode = std::fs::metadata(dir.path().join("keys.json"))
        .unwrap()
        .permissions()
        .mode();
    for seq in 1..=8 {
        let raw = std::fs::read_to_string(change_path(dir.path(), seq)).unwrap();
        for secret in [
            &secret,
            &rotated,
            &"sec_imported_plaintext_secret_value".to_string(),
            &"sec_python_plaintext_secret_value0".to_string(),
        ] {
            assert!(
                !raw.contains(secret.as_str()),
                "change {seq} holds a secret"
            );
        }
        let mode = std::fs::metadata(change_path(dir.path(), seq))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, key_mode & 0o777, "change {seq}");
    }
    let listing = std::fs::read_dir(changes_dir(dir.path())).unwrap().count();
    assert_eq!(listing, 8, "no temporary files left");
}

#[test]
fn log_tells_the_history_and_filters_it() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    let (a, _) = ctl.create(&["--name", "A", "--no-reload"]);
    let (b, _) = ctl.create(&["--name", "B", "--no-reload", "--reason", "for billing"]);
    ctl.ok(&[
        "disable",
        &a,
        "--no-reload",
        "--reason",
        "leaked in a ticket",
    ]);

    let text = ctl.ok(&["log"]);
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].starts_with("#1 ") && lines[0].contains(" create by "),
        "{text}"
    );
    assert!(
        lines[2].starts_with("#3 ") && lines[2].contains(" disable by "),
        "{text}"
    );
    assert!(text.contains("reason: leaked in a ticket"), "{text}");
    assert!(text.contains(&format!("{a} disabled")), "{text}");
    assert!(!text.contains("sha256:"), "no hash is shown: {text}");

    let json: Value = serde_json::from_str(&ctl.ok(&["log", "--json", "--key", &a])).unwrap();
    let seqs: Vec<u64> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 3]);
    assert_eq!(json[1]["keys"][0]["state"], "disabled");
    assert!(json[1]["keys"][0].get("secret_hash").is_none());

    let from: Value = serde_json::from_str(&ctl.ok(&["log", "--json", "--from", "2"])).unwrap();
    assert_eq!(from.as_array().unwrap().len(), 2);
    assert_eq!(from[0]["keys"][0]["id"], b.as_str());
    let none: Value =
        serde_json::from_str(&ctl.ok(&["log", "--json", "--since", "2099-01-01T00:00:00Z"]))
            .unwrap();
    assert_eq!(none.as_array().unwrap().len(), 0);
}

#[test]
fn a_reason_shaped_like_a_secret_or_with_control_characters_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    let (_, secret) = ctl.create(&["--name", "A", "--no-reload"]);
    for reason in [
        format!("oops {secret}"),
        "two\nlines".to_string(),
        "\u{1b}[2J".to_string(),
    ] {
        let out = ctl.run(&["create", "--name", "B", "--no-reload", "--reason", &reason]);
        assert_eq!(out.status.code(), Some(2), "{reason:?}: {}", stderr(&out));
        assert!(!stderr(&out).contains(&secret));
    }
    assert!(!change_path(dir.path(), 2).exists(), "nothing was written");
}

#[test]
fn racing_writers_on_s3_commit_every_change_once_with_no_gap() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket("log").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctl = s3.ctl(
        dir.path(),
        ("log", "keys.json"),
        &dir.path().join("none.sock"),
        &[],
    );
    std::thread::scope(|scope| {
        for writer in 0..20 {
            let ctl = &ctl;
            scope
                .spawn(move || ctl.ok(&["create", "--name", &format!("w{writer}"), "--no-reload"]));
        }
    });
    let object: Value =
        serde_json::from_slice(&s3.get_object("log", "keys.json").unwrap().unwrap()).unwrap();
    assert_eq!(object["change_seq"], 20);
    assert_eq!(object["keys"].as_array().unwrap().len(), 20);
    // Readers learn the number with a HEAD: the object's metadata says it too.
    let metadata = s3.metadata("log", "keys.json").unwrap();
    assert_eq!(
        metadata.get("change-seq").map(String::as_str),
        Some("20"),
        "{metadata:?}"
    );
    let mut ids = Vec::new();
    for seq in 1..=20u64 {
        let key = format!("keys.json.changes/{seq:020}.json");
        let body = s3
            .get_object("log", &key)
            .unwrap()
            .unwrap_or_else(|| panic!("change {seq} missing"));
        let change: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(change["seq"], seq);
        ids.push(change["keys"][0]["id"].as_str().unwrap().to_string());
    }
    assert!(
        s3.get_object("log", "keys.json.changes/00000000000000000021.json")
            .unwrap()
            .is_none()
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 20, "each change is another writer's key");
}

/// Holds the file store's lock (`keys.json.lock`) from a `flock` child process until dropped.
struct HeldLock(Group);

impl HeldLock {
    fn take(dir: &Path) -> HeldLock {
        let lock = dir.join("keys.json.lock");
        let mut command = std::process::Command::new("flock");
        command.arg(&lock).args(["sleep", "600"]);
        let group = Group::spawn(&mut command).unwrap();
        assert!(wait_until(Duration::from_secs(5), || lock.exists()));
        std::thread::sleep(Duration::from_millis(200));
        HeldLock(group)
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// Runs `args` of ctl with the key file mounted read-only over itself (bubblewrap): the writer
/// commits its change, then cannot rename the new key object into place (EBUSY) and stops —
/// a writer that stopped between its two steps, every time.
fn stopped_after_commit(ctl: &Ctl, dir: &Path, args: &[&str]) -> std::process::Output {
    let key_file = dir.join("keys.json");
    let plain = ctl.command(args);
    let mut command = std::process::Command::new("bwrap");
    command
        .args(["--dev-bind", "/", "/", "--ro-bind"])
        .arg(&key_file)
        .arg(&key_file)
        .arg("--")
        .arg(plain.get_program())
        .args(plain.get_args())
        .env_clear()
        .envs(plain.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .stdin(std::process::Stdio::null());
    let out = command.output().expect("run bwrap");
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is committed in the log, but the key object could not be rewritten"),
        "{}",
        stderr(&out)
    );
    out
}

#[test]
fn a_writer_stopped_after_its_commit_is_caught_up_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    let (a, _) = ctl.create(&["--name", "A", "--no-reload"]);
    stopped_after_commit(&ctl, dir.path(), &["disable", &a, "--no-reload"]);
    assert!(change_path(dir.path(), 2).exists());
    assert_eq!(
        key_object(dir.path())["change_seq"],
        1,
        "the key object lags"
    );

    let out = ctl.run(&["create", "--name", "B", "--no-reload", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("brought up to date"),
        "{}",
        stderr(&out)
    );
    let object = key_object(dir.path());
    assert_eq!(object["change_seq"], 3);
    assert_eq!(
        object["keys"][0]["disabled"], true,
        "the killed writer's change is in"
    );
    assert_eq!(object["keys"].as_array().unwrap().len(), 2);
}

#[test]
fn an_invalid_or_replayed_change_stops_writers_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    ctl.create(&["--name", "A", "--no-reload"]);
    ctl.create(&["--name", "B", "--no-reload"]);
    let before = std::fs::read(dir.path().join("keys.json")).unwrap();

    // An old change copied to the next number (a replay by someone who can write the store).
    std::fs::copy(change_path(dir.path(), 1), change_path(dir.path(), 3)).unwrap();
    let out = ctl.run(&["create", "--name", "C", "--no-reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("change 3") && stderr(&out).contains("compact --drop-invalid 3"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        std::fs::read(dir.path().join("keys.json")).unwrap(),
        before,
        "nothing written"
    );
    assert!(!change_path(dir.path(), 4).exists());

    // Garbage in its place is refused the same way; a valid change is never dropped.
    std::fs::write(change_path(dir.path(), 3), b"not json").unwrap();
    assert_eq!(
        ctl.run(&["create", "--name", "C", "--no-reload"])
            .status
            .code(),
        Some(1)
    );
    let refused = ctl.run(&["compact", "--drop-invalid", "2", "--yes"]);
    assert_eq!(refused.status.code(), Some(2), "{}", stderr(&refused));
    let unconfirmed = ctl.run(&["compact", "--drop-invalid", "3"]);
    assert_eq!(unconfirmed.status.code(), Some(2));
    assert!(change_path(dir.path(), 3).exists());
    ctl.ok(&["compact", "--drop-invalid", "3", "--yes"]);
    ctl.create(&["--name", "C", "--no-reload"]);
    assert_eq!(change(dir.path(), 3)["operation"], "create");
    assert_eq!(key_object(dir.path())["keys"].as_array().unwrap().len(), 3);
}

#[test]
fn a_plain_change_under_a_storage_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let secret = StorageSecret::new("change-log storage secret for the test");
    let ctl = file_ctl(dir.path()).env(vec![(
        "STORAGE_SECRET".into(),
        "change-log storage secret for the test".into(),
    )]);
    ctl.create(&["--name", "A", "--no-reload"]);
    let raw = std::fs::read(change_path(dir.path(), 1)).unwrap();
    assert!(
        raw.starts_with(b"HEARE_ENCRYPTED_V1:"),
        "encrypted as the key object is"
    );
    // Someone who can write the store but holds no secret writes a well-formed plain change
    // (right number, right store id) at the next number: it is not applied.
    let first: Value = serde_json::from_slice(&decode(&raw, Some(&secret)).unwrap()).unwrap();
    let mut forged = first.clone();
    forged["seq"] = 2.into();
    forged["operation"] = "delete".into();
    forged["keys"][0]["key"] = Value::Null;
    std::fs::write(
        change_path(dir.path(), 2),
        serde_json::to_vec(&forged).unwrap(),
    )
    .unwrap();
    let out = ctl.run(&["create", "--name", "B", "--no-reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("change 2"), "{}", stderr(&out));
    let raw = std::fs::read(dir.path().join("keys.json")).unwrap();
    let object: Value = serde_json::from_slice(&decode(&raw, Some(&secret)).unwrap()).unwrap();
    assert_eq!(
        object["keys"].as_array().unwrap().len(),
        1,
        "the key is still there"
    );
}

#[test]
fn a_link_planted_at_the_log_directory_is_refused_and_its_target_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let target = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    ctl.create(&["--name", "A", "--no-reload"]);
    std::fs::remove_dir_all(changes_dir(dir.path())).unwrap();
    std::os::unix::fs::symlink(target.path(), changes_dir(dir.path())).unwrap();
    let before = std::fs::read(dir.path().join("keys.json")).unwrap();
    let out = ctl.run(&["create", "--name", "B", "--no-reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("not a directory"), "{}", stderr(&out));
    assert_eq!(std::fs::read_dir(target.path()).unwrap().count(), 0);
    assert_eq!(std::fs::read(dir.path().join("keys.json")).unwrap(), before);
}

#[test]
fn compact_deletes_only_old_changes_the_key_object_contains() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    for name in ["A", "B", "C"] {
        ctl.create(&["--name", name, "--no-reload"]);
    }
    // Nothing is older than an hour: nothing goes.
    ctl.ok(&["compact", "--keep", "1h"]);
    assert_eq!(
        std::fs::read_dir(changes_dir(dir.path())).unwrap().count(),
        3
    );
    std::thread::sleep(Duration::from_millis(1100));
    // Change 4 committed but not in the key object (its writer stopped): it stays.
    stopped_after_commit(&ctl, dir.path(), &["create", "--name", "D", "--no-reload"]);
    assert!(change_path(dir.path(), 4).exists());
    let out = ctl.ok(&["compact", "--keep", "1s"]);
    assert!(out.contains("deleted 3"), "{out}");
    let left: Vec<bool> = (1..=4)
        .map(|n| change_path(dir.path(), n).exists())
        .collect();
    // 1 to 3 go; 4, which the key object lacks, stays (and is the newest).
    assert_eq!(left, [false, false, false, true]);
    ctl.create(&["--name", "E", "--no-reload"]);
    assert_eq!(key_object(dir.path())["keys"].as_array().unwrap().len(), 5);
}

/// What the Python service needs of the key object to load it: `{"keys": [...]}` with, for every
/// key, a string `id`, `secret` and `name` (its model's required fields); anything else it
/// ignores. Returns the plaintext secrets it would verify.
fn python_loadable_secrets(object: &Value) -> Vec<String> {
    let keys = object["keys"].as_array().expect("a keys array");
    keys.iter()
        .map(|key| {
            assert!(key["id"].is_string() && key["name"].is_string(), "{key}");
            key["secret"]
                .as_str()
                .expect("a plaintext secret")
                .to_string()
        })
        .collect()
}

#[test]
fn a_python_store_still_loads_there_after_each_kind_of_write() {
    let dir = tempfile::tempdir().unwrap();
    let keys = [
        TestKey::new("key_0python0001", "sec_python_plaintext_secret_one_00"),
        TestKey::new("key_0python0002", "sec_python_plaintext_secret_two_00"),
        TestKey::new("key_0python0003", "sec_python_plaintext_secret_three0"),
    ];
    std::fs::write(dir.path().join("keys.json"), key_file(&keys)).unwrap();
    let ctl = file_ctl(dir.path());
    let steps: [&[&str]; 4] = [
        &["disable", "key_0python0001", "--no-reload"],
        &["scopes", "key_0python0002", "--add", "read", "--no-reload"],
        &[
            "expire",
            "key_0python0003",
            "--at",
            "2099-01-01T00:00:00Z",
            "--no-reload",
        ],
        &["delete", "key_0python0001", "--yes", "--no-reload"],
    ];
    for step in steps {
        ctl.ok(step);
        let secrets = python_loadable_secrets(&key_object(dir.path()));
        assert!(
            secrets.contains(&"sec_python_plaintext_secret_two_00".to_string()),
            "{step:?}"
        );
    }
    let secrets = python_loadable_secrets(&key_object(dir.path()));
    assert_eq!(secrets.len(), 2, "the deleted key is gone");
    assert!(!secrets.contains(&"sec_python_plaintext_secret_one_00".to_string()));
    assert_eq!(key_object(dir.path())["change_seq"], 4);
}

/// The author of a change on S3 names the AWS principal, asked of STS (moto answers as AWS
/// would); with `[s3] endpoint` set (an S3-compatible server, no STS) it is not asked.
#[test]
fn the_aws_principal_is_recorded_from_sts_and_not_asked_of_an_s3_endpoint() {
    use heare_auth_tests::fleet::moto::{Moto, block_on, s3_client};
    use heare_auth_tests::s3_server::{ACCESS_KEY, REGION, SECRET_KEY};
    let moto = Moto::start().unwrap();
    let client = s3_client(&moto.endpoint());
    block_on(async { client.create_bucket().bucket("sts").send().await })
        .unwrap()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let env = vec![
        ("AWS_ACCESS_KEY_ID".to_string(), ACCESS_KEY.to_string()),
        ("AWS_SECRET_ACCESS_KEY".to_string(), SECRET_KEY.to_string()),
        ("AWS_REGION".to_string(), REGION.to_string()),
        ("AWS_EC2_METADATA_DISABLED".to_string(), "true".to_string()),
    ];
    let sock = dir.path().join("none.sock");
    let via_environment = Ctl::new(dir.path(), "s3://sts/keys.json", &sock)
        .config_text("[s3]\npath_style = true\n")
        .env(env.clone())
        .env(vec![("AWS_ENDPOINT_URL".to_string(), moto.endpoint())]);
    via_environment.create(&["--name", "A", "--no-reload"]);
    let read = |seq: u64| -> Value {
        let key = format!("keys.json.changes/{seq:020}.json");
        let bytes = block_on(async {
            let object = client.get_object().bucket("sts").key(key).send().await?;
            Ok::<_, anyhow::Error>(object.body.collect().await?.into_bytes())
        })
        .unwrap()
        .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    };
    let principal = read(1)["author"]["aws_principal"].clone();
    assert!(
        principal
            .as_str()
            .is_some_and(|arn| arn.starts_with("arn:aws:")),
        "{principal}"
    );

    let dir2 = tempfile::tempdir().unwrap();
    let configured = Ctl::new(dir2.path(), "s3://sts/keys.json", &sock)
        .config_text(&format!(
            "[s3]\npath_style = true\nendpoint = \"{}\"\n",
            moto.endpoint()
        ))
        .env(env);
    configured.create(&["--name", "B", "--no-reload"]);
    assert_eq!(read(2)["author"].get("aws_principal"), None, "{}", read(2));
}

/// As under /var/lib/heare-auth: the directory and the key file belong to the daemon's user, and
/// root's ctl writes. The log's directory and objects are born that user's (made with its
/// filesystem identity, never made by root and handed over), with the key file's mode.
#[test]
fn root_makes_the_log_as_the_key_files_owner() {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::geteuid().is_root() {
        heare_auth_tests::record_skip("change_log", "needs root to own files as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::write(state.join("keys.json"), br#"{"keys": []}"#).unwrap();
    std::fs::set_permissions(
        state.join("keys.json"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    for path in [&state, &state.join("keys.json")] {
        nix::unistd::chown(path.as_path(), Some(1234.into()), Some(1235.into())).unwrap();
    }
    file_ctl(&state).create(&["--name", "A", "--no-reload"]);
    let log_dir = std::fs::metadata(changes_dir(&state)).unwrap();
    assert_eq!((log_dir.uid(), log_dir.gid()), (1234, 1235));
    assert_eq!(log_dir.mode() & 0o7777, 0o750);
    let first = std::fs::metadata(change_path(&state, 1)).unwrap();
    assert_eq!(
        (first.uid(), first.gid(), first.mode() & 0o7777),
        (1234, 1235, 0o640)
    );
}

/// The Python service's CLI rewrites the key object (dropping `store_id` and `change_seq`)
/// between ctl's commit and its rewrite of the key object: ctl applies its committed change to
/// what the Python CLI wrote, keeps the log's identity, and loses neither write.
#[test]
fn a_log_unaware_write_between_commit_and_rewrite_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    let (a, _) = ctl.create(&["--name", "A", "--no-reload"]);
    let (b, _) = ctl.create(&["--name", "B", "--no-reload"]);
    let store_id = key_object(dir.path())["store_id"].clone();
    // The writer reads the key object, then waits for the lock to commit; meanwhile the Python
    // CLI (which takes no lock) rewrites the key object: the writer's commit then its rewrite
    // (If-Match on what it read) meet a key object without the log's fields.
    let lock = HeldLock::take(dir.path());
    let mut writer =
        Group::spawn(&mut ctl.command(&["delete", &a, "--yes", "--no-reload"])).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        writer.try_wait().unwrap().is_none(),
        "the writer waits for the lock"
    );
    assert!(
        !change_path(dir.path(), 3).exists(),
        "nothing committed under a held lock"
    );
    // The Python CLI: read, rename key B, write back {"keys": [...]} only, by rename.
    let mut python = key_object(dir.path());
    let keys = python["keys"].as_array_mut().unwrap();
    keys.iter_mut()
        .filter(|k| k["id"] == b.as_str())
        .for_each(|k| k["name"] = "B2".into());
    let rewritten = serde_json::json!({ "keys": python["keys"].clone() });
    std::fs::write(
        dir.path().join("py.tmp"),
        serde_json::to_vec_pretty(&rewritten).unwrap(),
    )
    .unwrap();
    std::fs::rename(dir.path().join("py.tmp"), dir.path().join("keys.json")).unwrap();
    drop(lock);
    let status = wait_until(Duration::from_secs(20), || {
        writer.try_wait().unwrap().is_some()
    });
    assert!(status, "ctl finished");
    let object = key_object(dir.path());
    let ids: Vec<&str> = object["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [b.as_str()], "the delete is in: {object}");
    assert_eq!(object["keys"][0]["name"], "B2", "the Python write is kept");
    assert_eq!(object["change_seq"], 3);
    assert_eq!(object["store_id"], store_id, "the log's identity is kept");
    // The history stays valid: every change reads as this store's.
    let log: Value = serde_json::from_str(&ctl.ok(&["log", "--json"])).unwrap();
    assert!(
        log.as_array()
            .unwrap()
            .iter()
            .all(|c| c.get("invalid").is_none()),
        "{log}"
    );
}

/// A change numbered u64::MAX planted beside a key object a writer that keeps no log rewrote (so
/// writers find the log's end by listing): writers stop at it instead of wrapping the numbers,
/// and `compact --drop-invalid` removes it.
#[test]
fn a_number_planted_near_the_end_of_u64_stops_writers_until_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    ctl.create(&["--name", "A", "--no-reload"]);
    let planted = changes_dir(dir.path()).join(format!("{}.json", u64::MAX));
    std::fs::copy(change_path(dir.path(), 1), &planted).unwrap();
    let keys_only = serde_json::json!({ "keys": key_object(dir.path())["keys"].clone() });
    std::fs::write(
        dir.path().join("keys.json"),
        serde_json::to_vec(&keys_only).unwrap(),
    )
    .unwrap();

    let out = ctl.run(&["create", "--name", "B", "--no-reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("change {}", u64::MAX)),
        "{}",
        stderr(&out)
    );
    ctl.ok(&["compact", "--drop-invalid", &u64::MAX.to_string(), "--yes"]);
    assert!(!planted.exists());
    ctl.create(&["--name", "B", "--no-reload"]);
    assert_eq!(key_object(dir.path())["change_seq"], 2);
}

/// The daemon's user plants a FIFO (or any non-file) at the next number: it is never opened for
/// reading, writers stop at it naming it, `log` lists it as invalid instead of failing, and
/// `compact --drop-invalid` removes it.
#[test]
fn a_fifo_planted_at_the_next_number_is_listed_invalid_and_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let ctl = file_ctl(dir.path());
    ctl.create(&["--name", "A", "--no-reload"]);
    nix::unistd::mkfifo(
        &change_path(dir.path(), 2),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let out = ctl.run(&["create", "--name", "B", "--no-reload"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("change 2") && stderr(&out).contains("not a regular file"),
        "{}",
        stderr(&out)
    );
    let listed = ctl.ok(&["log"]);
    assert!(listed.contains("#2 INVALID: refusing"), "{listed}");
    ctl.ok(&["compact", "--drop-invalid", "2", "--yes"]);
    assert!(!change_path(dir.path(), 2).exists());
    ctl.create(&["--name", "B", "--no-reload"]);
    assert_eq!(change(dir.path(), 2)["operation"], "create");
}
