//! Sending one [`Batch`] to the collector: StatsD lines in UDP datagrams, or one JSON
//! `POST /http` with HTTP basic auth `(secret, "")` — https when the port is 443, as the Python
//! client does. The caller bounds every send with a timeout; nothing here retries.

use super::batch::Batch;
use crate::config::{StatsProtocol, StatsSettings};
use base64::Engine;
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// Datagrams stay under a common path MTU.
const MAX_DATAGRAM: usize = 1400;

/// Why a flush did not reach the collector. Never quotes the secret.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("cannot resolve {host}: {source}")]
    Resolve {
        host: String,
        source: std::io::Error,
    },
    #[error("{host} resolves to no address")]
    NoAddress { host: String },
    #[error("cannot reach the collector: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP exchange with the collector failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the collector answered HTTP {0}")]
    Status(u16),
    #[error("https to the collector: {0}")]
    Tls(String),
}

/// Sends `batch` as `settings` say.
pub async fn send(settings: &StatsSettings, batch: &Batch) -> Result<(), SendError> {
    let address = resolve(&settings.dest_host, settings.dest_port).await?;
    match settings.protocol {
        StatsProtocol::Udp => send_udp(address, batch).await,
        StatsProtocol::Http => send_http(settings, address, batch).await,
    }
}

async fn resolve(host: &str, port: u16) -> Result<SocketAddr, SendError> {
    let mut addresses = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| SendError::Resolve {
            host: host.to_string(),
            source,
        })?;
    addresses.next().ok_or_else(|| SendError::NoAddress {
        host: host.to_string(),
    })
}

/// The StatsD lines of `batch`: `name:value|c`, `name:value|g`, `name:value|ms[|@rate]`.
pub fn statsd_lines(batch: &Batch) -> Vec<String> {
    let mut lines = Vec::new();
    for (name, value) in &batch.counters {
        lines.push(format!("{name}:{value}|c"));
    }
    for (name, value) in &batch.gauges {
        lines.push(format!("{name}:{value}|g"));
    }
    for (name, values) in &batch.timers {
        for value in values {
            let ms = value.ms;
            lines.push(match value.sample_rate < 1.0 {
                true => format!("{name}:{ms:.4}|ms|@{:.6}", value.sample_rate),
                false => format!("{name}:{ms:.4}|ms"),
            });
        }
    }
    lines
}

/// Lines joined by newlines into datagrams of at most [`MAX_DATAGRAM`] bytes.
fn datagrams(lines: &[String]) -> Vec<String> {
    let mut datagrams: Vec<String> = Vec::new();
    for line in lines {
        match datagrams.last_mut() {
            Some(last) if last.len() + 1 + line.len() <= MAX_DATAGRAM => {
                last.push('\n');
                last.push_str(line);
            }
            _ => datagrams.push(line.clone()),
        }
    }
    datagrams
}

async fn send_udp(address: SocketAddr, batch: &Batch) -> Result<(), SendError> {
    let local: SocketAddr = match address {
        SocketAddr::V4(_) => ([0, 0, 0, 0], 0).into(),
        SocketAddr::V6(_) => ([0u16; 8], 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local).await?;
    for datagram in datagrams(&statsd_lines(batch)) {
        socket.send_to(datagram.as_bytes(), address).await?;
    }
    Ok(())
}

/// The HTTP protocol's body: `{"counters": {…}, "gauges": {…}, "timers": {name: [ms, …]}}`,
/// empty groups left out.
pub fn http_body(batch: &Batch) -> Value {
    let mut body = Map::new();
    let counters: Map<String, Value> = batch
        .counters
        .iter()
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    let gauges: Map<String, Value> = batch
        .gauges
        .iter()
        .map(|(name, value)| (name.clone(), json!(value)))
        .collect();
    let timers: Map<String, Value> = batch
        .timers
        .iter()
        .map(|(name, values)| {
            let ms: Vec<f64> = values.iter().map(|v| v.ms).collect();
            (name.clone(), json!(ms))
        })
        .collect();
    for (group, values) in [
        ("counters", counters),
        ("gauges", gauges),
        ("timers", timers),
    ] {
        if !values.is_empty() {
            body.insert(group.to_string(), Value::Object(values));
        }
    }
    Value::Object(body)
}

async fn send_http(
    settings: &StatsSettings,
    address: SocketAddr,
    batch: &Batch,
) -> Result<(), SendError> {
    let request = http_request(settings, batch);
    let stream = tokio::net::TcpStream::connect(address).await?;
    if settings.dest_port == 443 {
        let stream = tls::connect(&settings.dest_host, stream).await?;
        exchange(stream, request).await
    } else {
        exchange(stream, request).await
    }
}

fn http_request(settings: &StatsSettings, batch: &Batch) -> Request<Full<Bytes>> {
    let body = serde_json::to_vec(&http_body(batch)).unwrap_or_default();
    let mut request = Request::post("/http")
        .header(hyper::header::HOST, host_header(settings))
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::CONNECTION, "close")
        .header(
            hyper::header::USER_AGENT,
            concat!("heare-authd/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(secret) = &settings.secret {
        let credentials = format!("{}:", secret.expose());
        let encoded = base64::engine::general_purpose::STANDARD.encode(credentials.as_bytes());
        request = request.header(hyper::header::AUTHORIZATION, format!("Basic {encoded}"));
    }
    // Every part above is a valid header value (the secret is base64), so building cannot fail;
    // should it, an empty request goes out and the collector refuses it.
    request
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Request::new(Full::new(Bytes::new())))
}

