//! A real, S3-compatible HTTP server for the end-to-end tests.
//!
//! This module owns the S3 endpoint that the end-to-end tests point the
//! `heare-authd` daemon (and any other child process) at. It is deliberately a
//! *real* server speaking the S3 REST protocol over HTTP on `127.0.0.1`, with
//! SigV4 authentication, rather than a mock of our own S3 client code: the
//! daemon under test uses the unmodified `aws-sdk-s3` client, so these tests
//! exercise request signing, path-style addressing, error parsing, retries and
//! connection handling exactly as production does.
//!
//! Two backends sit behind the single [`S3Server`] type:
//!
//! * **s3s** (default): [`s3s`] + [`s3s_fs`] (pinned at `=0.14.1`; newer
//!   releases need a newer Rust than the workspace's), served in-process by
//!   hyper on a private tokio runtime, storing objects under a temporary
//!   directory. `s3s_fs::FileSystem` has two gaps that matter to heare-auth,
//!   and the thin `ConditionalFs` wrapper closes both:
//!   1. GetObject/HeadObject ignore `If-None-Match` (and `If-Match`). The
//!      wrapper answers `304 Not Modified` when `If-None-Match` matches the
//!      object's current ETag and `412 Precondition Failed` when `If-Match`
//!      does not, like real S3.
//!   2. PutObject checks `If-Match` / `If-None-Match: *` *before* streaming
//!      the body and writes afterwards, so two racing conditional writers can
//!      both succeed. The wrapper serialises every mutating operation under a
//!      write lock (reads take the read lock), so the precondition check and
//!      the write are atomic: exactly one of several racing `If-Match` writers
//!      wins, the rest get `412`, like real S3.
//! * **moto**: with `HEARE_TEST_S3=moto`, [`S3Server::start`] launches
//!   `moto_server` (Python package `moto[server]`) as a child process instead,
//!   to cross-check behaviour against an independent implementation. See
//!   [`S3Server::restart`] for how it differs (it loses its data on restart).
//!
//! The API is synchronous so that tests can be plain `#[test]` functions: the
//! server (and the S3 client used by the helper methods) runs on its own tokio
//! runtime, on background threads.

use crate::ctl::Ctl;
use crate::daemon::DaemonBuilder;
use crate::process::Group;
use std::ffi::OsString;
use std::future::Future;
use std::io::Read as _;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::ByteStream;
use hyper_util::rt::{TokioIo, TokioTimer};
use s3s::dto::{
    AbortMultipartUploadInput, AbortMultipartUploadOutput, CompleteMultipartUploadInput,
    CompleteMultipartUploadOutput, CopyObjectInput, CopyObjectOutput, CreateBucketInput,
    CreateBucketOutput, CreateMultipartUploadInput, CreateMultipartUploadOutput, DeleteBucketInput,
    DeleteBucketOutput, DeleteObjectInput, DeleteObjectOutput, DeleteObjectsInput,
    DeleteObjectsOutput, ETag, ETagCondition, GetBucketLocationInput, GetBucketLocationOutput,
    GetObjectInput, GetObjectOutput, HeadBucketInput, HeadBucketOutput, HeadObjectInput,
    HeadObjectOutput, ListBucketsInput, ListBucketsOutput, ListObjectsInput, ListObjectsOutput,
    ListObjectsV2Input, ListObjectsV2Output, ListPartsInput, ListPartsOutput, PutObjectInput,
    PutObjectOutput, Timestamp, TimestampFormat, UploadPartCopyInput, UploadPartCopyOutput,
    UploadPartInput, UploadPartOutput,
};
use s3s::{S3, S3Error, S3ErrorCode, S3Request, S3Response, S3Result};
use tokio::sync::{RwLock, oneshot};
use tokio::task::{JoinHandle, JoinSet};

/// Access key id accepted by the server (and sent by [`S3Server::env_for_client`]).
pub const ACCESS_KEY: &str = "HEAREAUTHTESTACCESSKEY";
/// Secret access key matching [`ACCESS_KEY`].
pub const SECRET_KEY: &str = "heare-auth-test-secret-key-0123456789abcdef";
/// Region the clients sign for. The s3s backend accepts any region.
pub const REGION: &str = "us-east-1";

