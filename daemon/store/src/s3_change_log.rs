//! The change log of an S3 store: objects `<key>.changes/<number>.json` in the key object's
//! bucket, created with `If-None-Match: *` (S3 answers 412 to the second of two creators of one
//! number), read with GetObject (a missing number is a 404 only for a caller allowed
//! `s3:ListBucket`; without it S3 answers 403, which is an error here, never "nothing new"),
//! listed under the prefix and deleted by `heare-authctl compact`.

use crate::change::{object_name, seq_of_name};
use crate::change_log::ChangeLog;
use crate::s3::S3Store;
use crate::{BoxFuture, Fetched, S3Options, StoreError, WriteCondition};

/// The change objects beside one S3 key object.
pub struct S3ChangeLog {
    /// The key object's store, whose client and limits every change object shares.
    key_object: S3Store,
    /// `<key>.changes/`
    prefix: String,
}

impl S3ChangeLog {
    /// The log beside `s3://bucket/key`, through a client of its own built from the AWS
    /// environment and `options`. Nothing is contacted yet.
    pub async fn connect(
        bucket: &str,
        key: &str,
        options: &S3Options,
        max_body_bytes: u64,
    ) -> Self {
        let key_object =
            S3Store::connect(bucket.to_string(), key.to_string(), options, max_body_bytes).await;
        let prefix = format!("{key}.changes/");
        S3ChangeLog { key_object, prefix }
    }

    fn object(&self, seq: u64) -> S3Store {
        self.key_object
            .sibling(format!("{}{}", self.prefix, object_name(seq)))
    }
}

impl ChangeLog for S3ChangeLog {
    fn describe(&self, seq: u64) -> String {
        crate::KeyStore::describe(&self.object(seq))
    }

    fn read(&self, seq: u64) -> BoxFuture<'_, Result<Option<Vec<u8>>, StoreError>> {
        Box::pin(async move {
            match self.object(seq).fetch_object(None).await? {
                Fetched::Body { body, .. } => Ok(Some(body)),
                Fetched::Missing => Ok(None),
                Fetched::NotModified => Err(StoreError::Unavailable {
                    store: self.describe(seq),
                    message: "S3 answered 'not modified' to an unconditional read".into(),
                }),
            }
        })
    }

    fn create(&self, seq: u64, body: Vec<u8>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let object = self.object(seq);
            object.put_object(body, WriteCondition::IfAbsent).await?;
            Ok(())
        })
    }

    fn list(&self, limit: usize) -> BoxFuture<'_, Result<Vec<u64>, StoreError>> {
        Box::pin(async move {
            // Listed in key order, which for 20-digit names is number order.
            let keys = self.key_object.list_keys(&self.prefix, limit).await?;
            Ok(keys
                .iter()
                .filter_map(|key| seq_of_name(key.strip_prefix(&self.prefix)?))
                .collect())
        })
    }

    fn delete(&self, seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.object(seq).delete_object().await })
    }
}
