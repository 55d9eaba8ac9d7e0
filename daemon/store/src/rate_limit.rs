//! A key's rate limit, as the key file, the daemon's configuration and heare-authctl write it.
//!
//! In the key file a limit is the member `"rate_limit": {"requests": 100, "per": "1m"}` with an
//! optional `"burst"` (default `requests`): at most `requests` verifications every `per`, of which
//! up to `burst` may come at once. On the command line and in `[rate_limit] default` it is the
//! text `100/1m` (the burst given apart). Both forms are checked here, once, for every reader: a
//! limit that is not exactly one of these is an error, never "unlimited".
//!
//! The daemon enforces it with GCRA: every accepted request moves a key's theoretical arrival time
//! on by the [`RateLimit::interval_nanos`], and a request is refused when that time would run more
//! than [`RateLimit::tolerance_nanos`] ahead of now. So a full bucket accepts `burst` at once and
//! then one request every interval: `burst + rate × seconds` over a period.

use crate::duration;
use serde_json::{Map, Value};
use std::fmt;
use std::time::Duration;

/// The most requests a limit may name: more would make the interval under a nanosecond.
pub const MAX_REQUESTS: u64 = 1_000_000_000;

/// The longest period a limit may name.
pub const MAX_PER: Duration = Duration::from_secs(366 * 86_400);

/// At most `requests` every `per`, up to `burst` of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RateLimit {
    pub requests: u64,
    pub per: Duration,
    pub burst: u64,
}

/// Why a text or a key-file member is not a rate limit. The texts quote at most 40 characters of
/// the input (a limit is never a secret, but a wrong file could put anything there).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RateLimitError {
    #[error("{0:?} is not a rate limit (use REQUESTS/PERIOD, e.g. 100/1m, 10/1s, 5000/1h)")]
    Text(String),
    #[error(
        "rate_limit must be an object {{\"requests\": N, \"per\": \"1m\"}} with an optional \"burst\": {0}"
    )]
    Field(&'static str),
    #[error("requests and burst must be between 1 and {MAX_REQUESTS}")]
    Count,
    #[error("the period must be between 1ms and 366d, and at least a nanosecond per request")]
    Period,
    #[error("burst × period / requests must be at most 50 years (a longer bucket never empties)")]
    TooLong,
}

/// The longest a full bucket may take to refill (burst intervals): about 50 years, below what
/// the Redis backend's arithmetic holds exactly (2^51 µs); longer would saturate and never refuse.
pub const MAX_TOLERANCE: Duration = Duration::from_secs(50 * 366 * 86_400);

impl RateLimit {
    /// A checked limit.
    pub fn new(requests: u64, per: Duration, burst: Option<u64>) -> Result<Self, RateLimitError> {
        let burst = burst.unwrap_or(requests);
        for count in [requests, burst] {
            if !(1..=MAX_REQUESTS).contains(&count) {
                return Err(RateLimitError::Count);
            }
        }
        if per < Duration::from_millis(1) || per > MAX_PER {
            return Err(RateLimitError::Period);
        }
        let limit = RateLimit {
            requests,
            per,
            burst,
        };
        // At least a whole nanosecond per request.
        if per.as_nanos() < u128::from(requests) {
            return Err(RateLimitError::Period);
        }
        match limit.interval_nanos().checked_mul(limit.burst) {
            Some(tolerance) if u128::from(tolerance) <= MAX_TOLERANCE.as_nanos() => Ok(limit),
            _ => Err(RateLimitError::TooLong),
        }
    }

    /// Parses `REQUESTS/PERIOD` (`100/1m`); the burst is `requests` unless `burst` is given.
    pub fn parse(text: &str, burst: Option<u64>) -> Result<Self, RateLimitError> {
        let quoted = || RateLimitError::Text(text.chars().take(40).collect());
        let (requests, per) = text.trim().split_once('/').ok_or_else(quoted)?;
        let requests: u64 = requests.trim().parse().map_err(|_| quoted())?;
        let per = duration::parse(per).map_err(|_| quoted())?;
        RateLimit::new(requests, per, burst)
    }

    /// Reads the key file's `rate_limit` member (`{"requests", "per", "burst"?}`). Any other
    /// member, or a value of another type, is an error.
    pub fn from_field(value: &Value) -> Result<Self, RateLimitError> {
        let object = value
            .as_object()
            .ok_or(RateLimitError::Field("it is not an object"))?;
        if object
            .keys()
            .any(|name| !matches!(name.as_str(), "requests" | "per" | "burst"))
        {
            return Err(RateLimitError::Field("it has a member other than these"));
        }
        let requests = object
            .get("requests")
            .and_then(Value::as_u64)
            .ok_or(RateLimitError::Field("requests is not a whole number"))?;
        let per = object
            .get("per")
            .and_then(Value::as_str)
            .ok_or(RateLimitError::Field("per is not a duration text"))?;
        let per = duration::parse(per)
            .map_err(|_| RateLimitError::Field("per is not a duration (30s, 1m, 1h, 1d)"))?;
        let burst = match object.get("burst") {
            None => None,
            Some(value) => Some(
                value
                    .as_u64()
                    .ok_or(RateLimitError::Field("burst is not a whole number"))?,
            ),
        };
        RateLimit::new(requests, per, burst)
    }

