//! The daemon's settings: one TOML file, the Python service's environment variables, and flags.
//!
//! Precedence is flags > environment > file > defaults. The file rejects keys it does not know
//! (a typo must not silently fall back to a default). The resolved [`Config`] is plain data; this
//! module reads the storage secret from where it is configured but never prints it.

use crate::cli::Cli;
use crate::codec::StorageSecret;
use crate::duration;
use crate::store::{S3Options, StoreUrl};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where the configuration file is looked for when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/heare-auth/heare-authd.toml";
/// The store when nothing is configured: a local key file in the state directory.
pub const DEFAULT_STORE: &str = "file:///var/lib/heare-auth/keys.json";
/// The last-known-good cache of an S3 store, in the state directory.
pub const DEFAULT_CACHE_PATH: &str = "/var/lib/heare-auth/keys.cache";

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per line on stdout, with the Python service's event names (under systemd,
    /// each line is a journal entry).
    Json,
    /// Structured entries sent to the systemd journal's socket, one datagram per event, from the
    /// thread that logs.
    Journald,
    /// Human-readable lines on stdout.
    Text,
}

impl std::str::FromStr for LogFormat {
    type Err = ConfigError;
    fn from_str(text: &str) -> Result<Self, ConfigError> {
        match text {
            "json" => Ok(LogFormat::Json),
            "journald" => Ok(LogFormat::Journald),
            "text" => Ok(LogFormat::Text),
            other => Err(ConfigError::Invalid {
                setting: "log_format",
                why: format!("{other:?} is not json, journald or text"),
            }),
        }
    }
}

/// A configuration that cannot be used, and what to fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting {setting}: {why}")]
    Invalid { setting: &'static str, why: String },
}

/// A duration written as `30s`/`5m` or as a number of seconds.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum DurationSetting {
    Seconds(u64),
    Text(String),
}

/// Socket permissions written as `"0660"` or as TOML's `0o660`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum ModeSetting {
    Number(u32),
    Text(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3Section {
    region: Option<String>,
    endpoint: Option<String>,
    path_style: Option<bool>,
    timeout: Option<DurationSetting>,
}

/// The configuration file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    store: Option<String>,
    socket: Option<PathBuf>,
    socket_mode: Option<ModeSetting>,
    socket_group: Option<String>,
    admin_group: Option<String>,
    listen_tcp: Option<String>,
    tcp_admin_from_loopback: Option<bool>,
    cache_path: Option<String>,
    refresh_interval: Option<DurationSetting>,
    max_stale: Option<DurationSetting>,
    storage_secret: Option<String>,
    storage_secret_file: Option<PathBuf>,
    log_format: Option<LogFormat>,
    log_level: Option<String>,
    max_connections: Option<usize>,
    max_connections_per_uid: Option<usize>,
    max_connections_per_address: Option<usize>,
    worker_threads: Option<usize>,
    header_read_timeout: Option<DurationSetting>,
    idle_timeout: Option<DurationSetting>,
    write_timeout: Option<DurationSetting>,
    max_store_bytes: Option<u64>,
    s3: Option<S3Section>,
}

/// Everything the daemon needs to run, resolved and validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreUrl,
    pub socket: PathBuf,
    pub socket_mode: u32,
    /// Group of the socket file; `None` keeps the daemon's own group.
    pub socket_group: Option<String>,
    /// Members of this group may call /refresh and /status on the socket.
    pub admin_group: Option<String>,
    pub listen_tcp: Option<SocketAddr>,
    /// Whether admin calls are allowed on TCP from loopback peers (off by default).
    pub tcp_admin_from_loopback: bool,
    pub cache_path: Option<PathBuf>,
    pub refresh_interval: Option<Duration>,
    pub max_stale: Option<Duration>,
    pub storage_secret: Option<StorageSecret>,
    pub log_format: LogFormat,
    pub log_level: String,
    pub max_connections: usize,
    /// Connections one uid may hold on the Unix socket; `None`: a quarter of the limit.
    pub max_connections_per_uid: Option<usize>,
    /// Connections one TCP address (IPv6: one /64) may hold; `None`: a quarter of the limit.
    pub max_connections_per_address: Option<usize>,
    /// Threads serving requests; `None`: one per CPU.
    pub worker_threads: Option<usize>,
    /// A request's headers must arrive within this (`None`: no limit).
    pub header_read_timeout: Option<Duration>,
    /// Connections with no request for this long are closed (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// A connection whose answer makes no write progress for this long is closed (`None`: never).
    pub write_timeout: Option<Duration>,
    pub max_store_bytes: u64,
    pub s3: S3Options,
}

