//! pam_heare_auth.so for real: a PAM service file in a private /etc/pam.d (bubblewrap binds it
//! over the host's, and a datagram socket of the test's over /dev/log to read the module's syslog
//! lines), `pamtester heare-test USER authenticate` with the key on stdin, against a running
//! daemon — or against `fake-authd`, the attacker's server that says "valid" to everything.
//! Needs pamtester and bubblewrap (tests/run and .ci/run install them) and root.

mod common;

use common::{FakeDaemon, NOBODY, PamRun, pam_service, pamtester, valid_for};
use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use serde_json::json;
use std::path::Path;

const ALICE: &str = "sec_0AlicesPamSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const BOB: &str = "sec_0BobsPamSecretBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";
/// Shaped like a secret, known to no daemon: what an attacker types for root.
const ANYTHING: &str = "sec_0RootsPamSecretRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRRR";
/// Verified by the tests themselves after a pamtester run: every line the module caused is in
/// the daemon's log once this one's is.
const MARKER: &str = "sec_0MarkerSecretMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM";

const AUTH_FAILURE: &str = "Authentication failure";
const SERVICE_ERROR: &str = "Error in service module";
const UNAVAILABLE: &str = "cannot retrieve authentication info";

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

/// A service file with only this module, on `socket`, with `options`.
fn service(dir: &Path, socket: &Path, options: &str) {
    pam_service(
        dir,
        &format!(
            "auth required MODULE socket={} timeout=2000 {options}\naccount required pam_permit.so\n",
            socket.display()
        ),
    );
}

/// A service file where pam_unix asks first ("Password: ") and stores what was typed as
/// PAM_AUTHTOK; it fails for these users, who have no Unix password, and is only `optional`.
fn service_after_pam_unix(dir: &Path, socket: &Path, options: &str) {
    pam_service(
        dir,
        &format!(
            "auth optional pam_unix.so\nauth required MODULE socket={} timeout=2000 {options}\naccount required pam_permit.so\n",
            socket.display()
        ),
    );
}

fn run(dir: &Path, user: &str, input: &str) -> PamRun {
    pamtester(dir, user, input, &[])
}

fn logged(run: &PamRun, text: &str) -> bool {
    run.syslog.iter().any(|line| line.contains(text))
}

/// The verifications the module asked the daemon for so far, as `"event" "key_id"`. A marker
/// verification is sent and awaited first: the daemon logs in order, so every earlier one is in
/// the log by then. The module's requests are told apart by their User-Agent.
fn verifications(daemon: &Daemon) -> Vec<String> {
    let events = || -> Vec<serde_json::Value> {
        daemon
            .log()
            .lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|line| {
                line["event"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("verification_"))
            })
            .collect()
    };
    let from_module = |event: &serde_json::Value| {
        event["user_agent"]
            .as_str()
            .is_some_and(|agent| agent.starts_with("pam_heare_auth/"))
    };
    let markers = |all: &[serde_json::Value]| all.iter().filter(|e| !from_module(e)).count();
    let before = markers(&events());
    assert_eq!(daemon.verify(MARKER).status, 403);
    let mut all = Vec::new();
    assert!(heare_auth_tests::wait_until(
        std::time::Duration::from_secs(10),
        || {
            all = events();
            markers(&all) > before
        }
    ));
    all.iter()
        .filter(|e| from_module(e))
        .map(|e| format!("{} {}", e["event"], e["key_id"]))
        .collect()
}

#[test]
fn keys_authenticate_their_own_user_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = start(dir.path());
    service(dir.path(), &daemon.socket, "user_field=unix_user");

    let out = run(dir.path(), "alice", &format!("{ALICE}\n"));
    assert!(
        out.ok && out.output.contains("successfully authenticated"),
        "{}",
        out.output
    );
    assert!(
        logged(&out, "user alice: key key_alice accepted"),
        "{:?}",
        out.syslog
    );
    let out = run(dir.path(), "alice", "sec_0wrong\n");
    assert!(
        !out.ok && out.output.contains(AUTH_FAILURE),
        "{}",
        out.output
    );
    let out = run(dir.path(), "alice", &format!("{BOB}\n"));
    assert!(
        !out.ok && out.output.contains(AUTH_FAILURE),
        "bob's key must not log in as alice: {}",
        out.output
    );
    assert!(logged(&out, "belongs to another user"), "{:?}", out.syslog);
    assert!(run(dir.path(), "bob", &format!("{BOB}\n")).ok);

    daemon.stop();
    let out = run(dir.path(), "alice", &format!("{ALICE}\n"));
    assert!(
        !out.ok && out.output.contains(UNAVAILABLE),
        "daemon stopped: {}",
        out.output
    );
}