/// Environment variable selecting the backend: unset, empty or `s3s` for the
/// in-process s3s server, `moto` for a `moto_server` child process.
pub const BACKEND_ENV: &str = "HEARE_TEST_S3";
/// Optional override for the `moto_server` executable (default: `moto_server`
/// looked up on `PATH`).
pub const MOTO_BIN_ENV: &str = "HEARE_TEST_MOTO_SERVER";

/// How long the helper methods wait for any single S3 operation.
const HELPER_OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to wait for `moto_server` to start answering.
const MOTO_STARTUP_TIMEOUT: Duration = Duration::from_secs(60);
/// How long `restart()` keeps retrying to re-bind the same port.
const REBIND_TIMEOUT: Duration = Duration::from_secs(5);

/// A running S3-compatible server on `127.0.0.1` (see the module docs).
///
/// Dropping it stops the server, kills any child process and removes the
/// temporary data directory.
pub struct S3Server {
    port: u16,
    /// Handle of `runtime`; kept separately so `Drop` can take the runtime.
    handle: tokio::runtime::Handle,
    runtime: Option<tokio::runtime::Runtime>,
    /// Client used by the helper methods; lives on `runtime`.
    client: aws_sdk_s3::Client,
    backend: Backend,
}

enum Backend {
    S3s(S3sBackend),
    Moto(MotoBackend),
}

impl S3Server {
    /// Starts a server on a random free port of `127.0.0.1`.
    ///
    /// Uses the in-process s3s backend, or `moto_server` when the environment
    /// variable `HEARE_TEST_S3=moto` is set.
    pub fn start() -> anyhow::Result<S3Server> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-test-server")
            .enable_all()
            .build()
            .context("building the S3 test server's tokio runtime")?;
        let handle = runtime.handle().clone();

        let choice = std::env::var(BACKEND_ENV).unwrap_or_default();
        let (backend, port) = match choice.as_str() {
            "" | "s3s" => {
                let (backend, port) = S3sBackend::start(&handle)?;
                (Backend::S3s(backend), port)
            }
            "moto" => {
                let (backend, port) = MotoBackend::start()?;
                (Backend::Moto(backend), port)
            }
            other => {
                bail!("{BACKEND_ENV}={other:?} is not a known S3 backend (use `s3s` or `moto`)")
            }
        };

