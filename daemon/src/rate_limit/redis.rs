//! The fleet-wide backend's Redis client: one GCRA step for a limited key, decided by a Lua script
//! (`gcra.lua`, beside this file) in the Redis (or Valkey) every daemon shares, in one round trip.
//!
//! The arithmetic is the one-host limiter's (`keyset::limits`): the key's theoretical arrival
//! time (TAT) moves on by the limit's interval per accepted request, and a request is refused when
//! it would run more than the tolerance (`burst` intervals) ahead of now. In Redis it is kept in
//! whole microseconds on Redis's own clock (`TIME`), so every daemon measures on one clock, under
//! `prefix + key_id` with an expiry at the moment the bucket is full again (idle keys vanish).
//! [`micros`] says how a limit becomes microseconds: the interval to the nearest microsecond, at
//! least 1 (a limit of more than a million requests a second per key is held to one a
//! microsecond), and the tolerance `burst` of those intervals, so a full bucket still takes
//! exactly `burst` requests at once.
//!
//! The script is run by EVALSHA; a Redis that does not know it yet (just started, or flushed)
//! answers NOSCRIPT, and it is loaded and run again (the `redis` crate's `Script`).
//!
//! A decision never takes longer than the configured timeout, connecting included: past it,
//! [`BackendError::Timeout`]. (A request that timed out may still reach Redis later and count.)
//!
//! The connection: one multiplexed connection for every decision, made in the background by a task
//! of the limiter's own (started by [`RedisLimiter::new`] inside a tokio runtime, else by the
//! first decision, and again by a decision if its runtime ended). While it is being made,
//! decisions wait for it (within their timeout); when it could not be made, decisions fail at once
//! with the reason while the task tries again after 50 ms, doubling to at most a second. A
//! decision that finds the connection broken (an I/O error, the server gone, a replica's READONLY
//! after a failover) has it made again at once (the decisions after it wait for that), and so has
//! a connection that answered nothing for [`STALL`] while decisions timed out (a peer that
//! vanished without closing). Redis down at start is no error of [`RedisLimiter::new`]: decisions
//! fail until it is back, then succeed with the same limiter.
//!
//! No secret is ever in an error text or a `Debug`: the password (from `redis_password_file` or
//! the URL) is cut out of every text that comes from the `redis` crate or the server.

use heare_auth_store::rate_limit::RateLimit;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ErrorKind, IntoConnectionInfo, RedisError, Script,
    ServerErrorKind,
};
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use zeroize::Zeroizing;

/// The default of `redis_timeout`: the longest one decision may take.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(50);

/// The longest one attempt to connect (TCP or Unix socket, TLS, AUTH) may take. Decisions do not
/// wait for it beyond their own timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The pause after a failed attempt to connect, doubled after each one up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const MAX_PAUSE: Duration = Duration::from_secs(1);

/// A connection that has answered nothing for this long while decisions timed out is dropped and
/// made again.
pub const STALL: Duration = Duration::from_secs(2);

/// The largest interval or tolerance sent to the script, in microseconds (about 71 years): now
/// (about 2^50.6 µs since the epoch) plus both stays below 2^53, where doubles are exact. A
/// tolerance longer than that is, in practice, no limit.
const MAX_MICROS: u64 = 1 << 51;

/// The longest error text kept from the `redis` crate or the server.
const MAX_TEXT: usize = 300;

/// Where the fleet's Redis is and how to talk to it.
#[derive(Clone)]
pub struct RedisSettings {
    /// `redis://[user:pass@]host:port[/db]`, `rediss://…` (TLS), `unix:///path/to/socket` or
    /// `redis+unix:///path` (`?db=N`, `&user=…&pass=…`).
    pub url: String,
    /// PEM root certificates for `rediss://` instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// The password (from `redis_password_file`); overrides the URL's. Never logged.
    pub password: Option<String>,
    /// The longest one decision may take, connecting included ([`DEFAULT_TIMEOUT`]).
    pub timeout: Duration,
    /// Put before each key id to make its Redis key.
    pub prefix: String,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisSettings")
            .field("url", &without_credentials(&self.url))
            .field("ca_file", &self.ca_file)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .field("prefix", &self.prefix)
            .finish()
    }
}

