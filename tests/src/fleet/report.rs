//! From a run's record to its figures, and the figures as a table, an extrapolation and JSON.
//!
//! Per mode: propagation of each revocation (the time until the last daemon first refused the
//! key) and its p50/p99/max (nearest rank); requests per daemon-hour by class (count over N × the
//! run's hours); bytes of GetObject 200 bodies per change; the fleet's mean request rate outside
//! the outage and the busiest second (any 1 s window) of the recovery window, for S3 requests and
//! for all; the targets of issue 16 with their verdicts. The recovery target is judged on S3
//! requests: the outage is S3's, and in push mode every daemon's long poll restarts when a change
//! is announced, so their 20 s waits run out in the same second — SQS's rhythm, not a recovery
//! herd (the all-requests figure is shown beside it). The extrapolation prices a fleet of H hosts
//! at C changes a day from the idle request rate (change-driven requests removed) and the
//! requests each change costs a host.

use super::classify::Class;
use super::counting_proxy::Exchange;
use super::scenario::{Mode, RunRecord, Span};
use serde_json::{Value, json};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Published price of S3 GET (and HEAD) requests: dollars per 1,000.
pub const S3_GET_DOLLARS_PER_1000: f64 = 0.0004;
/// Published price of SQS requests: dollars per 1,000,000.
pub const SQS_DOLLARS_PER_MILLION: f64 = 0.40;
/// The fleet sizes extrapolated to.
pub const HOSTS: [u64; 2] = [1_000, 10_000];
/// The recovery target: no second above this multiple of the mean rate.
pub const RECOVERY_LIMIT: f64 = 3.0;

/// One target and whether the run met it.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub value: Option<f64>,
    pub limit: f64,
    pub met: bool,
}

/// The busiest second after the outage.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub window_seconds: f64,
    pub peak_s3: usize,
    pub peak_all: usize,
    pub ratio_s3: f64,
    pub ratio_all: f64,
}

/// What the extrapolation needs from a run: idle requests per daemon-hour and requests per daemon
/// per change, for S3 and SQS.
///
/// Idle SQS requests are a daemon's long polls that ran out: one is always outstanding, so a
/// daemon makes 3600 / w of them an hour, w being the measured mean wait of an empty receive.
/// (Counting them instead would undercount: in the run, changes come every few seconds and cut
/// most waits short; each such change is counted as the receive that carried it.) Without an
/// empty receive in the run, the count is used.
#[derive(Debug, Clone, Copy, Default)]
pub struct CostModel {
    pub idle_s3: f64,
    pub idle_sqs: f64,
    pub s3_per_change: f64,
    pub sqs_per_change: f64,
    /// w: the mean wait of an empty receive, in seconds.
    pub empty_wait: Option<f64>,
}

/// The figures of one mode's run.
#[derive(Debug, Clone)]
pub struct ModeReport {
    pub mode: Mode,
    pub daemons: usize,
    pub interval: Duration,
    pub run_seconds: f64,
    pub outage_seconds: f64,
    pub revocations: usize,
    /// Revocations every daemon refused before the probes gave up.
    pub reached_all: usize,
    /// Seconds, one per revocation that reached every daemon.
    pub propagation: Vec<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
    /// Median over revocations of when the *first* daemon refused: the floor under propagation
    /// (heare-authctl's own run, the notification's path).
    pub first_p50: Option<f64>,
    pub counts: Vec<(Class, usize)>,
    pub key_file_bytes: usize,
    pub bytes_per_change: f64,
    pub mean_rate_s3: f64,
    pub mean_rate_all: f64,
    /// S3 requests per second across the fleet during the outage (retries of failed loads).
    pub outage_rate_s3: f64,
    /// The busiest second of S3 requests during the outage.
    pub outage_peak_s3: usize,
    pub recovery: Option<Recovery>,
    pub cost: CostModel,
    pub exited: Vec<String>,
    pub targets: Vec<Target>,
}

impl ModeReport {
    /// Requests of `class` per daemon-hour over the whole run.
    pub fn per_daemon_hour(&self, class: Class) -> f64 {
        let count = self
            .counts
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(0, |(_, n)| *n);
        count as f64 / (self.daemons as f64 * self.run_seconds / 3600.0)
    }

    /// Whether every target was met.
    pub fn met(&self) -> bool {
        self.targets.iter().all(|t| t.met)
    }
}