impl Config {
    /// Resolves the configuration from the command line, the process environment and the file.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = read_file(cli.config.as_deref())?;
        Config::resolve(cli, &|name| std::env::var(name).ok(), file)
    }

    fn resolve(
        cli: &Cli,
        env: &dyn Fn(&str) -> Option<String>,
        file: FileConfig,
    ) -> Result<Config, ConfigError> {
        let env_store = env("S3_BUCKET").filter(|b| !b.is_empty()).map(|bucket| {
            let key = env("S3_KEY").filter(|k| !k.is_empty());
            StoreUrl::s3(&bucket, key.as_deref().unwrap_or("keys.json")).to_string()
        });
        let store_text = cli
            .store
            .clone()
            .or(env_store)
            .or(file.store)
            .unwrap_or_else(|| DEFAULT_STORE.to_string());
        let store: StoreUrl = store_text
            .parse()
            .map_err(|e: crate::store::StoreUrlError| ConfigError::Invalid {
                setting: "store",
                why: e.to_string(),
            })?;

        let socket_mode = match (&cli.socket_mode, file.socket_mode) {
            (Some(text), _) => parse_mode(text)?,
            (None, Some(ModeSetting::Text(text))) => parse_mode(&text)?,
            (None, Some(ModeSetting::Number(mode))) => check_mode(mode)?,
            (None, None) => 0o660,
        };

        let listen_tcp = match cli.listen_tcp.clone().or(file.listen_tcp) {
            None => None,
            Some(text) if text.is_empty() => None,
            Some(text) => Some(text.parse().map_err(|_| ConfigError::Invalid {
                setting: "listen_tcp",
                why: format!("{text:?} is not an address like 127.0.0.1:8080"),
            })?),
        };

        let cache_path = match cli.cache.clone().or(file.cache_path) {
            Some(text) if text.is_empty() || text == "none" => None,
            Some(text) => Some(PathBuf::from(text)),
            // A local file needs no cache of itself; S3 does.
            None => match store {
                StoreUrl::S3 { .. } => Some(PathBuf::from(DEFAULT_CACHE_PATH)),
                StoreUrl::File { .. } => None,
            },
        };

        let refresh_interval = match &cli.refresh_interval {
            Some(text) => Some(parse_duration("refresh_interval", text)?),
            None => file
                .refresh_interval
                .map(|d| duration_setting("refresh_interval", d))
                .transpose()?,
        }
        .filter(|d| !d.is_zero());
        let max_stale = match &cli.max_stale {
            Some(text) => Some(parse_duration("max_stale", text)?),
            None => file
                .max_stale
                .map(|d| duration_setting("max_stale", d))
                .transpose()?,
        }
        .filter(|d| !d.is_zero());

        let storage_secret = match env("STORAGE_SECRET").filter(|s| !s.is_empty()) {
            Some(secret) => Some(StorageSecret::new(secret)),
            None => match (file.storage_secret, file.storage_secret_file) {
                (Some(_), Some(_)) => {
                    return Err(ConfigError::Invalid {
                        setting: "storage_secret",
                        why: "set storage_secret or storage_secret_file, not both".into(),
                    });
                }
                (Some(secret), None) => Some(StorageSecret::new(secret)),
                (None, Some(path)) => Some(read_secret_file(&path)?),
                (None, None) => credential_secret(env)?,
            },
        };

        let log_format = match &cli.log_format {
            Some(text) => text.parse()?,
            None => file.log_format.unwrap_or(LogFormat::Json),
        };

        let s3_file = file.s3.unwrap_or_default();
        let s3 = S3Options {
            region: cli
                .s3_region
                .clone()
                .or_else(|| env("S3_REGION").filter(|r| !r.is_empty()))
                .or(s3_file.region),
            endpoint: cli.s3_endpoint.clone().or(s3_file.endpoint),
            path_style: cli.s3_path_style || s3_file.path_style.unwrap_or(false),
            timeout: s3_file
                .timeout
                .map(|d| duration_setting("s3.timeout", d))
                .transpose()?
                .unwrap_or(Duration::from_secs(10)),
        };

        let max_connections =
            at_least_one("max_connections", file.max_connections)?.unwrap_or(1024);
        let max_connections_per_uid =
            at_least_one("max_connections_per_uid", file.max_connections_per_uid)?;
        let max_connections_per_address = at_least_one(
            "max_connections_per_address",
            file.max_connections_per_address,
        )?;

        Ok(Config {
            store,
            socket: cli
                .socket
                .clone()
                .or(file.socket)
                .unwrap_or_else(|| PathBuf::from(heare_auth_client::DEFAULT_SOCKET_PATH)),
            socket_mode,
            socket_group: cli.socket_group.clone().or(file.socket_group),
            admin_group: cli.admin_group.clone().or(file.admin_group),
            listen_tcp,
            tcp_admin_from_loopback: file.tcp_admin_from_loopback.unwrap_or(false),
            cache_path,
            refresh_interval,
            max_stale,
            storage_secret,
            log_format,
            log_level: cli
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_string()),
            max_connections,
            max_connections_per_uid,
            max_connections_per_address,
            worker_threads: file.worker_threads.filter(|n| *n > 0),
            header_read_timeout: file
                .header_read_timeout
                .map(|d| duration_setting("header_read_timeout", d))
                .transpose()?
                .or(Some(Duration::from_secs(10)))
                .filter(|d| !d.is_zero()),
            idle_timeout: file
                .idle_timeout
                .map(|d| duration_setting("idle_timeout", d))
                .transpose()?
                .or(Some(Duration::from_secs(60)))
                .filter(|d| !d.is_zero()),
            write_timeout: file
                .write_timeout
                .map(|d| duration_setting("write_timeout", d))
                .transpose()?
                .or(Some(Duration::from_secs(10)))
                .filter(|d| !d.is_zero()),
            max_store_bytes: file.max_store_bytes.unwrap_or(1 << 30),
            s3,
        })
    }
}

