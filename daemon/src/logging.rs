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

use crate::config::LogFormat;
use crate::log_writer::{BUFFER_LIMIT, BatchWriter, DropCounter, FlushGuard};
use std::fmt::{self, Write as _};
use std::os::unix::fs::MetadataExt;
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
            format,
        });
    }
    let (writer, worker) =
        BatchWriter::spawn(stdout_file(), BUFFER_LIMIT).map_err(LoggingError::Writer)?;
    let dropped = Some(writer.counter());
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_ansi(false);
    match (format, stdout_is_journal()) {
        (LogFormat::Json, true) => registry
            .with(layer.event_format(WithPriority(JsonLines)))
            .init(),
        (LogFormat::Json, false) => registry.with(layer.event_format(JsonLines)).init(),
        (_, true) => registry
            .with(layer.event_format(WithPriority(Format::default())))
            .init(),
        (_, false) => registry.with(layer).init(),
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
/// the order the call site wrote them. Written straight into the line buffer, escaping as it goes
/// (no map, no intermediate strings), because this runs on the request path for every
/// verification.
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
        let level = match *event.metadata().level() {
            Level::TRACE => "trace",
            Level::DEBUG => "debug",
            Level::INFO => "info",
            Level::WARN => "warn",
            Level::ERROR => "error",
        };
        writer.write_str("{\"timestamp\":\"")?;
        write_timestamp(&mut writer, std::time::SystemTime::now())?;
        writer.write_str("\",\"level\":\"")?;
        writer.write_str(level)?;
        writer.write_str("\",\"event\":\"")?;
        // The macros put the message first, so one pass writes it and then the other fields;
        // an event whose message comes later takes a first pass for the message alone.
        let message_first = event
            .fields()
            .next()
            .is_some_and(|field| field.name() == "message");
        let mut fields = JsonFields {
            out: &mut writer,
            pass: if message_first {
                Pass::MessageThenFields
            } else {
                Pass::MessageOnly
            },
            result: Ok(()),
        };
        if !message_first {
            event.record(&mut fields);
            fields.result?;
            fields.out.write_char('"')?;
            fields.pass = Pass::Fields;
        }
        event.record(&mut fields);
        fields.result?;
        if fields.pass == Pass::MessageThenFields {
            // No field was recorded at all (the message had no value).
            fields.out.write_char('"')?;
        }
        writer.write_str("}\n")
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// Write the message (inside the open quotes), close them, then every other field.
    MessageThenFields,
    /// Write only the message.
    MessageOnly,
    /// Write every field but the message.
    Fields,
}

/// Writes an event's fields as JSON into the line: the message's text inside the `event` quotes
/// the caller opened, every other field as `,"name":value`.
struct JsonFields<'w, W: fmt::Write> {
    out: &'w mut W,
    pass: Pass,
    result: fmt::Result,
}

impl<W: fmt::Write> JsonFields<'_, W> {
    /// Writes `value` for `field` where it belongs in this pass: the message as the inside of the
    /// `event` string, another field as `,"name":` followed by the value.
    fn put(&mut self, field: &Field, value: Value<'_>) {
        if self.result.is_err() {
            return;
        }
        let is_message = field.name() == "message";
        self.result = match (self.pass, is_message) {
            (Pass::MessageThenFields, true) => {
                self.pass = Pass::Fields;
                value
                    .write_inside_string(self.out)
                    .and_then(|()| self.out.write_char('"'))
            }
            (Pass::MessageOnly, true) => value.write_inside_string(self.out),
            (Pass::MessageOnly, false) | (Pass::Fields, true) => Ok(()),
            (Pass::MessageThenFields, false) => {
                // The first field is not the message after all: close an empty event.
                self.pass = Pass::Fields;
                self.out
                    .write_char('"')
                    .and_then(|()| write_field(self.out, field.name(), value))
            }
            (Pass::Fields, false) => write_field(self.out, field.name(), value),
        };
    }
}

fn write_field(out: &mut impl fmt::Write, name: &str, value: Value<'_>) -> fmt::Result {
    out.write_str(",\"")?;
    Escaped(&mut *out).write_str(name)?;
    out.write_str("\":")?;
    match value {
        Value::Integer(negative, magnitude) => write_integer(out, negative, magnitude),
        Value::Raw(text) => out.write_str(text),
        Value::Number(number) => out.write_fmt(number),
        text => {
            out.write_char('"')?;
            text.write_inside_string(out)?;
            out.write_char('"')
        }
    }
}

