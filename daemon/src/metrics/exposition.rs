//! `GET /metrics`: every count as Prometheus text exposition format 0.0.4.
//!
//! The families are built at scrape time from the daemon's own counters (see [`super`]) and the
//! `prometheus` crate writes them, together with its standard `process_*` collector (CPU seconds,
//! resident memory, open descriptors, start time, read from /proc). That crate was chosen over
//! `prometheus-client` and `metrics`: it writes format 0.0.4 (prometheus-client writes
//! OpenMetrics), it ships the process collector (neither of the others does), and it takes
//! families built by hand, so sharded counters and histograms are summed only when scraped
//! (`metrics` records every histogram sample into one shared queue). No label carries a key or a
//! peer: the number of series is fixed.

use super::histogram::HistogramTotals;
use super::{Metrics, ReloadResult, ReloadTrigger, VerifyResult};
use crate::change_queue::state::{Health, QueueCounts};
use crate::rate_limit::fleet::FleetState;
use crate::server::listener_state::ListenerUp;
use prometheus::core::Collector;
use prometheus::proto::{self, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};
use std::sync::LazyLock;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

/// The content type of format 0.0.4.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What `/metrics` shows besides [`Metrics`]: gauges other parts of the daemon keep.
pub struct Gauges {
    pub keys: usize,
    /// The number of the last change of the log the keys served contain (0: none).
    pub change_seq: u64,
    pub stale: bool,
    pub connections_open: usize,
    pub connections_evicted: u64,
    pub log_lines_dropped: u64,
    /// The notify queue's counts, when one is configured.
    pub queue: Option<QueueCounts>,
    /// Every listener, and whether it is bound.
    pub listeners: Vec<ListenerUp>,
    /// The fleet-wide rate-limit backend's state, when one is configured.
    pub rate_limit_backend: Option<FleetState>,
}

/// When this process started, as noted by [`note_start`].
static STARTED: LazyLock<SystemTime> = LazyLock::new(SystemTime::now);

/// Notes the process's start (call first thing): the process collector computes
/// `process_start_time_seconds` from the boot time in /proc/stat, which the packaged unit hides
/// (`ProcSubset=pid`); the time noted here stands in then.
pub fn note_start() {
    LazyLock::force(&STARTED);
}

/// The exposition text of `metrics` and `gauges`, with the process metrics.
pub fn render(metrics: &Metrics, gauges: &Gauges) -> Vec<u8> {
    static PROCESS: LazyLock<prometheus::process_collector::ProcessCollector> =
        LazyLock::new(prometheus::process_collector::ProcessCollector::for_self);
    let mut families = daemon_families(metrics, gauges);
    if let Some(queue) = &gauges.queue {
        families.extend(queue_families(queue));
    }
    if let Some(backend) = &gauges.rate_limit_backend {
        families.extend(rate_limit_backend_families(backend));
    }
    families.push(listener_family(&gauges.listeners));
    families.extend(PROCESS.collect());
    if !families
        .iter()
        .any(|f| f.name() == "process_start_time_seconds")
    {
        let started = STARTED.duration_since(UNIX_EPOCH).unwrap_or_default();
        families.push(gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            started.as_secs_f64(),
        ));
    }
    let mut text = Vec::with_capacity(8 * 1024);
    if let Err(error) = TextEncoder::new().encode(&families, &mut text) {
        tracing::error!(%error, "metrics_encoding_failed");
    }
    text
}