/// What Redis decided of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FleetDecision {
    pub allowed: bool,
    /// Nanoseconds the key's arrival time runs ahead of now after the decision (as `ahead` in
    /// `keyset::limits`): the time until the bucket is full again.
    pub ahead_nanos: u64,
    /// Nanoseconds until one more request would be accepted (0 when allowed).
    pub retry_after_nanos: u64,
}

/// Why there is no decision. No text holds the password or the URL's credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackendError {
    /// A setting cannot be used (from [`RedisLimiter::new`] only).
    #[error("{0}")]
    Settings(String),
    /// No answer within the timeout (connecting, or the decision itself).
    #[error("Redis did not answer in time")]
    Timeout,
    /// No connection to Redis: it could not be made, or it broke.
    #[error("Redis is unavailable: {0}")]
    Unavailable(String),
    /// Redis answered with an error: authentication, permissions, a read-only replica, …
    #[error("Redis refused: {0}")]
    Refused(String),
    /// Redis answered something that is not a decision.
    #[error("Redis answered something other than a decision: {0}")]
    BadReply(String),
}

/// The fleet's Redis, for decisions. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct RedisLimiter {
    inner: Arc<Inner>,
}

impl fmt::Debug for RedisLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisLimiter")
            .field("url", &self.inner.url)
            .field("timeout", &self.inner.timeout)
            .field("prefix", &self.inner.prefix)
            .finish_non_exhaustive()
    }
}

struct Inner {
    client: Client,
    /// The URL without credentials, for `Debug`.
    url: String,
    timeout: Duration,
    prefix: String,
    script: Script,
    /// Texts cut out of every error text: the password, as given and as the URL writes it.
    secrets: Vec<Zeroizing<String>>,
    /// The connection's state, set by the connecting task and by decisions that find it broken.
    link: watch::Sender<Link>,
    /// Wakes the connecting task: the connection broke, or the limiter is gone.
    wake: Arc<Notify>,
    /// The connecting task, once started.
    connector: Mutex<Option<JoinHandle<()>>>,
    /// When a decision was last answered, nanoseconds since `epoch`.
    answered: AtomicU64,
    epoch: Instant,
}

#[derive(Clone)]
enum Link {
    /// Being made: decisions wait for it, within their timeout.
    Connecting,
    /// Made; `generation` tells it from the next one, `since` is when.
    Up {
        connection: MultiplexedConnection,
        generation: u64,
        since: Instant,
    },
    /// Not there: decisions fail at once with this while the task tries again.
    Down(BackendError),
}

