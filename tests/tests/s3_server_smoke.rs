//! Smoke tests for the S3 test server (`heare_auth_tests::s3_server`), driven
//! through `aws-sdk-s3` exactly as the daemon talks to S3.
//!
//! Run against the default in-process s3s backend, or against moto with
//! `HEARE_TEST_S3=moto`.

use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::error::{DisplayErrorContext, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use heare_auth_tests::s3_server::{ACCESS_KEY, REGION, S3Server, SECRET_KEY};

const BUCKET: &str = "heare-auth-smoke";
const KEY: &str = "keys.json";

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A client owned by the test's runtime, with retries disabled so that every
/// assertion sees exactly one HTTP exchange.
fn client(server: &S3Server) -> Client {
    Client::from_conf(
        server
            .sdk_config()
            .to_builder()
            .retry_config(RetryConfig::disabled())
            .build(),
    )
}

fn server_with_bucket() -> S3Server {
    let server = S3Server::start().unwrap();
    server.create_bucket(BUCKET).unwrap();
    server
}

/// HTTP status of a failed call, if the server answered at all.
fn status<E>(err: &SdkError<E, HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

#[test]
fn helpers_round_trip() {
    let server = server_with_bucket();
    assert!(server.endpoint().starts_with("http://127.0.0.1:"));
    assert_eq!(server.get_object(BUCKET, KEY).unwrap(), None);

    let etag = server.put_object(BUCKET, KEY, b"hello").unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"'), "{etag}");
    assert_eq!(
        server.get_object(BUCKET, KEY).unwrap().as_deref(),
        Some(&b"hello"[..])
    );

    server.delete_object(BUCKET, KEY).unwrap();
    assert_eq!(server.get_object(BUCKET, KEY).unwrap(), None);

    let env = server.env_for_client();
    let get = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    assert_eq!(get("AWS_ACCESS_KEY_ID"), Some(ACCESS_KEY));
    assert_eq!(get("AWS_SECRET_ACCESS_KEY"), Some(SECRET_KEY));
    assert_eq!(get("AWS_REGION"), Some(REGION));
    assert_eq!(get("AWS_ENDPOINT_URL"), Some(server.endpoint().as_str()));
}

#[test]
fn sdk_put_get_round_trip() {
    let server = server_with_bucket();
    runtime().block_on(async {
        let s3 = client(&server);
        let put = s3
            .put_object()
            .bucket(BUCKET)
            .key(KEY)
            .body(ByteStream::from_static(b"{\"keys\":[]}"))
            .send()
            .await
            .unwrap();
        let got = s3
            .get_object()
            .bucket(BUCKET)
            .key(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(got.e_tag(), put.e_tag());
        let body = got.body.collect().await.unwrap().into_bytes();
        assert_eq!(&body[..], b"{\"keys\":[]}");
    });
}

#[test]
fn requests_must_be_signed_with_the_test_credentials() {
    let server = server_with_bucket();
    if server.backend_name() == "moto" {
        heare_auth_tests::skipped!("moto accepts any credentials");
        return;
    }
    runtime().block_on(async {
        let wrong = Client::from_conf(
            server
                .sdk_config()
                .to_builder()
                .credentials_provider(aws_sdk_s3::config::Credentials::new(
                    ACCESS_KEY,
                    "not-the-secret",
                    None,
                    None,
                    "wrong",
                ))
                .retry_config(RetryConfig::disabled())
                .build(),
        );
        let err = wrong
            .list_objects_v2()
            .bucket(BUCKET)
            .send()
            .await
            .expect_err("bad signature must be rejected");
        assert_eq!(status(&err), Some(403), "{}", DisplayErrorContext(&err));
    });
}

#[test]
fn get_if_none_match_gives_304_or_body() {
    let server = server_with_bucket();
    let etag = server.put_object(BUCKET, KEY, b"v1").unwrap();
    runtime().block_on(async {
        let s3 = client(&server);

        let err = s3
            .get_object()
            .bucket(BUCKET)
            .key(KEY)
            .if_none_match(&etag)
            .send()
            .await
            .expect_err("matching If-None-Match must not return the body");
        let raw = err.raw_response().expect("server answered");
        assert_eq!(raw.status().as_u16(), 304, "{}", DisplayErrorContext(&err));
        assert_eq!(raw.headers().get("etag"), Some(etag.as_str()));

        let got = s3
            .get_object()
            .bucket(BUCKET)
            .key(KEY)
            .if_none_match("\"0123456789abcdef0123456789abcdef\"")
            .send()
            .await
            .unwrap();
        assert_eq!(got.e_tag(), Some(etag.as_str()));
        assert_eq!(&got.body.collect().await.unwrap().into_bytes()[..], b"v1");

        // HeadObject honours it too.
        let err = s3
            .head_object()
            .bucket(BUCKET)
            .key(KEY)
            .if_none_match(&etag)
            .send()
            .await
            .expect_err("matching If-None-Match on HEAD");
        assert_eq!(status(&err), Some(304));
    });
}

#[test]
fn put_if_match_stale_etag_gives_412_and_keeps_object() {
    let server = server_with_bucket();
    let stale = server.put_object(BUCKET, KEY, b"v1").unwrap();
    let current = server.put_object(BUCKET, KEY, b"v2").unwrap();
    assert_ne!(stale, current);
    runtime().block_on(async {
        let s3 = client(&server);
        let err = s3
            .put_object()
            .bucket(BUCKET)
            .key(KEY)
            .if_match(&stale)
            .body(ByteStream::from_static(b"v3"))
            .send()
            .await
            .expect_err("stale If-Match must fail");
        assert_eq!(status(&err), Some(412), "{}", DisplayErrorContext(&err));

        // The current ETag succeeds.
        let put = s3
            .put_object()
            .bucket(BUCKET)
            .key(KEY)
            .if_match(&current)
            .body(ByteStream::from_static(b"v4"))
            .send()
            .await
            .unwrap();
        assert!(put.e_tag().is_some());

        // If-Match on a missing key: 404 NoSuchKey, as AWS documents.
        let err = s3
            .put_object()
            .bucket(BUCKET)
            .key("missing.json")
            .if_match(&current)
            .body(ByteStream::from_static(b"x"))
            .send()
            .await
            .expect_err("If-Match on a missing key must fail");
        assert_eq!(status(&err), Some(404));
    });
    assert_eq!(
        server.get_object(BUCKET, KEY).unwrap().as_deref(),
        Some(&b"v4"[..])
    );
    assert_eq!(server.get_object(BUCKET, "missing.json").unwrap(), None);
}

#[test]
fn put_if_none_match_star_on_existing_key_gives_412() {
    let server = server_with_bucket();
    runtime().block_on(async {
        let s3 = client(&server);
        let create = |body: &'static [u8]| {
            s3.put_object()
                .bucket(BUCKET)
                .key(KEY)
                .if_none_match("*")
                .body(ByteStream::from_static(body))
                .send()
        };
        create(b"first").await.expect("key absent: create succeeds");
        let err = create(b"second").await.expect_err("key exists: must fail");
        assert_eq!(status(&err), Some(412), "{}", DisplayErrorContext(&err));
    });
    assert_eq!(
        server.get_object(BUCKET, KEY).unwrap().as_deref(),
        Some(&b"first"[..])
    );
}

/// The precondition check is atomic with the write: of several writers racing
/// with the same If-Match ETag, exactly one wins.
#[test]
fn concurrent_if_match_puts_have_one_winner() {
    if std::env::var("HEARE_TEST_S3").as_deref() == Ok("moto") {
        heare_auth_tests::skipped!(
            "moto checks preconditions and writes in separate steps (not atomic)"
        );
        return;
    }
    let server = server_with_bucket();
    let etag = server.put_object(BUCKET, KEY, b"base").unwrap();
    let results = runtime().block_on(async {
        let s3 = client(&server);
        let mut tasks = Vec::new();
        for i in 0..16u8 {
            let s3 = s3.clone();
            let etag = etag.clone();
            tasks.push(tokio::spawn(async move {
                // A body big enough that the upload takes a moment.
                let body = vec![i; 256 * 1024];
                s3.put_object()
                    .bucket(BUCKET)
                    .key(KEY)
                    .if_match(etag)
                    .body(ByteStream::from(body))
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| status(&e))
            }));
        }
        let mut results = Vec::new();
        for task in tasks {
            results.push(task.await.unwrap());
        }
        results
    });
    let winners = results.iter().filter(|r| r.is_ok()).count();
    let conflicts = results
        .iter()
        .filter(|r| matches!(r, Err(Some(412))))
        .count();
    assert_eq!((winners, conflicts), (1, 15), "{results:?}");
}

#[test]
fn stop_refuses_connections_and_restart_serves_again() {
    let mut server = server_with_bucket();
    let port = server.port();
    server.put_object(BUCKET, KEY, b"durable").unwrap();
    let rt = runtime();
    let s3 = rt.block_on(async { client(&server) });
    let get = || {
        rt.block_on(async {
            let out = s3
                .get_object()
                .bucket(BUCKET)
                .key(KEY)
                .send()
                .await
                .map_err(Box::new)?;
            Ok::<_, Box<SdkError<_, _>>>(out.body.collect().await.unwrap().into_bytes().to_vec())
        })
    };

    // Warm a pooled keep-alive connection, which stop() must cut too.
    assert_eq!(get().unwrap(), b"durable");

    server.stop();
    // Nothing listens on the port any more.
    let refused = std::net::TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_secs(1),
    );
    assert_eq!(
        refused.map_err(|e| e.kind()).err(),
        Some(std::io::ErrorKind::ConnectionRefused)
    );
    for attempt in 0..2 {
        let err = get().expect_err("S3 is down");
        assert!(
            matches!(*err, SdkError::DispatchFailure(_)),
            "attempt {attempt}: expected a connection error, got {}",
            DisplayErrorContext(&err)
        );
    }
    server.stop(); // idempotent

    server.restart().unwrap();
    assert_eq!(server.port(), port);
    if server.backend_name() == "moto" {
        // moto starts empty after a restart.
        server.create_bucket(BUCKET).unwrap();
        server.put_object(BUCKET, KEY, b"durable").unwrap();
    }
    assert_eq!(get().unwrap(), b"durable");
    server.restart().unwrap(); // no-op while running
    assert_eq!(get().unwrap(), b"durable");
}

#[test]
fn drop_removes_everything() {
    let server = server_with_bucket();
    let port = server.port();
    drop(server);
    assert!(
        std::net::TcpStream::connect(std::net::SocketAddr::from(([127, 0, 0, 1], port))).is_err()
    );
}
