//! How the daemon learns that the store changed: `refresh_interval` (polling), `refresh_jitter`
//! (its spread), `notify_queue` (the SQS queue of the object's S3 event notifications) and
//! `watch_store` (a file store's key file watched, on by default; S3 stores ignore it).
//!
//! A queue makes polling the fallback: without an explicit `refresh_interval` it polls every
//! 300 s (an explicit `0` still turns polling off). The queue needs an S3 store — its events name
//! the bucket and key the daemon compares with its own — and an `https://` URL (plain `http://`
//! only on a loopback host, for test servers); its region comes from an AWS queue URL's host
//! (`sqs.REGION.amazonaws.com`), else from the S3 settings.

use super::ConfigError;
use super::file::duration_of;
use super::file::{FileConfig, JitterSetting};
use crate::cli::Cli;
use crate::schedule::Jitter;
use heare_auth_store::StoreUrl;
use std::time::Duration;

/// Polling's interval when a queue is configured and no interval is.
pub const FALLBACK_INTERVAL: Duration = Duration::from_secs(300);

/// The SQS queue to long-poll, and the S3 object whose events count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyQueue {
    pub url: String,
    /// The region in an AWS queue URL's host; `None` for other hosts.
    pub region: Option<String>,
    pub bucket: String,
    pub key: String,
}

/// The resolved settings.
pub(super) struct Freshness {
    pub refresh_interval: Option<Duration>,
    pub refresh_jitter: Jitter,
    pub notify_queue: Option<NotifyQueue>,
    pub watch_store: bool,
}

pub(super) fn resolve(
    cli: &Cli,
    file: &FileConfig,
    store: &StoreUrl,
) -> Result<Freshness, ConfigError> {
    let notify_queue = cli
        .notify_queue
        .clone()
        .or(file.notify_queue.clone())
        .filter(|url| !url.is_empty() && url != "none")
        .map(|url| notify_queue(url, store))
        .transpose()?;
    let interval = duration_of(
        "refresh_interval",
        cli.refresh_interval.as_deref(),
        &file.refresh_interval,
    )?;
    let refresh_interval = match interval {
        None if notify_queue.is_some() => Some(FALLBACK_INTERVAL),
        other => other.filter(|d| !d.is_zero()),
    };
    Ok(Freshness {
        refresh_interval,
        refresh_jitter: jitter(cli, file)?,
        notify_queue,
        watch_store: cli.watch_store.or(file.watch_store).unwrap_or(true),
    })
}

/// `--refresh-jitter`, else the file's, else 10%.
fn jitter(cli: &Cli, file: &FileConfig) -> Result<Jitter, ConfigError> {
    let fraction = match (&cli.refresh_jitter, &file.refresh_jitter) {
        (Some(text), _) | (None, Some(JitterSetting::Text(text))) => {
            (percentage(text)?, text.clone())
        }
        (None, Some(JitterSetting::Fraction(fraction))) => (*fraction, fraction.to_string()),
        (None, None) => return Ok(Jitter::DEFAULT),
    };
    let (fraction, written) = fraction;
    Jitter::new(fraction).ok_or_else(|| ConfigError::Invalid {
        setting: "refresh_jitter",
        why: format!(
            "{written:.20} is outside 0% to 50% (write a percentage such as \"10%\", or a fraction such as 0.1)"
        ),
    })
}

/// `"10%"` as 0.1; a bare number is a fraction.
fn percentage(text: &str) -> Result<f64, ConfigError> {
    let invalid = || ConfigError::Invalid {
        setting: "refresh_jitter",
        why: format!("{text:?} is not a percentage such as \"10%\" or a fraction such as 0.1"),
    };
    let trimmed = text.trim();
    match trimmed.strip_suffix('%') {
        Some(percent) => percent
            .trim()
            .parse::<f64>()
            .map(|p| p / 100.0)
            .map_err(|_| invalid()),
        None => trimmed.parse::<f64>().map_err(|_| invalid()),
    }
}