/// The figures of a run.
pub fn summarize(record: &RunRecord) -> ModeReport {
    let scenario = &record.scenario;
    let propagation = propagation_seconds(record);
    let mut sorted = propagation.clone();
    sorted.sort_by(f64::total_cmp);
    let outage_seconds = record.outage.map_or(0.0, |o| seconds(o.end - o.start));
    let (mean_rate_s3, mean_rate_all) = mean_rates(record);
    let recovery = record
        .recovery
        .map(|window| recovery(&record.exchanges, window, mean_rate_s3, mean_rate_all));
    let mut report = ModeReport {
        mode: scenario.mode,
        daemons: scenario.daemons,
        interval: scenario.interval,
        run_seconds: seconds(record.run.end - record.run.start),
        outage_seconds,
        revocations: record.revocations.len(),
        reached_all: propagation.len(),
        p50: percentile(&sorted, 0.50),
        p99: percentile(&sorted, 0.99),
        max: sorted.last().copied(),
        first_p50: first_refusal_median(record),
        propagation,
        counts: counts(&record.exchanges),
        key_file_bytes: record.key_file_bytes,
        bytes_per_change: bytes_per_change(record),
        mean_rate_s3,
        mean_rate_all,
        outage_rate_s3: outage_rate_s3(record),
        outage_peak_s3: busiest_second(outage_s3_times(record)),
        recovery,
        cost: cost_model(record),
        exited: record.exited.clone(),
        targets: Vec::new(),
    };
    report.targets = targets(&report);
    report
}

fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// For each revocation that reached every daemon, when the last one first refused.
fn propagation_seconds(record: &RunRecord) -> Vec<f64> {
    record
        .revocations
        .iter()
        .filter_map(|r| {
            let all: Option<Vec<Duration>> = r.refusals.iter().copied().collect();
            all.and_then(|times| times.into_iter().max()).map(seconds)
        })
        .collect()
}

/// The median over revocations of the first daemon's refusal.
fn first_refusal_median(record: &RunRecord) -> Option<f64> {
    let mut firsts: Vec<f64> = record
        .revocations
        .iter()
        .filter_map(|r| r.refusals.iter().flatten().min().copied().map(seconds))
        .collect();
    firsts.sort_by(f64::total_cmp);
    percentile(&firsts, 0.5)
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank.min(sorted.len()) - 1).copied()
}

fn counts(exchanges: &[Exchange]) -> Vec<(Class, usize)> {
    Class::ALL
        .iter()
        .map(|&class| (class, exchanges.iter().filter(|e| e.class == class).count()))
        .collect()
}

/// GetObject 200 body bytes over the number of changes.
fn bytes_per_change(record: &RunRecord) -> f64 {
    let bytes: usize = record
        .exchanges
        .iter()
        .filter(|e| e.class == Class::S3Get200)
        .map(|e| e.body_bytes)
        .sum();
    bytes as f64 / record.revocations.len().max(1) as f64
}

fn in_span(at: Instant, span: Option<Span>) -> bool {
    span.is_some_and(|s| at >= s.start && at < s.end)
}

/// Requests per second across the fleet outside the outage: (S3, all).
fn mean_rates(record: &RunRecord) -> (f64, f64) {
    let outside: Vec<&Exchange> = record
        .exchanges
        .iter()
        .filter(|e| !in_span(e.at, record.outage))
        .collect();
    let outage = record.outage.map_or(Duration::ZERO, |o| o.end - o.start);
    let span = seconds((record.run.end - record.run.start).saturating_sub(outage)).max(1e-9);
    let s3 = outside.iter().filter(|e| e.class.is_s3()).count();
    (s3 as f64 / span, outside.len() as f64 / span)
}

/// When each S3 request during the outage arrived.
fn outage_s3_times(record: &RunRecord) -> Vec<Instant> {
    record
        .exchanges
        .iter()
        .filter(|e| e.class.is_s3() && in_span(e.at, record.outage))
        .map(|e| e.at)
        .collect()
}

/// S3 requests per second during the outage.
fn outage_rate_s3(record: &RunRecord) -> f64 {
    let Some(outage) = record.outage else {
        return 0.0;
    };
    outage_s3_times(record).len() as f64 / seconds(outage.end - outage.start).max(1e-9)
}