fn daemon_families(metrics: &Metrics, gauges: &Gauges) -> Vec<MetricFamily> {
    let verify = metrics.verify.read();
    let results = VerifyResult::ALL.map(|r| (vec![("result", r.name())], verify.get(r) as f64));
    let last_success = metrics.last_reload_success_ms().unwrap_or(0) as f64 / 1000.0;
    vec![
        counter(
            "heare_auth_verify_requests_total",
            "Verify requests by result.",
            &results,
        ),
        histogram(
            "heare_auth_verify_duration_seconds",
            "Time from a complete verify request to its answer.",
            &verify.duration,
        ),
        counter(
            "heare_auth_reloads_total",
            "Key set loads by trigger and result.",
            &reload_counts(metrics),
        ),
        histogram(
            "heare_auth_reload_duration_seconds",
            "Time to fetch and build a key set.",
            &metrics.reload_duration(),
        ),
        gauge(
            "heare_auth_keys",
            "Keys in the set served.",
            gauges.keys as f64,
        ),
        counter(
            "heare_auth_changes_applied_total",
            "Change objects applied from the change log (without loading the key object).",
            &[(
                vec![],
                metrics.changes_applied.load(Ordering::Relaxed) as f64,
            )],
        ),
        gauge(
            "heare_auth_change_seq",
            "Number of the last change of the change log the keys served contain (0: none).",
            gauges.change_seq as f64,
        ),
        gauge(
            "heare_auth_last_reload_success_timestamp_seconds",
            "When the store last confirmed the set served (Unix time; 0: never).",
            last_success,
        ),
        gauge(
            "heare_auth_key_set_stale",
            "1 while the store cannot confirm the set served.",
            f64::from(u8::from(gauges.stale)),
        ),
        gauge(
            "heare_auth_connections_open",
            "Connections open (every listener but metrics_listen, which has its own 8).",
            gauges.connections_open as f64,
        ),
        counter(
            "heare_auth_connections_evicted_total",
            "Connections closed to make room at the connection limit.",
            &[(vec![], gauges.connections_evicted as f64)],
        ),
        counter(
            "heare_auth_log_lines_dropped_total",
            "Log lines dropped because the log output could not keep up.",
            &[(vec![], gauges.log_lines_dropped as f64)],
        ),
        counter(
            "heare_auth_stats_flushes_failed_total",
            "Stats pushes that did not reach the collector and were dropped.",
            &[(
                vec![],
                metrics.stats_flushes_failed.load(Ordering::Relaxed) as f64,
            )],
        ),
        gauge_with(
            "heare_auth_build_info",
            "The daemon's version, as a label; always 1.",
            vec![("version", env!("CARGO_PKG_VERSION"))],
            1.0,
        ),
    ]
}

/// The notify queue's families, present only when a queue is configured.
fn queue_families(queue: &QueueCounts) -> Vec<MetricFamily> {
    let messages = queue
        .messages
        .map(|(notice, n)| (vec![("result", notice.name())], n as f64));
    vec![
        counter(
            "heare_auth_notify_messages_total",
            "Notify queue messages by what they meant: reload, ignored, invalid.",
            &messages,
        ),
        counter(
            "heare_auth_notify_errors_total",
            "Notify queue calls (receive, delete) that failed.",
            &[(vec![], queue.errors as f64)],
        ),
        gauge(
            "heare_auth_notify_queue_up",
            "1 while the last notify queue call succeeded (0 before the first ends).",
            f64::from(u8::from(queue.health == Health::Receiving)),
        ),
    ]
}

/// The fleet-wide rate-limit backend's families, present only when one is configured.
fn rate_limit_backend_families(backend: &FleetState) -> Vec<MetricFamily> {
    vec![
        gauge(
            "heare_auth_rate_limit_backend_up",
            "1 while the last rate-limit decision asked of Redis was answered in time.",
            f64::from(u8::from(backend.up)),
        ),
        counter(
            "heare_auth_rate_limit_backend_errors_total",
            "Rate-limit decisions Redis did not answer in time (down, slow, refusing): each was decided by on_backend_error.",
            &[(vec![], backend.errors as f64)],
        ),
    ]
}

/// `heare_auth_listener_up`: one series per listener, by name and address.
fn listener_family(listeners: &[ListenerUp]) -> MetricFamily {
    let metrics = listeners
        .iter()
        .map(|listener| {
            let mut metric =
                labelled(&[("listener", listener.name), ("address", &listener.address)]);
            let mut gauge = proto::Gauge::default();
            gauge.set_value(f64::from(u8::from(listener.up)));
            metric.set_gauge(gauge);
            metric
        })
        .collect();
    family(
        "heare_auth_listener_up",
        "1 while the listener accepts; 0 while its address cannot be bound (retried until it can).",
        MetricType::GAUGE,
        metrics,
    )
}

type Labels = Vec<(&'static str, &'static str)>;

