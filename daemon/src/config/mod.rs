//! The daemon's settings: one TOML file ([`file`]), the Python service's environment variables,
//! and flags, resolved per group of settings ([`resolve`]).
//!
//! Precedence is flags > environment > file > defaults. The resolved [`Config`] is plain data,
//! grouped as the daemon uses it: where keys come from ([`StoreSettings`]), where it listens and
//! who may do what ([`ListenSettings`]), connection limits and timeouts
//! ([`ConnectionSettings`]), and the log ([`LogSettings`]). This module reads the storage secret
//! from where it is configured but never prints it.

mod file;
mod forward_auth;
mod freshness;
mod rate_limit;
mod redis_endpoint;
mod resolve;
mod secret_file;
mod stats;
pub mod store_endpoint;
mod usage;

pub use forward_auth::ForwardAuthSettings;
pub use freshness::NotifyQueue;
pub use rate_limit::{FleetSettings, OnBackendError, RateLimitSettings, without_credentials};
pub use stats::{StatsProtocol, StatsSecret, StatsSettings};
pub use usage::{ReportPrefix, UsageSettings};

use crate::cli::Cli;
use crate::schedule::Jitter;
use heare_auth_store::codec::StorageSecret;
use heare_auth_store::{S3Options, StoreUrl};
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
    #[error("the configuration file cannot be used: {0}")]
    Read(heare_auth_store::safe_file::SafeFileError),
    #[error("setting {setting}: {source}")]
    SecretFile {
        setting: &'static str,
        source: heare_auth_store::safe_file::SafeFileError,
    },
    #[error("the configuration file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting {setting}: {why}")]
    Invalid { setting: &'static str, why: String },
}

/// Where keys come from, and how they are kept fresh.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    pub url: StoreUrl,
    /// The last-known-good cache; `None` for none.
    pub cache_path: Option<PathBuf>,
    /// Poll the store this often; `None`: no polling.
    pub refresh_interval: Option<Duration>,
    /// How much each poll wait varies around `refresh_interval`.
    pub refresh_jitter: Jitter,
    /// The SQS queue of the store object's change notifications; `None`: none.
    pub notify_queue: Option<NotifyQueue>,
    /// Watch a file store's key file and reload when it changes (ignored for S3).
    pub watch_store: bool,
    /// Stop verifying once the set has gone unconfirmed this long; `None`: never.
    pub max_stale: Option<Duration>,
    pub storage_secret: Option<StorageSecret>,
    /// Larger key files are refused.
    pub max_store_bytes: u64,
    pub s3: S3Options,
}

/// Where the daemon listens, and who may do what there.
#[derive(Debug, Clone)]
pub struct ListenSettings {
    pub socket: PathBuf,
    pub socket_mode: u32,
    /// Group of the socket file; `None` keeps the daemon's own group.
    pub socket_group: Option<String>,
    /// Processes holding this group may call /refresh and /status on the socket.
    pub admin_group: Option<String>,
    pub listen_tcp: Option<SocketAddr>,
    /// A TCP listener serving only `/metrics` (to anyone who can connect) and `/health`.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether admin calls are allowed on TCP from loopback peers (off by default).
    pub tcp_admin_from_loopback: bool,
}

/// How many connections, served by how many threads, closed when.
#[derive(Debug, Clone)]
pub struct ConnectionSettings {
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
}

/// The log.
#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A level or a tracing filter.
    pub level: String,
}

/// Everything the daemon needs to run, resolved and validated.
#[derive(Debug, Clone)]
pub struct Config {
    pub store: StoreSettings,
    pub listen: ListenSettings,
    pub connections: ConnectionSettings,
    pub log: LogSettings,
    /// The stats push to a heare-stats collector; `None`: off.
    pub stats: Option<StatsSettings>,
    /// Per-key usage: the state file and the fleet report.
    pub usage: UsageSettings,
    /// How `/auth` reads keys and answers identities.
    pub forward_auth: ForwardAuthSettings,
    /// How keys are rate limited.
    pub rate_limit: RateLimitSettings,
}

impl Config {
    /// Resolves the configuration from the command line (flags, and the environment variables
    /// clap reads for them), the storage secret's environment, and the file.
    pub fn load(cli: &Cli) -> Result<Config, ConfigError> {
        let file = file::read_file(cli.config.as_deref(), Path::new(DEFAULT_CONFIG_PATH))?;
        Config::resolve(cli, &|name| std::env::var(name).ok(), &file)
    }

