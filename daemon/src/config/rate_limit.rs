//! The `[rate_limit]` table: `default = "100/1m"`, the limit of keys without their own
//! `rate_limit` (none by default: such keys are unlimited), and where the limits are kept.
//!
//! `backend = "local"` (the default) keeps them in this daemon's memory, exact for this host.
//! `backend = "redis"` keeps them in one Redis (or Valkey) the fleet shares: `redis_url`
//! (`redis://`, `rediss://` with the system roots or `redis_ca_file`, `unix:///path`), the password
//! from the URL or `redis_password_file`, `redis_timeout` (default 50ms) and `redis_prefix`
//! (default `heare-auth:` plus the store URL, its `%` and `:` escaped, so two fleets sharing a
//! Redis never mix limits). When Redis cannot answer in time, `on_backend_error` decides: `"local"`
//! (the default: each daemon enforces `requests / fleet_hosts` and `burst / fleet_hosts` itself, so
//! `fleet_hosts` is required), `"allow"` or `"deny"`. A setting of the other backend is an error,
//! as is any unknown one: a typo must never silently mean "not shared".

use super::ConfigError;
use super::file::DurationSetting;
use super::redis_endpoint;
pub use crate::rate_limit::redis::without_credentials;
use heare_auth_store::StoreUrl;
use heare_auth_store::rate_limit::RateLimit;
use serde::Deserialize;
use std::path::PathBuf;
use std::time::Duration;
use zeroize::Zeroizing;

/// The table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitSection {
    pub default: Option<String>,
    pub backend: Option<String>,
    pub redis_url: Option<String>,
    pub redis_ca_file: Option<PathBuf>,
    pub redis_password_file: Option<PathBuf>,
    pub redis_timeout: Option<DurationSetting>,
    pub redis_prefix: Option<String>,
    pub redis_insecure: Option<bool>,
    pub on_backend_error: Option<String>,
    pub fleet_hosts: Option<u64>,
}

/// How keys are rate limited.
#[derive(Debug, Clone, Default)]
pub struct RateLimitSettings {
    /// The limit of keys without their own; `None`: such keys are unlimited.
    pub default: Option<RateLimit>,
    /// The fleet-wide backend; `None`: the local one.
    pub fleet: Option<FleetSettings>,
}

/// The Redis the fleet shares, and what to do without it.
#[derive(Clone)]
pub struct FleetSettings {
    /// As written; may hold a password, so it is never printed.
    pub url: String,
    pub ca_file: Option<PathBuf>,
    /// From `redis_password_file`.
    pub password: Option<Zeroizing<String>>,
    pub timeout: Duration,
    pub prefix: String,
    pub on_error: OnBackendError,
}

impl std::fmt::Debug for FleetSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetSettings")
            .field("url", &without_credentials(&self.url))
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .field("on_error", &self.on_error)
            .finish_non_exhaustive()
    }
}

/// What a limited key's request gets when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnBackendError {
    /// This daemon's share of the limit, enforced here: `requests / fleet_hosts`.
    Local {
        fleet_hosts: u64,
    },
    Allow,
    Deny,
}

/// The longest `redis_timeout`: a verify waits at most this long for Redis.
const MAX_REDIS_TIMEOUT: Duration = Duration::from_secs(5);

impl RateLimitSettings {
    pub(super) fn describe(&self) -> Vec<String> {
        let default = self
            .default
            .map_or_else(|| "(none)".to_string(), |limit| limit.to_string());
        let mut lines = vec![format!("rate_limit.default = {default}")];
        match &self.fleet {
            None => lines.push("rate_limit.backend = local".into()),
            Some(fleet) => lines.extend([
                "rate_limit.backend = redis".into(),
                format!("rate_limit.redis_url = {}", without_credentials(&fleet.url)),
                format!(
                    "rate_limit.redis_ca_file = {}",
                    super::or_none(fleet.ca_file.as_ref().map(|p| p.display().to_string()))
                ),
                format!(
                    "rate_limit.redis_password_file = {}",
                    if fleet.password.is_some() {
                        "(set)"
                    } else {
                        "(none)"
                    }
                ),
                format!("rate_limit.redis_timeout = {:?}", fleet.timeout),
                format!("rate_limit.redis_prefix = {}", fleet.prefix),
                format!(
                    "rate_limit.on_backend_error = {}",
                    fleet.on_error.describe()
                ),
            ]),
        }
        lines
    }
}

