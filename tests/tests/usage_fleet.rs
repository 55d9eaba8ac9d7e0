//! Fleet usage against a real S3 server (in-process s3s, or moto with HEARE_TEST_S3=moto): two
//! daemons on one store each write `PREFIX/<host id>.json` on their schedule and at shutdown, and
//! `heare-authctl usage --fleet` merges them — verifications summed, the latest use kept, each
//! host's own figures with `--detailed`. A report that is not one is skipped with a warning.
//!
//! Any host may forge reports, so ctl's memory is bounded: twenty reports of the same keys cost
//! no more than one, and a report of millions of made-up key ids no more than one of the store's
//! keys (measured on the real process); `--max-bytes` caps the bytes read in all, and other
//! objects under the prefix and anything in its sub-prefixes are neither read nor counted.

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
            rate_limited: None,
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

/// The store's keys for [`report_body`]: `key_fleet_<n>`, `count` of them.
fn store_keys(count: usize) -> Vec<u8> {
    let keys: Vec<TestKey> = (0..count)
        .map(|n| {
            let secret = format!("sec_0Fleet{n:055}");
            TestKey::new(&format!("key_fleet_{n:07}"), &secret).hashed()
        })
        .collect();
    key_file(&keys)
}

/// `body` with the usage of `key_fleet_retired` (no longer in the store) added: 5 verifications.
fn with_retired_key(body: &[u8]) -> Vec<u8> {
    let mut report: Value = serde_json::from_slice(body).unwrap();
    let retired = KeyUsage {
        key_id: "key_fleet_retired".into(),
        verifications: 5,
        last_verified_at: Some(timestamp::format(timestamp::now())),
        last_used_previous_secret: false,
        rate_limited: None,
    };
    let keys = report["keys"].as_array_mut().unwrap();
    keys.push(serde_json::to_value(retired).unwrap());
    serde_json::to_vec(&report).unwrap()
}