        let config = sdk_config_for(&endpoint_for(port));
        let client = {
            // The SDK's HTTP client spawns its connection tasks on the ambient runtime.
            let _guard = handle.enter();
            aws_sdk_s3::Client::from_conf(config)
        };
        Ok(S3Server {
            port,
            handle,
            runtime: Some(runtime),
            client,
            backend,
        })
    }

    /// Base URL of the server, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        endpoint_for(self.port)
    }

    /// TCP port the server listens on (stable across [`S3Server::restart`]).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Name of the backend actually running: `"s3s"` or `"moto"`.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::S3s(_) => "s3s",
            Backend::Moto(_) => "moto",
        }
    }

    /// A fresh `aws-sdk-s3` configuration for this server: static credentials,
    /// [`REGION`], the endpoint and path-style addressing.
    ///
    /// Build the client (`aws_sdk_s3::Client::from_conf`) inside the tokio
    /// runtime that will drive it: the SDK's connection pool is tied to it.
    pub fn sdk_config(&self) -> aws_sdk_s3::Config {
        sdk_config_for(&self.endpoint())
    }

    /// Environment for a child process using the AWS SDK's default
    /// configuration chain: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`, plus `AWS_EC2_METADATA_DISABLED=true`
    /// so nothing stalls probing for an instance-metadata service.
    ///
    /// The endpoint is an IP address, for which the S3 endpoint rules already
    /// select path-style addressing.
    pub fn env_for_client(&self) -> Vec<(String, String)> {
        [
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.to_owned()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.to_owned()),
            ("AWS_REGION", REGION.to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// The real daemon on `s3://BUCKET/OBJECT` of this server (path-style), its last-known-good
    /// cache in `dir`, with a 2 s S3 timeout.
    pub fn daemon(&self, dir: &std::path::Path, bucket: &str, object: &str) -> DaemonBuilder {
        DaemonBuilder::new(dir)
            .args([
                "--store",
                &format!("s3://{bucket}/{object}"),
                "--s3-path-style",
            ])
            .arg("--cache")
            .arg(dir.join("keys.cache").display().to_string())
            .config("[s3]\ntimeout = \"2s\"\n")
            .envs(self.env_for_client())
    }

    /// The real heare-authctl on `s3://BUCKET/OBJECT` of this server (path-style), with `env`
    /// added to the server's credentials; `socket` is the daemon it reloads.
    pub fn ctl(
        &self,
        dir: &std::path::Path,
        (bucket, object): (&str, &str),
        socket: &std::path::Path,
        env: &[(&str, &str)],
    ) -> Ctl {
        let mut vars = self.env_for_client();
        vars.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Ctl::new(dir, &format!("s3://{bucket}/{object}"), socket)
            .config_text("[s3]\npath_style = true\n")
            .env(vars)
    }

    /// Creates `bucket` (via a real `CreateBucket` request).
    pub fn create_bucket(&self, bucket: &str) -> anyhow::Result<()> {
        let request = self.client.create_bucket().bucket(bucket);
        self.block_on(async move { request.send().await })
            .map_err(|e| anyhow!("CreateBucket {bucket}: {}", DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Uploads `body` to `bucket`/`key` (unconditionally) and returns the ETag
    /// exactly as the server sent it, i.e. including the double quotes.
    pub fn put_object(&self, bucket: &str, key: &str, body: &[u8]) -> anyhow::Result<String> {
        let request = self
            .client
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body.to_vec()));
        let output = self
            .block_on(async move { request.send().await })
            .map_err(|e| anyhow!("PutObject {bucket}/{key}: {}", DisplayErrorContext(e)))?;
        output
            .e_tag
            .ok_or_else(|| anyhow!("PutObject {bucket}/{key}: response carried no ETag"))
    }

    /// Downloads `bucket`/`key`; `Ok(None)` if the key does not exist.
    pub fn get_object(&self, bucket: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
        let request = self.client.get_object().bucket(bucket).key(key);
        self.block_on(async move {
            let output = match request.send().await {
                Ok(output) => output,
                Err(e) => {
                    let e = e.into_service_error();
                    if e.is_no_such_key() {
                        return Ok(None);
                    }
                    bail!("GetObject {bucket}/{key}: {}", DisplayErrorContext(e));
                }
            };
            let body = output
                .body
                .collect()
                .await
                .with_context(|| format!("GetObject {bucket}/{key}: reading the body"))?;
            Ok(Some(body.into_bytes().to_vec()))
        })
    }

    /// The user metadata of `bucket`/`key` (HeadObject), by name without `x-amz-meta-`.
    pub fn metadata(
        &self,
        bucket: &str,
        key: &str,
    ) -> anyhow::Result<std::collections::HashMap<String, String>> {
        let request = self.client.head_object().bucket(bucket).key(key);
        let output = self
            .block_on(async move { request.send().await })
            .map_err(|e| anyhow!("HeadObject {bucket}/{key}: {}", DisplayErrorContext(e)))?;
        Ok(output.metadata.unwrap_or_default())
    }

    /// Deletes `bucket`/`key` (succeeds if it does not exist, like S3).
    pub fn delete_object(&self, bucket: &str, key: &str) -> anyhow::Result<()> {
        let request = self.client.delete_object().bucket(bucket).key(key);
        self.block_on(async move { request.send().await })
            .map_err(|e| anyhow!("DeleteObject {bucket}/{key}: {}", DisplayErrorContext(e)))?;
        Ok(())
    }

    /// Copies `bucket`/`from` to `bucket`/`to` on the server (CopyObject): a large object many
    /// times over without sending it again.
    pub fn copy_object(&self, bucket: &str, from: &str, to: &str) -> anyhow::Result<()> {
        let request = self
            .client
            .copy_object()
            .bucket(bucket)
            .copy_source(format!("{bucket}/{from}"))
            .key(to);
        self.block_on(async move { request.send().await })
            .map_err(|e| {
                anyhow!(
                    "CopyObject {bucket}/{from} to {to}: {}",
                    DisplayErrorContext(e)
                )
            })?;
        Ok(())
    }

    /// Simulates S3 being down: stops listening (new connections are refused)
    /// and drops every open connection. Idempotent.
    ///
    /// For moto this kills the `moto_server` process.
    pub fn stop(&mut self) {
        let listening = match &mut self.backend {
            Backend::S3s(backend) => backend.listening.take(),
            Backend::Moto(backend) => {
                backend.kill();
                None
            }
        };
        if let Some(listening) = listening {
            let _ = listening.shutdown.send(());
            // Wait until the listener is closed and every connection is dropped.
            let _ = self.block_on(listening.task);
        }
    }

    /// Starts listening again on the **same port** after [`S3Server::stop`]
    /// (a no-op if it is running).
    ///
    /// With the s3s backend the data survives (same directory). With moto the
    /// restarted process starts **empty**: moto keeps everything in memory, so
    /// buckets and objects created before `stop()` are gone and must be
    /// recreated by the test.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        let port = self.port;
        match &mut self.backend {
            Backend::S3s(backend) => {
                if backend.listening.is_none() {
                    backend.listening = Some(backend.listen(&self.handle, port)?);
                }
                Ok(())
            }
            Backend::Moto(backend) => {
                if backend.child.is_none() {
                    backend.spawn_and_wait(port)?;
                }
                Ok(())
            }
        }
    }

    /// Runs `future` on the server's runtime, blocking the calling thread.
    fn block_on<F>(&self, future: F) -> F::Output
    where
        F: Future + Send,
        F::Output: Send,
    {
        block_on_handle(&self.handle, future)
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        if let Some(runtime) = self.runtime.take() {
            // Every server task has been joined by `stop()`; what is left (the
            // helper client's idle connections) can be dropped in the background.
            // Unlike a plain drop this is allowed inside an async context.
            runtime.shutdown_background();
        }
        // The backends' temporary directories are removed when they drop.
    }
}

/// `handle.block_on(future)`, usable even from a thread that is itself inside
/// a tokio runtime (e.g. a `#[tokio::test]`), where `block_on` would panic.
fn block_on_handle<F>(handle: &tokio::runtime::Handle, future: F) -> F::Output
where
    F: Future + Send,
    F::Output: Send,
{
    if tokio::runtime::Handle::try_current().is_err() {
        return handle.block_on(future);
    }
    std::thread::scope(
        |scope| match scope.spawn(|| handle.block_on(future)).join() {
            Ok(output) => output,
            Err(panic) => std::panic::resume_unwind(panic),
        },
    )
}

fn endpoint_for(port: u16) -> String {
    format!("http://127.0.0.1:{port}")
}

fn sdk_config_for(endpoint: &str) -> aws_sdk_s3::Config {
    aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new(REGION))
        .credentials_provider(Credentials::new(
            ACCESS_KEY,
            SECRET_KEY,
            None,
            None,
            "heare-auth-tests",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_timeout(HELPER_OPERATION_TIMEOUT)
                .build(),
        )
        .build()
}

// ---------------------------------------------------------------------------
// s3s backend
// ---------------------------------------------------------------------------

struct S3sBackend {
    service: s3s::service::S3Service,
    listening: Option<Listening>,
    /// Object storage; removed on drop. Declared last so it outlives the service.
    _root: tempfile::TempDir,
}

/// One accept loop: dropping/sending `shutdown` makes it close the listener,
/// abort every connection and finish.
struct Listening {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl S3sBackend {
    fn start(handle: &tokio::runtime::Handle) -> anyhow::Result<(S3sBackend, u16)> {
        let root = tempfile::Builder::new()
            .prefix("heare-auth-s3-")
            .tempdir()
            .context("creating the S3 test server's data directory")?;
        let fs = s3s_fs::FileSystem::new(root.path())
            .map_err(|e| anyhow!("initialising s3s-fs in {}: {e:?}", root.path().display()))?;
        let mut builder = s3s::service::S3ServiceBuilder::new(ConditionalFs {
            inner: fs,
            lock: RwLock::new(()),
        });
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let mut backend = S3sBackend {
            service: builder.build(),
            listening: None,
            _root: root,
        };

        let listener = {
            let _guard = handle.enter();
            bind_listener(0).context("binding the S3 test server to 127.0.0.1:0")?
        };
        let port = listener
            .local_addr()
            .context("reading the S3 test server's address")?
            .port();
        backend.listening = Some(backend.serve(handle, listener));
        Ok((backend, port))
    }

    /// Binds `port` again, retrying briefly in case the port is still held.
    fn listen(&self, handle: &tokio::runtime::Handle, port: u16) -> anyhow::Result<Listening> {
        let _guard = handle.enter();
        let deadline = Instant::now() + REBIND_TIMEOUT;
        let listener = loop {
            match bind_listener(port) {
                Ok(listener) => break listener,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("re-binding 127.0.0.1:{port}"));
                }
            }
        };
        Ok(self.serve(handle, listener))
    }

    fn serve(
        &self,
        handle: &tokio::runtime::Handle,
        listener: tokio::net::TcpListener,
    ) -> Listening {
        let (shutdown, shutdown_rx) = oneshot::channel();
        let task = handle.spawn(accept_loop(listener, self.service.clone(), shutdown_rx));
        Listening { shutdown, task }
    }
}

