//! What one request through the counting proxy was: which service (S3 or SQS, told by the SigV4
//! credential scope, the `X-Amz-Target` header or the query protocol's `Action=`), which call,
//! and how it was answered — the classes the simulation counts and prices.

use hyper::HeaderMap;
use hyper::Method;

/// The call a request makes, read from the request alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// S3 GetObject: a GET of `/bucket/key` (path style).
    S3GetObject,
    /// Any other S3 request (HEAD, PUT, listing, bucket calls).
    S3Other,
    SqsReceiveMessage,
    SqsDeleteMessage,
    SqsDeleteMessageBatch,
    /// Any other SQS action.
    SqsOther,
    /// Neither S3 nor SQS (SNS, an unsigned request).
    Other,
}

impl Call {
    /// True for S3 calls: the ones an S3 outage refuses.
    pub fn is_s3(self) -> bool {
        matches!(self, Call::S3GetObject | Call::S3Other)
    }

    /// True for SQS calls.
    pub fn is_sqs(self) -> bool {
        matches!(
            self,
            Call::SqsReceiveMessage
                | Call::SqsDeleteMessage
                | Call::SqsDeleteMessageBatch
                | Call::SqsOther
        )
    }
}

/// A request and its answer, as counted and priced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    S3Get200,
    S3Get304,
    /// GetObject answered with anything but 200 or 304 (the outage's 503s, 404, 5xx).
    S3GetError,
    S3Other,
    /// ReceiveMessage that returned at least one message.
    SqsReceiveMessages,
    /// ReceiveMessage that returned none (the long poll's wait ran out).
    SqsReceiveEmpty,
    SqsDelete,
    SqsDeleteBatch,
    SqsOther,
    Other,
}

impl Class {
    /// Every class, in table order.
    pub const ALL: [Class; 10] = [
        Class::S3Get200,
        Class::S3Get304,
        Class::S3GetError,
        Class::S3Other,
        Class::SqsReceiveMessages,
        Class::SqsReceiveEmpty,
        Class::SqsDelete,
        Class::SqsDeleteBatch,
        Class::SqsOther,
        Class::Other,
    ];

    /// The row label.
    pub fn label(self) -> &'static str {
        match self {
            Class::S3Get200 => "S3 GET 200",
            Class::S3Get304 => "S3 GET 304",
            Class::S3GetError => "S3 GET error",
            Class::S3Other => "S3 other",
            Class::SqsReceiveMessages => "SQS receive (messages)",
            Class::SqsReceiveEmpty => "SQS receive (empty)",
            Class::SqsDelete => "SQS delete",
            Class::SqsDeleteBatch => "SQS delete batch",
            Class::SqsOther => "SQS other",
            Class::Other => "other",
        }
    }

    /// The JSON name.
    pub fn key(self) -> &'static str {
        match self {
            Class::S3Get200 => "s3_get_200",
            Class::S3Get304 => "s3_get_304",
            Class::S3GetError => "s3_get_error",
            Class::S3Other => "s3_other",
            Class::SqsReceiveMessages => "sqs_receive_messages",
            Class::SqsReceiveEmpty => "sqs_receive_empty",
            Class::SqsDelete => "sqs_delete",
            Class::SqsDeleteBatch => "sqs_delete_batch",
            Class::SqsOther => "sqs_other",
            Class::Other => "other",
        }
    }

    /// Billed as an S3 GET request (GET and HEAD are one price; the other S3 calls are not made
    /// by a daemon).
    pub fn is_s3(self) -> bool {
        matches!(
            self,
            Class::S3Get200 | Class::S3Get304 | Class::S3GetError | Class::S3Other
        )
    }

    /// Billed as an SQS request.
    pub fn is_sqs(self) -> bool {
        matches!(
            self,
            Class::SqsReceiveMessages
                | Class::SqsReceiveEmpty
                | Class::SqsDelete
                | Class::SqsDeleteBatch
                | Class::SqsOther
        )
    }
}

/// The call a request makes.
pub fn call(method: &Method, path: &str, headers: &HeaderMap, body: &[u8]) -> Call {
    let action = sqs_action(headers, body);
    match signed_service(headers).as_deref() {
        Some("sqs") => sqs_call(action.as_deref()),
        Some("s3") => s3_call(method, path),
        Some(_) => Call::Other,
        // Unsigned: an SQS action says SQS, anything else is taken for S3.
        None if action.is_some() => sqs_call(action.as_deref()),
        None => s3_call(method, path),
    }
}

/// How a call and its answer are counted. `body` is the answer's body.
pub fn class(call: Call, status: u16, body: &[u8]) -> Class {
    match call {
        Call::S3GetObject => match status {
            200 => Class::S3Get200,
            304 => Class::S3Get304,
            _ => Class::S3GetError,
        },
        Call::S3Other => Class::S3Other,
        Call::SqsReceiveMessage if status == 200 && holds_messages(body) => {
            Class::SqsReceiveMessages
        }
        Call::SqsReceiveMessage => Class::SqsReceiveEmpty,
        Call::SqsDeleteMessage => Class::SqsDelete,
        Call::SqsDeleteMessageBatch => Class::SqsDeleteBatch,
        Call::SqsOther => Class::SqsOther,
        Call::Other => Class::Other,
    }
}

