//! The `[stats]` table and the Python service's stats environment (`PROTOCOL`, `DEST_HOST`,
//! `DEST_PORT`, `SECRET`), resolved to [`StatsSettings`]: environment > file > defaults, as for
//! every setting. Without a destination host and port there is no push, as in the Python service.
//! The secret is read here and never printed: `Debug` and `--check-config` show only whether it
//! is set.

use super::ConfigError;
use super::file::duration_of;
use super::file::{FileConfig, StatsSection};
use crate::ports;
use std::path::Path;
use std::time::Duration;
use zeroize::Zeroizing;

/// How the stats are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsProtocol {
    /// StatsD lines over UDP (what `heare-stats-server` listens to).
    Udp,
    /// One JSON `POST /http` per flush, HTTP basic auth with the secret (https on port 443).
    Http,
}

/// The collector's secret, never shown.
#[derive(Clone)]
pub struct StatsSecret(Zeroizing<String>);

impl StatsSecret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for StatsSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StatsSecret(..)")
    }
}

/// Where and how often the daemon pushes its stats.
#[derive(Debug, Clone)]
pub struct StatsSettings {
    pub protocol: StatsProtocol,
    pub dest_host: String,
    pub dest_port: u16,
    pub secret: Option<StatsSecret>,
    /// Joined to every name with a `.` (default `heare-auth`).
    pub prefix: String,
    pub flush_interval: Duration,
}

impl StatsSettings {
    pub(super) fn describe(settings: Option<&StatsSettings>) -> Vec<String> {
        let Some(stats) = settings else {
            return vec!["stats = (none)".to_string()];
        };
        let secret = if stats.secret.is_some() {
            "(set)"
        } else {
            "(none)"
        };
        vec![
            format!("stats.protocol = {:?}", stats.protocol).to_lowercase(),
            format!("stats.dest_host = {}", stats.dest_host),
            format!("stats.dest_port = {}", stats.dest_port),
            format!("stats.secret = {secret}"),
            format!("stats.prefix = {}", stats.prefix),
            format!(
                "stats.flush_interval = {}s",
                stats.flush_interval.as_secs_f64()
            ),
        ]
    }
}

/// The stats push, if a destination is configured.
pub(super) fn resolve(
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileConfig,
) -> Result<Option<StatsSettings>, ConfigError> {
    let empty = StatsSection::default();
    let section = file.stats.as_ref().unwrap_or(&empty);
    let set = |name: &str| env(name).filter(|v| !v.is_empty());
    let host = set("DEST_HOST").or(section.dest_host.clone());
    let port = match set("DEST_PORT") {
        Some(text) => Some(parse_port(&text)?),
        None => section.dest_port,
    };
    let (dest_host, dest_port) = match (host, port) {
        (None, None) => return Ok(None),
        (Some(host), Some(port)) if !host.trim().is_empty() && port != 0 => (host, port),
        _ => {
            return Err(invalid(
                "stats.dest_host",
                "set both dest_host and dest_port (DEST_HOST and DEST_PORT), or neither".into(),
            ));
        }
    };
    let protocol = protocol(set("PROTOCOL").or(section.protocol.clone()).as_deref())?;
    let secret = secret(set("SECRET"), section)?;
    if protocol == StatsProtocol::Http && secret.is_some() && dest_port != 443 {
        refuse_secret_in_clear(&dest_host, dest_port, section.insecure_http)?;
    }
    Ok(Some(StatsSettings {
        protocol,
        dest_host,
        dest_port,
        secret,
        prefix: section
            .prefix
            .clone()
            .unwrap_or_else(|| "heare-auth".to_string()),
        flush_interval: flush_interval(section)?,
    }))
}

/// The HTTP protocol uses https only on port 443 (as the Python client does): elsewhere the
/// secret would cross the wire in the clear. Allowed only to a loopback collector on a port only
/// root can bind (any local user can hold an unprivileged loopback port while the collector is
/// down and receive the secret), or with the explicit `insecure_http = true`.
fn refuse_secret_in_clear(
    host: &str,
    port: u16,
    insecure_http: Option<bool>,
) -> Result<(), ConfigError> {
    let loopback = ports::is_loopback_host(host);
    if (loopback && ports::is_privileged(port)) || insecure_http == Some(true) {
        return Ok(());
    }
    let why = if loopback {
        format!(
            "the stats secret would be sent unencrypted to {host}:{port}, a port any local user can bind while the collector is down (https is used only on port 443); use port 443, a collector on a port only root can bind (below net.ipv4.ip_unprivileged_port_start), or set insecure_http = true in [stats]"
        )
    } else {
        format!(
            "the stats secret would be sent unencrypted to {host}:{port} (https is used only on port 443); use port 443, a collector on this host on a port only root can bind, or set insecure_http = true in [stats]"
        )
    };
    Err(invalid("stats.dest_port", why))
}

fn invalid(setting: &'static str, why: String) -> ConfigError {
    ConfigError::Invalid { setting, why }
}

fn parse_port(text: &str) -> Result<u16, ConfigError> {
    text.trim().parse().map_err(|_| {
        invalid(
            "stats.dest_port",
            format!("DEST_PORT {text:?} is not a port number"),
        )
    })
}

fn protocol(text: Option<&str>) -> Result<StatsProtocol, ConfigError> {
    match text.unwrap_or("http") {
        "udp" => Ok(StatsProtocol::Udp),
        "http" => Ok(StatsProtocol::Http),
        other => Err(invalid(
            "stats.protocol",
            format!("{other:?} is not supported: use \"udp\" (heare-stats-server) or \"http\""),
        )),
    }
}

/// `SECRET`, else the table's `secret` or `secret_file` (not both).
fn secret(
    from_env: Option<String>,
    section: &StatsSection,
) -> Result<Option<StatsSecret>, ConfigError> {
    if let Some(secret) = from_env {
        return Ok(Some(StatsSecret(Zeroizing::new(secret))));
    }
    match (&section.secret, &section.secret_file) {
        (Some(_), Some(_)) => Err(invalid(
            "stats.secret",
            "set secret or secret_file, not both".into(),
        )),
        (Some(secret), None) => Ok(Some(StatsSecret(Zeroizing::new(secret.clone())))),
        (None, Some(path)) => read_secret_file(path).map(Some),
        (None, None) => Ok(None),
    }
}

fn read_secret_file(path: &Path) -> Result<StatsSecret, ConfigError> {
    let secret = super::secret_file::read("stats.secret_file", path)?;
    if secret.is_empty() {
        return Err(invalid(
            "stats.secret_file",
            format!("{} is empty", path.display()),
        ));
    }
    Ok(StatsSecret(secret))
}

fn flush_interval(section: &StatsSection) -> Result<Duration, ConfigError> {
    let interval = duration_of("stats.flush_interval", None, &section.flush_interval)?
        .unwrap_or(Duration::from_secs(10));
    if interval < Duration::from_millis(100) {
        return Err(invalid(
            "stats.flush_interval",
            "must be at least 100ms".into(),
        ));
    }
    Ok(interval)
}
