//! One `moto_server` child process on 127.0.0.1 serving S3, SNS and SQS together, for the fleet
//! simulation and the push-notification tests.
//!
//! moto in server mode is one HTTP endpoint for every service (it tells them apart by the
//! SigV4 credential scope), and it implements S3 bucket notifications to SNS topics and SNS
//! deliveries to SQS queues, which the in-process s3s server of [`crate::s3_server`] does not.
//! Also here: the `aws-sdk-*` configurations (static test credentials, path-style S3) that the
//! fleet's own setup calls use against it. The process is killed (with its process group) when
//! [`Moto`] is dropped; its output goes to a log file in a temporary directory.

use crate::s3_server::{ACCESS_KEY, MotoBackend, REGION, SECRET_KEY};
use anyhow::Context as _;

/// A running `moto_server` (see the module docs), started by the same launcher as the S3 tests'
/// moto backend ([`MotoBackend`]).
pub struct Moto {
    port: u16,
    /// Kills the process when dropped.
    _server: MotoBackend,
}

impl Moto {
    /// Starts `moto_server` (or `$HEARE_TEST_MOTO_SERVER`) on a free port of 127.0.0.1 and waits
    /// until it answers HTTP.
    pub fn start() -> anyhow::Result<Moto> {
        let (server, port) = MotoBackend::start()?;
        Ok(Moto {
            port,
            _server: server,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn credentials() -> aws_sdk_s3::config::Credentials {
    aws_sdk_s3::config::Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "heare-auth-fleet")
}

/// An S3 client of `endpoint` (path-style, the test credentials). Build it inside the tokio
/// runtime that drives it.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    let config = aws_sdk_s3::Config::builder()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .force_path_style(true)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An SNS client of `endpoint` (the test credentials).
pub fn sns_client(endpoint: &str) -> aws_sdk_sns::Client {
    let config = aws_sdk_sns::Config::builder()
        .behavior_version(aws_sdk_sns::config::BehaviorVersion::latest())
        .region(aws_sdk_sns::config::Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sns::Client::from_conf(config)
}

/// An SQS client of `endpoint` (the test credentials).
pub fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let config = aws_sdk_sqs::Config::builder()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new(REGION))
        .credentials_provider(credentials())
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(config)
}

/// Runs `future` to completion on a private current-thread runtime, on a thread of its own, so
/// that it works from plain code and from inside another runtime alike.
pub fn block_on<F>(future: F) -> anyhow::Result<F::Output>
where
    F: std::future::Future + Send,
    F::Output: Send,
{
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .context("building a tokio runtime")?;
                Ok(runtime.block_on(future))
            })
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}
