//! Fleet usage against a real S3 server (in-process s3s, or moto with HEARE_TEST_S3=moto): two
//! daemons on one store each write `PREFIX/<host id>.json` on their schedule and at shutdown, and
//! `heare-authctl usage --fleet` merges them — verifications summed, the latest use kept, each
//! host's own figures with `--detailed`. A report that is not one is skipped with a warning.

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
    let ctl = s3
        .ctl(ctl_dir.path(), (BUCKET, OBJECT), &a.socket, &[])
        .config_text(&format!(
            "usage_report = \"s3://{BUCKET}/fleet/usage/\"\n[s3]\npath_style = true\n"
        ));
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
