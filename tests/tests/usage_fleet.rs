//! Fleet usage against a real S3 server (in-process s3s, or moto with HEARE_TEST_S3=moto): two
//! daemons on one store each write `PREFIX/<host id>.json` on their schedule and at shutdown, and
//! `heare-authctl usage --fleet` merges them — verifications summed, the latest use kept, each
//! host's own figures with `--detailed`. A report that is not one is skipped with a warning.
//!
//! Any host may forge reports, so ctl's memory is bounded: twenty reports of the same keys cost
//! no more than one (measured on the real process), `--max-bytes` caps the bytes read in all, and
//! objects in sub-prefixes are neither read nor counted.

use heare_auth_client::wire::{KeyUsage, UsageReport};
use heare_auth_store::{size, timestamp};
use heare_auth_tests::ctl::Ctl;
use heare_auth_tests::daemon::Daemon;
use heare_auth_tests::keys::{TestKey, key_file};
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::wait_until;
use serde_json::Value;
use std::path::Path;
use std::time::Duration;

const BUCKET: &str = "heare-auth-fleet";
const OBJECT: &str = "keys.json";
const SHARED: &str = "sec_0FleetSharedSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const ONLY_A: &str = "sec_0FleetOnlyOnHostAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

fn host(s3: &S3Server, dir: &Path, host_id: &str) -> Daemon {
    let config = format!(
        "usage_report = \"s3://{BUCKET}/fleet/usage/\"\nhost_id = \"{host_id}\"\nusage_report_interval = \"1s\"\n[s3]\ntimeout = \"2s\"\n"
    );
    s3.daemon(dir, BUCKET, OBJECT)
        .config(&config)
        .start()
        .unwrap()
}

fn verify_n(daemon: &Daemon, secret: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(daemon.verify(secret).status, 200);
    }
}