fn host_header(settings: &StatsSettings) -> String {
    match settings.dest_host.contains(':') {
        true => format!("[{}]:{}", settings.dest_host, settings.dest_port),
        false => format!("{}:{}", settings.dest_host, settings.dest_port),
    }
}

/// One request on a fresh connection (`Connection: close`); any status under 400 is success.
async fn exchange<S>(stream: S, request: Request<Full<Bytes>>) -> Result<(), SendError>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(connection);
    // Only the status line and headers are read (hyper bounds them); the body never is, so a
    // collector that answers without end costs nothing: the connection is dropped.
    let response = sender.send_request(request).await;
    driver.abort();
    let status = response?.status().as_u16();
    match status {
        ..400 => Ok(()),
        _ => Err(SendError::Status(status)),
    }
}

#[cfg(feature = "tls")]
mod tls {
    //! https to the collector: the system's trust store (rustls-native-certs, which also honours
    //! `SSL_CERT_FILE`), the destination host as the server name.
    use super::SendError;
    use std::sync::{Arc, OnceLock};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::rustls::pki_types::ServerName;
    use tokio_rustls::rustls::{ClientConfig, RootCertStore};

    pub async fn connect(
        host: &str,
        stream: tokio::net::TcpStream,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, SendError> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|e| SendError::Tls(format!("{host:?} is not a server name: {e}")))?;
        TlsConnector::from(config()?)
            .connect(name, stream)
            .await
            .map_err(|e| SendError::Tls(e.to_string()))
    }

    fn config() -> Result<Arc<ClientConfig>, SendError> {
        static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
        if let Some(config) = CONFIG.get() {
            return Ok(config.clone());
        }
        let mut roots = RootCertStore::empty();
        let found = rustls_native_certs::load_native_certs();
        let (added, _) = roots.add_parsable_certificates(found.certs);
        if added == 0 {
            return Err(SendError::Tls(
                "no trusted certificates on this system".into(),
            ));
        }
        let config = ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
    }
}

#[cfg(not(feature = "tls"))]
mod tls {
    use super::SendError;
    pub async fn connect(
        _host: &str,
        _stream: tokio::net::TcpStream,
    ) -> Result<tokio::net::TcpStream, SendError> {
        Err(SendError::Tls("this build has no TLS (feature tls)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::batch::TimerValue;
    use super::*;

    fn batch() -> Batch {
        Batch {
            counters: vec![("p.verify.requests".into(), 3)],
            gauges: vec![("p.keys.count".into(), 2.0)],
            timers: vec![(
                "p.verify.duration".into(),
                vec![
                    TimerValue {
                        ms: 0.0375,
                        sample_rate: 0.5,
                    },
                    TimerValue {
                        ms: 2.0,
                        sample_rate: 1.0,
                    },
                ],
            )],
        }
    }

    #[test]
    fn statsd_lines_carry_type_and_sample_rate() {
        assert_eq!(
            statsd_lines(&batch()),
            [
                "p.verify.requests:3|c",
                "p.keys.count:2|g",
                "p.verify.duration:0.0375|ms|@0.500000",
                "p.verify.duration:2.0000|ms",
            ]
        );
    }

    #[test]
    fn datagrams_stay_under_the_bound() {
        let lines: Vec<String> = (0..500)
            .map(|i| format!("p.verify.duration:{i}|ms"))
            .collect();
        let grams = datagrams(&lines);
        assert!(grams.len() > 1);
        assert!(grams.iter().all(|g| g.len() <= MAX_DATAGRAM));
        assert_eq!(grams.iter().map(|g| g.lines().count()).sum::<usize>(), 500);
    }

    #[test]
    fn the_http_body_has_the_python_shape() {
        let body = http_body(&batch());
        assert_eq!(
            body,
            json!({"counters": {"p.verify.requests": 3}, "gauges": {"p.keys.count": 2.0},
                   "timers": {"p.verify.duration": [0.0375, 2.0]}})
        );
        let empty = http_body(&Batch::default());
        assert_eq!(empty, json!({}));
    }
}