impl OnBackendError {
    fn describe(&self) -> String {
        match self {
            OnBackendError::Local { fleet_hosts } => format!("local (fleet_hosts = {fleet_hosts})"),
            OnBackendError::Allow => "allow".into(),
            OnBackendError::Deny => "deny".into(),
        }
    }
}

fn invalid(setting: &'static str, why: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting,
        why: why.into(),
    }
}

pub(super) fn resolve(
    section: Option<&RateLimitSection>,
    store: &StoreUrl,
) -> Result<RateLimitSettings, ConfigError> {
    let Some(section) = section else {
        return Ok(RateLimitSettings::default());
    };
    let default = match &section.default {
        None => None,
        Some(text) => Some(
            RateLimit::parse(text, None)
                .map_err(|e| invalid("rate_limit.default", e.to_string()))?,
        ),
    };
    let fleet = match section.backend.as_deref() {
        None | Some("local") => {
            refuse_redis_settings(section)?;
            None
        }
        Some("redis") => Some(fleet(section, store)?),
        Some(other) => {
            return Err(invalid(
                "rate_limit.backend",
                format!(
                    "{:?} is not a backend (\"local\" or \"redis\")",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    };
    Ok(RateLimitSettings { default, fleet })
}

/// With the local backend, a Redis setting is a mistake (a forgotten `backend = "redis"`).
fn refuse_redis_settings(section: &RateLimitSection) -> Result<(), ConfigError> {
    let set = [
        ("rate_limit.redis_url", section.redis_url.is_some()),
        ("rate_limit.redis_ca_file", section.redis_ca_file.is_some()),
        (
            "rate_limit.redis_password_file",
            section.redis_password_file.is_some(),
        ),
        ("rate_limit.redis_timeout", section.redis_timeout.is_some()),
        ("rate_limit.redis_prefix", section.redis_prefix.is_some()),
        (
            "rate_limit.redis_insecure",
            section.redis_insecure.is_some(),
        ),
        (
            "rate_limit.on_backend_error",
            section.on_backend_error.is_some(),
        ),
        ("rate_limit.fleet_hosts", section.fleet_hosts.is_some()),
    ];
    match set.iter().find(|(_, is_set)| *is_set) {
        Some((setting, _)) => Err(invalid(
            setting,
            "is a setting of backend = \"redis\", and the backend is local",
        )),
        None => Ok(()),
    }
}

fn fleet(section: &RateLimitSection, store: &StoreUrl) -> Result<FleetSettings, ConfigError> {
    let url = section.redis_url.clone().ok_or_else(|| {
        invalid(
            "rate_limit.redis_url",
            "backend = \"redis\" needs redis_url",
        )
    })?;
    let scheme = url.split_once("://").map(|(scheme, _)| scheme);
    if !matches!(scheme, Some("redis" | "rediss" | "unix" | "redis+unix")) {
        return Err(invalid(
            "rate_limit.redis_url",
            "must start with redis://, rediss:// or unix://",
        ));
    }
    if section.redis_ca_file.is_some() && scheme != Some("rediss") {
        return Err(invalid(
            "rate_limit.redis_ca_file",
            "is only used with a rediss:// URL",
        ));
    }
    let password = match &section.redis_password_file {
        None => None,
        Some(path) => Some(super::secret_file::read(
            "rate_limit.redis_password_file",
            path,
        )?),
    };
    let timeout =
        super::file::duration_of("rate_limit.redis_timeout", None, &section.redis_timeout)?
            .unwrap_or(Duration::from_millis(50));
    if timeout.is_zero() || timeout > MAX_REDIS_TIMEOUT {
        return Err(invalid(
            "rate_limit.redis_timeout",
            "must be more than 0 and at most 5s (a verify waits this long for Redis)",
        ));
    }
    let on_error = on_error(section)?;
    refuse_squattable_redis(&url, section.redis_insecure)?;
    Ok(FleetSettings {
        url,
        ca_file: section.redis_ca_file.clone(),
        password,
        timeout,
        prefix: section
            .redis_prefix
            .clone()
            .unwrap_or_else(|| default_prefix(store)),
        on_error,
    })
}

/// A Redis a local user could answer in place of ([`redis_endpoint::squattable`]) is refused
/// unless `redis_insecure = true`.
fn refuse_squattable_redis(url: &str, insecure: Option<bool>) -> Result<(), ConfigError> {
    let Some(why) = redis_endpoint::squattable(url).filter(|_| insecure != Some(true)) else {
        return Ok(());
    };
    Err(invalid(
        "rate_limit.redis_url",
        format!(
            "{why}: they could answer in Redis's place (refusing every limited key, or accepting all) and be sent the password; use unix:///path/to/redis.sock in a directory only Redis can write, rediss:// (with redis_ca_file for a certificate of your own), a port only root can bind (below net.ipv4.ip_unprivileged_port_start), or set redis_insecure = true"
        ),
    ))
}

/// `heare-auth:` + the store URL with `%` and `:` escaped + `:`: the prefix ends at its second
/// colon, so no two stores' prefixes and key ids make the same Redis key.
fn default_prefix(store: &impl std::fmt::Display) -> String {
    let escaped = store.to_string().replace('%', "%25").replace(':', "%3A");
    format!("heare-auth:{escaped}:")
}

fn on_error(section: &RateLimitSection) -> Result<OnBackendError, ConfigError> {
    match (section.on_backend_error.as_deref(), section.fleet_hosts) {
        (None | Some("local"), Some(hosts)) if hosts >= 1 => {
            Ok(OnBackendError::Local { fleet_hosts: hosts })
        }
        (None | Some("local"), _) => Err(invalid(
            "rate_limit.fleet_hosts",
            "on_backend_error = \"local\" (the default) needs fleet_hosts, the number of daemons sharing the limits (at least 1), to enforce each one's share while Redis is unreachable",
        )),
        (Some("allow"), _) => Ok(OnBackendError::Allow),
        (Some("deny"), _) => Ok(OnBackendError::Deny),
        (Some(other), _) => Err(invalid(
            "rate_limit.on_backend_error",
            format!(
                "{:?} is not one of \"local\", \"allow\", \"deny\"",
                other.chars().take(40).collect::<String>()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> StoreUrl {
        "s3://bucket/keys.json"
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn section(toml_text: &str) -> RateLimitSection {
        toml::from_str(toml_text).unwrap_or_else(|e| panic!("{e}"))
    }

    fn error_of(toml_text: &str) -> String {
        match resolve(Some(&section(toml_text)), &store()) {
            Ok(settings) => panic!("accepted: {settings:?}"),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn default_and_the_local_backend() {
        assert!(resolve(None, &store()).unwrap().default.is_none());
        let settings = resolve(
            Some(&section("default = \"100/1m\"\nbackend = \"local\"")),
            &store(),
        )
        .unwrap();
        assert_eq!(
            settings.default.map(|l| l.to_string()).as_deref(),
            Some("100/1m")
        );
        assert!(settings.fleet.is_none());
        assert!(error_of("default = \"100\"").contains("rate_limit.default"));
        assert!(error_of("default = \"0/1m\"").contains("rate_limit.default"));
        assert!(error_of("backend = \"memcached\"").contains("rate_limit.backend"));
        assert!(error_of("redis_url = \"redis://h\"").contains("rate_limit.redis_url"));
        assert!(error_of("fleet_hosts = 3").contains("rate_limit.fleet_hosts"));
    }

    #[test]
    fn the_redis_backend() {
        let settings = resolve(
            Some(&section(
                "backend = \"redis\"\nredis_url = \"redis://:pw@h:6379/0\"\nfleet_hosts = 3",
            )),
            &store(),
        )
        .unwrap();
        let fleet = settings.fleet.unwrap();
        assert_eq!(fleet.timeout, Duration::from_millis(50));
        assert_eq!(fleet.prefix, "heare-auth:s3%3A//bucket/keys.json:");
        assert_eq!(
            default_prefix(&"file:///a%3Ab:c"),
            "heare-auth:file%3A///a%253Ab%3Ac:"
        );
        assert_eq!(fleet.on_error, OnBackendError::Local { fleet_hosts: 3 });
        let described = format!("{fleet:?}");
        assert!(!described.contains("pw"), "{described}");
        let settings = RateLimitSettings {
            default: None,
            fleet: Some(fleet),
        };
        assert!(!settings.describe().concat().contains("pw"));
        let allow = "backend = \"redis\"\nredis_url = \"unix:///run/redis.sock\"\non_backend_error = \"allow\"\nredis_timeout = \"20ms\"\nredis_prefix = \"p:\"";
        let fleet = resolve(Some(&section(allow)), &store())
            .unwrap()
            .fleet
            .unwrap();
        assert_eq!(fleet.on_error, OnBackendError::Allow);
        assert_eq!(fleet.timeout, Duration::from_millis(20));
        assert_eq!(fleet.prefix, "p:");
        // A Redis on this host's loopback on an unprivileged port: only with redis_insecure;
        // TLS, a Unix socket, another host need nothing (the cases: redis_endpoint.rs).
        for url in [
            "rediss://127.0.0.1:6379",
            "unix:///run/redis/redis-server.sock",
            "redis://10.0.0.7:6379",
        ] {
            let text = format!("backend = \"redis\"\nredis_url = \"{url}\"\nfleet_hosts = 2");
            assert!(resolve(Some(&section(&text)), &store()).is_ok(), "{url}");
        }
        let insecure = "backend = \"redis\"\nredis_url = \"redis://127.0.0.1:6379\"\nfleet_hosts = 2\nredis_insecure = true";
        assert!(resolve(Some(&section(insecure)), &store()).is_ok());
        assert!(
            !error_of(
                "backend = \"redis\"\nredis_url = \"redis://:pw@127.0.0.1:6379\"\nfleet_hosts = 2"
            )
            .contains("pw")
        );
        for (text, setting) in [
            ("backend = \"redis\"\nfleet_hosts = 2", "redis_url"),
            (
                "backend = \"redis\"\nredis_url = \"redis://:pw@127.0.0.1:6379\"\nfleet_hosts = 2",
                "rate_limit.redis_url",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://localhost\"\nfleet_hosts = 2",
                "localhost:6379, a port of this host any local user can bind",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://[::1]:6380\"\nfleet_hosts = 2",
                "[::1]:6380",
            ),
            ("redis_insecure = true", "rate_limit.redis_insecure"),
            (
                "backend = \"redis\"\nredis_url = \"http://h\"\nfleet_hosts = 2",
                "redis_url",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://h\"",
                "fleet_hosts",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://h\"\nfleet_hosts = 0",
                "fleet_hosts",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://h\"\non_backend_error = \"maybe\"",
                "on_backend_error",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://h\"\nfleet_hosts = 2\nredis_timeout = \"0s\"",
                "redis_timeout",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://h\"\nfleet_hosts = 2\nredis_ca_file = \"/x\"",
                "redis_ca_file",
            ),
            (
                "backend = \"redis\"\nredis_url = \"redis://h\"\nfleet_hosts = 2\nredis_password_file = \"/nonexistent/pw\"",
                "redis_password_file",
            ),
        ] {
            assert!(
                error_of(text).contains(setting),
                "{text}: {}",
                error_of(text)
            );
        }
    }
}
