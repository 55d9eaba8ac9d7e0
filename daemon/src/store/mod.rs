//! Where the key file lives: one object in S3, or one local file, behind one small trait.
//!
//! A store hands back the stored body as bytes (still encrypted, if it is) plus a version token —
//! the S3 ETag, or the file's identity (inode, size, mtime) — and can be asked for the body "only
//! if changed" since a version, so that polling an unchanged object costs one 304 and no parsing.
//! The store knows nothing about keys; `codec` and `keyset` turn the bytes into keys.

pub mod file;
mod s3;
mod url;

pub use file::FileStore;
pub use s3::{S3Options, S3Store};
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
    #[error("cannot write {store}: {message}")]
    WriteFailed { store: String, message: String },
}

/// When a write may happen: the optimistic-concurrency half of read-modify-write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteCondition {
    /// Only if the stored version is still this one (S3 `If-Match`).
    IfVersion(String),
    /// Only if nothing is stored yet (S3 `If-None-Match: *`).
    IfAbsent,
}

/// A place that holds the key file.
pub trait KeyStore: Send + Sync {
    /// The store's URL, for logs and `/status` (never with credentials).
    fn describe(&self) -> String;

    /// Fetches the body, or only reports [`Fetched::NotModified`] when `if_changed_from` is the
    /// current version.
    fn fetch<'a>(
        &'a self,
        if_changed_from: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, StoreError>>;

    /// Writes `body` if `condition` still holds, atomically; returns the new version.
    /// [`StoreError::Conflict`] when it does not hold.
    fn put<'a>(
        &'a self,
        body: Vec<u8>,
        condition: WriteCondition,
    ) -> BoxFuture<'a, Result<String, StoreError>>;
}

/// Opens the store a URL names.
pub async fn open(url: &StoreUrl, s3: &S3Options, max_body_bytes: u64) -> Box<dyn KeyStore> {
    match url {
        StoreUrl::File { path } => Box::new(FileStore::new(path.clone(), max_body_bytes)),
        StoreUrl::S3 { bucket, key } => {
            Box::new(S3Store::connect(bucket.clone(), key.clone(), s3, max_body_bytes).await)
        }
    }
}
