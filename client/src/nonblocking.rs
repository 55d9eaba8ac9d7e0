//! The async client (feature `async`): the same verification as [`crate::Client`], on tokio, with
//! hyper's pooled connections over the Unix socket (hyperlocal) or TCP.

use crate::blocking::{check_locally, header_safe, interpret, tcp_address};
use crate::error::Error;
use crate::wire::VerifyRequest;
use crate::{DEFAULT_SOCKET_PATH, SOCKET_PATH_ENV, Verified};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::borrow::Cow;
use std::path::PathBuf;
use std::time::Duration;

enum Target {
    Unix {
        path: PathBuf,
        client: HyperClient<hyperlocal::UnixConnector, Full<Bytes>>,
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
}

impl AsyncClient {
    /// A client of the daemon at `socket`.
    pub fn unix(socket: impl Into<PathBuf>) -> Self {
        AsyncClient {
            target: Target::Unix {
                path: socket.into(),
                client: HyperClient::builder(TokioExecutor::new()).build(hyperlocal::UnixConnector),
            },
            timeout: Duration::from_secs(5),
            user_agent: concat!("heare-auth-client/", env!("CARGO_PKG_VERSION")).to_string(),
        }
    }

    /// A client of the default socket (`$HEARE_AUTH_SOCKET`, else the system socket).
    pub fn default_socket() -> Self {
        let socket = std::env::var_os(SOCKET_PATH_ENV)
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET_PATH));
        AsyncClient::unix(socket)
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
        })
    }

    /// Bound on one verification (default 5 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The User-Agent the daemon logs.
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = header_safe(&user_agent.into());
        self
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
        let body = serde_json::to_vec(&VerifyRequest {
            api_key: Cow::Borrowed(secret),
        })
        .map_err(|_| Error::MalformedKey("not encodable as JSON"))?;
        let uri: hyper::Uri = match &self.target {
            Target::Unix { path, .. } => hyperlocal::Uri::new(path, "/verify").into(),
            Target::Tcp { base, .. } => format!("{base}/verify")
                .parse()
                .map_err(|_| Error::Protocol("bad URL".into()))?,
        };
        let request = hyper::Request::post(uri)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::USER_AGENT, self.user_agent.as_str())
            .body(Full::new(Bytes::from(body)))
            .map_err(|_| Error::Protocol("cannot build the request".into()))?;
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

    fn unavailable(&self, error: &hyper_util::client::legacy::Error) -> Error {
        // hyper wraps the connect error; find the io::Error to tell permission from absence.
        let mut source: Option<&(dyn std::error::Error + 'static)> =
            std::error::Error::source(error);
        while let Some(cause) = source {
            if let Some(io) = cause.downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::PermissionDenied
                    && let Target::Unix { path, .. } = &self.target
                {
                    return Error::PermissionDenied(path.clone());
                }
                return Error::Unavailable {
                    endpoint: self.endpoint(),
                    reason: io.to_string(),
                };
            }
            source = cause.source();
        }
        Error::Unavailable {
            endpoint: self.endpoint(),
            reason: error.to_string(),
        }
    }
}
