//! heare-auth-store: the key file and where it is kept — what heare-authd and heare-authctl
//! share. The key file's document ([`keyfile`]), the `secret_hash` form ([`secret_hash`]), its
//! encryption at rest ([`codec`]), a key's rate limit ([`rate_limit`]), its timestamps, durations and sizes ([`timestamp`], [`duration`], [`size`]), the
//! stores that hold it ([`FileStore`], and `S3Store` with the default feature `s3`) behind the
//! [`KeyStore`] trait, named by a [`StoreUrl`], and safe file handling in a directory another user
//! may write ([`safe_file`]).
//!
//! A store hands back the stored body as bytes (still encrypted, if it is) plus a version token —
//! the S3 ETag, or the file's identity (inode, size, mtime) — and can be asked for the body "only
//! if changed" since a version, so that polling an unchanged object costs one 304 and no parsing.
//! A store knows nothing about keys: the daemon's key set turns the bytes into keys.
//!
//! Without the `s3` feature (the fuzz targets, tools that need no S3) the AWS SDK is not built;
//! `s3://` URLs still parse, and opening one gives a store that says it is not supported.

pub mod change;
pub mod change_fold;
pub mod change_log;
pub mod codec;
pub mod duration;
pub mod file;
pub mod keyfile;
#[cfg(feature = "s3")]
pub mod queue;
pub mod rate_limit;
#[cfg(feature = "s3")]
mod s3;
#[cfg(feature = "s3")]
mod s3_change_log;
mod s3_options;
pub mod safe_file;
pub mod secret_hash;
pub mod size;
#[cfg(feature = "s3")]
pub mod sts;
pub mod timestamp;
mod url;

pub use file::FileStore;
#[cfg(feature = "s3")]
use s3::S3Store;
#[cfg(feature = "s3")]
pub use s3::{ListLimits, ListedObject, S3Folder};
pub use s3_options::S3Options;
pub use url::{StoreUrl, StoreUrlError};

use std::future::Future;
use std::pin::Pin;

/// A boxed future, so that the trait stays object-safe and each backend stays a plain struct.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a fetch found.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetched {
    /// The stored body and its version token.
    Body { body: Vec<u8>, version: String },
    /// The body has not changed since the version the caller gave.
    NotModified,
    /// There is no key file yet: the store holds no keys (not an error, as for the Python service).
    Missing,
}

/// What a look at the key object without its body found.
#[derive(Debug, PartialEq, Eq)]
pub enum Headed {
    /// Still the version the caller gave.
    NotModified,
    /// There is no key object.
    Missing,
    /// Another version, with the number of the last change of the log it contains when its
    /// writer recorded it beside the body (S3 metadata `change-seq`).
    Changed {
        version: String,
        change_seq: Option<u64>,
    },
}

/// Why a store could not be read. The texts say what to check; they never contain credentials.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {store}: {message}")]
    Unavailable { store: String, message: String },
    #[error("{store} is over the limit of {limit} bytes (max_store_bytes): {size} bytes or more")]
    TooLarge {
        store: String,
        size: u64,
        limit: u64,
    },
    #[error("{store} changed since it was read (someone else wrote it)")]
    Conflict { store: String },
    /// A listing went through more objects and sub-prefixes than it may (see `S3Folder::list`).
    #[error("over {limit} objects and sub-prefixes under {store}: the listing stopped there")]
    TooManyListed { store: String, limit: usize },
    #[error("cannot write {store}: {message}")]
    WriteFailed { store: String, message: String },
    /// What stands at a change object's name is not one (a link, a FIFO, a directory): it is
    /// never read, and it stops writers as an invalid change does.
    #[error("{message}")]
    NotAnObject { store: String, message: String },
    /// Another process held the file store's lock for longer than the writer would wait.
    #[error(
        "cannot write {store}: its lock file {lock} is held by another process (waited {waited:?}); nothing was written"
    )]
    Locked {
        store: String,
        lock: String,
        waited: std::time::Duration,
    },
}

/// When a write may happen: the optimistic-concurrency half of read-modify-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Only if the stored version is still this one (S3 `If-Match`).
    IfVersion(String),
    /// Only if nothing is stored yet (S3 `If-None-Match: *`).
    IfAbsent,
    /// Whatever is stored (for objects with one writer, such as a host's usage report).
    Always,
}

