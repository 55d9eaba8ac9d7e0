//! Where `heare-authctl usage` gets its numbers: the local daemon (`GET /usage`) or every host's
//! report under the configured `usage_report` prefix in S3, merged — verifications summed, the
//! latest use kept, and each host's own figures for `--detailed`.
//!
//! Any host that may write its report may write forged ones, so the fleet is read with its
//! memory bounded: reports one at a time, each parsed key by key into the merge and dropped
//! before the next is fetched, so that the merge grows with the store's keys, not with the number
//! of reports nor with the key ids a forger makes up: usage of a key the store holds is always
//! merged, usage of at most [`MAX_OTHER_KEYS`] other ids (a retired key's, shown as `not in
//! store`) too, and any more is counted and left out with a warning (per-host figures are kept
//! only for `--detailed`, and only for the ids kept). At most [`MAX_REPORT_BYTES`] per report,
//! [`MAX_REPORTS`] reports, and `--max-bytes` in all are read, and the listing goes through at
//! most [`MAX_LISTED`] objects and sub-prefixes.

use crate::error::CtlError;
use crate::keyview::shown;
use crate::report_reader::{self, ReportHead};
use heare_auth_client::transport;
use heare_auth_client::wire::KeyUsage;
use heare_auth_store::timestamp::{self, UnixMillis};
use heare_auth_store::{Fetched, ListLimits, ListedObject, S3Folder, S3Options, StoreError, size};
use heare_authd::config::ReportPrefix;
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// Larger reports are skipped (a million used keys make a report of about 100 MB; 64 MiB holds
/// about 600,000).
const MAX_REPORT_BYTES: u64 = 64 << 20;

/// One key's usage over the hosts that reported it.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    pub verifications: u64,
    /// Unix milliseconds of the latest use on any host (a time that does not parse is none).
    pub last_verified_at: Option<UnixMillis>,
    pub last_used_previous_secret: bool,
    /// Each host's own figures, in the order read; only when asked for (`--detailed`).
    pub hosts: Vec<HostUsage>,
}

/// One host's figures for one key.
#[derive(Debug, Clone)]
pub struct HostUsage {
    pub host: Arc<str>,
    pub verifications: u64,
    pub last_verified_at: Option<UnixMillis>,
}

impl Merged {
    fn add(&mut self, usage: &KeyUsage, at: Option<UnixMillis>) {
        self.verifications = self.verifications.saturating_add(usage.verifications);
        if at > self.last_verified_at {
            self.last_verified_at = at;
            self.last_used_previous_secret = usage.last_used_previous_secret;
        }
    }
}

/// Key id → usage.
pub type UsageByKey = BTreeMap<String, Merged>;

/// The ids of the store's keys: their usage is always merged.
pub type StoredIds<'a> = HashSet<&'a str>;

/// Key ids not in the store whose usage is merged at most (a retired key's is shown as `not in
/// store`); usage of any further ones is counted and left out: a forged report may name millions
/// of made-up ids, each far shorter than its place in the merge.
const MAX_OTHER_KEYS: usize = 10_000;

/// Usage merged key by key as it is read.
struct Merge<'a> {
    stored: &'a StoredIds<'a>,
    by_key: UsageByKey,
    /// How many ids of `by_key` are not in `stored`.
    others: usize,
    /// Usages left out so far, of ids past [`MAX_OTHER_KEYS`].
    left_out: u64,
    /// Keep each host's figures (`--detailed`).
    detailed: bool,
}

impl<'a> Merge<'a> {
    fn new(stored: &'a StoredIds<'a>, detailed: bool) -> Self {
        Merge {
            stored,
            by_key: UsageByKey::new(),
            others: 0,
            left_out: 0,
            detailed,
        }
    }