#[test]
fn ctl_merges_every_hosts_report() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let keys = [
        TestKey::new("key_fleet_shared", SHARED),
        TestKey::new("key_fleet_only_a", ONLY_A),
        TestKey::new("key_fleet_unused", &format!("sec_0{}", "N".repeat(59))),
    ];
    s3.put_object(BUCKET, OBJECT, &key_file(&keys)).unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = host(&s3, dir_a.path(), "host-a");
    let mut b = host(&s3, dir_b.path(), "host-b");
    verify_n(&a, SHARED, 3);
    verify_n(&a, ONLY_A, 2);
    verify_n(&b, SHARED, 4);
    // b's last report is the one it writes at shutdown.
    assert!(b.stop().is_some_and(|s| s.success()));
    let report = |name: &str| {
        s3.get_object(BUCKET, &format!("fleet/usage/{name}.json"))
            .unwrap()
    };
    let b_report: Value = serde_json::from_slice(&report("host-b").unwrap()).unwrap();
    assert_eq!(b_report["host_id"], "host-b");
    assert_eq!(b_report["keys"][0]["verifications"], 4);
    let a_counts = || {
        report("host-a")
            .and_then(|body| serde_json::from_slice::<Value>(&body).ok())
            .is_some_and(|r| r["keys"].as_array().is_some_and(|k| k.len() == 2))
    };
    assert!(
        wait_until(Duration::from_secs(10), a_counts),
        "host-a never reported"
    );
    s3.put_object(BUCKET, "fleet/usage/broken.json", b"{not a report")
        .unwrap();

    let ctl_dir = tempfile::tempdir().unwrap();
    let ctl = fleet_ctl(&s3, ctl_dir.path(), &a.socket);
    let output = ctl.run(&["usage", "--fleet", "--json", "--detailed"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("broken.json"),
        "the broken report is named: {stderr}"
    );
    assert!(stderr.contains("2 host report(s)"), "{stderr}");
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let row = |id: &str| rows.iter().find(|r| r["key_id"] == id).unwrap().clone();
    assert_eq!(row("key_fleet_shared")["verifications"], 7);
    assert_eq!(row("key_fleet_only_a")["verifications"], 2);
    assert_eq!(row("key_fleet_unused")["verifications"], 0);
    let hosts = row("key_fleet_shared")["hosts"].as_array().unwrap().clone();
    let mut per_host: Vec<(String, u64)> = hosts
        .iter()
        .map(|h| {
            (
                h["host_id"].as_str().unwrap().to_string(),
                h["verifications"].as_u64().unwrap(),
            )
        })
        .collect();
    per_host.sort();
    assert_eq!(
        per_host,
        [("host-a".to_string(), 3), ("host-b".to_string(), 4)]
    );

    let table = ctl.ok(&["usage", "--fleet", "--detailed"]);
    assert!(table.contains("  on host-b"), "{table}");
    let unused = ctl.ok(&["usage", "--fleet", "--unused-for", "1h", "--json"]);
    let unused: Vec<Value> = serde_json::from_str(&unused).unwrap();
    let ids: Vec<&str> = unused
        .iter()
        .map(|r| r["key_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["key_fleet_unused"],
        "used on some host within the hour: not listed"
    );
}

/// heare-authctl reading the reports under `fleet/usage/` of `BUCKET`.
fn fleet_ctl(s3: &S3Server, dir: &Path, socket: &Path) -> Ctl {
    s3.ctl(dir, (BUCKET, OBJECT), socket, &[])
        .config_text(&format!(
            "usage_report = \"s3://{BUCKET}/fleet/usage/\"\n[s3]\npath_style = true\ntimeout = \"60s\"\n"
        ))
}

/// A report as the daemon writes it: `keys` keys `key_fleet_<n>`, each verified `n + 1` times,
/// last just now — but key 0, last verified two days ago.
fn report_body(host_id: &str, keys: usize) -> Vec<u8> {
    let now = timestamp::now();
    let entry = |n: usize| {
        let at = if n == 0 { now - 2 * 86_400_000 } else { now };
        KeyUsage {
            key_id: format!("key_fleet_{n:07}"),
            verifications: n as u64 + 1,
            last_verified_at: Some(timestamp::format(at)),
            last_used_previous_secret: false,
        }
    };
    let report = UsageReport {
        host_id: host_id.to_string(),
        written_at: timestamp::format(now),
        keys: (0..keys).map(entry).collect(),
    };
    serde_json::to_vec(&report).unwrap()
}

/// `count` copies of the report `body` under `prefix`, as `host-<n>.json`: the first uploaded,
/// the others copied on the server.
fn put_reports(s3: &S3Server, prefix: &str, body: &[u8], count: usize) {
    let first = format!("{prefix}host-0.json");
    s3.put_object(BUCKET, &first, body).unwrap();
    for n in 1..count {
        let key = format!("{prefix}host-{n}.json");
        s3.copy_object(BUCKET, &first, &key).unwrap();
    }
}

/// `usage --fleet --unused-for 1d --json`: (rows, stderr, peak KiB); must succeed.
fn unused_measured(ctl: &Ctl) -> (Vec<Value>, String, u64) {
    let (output, peak) = ctl.run_measured(&["usage", "--fleet", "--unused-for", "1d", "--json"]);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (
        serde_json::from_slice(&output.stdout).unwrap(),
        stderr,
        peak,
    )
}

#[test]
fn twenty_reports_of_the_same_keys_cost_the_memory_of_one() {
    const KEYS: usize = 200_000;
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let body = report_body("forged", KEYS);
    let dir = tempfile::tempdir().unwrap();
    let ctl = fleet_ctl(&s3, dir.path(), &dir.path().join("none.sock"));

    put_reports(&s3, "fleet/usage/", &body, 1);
    let (rows, stderr, one) = unused_measured(&ctl);
    assert!(stderr.contains("1 host report(s)"), "{stderr}");
    assert_eq!(rows.len(), 1, "only key 0 was unused for a day: {rows:?}");
    assert_eq!(rows[0]["key_id"], "key_fleet_0000000");
    assert_eq!(rows[0]["verifications"], 1);

    for n in 1..20 {
        let key = format!("fleet/usage/host-{n}.json");
        s3.copy_object(BUCKET, "fleet/usage/host-0.json", &key)
            .unwrap();
    }
    let (rows, stderr, twenty) = unused_measured(&ctl);
    assert!(stderr.contains("20 host report(s)"), "{stderr}");
    assert_eq!(rows[0]["verifications"], 20, "every report merged");
    eprintln!(
        "peak memory: {one} KiB for one report of {} bytes, {twenty} KiB for twenty",
        body.len()
    );
    assert!(
        twenty * 2 <= one * 3,
        "twenty reports of the same keys took {twenty} KiB, over 1.5 times the {one} KiB of one"
    );
}

#[test]
fn max_bytes_caps_the_report_bytes_read_in_all() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let body = report_body("forged", 100);
    put_reports(&s3, "fleet/usage/", &body, 5);
    let dir = tempfile::tempdir().unwrap();
    let ctl = fleet_ctl(&s3, dir.path(), &dir.path().join("none.sock"));
    let limit = 4 * body.len();

    let output = ctl.run(&["usage", "--fleet", "--max-bytes", &limit.to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("--max-bytes {}", size::format(limit as u64)))
            && stderr.contains("nothing is shown"),
        "the error names the flag and the limit: {stderr}"
    );
    assert!(output.stdout.is_empty(), "nothing is shown");

    let within = (5 * body.len()).to_string();
    let rows = ctl.ok(&["usage", "--fleet", "--json", "--max-bytes", &within]);
    let rows: Vec<Value> = serde_json::from_str(&rows).unwrap();
    assert_eq!(rows.len(), 100);
    let output = ctl.run(&["usage", "--fleet", "--max-bytes", "1KiB"]);
    assert!(String::from_utf8_lossy(&output.stderr).contains("--max-bytes 1KiB"));
    let output = ctl.run(&["usage", "--fleet", "--max-bytes", "1GB"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--max-bytes") && stderr.contains("1GiB"),
        "{stderr}"
    );
}

#[test]
fn reports_in_sub_prefixes_are_neither_read_nor_counted() {
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    let body = report_body("host-0", 3);
    put_reports(&s3, "fleet/usage/", &body, 1);
    put_reports(&s3, "fleet/usage/sub/", &body, 3);
    s3.put_object(BUCKET, "fleet/usage/sub/broken.json", b"{not a report")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctl = fleet_ctl(&s3, dir.path(), &dir.path().join("none.sock"));
    // Within the bytes of the one direct report: the others are not counted against it either.
    let limit = body.len().to_string();

    let output = ctl.run(&["usage", "--fleet", "--json", "--max-bytes", &limit]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("1 host report(s)"), "{stderr}");
    assert!(
        !stderr.contains("sub/"),
        "nothing under sub/ is read: {stderr}"
    );
    let rows: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    let counts: Vec<u64> = rows
        .iter()
        .map(|r| r["verifications"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [1, 2, 3], "one report's counts, not four");
}
