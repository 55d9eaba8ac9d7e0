//! `/auth` against the real daemon (issue 15, part 2; the real nginx and Caddy in front of it
//! are part 3): the key from `Authorization: Bearer`, `X-API-Key` or (only when configured) a
//! query parameter; 401 with the RFC 6750 challenge for no key or a bad one; 403
//! `insufficient_scope` for a missing scope asked by `?scope=` or `X-Heare-Require-Scope`; 200
//! with an empty body and the identity headers, metadata mapped to headers, and a value that could
//! split a header left out and logged. Any method; the log has the original path, never a query.

use heare_auth_tests::daemon::{Daemon, DaemonBuilder};
use heare_auth_tests::http::{Request, Response};
use serde_json::json;
use std::path::Path;

const SECRET: &str = "sec_0ForwardAuthSecretAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const READER: &str = "sec_0ForwardAuthReaderBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

fn start(dir: &Path, config: &str) -> Daemon {
    let keys = json!({"keys": [
        {"id": "key_fa_writer", "secret": SECRET, "name": "writer", "scopes": ["read", "write"],
         "metadata": {"user": "alice", "uid": 1001, "evil": "x\r\nX-Heare-Key-Id: key_root", "list": [1]}},
        {"id": "key_fa_reader", "secret": READER, "name": "reader", "scopes": ["read"], "metadata": {}}
    ]});
    std::fs::write(dir.join("keys.json"), keys.to_string()).unwrap();
    DaemonBuilder::new(dir)
        .arg("--store")
        .arg(format!("file://{}", dir.join("keys.json").display()))
        .config(config)
        .start()
        .unwrap()
}

fn auth(daemon: &Daemon, method: &str, path: &str, headers: &[(&str, &str)]) -> Response {
    let mut request = Request::new(method, path);
    for (name, value) in headers {
        request = request.header(name, value.to_string());
    }
    daemon.request(&request).unwrap()
}

const CONFIG: &str = "[forward_auth.metadata_headers]\n\"X-User\" = \"user\"\n\"X-Uid\" = \"uid\"\n\"X-Evil\" = \"evil\"\n\"X-List\" = \"list\"\n";