    /// Adds `host`'s usage of one key, last used `at`, when its id is kept; counts it in
    /// `left_out` otherwise.
    fn add(&mut self, host: &Arc<str>, usage: KeyUsage, at: Option<UnixMillis>) {
        let detailed = self.detailed;
        let Some(merged) = self.entry(&usage.key_id) else {
            self.left_out += 1;
            return;
        };
        merged.add(&usage, at);
        if detailed {
            merged.hosts.push(HostUsage {
                host: Arc::clone(host),
                verifications: usage.verifications,
                last_verified_at: at,
            });
        }
    }

    /// The usage of key `id`: found, or made when the store holds the key or there is room for
    /// one more other id; `None` when `id` is left out.
    fn entry(&mut self, id: &str) -> Option<&mut Merged> {
        if !self.by_key.contains_key(id) {
            if !self.stored.contains(id) {
                if self.others >= MAX_OTHER_KEYS {
                    return None;
                }
                self.others += 1;
            }
            self.by_key.insert(id.to_string(), Merged::default());
        }
        self.by_key.get_mut(id)
    }
}

/// Warns that `source` named `left_out` usages of key ids not in the store that were left out.
fn warn_left_out(source: &str, left_out: u64) {
    if left_out > 0 {
        eprintln!(
            "warning: {source} names {left_out} more key id(s) that are not in the store: left out (at most {MAX_OTHER_KEYS} such ids are shown; that many is a forged report, or a store that lost its keys)"
        );
    }
}

/// The local daemon's usage (as host `local` for `detailed`), of the keys `stored` names and at
/// most [`MAX_OTHER_KEYS`] others.
pub fn local(socket: &Path, stored: &StoredIds, detailed: bool) -> Result<UsageByKey, CtlError> {
    let answer = transport::call(socket, "GET", "/usage", b"", Duration::from_secs(60))
        .map_err(|e| CtlError::Other(e.to_string()))?;
    if answer.status != 200 {
        return Err(CtlError::Other(crate::daemon_link::describe_refusal(
            answer.status,
            &answer.body,
        )));
    }
    let listed: Vec<KeyUsage> = serde_json::from_slice(&answer.body).map_err(|_| {
        CtlError::Other("heare-authd's /usage answer is not what this version expects".into())
    })?;
    let host: Arc<str> = Arc::from("local");
    let mut merge = Merge::new(stored, detailed);
    for usage in listed {
        let at = last_use(&usage);
        merge.add(&host, usage, at);
    }
    warn_left_out("the local daemon's usage", merge.left_out);
    Ok(merge.by_key)
}

/// Reports read at most: a fleet larger than this is a mistake in the prefix, or an attack.
const MAX_REPORTS: usize = 10_000;

/// Objects and sub-prefixes the listing of the reports goes through at most, reports or not: past
/// it, a prefix flooded with other objects ends the reading with an error.
const MAX_LISTED: usize = 10 * MAX_REPORTS;

/// A report's times may run this far ahead of this clock; later ones are ignored (a forged
/// "used in 9999" would keep a key out of `--unused-for` for ever).
const MAX_AHEAD_MS: i64 = 24 * 3600 * 1000;

/// How `--fleet` reads the reports.
pub struct FleetReading {
    /// `--max-bytes`: the most report bytes read in all.
    pub max_bytes: u64,
    /// `--detailed`: keep each host's figures.
    pub detailed: bool,
}