    /// The key file's member for this limit; `burst` is written only when it is not `requests`.
    pub fn to_field(&self) -> Value {
        let mut object = Map::new();
        object.insert("requests".into(), self.requests.into());
        object.insert("per".into(), format_period(self.per).into());
        if self.burst != self.requests {
            object.insert("burst".into(), self.burst.into());
        }
        Value::Object(object)
    }

    /// Nanoseconds between two requests at the sustained rate (`per / requests`, rounded up: a
    /// limit never allows more than it says).
    pub fn interval_nanos(&self) -> u64 {
        let per = u64::try_from(self.per.as_nanos()).unwrap_or(u64::MAX);
        per.div_ceil(self.requests.max(1))
    }

    /// How far ahead of now the theoretical arrival time may run: `burst` intervals.
    pub fn tolerance_nanos(&self) -> u64 {
        self.interval_nanos().saturating_mul(self.burst)
    }

    /// The period in whole seconds, at least 1 (the `w` of the `RateLimit-Policy` field).
    pub fn window_seconds(&self) -> u64 {
        self.per.as_secs().max(1)
    }
}

/// `100/1m`, with ` burst 150` when the burst is not `requests`.
impl fmt::Display for RateLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.requests, format_period(self.per))?;
        if self.burst != self.requests {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

/// A period in the largest unit that divides it (`1m`, `90s`, `250ms`), as `duration` reads it.
pub fn format_period(per: Duration) -> String {
    let millis = per.as_millis();
    for (unit, size) in [
        ("d", 86_400_000),
        ("h", 3_600_000),
        ("m", 60_000),
        ("s", 1_000),
    ] {
        if millis >= size && millis.is_multiple_of(size) {
            return format!("{}{unit}", millis / size);
        }
    }
    format!("{millis}ms")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn texts() {
        let limit = RateLimit::parse("100/1m", None).unwrap();
        assert_eq!(limit.requests, 100);
        assert_eq!(limit.per, Duration::from_secs(60));
        assert_eq!(limit.burst, 100);
        assert_eq!(limit.to_string(), "100/1m");
        assert_eq!(limit.interval_nanos(), 600_000_000);
        assert_eq!(limit.tolerance_nanos(), 60_000_000_000);
        let bursty = RateLimit::parse(" 10 / 1s ", Some(25)).unwrap();
        assert_eq!(bursty.to_string(), "10/1s burst 25");
        assert_eq!(
            RateLimit::parse("5/90s", None).unwrap().to_string(),
            "5/90s"
        );
        for bad in [
            "",
            "100",
            "100/",
            "/1m",
            "0/1m",
            "-1/1m",
            "1.5/1m",
            "100/1 parsec",
        ] {
            assert!(RateLimit::parse(bad, None).is_err(), "{bad}");
        }
        assert_eq!(RateLimit::parse("10/0s", None), Err(RateLimitError::Period));
        assert_eq!(
            RateLimit::parse("10/1s", Some(0)),
            Err(RateLimitError::Count)
        );
        assert_eq!(
            RateLimit::parse("2000000000/1s", None),
            Err(RateLimitError::Count)
        );
        assert_eq!(
            RateLimit::parse("1000000000/1ms", None),
            Err(RateLimitError::Period)
        );
        // A bucket that would take centuries to refill saturates and never refuses: refused.
        assert_eq!(
            RateLimit::parse("1/1d", Some(250_000)),
            Err(RateLimitError::TooLong)
        );
        assert_eq!(
            RateLimit::parse("1/1h", Some(6_000_000)),
            Err(RateLimitError::TooLong)
        );
        assert!(RateLimit::parse("1/366d", Some(50)).is_ok());
    }

    #[test]
    fn fields() {
        let limit = RateLimit::from_field(&json!({"requests": 100, "per": "1m"})).unwrap();
        assert_eq!(limit, RateLimit::parse("100/1m", None).unwrap());
        assert_eq!(limit.to_field(), json!({"requests": 100, "per": "1m"}));
        let bursty =
            RateLimit::from_field(&json!({"requests": 10, "per": "1s", "burst": 3})).unwrap();
        assert_eq!(bursty.burst, 3);
        assert_eq!(
            bursty.to_field(),
            json!({"requests": 10, "per": "1s", "burst": 3})
        );
        for bad in [
            json!("100/1m"),
            json!(null),
            json!({"requests": 100}),
            json!({"per": "1m"}),
            json!({"requests": "100", "per": "1m"}),
            json!({"requests": 1.5, "per": "1m"}),
            json!({"requests": -1, "per": "1m"}),
            json!({"requests": 100, "per": 60}),
            json!({"requests": 100, "per": "1m", "burts": 5}),
            json!({"requests": 100, "per": "1m", "burst": null}),
            json!({"requests": 0, "per": "1m"}),
        ] {
            assert!(RateLimit::from_field(&bad).is_err(), "{bad}");
        }
    }
}