    fn resolve(
        cli: &Cli,
        env: &dyn Fn(&str) -> Option<String>,
        file: &file::FileConfig,
    ) -> Result<Config, ConfigError> {
        let store = resolve::store(cli, env, file)?;
        let usage = usage::resolve(cli, file, &store.url, store.cache_path.as_deref())?;
        let rate_limit = rate_limit::resolve(file.rate_limit.as_ref(), &store.url)?;
        Ok(Config {
            store,
            usage,
            listen: resolve::listen(cli, file)?,
            connections: resolve::connections(cli, file)?,
            log: resolve::log(cli, file)?,
            stats: stats::resolve(env, file)?,
            forward_auth: forward_auth::resolve(file.forward_auth.as_ref())?,
            rate_limit,
        })
    }

    /// The admin group's gid, looked up once (at start): admin rights are then decided from the
    /// peer's kernel credentials alone, with no group database lookup per request.
    pub fn admin_gid(&self) -> Result<Option<u32>, ConfigError> {
        let Some(name) = &self.listen.admin_group else {
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
            ("socket_group", &self.listen.socket_group),
            ("admin_group", &self.listen.admin_group),
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
        if let Some(dir) = self.store.cache_path.as_deref().and_then(Path::parent)
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
        [
            self.store.describe(),
            self.listen.describe(),
            self.connections.describe(),
            self.log.describe(),
            StatsSettings::describe(self.stats.as_ref()),
            self.usage.describe(),
            self.forward_auth.describe(),
            self.rate_limit.describe(),
        ]
        .concat()
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()
    }
}

fn or_none(value: Option<String>) -> String {
    value.unwrap_or_else(|| "(none)".to_string())
}

fn seconds(value: Option<Duration>) -> String {
    or_none(value.map(|d| format!("{}s", d.as_secs_f64())))
}

impl StoreSettings {
    fn describe(&self) -> Vec<String> {
        let secret = if self.storage_secret.is_some() {
            "(set)"
        } else {
            "(none)"
        };
        vec![
            format!("store = {}", self.url),
            format!(
                "cache_path = {}",
                or_none(self.cache_path.as_ref().map(|p| p.display().to_string()))
            ),
            format!("refresh_interval = {}", seconds(self.refresh_interval)),
            format!(
                "refresh_jitter = {}%",
                self.refresh_jitter.fraction() * 100.0
            ),
            format!(
                "notify_queue = {}",
                or_none(self.notify_queue.as_ref().map(|q| q.url.clone()))
            ),
            format!("watch_store = {}", self.watch_store),
            format!("max_stale = {}", seconds(self.max_stale)),
            format!("storage_secret = {secret}"),
            format!("max_store_bytes = {}", self.max_store_bytes),
            format!("s3.region = {}", or_none(self.s3.region.clone())),
            format!("s3.endpoint = {}", or_none(self.s3.endpoint.clone())),
            format!("s3.path_style = {}", self.s3.path_style),
            format!("s3.timeout = {}s", self.s3.timeout.as_secs_f64()),
        ]
    }
}

impl ListenSettings {
    fn describe(&self) -> Vec<String> {
        vec![
            format!("socket = {}", self.socket.display()),
            format!("socket_mode = {:04o}", self.socket_mode),
            format!("socket_group = {}", or_none(self.socket_group.clone())),
            format!("admin_group = {}", or_none(self.admin_group.clone())),
            format!(
                "listen_tcp = {}",
                or_none(self.listen_tcp.map(|a| a.to_string()))
            ),
            format!(
                "metrics_listen = {}",
                or_none(self.metrics_listen.map(|a| a.to_string()))
            ),
            format!("tcp_admin_from_loopback = {}", self.tcp_admin_from_loopback),
        ]
    }
}

impl ConnectionSettings {
    fn describe(&self) -> Vec<String> {
        let count = |n: Option<usize>| or_none(n.map(|n| n.to_string()));
        vec![
            format!("max_connections = {}", self.max_connections),
            format!(
                "max_connections_per_uid = {}",
                count(self.max_connections_per_uid)
            ),
            format!(
                "max_connections_per_address = {}",
                count(self.max_connections_per_address)
            ),
            format!("worker_threads = {}", count(self.worker_threads)),
            format!(
                "header_read_timeout = {}",
                seconds(self.header_read_timeout)
            ),
            format!("idle_timeout = {}", seconds(self.idle_timeout)),
            format!("write_timeout = {}", seconds(self.write_timeout)),
        ]
    }
}

impl LogSettings {
    fn describe(&self) -> Vec<String> {
        vec![
            format!(
                "log_format = {}",
                format!("{:?}", self.format).to_lowercase()
            ),
            format!("log_level = {}", self.level),
        ]
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
        let file = file::parse_file(file).map_err(|message| ConfigError::Parse {
            path: "test.toml".into(),
            message,
        })?;
        Config::resolve(&cli, &|name| env.get(name).cloned(), &file)
    }

