//! What every command needs: the resolved configuration (the daemon's own), the open store, and
//! the reads and checks a write makes (generation, encoding).
//!
//! A write is committed as one change of the store's log and then written back into the key
//! object only if its version is unchanged (S3 `If-Match`, or `If-None-Match: *` for a new
//! object; the file store's lock-and-compare): [`crate::commit`] owns that protocol and its
//! retries; this module hands it the document and the body to store.

use crate::daemon_link;
use crate::error::CtlError;
use heare_auth_store::change_log::ChangeLog;
use heare_auth_store::keyfile::{Document, StoredDocument};
use heare_auth_store::{
    Fetched, FileStore, KeyStore, StoreError, StoreUrl, WriteCondition, duration,
};
use heare_authd::cli::Cli as DaemonCli;
use heare_authd::config::Config;
use std::path::PathBuf;
use std::time::Duration;

/// Now, in Unix milliseconds (the unit of generations).
fn now_ms() -> u64 {
    u64::try_from(heare_auth_store::timestamp::now()).unwrap_or(0)
}

/// How far ahead of this clock a key file's generation may be.
const MAX_AHEAD_MS: u64 = 24 * 3600 * 1000;

/// How a command reads the stored body and writes it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reading {
    /// As stored, written back the same way; a plain body is refused when a storage secret is
    /// configured (the daemon refuses it too).
    AsStored,
    /// `migrate --encrypt`: a plain body is accepted (the command then marks it to be written
    /// back encrypted).
    Encrypting,
}

pub struct Context {
    pub config: Config,
    pub store: Box<dyn KeyStore>,
    /// `--accept-older`: write over an older (or future-dated) key file.
    accept_older: bool,
    /// The change log beside the key object (`None`: an `s3://` store in a build without S3).
    pub log: Option<Box<dyn ChangeLog>>,
    /// `--reason`: why, recorded in the change log with every write.
    pub reason: Option<String>,
    /// The generation the local daemon serves, asked once per run (every attempt of a write
    /// checks against it).
    served: std::sync::OnceLock<Option<u64>>,
    /// [`Context::aws_principal`], once asked.
    principal: tokio::sync::OnceCell<Option<String>>,
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
pub(crate) fn write_error(error: StoreError) -> CtlError {
    match error {
        StoreError::Locked { .. } => CtlError::Other(format!(
            "{error} (--lock-timeout sets how long to wait; whoever holds the lock may be another heare-authctl, or a process of the directory's owner)"
        )),
        other => other.into(),
    }
}

/// Most characters of a `--reason`.
const REASON_MAX_CHARS: usize = 500;

/// A `--reason` as recorded: one line of printable text, short, and nothing shaped like a secret
/// (the log is read by anyone allowed to audit the store).
fn checked_reason(reason: String) -> Result<String, CtlError> {
    let reason = reason.trim().to_string();
    if reason.is_empty() || reason.chars().count() > REASON_MAX_CHARS {
        return Err(CtlError::Usage(format!(
            "--reason: give 1 to {REASON_MAX_CHARS} characters"
        )));
    }
    if reason.chars().any(char::is_control) {
        return Err(CtlError::Usage(
            "--reason: one line of text without control characters".into(),
        ));
    }
    if reason
        .split(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .any(heare_auth_client::token::is_secret_shaped)
    {
        return Err(CtlError::Usage(
            "--reason: it holds something shaped like a secret, which the change log would keep; nothing was written".into(),
        ));
    }
    Ok(reason)
}

impl Context {
    pub async fn open(
        config: Option<PathBuf>,
        store_url: Option<String>,
        socket: Option<PathBuf>,
        accept_older: bool,
        lock_timeout: &str,
        reason: Option<String>,
    ) -> Result<Context, CtlError> {
        let lock_timeout = duration::parse(lock_timeout)
            .map_err(|e| CtlError::Usage(format!("--lock-timeout: {e}")))?;
        let cli = daemon_cli(config, store_url, socket)?;
        let config = Config::load(&cli).map_err(|e| CtlError::Usage(e.to_string()))?;
        let store = open_store(&config, lock_timeout).await;
        let settings = &config.store;
        let log = heare_auth_store::open_change_log(
            &settings.url,
            &settings.s3,
            settings.max_store_bytes,
            lock_timeout,
        )
        .await;
        Ok(Context {
            config,
            store,
            log,
            accept_older,
            reason: reason.map(checked_reason).transpose()?,
            served: std::sync::OnceLock::new(),
            principal: tokio::sync::OnceCell::new(),
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
                    Reading::Encrypting => {
                        StoredDocument::decode_accepting_plaintext(&body, secret)?
                    }
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

    /// Refuses to write over a key file older than what the local daemon serves (or without a
    /// generation once one was served, or none at all then), or one dated more than a day ahead:
    /// the write would make an old copy written back by someone else current. Returns the
    /// daemon's served generation, when it could be asked.
    pub(crate) fn check_generation(&self, document: &Document) -> Result<Option<u64>, CtlError> {
        let served = *self
            .served
            .get_or_init(|| daemon_link::generation_served(self.socket()));
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
    pub(crate) fn encode(
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

    /// The AWS principal writing, for an S3 store on AWS (asked once per run; `None` for a file
    /// store, a store with `[s3] endpoint`, or no answer within the S3 timeout).
    pub async fn aws_principal(&self) -> Option<String> {
        if !matches!(self.config.store.url, StoreUrl::S3 { .. }) {
            return None;
        }
        self.principal
            .get_or_init(|| heare_auth_store::sts::caller_arn(&self.config.store.s3))
            .await
            .clone()
    }

    /// The change log beside the key object.
    pub fn change_log(&self) -> Result<&dyn ChangeLog, CtlError> {
        self.log.as_deref().ok_or_else(|| {
            CtlError::Other(format!(
                "{} keeps no change log in this build; nothing was written",
                self.store.describe()
            ))
        })
    }

    pub fn socket(&self) -> &std::path::Path {
        &self.config.listen.socket
    }
}
