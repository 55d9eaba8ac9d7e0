//! Docs that cannot drift: README.md and docs/ held to the code, against the real binaries where
//! possible (docs/testing.md, "Docs that cannot drift").
//!
//! - Settings: every configuration file key (the real daemon names every key it accepts when
//!   given an unknown one, table by table), every flag of `heare-authd --help`, `heare-authctl
//!   --help` and each subcommand's `--help`, and every environment variable (clap's `[env: …]`,
//!   and the reads in the daemon's, store's, ctl's and clients' sources) is in a
//!   `drift-checked` table of docs/configuration.md; whatever those tables name exists.
//! - Metrics: a daemon with every family on (metrics listener, stats push, usage file, notify
//!   queue) is scraped; its families and docs/monitoring.md's metric table are the same set.
//! - Endpoints: the router's paths and methods and docs/api.md's request table are the same set.
//! - Runnable examples: each ```` ```sh ```` block marked `<!-- runnable -->` runs in an empty
//!   directory with the built binaries on `PATH` and exits 0 within a minute.
//! - Links: every relative link of README.md and docs/ reaches a file, and a heading in it.

use heare_auth_tests::code_scan::{
    environment_reads, help_commands, help_env, help_flags, routes, sources,
};
use heare_auth_tests::daemon::binary;
use heare_auth_tests::docs::{
    Table, anchors, code_spans, marked_tables, page, pages, relative_links, repo_root,
    runnable_blocks,
};
use heare_auth_tests::http::{Request, send_tcp};
use heare_auth_tests::s3_server::S3Server;
use heare_auth_tests::{free_port, wait_until};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use std::collections::BTreeSet;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const CONFIGURATION: &str = "docs/configuration.md";
const MONITORING: &str = "docs/monitoring.md";
const API: &str = "docs/api.md";

/// The sources whose environment reads are settings (not the tests', nor the benchmark's).
const READING_SOURCES: [&str; 6] = [
    "daemon/src",
    "daemon/store/src",
    "ctl/src",
    "client/src",
    "client/ffi/src",
    "client/pam/src",
];

