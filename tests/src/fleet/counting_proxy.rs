//! The counting proxy: the fleet's one way to S3 and SQS, where the simulation counts what "the
//! S3 server" sees and switches the S3 outage on and off.
//!
//! Every daemon is pointed at the proxy as its S3 (and SQS) endpoint; the proxy forwards each
//! request to the real server (moto), each on a fresh upstream connection, and records when it
//! arrived, what it was ([`super::classify`]), the answer's status and body size. While the
//! outage is on, S3 requests are answered `503 SlowDown` (S3's XML error) without reaching the
//! server; SQS requests still pass. It is an HTTP/1.1 server (hyper) on its own tokio runtime,
//! with keep-alive, so one daemon's pooled connections and any number of 20 s long polls are
//! served side by side. Dropping the proxy stops it and closes every connection.

use super::classify::{self, Class};
use anyhow::Context as _;
use http_body_util::{BodyExt as _, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderMap, HeaderValue};
use hyper::http::request::Parts;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The longest the proxy waits for the server's answer (long polls take 20 s).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(60);
/// Headers that belong to one connection, not to the message.
const HOP_BY_HOP: [&str; 5] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "proxy-connection",
    "upgrade",
];

/// One request through the proxy.
#[derive(Debug, Clone, Copy)]
pub struct Exchange {
    /// When its head and body had arrived.
    pub at: Instant,
    /// When it was answered (for a long poll, up to 20 s after `at`).
    pub done: Instant,
    pub class: Class,
    pub status: u16,
    /// Bytes of the answer's body.
    pub body_bytes: usize,
    /// Answered by the outage, not by the server.
    pub refused: bool,
}

/// A running proxy on 127.0.0.1 (see the module docs).
pub struct CountingProxy {
    address: SocketAddr,
    shared: Arc<Shared>,
    runtime: Option<tokio::runtime::Runtime>,
}

struct Shared {
    upstream: SocketAddr,
    outage: AtomicBool,
    exchanges: Mutex<Vec<Exchange>>,
}

/// An answer to send back.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl CountingProxy {
    /// Starts a proxy on a free port of 127.0.0.1 forwarding to `upstream` (`http://host:port`).
    pub fn start(upstream: &str) -> anyhow::Result<CountingProxy> {
        let authority = upstream.trim_start_matches("http://").trim_end_matches('/');
        let upstream: SocketAddr = authority
            .parse()
            .with_context(|| format!("upstream {upstream:?} is not http://host:port"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("counting-proxy")
            .enable_all()
            .build()
            .context("building the counting proxy's runtime")?;
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", 0)))
            .context("binding the counting proxy")?;
        let address = listener
            .local_addr()
            .context("the counting proxy's address")?;
        let shared = Arc::new(Shared {
            upstream,
            outage: AtomicBool::new(false),
            exchanges: Mutex::new(Vec::new()),
        });
        runtime.spawn(accept_loop(listener, shared.clone()));
        Ok(CountingProxy {
            address,
            shared,
            runtime: Some(runtime),
        })
    }

    /// `http://127.0.0.1:PORT`, for the daemons' S3 endpoint.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Starts (true) or ends (false) the S3 outage.
    pub fn set_outage(&self, on: bool) {
        self.shared.outage.store(on, Ordering::SeqCst);
    }

    /// Every exchange recorded so far, in the order they completed.
    pub fn exchanges(&self) -> Vec<Exchange> {
        lock(&self.shared.exchanges).clone()
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

async fn accept_loop(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            // Out of descriptors or similar: wait, then keep accepting.
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let shared = shared.clone();
                async move { Ok::<_, Infallible>(exchange(&shared, request).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Serves one request: refuse it (outage) or forward it, and record it either way.
async fn exchange(shared: &Shared, request: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return respond(canned(StatusCode::BAD_REQUEST, "IncompleteBody")),
    };
    let at = Instant::now();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let call = classify::call(&parts.method, path, &parts.headers, &body);
    let refused = call.is_s3() && shared.outage.load(Ordering::SeqCst);
    let answer = if refused {
        canned(StatusCode::SERVICE_UNAVAILABLE, "SlowDown")
    } else {
        forward(shared.upstream, &parts, body)
            .await
            .unwrap_or_else(|_| canned(StatusCode::BAD_GATEWAY, "BadGateway"))
    };
    lock(&shared.exchanges).push(Exchange {
        at,
        done: Instant::now(),
        class: classify::class(call, answer.status.as_u16(), &answer.body),
        status: answer.status.as_u16(),
        body_bytes: answer.body.len(),
        refused,
    });
    respond(answer)
}

/// Sends the request to the server on a connection of its own and reads the whole answer.
async fn forward(upstream: SocketAddr, parts: &Parts, body: Bytes) -> anyhow::Result<Answer> {
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(upstream).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut request = Request::builder()
            .method(parts.method.clone())
            .uri(parts.uri.clone())
            .body(Full::new(body))?;
        *request.headers_mut() = end_to_end(&parts.headers);
        let response = sender.send_request(request).await?;
        let (head, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        Ok(Answer {
            status: head.status,
            headers: end_to_end(&head.headers),
            body,
        })
    };
    tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .context("the server did not answer in time")?
}

/// The headers without the hop-by-hop ones (the proxy frames each message itself).
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut kept = headers.clone();
    for name in HOP_BY_HOP {
        kept.remove(name);
    }
    kept
}

/// An S3-style XML error the proxy answers itself.
fn canned(status: StatusCode, code: &str) -> Answer {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code>\
         <Message>Injected by the fleet simulation's proxy.</Message>\
         <RequestId>counting-proxy</RequestId></Error>"
    );
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/xml"));
    headers.insert(
        "x-amz-request-id",
        HeaderValue::from_static("counting-proxy"),
    );
    Answer {
        status,
        headers,
        body: Bytes::from(body),
    }
}

fn respond(answer: Answer) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(answer.body));
    *response.status_mut() = answer.status;
    *response.headers_mut() = answer.headers;
    response
}