fn recovery(exchanges: &[Exchange], window: Span, mean_s3: f64, mean_all: f64) -> Recovery {
    let times = |s3_only: bool| -> Vec<Instant> {
        exchanges
            .iter()
            .filter(|e| in_span(e.at, Some(window)) && (!s3_only || e.class.is_s3()))
            .map(|e| e.at)
            .collect()
    };
    let peak_s3 = busiest_second(times(true));
    let peak_all = busiest_second(times(false));
    let ratio = |peak: usize, mean: f64| if mean > 0.0 { peak as f64 / mean } else { 0.0 };
    Recovery {
        window_seconds: seconds(window.end - window.start),
        peak_s3,
        peak_all,
        ratio_s3: ratio(peak_s3, mean_s3),
        ratio_all: ratio(peak_all, mean_all),
    }
}

/// The most requests in any window of one second (windows starting at a request).
pub fn busiest_second(mut times: Vec<Instant>) -> usize {
    times.sort();
    let mut busiest = 0;
    let mut first = 0;
    for (last, at) in times.iter().enumerate() {
        while *at - times[first] >= Duration::from_secs(1) {
            first += 1;
        }
        busiest = busiest.max(last - first + 1);
    }
    busiest
}

/// Whether a class is driven by changes rather than by time in `mode`. Polling: none (a 200 is a
/// poll that would have been a 304). Push: the fetch, the receive that carried the notification,
/// and its deletion.
fn change_driven(mode: Mode, class: Class) -> bool {
    mode == Mode::Push
        && matches!(
            class,
            Class::S3Get200 | Class::SqsReceiveMessages | Class::SqsDelete | Class::SqsDeleteBatch
        )
}

fn cost_model(record: &RunRecord) -> CostModel {
    let scenario = &record.scenario;
    let outage = record.outage.map_or(Duration::ZERO, |o| o.end - o.start);
    let daemon_hours = scenario.daemons as f64
        * seconds((record.run.end - record.run.start).saturating_sub(outage))
        / 3600.0;
    let changes = (record.revocations.len() * scenario.daemons).max(1) as f64;
    let mut model = CostModel::default();
    for exchange in record
        .exchanges
        .iter()
        .filter(|e| !in_span(e.at, record.outage))
    {
        let class = exchange.class;
        let (idle, per_change) = if class.is_s3() {
            (&mut model.idle_s3, &mut model.s3_per_change)
        } else if class.is_sqs() {
            (&mut model.idle_sqs, &mut model.sqs_per_change)
        } else {
            continue;
        };
        if change_driven(scenario.mode, class) {
            *per_change += 1.0 / changes;
        } else {
            *idle += 1.0 / daemon_hours.max(1e-9);
        }
    }
    model.empty_wait = mean_empty_wait(record);
    if let Some(wait) = model.empty_wait {
        let other = count_outside_outage(record, Class::SqsOther);
        model.idle_sqs = 3600.0 / wait + other as f64 / daemon_hours.max(1e-9);
    }
    model
}

/// The mean time an empty ReceiveMessage waited, in seconds; those sent before the run began are
/// left out (a daemon's first receive, at start, does not wait).
fn mean_empty_wait(record: &RunRecord) -> Option<f64> {
    let waits: Vec<f64> = record
        .exchanges
        .iter()
        .filter(|e| e.class == Class::SqsReceiveEmpty && e.at >= record.run.start)
        .map(|e| seconds(e.done - e.at))
        .collect();
    (!waits.is_empty()).then(|| waits.iter().sum::<f64>() / waits.len() as f64)
}

fn count_outside_outage(record: &RunRecord, class: Class) -> usize {
    record
        .exchanges
        .iter()
        .filter(|e| e.class == class && !in_span(e.at, record.outage))
        .count()
}

fn targets(report: &ModeReport) -> Vec<Target> {
    let t = seconds(report.interval);
    let mut targets = vec![Target {
        name: "every revocation reached every daemon".into(),
        value: Some(report.reached_all as f64),
        limit: report.revocations as f64,
        met: report.reached_all == report.revocations && report.revocations > 0,
    }];
    let (name, value, limit) = match report.mode {
        Mode::Polling => ("max propagation ≤ 1.1·T + 1 s", report.max, 1.1 * t + 1.0),
        Mode::Push => ("p99 propagation ≤ 2 s", report.p99, 2.0),
    };
    targets.push(Target {
        name: name.into(),
        value,
        limit,
        met: value.is_some_and(|v| v <= limit),
    });
    if let Some(recovery) = &report.recovery {
        targets.push(Target {
            name: "busiest S3 second after the outage ≤ 3 × mean S3 rate".into(),
            value: Some(recovery.ratio_s3),
            limit: RECOVERY_LIMIT,
            met: recovery.ratio_s3 <= RECOVERY_LIMIT,
        });
    }
    targets.push(Target {
        name: "no daemon exited".into(),
        value: Some(report.exited.len() as f64),
        limit: 0.0,
        met: report.exited.is_empty(),
    });
    targets
}