/// Every host's report under `prefix`, merged (the keys `stored` names, and at most
/// [`MAX_OTHER_KEYS`] others); unreadable reports are named on stderr and left out. Returns the
/// merge and the number of hosts read. Only `PREFIX/<host>.json` objects count (a host name of
/// letters, digits, `-`, `_` and `.`; nothing in a sub-prefix is even listed), at most
/// [`MAX_REPORTS`] of them; a host is named by its object, never by what the report says. Past
/// `reading.max_bytes` of reports in all, or [`MAX_LISTED`] objects and sub-prefixes listed,
/// nothing is shown: an error says so.
pub async fn fleet(
    prefix: &ReportPrefix,
    s3: &S3Options,
    stored: &StoredIds<'_>,
    reading: &FleetReading,
) -> Result<(UsageByKey, usize), CtlError> {
    let folder = S3Folder::connect(&prefix.bucket, &prefix.prefix, s3).await;
    let limits = ListLimits {
        keep: MAX_REPORTS + 1,
        seen: MAX_LISTED,
    };
    let reports = folder
        .list(limits, |key| host_of(&prefix.prefix, key).is_some())
        .await
        .map_err(|error| match error {
            StoreError::TooManyListed { .. } => CtlError::Other(format!(
                "{error}: is usage_report the prefix the daemons write? Move other objects out of it"
            )),
            error => error.into(),
        })?;
    if reports.len() > MAX_REPORTS {
        return Err(CtlError::Other(format!(
            "over {MAX_REPORTS} reports under {prefix}: is usage_report the prefix the daemons write?"
        )));
    }
    let listed: u64 = reports
        .iter()
        .map(|report| report.size)
        .filter(|size| *size <= MAX_REPORT_BYTES)
        .sum();
    if listed > reading.max_bytes {
        return Err(over_budget(prefix, reading.max_bytes, listed));
    }
    let now = timestamp::now();
    let mut merge = Merge::new(stored, reading.detailed);
    let mut budget = Budget::new(reading.max_bytes);
    let mut hosts = 0;
    for report in &reports {
        let Some(host) = host_of(&prefix.prefix, &report.key) else {
            continue;
        };
        let name = || shown(&format!("s3://{}/{}", prefix.bucket, report.key));
        let body = match read_report(&folder, report, &mut budget).await {
            Ok(body) => body,
            Err(Unread::OverBudget(total)) => {
                return Err(over_budget(prefix, reading.max_bytes, total));
            }
            Err(Unread::Skipped(why)) => {
                eprintln!("warning: skipping {}: {why}", name());
                continue;
            }
        };
        if merge_report(&body, host, &name(), &mut merge, now)? {
            hosts += 1;
        }
    }
    Ok((merge.by_key, hosts))
}

/// Merges `body`, the report of `host` (at `name`), when it is a whole report (the answer); warns
/// and merges nothing otherwise. Warns, too, of the usages it names that were left out.
fn merge_report(
    body: &[u8],
    host: String,
    name: &str,
    merge: &mut Merge,
    now: UnixMillis,
) -> Result<bool, CtlError> {
    let head = match report_reader::check(body) {
        Ok(head) => head,
        Err(why) => {
            eprintln!("warning: skipping {name}: {why}");
            return Ok(false);
        }
    };
    warn_if_odd(&head, &host, now);
    let host: Arc<str> = Arc::from(host);
    let left_out = merge.left_out;
    report_reader::each_key(body, |usage| {
        let at = believable(&usage, now);
        merge.add(&host, usage, at);
    })
    .map_err(|e| CtlError::Other(format!("{name}: {e}")))?;
    warn_left_out(&format!("the report of {host}"), merge.left_out - left_out);
    Ok(true)
}

/// The bytes of reports read so far, against `--max-bytes`.
struct Budget {
    limit: u64,
    read: u64,
}

impl Budget {
    fn new(limit: u64) -> Self {
        Budget { limit, read: 0 }
    }

    fn remaining(&self) -> u64 {
        self.limit.saturating_sub(self.read)
    }
}

/// Why a report was not read.
enum Unread {
    /// Reading it would pass `--max-bytes`: the bytes it would take in all (or more).
    OverBudget(u64),
    /// Left out with a warning: why.
    Skipped(String),
}