impl Config {
    /// The admin group's gid, looked up once (at start): admin rights are then decided from the
    /// peer's kernel credentials alone, with no group database lookup per request.
    pub fn admin_gid(&self) -> Result<Option<u32>, ConfigError> {
        let Some(name) = &self.admin_group else {
            return Ok(None);
        };
        match nix::unistd::Group::from_name(name) {
            Ok(Some(group)) => Ok(Some(group.gid.as_raw())),
            Ok(None) => Err(ConfigError::Invalid {
                setting: "admin_group",
                why: format!("group {name:?} does not exist"),
            }),
            Err(error) => Err(ConfigError::Invalid {
                setting: "admin_group",
                why: format!("cannot look up group {name:?}: {error}"),
            }),
        }
    }

    /// Checks what the configuration names on this system: groups exist, the storage secret is
    /// readable (already read by `load`), the cache directory exists.
    pub fn check_system(&self) -> Result<(), ConfigError> {
        for (setting, group) in [
            ("socket_group", &self.socket_group),
            ("admin_group", &self.admin_group),
        ] {
            if let Some(name) = group
                && !matches!(nix::unistd::Group::from_name(name), Ok(Some(_)))
            {
                return Err(ConfigError::Invalid {
                    setting,
                    why: format!("group {name:?} does not exist"),
                });
            }
        }
        if let Some(dir) = self.cache_path.as_deref().and_then(Path::parent)
            && !dir.as_os_str().is_empty()
            && !dir.is_dir()
        {
            return Err(ConfigError::Invalid {
                setting: "cache_path",
                why: format!("directory {} does not exist", dir.display()),
            });
        }
        Ok(())
    }

