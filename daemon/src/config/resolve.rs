//! From the command line, the environment and the file to resolved settings: one resolver per
//! group of settings, each applying flags > environment > file > defaults.
//!
//! Environment variables with a flag (`S3_BUCKET`, `S3_KEY`, `S3_REGION`) arrive through clap's
//! `env` attribute, so they are already in the [`Cli`]. Only the storage secret is read from the
//! environment here (`STORAGE_SECRET`, systemd's `CREDENTIALS_DIRECTORY`): a secret has no flag,
//! since a command line is visible to every local user.

use super::file::{DurationSetting, FileConfig, ModeSetting, duration_of};
use super::{
    ConfigError, ConnectionSettings, DEFAULT_CACHE_PATH, DEFAULT_STORE, ListenSettings, LogFormat,
    LogSettings, StoreSettings,
};
use crate::cli::Cli;
use heare_auth_store::codec::StorageSecret;
use heare_auth_store::{S3Options, StoreUrl};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where keys come from and how: the store, its cache, polling, the storage secret, S3.
pub(super) fn store(
    cli: &Cli,
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileConfig,
) -> Result<StoreSettings, ConfigError> {
    let url = store_url(cli, file)?;
    let cache_path = match cli.cache.clone().or(file.cache_path.clone()) {
        Some(text) if text.is_empty() || text == "none" => None,
        Some(text) => Some(PathBuf::from(text)),
        // A local file needs no cache of itself; S3 does.
        None => match url {
            StoreUrl::S3 { .. } => Some(PathBuf::from(DEFAULT_CACHE_PATH)),
            StoreUrl::File { .. } => None,
        },
    };
    let freshness = super::freshness::resolve(cli, file, &url)?;
    Ok(StoreSettings {
        cache_path,
        refresh_interval: freshness.refresh_interval,
        refresh_jitter: freshness.refresh_jitter,
        notify_queue: freshness.notify_queue,
        watch_store: freshness.watch_store,
        max_stale: nonzero(duration_of(
            "max_stale",
            cli.max_stale.as_deref(),
            &file.max_stale,
        )?),
        storage_secret: storage_secret(env, file)?,
        max_store_bytes: cli
            .max_store_bytes
            .or(file.max_store_bytes)
            .unwrap_or(1 << 30),
        s3: s3(cli, file)?,
        url,
    })
}

/// `--store`, else the Python service's `S3_BUCKET` (+ `S3_KEY`), else the file, else the default.
fn store_url(cli: &Cli, file: &FileConfig) -> Result<StoreUrl, ConfigError> {
    let from_bucket = cli
        .s3_bucket
        .as_deref()
        .filter(|b| !b.is_empty())
        .map(|bucket| {
            let key = cli.s3_key.as_deref().filter(|k| !k.is_empty());
            StoreUrl::s3(bucket, key.unwrap_or("keys.json")).to_string()
        });
    let text = cli
        .store
        .clone()
        .or(from_bucket)
        .or(file.store.clone())
        .unwrap_or_else(|| DEFAULT_STORE.to_string());
    text.parse()
        .map_err(|e: heare_auth_store::StoreUrlError| ConfigError::Invalid {
            setting: "store",
            why: e.to_string(),
        })
}

fn s3(cli: &Cli, file: &FileConfig) -> Result<S3Options, ConfigError> {
    let section = file.s3.as_ref();
    let timeout = duration_of(
        "s3.timeout",
        cli.s3_timeout.as_deref(),
        &section.and_then(|s| s.timeout.clone()),
    )?;
    Ok(S3Options {
        region: cli
            .s3_region
            .clone()
            .filter(|r| !r.is_empty())
            .or(section.and_then(|s| s.region.clone())),
        endpoint: cli
            .s3_endpoint
            .clone()
            .or(section.and_then(|s| s.endpoint.clone())),
        path_style: cli.s3_path_style || section.and_then(|s| s.path_style).unwrap_or(false),
        timeout: timeout.unwrap_or(Duration::from_secs(10)),
    })
}

/// `STORAGE_SECRET`, else the file's `storage_secret` or `storage_secret_file` (not both), else
/// the systemd credential `storage_secret`.
fn storage_secret(
    env: &dyn Fn(&str) -> Option<String>,
    file: &FileConfig,
) -> Result<Option<StorageSecret>, ConfigError> {
    if let Some(secret) = env("STORAGE_SECRET") {
        return non_blank("STORAGE_SECRET", secret).map(Some);
    }
    match (&file.storage_secret, &file.storage_secret_file) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid {
            setting: "storage_secret",
            why: "set storage_secret or storage_secret_file, not both".into(),
        }),
        (Some(secret), None) => non_blank("storage_secret", secret.clone()).map(Some),
        (None, Some(path)) => read_secret_file("storage_secret_file", path).map(Some),
        (None, None) => credential_secret(env),
    }
}

/// A storage secret that is empty or blank would make the encryption key public
/// (`sha256("")`): whoever can write the store could then forge an "encrypted" file. An empty
/// `STORAGE_SECRET=` is refused too rather than taken as "no secret": the operator meant one.
fn non_blank(setting: &'static str, secret: String) -> Result<StorageSecret, ConfigError> {
    if secret.trim().is_empty() {
        return Err(ConfigError::Invalid {
            setting,
            why: "is empty or blank; set a secret of at least 16 random characters, or remove the setting".into(),
        });
    }
    Ok(StorageSecret::new(secret))
}