/// The body of `report`, at most [`MAX_REPORT_BYTES`] and what remains of `budget`, which it is
/// charged to.
async fn read_report(
    folder: &S3Folder,
    report: &ListedObject,
    budget: &mut Budget,
) -> Result<Vec<u8>, Unread> {
    let limit = MAX_REPORT_BYTES.min(budget.remaining());
    match folder.read(&report.key, limit).await {
        Ok(Fetched::Body { body, .. }) => {
            budget.read = budget.read.saturating_add(body.len() as u64);
            Ok(body)
        }
        Ok(Fetched::Missing | Fetched::NotModified) => {
            Err(Unread::Skipped("it went away while being read".into()))
        }
        Err(StoreError::TooLarge { size, .. }) => Err(too_large(size, budget)),
        Err(error) => Err(Unread::Skipped(error.to_string())),
    }
}

/// A report refused at `size` bytes (or more): skipped when over what one report may hold, else
/// it passed what remained of `budget` (it grew after the listing, or came without its size).
fn too_large(size: u64, budget: &Budget) -> Unread {
    if size > MAX_REPORT_BYTES {
        let limit = size::format(MAX_REPORT_BYTES);
        return Unread::Skipped(format!("over {limit} (a report may hold at most that)"));
    }
    Unread::OverBudget(budget.read.saturating_add(size))
}

/// The error when the reports under `prefix` hold `total` bytes (or more) in all, over `limit`.
fn over_budget(prefix: &ReportPrefix, limit: u64, total: u64) -> CtlError {
    CtlError::Other(format!(
        "the reports under {prefix} hold {total} bytes or more, over the limit of --max-bytes {} ({limit} bytes); nothing is shown: raise --max-bytes if the fleet is that large, else look for reports that should not be there",
        size::format(limit)
    ))
}

/// The host a report object stands for: `PREFIX/<host>.json` with a plain host name; `None` for
/// any other object (nested, other suffix, odd characters).
fn host_of(prefix: &str, key: &str) -> Option<String> {
    let name = key.strip_prefix(prefix)?.strip_suffix(".json")?;
    let plain = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    plain.then(|| name.to_string())
}

/// Warns (once per report) of a report that names another host, or is over a day old.
fn warn_if_odd(report: &ReportHead, host: &str, now: UnixMillis) {
    if !report.host_id.is_empty() && report.host_id != host {
        eprintln!(
            "warning: the report of {host} says it is {}; shown as {host}",
            shown(&report.host_id)
        );
    }
    let written = timestamp::parse(&report.written_at).ok();
    if written.is_none_or(|at| now - at > 24 * 3600 * 1000) {
        eprintln!(
            "warning: the report of {host} was written at {} (over a day ago: a retired host?)",
            shown(&report.written_at)
        );
    }
}

/// The last use `usage` gives, if its time parses.
fn last_use(usage: &KeyUsage) -> Option<UnixMillis> {
    let text = usage.last_verified_at.as_deref()?;
    timestamp::parse(text).ok()
}

