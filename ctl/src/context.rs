//! What every command needs: the resolved configuration (the daemon's own), the open store, and
//! read-modify-write of the key file with optimistic concurrency.
//!
//! A write reads the document with its version, applies the command's change, and writes back
//! only if the version is unchanged (S3 `If-Match`, or `If-None-Match: *` for a new object; the
//! file store's lock-and-compare). When someone else wrote in between, it re-reads and re-applies
//! the same change, up to [`ATTEMPTS`] times with random jitter, then gives up with exit code 4.

use crate::daemon_link;
use crate::error::CtlError;
use heare_auth_store::keyfile::{Document, StoredDocument};
use heare_auth_store::{
    Fetched, FileStore, KeyStore, StoreError, StoreUrl, WriteCondition, duration,
};
use heare_authd::cli::Cli as DaemonCli;
use heare_authd::config::Config;
use rand::Rng;
use std::path::PathBuf;
use std::time::Duration;

/// Now, in Unix milliseconds (the unit of generations).
fn now_ms() -> u64 {
    u64::try_from(heare_auth_store::timestamp::now()).unwrap_or(0)
}

/// How far ahead of this clock a key file's generation may be.
const MAX_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// Tries of one write before exit code 4.
pub const ATTEMPTS: u32 = 8;

/// How a command reads the stored body and writes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// As stored, written back the same way; a plain body is refused when a storage secret is
    /// configured (the daemon refuses it too).
    AsStored,
    /// `migrate --encrypt`: a plain body is accepted, and written back encrypted.
    Encrypting,
}

pub struct Context {
    pub config: Config,
    pub store: Box<dyn KeyStore>,
    /// `--accept-older`: write over an older (or future-dated) key file.
    accept_older: bool,
}

/// The daemon's command line with ctl's `--config`, `--store` and `--socket`, parsed by clap so
/// that the environment variables the daemon reads for its flags (`S3_BUCKET`, `S3_KEY`,
/// `S3_REGION`) mean the same to ctl.
fn daemon_cli(
    config: Option<PathBuf>,
    store: Option<String>,
    socket: Option<PathBuf>,
) -> Result<DaemonCli, CtlError> {
    let mut args: Vec<std::ffi::OsString> = vec!["heare-authctl".into()];
    if let Some(config) = config {
        args.extend(["--config".into(), config.into_os_string()]);
    }
    if let Some(store) = store {
        args.extend(["--store".into(), store.into()]);
    }
    if let Some(socket) = socket {
        args.extend(["--socket".into(), socket.into_os_string()]);
    }
    use clap::Parser;
    DaemonCli::try_parse_from(args).map_err(|e| CtlError::Usage(e.to_string()))
}

/// The configured store; a file store's writes wait at most `lock_timeout` for its lock (the
/// daemon's user owns the directory and can hold the lock for ever).
async fn open_store(config: &Config, lock_timeout: Duration) -> Box<dyn KeyStore> {
    let settings = &config.store;
    match &settings.url {
        StoreUrl::File { path } => Box::new(
            FileStore::new(path.clone(), settings.max_store_bytes).with_lock_timeout(lock_timeout),
        ),
        url => heare_auth_store::open(url, &settings.s3, settings.max_store_bytes).await,
    }
}

/// A failed write as told to the operator: a held lock names the flag that sets the wait.
fn write_error(error: StoreError) -> CtlError {
    match error {
        StoreError::Locked { .. } => CtlError::Other(format!(
            "{error} (--lock-timeout sets how long to wait; whoever holds the lock may be another heare-authctl, or a process of the directory's owner)"
        )),
        other => other.into(),
    }
}

impl Context {
    pub async fn open(
        config: Option<PathBuf>,
        store_url: Option<String>,
        socket: Option<PathBuf>,
        accept_older: bool,
        lock_timeout: &str,
    ) -> Result<Context, CtlError> {
        let lock_timeout = duration::parse(lock_timeout)
            .map_err(|e| CtlError::Usage(format!("--lock-timeout: {e}")))?;
        let cli = daemon_cli(config, store_url, socket)?;
        let config = Config::load(&cli).map_err(|e| CtlError::Usage(e.to_string()))?;
        let store = open_store(&config, lock_timeout).await;
        Ok(Context {
            config,
            store,
            accept_older,
        })
    }

    /// Reads the document (an empty one when the store holds none yet).
    pub async fn read(&self) -> Result<(StoredDocument, WriteCondition), CtlError> {
        self.read_as(Reading::AsStored).await
    }