/// A listener on `127.0.0.1:port` with `SO_REUSEADDR`, so that `restart()` can
/// re-bind the port while connections we closed linger in `TIME_WAIT`.
/// Must be called within a tokio runtime context.
fn bind_listener(port: u16) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port)))?;
    socket.listen(1024)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    service: s3s::service::S3Service,
    mut shutdown: oneshot::Receiver<()>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            // Fires on an explicit shutdown and when the sender is dropped.
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Without TCP_NODELAY, small responses wait ~40 ms on Nagle + delayed ACK.
                    let _ = stream.set_nodelay(true);
                    let service = service.clone();
                    connections.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .timer(TokioTimer::new())
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    });
                }
                // E.g. EMFILE: back off instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    // Refuse new connections first, then cut every open one (aborting a task
    // drops its socket), and wait until they are all gone.
    drop(listener);
    connections.shutdown().await;
}

/// `s3s_fs::FileSystem` plus the two behaviours heare-auth relies on (see the
/// module docs): conditional reads (`304` / `412`) and conditional writes whose
/// precondition check is atomic with the write.
///
/// Concurrency model: every operation that changes an object holds `lock` for
/// writing; GetObject/HeadObject hold it for reading until the response (file
/// handle + ETag) is ready. Besides making check-then-write atomic, this stops
/// readers from seeing s3s-fs's intermediate state where the new data file is
/// in place but the old ETag is still recorded.
struct ConditionalFs {
    inner: s3s_fs::FileSystem,
    lock: RwLock<()>,
}