/// Checks the queue URL and pairs it with the S3 object whose events count.
fn notify_queue(url: String, store: &StoreUrl) -> Result<NotifyQueue, ConfigError> {
    let invalid = |why: String| ConfigError::Invalid {
        setting: "notify_queue",
        why,
    };
    let StoreUrl::S3 { bucket, key } = store else {
        return Err(invalid(format!(
            "needs an S3 store (the queue carries S3 events), and the store is {store}"
        )));
    };
    if cfg!(not(feature = "s3")) {
        return Err(invalid(
            "this build has no S3 support (the s3 feature)".into(),
        ));
    }
    let host = queue_host(&url).ok_or_else(|| {
        invalid(format!(
            "{url:?} is not a queue URL such as https://sqs.REGION.amazonaws.com/ACCOUNT/QUEUE"
        ))
    })?;
    let region = aws_region(&host);
    Ok(NotifyQueue {
        url,
        region,
        bucket: bucket.clone(),
        key: key.clone(),
    })
}

/// The host of an `https://HOST/ACCOUNT/QUEUE` URL (`http://` only for a loopback host); `None`
/// when the URL has another shape.
fn queue_host(url: &str) -> Option<String> {
    let (plain, rest) = match url.strip_prefix("https://") {
        Some(rest) => (false, rest),
        None => (true, url.strip_prefix("http://")?),
    };
    let (authority, path) = rest.split_once('/')?;
    if authority.contains('@') {
        return None; // credentials in a URL would be printed wherever the URL is
    }
    let host = match authority.rsplit_once(':') {
        Some((host, port)) if port.parse::<u16>().is_ok() => host,
        _ => authority,
    };
    let segments: Vec<&str> = path.split('/').collect();
    let shaped = segments.len() == 2 && segments.iter().all(|s| is_path_segment(s));
    let loopback = matches!(host, "127.0.0.1" | "localhost" | "[::1]");
    (shaped && !host.is_empty() && (!plain || loopback)).then(|| host.to_string())
}

fn is_path_segment(segment: &str) -> bool {
    !segment.is_empty()
        && segment
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// `us-east-1` from `sqs.us-east-1.amazonaws.com` (or the legacy `us-east-1.queue.amazonaws.com`).
fn aws_region(host: &str) -> Option<String> {
    let region = host
        .strip_prefix("sqs.")
        .and_then(|h| h.strip_suffix(".amazonaws.com"))
        .or_else(|| host.strip_suffix(".queue.amazonaws.com"))?;
    let plausible = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    plausible.then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> StoreUrl {
        StoreUrl::s3("bucket", "keys.json")
    }

    #[test]
    fn an_aws_queue_url_gives_its_region() {
        let queue = notify_queue(
            "https://sqs.eu-west-2.amazonaws.com/123456789012/heare-auth-web1".into(),
            &s3(),
        )
        .unwrap();
        assert_eq!(queue.region.as_deref(), Some("eu-west-2"));
        assert_eq!(
            (queue.bucket.as_str(), queue.key.as_str()),
            ("bucket", "keys.json")
        );
    }

    #[test]
    fn plain_http_only_on_loopback() {
        assert!(notify_queue("http://127.0.0.1:5000/123456789012/q".into(), &s3()).is_ok());
        assert!(notify_queue("http://sqs.example.com/123456789012/q".into(), &s3()).is_err());
    }

    #[test]
    fn misshapen_queue_urls_are_refused() {
        for url in [
            "sqs.us-east-1.amazonaws.com/1/q",
            "https://sqs.us-east-1.amazonaws.com/q",
            "https://sqs.us-east-1.amazonaws.com/1/q/extra",
            "https://sqs.us-east-1.amazonaws.com/1/q?x=1",
            "https:///1/q",
            "https://user:pw@sqs.us-east-1.amazonaws.com/1/q",
        ] {
            assert!(notify_queue(url.into(), &s3()).is_err(), "{url}");
        }
    }

    #[test]
    fn a_queue_needs_an_s3_store() {
        let file = StoreUrl::File {
            path: "/var/lib/heare-auth/keys.json".into(),
        };
        let error = notify_queue("https://sqs.us-east-1.amazonaws.com/1/q".into(), &file);
        assert!(error.unwrap_err().to_string().contains("needs an S3 store"));
    }

    #[test]
    fn percentages_and_fractions() {
        assert_eq!(percentage("10%").unwrap(), 0.1);
        assert_eq!(percentage(" 25 % ").unwrap(), 0.25);
        assert_eq!(percentage("0.2").unwrap(), 0.2);
        assert!(percentage("ten").is_err());
    }
}
