//! Timestamps as the key file writes them and as the daemon reports them.
//!
//! The Python service writes `datetime.isoformat()` values: RFC 3339 with a `Z` or an offset,
//! sometimes with microseconds, sometimes naive (no offset) or date-only. This module parses all of
//! those into Unix milliseconds (a naive value is taken as UTC, as the service's own clock is) and
//! formats the daemon's own times as RFC 3339 UTC with a `Z`. Unix milliseconds are what the rest
//! of the daemon compares, with `now` always passed in so that expiry needs no sleeping to test.

use chrono::{DateTime, NaiveDate, NaiveDateTime, SecondsFormat, Utc};
use std::time::SystemTime;

/// Milliseconds since the Unix epoch.
pub type UnixMillis = i64;

/// A timestamp the key file holds that is not ISO 8601.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not an ISO 8601 timestamp (expected e.g. 2025-01-20T10:30:00Z): {0:?}")]
pub struct TimestampError(pub String);

/// Parses an ISO 8601 timestamp as the Python service writes it.
pub fn parse(text: &str) -> Result<UnixMillis, TimestampError> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.timestamp_millis());
    }
    for format in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(text, format) {
            return Ok(naive.and_utc().timestamp_millis());
        }
    }
    if let Ok(date) = NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(midnight) = date.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc().timestamp_millis());
    }
    let shown: String = text.chars().take(40).collect();
    Err(TimestampError(shown))
}

/// Now, in Unix milliseconds.
pub fn now() -> UnixMillis {
    Utc::now().timestamp_millis()
}

/// `at` as Unix milliseconds (for a caller that read the clock once for several uses).
pub fn millis(at: std::time::SystemTime) -> UnixMillis {
    DateTime::<Utc>::from(at).timestamp_millis()
}

/// Formats Unix milliseconds as RFC 3339 in UTC with a `Z` (`2025-01-20T10:30:00.123Z`).
pub fn format(at: UnixMillis) -> String {
    DateTime::<Utc>::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Formats Unix milliseconds as RFC 3339 in UTC with whole seconds (`2025-01-20T10:30:00Z`), the
/// form new key files use.
pub fn format_seconds(at: UnixMillis) -> String {
    DateTime::<Utc>::from_timestamp_millis(at)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Formats a clock reading as RFC 3339 in UTC with microseconds (`2025-01-20T10:30:00.123456Z`),
/// the form of the `timestamp` of the Python service's log lines.
pub fn format_micros(at: SystemTime) -> String {
    DateTime::<Utc>::from(at).to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JAN_20_2024_1030: UnixMillis = 1_705_746_600_000;

    #[test]
    fn python_forms_parse() {
        for text in [
            "2024-01-20T10:30:00Z",
            "2024-01-20T10:30:00+00:00",
            "2024-01-20T11:30:00+01:00",
            "2024-01-20T10:30:00",
            "2024-01-20 10:30:00",
            "2024-01-20T10:30",
        ] {
            assert_eq!(parse(text), Ok(JAN_20_2024_1030), "{text}");
        }
        assert_eq!(
            parse("2024-01-20T10:30:00.250000Z"),
            Ok(JAN_20_2024_1030 + 250)
        );
        assert_eq!(parse("2024-01-20"), Ok(JAN_20_2024_1030 - 37_800_000));
    }

    #[test]
    fn garbage_is_an_error() {
        for text in ["", "tomorrow", "2024-13-01T00:00:00Z", "1705746600"] {
            assert!(parse(text).is_err(), "{text}");
        }
    }

    #[test]
    fn formats_in_utc_with_z() {
        assert_eq!(format(JAN_20_2024_1030 + 5), "2024-01-20T10:30:00.005Z");
        assert_eq!(format_seconds(JAN_20_2024_1030), "2024-01-20T10:30:00Z");
    }

    #[test]
    fn log_timestamps_match_chrono() {
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
                let theirs = chrono::DateTime::<chrono::Utc>::from(at)
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
                assert_eq!(format_micros(at), theirs);
            }
        }
        let leap_day =
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(951_782_400_000_001);
        assert_eq!(format_micros(leap_day), "2000-02-29T00:00:00.000001Z");
    }
}
