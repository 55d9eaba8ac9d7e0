//! Where the daemon's log lines go and what they look like.
//!
//! JSON lines on stdout by default, one object per event with the Python service's shape
//! (`{"timestamp","level","event":"verification_success","key_id",…}`), so existing log pipelines
//! keep parsing them; entries in the systemd journal when configured or when stdout/stderr already
//! is the journal (`JOURNAL_STREAM`); plain text for people. Lines are written in batches by a
//! background thread (`log_writer`), so logging every verification never blocks a request.
//! Callers must never pass a secret as a field; this module cannot tell one from a key id.

use crate::config::LogFormat;
use crate::log_writer::{BUFFER_LIMIT, BatchWriter, DropCounter, FlushGuard};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the background writer alive (dropping it flushes) and counts dropped lines.
pub struct LogGuard {
    _worker: Option<FlushGuard>,
    dropped: Option<DropCounter>,
    pub format: LogFormat,
}

impl LogGuard {
    /// Lines dropped because the sink could not keep up.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped.as_ref().map_or(0, |c| c.dropped_lines())
    }

    /// A handle to the drop counter for the status endpoint.
    pub fn counter(&self) -> Option<DropCounter> {
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
    #[error("cannot start the log writer thread: {0}")]
    Writer(std::io::Error),
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
    let (writer, worker) =
        BatchWriter::spawn(stdout_file(), BUFFER_LIMIT).map_err(LoggingError::Writer)?;
    let dropped = Some(writer.counter());
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

/// Standard output as a plain file (the writer thread already batches; no second buffer).
fn stdout_file() -> Box<dyn std::io::Write + Send> {
    use std::os::fd::AsFd;
    match std::io::stdout().as_fd().try_clone_to_owned() {
        Ok(fd) => Box::new(std::fs::File::from(fd)),
        Err(_) => Box::new(std::io::stdout()),
    }
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

/// One JSON object per event: `timestamp`, `level`, `event` (the message), then the fields in
/// the order the call site wrote them. Written straight into the line buffer (no map), because
/// this runs on the request path for every verification.
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
        let mut fields = JsonFields::default();
        event.record(&mut fields);
        let timestamp = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let level = match *event.metadata().level() {
            tracing::Level::TRACE => "trace",
            tracing::Level::DEBUG => "debug",
            tracing::Level::INFO => "info",
            tracing::Level::WARN => "warn",
            tracing::Level::ERROR => "error",
        };
        let event_name = json_string(fields.message.as_deref().unwrap_or(""));
        writeln!(
            writer,
            "{{\"timestamp\":\"{timestamp}\",\"level\":\"{level}\",\"event\":{event_name}{}}}",
            fields.rest
        )
    }
}

/// The event's fields: the message apart, the others as `,"name":value` text.
#[derive(Default)]
struct JsonFields {
    message: Option<String>,
    rest: String,
}

impl JsonFields {
    fn put(&mut self, field: &Field, value: &str) {
        self.rest.push(',');
        self.rest.push_str(&json_string(field.name()));
        self.rest.push(':');
        self.rest.push_str(value);
    }
}

fn json_string(text: &str) -> String {
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_string())
}

impl Visit for JsonFields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_string());
        } else {
            self.put(field, &json_string(value));
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, &value.to_string());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, &value.to_string());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, if value { "true" } else { "false" });
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        let text =
            serde_json::Number::from_f64(value).map_or("null".to_string(), |n| n.to_string());
        self.put(field, &text);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, &json_string(&value.to_string()));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.put(field, &json_string(&text));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Capture {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_lines_have_the_python_shape() {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(
                key_id = "key_1",
                key_name = "a \"b\"",
                peer_uid = 7u32,
                ok = true,
                "verification_success"
            );
        });
        let text = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["event"], "verification_success");
        assert_eq!(line["level"], "info");
        assert_eq!(line["key_id"], "key_1");
        assert_eq!(line["key_name"], "a \"b\"");
        assert_eq!(line["peer_uid"], 7);
        assert_eq!(line["ok"], true);
        assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
        assert!(text.starts_with("{\"timestamp\""));
    }
}