/// S3 and SQS requests a day for `hosts` hosts at `changes_per_day`, and their price in dollars.
pub fn per_day(cost: CostModel, hosts: u64, changes_per_day: f64) -> (f64, f64, f64) {
    let hosts = hosts as f64;
    let s3 = hosts * (24.0 * cost.idle_s3 + changes_per_day * cost.s3_per_change);
    let sqs = hosts * (24.0 * cost.idle_sqs + changes_per_day * cost.sqs_per_change);
    let dollars = s3 * S3_GET_DOLLARS_PER_1000 / 1_000.0 + sqs * SQS_DOLLARS_PER_MILLION / 1e6;
    (s3, sqs, dollars)
}

fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or("—".into(), |v| format!("{v:.digits$}"))
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn row(out: &mut String, label: &str, cells: &[String]) {
    let _ = write!(out, "{label:<50}");
    for cell in cells {
        let _ = write!(out, "{cell:>20}");
    }
    out.push('\n');
}

/// How a table cell shows one mode's figure.
type Cell = fn(&ModeReport) -> String;

/// The rows above the request counts.
const HEAD_ROWS: [(&str, Cell); 8] = [
    ("daemons", |r| r.daemons.to_string()),
    ("T (s)", |r| format!("{}", seconds(r.interval))),
    ("run / outage (s)", |r| {
        format!("{:.0} / {:.0}", r.run_seconds, r.outage_seconds)
    }),
    ("revocations reaching every daemon", |r| {
        format!("{}/{}", r.reached_all, r.revocations)
    }),
    ("propagation p50 (s)", |r| fmt_opt(r.p50, 2)),
    ("propagation p99 (s)", |r| fmt_opt(r.p99, 2)),
    ("propagation max (s)", |r| fmt_opt(r.max, 2)),
    ("first daemon refusing, p50 (s)", |r| {
        fmt_opt(r.first_p50, 2)
    }),
];

/// The rows below the request counts.
const TAIL_ROWS: [(&str, Cell); 8] = [
    ("key file (bytes)", |r| thousands(r.key_file_bytes as f64)),
    ("bytes fetched per change, fleet", |r| {
        thousands(r.bytes_per_change)
    }),
    ("bytes fetched per change, per daemon", |r| {
        thousands(r.bytes_per_change / r.daemons as f64)
    }),
    ("mean rate outside outage, S3 / all (req/s)", |r| {
        format!("{:.2} / {:.2}", r.mean_rate_s3, r.mean_rate_all)
    }),
    ("S3 in the outage: mean (req/s) / busiest second", |r| {
        format!("{:.2} / {}", r.outage_rate_s3, r.outage_peak_s3)
    }),
    ("recovery window after the outage (s)", |r| {
        recovery_cell(r, |v| format!("{:.0}", v.window_seconds))
    }),
    ("busiest second in it, S3 / all (requests)", |r| {
        recovery_cell(r, |v| format!("{} / {}", v.peak_s3, v.peak_all))
    }),
    ("  ÷ mean rate, S3 / all", |r| {
        recovery_cell(r, |v| format!("{:.2} / {:.2}", v.ratio_s3, v.ratio_all))
    }),
];

fn recovery_cell(report: &ModeReport, show: fn(&Recovery) -> String) -> String {
    report.recovery.as_ref().map_or("—".into(), show)
}

/// The table: one column per mode.
pub fn table(reports: &[ModeReport]) -> String {
    let mut out = String::new();
    let cells = |cell: &dyn Fn(&ModeReport) -> String| reports.iter().map(cell).collect::<Vec<_>>();
    row(&mut out, "", &cells(&|r| r.mode.name().to_owned()));
    for (label, cell) in HEAD_ROWS {
        row(&mut out, label, &cells(&cell));
    }
    out.push_str("requests per daemon-hour\n");
    for class in Class::ALL {
        if reports.iter().any(|r| r.per_daemon_hour(class) > 0.0) {
            let per_hour = |r: &ModeReport| format!("{:.1}", r.per_daemon_hour(class));
            row(&mut out, &format!("  {}", class.label()), &cells(&per_hour));
        }
    }
    for (label, cell) in TAIL_ROWS {
        row(&mut out, label, &cells(&cell));
    }
    out
}