    /// The command line as clap parses it, environment variables with a flag included.
    fn cli(args: &[&str], env: &[(&str, &str)]) -> Cli {
        use clap::Parser;
        let mut cli =
            Cli::try_parse_from(std::iter::once("heare-authd").chain(args.iter().copied()))
                .unwrap();
        // What clap's `env` attribute does, without changing this process's environment.
        for (name, value) in env {
            let slot = match *name {
                "S3_BUCKET" => &mut cli.s3_bucket,
                "S3_KEY" => &mut cli.s3_key,
                "S3_REGION" => &mut cli.s3_region,
                _ => continue,
            };
            slot.get_or_insert_with(|| value.to_string());
        }
        cli
    }

    #[test]
    fn defaults_are_a_local_file_store_and_the_system_socket() {
        let config = resolve(Cli::default(), &[], "").unwrap();
        assert_eq!(config.store.url.to_string(), DEFAULT_STORE);
        assert_eq!(
            config.listen.socket,
            Path::new("/run/heare-auth/heare-authd.sock")
        );
        assert_eq!(config.listen.socket_mode, 0o660);
        assert_eq!(config.store.cache_path, None);
        assert_eq!(config.listen.listen_tcp, None);
        assert_eq!(config.store.refresh_interval, None);
        assert_eq!(
            config.connections.write_timeout,
            Some(Duration::from_secs(10))
        );
    }

    #[test]
    fn flags_beat_environment_beat_file() {
        let file = "store = \"s3://file-bucket/k.json\"\nsocket_mode = 0o640\n";
        let config = resolve(Cli::default(), &[], file).unwrap();
        assert_eq!(config.store.url.to_string(), "s3://file-bucket/k.json");
        assert_eq!(config.listen.socket_mode, 0o640);
        assert_eq!(
            config.store.cache_path,
            Some(PathBuf::from(DEFAULT_CACHE_PATH))
        );

        let env = [("S3_BUCKET", "env-bucket")];
        let config = resolve(cli(&[], &env), &[], file).unwrap();
        assert_eq!(config.store.url.to_string(), "s3://env-bucket/keys.json");

        let flags = cli(
            &["--store", "file:///tmp/k.json", "--socket-mode", "0600"],
            &env,
        );
        let config = resolve(flags, &[], file).unwrap();
        assert_eq!(config.store.url.to_string(), "file:///tmp/k.json");
        assert_eq!(config.listen.socket_mode, 0o600);
    }

    #[test]
    fn python_environment_names_work() {
        let env = [
            ("S3_BUCKET", "b"),
            ("S3_KEY", "prod/keys.json"),
            ("S3_REGION", "eu-west-1"),
        ];
        let config = resolve(cli(&[], &env), &[("STORAGE_SECRET", "s3cret")], "").unwrap();
        assert_eq!(config.store.url.to_string(), "s3://b/prod/keys.json");
        assert_eq!(config.store.s3.region.as_deref(), Some("eu-west-1"));
        assert!(config.store.storage_secret.is_some());
    }

