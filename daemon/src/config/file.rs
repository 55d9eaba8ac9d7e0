//! The configuration file as written: its TOML shape, read and parsed, with errors that locate
//! the problem but never quote a secret setting's value.
//!
//! Unknown keys are an error (a typo must not silently fall back to a default). toml's own error
//! text quotes the offending line and can quote the value (`invalid type: integer `98765…``), so
//! only the first line of its message is kept, and an error on a secret setting's line gets a
//! fixed text instead, whatever the value's TOML type.
//!
//! The file is read through [`heare_auth_store::safe_file::read_small`]: without blocking, only a
//! regular file, at most [`MAX_CONFIG_FILE_BYTES`]. A link at its name is followed: its directory
//! (`/etc/heare-auth`) is root's, so a link there is the administrator's, pointing at a file they
//! keep (as the package's postinst treats the environment file).
//!
//! A duration is written as seconds or as text (`30s`, `2m`); [`duration_of`] reads one setting,
//! its flag (text) over its file value, for every part of the configuration that has one.

use super::{ConfigError, LogFormat};
use heare_auth_store::duration;
use heare_auth_store::safe_file::{Links, read_small};
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The largest configuration file read: a real one is a few KiB.
pub const MAX_CONFIG_FILE_BYTES: u64 = 1024 * 1024;

/// Settings whose values are secrets (`redis_url` may hold a password): no error ever quotes them.
const SECRET_SETTINGS: [&str; 3] = ["storage_secret", "secret", "redis_url"];

/// A duration written as `30s`/`5m` or as a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum DurationSetting {
    Seconds(u64),
    Text(String),
}

/// The poll jitter written as `"10%"` or as a fraction, `0.1`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum JitterSetting {
    Fraction(f64),
    Text(String),
}

/// Socket permissions written as `"0660"` or as TOML's `0o660`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(super) enum ModeSetting {
    Number(u32),
    Text(String),
}

/// The `[s3]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct S3Section {
    pub region: Option<String>,
    pub endpoint: Option<String>,
    pub path_style: Option<bool>,
    pub timeout: Option<DurationSetting>,
}

/// The `[stats]` table.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StatsSection {
    pub protocol: Option<String>,
    pub dest_host: Option<String>,
    pub dest_port: Option<u16>,
    pub secret: Option<String>,
    pub secret_file: Option<PathBuf>,
    pub prefix: Option<String>,
    pub flush_interval: Option<DurationSetting>,
    pub insecure_http: Option<bool>,
}

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileConfig {
    pub store: Option<String>,
    pub socket: Option<PathBuf>,
    pub socket_mode: Option<ModeSetting>,
    pub socket_group: Option<String>,
    pub admin_group: Option<String>,
    pub listen_tcp: Option<String>,
    pub metrics_listen: Option<String>,
    pub tcp_admin_from_loopback: Option<bool>,
    pub cache_path: Option<String>,
    pub usage_path: Option<String>,
    pub usage_report: Option<String>,
    pub usage_report_interval: Option<DurationSetting>,
    pub host_id: Option<String>,
    pub refresh_interval: Option<DurationSetting>,
    pub refresh_jitter: Option<JitterSetting>,
    pub notify_queue: Option<String>,
    pub watch_store: Option<bool>,
    pub max_stale: Option<DurationSetting>,
    pub storage_secret: Option<String>,
    pub storage_secret_file: Option<PathBuf>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub max_connections: Option<usize>,
    pub max_connections_per_uid: Option<usize>,
    pub max_connections_per_address: Option<usize>,
    pub worker_threads: Option<usize>,
    pub header_read_timeout: Option<DurationSetting>,
    pub idle_timeout: Option<DurationSetting>,
    pub write_timeout: Option<DurationSetting>,
    pub max_store_bytes: Option<u64>,
    pub s3: Option<S3Section>,
    pub stats: Option<StatsSection>,
    pub forward_auth: Option<super::forward_auth::ForwardAuthSection>,
    pub rate_limit: Option<super::rate_limit::RateLimitSection>,
}

/// Reads `explicit`, or the default path if it exists (a missing default file is no file).
pub(super) fn read_file(
    explicit: Option<&Path>,
    default: &Path,
) -> Result<FileConfig, ConfigError> {
    let path = explicit.unwrap_or(default);
    let body = match read_small(path, MAX_CONFIG_FILE_BYTES, Links::Follow) {
        Ok(body) => body,
        Err(error) if explicit.is_none() && error.is_not_found() => {
            return Ok(FileConfig::default());
        }
        Err(error) => return Err(ConfigError::Read(error)),
    };
    let text = String::from_utf8(body).map_err(|_| ConfigError::Parse {
        path: path.to_path_buf(),
        message: "it is not UTF-8 text".into(),
    })?;
    parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

pub(super) fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|error| describe_parse_error(text, &error))
}

/// toml's message for `error`, located by line; a fixed text on a secret setting's line.
fn describe_parse_error(text: &str, error: &toml::de::Error) -> String {
    let first_line = error.message().lines().next().unwrap_or_default();
    let Some(span) = error.span() else {
        return first_line.to_string();
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    match secret_setting_on(line_text) {
        Some(setting) => {
            format!("{setting} must be a string (line {line}; its value is not shown)")
        }
        None => format!("{first_line} (line {line})"),
    }
}

/// The secret setting a TOML line assigns, if any (`storage_secret = …`, also quoted or dotted).
fn secret_setting_on(line: &str) -> Option<&'static str> {
    let (key, _) = line.split_once('=')?;
    let last = key.rsplit('.').next().unwrap_or(key);
    let name = last.trim().trim_matches(|c| c == '"' || c == '\'');
    SECRET_SETTINGS.into_iter().find(|secret| *secret == name)
}

/// A duration from its flag (text) or its file setting; `None` when neither is set.
pub(super) fn duration_of(
    setting: &'static str,
    flag: Option<&str>,
    file: &Option<DurationSetting>,
) -> Result<Option<Duration>, ConfigError> {
    let parse = |text: &str| {
        duration::parse(text).map_err(|e| ConfigError::Invalid {
            setting,
            why: e.to_string(),
        })
    };
    match (flag, file) {
        (Some(text), _) => parse(text).map(Some),
        (None, Some(DurationSetting::Seconds(secs))) => Ok(Some(Duration::from_secs(*secs))),
        (None, Some(DurationSetting::Text(text))) => parse(text).map(Some),
        (None, None) => Ok(None),
    }
}