/// A field's value, before it is written as JSON.
enum Value<'a> {
    Str(&'a str),
    Args(fmt::Arguments<'a>),
    /// Sign and magnitude.
    Integer(bool, u64),
    /// JSON text written as is (`true`, `null`).
    Raw(&'a str),
    /// A JSON number, written as is.
    Number(fmt::Arguments<'a>),
}

impl Value<'_> {
    /// Writes the value as the inside of a JSON string.
    fn write_inside_string(self, out: &mut impl fmt::Write) -> fmt::Result {
        match self {
            Value::Str(text) | Value::Raw(text) => Escaped(out).write_str(text),
            Value::Args(args) | Value::Number(args) => Escaped(out).write_fmt(args),
            Value::Integer(negative, magnitude) => write_integer(out, negative, magnitude),
        }
    }
}

/// Writes an integer without the formatting machinery (this runs several times per request).
fn write_integer(out: &mut impl fmt::Write, negative: bool, mut magnitude: u64) -> fmt::Result {
    let mut digits = [0u8; 21];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        at -= 1;
        digits[at] = b'-';
    }
    out.write_str(std::str::from_utf8(&digits[at..]).unwrap_or_default())
}

impl<W: fmt::Write> Visit for JsonFields<'_, W> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, Value::Str(value));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.put(field, Value::Integer(value < 0, value.unsigned_abs()));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.put(field, Value::Integer(false, value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.put(field, Value::Raw(if value { "true" } else { "false" }));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        match serde_json::Number::from_f64(value) {
            Some(number) => self.put(field, Value::Number(format_args!("{number}"))),
            None => self.put(field, Value::Raw("null")),
        }
    }
    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.put(field, Value::Args(format_args!("{value}")));
    }
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, Value::Args(format_args!("{value:?}")));
    }
}

/// Escapes what is written through it as the inside of a JSON string (as serde_json does:
/// `"`, `\\` and control characters; everything else as is).
struct Escaped<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escaped<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let bytes = text.as_bytes();
        let mut run_start = 0;
        let mut at = clean_prefix(bytes);
        while let Some(&byte) = bytes.get(at) {
            let escape = match byte {
                b'"' => "\\\"",
                b'\\' => "\\\\",
                b'\n' => "\\n",
                b'\r' => "\\r",
                b'\t' => "\\t",
                0x08 => "\\b",
                0x0c => "\\f",
                0..0x20 => "",
                _ => {
                    at += 1;
                    continue;
                }
            };
            // Cuts fall before ASCII bytes: always on character boundaries.
            self.0
                .write_str(text.get(run_start..at).unwrap_or_default())?;
            if escape.is_empty() {
                write!(self.0, "\\u{byte:04x}")?;
            } else {
                self.0.write_str(escape)?;
            }
            at += 1;
            run_start = at;
        }
        self.0.write_str(text.get(run_start..).unwrap_or_default())
    }

    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> fmt::Result {
        // A message without arguments (every event name) skips the formatting machinery.
        match args.as_str() {
            Some(text) => self.write_str(text),
            None => fmt::write(self, args),
        }
    }
}

/// How many leading bytes of `bytes` need no escaping, looked at 8 at a time (most log values —
/// ids, names, user agents — need none, and this runs for every field of every line).
fn clean_prefix(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH_BITS: u64 = 0x8080_8080_8080_8080;
    let has_zero_byte = |word: u64| word.wrapping_sub(ONES) & !word & HIGH_BITS != 0;
    let mut at = 0;
    for chunk in bytes.chunks_exact(8) {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let word = u64::from_le_bytes(word);
        let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH_BITS != 0;
        if control
            || has_zero_byte(word ^ (ONES * u64::from(b'"')))
            || has_zero_byte(word ^ (ONES * u64::from(b'\\')))
        {
            break;
        }
        at += 8;
    }
    at
}

/// Writes `at` as RFC 3339 UTC with microseconds (`2025-01-20T10:30:00.123456Z`), the form the
/// Python service's logs use, without a date library on the request path.
fn write_timestamp(out: &mut impl fmt::Write, at: std::time::SystemTime) -> fmt::Result {
    let since_epoch = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let seconds = since_epoch.as_secs();
    let (year, month, day) = civil_from_days((seconds / 86_400) as i64);
    let of_day = seconds % 86_400;
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let mut put = |range: std::ops::Range<usize>, mut value: u64| {
        for slot in text[range].iter_mut().rev() {
            *slot = b'0' + (value % 10) as u8;
            value /= 10;
        }
    };
    put(0..4, year.clamp(0, 9999) as u64);
    put(5..7, u64::from(month));
    put(8..10, u64::from(day));
    put(11..13, of_day / 3600);
    put(14..16, of_day / 60 % 60);
    put(17..19, of_day % 60);
    put(20..26, u64::from(since_epoch.subsec_micros()));
    out.write_str(std::str::from_utf8(&text).unwrap_or_default())
}

/// Year, month and day of a day count since 1970-01-01 (the proleptic Gregorian calendar, by
/// Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
                    let mut ours = String::new();
                    Escaped(&mut ours).write_str(&text).unwrap();
                    let theirs = serde_json::to_string(&text).unwrap();
                    assert_eq!(format!("\"{ours}\""), theirs, "{text:?}");
                }
            }
        }
    }

    #[test]
    fn timestamps_match_chrono() {
        for seconds in [
            0u64,
            951_782_400,
            1_700_000_000,
            1_709_164_800,
            4_102_444_799,
        ] {
            for micros in [0u32, 1, 999_999] {
                let at = std::time::UNIX_EPOCH
                    + std::time::Duration::from_secs(seconds)
                    + std::time::Duration::from_micros(micros.into());
                let mut ours = String::new();
                write_timestamp(&mut ours, at).unwrap();
                let theirs = chrono::DateTime::<chrono::Utc>::from(at)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                assert_eq!(ours, theirs);
            }
        }
    }
}