    /// The resolved settings, one per line, as `--check-config` prints them (no secret).
    pub fn describe(&self) -> String {
        let or_none = |value: Option<String>| value.unwrap_or_else(|| "(none)".to_string());
        let seconds = |d: Option<Duration>| or_none(d.map(|d| format!("{}s", d.as_secs_f64())));
        [
            format!("store = {}", self.store),
            format!("socket = {}", self.socket.display()),
            format!("socket_mode = {:04o}", self.socket_mode),
            format!("socket_group = {}", or_none(self.socket_group.clone())),
            format!("admin_group = {}", or_none(self.admin_group.clone())),
            format!(
                "listen_tcp = {}",
                or_none(self.listen_tcp.map(|a| a.to_string()))
            ),
            format!("tcp_admin_from_loopback = {}", self.tcp_admin_from_loopback),
            format!(
                "cache_path = {}",
                or_none(self.cache_path.as_ref().map(|p| p.display().to_string()))
            ),
            format!("refresh_interval = {}", seconds(self.refresh_interval)),
            format!("max_stale = {}", seconds(self.max_stale)),
            format!(
                "storage_secret = {}",
                if self.storage_secret.is_some() {
                    "(set)"
                } else {
                    "(none)"
                }
            ),
            format!(
                "log_format = {}",
                format!("{:?}", self.log_format).to_lowercase()
            ),
            format!("log_level = {}", self.log_level),
            format!("max_connections = {}", self.max_connections),
            format!(
                "max_connections_per_uid = {}",
                or_none(self.max_connections_per_uid.map(|n| n.to_string()))
            ),
            format!(
                "max_connections_per_address = {}",
                or_none(self.max_connections_per_address.map(|n| n.to_string()))
            ),
            format!(
                "worker_threads = {}",
                or_none(self.worker_threads.map(|n| n.to_string()))
            ),
            format!(
                "header_read_timeout = {}",
                seconds(self.header_read_timeout)
            ),
            format!("idle_timeout = {}", seconds(self.idle_timeout)),
            format!("write_timeout = {}", seconds(self.write_timeout)),
            format!("max_store_bytes = {}", self.max_store_bytes),
            format!("s3.region = {}", or_none(self.s3.region.clone())),
            format!("s3.endpoint = {}", or_none(self.s3.endpoint.clone())),
            format!("s3.path_style = {}", self.s3.path_style),
            format!("s3.timeout = {}s", self.s3.timeout.as_secs_f64()),
        ]
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()
    }
}

fn read_file(explicit: Option<&Path>) -> Result<FileConfig, ConfigError> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_CONFIG_PATH));
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if explicit.is_none() && error.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileConfig::default());
        }
        Err(source) => {
            return Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.to_path_buf(),
        message,
    })
}

/// Settings whose values are secrets: no error ever quotes them, whatever their TOML type.
const SECRET_SETTINGS: [&str; 1] = ["storage_secret"];

fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|error| describe_parse_error(text, &error))
}

/// toml's message for `error`, located by line. Its full text quotes the offending line and its
/// message can quote the value (`invalid type: integer `98765…``), so only the message's first
/// line is kept, and an error on a secret setting's line gets a fixed text instead.
fn describe_parse_error(text: &str, error: &toml::de::Error) -> String {
    let Some(span) = error.span() else {
        return error
            .message()
            .lines()
            .next()
            .unwrap_or_default()
            .to_string();
    };
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let line_text = text.lines().nth(line - 1).unwrap_or_default();
    match secret_setting_on(line_text) {
        Some(setting) => {
            format!("{setting} must be a string (line {line}; its value is not shown)")
        }
        None => format!(
            "{} (line {line})",
            error.message().lines().next().unwrap_or_default()
        ),
    }
}

/// The secret setting a TOML line assigns, if any (`storage_secret = …`, also quoted or dotted).
fn secret_setting_on(line: &str) -> Option<&'static str> {
    let (key, _) = line.split_once('=')?;
    let last = key.rsplit('.').next().unwrap_or(key);
    let name = last.trim().trim_matches(|c| c == '"' || c == '\'');
    SECRET_SETTINGS.into_iter().find(|secret| *secret == name)
}