impl RedisLimiter {
    /// Checks the settings (the URL, the CA file readable and PEM) without connecting; a setting
    /// that cannot be used is [`BackendError::Settings`]. Connecting happens in the background
    /// (started here inside a tokio runtime, else by the first decision): Redis being down now is
    /// no error, decisions fail until it is back.
    pub fn new(settings: RedisSettings) -> Result<Self, BackendError> {
        let RedisSettings {
            url,
            ca_file,
            password,
            timeout,
            prefix,
        } = settings;
        let settings_error = |text: &str| BackendError::Settings(format!("redis_url: {text}"));
        if timeout.is_zero() {
            return Err(BackendError::Settings(
                "redis_timeout must be more than 0".into(),
            ));
        }
        let scheme = url
            .split_once("://")
            .map(|(scheme, _)| scheme.to_ascii_lowercase());
        let tls = match scheme.as_deref() {
            Some("redis" | "unix" | "redis+unix") => false,
            Some("rediss") => true,
            _ => {
                return Err(settings_error(
                    "must start with redis://, rediss://, unix:// or redis+unix://",
                ));
            }
        };
        let parsed = redis::parse_redis_url(&url).ok_or_else(|| {
            settings_error(
                "is not a URL like redis://[user:password@]host[:port][/db], rediss://… or unix:///path",
            )
        })?;
        if parsed.fragment().is_some() {
            return Err(settings_error(
                "a fragment (#…) is not accepted: rediss:// always verifies the server",
            ));
        }
        let mut secrets = Vec::new();
        if let Some(given) = parsed.password() {
            secrets.push(Zeroizing::new(given.to_string()));
            if let Ok(decoded) = percent_encoding::percent_decode_str(given).decode_utf8() {
                secrets.push(Zeroizing::new(decoded.into_owned()));
            }
        }
        for (name, value) in parsed.query_pairs() {
            if name == "pass" {
                secrets.push(Zeroizing::new(value.into_owned()));
            }
        }
        if let Some(password) = &password {
            secrets.push(Zeroizing::new(password.clone()));
        }
        secrets.retain(|secret| !secret.is_empty());
        let scrub = |text: String| scrub(text, &secrets);

        let mut info = parsed
            .into_connection_info()
            .map_err(|error| settings_error(&scrub(error.to_string())))?;
        let mut redis_settings = info
            .redis_settings()
            .clone()
            .set_lib_name("heare-authd", env!("CARGO_PKG_VERSION"));
        if let Some(password) = &password {
            redis_settings = redis_settings.set_password(password);
        }
        info = info.set_redis_settings(redis_settings);

        let client = match (&ca_file, tls) {
            (Some(_), false) => {
                return Err(BackendError::Settings(
                    "redis_ca_file is only used with a rediss:// URL".into(),
                ));
            }
            (None, false) => Client::open(info),
            (Some(path), true) => tls::with_roots(info, path)?,
            (None, true) => tls::with_system_roots(info)?,
        }
        .map_err(|error| settings_error(&scrub(error.to_string())))?;

        let (link, _) = watch::channel(Link::Connecting);
        let limiter = RedisLimiter {
            inner: Arc::new(Inner {
                client,
                url: without_credentials(&url),
                timeout,
                prefix,
                script: Script::new(include_str!("gcra.lua")),
                secrets,
                link,
                wake: Arc::new(Notify::new()),
                connector: Mutex::new(None),
                answered: AtomicU64::new(0),
                epoch: Instant::now(),
            }),
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            limiter.inner.ensure_connector();
        }
        Ok(limiter)
    }

    /// One GCRA step for `key_id` under `limit`, in one round trip (see the module's text); never
    /// longer than the timeout, connecting included.
    pub async fn admit(
        &self,
        key_id: &str,
        limit: &RateLimit,
    ) -> Result<FleetDecision, BackendError> {
        let deadline = Instant::now() + self.inner.timeout;
        let mut generation = None;
        let decided =
            tokio::time::timeout_at(deadline, self.decide(key_id, limit, &mut generation))
                .await
                .unwrap_or(Err(BackendError::Timeout));
        match &decided {
            Ok(_) => self.inner.note_answer(),
            Err(BackendError::Timeout) => {
                if let Some(generation) = generation {
                    self.inner.check_stall(generation);
                }
            }
            Err(_) => {}
        }
        decided
    }

    async fn decide(
        &self,
        key_id: &str,
        limit: &RateLimit,
        used: &mut Option<u64>,
    ) -> Result<FleetDecision, BackendError> {
        let (mut connection, generation) = self.inner.connection().await?;
        *used = Some(generation);
        let (interval, tolerance) = micros(limit);
        let mut key = String::with_capacity(self.inner.prefix.len() + key_id.len());
        key.push_str(&self.inner.prefix);
        key.push_str(key_id);
        let reply: Result<(i64, i64, i64), RedisError> = self
            .inner
            .script
            .key(key)
            .arg(interval)
            .arg(tolerance)
            .invoke_async(&mut connection)
            .await;
        match reply {
            Ok(reply) => decision(reply, (interval, tolerance)),
            Err(error) => {
                if breaks_connection(&error) {
                    self.inner.lost(generation);
                }
                Err(self.inner.error(error))
            }
        }
    }
}

impl Inner {
    /// The connection, waiting while it is being made.
    async fn connection(self: &Arc<Self>) -> Result<(MultiplexedConnection, u64), BackendError> {
        let mut link = self.link.subscribe();
        loop {
            let down = match &*link.borrow_and_update() {
                Link::Up {
                    connection,
                    generation,
                    ..
                } => return Ok((connection.clone(), *generation)),
                Link::Down(error) => Some(error.clone()),
                Link::Connecting => None,
            };
            self.ensure_connector();
            if let Some(error) = down {
                return Err(error);
            }
            if link.changed().await.is_err() {
                return Err(BackendError::Unavailable("the limiter is gone".into()));
            }
        }
    }