/// Runs a built binary with a clean environment; its (exit code, stdout, stderr).
fn run(program: &str, args: &[&str]) -> (Option<i32>, String, String) {
    let output = Command::new(binary(program))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn help(program: &str, args: &[&str]) -> String {
    let mut args = args.to_vec();
    args.push("--help");
    let (code, out, err) = run(program, &args);
    assert_eq!(code, Some(0), "{program} {args:?}: {err}");
    out
}

/// Fails naming both directions of a mismatch between the code and a page.
fn assert_same(what: &str, page: &str, code: &BTreeSet<String>, docs: &BTreeSet<String>) {
    let undocumented: Vec<&String> = code.difference(docs).collect();
    let gone: Vec<&String> = docs.difference(code).collect();
    assert!(
        undocumented.is_empty() && gone.is_empty(),
        "{what}: in the code but not in {page}'s drift-checked table: {undocumented:?}; \
         in {page} but not in the code: {gone:?}"
    );
}

fn tables_with(page_name: &str, header: &str) -> Vec<Table> {
    let tables: Vec<Table> = marked_tables(&page(page_name))
        .into_iter()
        .filter(|t| t.headers.iter().any(|h| h == header))
        .collect();
    assert!(
        !tables.is_empty(),
        "{page_name} has no drift-checked table with a `{header}` column"
    );
    tables
}

/// The code spans of a column, across the page's marked tables.
fn documented(page_name: &str, header: &str) -> Vec<String> {
    tables_with(page_name, header)
        .iter()
        .flat_map(|t| {
            t.column(header)
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .flat_map(|cell| {
            code_spans(&cell)
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

// ---- settings ----------------------------------------------------------------------------------

/// The keys the real daemon accepts in the table at `path` (empty: the top level), or `None` when
/// `path` is not a table of named keys (a value, or a map of any keys).
fn accepted_keys(dir: &Path, path: &[String]) -> Option<Vec<String>> {
    let file = dir.join("probe.toml");
    let header = if path.is_empty() {
        String::new()
    } else {
        format!("[{}]\n", path.join("."))
    };
    std::fs::write(&file, format!("{header}zz_drift_probe = 1\n")).unwrap();
    let (code, _, err) = run(
        "heare-authd",
        &["--config", &file.display().to_string(), "--check-config"],
    );
    assert_eq!(
        code,
        Some(2),
        "an unknown key is a configuration error: {err}"
    );
    if !err.contains("unknown field `zz_drift_probe`") {
        return None;
    }
    let expected = err.split("expected").nth(1).unwrap_or_default();
    Some(
        code_spans(expected)
            .into_iter()
            .map(str::to_string)
            .collect(),
    )
}

/// Every file setting, dotted (`s3.region`), found by asking the daemon table by table.
fn file_settings(dir: &Path, path: Vec<String>, found: &mut BTreeSet<String>) {
    let keys = accepted_keys(dir, &path).expect("the top level is a table");
    for key in keys {
        let mut inner = path.clone();
        inner.push(key);
        if accepted_keys(dir, &inner).is_some() {
            file_settings(dir, inner, found);
        } else {
            found.insert(inner.join("."));
        }
    }
}

/// A file key as the docs write it (`[s3] region`, `[forward_auth.metadata_headers]`), dotted.
fn dotted(written: &str) -> String {
    let written = written.trim();
    match written.strip_prefix('[').and_then(|r| r.split_once(']')) {
        Some((table, "")) => table.to_string(),
        Some((table, key)) => format!("{table}.{}", key.trim()),
        None => written.to_string(),
    }
}

#[test]
fn every_file_setting_is_in_configuration_md_and_nothing_else() {
    let dir = tempfile::tempdir().unwrap();
    let mut code = BTreeSet::new();
    file_settings(dir.path(), Vec::new(), &mut code);
    assert!(
        code.contains("store") && code.contains("s3.region"),
        "the daemon's answer no longer lists its keys: {code:?}"
    );
    let docs = documented(CONFIGURATION, "file key")
        .iter()
        .map(|k| dotted(k))
        .collect();
    assert_same("configuration file keys", CONFIGURATION, &code, &docs);
}

/// The long flag a flag cell's code span names (`--cache PATH|none` → `--cache`).
fn flag_of(span: &str) -> Option<String> {
    let flag = span.split_whitespace().next()?;
    flag.starts_with("--").then(|| flag.to_string())
}

#[test]
fn every_heare_authd_flag_is_in_configuration_md_and_nothing_else() {
    let code = help_flags(&help("heare-authd", &[]));
    assert!(code.contains("--store"), "{code:?}");
    let docs = tables_with(CONFIGURATION, "file key")
        .iter()
        .flat_map(|t| {
            t.column("flag")
                .into_iter()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .flat_map(|cell| {
            code_spans(&cell)
                .into_iter()
                .filter_map(flag_of)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_same("heare-authd flags", CONFIGURATION, &code, &docs);
}

/// (command, flag) pairs; the command `heare-authctl` stands for the global flags.
fn ctl_flags_in_code() -> BTreeSet<String> {
    let top = help("heare-authctl", &[]);
    let globals = help_flags(&top);
    assert!(globals.contains("--store"), "{globals:?}");
    let mut pairs: BTreeSet<String> = globals
        .iter()
        .map(|f| format!("heare-authctl {f}"))
        .collect();
    let commands = help_commands(&top);
    assert!(commands.contains(&"create".to_string()), "{commands:?}");
    for command in commands {
        for flag in help_flags(&help("heare-authctl", &[&command])).difference(&globals) {
            pairs.insert(format!("{command} {flag}"));
        }
    }
    pairs
}

fn ctl_flags_in_docs() -> BTreeSet<String> {
    let mut pairs = BTreeSet::new();
    for table in tables_with(CONFIGURATION, "command") {
        for (commands, flags) in table
            .column("command")
            .into_iter()
            .zip(table.column("flag"))
        {
            let flags: Vec<String> = code_spans(flags).into_iter().filter_map(flag_of).collect();
            for command in code_spans(commands) {
                pairs.extend(flags.iter().map(|f| format!("{command} {f}")));
            }
        }
    }
    pairs
}

#[test]
fn every_heare_authctl_flag_is_in_configuration_md_and_nothing_else() {
    assert_same(
        "heare-authctl flags (command flag)",
        CONFIGURATION,
        &ctl_flags_in_code(),
        &ctl_flags_in_docs(),
    );
}

#[test]
fn every_environment_variable_is_in_configuration_md_and_nothing_else() {
    let root = repo_root();
    let mut code = environment_reads(&sources(&root, &READING_SOURCES));
    // The scanner itself must still see the reads it was written against.
    for known in [
        "STORAGE_SECRET",
        "DEST_HOST",
        "JOURNAL_STREAM",
        "HEARE_AUTH_SOCKET",
    ] {
        assert!(
            code.contains(known),
            "the source scan no longer finds {known}: {code:?}"
        );
    }
    code.extend(help_env(&help("heare-authd", &[])));
    code.extend(help_env(&help("heare-authctl", &[])));
    let docs = documented(CONFIGURATION, "environment")
        .into_iter()
        .filter(|span| {
            span.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        })
        .collect();
    assert_same("environment variables", CONFIGURATION, &code, &docs);
}

// ---- metrics -----------------------------------------------------------------------------------

/// The metric families a daemon exposes with every one of them on.
fn exposed_families() -> BTreeSet<String> {
    let s3 = S3Server::start().expect("the S3 server starts");
    s3.create_bucket("drift").unwrap();
    s3.put_object("drift", "keys.json", br#"{"keys":[]}"#)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    let stats = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let config = format!(
        "metrics_listen = \"{metrics}\"\nusage_path = \"{}\"\n\
         notify_queue = \"http://127.0.0.1:{}/000000000000/drift\"\n\
         [s3]\ntimeout = \"2s\"\n[stats]\nprotocol = \"udp\"\ndest_host = \"127.0.0.1\"\n\
         dest_port = {}\nflush_interval = \"100ms\"\n",
        dir.path().join("usage.json").display(),
        s3.port(),
        stats.local_addr().unwrap().port(),
    );
    let mut daemon = s3
        .daemon(dir.path(), "drift", "keys.json")
        .config(&config)
        .start()
        .unwrap();
    let mut text = String::new();
    let scraped = wait_until(Duration::from_secs(10), || {
        text = send_tcp(&metrics, &Request::new("GET", "/metrics"))
            .map(|answer| answer.body)
            .unwrap_or_default();
        text.contains("heare_auth_notify_queue_up")
    });
    assert!(scraped, "no notify families in:\n{text}\n{}", daemon.log());
    daemon.stop();
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_exposed_metric_is_in_monitoring_md_and_nothing_else() {
    let code = exposed_families();
    let docs = documented(MONITORING, "metric").into_iter().collect();
    assert_same("metric families", MONITORING, &code, &docs);
}

// ---- endpoints ---------------------------------------------------------------------------------

/// `METHOD /path` for each method a path answers, `/path` for one that answers any.
fn routed() -> BTreeSet<String> {
    let source = std::fs::read_to_string(repo_root().join("daemon/src/server/router.rs")).unwrap();
    let routes = routes(&source);
    assert!(routes.contains_key("/verify"), "{routes:?}");
    routes
        .iter()
        .flat_map(|(path, methods)| match methods.is_empty() {
            true => vec![path.clone()],
            false => methods.iter().map(|m| format!("{m} {path}")).collect(),
        })
        .collect()
}

#[test]
fn every_endpoint_is_in_api_md_and_nothing_else() {
    let docs = documented(API, "request")
        .into_iter()
        .filter(|span| !span.ends_with('…')) // `/auth/…`: the prefix form of `/auth`
        .collect();
    assert_same("endpoints", API, &routed(), &docs);
}

// ---- runnable examples and links ---------------------------------------------------------------

/// Runs `script` with bash in an empty directory, the built binaries first on PATH, in a process
/// group of its own that is killed afterwards (whatever it left running, such as a daemon).
fn run_example(script: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = binary("heare-authd").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let log = dir.path().join("example.log");
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", path)
        .env("HOME", dir.path())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(dir.path().join("example.err")).unwrap())
        .process_group(0)
        .spawn()
        .expect("run bash");
    let group = Pid::from_raw(child.id() as i32);
    let mut status = None;
    wait_until(Duration::from_secs(60), || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    let _ = killpg(group, Signal::SIGKILL);
    let status = status.or_else(|| child.wait().ok());
    let gone = wait_until(Duration::from_secs(10), || killpg(group, None).is_err());
    assert!(gone, "the example's processes outlived SIGKILL");
    let output = std::fs::read_to_string(&log).unwrap_or_default()
        + &std::fs::read_to_string(dir.path().join("example.err")).unwrap_or_default();
    (status.and_then(|s| s.code()), output)
}

#[test]
fn the_runnable_examples_run() {
    let blocks = runnable_blocks();
    assert!(
        blocks.iter().any(|b| b.page == "README.md"),
        "README.md's quick start is no longer marked runnable"
    );
    for block in blocks {
        let (code, output) = run_example(&block.script);
        assert_eq!(
            code,
            Some(0),
            "{}:{}: the example failed:\n{}\n--- its output:\n{output}",
            block.page,
            block.line,
            block.script
        );
    }
}

#[test]
fn every_link_between_pages_reaches_a_page_and_a_heading() {
    let root = repo_root();
    let mut broken = Vec::new();
    for (name, text) in pages() {
        let base = Path::new(&name).parent().unwrap_or(Path::new(""));
        for link in relative_links(&text) {
            let (file, anchor) = link.split_once('#').unwrap_or((link, ""));
            let target = if file.is_empty() {
                name.clone()
            } else {
                base.join(file).display().to_string()
            };
            let Ok(target_text) = std::fs::read_to_string(root.join(&target)) else {
                if !root.join(&target).exists() {
                    broken.push(format!("{name}: {link} (no such file)"));
                }
                continue;
            };
            if !anchor.is_empty()
                && target.ends_with(".md")
                && !anchors(&target_text).iter().any(|a| a == anchor)
            {
                broken.push(format!("{name}: {link} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links: {broken:#?}");
}