fn reload_counts(metrics: &Metrics) -> Vec<(Labels, f64)> {
    let mut samples = Vec::new();
    for trigger in ReloadTrigger::ALL {
        for result in ReloadResult::ALL {
            let labels = vec![("trigger", trigger.name()), ("result", result.name())];
            samples.push((labels, metrics.reloads(trigger, result) as f64));
        }
    }
    samples
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

fn labelled(labels: &[(&str, &str)]) -> proto::Metric {
    let mut metric = proto::Metric::default();
    let pairs = labels
        .iter()
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect();
    metric.set_label(pairs);
    metric
}

fn counter(name: &str, help: &str, samples: &[(Labels, f64)]) -> MetricFamily {
    let metrics = samples
        .iter()
        .map(|(labels, value)| {
            let mut metric = labelled(labels);
            let mut counter = proto::Counter::default();
            counter.set_value(*value);
            metric.set_counter(counter);
            metric
        })
        .collect();
    family(name, help, MetricType::COUNTER, metrics)
}

fn gauge(name: &str, help: &str, value: f64) -> MetricFamily {
    gauge_with(name, help, vec![], value)
}

fn gauge_with(name: &str, help: &str, labels: Labels, value: f64) -> MetricFamily {
    let mut metric = labelled(&labels);
    let mut gauge = proto::Gauge::default();
    gauge.set_value(value);
    metric.set_gauge(gauge);
    family(name, help, MetricType::GAUGE, vec![metric])
}

fn histogram(name: &str, help: &str, totals: &HistogramTotals) -> MetricFamily {
    let buckets = totals
        .cumulative()
        .into_iter()
        .map(|(bound, count)| {
            let mut bucket = proto::Bucket::default();
            bucket.set_upper_bound(bound);
            bucket.set_cumulative_count(count);
            bucket
        })
        .collect();
    let mut histogram = proto::Histogram::default();
    histogram.set_bucket(buckets);
    histogram.set_sample_count(totals.count());
    histogram.set_sample_sum(totals.sum_seconds());
    let mut metric = proto::Metric::default();
    metric.set_histogram(histogram);
    family(name, help, MetricType::HISTOGRAM, vec![metric])
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn counts_appear_under_their_contract_names() {
        let metrics = Metrics::default();
        metrics
            .verify
            .record(VerifyResult::Valid, Duration::from_micros(7));
        metrics
            .verify
            .record(VerifyResult::BadChecksum, Duration::from_micros(2));
        metrics.record_reload(
            ReloadTrigger::Poll,
            ReloadResult::Unchanged,
            Duration::from_millis(3),
            1_700_000_000_000,
        );
        let gauges = Gauges {
            keys: 42,
            change_seq: 7,
            stale: true,
            connections_open: 3,
            connections_evicted: 5,
            log_lines_dropped: 6,
            queue: None,
            rate_limit_backend: Some(FleetState {
                up: false,
                errors: 4,
                last_error: None,
            }),
            listeners: vec![
                ListenerUp {
                    name: "unix",
                    address: "/run/heare-auth/heare-authd.sock".into(),
                    up: true,
                },
                ListenerUp {
                    name: "tcp",
                    address: "127.0.0.1:8080".into(),
                    up: false,
                },
            ],
        };
        let text = String::from_utf8(render(&metrics, &gauges)).unwrap();
        for line in [
            "heare_auth_verify_requests_total{result=\"valid\"} 1",
            "heare_auth_verify_requests_total{result=\"bad_checksum\"} 1",
            "heare_auth_verify_requests_total{result=\"stale\"} 0",
            "heare_auth_verify_duration_seconds_bucket{le=\"0.00001\"} 2",
            "heare_auth_verify_duration_seconds_count 2",
            "heare_auth_reloads_total{trigger=\"poll\",result=\"unchanged\"} 1",
            "heare_auth_keys 42",
            "heare_auth_change_seq 7",
            "heare_auth_key_set_stale 1",
            "heare_auth_last_reload_success_timestamp_seconds 1700000000",
            "heare_auth_connections_open 3",
            "heare_auth_connections_evicted_total 5",
            "heare_auth_log_lines_dropped_total 6",
            "heare_auth_rate_limit_backend_up 0",
            "heare_auth_rate_limit_backend_errors_total 4",
            "heare_auth_listener_up{listener=\"unix\",address=\"/run/heare-auth/heare-authd.sock\"} 1",
            "heare_auth_listener_up{listener=\"tcp\",address=\"127.0.0.1:8080\"} 0",
            "# TYPE heare_auth_verify_duration_seconds histogram",
            "process_start_time_seconds ",
            "process_resident_memory_bytes ",
        ] {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        let build_info = format!(
            "heare_auth_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.contains(&build_info));
    }
}