fn s3_call(method: &Method, path: &str) -> Call {
    let segments = path
        .split('?')
        .next()
        .unwrap_or("")
        .split('/')
        .filter(|s| !s.is_empty())
        .count();
    let query = path.split_once('?').map_or("", |(_, q)| q);
    let plain_get = query
        .split('&')
        .filter(|p| !p.is_empty())
        .all(|p| p.starts_with("x-id=") || p.starts_with("versionId="));
    if *method == Method::GET && segments >= 2 && plain_get {
        Call::S3GetObject
    } else {
        Call::S3Other
    }
}

fn sqs_call(action: Option<&str>) -> Call {
    match action {
        Some("ReceiveMessage") => Call::SqsReceiveMessage,
        Some("DeleteMessage") => Call::SqsDeleteMessage,
        Some("DeleteMessageBatch") => Call::SqsDeleteMessageBatch,
        _ => Call::SqsOther,
    }
}

/// The service of the SigV4 credential scope: `Credential=AKID/DATE/REGION/SERVICE/aws4_request`.
fn signed_service(headers: &HeaderMap) -> Option<String> {
    let authorization = headers.get("authorization")?.to_str().ok()?;
    let (_, credential) = authorization.split_once("Credential=")?;
    let scope = credential.split([',', ' ']).next()?;
    scope.split('/').nth(3).map(str::to_owned)
}

/// The SQS action: `X-Amz-Target: AmazonSQS.ReceiveMessage` (JSON protocol) or a form body's
/// `Action=ReceiveMessage` (query protocol).
fn sqs_action(headers: &HeaderMap, body: &[u8]) -> Option<String> {
    if let Some(target) = headers.get("x-amz-target").and_then(|v| v.to_str().ok()) {
        return target.strip_prefix("AmazonSQS.").map(str::to_owned);
    }
    let form = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !form {
        return None;
    }
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .map(str::to_owned)
}

/// Whether a ReceiveMessage answer holds a message: JSON `"Messages": [..]` not empty, or an XML
/// `<Message>` element.
fn holds_messages(body: &[u8]) -> bool {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body) {
        return json["Messages"].as_array().is_some_and(|m| !m.is_empty());
    }
    body.windows(b"<Message>".len()).any(|w| w == b"<Message>")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().expect("a header value"));
        }
        map
    }

    const S3_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/s3/aws4_request, \
                           SignedHeaders=host, Signature=00";
    const SQS_AUTH: &str = "AWS4-HMAC-SHA256 Credential=AK/20260101/us-east-1/sqs/aws4_request, \
                            SignedHeaders=host, Signature=00";

    #[test]
    fn tells_s3_get_object_from_other_s3_calls() {
        let auth = headers(&[("authorization", S3_AUTH)]);
        let get = |path| call(&Method::GET, path, &auth, b"");
        assert_eq!(get("/bucket/keys.json?x-id=GetObject"), Call::S3GetObject);
        assert_eq!(get("/bucket/dir/keys.json"), Call::S3GetObject);
        assert_eq!(get("/bucket?list-type=2"), Call::S3Other);
        assert_eq!(get("/bucket/keys.json?tagging"), Call::S3Other);
        assert_eq!(
            call(&Method::PUT, "/bucket/keys.json", &auth, b""),
            Call::S3Other
        );
    }

    #[test]
    fn reads_sqs_actions_in_both_protocols() {
        let json = headers(&[
            ("authorization", SQS_AUTH),
            ("x-amz-target", "AmazonSQS.ReceiveMessage"),
        ]);
        assert_eq!(
            call(&Method::POST, "/", &json, b"{}"),
            Call::SqsReceiveMessage
        );
        let query = headers(&[("content-type", "application/x-www-form-urlencoded")]);
        let body = b"Action=DeleteMessageBatch&QueueUrl=x";
        assert_eq!(
            call(&Method::POST, "/", &query, body),
            Call::SqsDeleteMessageBatch
        );
        let signed = headers(&[("authorization", SQS_AUTH)]);
        assert_eq!(call(&Method::POST, "/", &signed, b""), Call::SqsOther);
    }

    #[test]
    fn counts_answers() {
        assert_eq!(class(Call::S3GetObject, 304, b""), Class::S3Get304);
        assert_eq!(
            class(Call::S3GetObject, 503, b"<Error/>"),
            Class::S3GetError
        );
        let full = br#"{"Messages":[{"Body":"x"}]}"#;
        assert_eq!(
            class(Call::SqsReceiveMessage, 200, full),
            Class::SqsReceiveMessages
        );
        assert_eq!(
            class(Call::SqsReceiveMessage, 200, b"{}"),
            Class::SqsReceiveEmpty
        );
        let xml = b"<ReceiveMessageResult><Message><Body>x</Body></Message></ReceiveMessageResult>";
        assert_eq!(
            class(Call::SqsReceiveMessage, 200, xml),
            Class::SqsReceiveMessages
        );
    }
}
