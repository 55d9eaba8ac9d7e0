//! The daemon's user against root: the state directory belongs to the daemon's user (uid 65534
//! here, played with setpriv), and heare-authctl runs as root. That user plants symbolic links at
//! every name root's writes could use — the old predictable temporary names
//! (`keys.json.tmp.<pid>` for the next few thousand pids), the lock, the key file itself, the
//! last-known-good cache — pointing at root-owned files and at a path that must never be
//! created. Root's heare-authctl and the daemon must leave every target untouched (content,
//! owner, mode), create nothing at the lock's target, and refuse a link at the key file or the
//! cache with an error naming the path. That user also holds the key file's lock for ever: root's
//! every write gives up after `--lock-timeout`, naming the lock, with nothing written. Needs root
//! (CI is).

mod common;

use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::DaemonBuilder;
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::s3_server::S3Server;
use std::io::BufRead;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ATTACKER: u32 = 65534;
const SECRET: &str = "sec_0SymlinkAttackTestSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
/// How many future pids get a planted link at the old temporary name.
const PLANTED_PIDS: u32 = 3000;

/// Root-owned files an attacker would love root to overwrite, and one that must not appear.
struct Victims {
    dir: PathBuf,
}

impl Victims {
    fn new(root: &Path) -> Victims {
        let dir = root.join("victims");
        std::fs::create_dir(&dir).unwrap();
        for (name, mode) in [("shadow", 0o640), ("sudoers", 0o440)] {
            let path = dir.join(name);
            std::fs::write(&path, format!("root-only {name}\n")).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        }
        Victims { dir }
    }

    fn shadow(&self) -> PathBuf {
        self.dir.join("shadow")
    }

    fn nologin(&self) -> PathBuf {
        self.dir.join("nologin")
    }

    /// (name, content, uid, gid, mode) of every file: compared before and after the attack.
    fn snapshot(&self) -> Vec<(String, Vec<u8>, u32, u32, u32)> {
        let mut files: Vec<_> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|entry| {
                let path = entry.unwrap().path();
                let metadata = std::fs::symlink_metadata(&path).unwrap();
                (
                    path.file_name().unwrap().to_string_lossy().into_owned(),
                    std::fs::read(&path).unwrap(),
                    metadata.uid(),
                    metadata.gid(),
                    metadata.mode(),
                )
            })
            .collect();
        files.sort();
        files
    }
}

/// The state directory, owned by the attacker (as /var/lib/heare-auth is by heare-auth).
fn state_dir(root: &Path) -> PathBuf {
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let state = root.join("state");
    std::fs::create_dir(&state).unwrap();
    std::os::unix::fs::chown(&state, Some(ATTACKER), Some(ATTACKER)).unwrap();
    state
}

/// Runs a Perl snippet (perl-base is essential in Debian) as the attacker: one process plants
/// thousands of links.
fn as_attacker(script: &str) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test switches to uid 65534 with setpriv and must run as root (CI does)"
    );
    let status = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["perl", "-e", script])
        .status()
        .expect("run setpriv perl");
    assert!(status.success(), "the attacker's script failed: {script}");
}

/// Links at `<name>.tmp.<pid>` for the next PLANTED_PIDS pids, all pointing at `target`.
fn plant_temp_links(state: &Path, name: &str, target: &Path) {
    let next: u32 = std::fs::read_to_string("/proc/sys/kernel/ns_last_pid")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let pid_max: u32 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    as_attacker(&format!(
        "for my $n (0 .. {PLANTED_PIDS} - 1) {{ my $pid = ({next} + 1 + $n) % {pid_max}; symlink({target:?}, {state:?} . '/{name}.tmp.' . $pid) or die $!; }}",
        target = target.display().to_string(),
        state = state.display().to_string(),
    ));
}

fn plant_link(at: &Path, target: &Path) {
    as_attacker(&format!(
        "unlink({at:?}); symlink({target:?}, {at:?}) or die $!;",
        at = at.display().to_string(),
        target = target.display().to_string(),
    ));
}

