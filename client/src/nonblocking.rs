//! The async client (feature `async`): the same verification as [`crate::Client`], on tokio, with
//! hyper's pooled connections over the Unix socket or TCP.
//!
//! The Unix socket is reached through this module's own connector, [`UnixConnector`]: a
//! non-blocking connect to a listen backlog that is full fails at once with `EAGAIN`, so the
//! connector retries with short sleeps until the client's timeout (the caller then sees
//! [`Error::Timeout`], as with the blocking client, not [`Error::Unavailable`]); and it checks the
//! server's uid (`SO_PEERCRED`) when [`AsyncClient::server_uids`] asked for it, before hyper
//! writes a byte. One `tokio::time::timeout` bounds each verification as a whole.

use crate::blocking::{check_locally, header_safe, interpret, tcp_address};
use crate::error::Error;
use crate::wire::VerifyRequest;
use crate::{Verified, default_socket_path};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::borrow::Cow;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// First pause between connection attempts while the daemon's listen backlog is full; doubled up
/// to [`MAX_RETRY_PAUSE`].
const FIRST_RETRY_PAUSE: Duration = Duration::from_millis(5);
const MAX_RETRY_PAUSE: Duration = Duration::from_millis(100);

/// Connects hyper to one Unix socket, retrying a full backlog until a time limit and checking the
/// server's uid when asked.
#[derive(Clone)]
struct UnixConnector {
    path: Arc<Path>,
    limit: Duration,
    server_uids: Option<Arc<[u32]>>,
}

/// The server's uid is not trusted; carried inside the `io::Error` hyper hands back.
#[derive(Debug, thiserror::Error)]
#[error("the server runs as uid {0}, which is not trusted")]
struct UntrustedUid(u32);

impl UnixConnector {
    async fn connect(self) -> io::Result<TokioIo<tokio::net::UnixStream>> {
        let give_up = tokio::time::Instant::now() + self.limit;
        let mut pause = FIRST_RETRY_PAUSE;
        let stream = loop {
            match tokio::net::UnixStream::connect(&*self.path).await {
                Ok(stream) => break stream,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if tokio::time::Instant::now() + pause > give_up {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the daemon's listen backlog stayed full",
                        ));
                    }
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(MAX_RETRY_PAUSE);
                }
                Err(error) => return Err(error),
            }
        };
        if let Some(uids) = &self.server_uids {
            let uid = stream.peer_cred()?.uid();
            if !uids.contains(&uid) {
                return Err(io::Error::other(UntrustedUid(uid)));
            }
        }
        Ok(TokioIo::new(stream))
    }
}

impl tower_service::Service<hyper::Uri> for UnixConnector {
    type Response = TokioIo<tokio::net::UnixStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: hyper::Uri) -> Self::Future {
        Box::pin(self.clone().connect())
    }
}

enum Target {
    Unix {
        path: PathBuf,
        client: HyperClient<UnixConnector, Full<Bytes>>,
    },
    Tcp {
        base: String,
        client: HyperClient<HttpConnector, Full<Bytes>>,
    },
}

/// An async client; cheap to clone-by-reference, safe to share between tasks.
pub struct AsyncClient {
    target: Target,
    timeout: Duration,
    user_agent: String,
    server_uids: Option<Arc<[u32]>>,
}

fn unix_client(
    path: &Path,
    timeout: Duration,
    server_uids: Option<Arc<[u32]>>,
) -> HyperClient<UnixConnector, Full<Bytes>> {
    let connector = UnixConnector {
        path: Arc::from(path),
        limit: timeout,
        server_uids,
    };
    HyperClient::builder(TokioExecutor::new()).build(connector)
}

impl AsyncClient {
    /// A client of the daemon at `socket`.
    pub fn unix(socket: impl Into<PathBuf>) -> Self {
        let path = socket.into();
        let timeout = Duration::from_secs(5);
        AsyncClient {
            target: Target::Unix {
                client: unix_client(&path, timeout, None),
                path,
            },
            timeout,
            user_agent: concat!("heare-auth-client/", env!("CARGO_PKG_VERSION")).to_string(),
            server_uids: None,
        }
    }

