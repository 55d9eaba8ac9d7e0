//! The store URL: `s3://BUCKET/KEY` or `file:///ABSOLUTE/PATH`, parsed once and printed back.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// Which store holds the key file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    S3 { bucket: String, key: String },
    File { path: PathBuf },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "store URL {url:?} is not valid: {why} (expected s3://BUCKET/KEY or file:///ABSOLUTE/PATH)"
)]
pub struct StoreUrlError {
    url: String,
    why: &'static str,
}

impl StoreUrl {
    /// The S3 store named by the Python service's variables `S3_BUCKET` and `S3_KEY`.
    pub fn s3(bucket: &str, key: &str) -> Self {
        StoreUrl::S3 {
            bucket: bucket.to_string(),
            key: key.to_string(),
        }
    }
}

impl FromStr for StoreUrl {
    type Err = StoreUrlError;
    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let error = |why| StoreUrlError {
            url: url.to_string(),
            why,
        };
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, key) = rest
                .split_once('/')
                .ok_or(error("no object key after the bucket"))?;
            if bucket.is_empty() || bucket.contains('@') {
                return Err(error("the bucket name is empty or holds credentials"));
            }
            if key.is_empty() {
                return Err(error("the object key is empty"));
            }
            return Ok(StoreUrl::s3(bucket, key));
        }
        if let Some(path) = url.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err(error(
                    "a file URL needs an absolute path (file:///var/lib/...)",
                ));
            }
            return Ok(StoreUrl::File {
                path: PathBuf::from(path),
            });
        }
        Err(error("unknown scheme"))
    }
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreUrl::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            StoreUrl::File { path } => write!(f, "file://{}", path.display()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_both_schemes() {
        for text in [
            "s3://bucket/keys.json",
            "s3://b/dir/sub/keys.json",
            "file:///var/lib/k.json",
        ] {
            assert_eq!(text.parse::<StoreUrl>().unwrap().to_string(), text);
        }
        assert_eq!(
            "s3://b/a/b.json".parse::<StoreUrl>().unwrap(),
            StoreUrl::s3("b", "a/b.json")
        );
    }

    #[test]
    fn rejects_what_it_cannot_read() {
        for text in [
            "s3://bucket",
            "s3:///key",
            "s3://bucket/",
            "file://relative/x",
            "http://x/y",
            "/abs",
        ] {
            assert!(text.parse::<StoreUrl>().is_err(), "{text}");
        }
    }
}
