//! The `[rate_limit]` table: `default = "100/1m"`, the limit of keys without their own
//! `rate_limit` (none by default: such keys are unlimited), and `backend`, where the limits are
//! kept. `backend = "local"` (the default) keeps them in this daemon's memory, exact for this
//! host. The fleet-wide backend (`"redis"`) is not in this build: naming it is a configuration
//! error, so that a fleet never runs believing its limits are shared when they are not.

use super::ConfigError;
use heare_auth_store::rate_limit::RateLimit;
use serde::Deserialize;

/// The table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RateLimitSection {
    pub default: Option<String>,
    pub backend: Option<String>,
}

/// How keys are rate limited.
#[derive(Debug, Clone, Default)]
pub struct RateLimitSettings {
    /// The limit of keys without their own; `None`: such keys are unlimited.
    pub default: Option<RateLimit>,
}

impl RateLimitSettings {
    pub(super) fn describe(&self) -> Vec<String> {
        let default = self
            .default
            .map_or_else(|| "(none)".to_string(), |limit| limit.to_string());
        vec![
            format!("rate_limit.default = {default}"),
            "rate_limit.backend = local".to_string(),
        ]
    }
}

pub(super) fn resolve(
    section: Option<&RateLimitSection>,
) -> Result<RateLimitSettings, ConfigError> {
    let Some(section) = section else {
        return Ok(RateLimitSettings::default());
    };
    match section.backend.as_deref() {
        None | Some("local") => {}
        Some("redis") => {
            return Err(ConfigError::Invalid {
                setting: "rate_limit.backend",
                why: "the redis backend is not available in this build; use \"local\"".into(),
            });
        }
        Some(other) => {
            return Err(ConfigError::Invalid {
                setting: "rate_limit.backend",
                why: format!("{other:?} is not a backend (\"local\")"),
            });
        }
    }
    let default = match &section.default {
        None => None,
        Some(text) => Some(
            RateLimit::parse(text, None).map_err(|e| ConfigError::Invalid {
                setting: "rate_limit.default",
                why: e.to_string(),
            })?,
        ),
    };
    Ok(RateLimitSettings { default })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(default: Option<&str>, backend: Option<&str>) -> RateLimitSection {
        RateLimitSection {
            default: default.map(str::to_string),
            backend: backend.map(str::to_string),
        }
    }

    #[test]
    fn default_and_backend() {
        assert!(resolve(None).unwrap().default.is_none());
        let settings = resolve(Some(&section(Some("100/1m"), Some("local")))).unwrap();
        assert_eq!(
            settings.default.map(|l| l.to_string()).as_deref(),
            Some("100/1m")
        );
        for (default, backend) in [
            (Some("100"), None),
            (Some("0/1m"), None),
            (None, Some("redis")),
            (None, Some("memcached")),
        ] {
            assert!(resolve(Some(&section(default, backend))).is_err());
        }
    }
}