/// The targets with their verdicts, one line each.
pub fn verdicts(reports: &[ModeReport]) -> String {
    let mut out = String::from("targets\n");
    for report in reports {
        for target in &report.targets {
            let _ = writeln!(
                out,
                "  {:<8} {:<56} {:>8} (limit {:.2})  {}",
                report.mode.name(),
                target.name,
                fmt_opt(target.value, 2),
                target.limit,
                if target.met { "met" } else { "MISSED" }
            );
        }
    }
    out
}

/// The extrapolation to [`HOSTS`], formula shown.
pub fn extrapolation(reports: &[ModeReport], changes_per_day: f64) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "extrapolation (published prices: S3 GET ${S3_GET_DOLLARS_PER_1000} per 1,000 requests, \
         SQS ${SQS_DOLLARS_PER_MILLION:.2} per 1,000,000)\n\
         \x20 per host and day:  S3 = 24·s + C·c    SQS = 24·q + C·d\n\
         \x20   s = idle S3 requests per daemon-hour (outside the outage, change-driven requests removed)\n\
         \x20   q = idle SQS requests per daemon-hour = 3600 / w (one long poll always waiting), w = mean wait of an empty one (s)\n\
         \x20   c, d = S3, SQS requests per daemon per change;  C = {changes_per_day} changes a day\n\
         \x20 fleet of H hosts:  requests/day = H × per host;  $/day = S3/day × {S3_GET_DOLLARS_PER_1000} / 1,000 + SQS/day × {SQS_DOLLARS_PER_MILLION:.2} / 1,000,000"
    );
    for report in reports {
        let c = report.cost;
        let wait = c
            .empty_wait
            .map_or(String::new(), |w| format!(" (w = {w:.1} s)"));
        let _ = writeln!(
            out,
            "  {}: s = {:.1}, c = {:.3}, q = {:.1}{wait}, d = {:.3}",
            report.mode.name(),
            c.idle_s3,
            c.s3_per_change,
            c.idle_sqs,
            c.sqs_per_change
        );
        let per_daemon = report.bytes_per_change / report.daemons.max(1) as f64;
        for hosts in HOSTS {
            let (s3, sqs, dollars) = per_day(c, hosts, changes_per_day);
            let _ = writeln!(
                out,
                "    H = {:>6}: S3 {:>14} + SQS {:>14} requests/day = ${:.2}/day; {} bytes fetched per change",
                thousands(hosts as f64),
                thousands(s3),
                thousands(sqs),
                dollars,
                thousands(per_daemon * hosts as f64),
            );
        }
    }
    out
}

/// The reports as JSON (the `--json` output).
pub fn to_json(reports: &[ModeReport], changes_per_day: f64) -> Value {
    let modes: Vec<Value> = reports
        .iter()
        .map(|r| mode_json(r, changes_per_day))
        .collect();
    json!({
        "changes_per_day": changes_per_day,
        "prices": {
            "s3_get_dollars_per_1000": S3_GET_DOLLARS_PER_1000,
            "sqs_dollars_per_million": SQS_DOLLARS_PER_MILLION,
        },
        "modes": modes,
        "targets_met": reports.iter().all(ModeReport::met),
    })
}

