//! Where the daemon's log lines go and what they look like.
//!
//! JSON lines on stdout by default, one object per event with the Python service's shape
//! (`{"timestamp","level","event":"verification_success","key_id",…}`), so existing log pipelines
//! keep parsing them; plain text for people. Lines are written in batches by a background thread
//! (`log_writer`), so logging every verification never blocks a request. Under systemd, stdout is
//! a stream into the journal (`JOURNAL_STREAM` names it): each line becomes a journal entry, and
//! each starts with its syslog priority (`<6>`), which journald takes off and records, so
//! `journalctl -p warning` works. `journald` sends structured entries to the journal's socket
//! instead (tracing-journald), one datagram per event from the thread that logs: fields become
//! journal fields, but a verification waits for its send, and for journald when its socket is
//! full. Callers must never pass a secret as a field; this module cannot tell one from a key id.
//!
//! A JSON line is written by serde_json's serializer (its string escaping; integers by itoa
//! inside it) and its timestamp by chrono (`timestamp::format_micros`), not by hand. Measured
//! against the hand-written formatter it replaced (own integer writer, escaper scanning 8 bytes
//! at a time, calendar) on the handler's `verification_success` line (2026-12-01, 2-core VM with
//! other work on it, load average 1-3): `examples/log_line.rs`, 2,000,000 lines a run, CPU time
//! of the logging thread, runs interleaved, medians of 967 vs 945 ns per line (9 runs each;
//! spread 754-1,119 and 691-1,116), and 928 vs 911 and 1,176 vs 1,031 ns in two earlier series:
//! 20-150 ns more, under the 0.3 µs per verify that would have kept the hand-written one
//! (callgrind: 5,530 vs 4,543 instructions per line). Through the daemon (`heare-auth-bench 1000
//! --only throughput --runs 1`, 5 interleaved runs) its CPU per verify was 15.2 vs 14.8 µs and
//! 14.7 vs 15.4 µs in two series, inside the runs' spread of 1-3 µs (12.8-12.9 µs without
//! per-verify logging, `--log-level warn`).

use crate::access_log::{AccessLog, JsonSink};
use crate::config::LogFormat;
use crate::log_writer::{BUFFER_LIMIT, BatchWriter, DropCounter, FlushGuard};
use heare_auth_store::timestamp;
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer as _};
use std::fmt;
use std::os::unix::fs::MetadataExt;
use std::time::SystemTime;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{Format, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

/// Keeps the background writer alive (dropping it flushes) and counts dropped lines.
pub struct LogGuard {
    _worker: Option<FlushGuard>,
    dropped: Option<DropCounter>,
    access: AccessLog,
}

impl LogGuard {
    /// Where the verification lines go: straight into the batched writer for JSON lines,
    /// through tracing otherwise ([`crate::access_log`]).
    pub fn access_log(&self) -> AccessLog {
        self.access.clone()
    }

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

/// Installs the global subscriber.
pub fn init(format: LogFormat, level: &str) -> Result<LogGuard, LoggingError> {
    let filter = filter(level)?;
    let registry = tracing_subscriber::registry().with(filter);
    if format == LogFormat::Journald {
        let layer = tracing_journald::layer().map_err(LoggingError::Journal)?;
        registry.with(layer).init();
        return Ok(LogGuard {
            _worker: None,
            dropped: None,
            access: AccessLog::Tracing,
        });
    }
    let (writer, worker) =
        BatchWriter::spawn(stdout_file(), BUFFER_LIMIT).map_err(LoggingError::Writer)?;
    let dropped = Some(writer.counter());
    let journal = stdout_is_journal();
    let direct = writer.clone();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    match (format, journal) {
        (LogFormat::Json, true) => registry
            .with(layer.event_format(WithPriority(JsonLines)))
            .init(),
        (LogFormat::Json, false) => registry.with(layer.event_format(JsonLines)).init(),
        (_, true) => registry
            .with(layer.event_format(WithPriority(Format::default())))
            .init(),
        (_, false) => registry.with(layer).init(),
    }
    // Asked of the filter only now that it is installed.
    let access = match format {
        LogFormat::Json => AccessLog::Json(JsonSink::new(direct, journal)),
        _ => AccessLog::Tracing,
    };
    Ok(LogGuard {
        _worker: Some(worker),
        dropped,
        access,
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

/// Whether stdout is the journal's stream: systemd sets `JOURNAL_STREAM=dev:ino` to the stream it
/// connected stdout or stderr to, so stdout is it when its device and inode are those.
fn stdout_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    std::fs::metadata("/proc/self/fd/1").is_ok_and(|m| format!("{}:{}", m.dev(), m.ino()) == stream)
}

/// Starts each line with the syslog priority of the event's level, `<3>` (error) to `<7>`
/// (debug, trace): how a program writing lines into the journal's stream gives each entry its
/// priority (systemd's `SyslogLevelPrefix=`, on by default); journald removes it from the message.
struct WithPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for WithPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        writer.write_str(syslog_priority(*event.metadata().level()))?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The syslog priority prefix for `level` (err, warning, info, debug).
fn syslog_priority(level: Level) -> &'static str {
    match level {
        Level::ERROR => "<3>",
        Level::WARN => "<4>",
        Level::INFO => "<6>",
        Level::DEBUG | Level::TRACE => "<7>",
    }
}

/// One JSON object per event: `timestamp`, `level`, `event` (the message), then the fields in
/// the order the call site wrote them, written by serde_json's serializer (its string escaping
/// and number formatting) into one buffer that becomes the line.
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
        let mut line = Vec::with_capacity(256);
        write_json_line(&mut line, event, SystemTime::now()).map_err(|_| fmt::Error)?;
        line.push(b'\n');
        // serde_json writes UTF-8 only; a failure here would be its bug, and drops the line.
        writer.write_str(std::str::from_utf8(&line).map_err(|_| fmt::Error)?)
    }
}

/// Writes `event` as one JSON object (without the newline) into `out`.
fn write_json_line(
    out: &mut Vec<u8>,
    event: &Event<'_>,
    now: SystemTime,
) -> serde_json::Result<()> {
    let mut serializer = serde_json::Serializer::new(out);
    let mut object = (&mut serializer).serialize_map(None)?;
    object.serialize_entry("timestamp", &timestamp::format_micros(now))?;
    object.serialize_entry("level", level_name(*event.metadata().level()))?;
    // The macros put the message first, so one pass writes it as `event` and then the other
    // fields; an event whose message comes later takes a first pass for the message alone.
    let message_first = event
        .fields()
        .next()
        .is_some_and(|field| field.name() == MESSAGE);
    let mut fields = JsonFields {
        object: &mut object,
        pass: if message_first {
            Pass::Fields
        } else {
            Pass::MessageOnly
        },
        event_written: false,
        result: Ok(()),
    };
    if !message_first {
        event.record(&mut fields);
        fields.pass = Pass::Fields;
    }
    event.record(&mut fields);
    let JsonFields {
        result,
        event_written,
        ..
    } = fields;
    result?;
    if !event_written {
        // No message and no other field.
        object.serialize_entry("event", "")?;
    }
    object.end()
}

/// The `level` value of a line.
fn level_name(level: Level) -> &'static str {
    match level {
        Level::TRACE => "trace",
        Level::DEBUG => "debug",
        Level::INFO => "info",
        Level::WARN => "warn",
        Level::ERROR => "error",
    }
}