#[test]
fn keys_challenges_scopes_and_identity_headers() {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path(), CONFIG);
    let bearer = format!("Bearer {SECRET}");

    let none = auth(&daemon, "GET", "/auth", &[]);
    assert_eq!(none.status, 401);
    assert_eq!(
        none.header("www-authenticate"),
        Some(r#"Bearer realm="heare-auth""#)
    );
    let bad = auth(
        &daemon,
        "GET",
        "/auth",
        &[("authorization", "Bearer sec_0nope")],
    );
    assert_eq!(bad.status, 401);
    assert_eq!(
        bad.header("www-authenticate"),
        Some(r#"Bearer realm="heare-auth", error="invalid_token""#)
    );

    let good = auth(
        &daemon,
        "GET",
        "/auth",
        &[
            ("authorization", &bearer),
            ("x-original-uri", "/orders/7?token=sec_0leak"),
        ],
    );
    assert_eq!(good.status, 200);
    assert!(good.body.is_empty());
    assert_eq!(good.header("x-heare-key-id"), Some("key_fa_writer"));
    assert_eq!(good.header("x-heare-key-name"), Some("writer"));
    assert_eq!(good.header("x-heare-key-scopes"), Some("read,write"));
    assert_eq!(good.header("x-user"), Some("alice"));
    assert_eq!(good.header("x-uid"), Some("1001"));
    assert_eq!(
        good.header("x-evil"),
        Some(""),
        "a value with CR LF is sent empty"
    );
    assert_eq!(
        good.header("x-list"),
        Some(""),
        "not a string or number: sent empty"
    );
    assert_eq!(good.header("cache-control"), Some("no-store"));
    let omitted = daemon.wait_events("forward_auth_headers_omitted");
    assert_eq!(omitted[0]["key_id"], "key_fa_writer");
    let logged = daemon.wait_events("forward_auth_success");
    assert_eq!(logged[0]["path"], "/orders/7");
    assert!(!daemon.log().contains("sec_0leak") && !daemon.log().contains(SECRET));

    let by_header = auth(&daemon, "POST", "/auth", &[("x-api-key", SECRET)]);
    assert_eq!(by_header.status, 200, "X-API-Key, any method");
    let envoy = auth(
        &daemon,
        "DELETE",
        "/auth/orders/7",
        &[("x-api-key", SECRET)],
    );
    assert_eq!(envoy.status, 200, "Envoy appends the original path");
    let by_query = auth(&daemon, "GET", &format!("/auth?api_key={SECRET}"), &[]);
    assert_eq!(by_query.status, 401, "no query parameter unless configured");

    let reader = format!("Bearer {READER}");
    // Every identity header is sent, empty when the key has no value: a proxy that copies only
    // what is present (Envoy) still replaces the client's own.
    let plain = auth(&daemon, "GET", "/auth", &[("authorization", &reader)]);
    assert_eq!(plain.header("x-user"), Some(""));
    assert_eq!(plain.header("x-heare-key-id"), Some("key_fa_reader"));
    assert_eq!(bad.header("cache-control"), Some("no-store"));
    // A requirement written oddly is refused, never dropped.
    for odd in ["/auth?scope=%ff", "/auth?scope=", "/auth?scope=a,b"] {
        let answer = auth(&daemon, "GET", odd, &[("authorization", &bearer)]);
        assert_eq!(answer.status, 400, "{odd}");
    }
    let refused = auth(
        &daemon,
        "GET",
        "/auth?scope=write",
        &[("authorization", &reader)],
    );
    assert_eq!(refused.status, 403);
    assert_eq!(
        refused.header("www-authenticate"),
        Some(r#"Bearer realm="heare-auth", error="insufficient_scope", scope="write""#)
    );
    let allowed = auth(
        &daemon,
        "GET",
        "/auth?scope=write&scope=read",
        &[("authorization", &bearer)],
    );
    assert_eq!(allowed.status, 200);
    let by_proxy_header = auth(
        &daemon,
        "GET",
        "/auth",
        &[
            ("authorization", &reader),
            ("x-heare-require-scope", "read write"),
        ],
    );
    assert_eq!(by_proxy_header.status, 403);
    let metrics = auth(&daemon, "GET", "/metrics", &[]).body;
    assert!(metrics.contains("heare_auth_verify_requests_total{result=\"insufficient_scope\"} 2"));
}

/// Traefik cannot reach a Unix socket: `/auth` answers on `listen_tcp` alike.
#[test]
fn auth_answers_on_the_tcp_listener_too() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("127.0.0.1:{}", heare_auth_tests::free_port());
    let keys = json!({"keys": [{"id": "key_tcp", "secret": SECRET, "scopes": ["read"]}]});
    std::fs::write(dir.path().join("keys.json"), keys.to_string()).unwrap();
    let _daemon = DaemonBuilder::new(dir.path())
        .arg("--store")
        .arg(format!("file://{}", dir.path().join("keys.json").display()))
        .args(["--listen-tcp", &address])
        .start()
        .unwrap();
    let bearer = format!("Bearer {SECRET}");
    let request = Request::new("GET", "/auth?scope=read").header("authorization", bearer);
    let answer = heare_auth_tests::http::send_tcp(&address, &request).unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("x-heare-key-id"), Some("key_tcp"));
    let missing =
        heare_auth_tests::http::send_tcp(&address, &Request::new("GET", "/auth")).unwrap();
    assert_eq!(missing.status, 401);
}

#[test]
fn a_configured_query_parameter_and_header_list() {
    let dir = tempfile::tempdir().unwrap();
    let config = "[forward_auth]\nkey_headers = [\"X-Token\"]\nkey_query_param = \"api_key\"\n";
    let daemon = start(dir.path(), config);
    assert_eq!(
        auth(&daemon, "GET", &format!("/auth?api_key={SECRET}"), &[]).status,
        200
    );
    assert_eq!(
        auth(&daemon, "GET", "/auth", &[("x-token", SECRET)]).status,
        200
    );
    assert_eq!(
        auth(&daemon, "GET", "/auth", &[("x-api-key", SECRET)]).status,
        401
    );
}