/// `body`, a report, grown to exactly `len` bytes with a field no reader knows.
fn padded(body: &[u8], len: usize) -> Vec<u8> {
    const FIELD: &str = r#"{"padding":"","#;
    let fill = len - body.len() - (FIELD.len() - 1);
    let mut padded = format!(r#"{{"padding":"{}","#, "x".repeat(fill)).into_bytes();
    padded.extend_from_slice(&body[1..]);
    assert_eq!(padded.len(), len);
    padded
}

/// `body`, a report, with `count` made-up key ids after its keys, none in the store, each in the
/// shortest form serde accepts: a struct as an array, `["<hex>",1,null]` (about 17 bytes, where
/// each would take some 150 bytes in a merge).
fn with_made_up_keys(body: &[u8], count: usize) -> Vec<u8> {
    let report: Value = serde_json::from_slice(body).unwrap();
    let mut keys = serde_json::to_string(&report["keys"]).unwrap();
    keys.pop();
    for n in 0..count {
        keys.push_str(&format!(",[\"{n:x}\",1,null]"));
    }
    keys.push(']');
    let written_at = &report["written_at"];
    format!(r#"{{"host_id":"host-0","written_at":{written_at},"keys":{keys}}}"#).into_bytes()
}

/// `usage --fleet --json` and more `args`: (rows, stderr, peak KiB); must succeed.
fn rows_measured(ctl: &Ctl, args: &[&str]) -> (Vec<Value>, String, u64) {
    let args = [&["usage", "--fleet", "--json"], args].concat();
    let (output, peak) = ctl.run_measured(&args);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (
        serde_json::from_slice(&output.stdout).unwrap(),
        stderr,
        peak,
    )
}

/// The rows whose state is `not in store`.
fn not_in_store(rows: &[Value]) -> Vec<&Value> {
    rows.iter()
        .filter(|row| row["state"] == "not in store")
        .collect()
}

#[test]
fn made_up_key_ids_in_a_forged_report_cost_no_more_than_the_stores_keys() {
    const KEYS: usize = 1_000;
    const MADE_UP: usize = 2_000_000;
    /// Ids not in the store that ctl keeps (`usage_source::MAX_OTHER_KEYS`).
    const KEPT: usize = 10_000;
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    s3.put_object(BUCKET, OBJECT, &store_keys(KEYS)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let ctl = fleet_ctl(&s3, dir.path(), &dir.path().join("none.sock"));
    let genuine = with_retired_key(&report_body("host-0", KEYS));
    let forged = with_made_up_keys(&genuine, MADE_UP);
    let report = "fleet/usage/host-0.json";

    // The store's keys and a retired one, in a report as large as the forged one.
    s3.put_object(BUCKET, report, &padded(&genuine, forged.len()))
        .unwrap();
    let (rows, stderr, genuine_peak) = rows_measured(&ctl, &[]);
    assert_eq!(rows.len(), KEYS + 1, "{stderr}");
    assert_eq!(rows[5]["key_id"], "key_fleet_0000005");
    assert_eq!(rows[5]["verifications"], 6);
    let retired = not_in_store(&rows);
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0]["key_id"], "key_fleet_retired");
    assert_eq!(retired[0]["verifications"], 5);
    assert!(!stderr.contains("left out"), "{stderr}");

    s3.put_object(BUCKET, report, &forged).unwrap();
    let (rows, stderr, forged_peak) = rows_measured(&ctl, &[]);
    eprintln!(
        "peak memory for a report of {} bytes: {genuine_peak} KiB of the store's keys, {forged_peak} KiB with {MADE_UP} made-up ids",
        forged.len()
    );
    let left_out = MADE_UP + 1 - KEPT;
    assert!(
        stderr.contains(&format!(
            "the report of host-0 names {left_out} more key id(s) that are not in the store: left out"
        )),
        "{stderr}"
    );
    assert_eq!(rows.len(), KEYS + KEPT);
    assert_eq!(
        rows[5]["verifications"], 6,
        "the store's keys are all merged"
    );
    assert_eq!(not_in_store(&rows).len(), KEPT);
    assert_eq!(
        not_in_store(&rows)[0]["key_id"],
        "0",
        "the first ids read are kept"
    );
    assert!(
        forged_peak <= genuine_peak + 8 * 1024,
        "{MADE_UP} made-up key ids took {forged_peak} KiB, over the {genuine_peak} KiB of the store's keys and 8 MiB"
    );

    let (rows, _, _) = rows_measured(&ctl, &["--detailed"]);
    let per_host: usize = rows
        .iter()
        .map(|r| r["hosts"].as_array().unwrap().len())
        .sum();
    assert_eq!(per_host, KEYS + KEPT, "per-host rows only for the ids kept");
}

#[test]
fn other_objects_under_the_prefix_are_neither_read_nor_counted() {
    // Over one page of a listing (1000 entries) in all, with a report on each page.
    const JUNK: usize = 500;
    let s3 = S3Server::start().unwrap();
    s3.create_bucket(BUCKET).unwrap();
    s3.put_object(BUCKET, OBJECT, &store_keys(3)).unwrap();
    let body = report_body("host-a", 3);
    s3.put_object(BUCKET, "fleet/usage/host-a.json", &body)
        .unwrap();
    s3.put_object(BUCKET, "fleet/usage/zz-host.json", &body)
        .unwrap();
    // Reports under other names and in sub-prefixes: read, they would change the counts.
    s3.put_object(BUCKET, "fleet/usage/junk.txt", &body)
        .unwrap();
    for n in 0..JUNK {
        let (other, nested) = (
            format!("fleet/usage/junk-{n:04}.txt"),
            format!("fleet/usage/sub-{n:04}/host.json"),
        );
        s3.copy_object(BUCKET, "fleet/usage/junk.txt", &other)
            .unwrap();
        s3.copy_object(BUCKET, "fleet/usage/junk.txt", &nested)
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let ctl = fleet_ctl(&s3, dir.path(), &dir.path().join("none.sock"));
    // Within the bytes of the two reports: nothing else is counted against it.
    let limit = (2 * body.len()).to_string();

    let (rows, stderr, _) = rows_measured(&ctl, &["--max-bytes", &limit]);
    assert!(stderr.contains("2 host report(s)"), "{stderr}");
    assert!(
        !stderr.contains("junk") && !stderr.contains("sub-"),
        "no other object is read: {stderr}"
    );
    let counts: Vec<u64> = rows
        .iter()
        .map(|r| r["verifications"].as_u64().unwrap())
        .collect();
    assert_eq!(counts, [2, 4, 6], "the two reports' counts, no more");
}
