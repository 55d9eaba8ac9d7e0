//! Encryption must give integrity: someone who can write the S3 object but does not hold the
//! storage secret replaces it with a plaintext key file that adds a key of their own. With a
//! storage secret configured, the daemon refuses that body at start and at reload (the previous
//! set is kept, `/status` says why, the last-known-good cache is not replaced), so the injected
//! key never verifies; heare-authctl refuses to rewrite it in plaintext and names
//! `migrate --encrypt`, which then makes it loadable.

use heare_auth_store::codec::{StorageSecret, encode_encrypted, is_encrypted};
use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::DaemonBuilder;
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::s3_server::S3Server;
use std::path::Path;
use std::time::Duration;

const BUCKET: &str = "heare-auth-test";
const OBJECT: &str = "keys.json";
const STORAGE_SECRET: &str = "storage-secret-of-the-integrity-tests";
const OWNER: &str = "sec_0LegitimateKeyOfTheOwnerAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const INJECTED: &str = "sec_0InjectedByTheBucketWriterXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";

fn daemon_on(s3: &S3Server, dir: &Path) -> DaemonBuilder {
    s3.daemon(dir, BUCKET, OBJECT)
        .env("STORAGE_SECRET", STORAGE_SECRET)
}

/// heare-authctl on the test object, with the storage secret.
fn ctl_on(s3: &S3Server, dir: &Path) -> Ctl {
    s3.ctl(
        dir,
        (BUCKET, OBJECT),
        &dir.join("none.sock"),
        &[("STORAGE_SECRET", STORAGE_SECRET)],
    )
}

/// What the attacker uploads: the owner's key plus one of their own, in plain JSON.
fn forged_plaintext() -> Vec<u8> {
    key_file(&[
        TestKey::new("key_owner", OWNER),
        TestKey::new("key_injected", INJECTED),
    ])
}

#[test]
fn a_plaintext_object_is_refused_at_reload_and_at_start_when_a_secret_is_configured() {
    let mut s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let secret = StorageSecret::new(STORAGE_SECRET);
    let genuine = encode_encrypted(&key_file(&[TestKey::new("key_owner", OWNER)]), &secret);
    s3.put_object(BUCKET, OBJECT, &genuine).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = daemon_on(&s3, dir.path()).start().unwrap();
    assert_eq!(daemon.verify(OWNER).status, 200);
    let cache = std::fs::read(dir.path().join("keys.cache")).unwrap();
    assert!(is_encrypted(&cache));

    // Reload: refused, the previous set kept, the reason in /status, the cache untouched.
    s3.put_object(BUCKET, OBJECT, &forged_plaintext()).unwrap();
    let refresh = daemon.refresh();
    assert_eq!(refresh.status, 500, "{}", refresh.body);
    assert_eq!(
        daemon.verify(INJECTED).status,
        403,
        "the injected key verified"
    );
    assert_eq!(daemon.verify(OWNER).status, 200, "the previous set is kept");
    let status = daemon.status();
    assert_eq!(status["stale"], true);
    let error = status["last_error"].as_str().unwrap().to_string();
    assert!(
        error.contains("not encrypted") && error.contains("migrate --encrypt"),
        "{error}"
    );
    assert_eq!(
        std::fs::read(dir.path().join("keys.cache")).unwrap(),
        cache,
        "the last-known-good cache was replaced"
    );
    daemon.stop();

    // Start: the forged object is refused and the (encrypted) cache is served instead.
    let mut daemon = daemon_on(&s3, dir.path()).start().unwrap();
    assert_eq!(
        daemon.verify(INJECTED).status,
        403,
        "the injected key verified"
    );
    assert_eq!(daemon.verify(OWNER).status, 200);
    assert_eq!(daemon.status()["source"], "cache");
    daemon.stop();

    // Start without a cache: nothing to serve, exit 1 naming the cause.
    let empty = tempfile::tempdir().unwrap();
    let mut refused = daemon_on(&s3, empty.path()).spawn();
    let exit = refused.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(exit.code(), Some(1));
    assert!(refused.log().contains("not encrypted"), "{}", refused.log());

    // A plaintext cache is refused too (someone with write access to the state directory).
    std::fs::write(empty.path().join("keys.cache"), forged_plaintext()).unwrap();
    s3.stop();
    let mut refused = daemon_on(&s3, empty.path()).spawn();
    let exit = refused.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(exit.code(), Some(1), "{}", refused.log());
    assert!(refused.log().contains("not encrypted"), "{}", refused.log());
}