/// The name tracing gives an event's message.
const MESSAGE: &str = "message";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Write only the message, as `event`.
    MessageOnly,
    /// Write the message as `event` unless already written, and every other field after it.
    Fields,
}

/// Writes an event's fields as members of the line's object: the message as `event`, every other
/// field under its own name, with its value as serde_json writes it.
struct JsonFields<'o, M: SerializeMap<Error = serde_json::Error>> {
    object: &'o mut M,
    pass: Pass,
    /// Whether `event` is written (it comes before every other field).
    event_written: bool,
    result: serde_json::Result<()>,
}

impl<M: SerializeMap<Error = serde_json::Error>> JsonFields<'_, M> {
    fn write_event<T: Serialize + ?Sized>(&mut self, message: &T) -> serde_json::Result<()> {
        self.event_written = true;
        self.object.serialize_entry("event", message)
    }

    /// Writes `value` for `field` if it belongs in this pass.
    fn put<T: Serialize + ?Sized>(&mut self, field: &Field, value: &T) {
        if self.result.is_err() {
            return;
        }
        self.result = if field.name() == MESSAGE {
            if self.event_written {
                Ok(())
            } else {
                self.write_event(value)
            }
        } else if self.pass == Pass::MessageOnly {
            Ok(())
        } else {
            // A field before any message: the event has none, its `event` is empty.
            let event = if self.event_written {
                Ok(())
            } else {
                self.write_event("")
            };
            event.and_then(|()| self.object.serialize_entry(field.name(), value))
        };
    }
}