#[test]
fn without_user_field_every_user_is_refused_unless_any_user() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    service(dir.path(), &daemon.socket, "");
    let out = run(dir.path(), "alice", &format!("{BOB}\n"));
    assert!(
        !out.ok && out.output.contains(SERVICE_ERROR),
        "{}",
        out.output
    );
    assert!(
        logged(&out, "neither user_field=NAME nor any_user"),
        "{:?}",
        out.syslog
    );
    let out = run(dir.path(), "alice", &format!("{ALICE}\n"));
    assert!(!out.ok, "not even the user's own key: {}", out.output);
    assert_eq!(verifications(&daemon), Vec::<String>::new());

    service(dir.path(), &daemon.socket, "any_user");
    let out = run(dir.path(), "alice", &format!("{BOB}\n"));
    assert!(out.ok, "any_user: any valid key, any user: {}", out.output);
    let out = run(dir.path(), "alice", "sec_0wrong\n");
    assert!(
        !out.ok && out.output.contains(AUTH_FAILURE),
        "{}",
        out.output
    );
}

#[test]
fn a_misspelled_malformed_or_conflicting_option_fails_closed() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    for (options, named) in [
        ("user_feild=unix_user", "user_feild=unix_user"),
        ("user_field=unix_user timeout=2s", "timeout=2s"),
        ("user_field=unix_user server_user=", "server_user="),
        ("user_field=unix_user debug", "debug"),
        ("user_field=unix_user timeout=900 timeout=2000", "timeout"),
        ("user_field=unix_user any_user", "any_user"),
        (
            "user_field=unix_user use_first_pass try_first_pass",
            "try_first_pass",
        ),
    ] {
        pam_service(
            dir.path(),
            &format!(
                "auth required MODULE socket={} {options}\n",
                daemon.socket.display()
            ),
        );
        let out = run(dir.path(), "alice", &format!("{ALICE}\n"));
        assert!(
            !out.ok && out.output.contains(SERVICE_ERROR),
            "{options}: {}",
            out.output
        );
        assert!(logged(&out, named), "{options}: {:?}", out.syslog);
    }
    assert_eq!(verifications(&daemon), Vec::<String>::new());
    // Spelt right, the same service file authenticates.
    service(dir.path(), &daemon.socket, "user_field=unix_user");
    assert!(run(dir.path(), "alice", &format!("{ALICE}\n")).ok);
}

#[test]
fn an_earlier_modules_token_is_used_only_with_use_or_try_first_pass() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let two = |first: &str, second: &str| format!("{first}\n{second}\n");

    // Neither option: pam_unix's token is ignored and the module prompts again.
    service_after_pam_unix(dir.path(), &daemon.socket, "user_field=unix_user");
    let out = run(dir.path(), "alice", &two(ALICE, "sec_0wrong"));
    assert!(
        !out.ok,
        "the earlier token must not be reused: {}",
        out.output
    );
    let out = run(dir.path(), "alice", &two("hunter2", ALICE));
    assert!(out.ok, "the prompt's answer is used: {}", out.output);

    // use_first_pass: only the earlier token, never a prompt.
    service_after_pam_unix(
        dir.path(),
        &daemon.socket,
        "user_field=unix_user use_first_pass",
    );
    let out = run(dir.path(), "alice", &two(ALICE, "sec_0wrong"));
    assert!(out.ok, "{}", out.output);
    let out = run(dir.path(), "alice", &two("hunter2", ALICE));
    assert!(!out.ok, "use_first_pass never prompts: {}", out.output);
    let out = run(dir.path(), "alice", &two(BOB, ALICE));
    assert!(!out.ok, "{}", out.output);

    // try_first_pass: the earlier token, else (unshaped or refused) a prompt.
    service_after_pam_unix(
        dir.path(),
        &daemon.socket,
        "user_field=unix_user try_first_pass",
    );
    assert!(run(dir.path(), "alice", &two(ALICE, "sec_0wrong")).ok);
    let out = run(dir.path(), "alice", &two("hunter2", ALICE));
    assert!(out.ok, "unshaped earlier token: prompt: {}", out.output);
    let out = run(dir.path(), "alice", &two(BOB, ALICE));
    assert!(out.ok, "refused earlier token: prompt: {}", out.output);
    let out = run(dir.path(), "alice", &two(BOB, BOB));
    assert!(!out.ok, "{}", out.output);
}

