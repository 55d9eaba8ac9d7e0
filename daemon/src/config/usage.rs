//! Where per-key usage is kept: `usage_path` (the state file; by default `usage.json` beside the
//! last-known-good cache, else beside a local key file) and the optional fleet report
//! (`usage_report = "s3://BUCKET/PREFIX/"`, `usage_report_interval`, `host_id`).

use super::file::FileConfig;
use super::file::duration_of;
use super::{ConfigError, or_none};
use crate::cli::Cli;
use heare_auth_store::StoreUrl;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the fleet report goes: `s3://bucket/prefix/<host id>.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportPrefix {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
}

impl std::str::FromStr for ReportPrefix {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{text:?} is not s3://BUCKET/PREFIX/"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{text:?} names no bucket"));
        }
        let mut prefix = prefix.to_string();
        if !prefix.is_empty() && !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(ReportPrefix {
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

impl std::fmt::Display for ReportPrefix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.prefix)
    }
}

/// Per-key usage: the state file and the fleet report.
#[derive(Debug, Clone)]
pub struct UsageSettings {
    /// The state file; `None`: usage is kept in memory only.
    pub path: Option<PathBuf>,
    pub report: Option<ReportPrefix>,
    /// Between reports (each wait jittered by up to a tenth).
    pub report_interval: Duration,
    /// The report's name; `None`: `/etc/machine-id`.
    pub host_id: Option<String>,
}

impl UsageSettings {
    pub(super) fn describe(&self) -> Vec<String> {
        vec![
            format!(
                "usage_path = {}",
                or_none(self.path.as_ref().map(|p| p.display().to_string()))
            ),
            format!(
                "usage_report = {}",
                or_none(self.report.as_ref().map(ToString::to_string))
            ),
            format!(
                "usage_report_interval = {}s",
                self.report_interval.as_secs_f64()
            ),
            format!("host_id = {}", or_none(self.host_id.clone())),
        ]
    }
}

pub(super) fn resolve(
    cli: &Cli,
    file: &FileConfig,
    store: &StoreUrl,
    cache: Option<&Path>,
) -> Result<UsageSettings, ConfigError> {
    let invalid = |setting, why| ConfigError::Invalid { setting, why };
    let taken = taken_paths(store, cache);
    let path = match cli.usage_path.clone().or(file.usage_path.clone()) {
        Some(text) if text.is_empty() || text == "none" => None,
        Some(text) if taken.contains(&normal(Path::new(&text))) => {
            return Err(invalid(
                "usage_path",
                format!(
                    "{text} is the key file, the cache or one of their companions; choose another file"
                ),
            ));
        }
        Some(text) => Some(PathBuf::from(text)),
        None => default_path(store, cache).map(|path| match taken.contains(&normal(&path)) {
            true => path.with_file_name("heare-authd-usage.json"),
            false => path,
        }),
    };
    let report = match &file.usage_report {
        Some(text) if !text.is_empty() => {
            Some(text.parse().map_err(|why| invalid("usage_report", why))?)
        }
        _ => None,
    };
    let report_interval = duration_of("usage_report_interval", None, &file.usage_report_interval)?
        .unwrap_or(Duration::from_secs(300));
    if report_interval < Duration::from_secs(1) {
        return Err(invalid(
            "usage_report_interval",
            "must be at least 1s".into(),
        ));
    }
    let host_id = file.host_id.clone().filter(|id| !id.is_empty());
    if let Some(id) = &host_id
        && !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(invalid(
            "host_id",
            format!("{id:?}: use letters, digits, '-', '_' and '.'"),
        ));
    }
    Ok(UsageSettings {
        path,
        report,
        report_interval,
        host_id,
    })
}

/// The files the usage file must never be: the local key file, the cache, and their lock and
/// generation records.
fn taken_paths(store: &StoreUrl, cache: Option<&Path>) -> Vec<PathBuf> {
    let key_file = match store {
        StoreUrl::File { path } => Some(path.as_path()),
        StoreUrl::S3 { .. } => None,
    };
    let mut taken = Vec::new();
    for file in key_file.into_iter().chain(cache) {
        taken.push(normal(file));
        for suffix in [".generation", ".lock"] {
            let mut name = file.as_os_str().to_owned();
            name.push(suffix);
            taken.push(normal(Path::new(&name)));
        }
    }
    taken
}

/// `path` made absolute without touching the file system (the files may not exist yet).
fn normal(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// `usage.json` beside the cache, else beside a local key file; an S3 store without a cache has
/// no state directory.
fn default_path(store: &StoreUrl, cache: Option<&Path>) -> Option<PathBuf> {
    let beside = match (cache, store) {
        (Some(cache), _) => cache,
        (None, StoreUrl::File { path }) => path.as_path(),
        (None, StoreUrl::S3 { .. }) => return None,
    };
    Some(beside.with_file_name("usage.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_prefixes() {
        let parsed: ReportPrefix = "s3://b/fleet/usage".parse().unwrap();
        assert_eq!(parsed.bucket, "b");
        assert_eq!(parsed.prefix, "fleet/usage/");
        assert_eq!(parsed.to_string(), "s3://b/fleet/usage/");
        let bare: ReportPrefix = "s3://b".parse().unwrap();
        assert_eq!(bare.prefix, "");
        assert!("s3:///x".parse::<ReportPrefix>().is_err());
        assert!("file:///x".parse::<ReportPrefix>().is_err());
    }

    #[test]
    fn the_usage_file_is_never_the_key_file_or_the_cache() {
        let store: StoreUrl = "file:///srv/usage.json".parse().unwrap();
        let taken = taken_paths(&store, Some(Path::new("/srv/keys.cache")));
        assert!(taken.contains(&PathBuf::from("/srv/usage.json")));
        assert!(taken.contains(&PathBuf::from("/srv/usage.json.generation")));
        assert!(taken.contains(&PathBuf::from("/srv/keys.cache")));
        assert!(taken.contains(&PathBuf::from("/srv/usage.json.lock")));
        assert_eq!(
            normal(Path::new("/srv/./usage.json")),
            PathBuf::from("/srv/usage.json")
        );
    }

    #[test]
    fn the_default_state_file_sits_beside_the_cache_or_the_key_file() {
        let file: StoreUrl = "file:///var/lib/heare-auth/keys.json".parse().unwrap();
        assert_eq!(
            default_path(&file, None),
            Some(PathBuf::from("/var/lib/heare-auth/usage.json"))
        );
        let s3: StoreUrl = "s3://b/keys.json".parse().unwrap();
        assert_eq!(default_path(&s3, None), None);
        assert_eq!(
            default_path(&s3, Some(Path::new("/x/keys.cache"))),
            Some(PathBuf::from("/x/usage.json"))
        );
    }
}