#[test]
fn heare_authctl_refuses_to_rewrite_plaintext_until_migrate_encrypt() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    s3.put_object(BUCKET, OBJECT, &forged_plaintext()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("none.sock");
    let ctl = ctl_on(&s3, dir.path());

    for args in [vec!["create", "--name", "x", "--no-reload"], vec!["list"]] {
        let output = ctl.run(&args);
        assert!(
            !output.status.success(),
            "{args:?} accepted a plaintext store"
        );
        let error = String::from_utf8_lossy(&output.stderr);
        assert!(error.contains("migrate --encrypt"), "{args:?}: {error}");
    }
    assert_eq!(
        s3.get_object(BUCKET, OBJECT).unwrap().unwrap(),
        forged_plaintext(),
        "a refused command changed the store"
    );

    // The writer also slipped a grace secret of their own into the owner's key: the review
    // listing shows every field (hashes as fingerprints), grace entries included.
    let mut tampered: serde_json::Value = serde_json::from_slice(&forged_plaintext()).unwrap();
    let attacker_hash = heare_auth_tests::keys::secret_hash("sec_0AttackersGraceSecret");
    tampered["keys"][0]["grace_secrets"] =
        serde_json::json!([{"secret_hash": attacker_hash, "expires_at": "2999-01-01T00:00:00Z"}]);
    let tampered = serde_json::to_vec(&tampered).unwrap();
    s3.put_object(BUCKET, OBJECT, &tampered).unwrap();

    // Not reviewed (no terminal, no --yes): nothing written; the keys to review are listed.
    let output = ctl.run(&["migrate", "--encrypt", "--no-reload"]);
    assert_eq!(output.status.code(), Some(2));
    let listing = String::from_utf8_lossy(&output.stdout);
    assert!(
        listing.contains("key_injected") && listing.contains("key_owner"),
        "{listing}"
    );
    assert!(
        listing.contains("grace_secrets") && listing.contains(&attacker_hash[..19]),
        "{listing}"
    );
    assert!(
        !listing.contains(OWNER) && !listing.contains(&attacker_hash),
        "{listing}"
    );
    assert_eq!(
        s3.get_object(BUCKET, OBJECT).unwrap().unwrap(),
        tampered,
        "encrypted without review"
    );
    let out = ctl.ok(&["migrate", "--encrypt", "--yes", "--no-reload"]);
    assert!(out.contains("encrypted"), "{out}");
    let stored = s3.get_object(BUCKET, OBJECT).unwrap().unwrap();
    assert!(is_encrypted(&stored), "migrate --encrypt wrote plaintext");
    assert!(ctl.ok(&["list"]).contains("key_injected"));

    // Now the daemon loads it (the administrator vouched for its content by migrating).
    let daemon = daemon_on(&s3, dir.path()).start().unwrap();
    assert_eq!(daemon.verify(OWNER).status, 200);

    // Without a storage secret, migrate --encrypt is a usage error and changes nothing.
    let plain = s3.ctl(dir.path(), (BUCKET, OBJECT), &socket, &[]);
    let output = plain.run(&["migrate", "--encrypt", "--yes", "--no-reload"]);
    assert_eq!(output.status.code(), Some(2));
    assert_eq!(s3.get_object(BUCKET, OBJECT).unwrap().unwrap(), stored);
}