#[test]
fn text_not_shaped_like_a_key_never_reaches_the_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    service(dir.path(), &daemon.socket, "user_field=unix_user");
    let password = "correct horse battery staple";
    let out = run(dir.path(), "alice", &format!("{password}\n"));
    assert!(
        !out.ok && out.output.contains(AUTH_FAILURE),
        "{}",
        out.output
    );
    assert!(
        logged(&out, "not shaped like an API key"),
        "{:?}",
        out.syslog
    );
    // A password pam_unix stored, reused with try_first_pass, is not sent either.
    service_after_pam_unix(
        dir.path(),
        &daemon.socket,
        "user_field=unix_user try_first_pass",
    );
    let out = run(dir.path(), "alice", &format!("{password}\n{password}\n"));
    assert!(!out.ok);
    assert_eq!(
        verifications(&daemon),
        Vec::<String>::new(),
        "the daemon received nothing"
    );
    assert!(!daemon.log().contains("horse"));
    assert!(!out.syslog.iter().any(|line| line.contains("horse")));
    // The same service with a key: the daemon is asked (so the check above could fail).
    assert!(run(dir.path(), "alice", &format!("{password}\n{ALICE}\n")).ok);
    assert_eq!(
        verifications(&daemon),
        vec![r#""verification_success" "key_alice""#.to_string()]
    );
}

#[test]
fn heare_auth_socket_in_the_environment_is_never_read() {
    // The attack: setuid su hands PAM its caller's environment; a fake daemon of the caller's
    // says "valid, user root" to anything.
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDaemon::start(dir.path(), "evil", &valid_for("root"));
    pam_service(
        dir.path(),
        "auth required MODULE user_field=unix_user allow_root timeout=2000\n",
    );
    let out = pamtester(
        dir.path(),
        "root",
        &format!("{ANYTHING}\n"),
        &[("HEARE_AUTH_SOCKET", &fake.socket)],
    );
    assert!(
        !out.ok,
        "authenticated through $HEARE_AUTH_SOCKET: {}",
        out.output
    );
    assert_eq!(fake.connections(), 0, "the fake daemon was reached");
    assert!(
        logged(&out, heare_auth_client::DEFAULT_SOCKET_PATH),
        "the compiled-in default was asked: {:?}",
        out.syslog
    );

    // Named with socket=, the same fake (run by root, so trusted) is believed: the check above
    // is what stopped the attack.
    service(dir.path(), &fake.socket, "user_field=unix_user allow_root");
    let out = run(dir.path(), "root", &format!("{ANYTHING}\n"));
    assert!(out.ok, "{}", out.output);
    assert_eq!(fake.connections(), 1);
}

#[test]
fn a_uid_0_user_logs_in_with_a_key_only_with_allow_root() {
    // Whoever can add keys (the store's writers, the daemon's own user) mints one for root; the
    // daemon (here the fake, run by root, so trusted) vouches for it.
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDaemon::start(dir.path(), "minted", &valid_for("root"));
    service(dir.path(), &fake.socket, "user_field=unix_user");
    let out = run(dir.path(), "root", &format!("{ANYTHING}\n"));
    assert!(
        !out.ok && out.output.contains(AUTH_FAILURE),
        "{}",
        out.output
    );
    assert_eq!(fake.connections(), 0, "refused before any question");
    assert!(logged(&out, "allow_root"), "{:?}", out.syslog);

    service(dir.path(), &fake.socket, "user_field=unix_user allow_root");
    let out = run(dir.path(), "root", &format!("{ANYTHING}\n"));
    assert!(out.ok, "{}", out.output);
}