/// The attacker holding an exclusive flock on a file until dropped — its own file, put in place
/// of root's (it owns the directory) — one Perl process in a process group of its own, killed
/// with its group and waited for.
struct HeldLock {
    child: Child,
}

impl HeldLock {
    fn take(lock: &Path) -> HeldLock {
        let script = "use Fcntl qw(:flock); unlink($ARGV[0]); open(my $f, '>>', $ARGV[0]) or die $!; \
                      flock($f, LOCK_EX) or die $!; $| = 1; print qq(held\n); sleep 3600;";
        let mut child = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["perl", "-e", script])
            .arg(lock)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run setpriv perl");
        let mut line = String::new();
        let stdout = child.stdout.take().expect("the holder's stdout");
        let read = std::io::BufReader::new(stdout).read_line(&mut line);
        let held = HeldLock { child };
        assert!(
            read.is_ok() && line == "held\n",
            "the attacker did not take the lock: {line:?}"
        );
        held
    }
}

impl Drop for HeldLock {
    fn drop(&mut self) {
        let group = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        let _ = self.child.wait();
    }
}

fn failure(output: &std::process::Output) -> String {
    assert!(!output.status.success(), "the command should have failed");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn root_ctl_writes_never_follow_links_planted_by_the_daemons_user() {
    let root = tempfile::tempdir().unwrap();
    let victims = Victims::new(root.path());
    let state = state_dir(root.path());
    let store = state.join("keys.json");
    let ctl = Ctl::new(
        root.path(),
        &format!("file://{}", store.display()),
        &root.path().join("none.sock"),
    );
    let (first_id, _) = ctl.create(&["--name", "first", "--no-reload"]);
    assert_eq!(
        std::fs::metadata(&store).unwrap().uid(),
        ATTACKER,
        "handed to the directory's owner"
    );
    let before = victims.snapshot();

    // The lock is a link to a file that must not come into existence: refused, nothing created.
    plant_link(&state.join("keys.json.lock"), &victims.nologin());
    let error = failure(&ctl.run(&["create", "--name", "second", "--no-reload"]));
    assert!(
        error.contains("keys.json.lock") && error.contains("symbolic link"),
        "{error}"
    );
    assert!(
        !victims.nologin().exists(),
        "nothing created at the lock's target"
    );
    std::fs::remove_file(state.join("keys.json.lock")).unwrap();

    // Links at every old predictable temporary name: writes go elsewhere, targets untouched.
    plant_temp_links(&state, "keys.json", &victims.shadow());
    let (second_id, _) = ctl.create(&["--name", "second", "--no-reload"]);
    ctl.ok(&["rotate", &first_id, "--no-reload"]);
    ctl.ok(&["delete", &second_id, "--yes", "--no-reload"]);
    assert_eq!(
        victims.snapshot(),
        before,
        "a planted link's target was changed"
    );
    let key_file = std::fs::symlink_metadata(&store).unwrap();
    assert!(
        key_file.file_type().is_file(),
        "the key file is still a regular file"
    );
    assert_eq!(
        (key_file.uid(), key_file.mode() & 0o7777),
        (ATTACKER, 0o600)
    );
    let planted = std::fs::read_dir(&state)
        .unwrap()
        .filter(|e| e.as_ref().unwrap().file_type().unwrap().is_symlink())
        .count();
    assert_eq!(
        planted, PLANTED_PIDS as usize,
        "every planted link is left as it was"
    );

    // The key file itself a link to a root-owned file: every command refuses, naming it.
    plant_link(&store, &victims.shadow());
    for args in [
        vec!["create", "--name", "third", "--no-reload"],
        vec!["rotate", first_id.as_str(), "--no-reload"],
        vec!["delete", first_id.as_str(), "--yes", "--no-reload"],
        vec!["list"],
    ] {
        let error = failure(&ctl.run(&args));
        assert!(
            error.contains(&store.display().to_string()) && error.contains("symbolic link"),
            "{args:?}: {error}"
        );
        assert!(
            !error.contains("root-only"),
            "the target's content leaked: {error}"
        );
    }
    assert_eq!(
        victims.snapshot(),
        before,
        "a planted link's target was changed"
    );
    assert!(!victims.nologin().exists());
}

#[test]
fn a_lock_held_by_the_daemons_user_fails_every_root_write_after_the_lock_timeout() {
    let root = tempfile::tempdir().unwrap();
    let state = state_dir(root.path());
    let store = state.join("keys.json");
    let url = format!("file://{}", store.display());
    let ctl = Ctl::new(root.path(), &url, &root.path().join("none.sock"));
    let (id, _) = ctl.create(&["--name", "first", "--no-reload"]);
    let import = root.path().join("import.json");
    std::fs::write(&import, key_file(&[TestKey::new("key_imported", SECRET)])).unwrap();
    let encrypting = Ctl::new(root.path(), &url, &root.path().join("none.sock"))
        .env(vec![("STORAGE_SECRET".into(), "lock-test-secret".into())]);
    let identity = |path: &Path| {
        let metadata = std::fs::metadata(path).unwrap();
        (
            std::fs::read(path).unwrap(),
            metadata.ino(),
            metadata.mtime_nsec(),
        )
    };
    let before = identity(&store);
    let lock = state.join("keys.json.lock");
    let held = HeldLock::take(&lock);

    let import = import.to_str().unwrap();
    let writes: [(&Ctl, Vec<&str>); 10] = [
        (&ctl, vec!["create", "--name", "second"]),
        (&ctl, vec!["delete", &id, "--yes"]),
        (&ctl, vec!["rotate", &id]),
        (&ctl, vec!["scopes", &id, "--add", "read"]),
        (&ctl, vec!["expire", &id, "--now"]),
        (&ctl, vec!["disable", &id]),
        (&ctl, vec!["enable", &id]),
        (&ctl, vec!["import", import]),
        (&ctl, vec!["migrate", "--hash-secrets"]),
        (&encrypting, vec!["migrate", "--encrypt", "--yes"]),
    ];
    for (ctl, args) in writes {
        let mut all = vec!["--lock-timeout", "1s"];
        all.extend(&args);
        all.push("--no-reload");
        // A hang guard, not a speed test: without a timeout the write would wait for ever.
        let run = common::run_limited(ctl.command(&all), "", Duration::from_secs(60), root.path());
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        assert!(
            run.stderr.contains(&lock.display().to_string())
                && run.stderr.contains("is held by another process")
                && run.stderr.contains("--lock-timeout")
                && run.stderr.contains("nothing was written"),
            "{args:?}: the error names the held lock: {}",
            run.stderr
        );
        assert!(
            run.elapsed >= Duration::from_secs(1),
            "{args:?} gave up before the timeout"
        );
    }
    assert!(identity(&store) == before, "the key file is unchanged");
    let output = ctl.run(&["--lock-timeout", "soon", "list"]);
    assert_eq!(
        output.status.code(),
        Some(2),
        "a bad duration is a usage error"
    );

    drop(held);
    ctl.ok(&["--lock-timeout", "1s", "disable", &id, "--no-reload"]);
    assert!(identity(&store) != before, "written once the lock is free");
}

#[test]
fn the_daemon_refuses_a_key_file_that_is_a_link_and_keeps_its_set() {
    let root = tempfile::tempdir().unwrap();
    let victims = Victims::new(root.path());
    let state = state_dir(root.path());
    let store = state.join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_link", SECRET)])).unwrap();
    std::os::unix::fs::chown(&store, Some(ATTACKER), Some(ATTACKER)).unwrap();
    let daemon = DaemonBuilder::new(root.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap();
    assert_eq!(daemon.verify(SECRET).status, 200);

    plant_link(&store, &victims.shadow());
    let refresh = daemon.refresh();
    assert_eq!(refresh.status, 500, "{}", refresh.body);
    let status = daemon.status();
    let error = status["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("keys.json") && error.contains("symbolic link"),
        "{error}"
    );
    assert_eq!(
        daemon.verify(SECRET).status,
        200,
        "the previous set is kept"
    );

    // A fresh start on the link refuses to serve it (exit 1, the path named).
    let other = tempfile::tempdir().unwrap();
    let refused = DaemonBuilder::new(other.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()));
    assert_start_refuses_link(refused, "keys.json");
}

/// Starts a daemon that must refuse a link at `name`: exit 1, the name and "symbolic link" in
/// its log, nothing of the link's (root-only) target.
fn assert_start_refuses_link(daemon: DaemonBuilder, name: &str) {
    let mut refused = daemon.spawn();
    let exit = refused.wait_exit(Duration::from_secs(30)).expect("exits");
    assert_eq!(exit.code(), Some(1));
    let log = refused.log();
    assert!(log.contains(name) && log.contains("symbolic link"), "{log}");
    assert!(
        !log.contains("root-only"),
        "the target's content leaked: {log}"
    );
}

#[test]
fn a_cache_that_is_a_link_is_neither_written_through_nor_read() {
    const BUCKET: &str = "heare-auth-test";
    let mut s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    s3.put_object(
        BUCKET,
        "keys.json",
        &key_file(&[TestKey::new("key_cache", SECRET)]),
    )
    .unwrap();
    let root = tempfile::tempdir().unwrap();
    let victims = Victims::new(root.path());
    let state = state_dir(root.path());
    let cache = state.join("keys.cache");
    plant_link(&cache, &victims.shadow());
    let before = victims.snapshot();
    let env = s3.env_for_client();
    let daemon_on = |dir: &Path| {
        DaemonBuilder::new(dir)
            .args([
                "--store",
                &format!("s3://{BUCKET}/keys.json"),
                "--s3-path-style",
            ])
            .arg("--cache")
            .arg(cache.display().to_string())
            .config("[s3]\ntimeout = \"2s\"\n")
            .envs(env.clone())
    };

    let mut daemon = daemon_on(root.path()).start().unwrap();
    assert_eq!(daemon.verify(SECRET).status, 200);
    let status = daemon.status();
    let error = status["cache_error"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        error.contains("keys.cache") && error.contains("symbolic link"),
        "{error}"
    );
    assert_eq!(victims.snapshot(), before, "written through the cache link");
    daemon.stop();

    // S3 down: the link is not read as a cache either.
    s3.stop();
    let other = tempfile::tempdir().unwrap();
    assert_start_refuses_link(daemon_on(other.path()), "keys.cache");
    assert_eq!(victims.snapshot(), before);
}

#[test]
fn the_socket_is_never_bound_in_a_directory_another_user_can_write() {
    let root = tempfile::tempdir().unwrap();
    let victims = Victims::new(root.path());
    let before = victims.snapshot();
    let store = root.path().join("keys.json");
    std::fs::write(&store, key_file(&[TestKey::new("key_sock", SECRET)])).unwrap();
    // The attacker's own directory, and a world-writable one: between the bind and the chown a
    // writer could swap the socket for a link to a root-owned file.
    let owned = state_dir(root.path());
    let open = root.path().join("open");
    std::fs::create_dir(&open).unwrap();
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    for dir in [&owned, &open] {
        let socket = dir.join("heare-authd.sock");
        let mut daemon = DaemonBuilder::new(root.path())
            .arg("--store")
            .arg(format!("file://{}", store.display()))
            .args(["--socket-group", "root"])
            .socket(socket.clone())
            .spawn();
        let exit = daemon.wait_exit(Duration::from_secs(20)).expect("exits");
        assert_eq!(exit.code(), Some(1), "{}", daemon.log());
        let log = daemon.log();
        assert!(
            log.contains(&dir.display().to_string()) && log.contains("another user could replace"),
            "{log}"
        );
        assert!(
            std::fs::symlink_metadata(&socket).is_err(),
            "nothing is bound there"
        );
    }
    assert_eq!(victims.snapshot(), before);
}