    /// Starts the connecting task on the current runtime unless it runs (it ends with the
    /// runtime it was started on).
    fn ensure_connector(self: &Arc<Self>) {
        let mut connector = self
            .connector
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if connector.as_ref().is_some_and(|task| !task.is_finished()) {
            return;
        }
        if let Some(task) = connector.take() {
            // Its runtime ended: so did the connection it made.
            drop(task);
            self.link.send_replace(Link::Connecting);
        }
        *connector = Some(tokio::spawn(connect_loop(
            Arc::downgrade(self),
            self.wake.clone(),
        )));
    }

    /// The connection `generation` broke: it is made again at once, and decisions wait for that
    /// (within their timeout) rather than fail.
    fn lost(&self, generation: u64) {
        let replaced = self.link.send_if_modified(|link| match link {
            Link::Up { generation: up, .. } if *up == generation => {
                *link = Link::Connecting;
                true
            }
            _ => false,
        });
        if replaced {
            self.wake.notify_one();
        }
    }

    /// After a timeout on connection `generation`: when it has answered nothing for [`STALL`]
    /// (since it was made, or since its last answer), it is made again.
    fn check_stall(&self, generation: u64) {
        let since = match &*self.link.borrow() {
            Link::Up {
                generation: up,
                since,
                ..
            } if *up == generation => *since,
            _ => return,
        };
        let answered = self.epoch + Duration::from_nanos(self.answered.load(Ordering::Relaxed));
        let quiet_since = since.max(answered);
        if quiet_since.elapsed() >= STALL {
            self.lost(generation);
        }
    }

    /// Records an answer for [`check_stall`](Self::check_stall), to within 10 ms (fewer writes to
    /// a line every decision shares).
    fn note_answer(&self) {
        let now = self.nanos_now();
        if now.saturating_sub(self.answered.load(Ordering::Relaxed)) >= 10_000_000 {
            self.answered.store(now, Ordering::Relaxed);
        }
    }

