//! One JSON log line written by hand, byte for byte what [`crate::logging`]'s tracing formatter
//! writes for the same event: `{"timestamp":…,"level":…,"event":…,<fields in order>}\n`.
//!
//! It exists for the lines logged on every verification ([`crate::access_log`]), which skip
//! tracing's dispatch, field visitors and serde_json's serializer. Strings are escaped as
//! serde_json escapes them (`"`, `\`, and control characters; everything else, non-ASCII
//! included, as is), checked against serde_json by a test for every special character at every
//! position. The timestamp is chrono's RFC 3339 form with microseconds and `Z`, as
//! `timestamp::format_micros` writes it: the date and time up to the second are formatted by
//! chrono once per second per thread, the microseconds here.
//!
//! Measured with callgrind (`examples/log_line.rs`, release build, one `verification_success`
//! line with its six fields): see the numbers in [`crate::access_log`]'s documentation.

use heare_auth_store::timestamp;
use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// `YYYY-MM-DDTHH:MM:SS`: what a timestamp holds before its fraction.
const SECOND_LEN: usize = 19;

thread_local! {
    /// The second last formatted on this thread, and its text.
    static SECOND: Cell<(u64, [u8; SECOND_LEN])> = const { Cell::new((u64::MAX, [0; SECOND_LEN])) };
}

/// A JSON object being written as one log line into a buffer.
pub struct JsonLine<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> JsonLine<'b> {
    /// Starts a line: the syslog priority prefix when given (journal streams), then the
    /// timestamp of `now`, the level and the event.
    pub fn start(
        out: &'b mut Vec<u8>,
        priority: Option<&str>,
        now: SystemTime,
        level: &str,
        event: &str,
    ) -> Self {
        if let Some(priority) = priority {
            out.extend_from_slice(priority.as_bytes());
        }
        out.extend_from_slice(b"{\"timestamp\":\"");
        write_timestamp(out, now);
        out.extend_from_slice(b"\",\"level\":\"");
        out.extend_from_slice(level.as_bytes());
        out.extend_from_slice(b"\",\"event\":");
        write_string(out, event);
        JsonLine { out }
    }

    fn name(&mut self, name: &str) {
        self.out.push(b',');
        write_string(self.out, name);
        self.out.push(b':');
    }

    /// A string field.
    pub fn str(&mut self, name: &str, value: &str) -> &mut Self {
        self.name(name);
        write_string(self.out, value);
        self
    }

    /// A string field, left out when `None` (as tracing leaves out a `None` field).
    pub fn opt_str(&mut self, name: &str, value: Option<&str>) -> &mut Self {
        if let Some(value) = value {
            self.str(name, value);
        }
        self
    }

    /// A field written by its `Display` form as a string, left out when `None`.
    pub fn opt_display(&mut self, name: &str, value: Option<impl std::fmt::Display>) -> &mut Self {
        if let Some(value) = value {
            let text = value.to_string();
            self.str(name, &text);
        }
        self
    }

    /// An unsigned number, left out when `None`.
    pub fn opt_u64(&mut self, name: &str, value: Option<u64>) -> &mut Self {
        if let Some(value) = value {
            self.name(name);
            self.out
                .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
        self
    }

    /// A signed number, left out when `None`.
    pub fn opt_i64(&mut self, name: &str, value: Option<i64>) -> &mut Self {
        if let Some(value) = value {
            self.name(name);
            self.out
                .extend_from_slice(itoa::Buffer::new().format(value).as_bytes());
        }
        self
    }

    /// A boolean, left out when `None`.
    pub fn opt_bool(&mut self, name: &str, value: Option<bool>) -> &mut Self {
        if let Some(value) = value {
            self.name(name);
            let text: &[u8] = if value { b"true" } else { b"false" };
            self.out.extend_from_slice(text);
        }
        self
    }

    /// Closes the object and the line.
    pub fn finish(self) {
        self.out.extend_from_slice(b"}\n");
    }
}

