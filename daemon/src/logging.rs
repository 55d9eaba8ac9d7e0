//! Where the daemon's log lines go and what they look like.
//!
//! JSON lines on stdout by default, one object per event with the Python service's shape
//! (`{"timestamp","level","event":"verification_success","key_id",…}`), so existing log pipelines
//! keep parsing them; entries in the systemd journal when configured or when stdout/stderr already
//! is the journal (`JOURNAL_STREAM`); plain text for people. Lines are written by a background
//! thread (tracing-appender's non-blocking writer), so logging every verification never blocks a
//! request: when the sink is slower than the request rate the buffer (128k lines) fills and further
//! lines are dropped and counted — `/status` reports the count — rather than slowing verification.
//! Callers must never pass a secret as a field; this module cannot tell one from a key id.

use crate::config::LogFormat;
use std::fmt;
use std::os::unix::fs::MetadataExt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the background writer alive (dropping it flushes) and counts dropped lines.
pub struct LogGuard {
    _worker: Option<WorkerGuard>,
    dropped: Option<ErrorCounter>,
    pub format: LogFormat,
}

impl LogGuard {
    /// Lines dropped because the sink could not keep up.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped
            .as_ref()
            .map_or(0, |c| c.dropped_lines() as u64)
    }

    /// A handle to the drop counter for the status endpoint.
    pub fn counter(&self) -> Option<ErrorCounter> {
        self.dropped.clone()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error(
        "log_level {0:?} is not a level or tracing filter (try info, debug, or heare_authd=debug)"
    )]
    BadFilter(String),
    #[error("cannot connect to the systemd journal: {0}; use --log-format json")]
    Journal(std::io::Error),
}

/// Installs the global subscriber. `format: None` picks journald when the output is the journal.
pub fn init(format: Option<LogFormat>, level: &str) -> Result<LogGuard, LoggingError> {
    let filter = filter(level)?;
    let format = format.unwrap_or_else(|| {
        if output_is_journal() {
            LogFormat::Journald
        } else {
            LogFormat::Json
        }
    });
    let registry = tracing_subscriber::registry().with(filter);
    if format == LogFormat::Journald {
        let layer = tracing_journald::layer().map_err(LoggingError::Journal)?;
        registry.with(layer).init();
        return Ok(LogGuard {
            _worker: None,
            dropped: None,
            format,
        });
    }
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("heare-authd-log")
        .finish(std::io::stdout());
    let dropped = Some(writer.error_counter());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    if format == LogFormat::Json {
        registry.with(layer.event_format(JsonLines)).init();
    } else {
        registry.with(layer).init();
    }
    Ok(LogGuard {
        _worker: Some(worker),
        dropped,
        format,
    })
}

fn filter(level: &str) -> Result<EnvFilter, LoggingError> {
    // The AWS SDK is chatty at info; keep it at warn unless a full filter is given.
    let directives = if level.contains('=') || level.contains(',') {
        level.to_string()
    } else {
        format!("{level},aws_config=warn,aws_smithy_runtime=warn,aws_sdk_s3=warn,hyper=warn")
    };
    EnvFilter::try_new(directives).map_err(|_| LoggingError::BadFilter(level.to_string()))
}

/// systemd sets `JOURNAL_STREAM=dev:ino` when stdout or stderr is connected to the journal.
fn output_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    ["/proc/self/fd/1", "/proc/self/fd/2"]
        .iter()
        .any(|fd| std::fs::metadata(fd).is_ok_and(|m| format!("{}:{}", m.dev(), m.ino()) == stream))
}

/// One JSON object per event: `timestamp`, `level`, `event` (the message), then the fields.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        _ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut object = serde_json::Map::new();
        object.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        object.insert(
            "level".into(),
            event
                .metadata()
                .level()
                .as_str()
                .to_ascii_lowercase()
                .into(),
        );
        object.insert("event".into(), serde_json::Value::Null);
        event.record(&mut JsonFields(&mut object));
        let line = serde_json::to_string(&object).map_err(|_| fmt::Error)?;
        writer.write_str(&line)?;
        writer.write_char('\n')
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl JsonFields<'_> {
    fn put(&mut self, field: &Field, value: serde_json::Value) {
        let name = if field.name() == "message" {
            "event"
        } else {
            field.name()
        };
        self.0.insert(name.to_string(), value);
    }
}

impl Visit for JsonFields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.into());
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.put(field, value.into());
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, value.to_string().into());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}").into());
    }
}