fn read_secret_file(path: &Path) -> Result<StorageSecret, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let secret = text.trim_end_matches(['\n', '\r']);
    if secret.is_empty() {
        return Err(ConfigError::Invalid {
            setting: "storage_secret_file",
            why: format!("{} is empty", path.display()),
        });
    }
    Ok(StorageSecret::new(secret))
}

/// systemd's `LoadCredential=storage_secret:…` puts the secret in `$CREDENTIALS_DIRECTORY`.
fn credential_secret(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<StorageSecret>, ConfigError> {
    let Some(dir) = env("CREDENTIALS_DIRECTORY") else {
        return Ok(None);
    };
    let path = Path::new(&dir).join("storage_secret");
    if !path.exists() {
        return Ok(None);
    }
    read_secret_file(&path).map(Some)
}

/// A count that must be at least 1 when set.
fn at_least_one(setting: &'static str, value: Option<usize>) -> Result<Option<usize>, ConfigError> {
    match value {
        Some(0) => Err(ConfigError::Invalid {
            setting,
            why: "must be at least 1".into(),
        }),
        other => Ok(other),
    }
}

fn parse_mode(text: &str) -> Result<u32, ConfigError> {
    let digits = text.trim().trim_start_matches("0o");
    let mode = u32::from_str_radix(digits, 8).map_err(|_| ConfigError::Invalid {
        setting: "socket_mode",
        why: format!("{text:?} is not an octal mode like 0660"),
    })?;
    check_mode(mode)
}

fn check_mode(mode: u32) -> Result<u32, ConfigError> {
    if mode > 0o777 {
        return Err(ConfigError::Invalid {
            setting: "socket_mode",
            why: format!("{mode:o} has bits beyond 0777"),
        });
    }
    if mode & 0o600 != 0o600 {
        return Err(ConfigError::Invalid {
            setting: "socket_mode",
            why: format!("{mode:04o} denies the daemon's own user; use e.g. 0660"),
        });
    }
    Ok(mode)
}

fn parse_duration(setting: &'static str, text: &str) -> Result<Duration, ConfigError> {
    duration::parse(text).map_err(|e| ConfigError::Invalid {
        setting,
        why: e.to_string(),
    })
}

fn duration_setting(
    setting: &'static str,
    value: DurationSetting,
) -> Result<Duration, ConfigError> {
    match value {
        DurationSetting::Seconds(secs) => Ok(Duration::from_secs(secs)),
        DurationSetting::Text(text) => parse_duration(setting, &text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn resolve(cli: Cli, env: &[(&str, &str)], file: &str) -> Result<Config, ConfigError> {
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let file = parse_file(file).map_err(|message| ConfigError::Parse {
            path: "test.toml".into(),
            message,
        })?;
        Config::resolve(&cli, &|name| env.get(name).cloned(), file)
    }

    #[test]
    fn defaults_are_a_local_file_store_and_the_system_socket() {
        let config = resolve(Cli::default(), &[], "").unwrap();
        assert_eq!(config.store.to_string(), DEFAULT_STORE);
        assert_eq!(config.socket, Path::new("/run/heare-auth/heare-authd.sock"));
        assert_eq!(config.socket_mode, 0o660);
        assert_eq!(config.cache_path, None);
        assert_eq!(config.listen_tcp, None);
        assert_eq!(config.refresh_interval, None);
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let file = "store = \"s3://file-bucket/k.json\"\nsocket_mode = 0o640\n";
        let config = resolve(Cli::default(), &[], file).unwrap();
        assert_eq!(config.store.to_string(), "s3://file-bucket/k.json");
        assert_eq!(config.socket_mode, 0o640);
        assert_eq!(config.cache_path, Some(PathBuf::from(DEFAULT_CACHE_PATH)));

        let env = [("S3_BUCKET", "env-bucket")];
        let config = resolve(Cli::default(), &env, file).unwrap();
        assert_eq!(config.store.to_string(), "s3://env-bucket/keys.json");

        let cli = Cli {
            store: Some("file:///tmp/k.json".into()),
            socket_mode: Some("0600".into()),
            ..Cli::default()
        };
        let config = resolve(cli, &env, file).unwrap();
        assert_eq!(config.store.to_string(), "file:///tmp/k.json");
        assert_eq!(config.socket_mode, 0o600);
    }

    #[test]
    fn python_environment_names_work() {
        let env = [
            ("S3_BUCKET", "b"),
            ("S3_KEY", "prod/keys.json"),
            ("S3_REGION", "eu-west-1"),
            ("STORAGE_SECRET", "s3cret"),
        ];
        let config = resolve(Cli::default(), &env, "").unwrap();
        assert_eq!(config.store.to_string(), "s3://b/prod/keys.json");
        assert_eq!(config.s3.region.as_deref(), Some("eu-west-1"));
        assert!(config.storage_secret.is_some());
    }

    #[test]
    fn unknown_keys_and_bad_values_are_errors_that_hide_secrets() {
        let error = resolve(Cli::default(), &[], "sokcet = \"/x\"\n").unwrap_err();
        assert!(error.to_string().contains("sokcet"), "{error}");
        let error = resolve(Cli::default(), &[], "storage_secret = 5\n").unwrap_err();
        assert!(error.to_string().contains("line 1"), "{error}");
        for value in [
            "98765432123456789",
            "1.5e300",
            "true",
            "[\"hunter2\"]",
            "{ a = \"hunter2\" }",
            "2024-01-01T00:00:00Z",
            "\"hunter2",
        ] {
            for key in ["storage_secret", "\"storage_secret\""] {
                let text = format!("log_level = \"info\"\n{key} = {value}\n");
                let error = resolve(Cli::default(), &[], &text).unwrap_err().to_string();
                assert!(
                    error.contains("storage_secret") && error.contains("line 2"),
                    "{error}"
                );
                for part in [
                    "98765432123456789",
                    "hunter2",
                    "1500000",
                    "2024-01-01",
                    "true",
                ] {
                    assert!(!error.contains(part), "{value}: {error}");
                }
            }
        }
        let error = resolve(
            Cli::default(),
            &[],
            "storage_secret = \"hunter2\"\nbogus = 1\n",
        )
        .unwrap_err();
        assert!(!error.to_string().contains("hunter2"), "{error}");
        assert!(resolve(Cli::default(), &[], "socket_mode = \"0999\"").is_err());
        assert!(resolve(Cli::default(), &[], "socket_mode = \"0066\"").is_err());
        assert!(resolve(Cli::default(), &[], "listen_tcp = \"localhost\"").is_err());
        assert!(resolve(Cli::default(), &[], "refresh_interval = \"soon\"").is_err());
        assert!(resolve(Cli::default(), &[], "store = \"ftp://x/y\"").is_err());
    }

    #[test]
    fn durations_and_cache_can_be_written_both_ways() {
        let config = resolve(
            Cli::default(),
            &[],
            "refresh_interval = 30\nmax_stale = \"1h\"\ncache_path = \"none\"\n[s3]\ntimeout = \"2s\"\npath_style = true\n",
        )
        .unwrap();
        assert_eq!(config.refresh_interval, Some(Duration::from_secs(30)));
        assert_eq!(config.max_stale, Some(Duration::from_secs(3600)));
        assert_eq!(config.cache_path, None);
        assert_eq!(config.s3.timeout, Duration::from_secs(2));
        assert!(config.s3.path_style);
    }

    #[test]
    fn storage_secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "abc\n").unwrap();
        let file = format!("storage_secret_file = {:?}\n", path.display().to_string());
        let config = resolve(Cli::default(), &[], &file).unwrap();
        let secret = config.storage_secret.unwrap();
        let body = crate::codec::encode_encrypted(b"{}", &StorageSecret::new("abc"));
        assert!(crate::codec::decode(&body, Some(&secret)).is_ok());
    }
}
