//! The lines logged on every verification: `verification_success` and `verification_failed`
//! (`POST /verify`), `forward_auth_success` and `forward_auth_failed` (`/auth`).
//!
//! Each event has one function here, with its fields in the order the log has always had them,
//! and the time the handler read once for the whole request (`at`).
//! When the log is JSON lines through the batched writer (the default, and under systemd), the
//! line is written by hand ([`crate::json_line`]) into a buffer of the request thread and handed
//! to the writer in one append: no tracing dispatch, no field visitor, no serde serializer, no
//! allocation. Whether the level is logged at all is asked of tracing's filter once, when the
//! log is set up (the filter is fixed for the daemon's life), for the handlers' own targets, so a
//! directive such as `heare_authd::server::handlers::verify=warn` still applies. Any other log
//! format (text, journald) takes the same events through tracing as before. Either way the
//! lines hold the same fields, and what a client sent in them has already passed through the
//! redaction of [`crate::server::handlers::logged`]; nothing here sees a secret.
//!
//! Measured: see `examples/log_line.rs`, which logs the handler's `verification_success` line
//! both ways.

use crate::json_line::JsonLine;
use crate::log_writer::BatchWriter;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::SystemTime;

/// The targets the events had when the handlers logged them through tracing (filters name them).
const VERIFY_TARGET: &str = "heare_authd::server::handlers::verify";
const AUTH_TARGET: &str = "heare_authd::server::handlers::forward_auth";

/// Who asked, as the log shows it: uid and pid on the Unix socket, the address on TCP.
#[derive(Debug, Clone, Copy)]
pub struct PeerFields {
    pub uid: Option<u32>,
    pub pid: Option<i32>,
    pub addr: Option<SocketAddr>,
}

/// Where the verification lines go.
#[derive(Clone)]
pub enum AccessLog {
    /// Written by hand into the batched writer.
    Json(JsonSink),
    /// Through tracing, as every other event.
    Tracing,
}

/// The batched writer and what the filter said of the events' levels.
#[derive(Clone)]
pub struct JsonSink {
    writer: BatchWriter,
    /// The syslog priority prefixes (`<6>`, `<4>`) when stdout is the journal's stream.
    priority: bool,
    verify_info: bool,
    verify_warn: bool,
    auth_info: bool,
    auth_warn: bool,
}

impl JsonSink {
    /// `writer` with the levels the installed filter lets through for the handlers' targets.
    pub fn new(writer: BatchWriter, priority: bool) -> Self {
        JsonSink {
            writer,
            priority,
            verify_info: tracing::enabled!(target: VERIFY_TARGET, tracing::Level::INFO),
            verify_warn: tracing::enabled!(target: VERIFY_TARGET, tracing::Level::WARN),
            auth_info: tracing::enabled!(target: AUTH_TARGET, tracing::Level::INFO),
            auth_warn: tracing::enabled!(target: AUTH_TARGET, tracing::Level::WARN),
        }
    }

    /// Writes one line: `fields` adds the event's own fields after the common ones.
    fn line(
        &self,
        at: SystemTime,
        info: bool,
        event: &str,
        fields: impl FnOnce(&mut JsonLine<'_>),
    ) {
        thread_local! {
            static LINE: RefCell<Vec<u8>> = RefCell::new(Vec::with_capacity(512));
        }
        let (level, priority) = if info {
            ("info", "<6>")
        } else {
            ("warn", "<4>")
        };
        let priority = self.priority.then_some(priority);
        LINE.with_borrow_mut(|buffer| {
            buffer.clear();
            let mut line = JsonLine::start(buffer, priority, at, level, event);
            fields(&mut line);
            line.finish();
            self.writer.append(buffer);
        });
    }
}

impl PeerFields {
    fn write(&self, line: &mut JsonLine<'_>) {
        line.opt_u64("peer_uid", self.uid.map(u64::from))
            .opt_i64("peer_pid", self.pid.map(i64::from))
            .opt_display("peer_addr", self.addr);
    }
}

impl AccessLog {
    /// A key verified (`POST /verify`).
    pub fn verification_success(
        &self,
        at: SystemTime,
        key_id: &str,
        key_name: &str,
        user_agent: &str,
        peer: PeerFields,
    ) {
        match self {
            AccessLog::Json(sink) if sink.verify_info => {
                sink.line(at, true, "verification_success", |line| {
                    line.str("key_id", key_id)
                        .str("key_name", key_name)
                        .str("user_agent", user_agent);
                    peer.write(line);
                });
            }
            AccessLog::Json(_) => {}
            AccessLog::Tracing => tracing::info!(
                target: VERIFY_TARGET,
                key_id,
                key_name,
                user_agent,
                peer_uid = peer.uid,
                peer_pid = peer.pid,
                peer_addr = peer.addr.map(tracing::field::display),
                "verification_success"
            ),
        }
    }

