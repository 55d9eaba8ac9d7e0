//! The S3 store: one object in a bucket, read with aws-sdk-s3.
//!
//! Credentials come from the standard AWS chain (environment, profile, web identity, instance
//! metadata); region, endpoint and path-style addressing are configurable so that MinIO, Ceph,
//! Garage and test servers work as well as AWS. "Only if changed" is a GetObject with
//! `If-None-Match: <ETag>`, answered 304 by S3 with no body. The configured timeout bounds the
//! whole read — connecting, retries, the answer's head *and* its body — so that a slow, silent or
//! stalling S3 fails a reload instead of hanging it (the SDK's own operation timeout ends when the
//! head arrives; a body that stalls afterwards is caught here). Failures are told in one short
//! line — "S3 answered HTTP 503 SlowDown: …", "no answer within the S3 timeout of 2s", "cannot
//! reach S3: …" — because that line is what `/status` and the log show an operator.

use crate::{BoxFuture, Fetched, Headed, KeyStore, S3Options, StoreError, WriteCondition};
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use std::time::Duration;

/// The key object's user metadata (`x-amz-meta-change-seq`) holding the number of the last
/// change of the log it contains, as its `change_seq` field does.
pub const CHANGE_SEQ_METADATA: &str = "change-seq";

/// One S3 object holding the key file.
pub struct S3Store {
    client: aws_sdk_s3::Client,
    bucket: String,
    key: String,
    /// The endpoint override in effect, if any ([`KeyStore::endpoint`]).
    endpoint: Option<String>,
    max_body_bytes: u64,
    timeout: Duration,
}

impl S3Store {
    /// Builds a client from the AWS environment and `options`. Nothing is contacted yet.
    pub async fn connect(
        bucket: String,
        key: String,
        options: &S3Options,
        max_body_bytes: u64,
    ) -> Self {
        let shared = aws_environment(options.region.as_deref()).await;
        let mut config = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(options.path_style)
            // S3-compatible servers vary in their support for the newer default checksums.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // One quick retry: a longer backoff would spend the timeout waiting, and the failure
            // would read "timeout" instead of what happened. The reloader backs off between loads.
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(2)
                    .with_initial_backoff(Duration::from_millis(200)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(options.timeout.min(Duration::from_secs(3)))
                    .operation_attempt_timeout(options.timeout / 2)
                    .operation_timeout(options.timeout)
                    .build(),
            );
        if let Some(endpoint) = &options.endpoint {
            config = config.endpoint_url(endpoint);
        }
        let endpoint = options
            .endpoint
            .clone()
            .or_else(|| shared.endpoint_url().map(str::to_string));
        S3Store {
            client: aws_sdk_s3::Client::from_conf(config.build()),
            endpoint,
            bucket,
            key,
            max_body_bytes,
            timeout: options.timeout,
        }
    }

    /// Another object of the same bucket, through the same client and limits.
    pub(crate) fn sibling(&self, key: String) -> S3Store {
        S3Store {
            client: self.client.clone(),
            bucket: self.bucket.clone(),
            key,
            endpoint: self.endpoint.clone(),
            max_body_bytes: self.max_body_bytes,
            timeout: self.timeout,
        }
    }