#[test]
fn a_server_not_run_by_root_or_server_user_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeDaemon::start_as(dir.path(), "evil", &valid_for("alice"), NOBODY);
    service(dir.path(), &fake.socket, "user_field=unix_user");
    let out = run(dir.path(), "alice", &format!("{ALICE}\n"));
    assert!(
        !out.ok && out.output.contains(UNAVAILABLE),
        "{}",
        out.output
    );
    assert!(logged(&out, &format!("uid {NOBODY}")), "{:?}", out.syslog);
    let lines = fake.connection_lines(1);
    assert!(
        !lines.iter().any(|l| l.starts_with("request")),
        "the secret was sent to an untrusted server: {lines:?}"
    );

    // With server_user=nobody, that uid is the daemon's: trusted.
    service(
        dir.path(),
        &fake.socket,
        "user_field=unix_user server_user=nobody",
    );
    let out = run(dir.path(), "alice", &format!("{ALICE}\n"));
    assert!(out.ok, "{}", out.output);
}

#[test]
fn a_key_over_its_rate_limit_is_pam_maxtries() {
    // What pamtester prints for PAM_MAXTRIES (Linux-PAM's pam_strerror).
    const MAXTRIES: &str = "Have exhausted maximum number of retries for service";
    const LIMITED: &str = "sec_0AlicesLimitedPamSecretLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLLL";
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("keys.json");
    // key_alice_limited: one verification an hour (burst = requests = 1); key_alice: no limit.
    let file = json!({"keys": [
        {"id": "key_alice_limited", "secret": LIMITED, "name": "alice's limited key",
         "metadata": {"unix_user": "alice"}, "rate_limit": {"requests": 1, "per": "1h"}},
        {"id": "key_alice", "secret": ALICE, "name": "alice's key", "metadata": {"unix_user": "alice"}},
    ]});
    std::fs::write(&store, file.to_string()).unwrap();
    let daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", store.display()))
        .start()
        .unwrap();
    service(dir.path(), &daemon.socket, "user_field=unix_user");

    // The hour's one verification logs in.
    let out = run(dir.path(), "alice", &format!("{LIMITED}\n"));
    assert!(
        out.ok && out.output.contains("successfully authenticated"),
        "{}",
        out.output
    );
    // The next is PAM_MAXTRIES: not a success, not PAM_AUTH_ERR, not PAM_AUTHINFO_UNAVAIL.
    let out = run(dir.path(), "alice", &format!("{LIMITED}\n"));
    assert!(!out.ok, "{}", out.output);
    assert!(out.output.contains(MAXTRIES), "{}", out.output);
    assert!(!out.output.contains(AUTH_FAILURE), "{}", out.output);
    assert!(!out.output.contains(UNAVAILABLE), "{}", out.output);
    assert!(
        logged(
            &out,
            "user alice: key key_alice_limited is over its rate limit"
        ),
        "{:?}",
        out.syslog
    );
    assert!(
        !out.syslog.iter().any(|line| line.contains(LIMITED)),
        "{:?}",
        out.syslog
    );
    // The limit is the key's own: alice's other key logs in.
    assert!(run(dir.path(), "alice", &format!("{ALICE}\n")).ok);

    // try_first_pass: a limited earlier token is PAM_MAXTRIES at once, not a second prompt
    // (whose answer, alice's other key, would have logged in: a refused token does prompt).
    service_after_pam_unix(
        dir.path(),
        &daemon.socket,
        "user_field=unix_user try_first_pass",
    );
    let out = run(dir.path(), "alice", &format!("{LIMITED}\n{ALICE}\n"));
    assert!(
        !out.ok && out.output.contains(MAXTRIES),
        "a limited key does not prompt again: {}",
        out.output
    );
    let out = run(dir.path(), "alice", &format!("sec_0wrong\n{ALICE}\n"));
    assert!(out.ok, "refused earlier token: prompt: {}", out.output);
}