impl ConditionalFs {
    /// The current ETag of `bucket`/`key`, `None` if the key does not exist.
    /// Propagates other errors (e.g. `NoSuchBucket`). Caller holds `lock`.
    async fn current_etag<T>(
        &self,
        req: &S3Request<T>,
        bucket: &str,
        key: &str,
    ) -> S3Result<Option<ETag>> {
        let mut input = HeadObjectInput::builder();
        input.set_bucket(bucket.to_owned());
        input.set_key(key.to_owned());
        let input = input.build().map_err(|e| {
            S3Error::with_message(S3ErrorCode::InternalError, format!("HeadObjectInput: {e}"))
        })?;
        let head = S3Request {
            input,
            method: hyper::Method::HEAD,
            uri: req.uri.clone(),
            headers: hyper::HeaderMap::new(),
            extensions: hyper::http::Extensions::new(),
            credentials: req.credentials.clone(),
            region: req.region.clone(),
            service: req.service.clone(),
            trailing_headers: None,
        };
        match self.inner.head_object(head).await {
            Ok(response) => Ok(response.output.e_tag),
            Err(e) if *e.code() == S3ErrorCode::NoSuchKey => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn precondition_failed() -> S3Error {
    S3Error::with_message(
        S3ErrorCode::PreconditionFailed,
        "At least one of the pre-conditions you specified did not hold",
    )
}

/// RFC 9110 §13.2.2 evaluation of `If-Match` then `If-None-Match` for a read of
/// an existing object: `412` if `If-Match` fails, `304` (carrying the ETag and
/// Last-Modified, as S3 does) if `If-None-Match` matches.
fn check_read_preconditions(
    etag: Option<&ETag>,
    last_modified: Option<&Timestamp>,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
) -> S3Result<()> {
    if let Some(condition) = if_match {
        let holds = match condition {
            ETagCondition::Any => true,
            ETagCondition::ETag(expected) => {
                etag.is_some_and(|current| current.strong_cmp(expected))
            }
        };
        if !holds {
            return Err(precondition_failed());
        }
    }
    if let Some(condition) = if_none_match {
        let matches = match condition {
            ETagCondition::Any => true,
            ETagCondition::ETag(expected) => etag.is_some_and(|current| current.weak_cmp(expected)),
        };
        if matches {
            let mut error = S3Error::with_message(S3ErrorCode::NotModified, "Not Modified");
            // NotModified maps to 304 already; be explicit since clients rely on it.
            error.set_status_code(hyper::StatusCode::NOT_MODIFIED);
            let mut headers = hyper::HeaderMap::new();
            if let Some(value) = etag.and_then(|etag| etag.to_http_header().ok()) {
                headers.insert(hyper::header::ETAG, value);
            }
            if let Some(timestamp) = last_modified {
                let mut date = Vec::new();
                if timestamp
                    .format(TimestampFormat::HttpDate, &mut date)
                    .is_ok()
                    && let Ok(value) = hyper::header::HeaderValue::from_bytes(&date)
                {
                    headers.insert(hyper::header::LAST_MODIFIED, value);
                }
            }
            error.set_headers(headers);
            return Err(error);
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl S3 for ConditionalFs {
    // --- the two gaps -------------------------------------------------------

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let if_match = req.input.if_match.clone();
        let if_none_match = req.input.if_none_match.clone();
        let _read = self.lock.read().await;
        // Let s3s-fs open the file and report its ETag, then judge the
        // preconditions on that same version (dropping the body if they fail).
        let response = self.inner.get_object(req).await?;
        check_read_preconditions(
            response.output.e_tag.as_ref(),
            response.output.last_modified.as_ref(),
            if_match.as_ref(),
            if_none_match.as_ref(),
        )?;
        Ok(response)
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let if_match = req.input.if_match.clone();
        let if_none_match = req.input.if_none_match.clone();
        let _read = self.lock.read().await;
        let response = self.inner.head_object(req).await?;
        check_read_preconditions(
            response.output.e_tag.as_ref(),
            response.output.last_modified.as_ref(),
            if_match.as_ref(),
            if_none_match.as_ref(),
        )?;
        Ok(response)
    }

    /// Conditional PutObject, with the check and the write under one write lock.
    ///
    /// * `If-None-Match: *` and the key exists: `412 PreconditionFailed`.
    /// * `If-Match: <etag>` (or `*`) and the key exists with another ETag: `412`.
    /// * `If-Match` and the key does not exist: `404 NoSuchKey` — what AWS
    ///   documents for conditional writes, and what moto does.
    /// * `If-None-Match: <etag>`: S3 only supports `*` on writes: `501`.
    async fn put_object(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let _write = self.lock.write().await;
        let if_match = req.input.if_match.take();
        let if_none_match = req.input.if_none_match.take();
        if if_match.is_some() || if_none_match.is_some() {
            if matches!(if_none_match, Some(ETagCondition::ETag(_))) {
                return Err(S3Error::with_message(
                    S3ErrorCode::NotImplemented,
                    "If-None-Match on PutObject only supports the value *",
                ));
            }
            let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
            let current = self.current_etag(&req, &bucket, &key).await?;
            if if_none_match.is_some() && current.is_some() {
                return Err(precondition_failed());
            }
            if let Some(condition) = &if_match {
                let Some(current) = &current else {
                    return Err(S3Error::with_message(
                        S3ErrorCode::NoSuchKey,
                        "The specified key does not exist.",
                    ));
                };
                if let ETagCondition::ETag(expected) = condition
                    && !current.strong_cmp(expected)
                {
                    return Err(precondition_failed());
                }
            }
        }
        // Conditions (already evaluated) stripped: s3s-fs would re-check them.
        self.inner.put_object(req).await
    }

    // --- other mutations: delegated under the write lock --------------------

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let _write = self.lock.write().await;
        self.inner.copy_object(req).await
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let _write = self.lock.write().await;
        self.inner.delete_object(req).await
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let _write = self.lock.write().await;
        self.inner.delete_objects(req).await
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let _write = self.lock.write().await;
        self.inner.complete_multipart_upload(req).await
    }

    // --- everything else s3s-fs implements: plain delegation ----------------

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        self.inner.create_bucket(req).await
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.inner.delete_bucket(req).await
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        self.inner.head_bucket(req).await
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        self.inner.get_bucket_location(req).await
    }

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        self.inner.list_buckets(req).await
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        self.inner.list_objects(req).await
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        self.inner.list_objects_v2(req).await
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        self.inner.create_multipart_upload(req).await
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        self.inner.upload_part(req).await
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        self.inner.upload_part_copy(req).await
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        self.inner.list_parts(req).await
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.inner.abort_multipart_upload(req).await
    }
}

// ---------------------------------------------------------------------------
// moto backend
// ---------------------------------------------------------------------------

/// A `moto_server` child process on a free port of 127.0.0.1, its output in a log file; stopped
/// (its whole process group) when dropped. Also the fleet's moto ([`crate::fleet::moto::Moto`]).
pub struct MotoBackend {
    program: OsString,
    child: Option<Group>,
    /// Holds `moto_server.log` (its stdout + stderr); removed on drop.
    log_dir: tempfile::TempDir,
}

impl MotoBackend {
    /// Starts the server (`$HEARE_TEST_MOTO_SERVER`, else `moto_server`) and waits until it
    /// answers HTTP; returns it and its port.
    pub fn start() -> anyhow::Result<(MotoBackend, u16)> {
        let program =
            std::env::var_os(MOTO_BIN_ENV).unwrap_or_else(|| OsString::from("moto_server"));
        let log_dir = tempfile::Builder::new()
            .prefix("heare-auth-moto-")
            .tempdir()
            .context("creating a directory for the moto_server log")?;
        let mut backend = MotoBackend {
            program,
            child: None,
            log_dir,
        };
        // The free port is found by binding :0 and releasing it, so another
        // process could take it before moto binds; retry with a new port then.
        let mut last_error = None;
        for _ in 0..3 {
            let port = free_port()?;
            match backend.spawn_and_wait(port) {
                Ok(()) => return Ok((backend, port)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("moto_server did not start")))
    }

    fn log_path(&self) -> PathBuf {
        self.log_dir.path().join("moto_server.log")
    }

    fn spawn_and_wait(&mut self, port: u16) -> anyhow::Result<()> {
        let log_path = self.log_path();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let log_err = log
            .try_clone()
            .context("duplicating the moto_server log handle")?;
        // Own process group, so that stopping it also reaches any wrapper's children.
        let child = Group::spawn(
            Command::new(&self.program)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log_err),
        )
        .with_context(|| {
            format!(
                "launching {:?} (install it with `pip install 'moto[server]'`, \
                     or point {MOTO_BIN_ENV} at it)",
                self.program
            )
        })?;
        self.child = Some(child);

        let address = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port));
        let deadline = Instant::now() + MOTO_STARTUP_TIMEOUT;
        loop {
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait().context("polling moto_server")?
            {
                self.child = None;
                bail!(
                    "moto_server on port {port} exited during startup ({status}); log:\n{}",
                    self.log_tail()
                );
            }
            if moto_answers(address) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                bail!(
                    "moto_server did not answer on {address} within {MOTO_STARTUP_TIMEOUT:?}; log:\n{}",
                    self.log_tail()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take()
            && let Err(e) = child.stop()
        {
            eprintln!("stopping moto_server: {e}");
        }
    }

    fn log_tail(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(self.log_path()) {
            let _ = file.read_to_string(&mut text);
        }
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }
}

impl Drop for MotoBackend {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free port")?;
    Ok(listener.local_addr().context("finding a free port")?.port())
}

/// True once an HTTP server answers on `address`: it must return a status line
/// to a plain request, not merely accept the TCP connection.
fn moto_answers(address: SocketAddr) -> bool {
    use std::io::Write as _;
    let Ok(mut stream) = TcpStream::connect_timeout(&address, Duration::from_millis(200)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(2)));
    let request = b"GET /moto-api/ HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    match stream.read_exact(&mut head) {
        Ok(()) => head.starts_with(b"HTTP/1."),
        Err(_) => false,
    }
}