impl<M: SerializeMap<Error = serde_json::Error>> Visit for JsonFields<'_, M> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value);
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, &value);
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, &value);
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, &value);
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        // serde_json writes a NaN or an infinity as `null`.
        self.put(field, &value);
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, &format_args!("{value}"));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, &format_args!("{value:?}"));
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

    /// What `emit` logs, formatted by [`JsonLines`].
    fn json_lines_of(emit: impl FnOnce()) -> String {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .event_format(JsonLines)
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn json_lines_have_the_python_shape() {
        let text = json_lines_of(|| {
            tracing::info!(
                key_id = "key_1",
                key_name = "a \"b\"",
                peer_uid = 7u32,
                ok = true,
                "verification_success"
            );
        });
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

    #[test]
    fn every_field_kind_is_valid_json_and_escaped() {
        let error = std::io::Error::other("disk \"full\"\n");
        let text = json_lines_of(|| {
            tracing::warn!(
                text = "tab\tquote\"back\\slash\u{1}é😀",
                negative = -5i64,
                ratio = 0.5f64,
                nan = f64::NAN,
                error = &error as &(dyn std::error::Error + 'static),
                shown = %"dis\"play",
                debugged = ?Some("x"),
                absent = None::<&str>,
                "a \"quoted\" {}", 7
            );
            tracing::info!(only = 1u8);
            tracing::info!(first = true, message = "late \"message\"", last = -1i32);
        });
        let mut lines = text.lines();
        let line: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(line["event"], "a \"quoted\" 7");
        assert_eq!(line["level"], "warn");
        assert_eq!(line["text"], "tab\tquote\"back\\slash\u{1}é😀");
        assert_eq!(line["negative"], -5);
        assert_eq!(line["ratio"], 0.5);
        assert!(line["nan"].is_null());
        assert_eq!(line["error"], "disk \"full\"\n");
        assert_eq!(line["shown"], "dis\"play");
        assert_eq!(line["debugged"], "Some(\"x\")");
        assert!(line.get("absent").is_none());
        let line: serde_json::Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(line["event"], "");
        assert_eq!(line["only"], 1);
        let late = lines.next().unwrap();
        let line: serde_json::Value = serde_json::from_str(late).unwrap();
        assert_eq!(line["event"], "late \"message\"");
        assert_eq!(
            (&line["first"], &line["last"]),
            (&true.into(), &(-1).into())
        );
        assert!(line.get("message").is_none(), "{late}");
    }

    /// The verification lines written by hand ([`crate::access_log`]) are the lines the tracing
    /// formatter writes for the same events, field for field, apart from the time.
    #[test]
    fn the_hand_written_verification_lines_are_what_tracing_writes() {
        use crate::access_log::{AccessLog, Forwarded, JsonSink, PeerFields, Refused};
        use crate::log_writer::BatchWriter;
        let unix = PeerFields {
            uid: Some(1000),
            pid: Some(-1),
            addr: None,
        };
        let tcp = PeerFields {
            uid: None,
            pid: None,
            addr: Some("[::1]:4242".parse().unwrap()),
        };
        let refused = Refused {
            key_id: None,
            secret_prefix: Some("sec_"),
            key_shaped: None,
            reason: "unknown",
        };
        let password = Refused {
            key_id: None,
            secret_prefix: None,
            key_shaped: Some(false),
            reason: "unknown",
        };
        let request = Forwarded {
            user_agent: "curl/8 \"q\"\u{1}é",
            method: Some("POST"),
            path: None,
        };
        let emit = |log: &AccessLog| {
            let at = SystemTime::now();
            for peer in [unix, tcp] {
                log.verification_success(at, "key_1", "a \"b\"\n", "ua\t", peer);
                log.verification_failed(at, &refused, "", peer);
                log.verification_failed(at, &password, "x", peer);
                log.forward_auth_success(at, "key_2", &request, peer);
                log.forward_auth_failed(at, Some("key_3"), "expired", &request, peer);
                log.forward_auth_failed(at, None, "no_key", &request, peer);
            }
        };
        let by_tracing = json_lines_of(|| emit(&AccessLog::Tracing));
        let capture = Capture::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(Level::INFO)
            .finish();
        let by_hand = tracing::subscriber::with_default(subscriber, || {
            let (writer, guard) = BatchWriter::spawn(capture.clone(), 1 << 20).unwrap();
            emit(&AccessLog::Json(JsonSink::new(writer, false)));
            drop(guard);
            String::from_utf8(capture.0.lock().unwrap().clone()).unwrap()
        });
        let untimed = |text: &str| -> Vec<String> {
            text.lines()
                .map(|line| {
                    let rest = line.split_once("\",\"level\"").unwrap().1;
                    assert!(line.starts_with("{\"timestamp\":\"20"), "{line}");
                    rest.to_string()
                })
                .collect()
        };
        assert_eq!(untimed(&by_hand), untimed(&by_tracing));
        assert_eq!(by_hand.lines().count(), 12);
    }

    #[test]
    fn escaping_matches_serde_at_every_position() {
        let specials = [
            "\"", "\\", "\n", "\u{1}", "\u{1f}", "é", "😀", "\u{7f}", " ",
        ];
        for length in 0..20 {
            for special in specials {
                for position in 0..=length {
                    let mut text = "a".repeat(length);
                    text.insert_str(position, special);
                    let line = json_lines_of(|| tracing::info!(text = text.as_str(), "e"));
                    let theirs = serde_json::to_string(&text).unwrap();
                    assert!(
                        line.ends_with(&format!(",\"text\":{theirs}}}\n")),
                        "{text:?}: {line}"
                    );
                }
            }
        }
    }
}