    /// Deletes the object (S3 answers success for one that is not there).
    pub(crate) async fn delete_object(&self) -> Result<(), StoreError> {
        let request = self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&self.key);
        match tokio::time::timeout(self.timeout, request.send()).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(StoreError::WriteFailed {
                store: self.describe(),
                message: explain(&error, self.timeout),
            }),
            Err(_) => Err(StoreError::WriteFailed {
                store: self.describe(),
                message: format!(
                    "no answer within the S3 timeout of {}",
                    seconds(self.timeout)
                ),
            }),
        }
    }

    /// The keys under `prefix` (no delimiter), ascending, at most `limit`.
    pub(crate) async fn list_keys(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(prefix)
            .into_paginator()
            .send();
        while keys.len() < limit
            && let Some(page) = pages.next().await
        {
            let page = page.map_err(|error| self.unavailable(explain(&error, self.timeout)))?;
            keys.extend(
                page.contents()
                    .iter()
                    .filter_map(|o| o.key().map(str::to_string)),
            );
        }
        keys.truncate(limit);
        Ok(keys)
    }

    fn unavailable(&self, message: String) -> StoreError {
        StoreError::Unavailable {
            store: self.describe(),
            message,
        }
    }

    /// Fetches the object, the body included, within the configured timeout.
    pub(crate) async fn fetch_object(
        &self,
        if_changed_from: Option<&str>,
    ) -> Result<Fetched, StoreError> {
        match tokio::time::timeout(self.timeout, self.fetch_unbounded(if_changed_from)).await {
            Ok(fetched) => fetched,
            Err(_) => Err(self.unavailable(format!(
                "the object did not arrive within the S3 timeout of {}",
                seconds(self.timeout)
            ))),
        }
    }

    async fn fetch_unbounded(&self, if_changed_from: Option<&str>) -> Result<Fetched, StoreError> {
        let request = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_if_none_match(if_changed_from.map(str::to_owned));
        let output = match request.send().await {
            Ok(output) => output,
            Err(error) => {
                let status = error.raw_response().map(|raw| raw.status().as_u16());
                if status == Some(304) {
                    return Ok(Fetched::NotModified);
                }
                if error.as_service_error().is_some_and(|e| e.is_no_such_key()) {
                    return Ok(Fetched::Missing);
                }
                return Err(self.unavailable(explain(&error, self.timeout)));
            }
        };
        let size = output.content_length().unwrap_or(0).max(0) as u64;
        if size > self.max_body_bytes {
            return Err(StoreError::TooLarge {
                store: self.describe(),
                size,
                limit: self.max_body_bytes,
            });
        }
        let version = output.e_tag().unwrap_or_default().to_string();
        let body = self.read_bounded(output.body, size).await?;
        if size != 0 && body.len() as u64 != size {
            return Err(self.unavailable(format!(
                "the body was cut off: {} of {size} bytes arrived",
                body.len()
            )));
        }
        Ok(Fetched::Body { body, version })
    }
}

impl S3Store {
    /// HeadObject within the configured timeout: the version and the `change-seq` metadata.
    pub(crate) async fn head_object(
        &self,
        if_changed_from: Option<&str>,
    ) -> Result<Headed, StoreError> {
        let request = self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .set_if_none_match(if_changed_from.map(str::to_owned));
        let sent = match tokio::time::timeout(self.timeout, request.send()).await {
            Ok(sent) => sent,
            Err(_) => {
                return Err(self.unavailable(format!(
                    "the object's HEAD did not arrive within the S3 timeout of {}",
                    seconds(self.timeout)
                )));
            }
        };
        let output = match sent {
            Ok(output) => output,
            Err(error) => {
                let status = error.raw_response().map(|raw| raw.status().as_u16());
                return match status {
                    Some(304) => Ok(Headed::NotModified),
                    Some(404) => Ok(Headed::Missing),
                    _ => Err(self.unavailable(explain(&error, self.timeout))),
                };
            }
        };
        let change_seq = output
            .metadata()
            .and_then(|metadata| metadata.get(CHANGE_SEQ_METADATA))
            .and_then(|value| value.parse().ok());
        Ok(Headed::Changed {
            version: output.e_tag().unwrap_or_default().to_string(),
            change_seq,
        })
    }

    /// Reads the body chunk by chunk, refusing it as soon as it passes `max_store_bytes`: an
    /// answer without Content-Length (chunked) must not be buffered whole before the check.
    async fn read_bounded(
        &self,
        mut stream: aws_sdk_s3::primitives::ByteStream,
        announced: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let mut body = Vec::with_capacity(announced.min(self.max_body_bytes) as usize);
        loop {
            let chunk = stream.try_next().await.map_err(|error| {
                self.unavailable(format!("the body was cut off: {}", chain(&error)))
            })?;
            let Some(chunk) = chunk else {
                return Ok(body);
            };
            let size = (body.len() + chunk.len()) as u64;
            if size > self.max_body_bytes {
                return Err(StoreError::TooLarge {
                    store: self.describe(),
                    size,
                    limit: self.max_body_bytes,
                });
            }
            body.extend_from_slice(&chunk);
        }
    }

    pub(crate) async fn put_object(
        &self,
        body: Vec<u8>,
        condition: WriteCondition,
    ) -> Result<String, StoreError> {
        self.put_object_with(body, condition, None).await
    }