/// The storage secret in the file `setting` names; blank is refused, as for `storage_secret`.
fn read_secret_file(setting: &'static str, path: &Path) -> Result<StorageSecret, ConfigError> {
    let secret = super::secret_file::read(setting, path)?;
    if secret.trim().is_empty() {
        return Err(ConfigError::Invalid {
            setting,
            why: format!("{} is empty or blank", path.display()),
        });
    }
    Ok(StorageSecret::new(secret.as_str()))
}

/// systemd's `LoadCredential=storage_secret:…` puts the secret in `$CREDENTIALS_DIRECTORY`.
fn credential_secret(
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<StorageSecret>, ConfigError> {
    let Some(dir) = env("CREDENTIALS_DIRECTORY") else {
        return Ok(None);
    };
    let path = Path::new(&dir).join("storage_secret");
    match read_secret_file("$CREDENTIALS_DIRECTORY/storage_secret", &path) {
        Err(ConfigError::SecretFile { source, .. }) if source.is_not_found() => Ok(None),
        read => read.map(Some),
    }
}

/// Where the daemon listens and who may do what there.
pub(super) fn listen(cli: &Cli, file: &FileConfig) -> Result<ListenSettings, ConfigError> {
    let socket_mode = match (&cli.socket_mode, &file.socket_mode) {
        (Some(text), _) => parse_mode(text)?,
        (None, Some(ModeSetting::Text(text))) => parse_mode(text)?,
        (None, Some(ModeSetting::Number(mode))) => check_mode(*mode)?,
        (None, None) => 0o660,
    };
    let listen_tcp = address(
        "listen_tcp",
        cli.listen_tcp.clone().or(file.listen_tcp.clone()),
        "127.0.0.1:8080",
    )?;
    let metrics_listen = address(
        "metrics_listen",
        cli.metrics_listen.clone().or(file.metrics_listen.clone()),
        "127.0.0.1:9464",
    )?;
    Ok(ListenSettings {
        socket: cli
            .socket
            .clone()
            .or(file.socket.clone())
            .unwrap_or_else(|| PathBuf::from(heare_auth_client::DEFAULT_SOCKET_PATH)),
        socket_mode,
        socket_group: cli.socket_group.clone().or(file.socket_group.clone()),
        admin_group: cli.admin_group.clone().or(file.admin_group.clone()),
        listen_tcp,
        metrics_listen,
        tcp_admin_from_loopback: cli.tcp_admin_from_loopback
            || file.tcp_admin_from_loopback.unwrap_or(false),
    })
}

/// A socket address setting; empty is none.
fn address(
    setting: &'static str,
    text: Option<String>,
    example: &str,
) -> Result<Option<std::net::SocketAddr>, ConfigError> {
    match text {
        None => Ok(None),
        Some(text) if text.is_empty() => Ok(None),
        Some(text) => text.parse().map(Some).map_err(|_| ConfigError::Invalid {
            setting,
            why: format!("{text:?} is not an address like {example}"),
        }),
    }
}

/// How many connections, served by how many threads, closed when.
pub(super) fn connections(cli: &Cli, file: &FileConfig) -> Result<ConnectionSettings, ConfigError> {
    let count =
        |setting, flag: Option<usize>, file: Option<usize>| at_least_one(setting, flag.or(file));
    let timeout = |setting, flag: &Option<String>, file: &Option<DurationSetting>, default| {
        duration_of(setting, flag.as_deref(), file).map(|d| nonzero(Some(d.unwrap_or(default))))
    };
    Ok(ConnectionSettings {
        max_connections: count("max_connections", cli.max_connections, file.max_connections)?
            .unwrap_or(1024),
        max_connections_per_uid: count(
            "max_connections_per_uid",
            cli.max_connections_per_uid,
            file.max_connections_per_uid,
        )?,
        max_connections_per_address: count(
            "max_connections_per_address",
            cli.max_connections_per_address,
            file.max_connections_per_address,
        )?,
        worker_threads: cli
            .worker_threads
            .or(file.worker_threads)
            .filter(|n| *n > 0),
        header_read_timeout: timeout(
            "header_read_timeout",
            &cli.header_read_timeout,
            &file.header_read_timeout,
            Duration::from_secs(10),
        )?,
        idle_timeout: timeout(
            "idle_timeout",
            &cli.idle_timeout,
            &file.idle_timeout,
            Duration::from_secs(60),
        )?,
        write_timeout: timeout(
            "write_timeout",
            &cli.write_timeout,
            &file.write_timeout,
            Duration::from_secs(10),
        )?,
    })
}

/// The log's format and level.
pub(super) fn log(cli: &Cli, file: &FileConfig) -> Result<LogSettings, ConfigError> {
    Ok(LogSettings {
        format: match &cli.log_format {
            Some(text) => text.parse()?,
            None => file.log_format.unwrap_or(LogFormat::Json),
        },
        level: cli
            .log_level
            .clone()
            .or(file.log_level.clone())
            .unwrap_or_else(|| "info".to_string()),
    })
}

/// `0` turns a duration setting off.
fn nonzero(value: Option<Duration>) -> Option<Duration> {
    value.filter(|d| !d.is_zero())
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