/// `now` as `YYYY-MM-DDTHH:MM:SS.ffffffZ`.
fn write_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let second = since.as_secs();
    let (cached, mut text) = SECOND.get();
    if cached != second {
        let formatted =
            timestamp::format_micros(UNIX_EPOCH + std::time::Duration::from_secs(second));
        if let Some(prefix) = formatted.as_bytes().get(..SECOND_LEN) {
            text.copy_from_slice(prefix);
            SECOND.set((second, text));
        }
    }
    out.extend_from_slice(&text);
    out.push(b'.');
    let micros = since.subsec_micros();
    let mut digits = [b'0'; 6];
    let mut rest = micros;
    for digit in digits.iter_mut().rev() {
        *digit = b'0' + (rest % 10) as u8;
        rest /= 10;
    }
    out.extend_from_slice(&digits);
    out.push(b'Z');
}

/// How serde_json escapes each byte: 0 for as is, else the letter after `\` (`u` for `\u00XX`).
static ESCAPE: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut byte = 0;
    while byte < 0x20 {
        table[byte] = b'u';
        byte += 1;
    }
    table[0x08] = b'b';
    table[0x09] = b't';
    table[0x0a] = b'n';
    table[0x0c] = b'f';
    table[0x0d] = b'r';
    table[b'"' as usize] = b'"';
    table[b'\\' as usize] = b'\\';
    table
};

/// `text` as a JSON string, quotes included, escaped as serde_json escapes it.
pub fn write_string(out: &mut Vec<u8>, text: &str) {
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut plain_from = 0;
    for (at, &byte) in bytes.iter().enumerate() {
        let escape = ESCAPE[byte as usize];
        if escape == 0 {
            continue;
        }
        out.extend_from_slice(&bytes[plain_from..at]);
        out.push(b'\\');
        out.push(escape);
        if escape == b'u' {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"00");
            out.push(HEX[(byte >> 4) as usize]);
            out.push(HEX[(byte & 0xf) as usize]);
        }
        plain_from = at + 1;
    }
    out.extend_from_slice(&bytes[plain_from..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them_at_every_position() {
        let specials: Vec<String> = (0u8..0x20)
            .map(|b| (b as char).to_string())
            .chain(["\"", "\\", "é", "😀", "\u{7f}", " ", "/"].map(String::from))
            .collect();
        for length in 0..12 {
            for special in &specials {
                for position in 0..=length {
                    let mut text = "a".repeat(length);
                    text.insert_str(position, special);
                    let mut ours = Vec::new();
                    write_string(&mut ours, &text);
                    assert_eq!(
                        String::from_utf8(ours).unwrap(),
                        serde_json::to_string(&text).unwrap(),
                        "{text:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn timestamps_are_what_chrono_writes() {
        for micros in [
            0u64,
            1,
            999_999,
            1_000_000,
            1_764_777_600_123_456,
            1_764_777_659_999_999,
            4_102_444_800_000_007,
        ] {
            let at = UNIX_EPOCH + std::time::Duration::from_micros(micros);
            let mut ours = Vec::new();
            write_timestamp(&mut ours, at);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                timestamp::format_micros(at)
            );
        }
    }

    #[test]
    fn a_line_is_the_object_and_fields_in_order() {
        let mut out = Vec::new();
        let at = UNIX_EPOCH + std::time::Duration::from_micros(1_764_777_600_000_001);
        let mut line = JsonLine::start(&mut out, Some("<6>"), at, "info", "e\"v");
        line.str("a", "x\ny")
            .opt_str("none", None)
            .opt_u64("n", Some(7))
            .opt_i64("m", Some(-3))
            .opt_bool("b", Some(false))
            .opt_display("addr", Some("127.0.0.1:80"));
        line.finish();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "<6>{\"timestamp\":\"2025-12-03T16:00:00.000001Z\",\"level\":\"info\",\"event\":\"e\\\"v\",\"a\":\"x\\ny\",\"n\":7,\"m\":-3,\"b\":false,\"addr\":\"127.0.0.1:80\"}\n"
        );
    }
}