    /// PutObject, with the user metadata `change-seq` when given.
    async fn put_object_with(
        &self,
        body: Vec<u8>,
        condition: WriteCondition,
        change_seq: Option<u64>,
    ) -> Result<String, StoreError> {
        let mut request = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&self.key)
            .content_type("application/json")
            .set_metadata(change_seq.map(|seq| {
                std::collections::HashMap::from([(
                    CHANGE_SEQ_METADATA.to_string(),
                    seq.to_string(),
                )])
            }))
            .body(body.into());
        request = match condition {
            WriteCondition::IfVersion(etag) => request.if_match(etag),
            WriteCondition::IfAbsent => request.if_none_match("*"),
            WriteCondition::Always => request,
        };
        match request.send().await {
            Ok(output) => Ok(output.e_tag().unwrap_or_default().to_string()),
            Err(error) => {
                let status = error.raw_response().map(|raw| raw.status().as_u16());
                // 412: the ETag moved; 409: a concurrent conditional write; 404: deleted meanwhile.
                if matches!(status, Some(412 | 409 | 404)) {
                    return Err(StoreError::Conflict {
                        store: self.describe(),
                    });
                }
                Err(StoreError::WriteFailed {
                    store: self.describe(),
                    message: explain(&error, self.timeout),
                })
            }
        }
    }
}

/// An object [`S3Folder::list`] found: its key and the size the listing gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
}

/// How far [`S3Folder::list`] goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListLimits {
    /// The most objects kept.
    pub keep: usize,
    /// The most objects and sub-prefixes gone through in all, kept or not.
    pub seen: usize,
}

/// The entries a listing has gone through, against its limit.
struct Seen {
    count: usize,
    limit: usize,
}

impl Seen {
    fn new(limit: usize) -> Self {
        Seen { count: 0, limit }
    }

    /// Counts `entries` more; the limit when that passes it.
    fn add(&mut self, entries: usize) -> Result<(), usize> {
        self.count = self.count.saturating_add(entries);
        if self.count > self.limit {
            return Err(self.limit);
        }
        Ok(())
    }
}

/// The objects directly under a prefix of a bucket — a "folder", `/` delimiting — listed and read
/// through one client: a fleet's usage reports. Objects in sub-prefixes (`PREFIX/sub/x`) are
/// never listed, so they are neither read nor counted.
pub struct S3Folder {
    store: S3Store,
    prefix: String,
}

impl S3Folder {
    /// Builds a client from the AWS environment and `options`. Nothing is contacted yet.
    pub async fn connect(bucket: &str, prefix: &str, options: &S3Options) -> Self {
        let store = S3Store::connect(bucket.to_string(), prefix.to_string(), options, 0).await;
        S3Folder {
            store,
            prefix: prefix.to_string(),
        }
    }

    /// The objects directly under the prefix that `keep` accepts, at most `limits.keep` of them
    /// (page by page; objects `keep` refuses are not kept). Every object and sub-prefix a page
    /// holds counts against `limits.seen`: past it the listing stops with
    /// [`StoreError::TooManyListed`], so that a prefix flooded with other objects is not paged
    /// through for ever.
    pub async fn list(
        &self,
        limits: ListLimits,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<ListedObject>, StoreError> {
        let mut listed = Vec::new();
        let mut seen = Seen::new(limits.seen);
        let mut pages = self
            .store
            .client
            .list_objects_v2()
            .bucket(&self.store.bucket)
            .prefix(&self.prefix)
            .delimiter("/")
            .into_paginator()
            .send();
        while listed.len() < limits.keep
            && let Some(page) = pages.next().await
        {
            let page =
                page.map_err(|error| self.store.unavailable(explain(&error, self.store.timeout)))?;
            seen.add(page.contents().len() + page.common_prefixes().len())
                .map_err(|limit| StoreError::TooManyListed {
                    store: self.store.describe(),
                    limit,
                })?;
            listed.extend(page.contents().iter().filter_map(|object| {
                let key = object.key().filter(|key| keep(key))?;
                Some(ListedObject {
                    key: key.to_string(),
                    size: object.size().unwrap_or(0).max(0) as u64,
                })
            }));
        }
        listed.truncate(limits.keep);
        Ok(listed)
    }

    /// Reads one object of the bucket, refusing it past `max_body_bytes` (as the key store's
    /// fetch does, within the S3 timeout).
    pub async fn read(&self, key: &str, max_body_bytes: u64) -> Result<Fetched, StoreError> {
        let object = S3Store {
            client: self.store.client.clone(),
            bucket: self.store.bucket.clone(),
            key: key.to_string(),
            endpoint: self.store.endpoint.clone(),
            max_body_bytes,
            timeout: self.store.timeout,
        };
        object.fetch_object(None).await
    }
}

/// The AWS environment (credentials chain, profile, region) with `region` over the chain's, and
/// `us-east-1` (the Python service's default) when neither names one.
pub(crate) async fn aws_environment(region: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(Region::new(region.to_string()));
    }
    let shared = loader.load().await;
    if shared.region().is_some() {
        return shared;
    }
    shared
        .into_builder()
        .region(Region::new("us-east-1"))
        .build()
}

