//! Who the AWS credentials belong to — STS `GetCallerIdentity` — for the change log's record of
//! who wrote a change.
//!
//! Asked only of AWS itself: with `[s3] endpoint` set the store is an S3-compatible server
//! (MinIO, Ceph, a test server) that has no STS, and nothing is asked. The answer must arrive
//! within the S3 timeout; any failure leaves the principal unknown (the record then has the
//! login and host only) and never fails the write.

use crate::S3Options;
use std::time::Duration;

/// The caller's ARN, or `None` when not asked, not reachable in time, or refused.
pub async fn caller_arn(options: &S3Options) -> Option<String> {
    if options.endpoint.is_some() {
        return None;
    }
    let shared = crate::s3::aws_environment(options.region.as_deref()).await;
    let client = aws_sdk_sts::Client::new(&shared);
    let call = client.get_caller_identity().send();
    match tokio::time::timeout(options.timeout.min(Duration::from_secs(10)), call).await {
        Ok(Ok(identity)) => identity.arn().map(str::to_string),
        _ => None,
    }
}