    /// A verify refused: the key it belongs to, or what may be said of the secret
    /// (`secret_prefix`, only ever `sec_`; else `key_shaped: false`), and why.
    pub fn verification_failed(
        &self,
        at: SystemTime,
        refused: &Refused<'_>,
        user_agent: &str,
        peer: PeerFields,
    ) {
        match self {
            AccessLog::Json(sink) if sink.verify_warn => {
                sink.line(at, false, "verification_failed", |line| {
                    line.opt_str("key_id", refused.key_id)
                        .opt_str("secret_prefix", refused.secret_prefix)
                        .opt_bool("key_shaped", refused.key_shaped)
                        .str("reason", refused.reason)
                        .str("user_agent", user_agent);
                    peer.write(line);
                });
            }
            AccessLog::Json(_) => {}
            AccessLog::Tracing => tracing::warn!(
                target: VERIFY_TARGET,
                key_id = refused.key_id,
                secret_prefix = refused.secret_prefix,
                key_shaped = refused.key_shaped,
                reason = refused.reason,
                user_agent,
                peer_uid = peer.uid,
                peer_pid = peer.pid,
                peer_addr = peer.addr.map(tracing::field::display),
                "verification_failed"
            ),
        }
    }

    /// `/auth` let a request through.
    pub fn forward_auth_success(
        &self,
        at: SystemTime,
        key_id: &str,
        request: &Forwarded<'_>,
        peer: PeerFields,
    ) {
        match self {
            AccessLog::Json(sink) if sink.auth_info => {
                sink.line(at, true, "forward_auth_success", |line| {
                    line.str("key_id", key_id)
                        .str("user_agent", request.user_agent);
                    peer.write(line);
                    line.opt_str("method", request.method)
                        .opt_str("path", request.path);
                });
            }
            AccessLog::Json(_) => {}
            AccessLog::Tracing => tracing::info!(
                target: AUTH_TARGET,
                key_id,
                user_agent = request.user_agent,
                peer_uid = peer.uid,
                peer_pid = peer.pid,
                peer_addr = peer.addr.map(tracing::field::display),
                method = request.method,
                path = request.path,
                "forward_auth_success"
            ),
        }
    }

    /// `/auth` refused a request: the key when known, and why.
    pub fn forward_auth_failed(
        &self,
        at: SystemTime,
        key_id: Option<&str>,
        reason: &str,
        request: &Forwarded<'_>,
        peer: PeerFields,
    ) {
        match self {
            AccessLog::Json(sink) if sink.auth_warn => {
                sink.line(at, false, "forward_auth_failed", |line| {
                    line.opt_str("key_id", key_id)
                        .str("reason", reason)
                        .str("user_agent", request.user_agent);
                    peer.write(line);
                    line.opt_str("method", request.method)
                        .opt_str("path", request.path);
                });
            }
            AccessLog::Json(_) => {}
            AccessLog::Tracing => tracing::warn!(
                target: AUTH_TARGET,
                key_id,
                reason,
                user_agent = request.user_agent,
                peer_uid = peer.uid,
                peer_pid = peer.pid,
                peer_addr = peer.addr.map(tracing::field::display),
                method = request.method,
                path = request.path,
                "forward_auth_failed"
            ),
        }
    }

    /// Whether a `/verify` refusal would be logged (the caller then prepares its fields).
    pub fn logs_verify_refusals(&self) -> bool {
        match self {
            AccessLog::Json(sink) => sink.verify_warn,
            AccessLog::Tracing => true,
        }
    }

    /// Whether a `/auth` refusal would be logged.
    pub fn logs_auth_refusals(&self) -> bool {
        match self {
            AccessLog::Json(sink) => sink.auth_warn,
            AccessLog::Tracing => true,
        }
    }

    /// Whether a `/auth` success would be logged.
    pub fn logs_auth_successes(&self) -> bool {
        match self {
            AccessLog::Json(sink) => sink.auth_info,
            AccessLog::Tracing => true,
        }
    }

    /// Whether a `/verify` success would be logged.
    pub fn logs_verify_successes(&self) -> bool {
        match self {
            AccessLog::Json(sink) => sink.verify_info,
            AccessLog::Tracing => true,
        }
    }
}

/// What a `verification_failed` line says of the refusal.
pub struct Refused<'a> {
    pub key_id: Option<&'a str>,
    pub secret_prefix: Option<&'a str>,
    pub key_shaped: Option<bool>,
    pub reason: &'a str,
}

/// What the `/auth` lines show of the proxied request (each value already redacted).
pub struct Forwarded<'a> {
    pub user_agent: &'a str,
    pub method: Option<&'a str>,
    pub path: Option<&'a str>,
}