    #[test]
    fn settings_once_file_only_have_flags_that_win() {
        let file = "max_connections = 64\nwrite_timeout = \"5s\"\nidle_timeout = 30\n[s3]\ntimeout = \"3s\"\n";
        let config = resolve(Cli::default(), &[], file).unwrap();
        assert_eq!(config.connections.max_connections, 64);
        assert_eq!(
            config.connections.write_timeout,
            Some(Duration::from_secs(5))
        );
        let flags = cli(
            &[
                "--max-connections",
                "32",
                "--max-connections-per-uid",
                "8",
                "--write-timeout",
                "0",
                "--idle-timeout",
                "2m",
                "--header-read-timeout",
                "3s",
                "--worker-threads",
                "2",
                "--max-store-bytes",
                "1048576",
                "--s3-timeout",
                "4s",
                "--tcp-admin-from-loopback",
            ],
            &[],
        );
        let config = resolve(flags, &[], file).unwrap();
        let connections = &config.connections;
        assert_eq!(connections.max_connections, 32);
        assert_eq!(connections.max_connections_per_uid, Some(8));
        assert_eq!(connections.write_timeout, None, "0 turns it off");
        assert_eq!(connections.idle_timeout, Some(Duration::from_secs(120)));
        assert_eq!(
            connections.header_read_timeout,
            Some(Duration::from_secs(3))
        );
        assert_eq!(connections.worker_threads, Some(2));
        assert_eq!(config.store.max_store_bytes, 1 << 20);
        assert_eq!(config.store.s3.timeout, Duration::from_secs(4));
        assert!(config.listen.tcp_admin_from_loopback);
        let zero = cli(&["--max-connections-per-address", "0"], &[]);
        assert!(resolve(zero, &[], "").is_err());
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
    fn watch_store_is_on_by_default_and_a_flag_beats_the_file() {
        assert!(resolve(Cli::default(), &[], "").unwrap().store.watch_store);
        let file = "watch_store = false\n";
        assert!(
            !resolve(Cli::default(), &[], file)
                .unwrap()
                .store
                .watch_store
        );
        let on = resolve(cli(&["--watch-store", "true"], &[]), &[], file).unwrap();
        assert!(on.store.watch_store);
        assert!(on.describe().contains("watch_store = true\n"));
        let off = resolve(cli(&["--watch-store", "false"], &[]), &[], "").unwrap();
        assert!(off.describe().contains("watch_store = false\n"));
        use clap::Parser;
        assert!(Cli::try_parse_from(["heare-authd", "--watch-store", "yes"]).is_err());
        assert!(resolve(Cli::default(), &[], "watch_store = \"no\"\n").is_err());
    }

    #[test]
    fn durations_and_cache_can_be_written_both_ways() {
        let config = resolve(
            Cli::default(),
            &[],
            "refresh_interval = 30\nmax_stale = \"1h\"\ncache_path = \"none\"\n[s3]\ntimeout = \"2s\"\npath_style = true\n",
        )
        .unwrap();
        assert_eq!(config.store.refresh_interval, Some(Duration::from_secs(30)));
        assert_eq!(config.store.max_stale, Some(Duration::from_secs(3600)));
        assert_eq!(config.store.cache_path, None);
        assert_eq!(config.store.s3.timeout, Duration::from_secs(2));
        assert!(config.store.s3.path_style);
    }

    #[test]
    fn the_configuration_file_is_a_small_regular_file_and_may_be_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let large = dir.path().join("large.toml");
        let comment = format!("#{}\n", "x".repeat(1023));
        std::fs::write(&large, comment.repeat(1025)).unwrap();
        let real = dir.path().join("real.toml");
        std::fs::write(&real, "refresh_interval = \"42s\"\n").unwrap();
        let link = dir.path().join("link.toml");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let read = |path: &Path| file::read_file(Some(path), Path::new("/nonexistent"));
        for (path, expected) in [
            (&fifo, "not a regular file"),
            (&large, "larger than 1048576 bytes"),
        ] {
            let error = read(path).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(
                error.contains("configuration file") && error.contains(expected),
                "{error}"
            );
        }
        // Its directory is root's: a link there is the administrator's, and is followed.
        let file = read(&link).unwrap();
        assert!(file.refresh_interval.is_some());
        // The default file may be missing; a file given with --config may not.
        assert!(file::read_file(None, &dir.path().join("absent")).is_ok());
        assert!(read(&dir.path().join("absent")).is_err());
    }

    #[test]
    fn storage_secret_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "abc\n").unwrap();
        let file = format!("storage_secret_file = {:?}\n", path.display().to_string());
        let config = resolve(Cli::default(), &[], &file).unwrap();
        let secret = config.store.storage_secret.unwrap();
        let body = heare_auth_store::codec::encode_encrypted(b"{}", &StorageSecret::new("abc"));
        assert!(heare_auth_store::codec::decode(&body, Some(&secret)).is_ok());
    }
}
