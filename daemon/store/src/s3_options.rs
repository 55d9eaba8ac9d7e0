//! How to reach S3: the settings the configuration resolves, known to every build (the store
//! itself, `S3Store`, needs the `s3` feature).

use std::time::Duration;

/// How to reach S3 (beyond what the AWS environment already says).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Options {
    /// Region; when unset, the AWS chain's, else `us-east-1` (the Python service's default).
    pub region: Option<String>,
    /// Endpoint override (`http://127.0.0.1:9000` for MinIO); `AWS_ENDPOINT_URL` also works.
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), which most S3-compatible servers need.
    pub path_style: bool,
    /// Bound on one whole S3 call, retries included.
    pub timeout: Duration,
}

impl Default for S3Options {
    fn default() -> Self {
        S3Options {
            region: None,
            endpoint: None,
            path_style: false,
            timeout: Duration::from_secs(10),
        }
    }
}