/// The last use `usage` gives, none when it is more than a day in the future.
fn believable(usage: &KeyUsage, now: UnixMillis) -> Option<UnixMillis> {
    last_use(usage).filter(|at| *at <= now + MAX_AHEAD_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(n: u64, at: Option<&str>, previous: bool) -> KeyUsage {
        KeyUsage {
            key_id: "k".into(),
            verifications: n,
            last_verified_at: at.map(str::to_string),
            last_used_previous_secret: previous,
            rate_limited: None,
        }
    }

    #[test]
    fn only_plain_report_names_count() {
        assert_eq!(host_of("u/", "u/web-1.json"), Some("web-1".to_string()));
        assert_eq!(host_of("u/", "u/a/b.json"), None);
        assert_eq!(host_of("u/", "u/evil\rline.json"), None);
        assert_eq!(host_of("u/", "u/.json"), None);
        assert_eq!(host_of("u/", "u/x.txt"), None);
    }

    #[test]
    fn a_use_in_the_far_future_is_not_believed() {
        let now = timestamp::parse("2026-01-01T00:00:00Z").unwrap();
        let forged = usage(5, Some("9999-12-31T00:00:00Z"), true);
        assert_eq!(believable(&forged, now), None);
        let fine = usage(1, Some("2026-01-01T00:00:00Z"), false);
        assert!(believable(&fine, now).is_some());
        let stored = StoredIds::new();
        let mut merge = Merge::new(&stored, false);
        let at = believable(&forged, now);
        merge.add(&Arc::from("a"), forged, at);
        let merged = &merge.by_key["k"];
        assert_eq!(merged.verifications, 5, "the count stands");
        assert_eq!(merged.last_verified_at, None);
        assert!(!merged.last_used_previous_secret);
    }

    #[test]
    fn a_report_refused_for_its_size_is_skipped_or_ends_the_reading() {
        let budget = Budget {
            limit: 100 << 20,
            read: 90 << 20,
        };
        let skipped = too_large(MAX_REPORT_BYTES + 1, &budget);
        assert!(matches!(skipped, Unread::Skipped(why) if why.contains("64MiB")));
        let over = too_large(11 << 20, &budget);
        assert!(matches!(over, Unread::OverBudget(total) if total == 101 << 20));
    }

    #[test]
    fn merging_sums_counts_and_keeps_the_latest_use() {
        let (a, b, c) = (Arc::from("a"), Arc::from("b"), Arc::from("c"));
        let stored = StoredIds::from(["k"]);
        for detailed in [false, true] {
            let mut merge = Merge::new(&stored, detailed);
            for (host, usage) in [
                (&a, usage(3, Some("2026-01-02T00:00:00.000Z"), true)),
                (&b, usage(4, Some("2026-01-01T00:00:00.000Z"), false)),
                (&c, usage(0, None, false)),
            ] {
                let at = last_use(&usage);
                merge.add(host, usage, at);
            }
            let merged = &merge.by_key["k"];
            assert_eq!(merged.verifications, 7);
            let latest = timestamp::parse("2026-01-02T00:00:00.000Z").ok();
            assert_eq!(merged.last_verified_at, latest);
            assert!(merged.last_used_previous_secret);
            let hosts: Vec<&str> = merged.hosts.iter().map(|h| &*h.host).collect();
            let expected: &[&str] = if detailed { &["a", "b", "c"] } else { &[] };
            assert_eq!(hosts, expected, "per-host rows only when detailed");
        }
    }

    #[test]
    fn ids_not_in_the_store_are_kept_up_to_a_limit_then_counted() {
        let stored = StoredIds::from(["stored-1", "stored-2"]);
        let host = Arc::from("h");
        for detailed in [false, true] {
            let mut merge = Merge::new(&stored, detailed);
            let mut add = |id: String, n: u64| {
                let usage = KeyUsage {
                    key_id: id,
                    ..usage(n, None, false)
                };
                merge.add(&host, usage, None);
            };
            add("stored-1".into(), 1);
            for n in 0..MAX_OTHER_KEYS + 5 {
                add(format!("other-{n}"), 1);
            }
            add("other-0".into(), 2);
            add("stored-2".into(), 3);
            add("stored-1".into(), 4);
            add(format!("other-{}", MAX_OTHER_KEYS + 1), 1);
            assert_eq!(merge.by_key.len(), MAX_OTHER_KEYS + 2);
            assert_eq!(merge.left_out, 6, "five new ids, one of them twice");
            assert_eq!(
                merge.by_key["stored-1"].verifications, 5,
                "past the limit too"
            );
            assert_eq!(merge.by_key["stored-2"].verifications, 3);
            assert_eq!(
                merge.by_key["other-0"].verifications, 3,
                "a kept id still merges"
            );
            assert!(
                !merge
                    .by_key
                    .contains_key(&format!("other-{MAX_OTHER_KEYS}"))
            );
            let rows: usize = merge.by_key.values().map(|m| m.hosts.len()).sum();
            let expected = if detailed { MAX_OTHER_KEYS + 4 } else { 0 };
            assert_eq!(rows, expected, "per-host rows only for the ids kept");
        }
    }
}