/// One line saying what went wrong with an S3 call, without the SDK's debug dump (which repeats
/// itself and carries the raw answer).
fn explain<E>(error: &SdkError<E, HttpResponse>, timeout: Duration) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    explain_call("S3", error, timeout)
}

/// [`explain`] for any AWS service's call (`service` names it: "S3", "SQS").
pub(crate) fn explain_call<E>(
    service: &str,
    error: &SdkError<E, HttpResponse>,
    timeout: Duration,
) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match error {
        SdkError::ServiceError(answer) => {
            let mut text = format!("{service} answered HTTP {}", answer.raw().status().as_u16());
            if let Some(code) = answer.err().code() {
                text.push(' ');
                text.push_str(code);
            }
            if let Some(message) = answer.err().message() {
                text.push_str(": ");
                text.push_str(message);
            }
            text
        }
        SdkError::TimeoutError(_) => {
            format!(
                "no answer within the {service} timeout of {}",
                seconds(timeout)
            )
        }
        SdkError::DispatchFailure(failure) if failure.is_timeout() => format!(
            "no connection within the {service} timeout of {}: {}",
            seconds(timeout),
            chain(error)
        ),
        SdkError::DispatchFailure(_) => format!("cannot reach {service}: {}", chain(error)),
        SdkError::ResponseError(_) => {
            format!("unreadable answer from {service}: {}", chain(error))
        }
        _ => format!("cannot send the request to {service}: {}", chain(error)),
    }
}

/// The messages of `error`'s causes (not of `error` itself), joined with ": ", skipping the SDK's
/// one-word wrappers ("other", "io error") and repeats.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut cause = error.source();
    while let Some(current) = cause {
        let text = current.to_string();
        if !matches!(text.as_str(), "other" | "io error" | "") && parts.last() != Some(&text) {
            parts.push(text);
        }
        cause = current.source();
    }
    if parts.is_empty() {
        error.to_string()
    } else {
        parts.join(": ")
    }
}

/// `2s`, `1.5s`: a timeout as the configuration writes it.
fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

impl KeyStore for S3Store {
    fn describe(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.key)
    }

    fn endpoint(&self) -> Option<String> {
        self.endpoint.clone()
    }

    fn fetch<'a>(
        &'a self,
        if_changed_from: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Fetched, StoreError>> {
        Box::pin(self.fetch_object(if_changed_from))
    }

    fn head<'a>(
        &'a self,
        if_changed_from: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Option<Headed>, StoreError>> {
        Box::pin(async move { self.head_object(if_changed_from).await.map(Some) })
    }

    fn put<'a>(
        &'a self,
        body: Vec<u8>,
        condition: WriteCondition,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(self.put_object(body, condition))
    }

    fn put_at_change<'a>(
        &'a self,
        body: Vec<u8>,
        condition: WriteCondition,
        change_seq: u64,
    ) -> BoxFuture<'a, Result<String, StoreError>> {
        Box::pin(self.put_object_with(body, condition, Some(change_seq)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listing_stops_past_its_limit_of_entries() {
        let mut seen = Seen::new(2_500);
        assert_eq!(seen.add(1_000), Ok(()));
        assert_eq!(seen.add(1_000), Ok(()));
        assert_eq!(seen.add(500), Ok(()), "up to the limit is fine");
        assert_eq!(seen.add(1), Err(2_500), "one past it is not");
        let mut flood = Seen::new(10);
        assert_eq!(flood.add(usize::MAX), Err(10));
        assert_eq!(flood.add(usize::MAX), Err(10), "the count does not wrap");
    }
}