/// A place that holds the key file.
pub trait KeyStore: Send + Sync {
    /// The store's URL, for logs and `/status` (never with credentials).
    fn describe(&self) -> String;

    /// The endpoint override its client resolved from the settings and the AWS environment
    /// (`AWS_ENDPOINT_URL`, a profile's `endpoint_url`), if any; `None` for the provider's own.
    fn endpoint(&self) -> Option<String> {
        None
    }

    /// Fetches the body, or only reports [`Fetched::NotModified`] when `if_changed_from` is the
    /// current version.
    fn fetch<'a>(
        &'a self,
        if_changed_from: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, StoreError>>;

    /// Looks at the key object without reading its body (S3 HeadObject); `None` from a store
    /// that cannot tell what [`Headed`] holds without reading the body (a file).
    fn head<'a>(
        &'a self,
        if_changed_from: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Headed>, StoreError>> {
        let _ = if_changed_from;
        Box::pin(async { Ok(None) })
    }

    /// Writes `body` if `condition` still holds, atomically; returns the new version.
    /// [`StoreError::Conflict`] when it does not hold.
    fn put<'a>(
        &'a self,
        body: Vec<u8>,
        condition: WriteCondition,
    ) -> BoxFuture<'a, Result<String, StoreError>>;

    /// As [`KeyStore::put`], for a key object that contains the change log up to `change_seq`:
    /// a store that can keep it beside the body (S3's object metadata, `change-seq`, read with a
    /// HEAD) records it, so a reader learns it without fetching the body.
    fn put_at_change<'a>(
        &'a self,
        body: Vec<u8>,
        condition: WriteCondition,
        change_seq: u64,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        let _ = change_seq;
        self.put(body, condition)
    }
}

/// Opens the store a URL names.
pub async fn open(url: &StoreUrl, s3: &S3Options, max_body_bytes: u64) -> Box<dyn KeyStore> {
    match url {
        StoreUrl::File { path } => Box::new(FileStore::new(path.clone(), max_body_bytes)),
        #[cfg(feature = "s3")]
        StoreUrl::S3 { bucket, key } => {
            Box::new(S3Store::connect(bucket.clone(), key.clone(), s3, max_body_bytes).await)
        }
        #[cfg(not(feature = "s3"))]
        StoreUrl::S3 { .. } => {
            let _ = s3;
            Box::new(Unsupported(url.to_string()))
        }
    }
}

/// Opens the change log kept beside the key object a URL names (see [`change_log`]); a file
/// store's commits wait at most `lock_timeout` for the key file's lock. `None` for an `s3://` URL
/// in a build without S3.
pub async fn open_change_log(
    url: &StoreUrl,
    s3: &S3Options,
    max_body_bytes: u64,
    lock_timeout: std::time::Duration,
) -> Option<Box<dyn change_log::ChangeLog>> {
    match url {
        StoreUrl::File { path } => {
            let store =
                FileStore::new(path.clone(), max_body_bytes).with_lock_timeout(lock_timeout);
            Some(Box::new(change_log::FileChangeLog::new(&store)))
        }
        #[cfg(feature = "s3")]
        StoreUrl::S3 { bucket, key } => Some(Box::new(
            s3_change_log::S3ChangeLog::connect(bucket, key, s3, max_body_bytes).await,
        )),
        #[cfg(not(feature = "s3"))]
        StoreUrl::S3 { .. } => {
            let _ = (s3, max_body_bytes, lock_timeout);
            None
        }
    }
}

/// An `s3://` store in a build without the `s3` feature: every call says so.
#[cfg(not(feature = "s3"))]
struct Unsupported(String);

#[cfg(not(feature = "s3"))]
impl KeyStore for Unsupported {
    fn describe(&self) -> String {
        self.0.clone()
    }

    fn fetch<'a>(
        &'a self,
        _if_changed_from: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, StoreError>> {
        Box::pin(async move { Err(self.unsupported()) })
    }

    fn put<'a>(
        &'a self,
        _body: Vec<u8>,
        _condition: WriteCondition,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(async move { Err(self.unsupported()) })
    }
}

#[cfg(not(feature = "s3"))]
impl Unsupported {
    fn unsupported(&self) -> StoreError {
        StoreError::Unavailable {
            store: self.0.clone(),
            message: "this build has no S3 support (the s3 feature of heare-auth-store)".into(),
        }
    }
}