#[test]
fn an_older_encrypted_file_written_back_is_refused() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctl = ctl_on(&s3, dir.path());
    let (revoked, secret) = ctl.create(&["--name", "soon revoked", "--no-reload"]);
    let old_copy = s3.get_object(BUCKET, OBJECT).unwrap().unwrap();
    ctl.ok(&["delete", &revoked, "--yes", "--no-reload"]);
    let state = dir.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let mut daemon = daemon_on(&s3, &state).start().unwrap();
    assert_eq!(daemon.verify(&secret).status, 403, "deleted");

    // The bucket's writer puts the old (validly encrypted) copy back.
    s3.put_object(BUCKET, OBJECT, &old_copy).unwrap();
    let refresh = daemon.refresh();
    assert_eq!(refresh.status, 500, "{}", refresh.body);
    assert_eq!(
        daemon.verify(&secret).status,
        403,
        "the revoked key came back"
    );
    let error = daemon.status()["last_error"].as_str().unwrap().to_string();
    assert!(error.contains("older than generation"), "{error}");

    // Across a restart: the old copy is still refused (the cache is served, stale).
    daemon.stop();
    let mut daemon = daemon_on(&s3, &state).start().unwrap();
    assert_eq!(
        daemon.verify(&secret).status,
        403,
        "the revoked key came back"
    );
    assert_eq!(daemon.status()["source"], "cache");

    // The operator's next heare-authctl write would make the old copy current: refused, as long
    // as the daemon can tell ctl what it serves; nothing is written.
    let local = s3.ctl(
        dir.path(),
        (BUCKET, OBJECT),
        &daemon.socket,
        &[("STORAGE_SECRET", STORAGE_SECRET)],
    );
    let output = local.run(&["create", "--name", "unrelated", "--no-reload"]);
    assert_eq!(output.status.code(), Some(1));
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(
        error.contains("older key file") && error.contains("--accept-older"),
        "{error}"
    );
    assert_eq!(s3.get_object(BUCKET, OBJECT).unwrap().unwrap(), old_copy);

    // Deleting the object does not empty the served set either.
    s3.delete_object(BUCKET, OBJECT).unwrap();
    assert_eq!(daemon.refresh().status, 500);
    let error = daemon.status()["last_error"].as_str().unwrap().to_string();
    assert!(error.contains("holds no key file"), "{error}");

    // Writing anew on purpose (a backup restored, here: a new file) needs --accept-older, and
    // then loads.
    let output = local.run(&["create", "--name", "after", "--no-reload"]);
    assert_eq!(
        output.status.code(),
        Some(1),
        "the emptied store is refused too"
    );
    let (fresh, fresh_secret) = local.create(&["--name", "after", "--no-reload", "--accept-older"]);
    assert_eq!(daemon.refresh().status, 200);
    assert_eq!(daemon.verify(&fresh_secret).status, 200, "{fresh}");
    daemon.stop();
    let daemon = daemon_on(&s3, &state).start().unwrap();
    assert_eq!(daemon.status()["source"], "store");
    assert_eq!(daemon.verify(&fresh_secret).status, 200, "{fresh}");
}

#[test]
fn a_generation_in_the_future_is_refused_by_daemon_and_ctl() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let secret = StorageSecret::new(STORAGE_SECRET);
    // What a plain-file writer plants before the operator encrypts it: a generation no honest
    // write could pass (u64::MAX would switch the guard off for good).
    let far = format!(
        "{{\"generation\": 18446744073709551615, \"keys\": [{{\"id\": \"key_owner\", \"secret\": \"{OWNER}\"}}]}}"
    );
    s3.put_object(BUCKET, OBJECT, &encode_encrypted(far.as_bytes(), &secret))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = daemon_on(&s3, dir.path()).spawn();
    let exit = daemon.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(exit.code(), Some(1));
    assert!(daemon.log().contains("in the future"), "{}", daemon.log());

    let ctl = ctl_on(&s3, dir.path());
    let output = ctl.run(&["create", "--name", "x", "--no-reload"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("in the future"));
    ctl.create(&["--name", "x", "--no-reload", "--accept-older"]);
    let daemon = daemon_on(&s3, dir.path()).start().unwrap();
    assert_eq!(daemon.verify(OWNER).status, 200);
}