    /// A client of the default socket ([`crate::default_socket_path`]: `$HEARE_AUTH_SOCKET` unless
    /// the process is setuid/setgid, else the system socket).
    pub fn default_socket() -> Self {
        AsyncClient::unix(default_socket_path())
    }

    /// A client of the daemon's TCP listener, `http://host:port`.
    pub fn url(url: &str) -> Result<Self, Error> {
        let base = tcp_address(url)?;
        Ok(AsyncClient {
            target: Target::Tcp {
                base: format!("http://{base}"),
                client: HyperClient::builder(TokioExecutor::new()).build_http(),
            },
            timeout: Duration::from_secs(5),
            user_agent: concat!("heare-auth-client/", env!("CARGO_PKG_VERSION")).to_string(),
            server_uids: None,
        })
    }

    /// Bound on one verification as a whole, connecting included (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self.rebuild_unix_client();
        self
    }

    /// Trust only a daemon running as one of `uids`, checked with `SO_PEERCRED` on each new
    /// connection before anything is sent (as [`crate::ClientBuilder::server_uids`]); over TCP
    /// every server is then refused.
    pub fn server_uids(mut self, uids: impl IntoIterator<Item = u32>) -> Self {
        self.server_uids = Some(uids.into_iter().collect());
        self.rebuild_unix_client();
        self
    }

    /// The User-Agent the daemon logs.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = header_safe(&user_agent.into());
        self
    }

    fn rebuild_unix_client(&mut self) {
        if let Target::Unix { path, client } = &mut self.target {
            *client = unix_client(path, self.timeout, self.server_uids.clone());
        }
    }

    fn endpoint(&self) -> String {
        match &self.target {
            Target::Unix { path, .. } => path.display().to_string(),
            Target::Tcp { base, .. } => base.clone(),
        }
    }

    /// Verifies `secret`.
    pub async fn verify(&self, secret: &str) -> Result<Verified, Error> {
        check_locally(secret)?;
        if matches!(self.target, Target::Tcp { .. }) && self.server_uids.is_some() {
            return Err(Error::UntrustedServer {
                endpoint: self.endpoint(),
                uid: None,
            });
        }
        let request = self.request(secret)?;
        let exchange = async {
            let response = match &self.target {
                Target::Unix { client, .. } => client.request(request).await,
                Target::Tcp { client, .. } => client.request(request).await,
            }
            .map_err(|error| self.unavailable(&error))?;
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|_| Error::Protocol("the answer was cut off".into()))?
                .to_bytes();
            interpret(status, &body)
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| Error::Timeout(self.timeout))?
    }

    fn request(&self, secret: &str) -> Result<hyper::Request<Full<Bytes>>, Error> {
        let body = serde_json::to_vec(&VerifyRequest {
            api_key: Cow::Borrowed(secret),
            require_scopes: None,
        })
        .map_err(|_| Error::MalformedKey("not encodable as JSON"))?;
        let uri = match &self.target {
            Target::Unix { .. } => "http://localhost/verify".to_string(),
            Target::Tcp { base, .. } => format!("{base}/verify"),
        };
        hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, self.user_agent.as_str())
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| Error::Protocol("cannot build the request".into()))
    }

    fn unavailable(&self, error: &hyper_util::client::legacy::Error) -> Error {
        // hyper wraps the connect error; find the io::Error to tell what happened.
        let mut source: Option<&(dyn std::error::Error + 'static)> =
            std::error::Error::source(error);
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<io::Error>() {
                return self.classify_io(io);
            }
            source = cause.source();
        }
        Error::Unavailable {
            endpoint: self.endpoint(),
            reason: error.to_string(),
        }
    }

    fn classify_io(&self, io: &io::Error) -> Error {
        if let Some(UntrustedUid(uid)) = io.get_ref().and_then(|e| e.downcast_ref()) {
            return Error::UntrustedServer {
                endpoint: self.endpoint(),
                uid: Some(*uid),
            };
        }
        match (io.kind(), &self.target) {
            (io::ErrorKind::TimedOut, _) => Error::Timeout(self.timeout),
            (io::ErrorKind::PermissionDenied, Target::Unix { path, .. }) => {
                Error::PermissionDenied(path.clone())
            }
            _ => Error::Unavailable {
                endpoint: self.endpoint(),
                reason: io.to_string(),
            },
        }
    }
}