    fn nanos_now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The backend error for an error of the `redis` crate, its text without secrets.
    fn error(&self, error: RedisError) -> BackendError {
        if error.is_timeout() {
            return BackendError::Timeout;
        }
        let text = scrub(error.to_string(), &self.secrets);
        if error.is_io_error() || error.is_connection_refusal() || error.is_connection_dropped() {
            return BackendError::Unavailable(text);
        }
        match error.kind() {
            // An error reply of the server (a code such as NOAUTH, NOPERM, READONLY), or AUTH's.
            _ if error.code().is_some() => BackendError::Refused(text),
            ErrorKind::AuthenticationFailed => BackendError::Refused(text),
            ErrorKind::UnexpectedReturnType | ErrorKind::Parse => BackendError::BadReply(text),
            _ => BackendError::Unavailable(text),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Ends the connecting task if it waits for a broken connection.
        self.wake.notify_one();
    }
}

/// The connecting task: makes the connection, and makes it again when a decision finds it broken;
/// after a failed attempt it pauses (50 ms, doubling to a second) and tries again. Ends when the
/// limiter is dropped.
async fn connect_loop(limiter: Weak<Inner>, wake: Arc<Notify>) {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(None);
    let mut pause = FIRST_PAUSE;
    let mut generation = 0;
    loop {
        let Some(inner) = limiter.upgrade() else {
            return;
        };
        inner.link.send_replace(Link::Connecting);
        let client = inner.client.clone();
        drop(inner);
        let made = tokio::time::timeout(
            CONNECT_TIMEOUT,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await;
        let Some(inner) = limiter.upgrade() else {
            return;
        };
        match made {
            Ok(Ok(connection)) => {
                generation += 1;
                inner.link.send_replace(Link::Up {
                    connection,
                    generation,
                    since: Instant::now(),
                });
                drop(inner);
                pause = FIRST_PAUSE;
                // Until a decision finds it broken (or the limiter is gone).
                loop {
                    wake.notified().await;
                    let Some(inner) = limiter.upgrade() else {
                        return;
                    };
                    if !matches!(*inner.link.borrow(), Link::Up { .. }) {
                        break;
                    }
                }
                continue;
            }
            Ok(Err(error)) => {
                let error = match inner.error(error) {
                    BackendError::Timeout => BackendError::Unavailable(format!(
                        "connecting took longer than {} s",
                        CONNECT_TIMEOUT.as_secs()
                    )),
                    error => error,
                };
                inner.link.send_replace(Link::Down(error));
            }
            Err(_) => {
                inner
                    .link
                    .send_replace(Link::Down(BackendError::Unavailable(format!(
                        "connecting took longer than {} s",
                        CONNECT_TIMEOUT.as_secs()
                    ))));
            }
        }
        drop(inner);
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// Whether an error means the connection is of no more use: it broke, or the server became a
/// replica (after a failover, connecting again finds the new primary).
fn breaks_connection(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_unrecoverable_error()
        || matches!(
            error.kind(),
            ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// The script's interval and tolerance for `limit`, in microseconds: the interval rounded up to
/// a whole microsecond (never more than the limit allows; a limit of more than a million
/// requests a second per key is held to one a microsecond), at most 2^51; the tolerance `burst` of those intervals (so a full bucket
/// takes exactly `burst` requests at once), at most 2^51 µs (about 71 years).
pub fn micros(limit: &RateLimit) -> (u64, u64) {
    let interval = limit.interval_nanos().div_ceil(1000).clamp(1, MAX_MICROS);
    let tolerance = interval.saturating_mul(limit.burst).min(MAX_MICROS);
    (interval, tolerance)
}

/// The script's reply `{allowed, ahead µs, retry_after µs}` as a decision, for the script's
/// `(interval, tolerance)` µs. A reply the script cannot give is an error, never a decision: the
/// TAT runs at most `tolerance` ahead, and a refusal waits more than 0 and at most one
/// `interval` (a server that answers otherwise — an impostor on the port — must not make this
/// daemon remember a refusal of hours, [`super::fleet`]).
fn decision(
    (allowed, ahead, retry_after): (i64, i64, i64),
    (interval, tolerance): (u64, u64),
) -> Result<FleetDecision, BackendError> {
    let bad = || BackendError::BadReply(format!("{{{allowed}, {ahead}, {retry_after}}}"));
    let allowed = match allowed {
        1 => true,
        0 => false,
        _ => return Err(bad()),
    };
    let ahead = u64::try_from(ahead).map_err(|_| bad())?;
    let retry_after = u64::try_from(retry_after).map_err(|_| bad())?;
    let wait_possible = match allowed {
        true => retry_after == 0,
        false => (1..=interval).contains(&retry_after),
    };
    if !wait_possible || ahead > tolerance {
        return Err(bad());
    }
    Ok(FleetDecision {
        allowed,
        ahead_nanos: ahead.saturating_mul(1000),
        retry_after_nanos: retry_after.saturating_mul(1000),
    })
}

/// `text` with every secret replaced by `***`, at most [`MAX_TEXT`] characters.
fn scrub(mut text: String, secrets: &[Zeroizing<String>]) -> String {
    for secret in secrets {
        if text.contains(secret.as_str()) {
            text = text.replace(secret.as_str(), "***");
        }
    }
    if text.chars().count() > MAX_TEXT {
        text = text.chars().take(MAX_TEXT).chain("…".chars()).collect();
    }
    text
}

/// The URL with any `user:password@` replaced by `***@` and a `pass=` parameter's value by `***`.
pub fn without_credentials(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (scheme, rest),
        None => return "***".into(),
    };
    // Everything before the last `@` is hidden, even past a `/`, `?` or `#`: a password may
    // hold any of them, and a URL the client cannot parse is still printed.
    let rest = match rest.rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    let hidden = rest.len() < url.len() - scheme.len() - 3;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match hidden {
        true => format!("***@{authority}"),
        false => authority.to_string(),
    };
    let tail = match tail.split_once('?') {
        Some((path, query)) => {
            let query: Vec<&str> = query
                .split('&')
                .map(|pair| match pair.split_once('=') {
                    Some((name, _)) if name.contains("pass") || name.contains('%') => "pass=***",
                    _ => pair,
                })
                .collect();
            format!("{path}?{}", query.join("&"))
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(feature = "tls")]
mod tls {
    use super::BackendError;
    use redis::{Client, ConnectionInfo, RedisResult, TlsCertificates};
    use std::path::Path;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;

    /// A client trusting only the certificates of the PEM file at `path`.
    pub fn with_roots(
        info: ConnectionInfo,
        path: &Path,
    ) -> Result<RedisResult<Client>, BackendError> {
        let unusable = |why: String| {
            BackendError::Settings(format!("redis_ca_file {}: {why}", path.display()))
        };
        let pem =
            std::fs::read(path).map_err(|error| unusable(format!("cannot read it: {error}")))?;
        let mut count = 0;
        for certificate in CertificateDer::pem_slice_iter(&pem) {
            certificate.map_err(|error| unusable(format!("is not PEM: {error}")))?;
            count += 1;
        }
        if count == 0 {
            return Err(unusable("holds no PEM certificate".into()));
        }
        Ok(Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: None,
                root_cert: Some(pem),
            },
        ))
    }

    /// A client trusting the system's certificates, which must be there (the `redis` crate loads
    /// them again for each connection).
    pub fn with_system_roots(info: ConnectionInfo) -> Result<RedisResult<Client>, BackendError> {
        let found = rustls_native_certs::load_native_certs();
        if let Some(error) = found.errors.first() {
            return Err(BackendError::Settings(format!(
                "the system's trusted certificates cannot be read ({error}); give redis_ca_file"
            )));
        }
        if found.certs.is_empty() {
            return Err(BackendError::Settings(
                "no trusted certificates on this system; give redis_ca_file".into(),
            ));
        }
        Ok(Client::open(info))
    }
}

#[cfg(not(feature = "tls"))]
mod tls {
    use super::BackendError;
    use redis::{Client, ConnectionInfo, RedisResult};
    use std::path::Path;

    fn no_tls() -> BackendError {
        BackendError::Settings("rediss:// needs TLS, and this build has none (feature tls)".into())
    }

    pub fn with_roots(_: ConnectionInfo, _: &Path) -> Result<RedisResult<Client>, BackendError> {
        Err(no_tls())
    }

    pub fn with_system_roots(_: ConnectionInfo) -> Result<RedisResult<Client>, BackendError> {
        Err(no_tls())
    }
}

// The client against a real redis-server: tests/tests/redis_limiter.rs.
#[cfg(test)]
mod tests {
    use super::*;

    fn limit(text: &str, burst: Option<u64>) -> RateLimit {
        RateLimit::parse(text, burst).unwrap()
    }

    fn settings(url: String) -> RedisSettings {
        RedisSettings {
            url,
            ca_file: None,
            password: None,
            // Generous where the test is not about time: a loaded machine must not fail it.
            timeout: Duration::from_secs(2),
            prefix: "heare-auth-test:".into(),
        }
    }

    #[test]
    fn limits_become_whole_microseconds() {
        assert_eq!(micros(&limit("100/1s", None)), (10_000, 1_000_000));
        assert_eq!(micros(&limit("5/1h", None)), (720_000_000, 3_600_000_000));
        assert_eq!(micros(&limit("10/1s", Some(3))), (100_000, 300_000));
        // 333,333,334 ns: rounded up, and the burst in whole intervals.
        assert_eq!(micros(&limit("3/1s", None)), (333_334, 1_000_002));
        // 142,858 ns rounds up; so does 1,400 ns (to the nearest it would allow 40% more).
        assert_eq!(micros(&limit("7/1ms", None)).0, 143);
        assert_eq!(micros(&limit("500000/700ms", None)).0, 2);
        // Under a microsecond per request: one a microsecond.
        assert_eq!(micros(&limit("2000000/1s", None)), (1, 2_000_000));
        assert_eq!(micros(&limit("1000000000/1s", None)), (1, 1_000_000_000));
        // A tolerance of centuries is no limit: refused by RateLimit itself (the clamp to
        // 2^51 µs stays as a second guard).
        assert!(RateLimit::parse("1/366d", Some(1_000_000_000)).is_err());
        let longest = limit("1/366d", Some(50));
        assert_eq!(
            micros(&longest),
            (31_622_400_000_000, 1_581_120_000_000_000)
        );
        assert!(micros(&longest).1 < MAX_MICROS);
    }

    #[test]
    fn replies_become_decisions() {
        let script = (10, 100);
        assert_eq!(
            decision((1, 5, 0), script),
            Ok(FleetDecision {
                allowed: true,
                ahead_nanos: 5_000,
                retry_after_nanos: 0
            })
        );
        assert_eq!(
            decision((0, 7, 3), script),
            Ok(FleetDecision {
                allowed: false,
                ahead_nanos: 7_000,
                retry_after_nanos: 3_000
            })
        );
        // Beyond what the script can answer: an impostor's reply is no decision.
        let impossible = [
            (1, 101, 0),
            (0, 101, 5),
            (0, 7, 11),
            (0, 7, 0),
            (0, 0, i64::MAX),
        ];
        for bad in [(2, 5, 0), (1, -1, 0), (0, 1, -1), (1, 5, 3)]
            .into_iter()
            .chain(impossible)
        {
            assert!(
                matches!(decision(bad, script), Err(BackendError::BadReply(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn settings_that_cannot_be_used_are_errors_that_quote_no_secret() {
        let password = "s3cr3t-Pw9";
        let error = |settings: RedisSettings| match RedisLimiter::new(settings) {
            Ok(_) => panic!("accepted"),
            Err(BackendError::Settings(text)) => text,
            Err(other) => panic!("{other:?}"),
        };
        for url in [
            "http://127.0.0.1:6379".to_string(),
            "127.0.0.1:6379".into(),
            format!("redis://:{password}@"),
            format!("redis://:{password}@127.0.0.1:6379/not-a-db"),
            format!("rediss://:{password}@127.0.0.1:6379#insecure"),
        ] {
            let text = error(settings(url.clone()));
            assert!(text.contains("redis_url"), "{url}: {text}");
            assert!(!text.contains(password), "{url}: {text}");
        }
        let text = error(RedisSettings {
            ca_file: Some("/etc/ssl/certs/ca-certificates.crt".into()),
            ..settings("redis://127.0.0.1:6379".into())
        });
        assert!(text.contains("only used with a rediss://"), "{text}");
        let text = error(RedisSettings {
            timeout: Duration::ZERO,
            ..settings("redis://127.0.0.1:6379".into())
        });
        assert!(text.contains("redis_timeout"), "{text}");
    }

    #[cfg(feature = "tls")]
    #[test]
    fn ca_files_that_cannot_be_used_are_errors() {
        let error = |settings: RedisSettings| match RedisLimiter::new(settings) {
            Ok(_) => panic!("accepted"),
            Err(BackendError::Settings(text)) => text,
            Err(other) => panic!("{other:?}"),
        };
        let dir = tempfile::tempdir().unwrap();
        let with_ca = |url: &str, ca: PathBuf| RedisSettings {
            ca_file: Some(ca),
            ..settings(url.into())
        };
        let missing = dir.path().join("missing.pem");
        let text = error(with_ca("rediss://127.0.0.1:6379", missing));
        assert!(
            text.contains("redis_ca_file") && text.contains("missing.pem"),
            "{text}"
        );
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(&garbage, "not a certificate\n").unwrap();
        let text = error(with_ca("rediss://127.0.0.1:6379", garbage));
        assert!(text.contains("no PEM certificate"), "{text}");
        let broken = dir.path().join("broken.pem");
        std::fs::write(
            &broken,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let text = error(with_ca("rediss://127.0.0.1:6379", broken));
        assert!(text.contains("is not PEM"), "{text}");
    }

    #[test]
    fn redis_down_at_start_is_no_error_and_debug_shows_no_secret() {
        let settings = RedisSettings {
            password: Some("file-Pw-77".into()),
            ..settings("redis://user:url-Pw-55@127.0.0.1:1/0".into())
        };
        let shown = format!("{settings:?}");
        let limiter = RedisLimiter::new(settings).expect("nothing is connected yet");
        let shown = format!("{shown} {limiter:?}");
        assert!(shown.contains("127.0.0.1:1"), "{shown}");
        for secret in ["file-Pw-77", "url-Pw-55", "user:"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        assert_eq!(
            without_credentials("unix:///run/redis.sock?db=2&pass=x%40y&user=u"),
            "unix:///run/redis.sock?db=2&pass=***&user=u"
        );
        assert_eq!(
            without_credentials("rediss://:p@w@h:6380/1"),
            "rediss://***@h:6380/1"
        );
        assert_eq!(without_credentials("redis://h:6379"), "redis://h:6379");
        // A password holding `/`, `?` or `#`, and a parameter name written with an escape.
        for url in [
            "redis://default:ab/cd@h:6379",
            "redis://:ab?cd@h",
            "redis://:ab#cd@h",
        ] {
            assert!(!without_credentials(url).contains("ab"), "{url}");
        }
        assert!(!without_credentials("unix:///r.sock?p%61ss=zz9").contains("zz9"));
    }

    #[test]
    fn error_texts_lose_every_secret() {
        let secrets = [Zeroizing::new("pw-1".to_string())];
        assert_eq!(
            scrub("WRONGPASS pw-1 and pw-1".into(), &secrets),
            "WRONGPASS *** and ***"
        );
        let long = scrub("x".repeat(1000), &secrets);
        assert_eq!(long.chars().count(), MAX_TEXT + 1);
    }

    /// An impostor on the Redis port (a local user's listener, bound while Redis is down): it
    /// answers every command `+OK` and the limiter's script with `reply`.
    async fn impostor(reply: &'static str) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("redis://{}", listener.local_addr().unwrap());
        let serve = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer_forever(stream, reply));
            }
        });
        (url, serve)
    }

    /// Reads RESP commands off `stream` and answers each: `reply` to EVALSHA and EVAL.
    async fn answer_forever(stream: tokio::net::TcpStream, reply: &'static str) {
        use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
        let (reader, mut writer) = stream.into_split();
        let mut reader = BufReader::new(reader);
        let mut line = String::new();
        loop {
            line.clear();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let count: usize = line.trim_start_matches('*').trim().parse().unwrap_or(0);
            let mut words = Vec::new();
            for _ in 0..count {
                line.clear();
                let _ = reader.read_line(&mut line).await;
                let length: usize = line.trim_start_matches('$').trim().parse().unwrap_or(0);
                let mut word = vec![0u8; length + 2];
                let _ = reader.read_exact(&mut word).await;
                words.push(String::from_utf8_lossy(&word[..length]).to_uppercase());
            }
            let answer = match words.first().map(String::as_str) {
                Some("EVALSHA" | "EVAL") => reply,
                _ => "+OK\r\n",
            };
            if writer.write_all(answer.as_bytes()).await.is_err() {
                return;
            }
        }
    }

    #[tokio::test]
    async fn an_impostor_cannot_make_a_refusal_the_script_could_not_give() {
        // Refused for 292,000 years; then an arrival time past the bucket; then a wait of 0.
        for reply in [
            "*3\r\n:0\r\n:0\r\n:9223372036854775807\r\n",
            "*3\r\n:1\r\n:999999999999\r\n:0\r\n",
            "*3\r\n:0\r\n:5\r\n:0\r\n",
        ] {
            let (url, serve) = impostor(reply).await;
            let limiter = RedisLimiter::new(settings(url)).unwrap();
            let decided = limiter.admit("key_victim", &limit("100/1s", None)).await;
            serve.abort();
            assert!(
                matches!(decided, Err(BackendError::BadReply(_))),
                "{reply:?}: {decided:?}"
            );
        }
        // The same impostor's possible answer is taken: the test reaches the script.
        let (url, serve) = impostor("*3\r\n:0\r\n:1000000\r\n:10000\r\n").await;
        let limiter = RedisLimiter::new(settings(url)).unwrap();
        let decided = limiter.admit("key_victim", &limit("100/1s", None)).await;
        serve.abort();
        assert_eq!(
            decided,
            Ok(FleetDecision {
                allowed: false,
                ahead_nanos: 1_000_000_000,
                retry_after_nanos: 10_000_000
            })
        );
    }
}