fn mode_json(r: &ModeReport, changes_per_day: f64) -> Value {
    let by_class = |figure: &dyn Fn(Class, usize) -> Value| -> serde_json::Map<String, Value> {
        r.counts
            .iter()
            .map(|&(class, count)| (class.key().to_owned(), figure(class, count)))
            .collect()
    };
    json!({
        "mode": r.mode.name(),
        "daemons": r.daemons,
        "interval_seconds": seconds(r.interval),
        "run_seconds": r.run_seconds,
        "outage_seconds": r.outage_seconds,
        "revocations": r.revocations,
        "reached_all": r.reached_all,
        "propagation_seconds": r.propagation,
        "p50_seconds": r.p50, "p99_seconds": r.p99, "max_seconds": r.max,
        "first_refusal_p50_seconds": r.first_p50,
        "counts": by_class(&|_, count| json!(count)),
        "per_daemon_hour": by_class(&|class, _| json!(r.per_daemon_hour(class))),
        "key_file_bytes": r.key_file_bytes,
        "bytes_per_change": r.bytes_per_change,
        "bytes_per_change_per_daemon": r.bytes_per_change / r.daemons as f64,
        "mean_rate_s3": r.mean_rate_s3,
        "mean_rate_all": r.mean_rate_all,
        "outage_rate_s3": r.outage_rate_s3,
        "outage_peak_s3": r.outage_peak_s3,
        "recovery": r.recovery.as_ref().map(|v| json!({
            "window_seconds": v.window_seconds, "peak_s3": v.peak_s3, "peak_all": v.peak_all,
            "ratio_s3": v.ratio_s3, "ratio_all": v.ratio_all,
        })),
        "cost_model": {
            "idle_s3_per_daemon_hour": r.cost.idle_s3,
            "idle_sqs_per_daemon_hour": r.cost.idle_sqs,
            "s3_per_change_per_daemon": r.cost.s3_per_change,
            "sqs_per_change_per_daemon": r.cost.sqs_per_change,
            "empty_receive_wait_seconds": r.cost.empty_wait,
        },
        "extrapolation": extrapolation_json(r.cost, changes_per_day),
        "exited": r.exited,
        "targets": r.targets.iter().map(|t| json!({
            "name": t.name, "value": t.value, "limit": t.limit, "met": t.met,
        })).collect::<Vec<_>>(),
        "targets_met": r.met(),
    })
}

fn extrapolation_json(cost: CostModel, changes_per_day: f64) -> Vec<Value> {
    HOSTS
        .iter()
        .map(|&hosts| {
            let (s3, sqs, dollars) = per_day(cost, hosts, changes_per_day);
            json!({
                "hosts": hosts,
                "s3_requests_per_day": s3,
                "sqs_requests_per_day": sqs,
                "dollars_per_day": dollars,
            })
        })
        .collect()
}

/// The record as CSV (the `--trace` output): `#` lines for the revocations and the outage, then
/// one line per exchange; times in seconds from the run's start.
pub fn trace_csv(record: &RunRecord) -> String {
    let since = |at: Instant| seconds(at.saturating_duration_since(record.run.start));
    let mode = record.scenario.mode.name();
    let mut out = String::new();
    for revocation in &record.revocations {
        let last = revocation
            .refusals
            .iter()
            .flatten()
            .max()
            .map(|d| seconds(*d));
        let _ = writeln!(
            out,
            "# {mode} revocation {} at {:.3}, last refusal after {}",
            revocation.key_id,
            since(revocation.started),
            fmt_opt(last, 3)
        );
    }
    if let Some(outage) = record.outage {
        let (start, end) = (since(outage.start), since(outage.end));
        let _ = writeln!(out, "# {mode} outage from {start:.3} to {end:.3}");
    }
    out.push_str("mode,at,done,class,status,body_bytes,refused\n");
    for e in &record.exchanges {
        let _ = writeln!(
            out,
            "{mode},{:.3},{:.3},{},{},{},{}",
            since(e.at),
            since(e.done),
            e.class.key(),
            e.status,
            e.body_bytes,
            e.refused
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), Some(5.0));
        assert_eq!(percentile(&values, 0.99), Some(10.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn busiest_second_slides() {
        let zero = Instant::now();
        let at = |ms: u64| zero + Duration::from_millis(ms);
        // 0.9 s, 1.2 s, 1.8 s fall in one second; 0.0 s and 0.9 s in another.
        let times = vec![at(0), at(900), at(1_200), at(1_800), at(3_000)];
        assert_eq!(busiest_second(times), 3);
        assert_eq!(busiest_second(Vec::new()), 0);
    }

    #[test]
    fn groups_thousands() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(thousands(0.0), "0");
    }

    #[test]
    fn prices_a_day() {
        let cost = CostModel {
            idle_s3: 360.0,
            idle_sqs: 0.0,
            s3_per_change: 0.0,
            sqs_per_change: 0.0,
            empty_wait: None,
        };
        let (s3, sqs, dollars) = per_day(cost, 1_000, 100.0);
        assert_eq!(s3, 8_640_000.0);
        assert_eq!(sqs, 0.0);
        assert!((dollars - 3.456).abs() < 1e-9);
    }
}
