//! Building HTTP answers: every answer, error or not, is a JSON body with its content type —
//! except `/metrics`, Prometheus text ([`text`]).

use bytes::Bytes;
use heare_auth_client::wire::ErrorResponse;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::{Response, StatusCode};
use serde::Serialize;

pub type Body = Full<Bytes>;

/// A JSON answer with `status`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(bytes) => with_json_type(status, bytes),
        Err(error) => {
            tracing::error!(%error, "response_serialization_failed");
            with_json_type(
                StatusCode::INTERNAL_SERVER_ERROR,
                br#"{"error":"internal error"}"#.to_vec(),
            )
        }
    }
}

/// A JSON answer whose body is already serialized (a constant, or built by hand on the hot path).
pub fn json_bytes(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A 200 answer of `body` with `content_type`.
pub fn text(content_type: &'static str, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// `{"error": message}` with `status`.
pub fn error(status: StatusCode, message: impl Into<String>) -> Response<Body> {
    json(
        status,
        &ErrorResponse {
            error: message.into(),
        },
    )
}

/// 405 with the `Allow` header listing what the path accepts.
pub fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; this path accepts {allow}"),
    );
    response
        .headers_mut()
        .insert(hyper::header::ALLOW, HeaderValue::from_static(allow));
    response
}

fn with_json_type(status: StatusCode, bytes: Vec<u8>) -> Response<Body> {
    json_bytes(status, bytes)
}