    pub async fn read_as(
        &self,
        reading: Reading,
    ) -> Result<(StoredDocument, WriteCondition), CtlError> {
        let secret = self.config.store.storage_secret.as_ref();
        match self.store.fetch(None).await? {
            Fetched::Body { body, version } => {
                let stored = match reading {
                    Reading::AsStored => StoredDocument::decode(&body, secret)?,
                    Reading::Encrypting => StoredDocument {
                        encrypted: true,
                        ..StoredDocument::decode_accepting_plaintext(&body, secret)?
                    },
                };
                Ok((stored, WriteCondition::IfVersion(version)))
            }
            Fetched::Missing => Ok((
                StoredDocument {
                    document: Document::empty(),
                    // A new file is encrypted when a storage secret is configured.
                    encrypted: secret.is_some(),
                },
                WriteCondition::IfAbsent,
            )),
            Fetched::NotModified => Err(CtlError::Other(
                "the store answered 'not modified' to an unconditional read".into(),
            )),
        }
    }

    /// Applies `change` to the document and writes it back, retrying on concurrent writes.
    pub async fn edit<T>(
        &self,
        change: impl FnMut(&mut Document) -> Result<T, CtlError>,
    ) -> Result<T, CtlError> {
        self.edit_as(Reading::AsStored, change).await
    }

    /// As [`Context::edit`], reading and writing back the body as `reading` says.
    pub async fn edit_as<T>(
        &self,
        reading: Reading,
        mut change: impl FnMut(&mut Document) -> Result<T, CtlError>,
    ) -> Result<T, CtlError> {
        for attempt in 1..=ATTEMPTS {
            let (mut stored, condition) = self.read_as(reading).await?;
            let served = self.check_generation(&stored.document)?;
            let outcome = change(&mut stored.document)?;
            let body = self.encode(&mut stored, served)?;
            match self.store.put(body, condition).await {
                Ok(_) => return Ok(outcome),
                Err(StoreError::Conflict { .. }) if attempt < ATTEMPTS => {
                    let jitter = rand::rng().random_range(20..100) * u64::from(attempt);
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                }
                Err(StoreError::Conflict { store }) => {
                    return Err(CtlError::Conflict(format!(
                        "{store} kept changing during {ATTEMPTS} attempts; nothing was written, try again"
                    )));
                }
                Err(error) => return Err(write_error(error)),
            }
        }
        Err(CtlError::Other("unreachable: the retry loop ended".into()))
    }

    /// Writes `stored` once, only if the store still holds the version it was read at; a
    /// conflict is exit code 4 with `changed` as the reason (no retry: what was shown to the
    /// operator is what is written).
    pub async fn write_once(
        &self,
        stored: &StoredDocument,
        condition: WriteCondition,
        changed: &str,
    ) -> Result<(), CtlError> {
        let served = self.check_generation(&stored.document)?;
        let mut stored = stored.clone();
        let body = self.encode(&mut stored, served)?;
        match self.store.put(body, condition).await {
            Ok(_) => Ok(()),
            Err(StoreError::Conflict { store }) => Err(CtlError::Conflict(format!(
                "{store} {changed}; nothing was written, run again"
            ))),
            Err(error) => Err(write_error(error)),
        }
    }

    /// Refuses to write over a key file older than what the local daemon serves (or without a
    /// generation once one was served, or none at all then), or one dated more than a day ahead:
    /// the write would make an old copy written back by someone else current. Returns the
    /// daemon's served generation, when it could be asked.
    fn check_generation(&self, document: &Document) -> Result<Option<u64>, CtlError> {
        let served = daemon_link::generation_served(self.socket());
        if self.accept_older {
            return Ok(served);
        }
        if let Some(found) = document.generation()
            && found > now_ms().saturating_add(MAX_AHEAD_MS)
        {
            return Err(CtlError::Other(format!(
                "the store's key file has generation {found}, more than a day in the future: tampered with, or written by a clock far ahead; nothing was written (--accept-older rewrites it with a current generation)"
            )));
        }
        match (served, document.generation()) {
            (Some(served), found) if found.is_none_or(|found| found < served) => {
                let found =
                    found.map_or("no generation".to_string(), |g| format!("generation {g}"));
                Err(CtlError::Other(format!(
                    "the store holds an older key file ({found}) than heare-authd serves (generation {served}): someone may have written back an old copy, which this write would make current; nothing was written (restore the newest key file, or pass --accept-older to write this one anew)"
                )))
            }
            _ => Ok(served),
        }
    }

    /// The body to store: the document one generation newer (with `--accept-older`, also newer
    /// than what the daemon serves and no longer future-dated), encrypted as it was read (or as a
    /// new file is, with a storage secret configured).
    fn encode(
        &self,
        stored: &mut StoredDocument,
        served: Option<u64>,
    ) -> Result<Vec<u8>, CtlError> {
        let now = now_ms();
        if self.accept_older {
            let floor = served
                .filter(|s| *s <= now.saturating_add(MAX_AHEAD_MS))
                .unwrap_or(0);
            stored.document.reset_generation(floor);
        }
        stored.document.advance_generation(now);
        Ok(stored.encode(self.config.store.storage_secret.as_ref())?)
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.config.listen.socket
    }
}
