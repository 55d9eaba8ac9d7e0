//! Reading a request body with a hard size limit and a time limit, before anything parses it.

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::Request;
use hyper::body::Incoming;
use hyper::header::CONTENT_LENGTH;
use hyper::http::request::Parts;
use std::future::Future;
use std::task::Poll;
use std::time::Duration;

/// The largest request body accepted (a verify body is well under 1 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The largest request line plus headers accepted (hyper's read buffer; at least 8 KiB).
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// How long a body that has not fully arrived with its headers may take. The connection watchdog
/// never interrupts a request being served, so without this a client could announce a body and
/// never send it, holding its connection (and a connection slot) forever.
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a body could not be read.
#[derive(Debug)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`]: answered 413.
    TooLarge,
    /// The connection failed mid-body.
    Read,
    /// The body did not arrive within [`BODY_READ_TIMEOUT`]: answered 408.
    TimedOut,
}

/// Reads the whole body, refusing more than [`MAX_BODY_BYTES`] without buffering them.
pub async fn read_limited(request: Request<Incoming>) -> Result<(Parts, Bytes), BodyError> {
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let (parts, body) = request.into_parts();
    let mut collect = std::pin::pin!(collect(body));
    // Almost every body arrives with its headers: only arm a timer when it has not.
    let first = std::future::poll_fn(|cx| Poll::Ready(collect.as_mut().poll(cx))).await;
    let body = match first {
        Poll::Ready(body) => body?,
        Poll::Pending => tokio::time::timeout(BODY_READ_TIMEOUT, collect)
            .await
            .map_err(|_| BodyError::TimedOut)??,
    };
    Ok((parts, body))
}

/// The body's bytes, at most [`MAX_BODY_BYTES`]. A body that comes in one frame (a verify body
/// nearly always does) is handed on as that frame, without copying or a buffer list.
async fn collect(mut body: Incoming) -> Result<Bytes, BodyError> {
    let mut single: Option<Bytes> = None;
    let mut joined: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(|_| BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        let held = single.as_ref().map_or(joined.len(), Bytes::len);
        if held + data.len() > MAX_BODY_BYTES {
            return Err(BodyError::TooLarge);
        }
        match single.take() {
            None if joined.is_empty() => single = Some(data),
            earlier => {
                if let Some(earlier) = earlier {
                    joined.extend_from_slice(&earlier);
                }
                joined.extend_from_slice(&data);
            }
        }
    }
    Ok(single.unwrap_or_else(|| Bytes::from(joined)))
}
