//! The daemon's life: listen, load the first key set, serve, reload on signals, shut down cleanly.
//!
//! Order matters and is deliberate. Signal handlers are installed first, so a SIGHUP during a slow
//! first load cannot kill the process (SIGHUP's default action). The socket is bound before the
//! first load, so a second daemon on the same socket fails at once, and clients that connect early
//! wait in the backlog instead of failing. A file store is watched ([`store_watch`], unless
//! `watch_store = false`) beside the reloader, so a write the daemon is not told of is served
//! within about a second. A TCP listener the daemon binds itself whose port
//! another process holds does not stop the start: it is retried in the background
//! ([`server::rebind`]) while the Unix socket serves. READY=1 is sent only once a key set is in memory. On
//! SIGTERM/SIGINT the listeners stop accepting, in-flight requests finish (bounded), then the
//! reporting tasks (stats push, usage file, fleet report) do their last work with every request
//! counted (bounded together), the socket file this daemon made is removed, and the process exits
//! 0.

use crate::change_queue::{self, state::QueueState};
use crate::config::{
    Config, ConnectionSettings, FleetSettings, ListenSettings, StatsSettings, StoreSettings,
    store_endpoint, without_credentials,
};
use crate::generation::{Newest, NewestChange};
use crate::logging::LogGuard;
use crate::notify;
use crate::ports;
use crate::rate_limit::fleet::FleetLimits;
use crate::rate_limit::redis::{RedisLimiter, RedisSettings};
use crate::reload::{Initial, Reloader, status_line};
use crate::reload_request::{ReloadRequest, Trigger};
use crate::server::connections::{ConnectionTable, Limits};
use crate::server::listener_state::{ListenerName, ListenerState, ListenerStates};
use crate::server::listeners::{self, SocketFile};
use crate::server::watchdog::Timeouts;
use crate::server::{self, ConnectionPolicy, MetricsListener, UnixAcceptor, fd_limit, rebind};
use crate::state::{AdminPolicy, Shared, Wiring};
use crate::stats;
use crate::store_watch;
use crate::usage::{self, fleet};
use anyhow::Context;
use heare_auth_store::StoreUrl;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// How long, after the last request, the reloader and the reporting tasks (the last stats flush,
/// usage file and fleet report) have to finish, together.
const BACKGROUND_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The signals the daemon acts on, installed before anything else.
struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        let install = |kind: SignalKind, name: &str| {
            signal(kind).with_context(|| format!("cannot install the {name} handler"))
        };
        Ok(Signals {
            hangup: install(SignalKind::hangup(), "SIGHUP")?,
            terminate: install(SignalKind::terminate(), "SIGTERM")?,
            interrupt: install(SignalKind::interrupt(), "SIGINT")?,
        })
    }

    /// Resolves at SIGTERM or SIGINT.
    async fn stop_requested(&mut self) {
        tokio::select! {
            _ = self.terminate.recv() => {}
            _ = self.interrupt.recv() => {}
        }
    }
}

/// The sockets to serve on, their records, and the socket file this daemon made (removed when
/// dropped).
struct Listeners {
    unix: Vec<std::os::unix::net::UnixListener>,
    /// The verify TCP listeners and the metrics listeners (serving only `/metrics`, `/health`).
    tcp: Vec<TcpSocket>,
    states: Arc<ListenerStates>,
    socket_file: Option<SocketFile>,
    socket_activated: bool,
}

/// A TCP listener to serve: bound (by systemd or here), or to be bound once the daemon serves
/// (its address was taken at start).
struct TcpSocket {
    name: ListenerName,
    state: Arc<ListenerState>,
    bound: Result<tokio::net::TcpListener, SocketAddr>,
}

/// Runs the daemon until SIGTERM or SIGINT. `admin_gid` is the admin group's gid, resolved by
/// the caller ([`Config::admin_gid`]) before anything starts.
pub async fn run(config: Config, admin_gid: Option<u32>, logs: &LogGuard) -> anyhow::Result<()> {
    crate::metrics::exposition::note_start();
    if let Some(limit) = config.rate_limit.default {
        // Before the first set is built: every set sees the same default.
        crate::keyset::set_default_rate_limit(limit);
    }
    if config.rate_limit.fleet.is_some() {
        crate::keyset::set_fleet_rate_limits();
    }
    let rate_backend = fleet_limits(config.rate_limit.fleet.as_ref())?;
    let mut signals = Signals::install()?;
    let listeners = bind_listeners(&config.listen)?;
    let host_id = config
        .usage
        .report
        .as_ref()
        .map(|_| fleet::host_id(&config.usage))
        .transpose()?;
    if let Some(id) = &host_id {
        fleet::check_not_the_store(&config.usage, &config.store.url, id)?;
    }
    let reloader = reloader(&config.store).await;
    let Some(initial) = first_load(&reloader, &mut signals, config.stats.as_ref()).await? else {
        return Ok(());
    };
    if let Some(path) = &config.usage.path {
        usage::file::restore(path, &initial.keys);
    }
    let startup = initial.recorded.elapsed;
    let policy = connection_policy(&config.connections);
    let states = (listeners.states.clone(), rate_backend);
    let (shared, reload_inbox) = share(&config, &reloader, logs, &policy, initial, states);

    let (stop, stopped) = watch::channel(false);
    let reload_task = tokio::spawn(reloader.run(shared.clone(), reload_inbox, stopped.clone()));
    let (finish, finishing) = watch::channel(false);
    let mut background = start_background(&config, &shared, startup, host_id, &finishing);
    background.push(reload_task);
    if let Some(watcher) = watch_store(&config.store, &shared, &stopped) {
        background.push(watcher);
    }
    if let Some(queue) = config.store.notify_queue.clone() {
        if config.store.refresh_interval.is_none() {
            // The queue says nothing when a subscription or policy breaks: polling is what
            // delivers a revocation then.
            tracing::warn!(queue = %queue.url, "notify_queue_without_polling");
        }
        let s3 = config.store.s3.clone();
        background.push(change_queue::spawn(
            queue,
            s3,
            shared.clone(),
            stopped.clone(),
        ));
    }
    let socket_activated = listeners.socket_activated;
    let (mut servers, socket_file) =
        start_servers(listeners, &shared, &policy, admin_gid, &stopped)?;
    notify::ready(&status_line(&shared));
    notify::spawn_watchdog();
    tracing::info!(
        keys_loaded = shared.keys().len(),
        socket = %config.listen.socket.display(),
        socket_activated,
        "ready"
    );

    serve_until_stopped(&mut signals, &shared).await;
    notify::stopping();
    tracing::info!("shutdown_started");
    let _ = stop.send(true);
    while servers.join_next().await.is_some() {}
    // Every request is answered: the last stats flush, usage file and report count them all.
    let _ = finish.send(true);
    // One deadline for all of them together: the unit's stop timeout (20 s) must not be reached
    // because a collector or S3 is slow (the servers' drain took at most SHUTDOWN_GRACE).
    let deadline = tokio::time::Instant::now() + BACKGROUND_GRACE;
    for task in background {
        let _ = tokio::time::timeout_at(deadline, task).await;
    }
    drop(socket_file);
    tracing::info!("shutdown_complete");
    Ok(())
}

/// The first key set; `None` when SIGTERM or SIGINT came first. A failed start is reported to
/// the stats collector (when one is configured) before the error is returned.
async fn first_load(
    reloader: &Reloader,
    signals: &mut Signals,
    stats: Option<&StatsSettings>,
) -> anyhow::Result<Option<Initial>> {
    let started = std::time::Instant::now();
    let initial = tokio::select! {
        initial = reloader.initial_load() => initial,
        _ = signals.stop_requested() => return Ok(None),
    };
    match (initial, stats) {
        (Ok(initial), _) => Ok(Some(initial)),
        (Err(error), Some(stats)) => {
            stats::report_failed_start(stats, started.elapsed()).await;
            Err(error)
        }
        (Err(error), None) => Err(error),
    }
}

/// The fleet-wide rate-limit backend the configuration names; its settings are checked now (a
/// CA file that cannot be used stops the start), while Redis itself may still be down.
fn fleet_limits(settings: Option<&FleetSettings>) -> anyhow::Result<Option<Arc<FleetLimits>>> {
    let Some(settings) = settings else {
        return Ok(None);
    };
    let redis = RedisLimiter::new(RedisSettings {
        url: settings.url.clone(),
        ca_file: settings.ca_file.clone(),
        password: settings.password.as_ref().map(|p| p.to_string()),
        timeout: settings.timeout,
        prefix: settings.prefix.clone(),
    })
    .map_err(|error| anyhow::anyhow!("rate_limit: {error}"))?;
    tracing::info!(
        redis = %without_credentials(&settings.url),
        timeout_ms = settings.timeout.as_millis() as u64,
        prefix = settings.prefix,
        "rate_limit_backend_redis"
    );
    Ok(Some(Arc::new(FleetLimits::new(redis, settings.on_error))))
}

/// The state every connection and task shares, holding the first set, and the reloader's inbox.
fn share(
    config: &Config,
    reloader: &Reloader,
    logs: &LogGuard,
    policy: &ConnectionPolicy,
    initial: Initial,
    (listeners, fleet): (Arc<ListenerStates>, Option<Arc<FleetLimits>>),
) -> (Arc<Shared>, mpsc::Receiver<ReloadRequest>) {
    let (reload_requests, reload_inbox) = mpsc::channel(64);
    let wiring = Wiring {
        reload_requests,
        admin: AdminPolicy {
            own_uid: nix::unistd::geteuid().as_raw(),
            tcp_from_loopback: config.listen.tcp_admin_from_loopback,
        },
        store: reloader.store.describe(),
        log_drops: logs.counter(),
        access_log: logs.access_log(),
        newest: reloader.newest.clone(),
        connections: policy.connections.clone(),
        forward_auth: config.forward_auth.clone(),
        queue: config
            .store
            .notify_queue
            .as_ref()
            .map(|q| Arc::new(QueueState::new(q.url.clone()))),
        listeners,
        fleet,
    };
    let shared = Arc::new(Shared::new(initial.keys, initial.status, wiring));
    shared.set_serve_until(initial.serve_until);
    initial.recorded.record(&shared.metrics);
    (shared, reload_inbox)
}

/// The tasks that report on the daemon (stats push, usage file, fleet report); each does its
/// last work when `finishing` turns true.
fn start_background(
    config: &Config,
    shared: &Arc<Shared>,
    startup: std::time::Duration,
    host_id: Option<String>,
    finishing: &watch::Receiver<bool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    if let Some(settings) = config.stats.clone() {
        tasks.push(stats::spawn(
            settings,
            shared.clone(),
            startup,
            finishing.clone(),
        ));
    }
    if let Some(path) = config.usage.path.clone() {
        tasks.push(usage::file::spawn_saver(
            path,
            shared.clone(),
            finishing.clone(),
        ));
    }
    if let (Some(prefix), Some(host_id)) = (config.usage.report.clone(), host_id) {
        tasks.push(fleet::spawn_reporter(
            prefix,
            config.store.s3.clone(),
            host_id,
            config.usage.report_interval,
            shared.clone(),
            finishing.clone(),
        ));
    }
    tasks
}

/// The file store's watcher ([`store_watch`]), when the store is a file and `watch_store` is on.
fn watch_store(
    config: &StoreSettings,
    shared: &Shared,
    stopped: &watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let StoreUrl::File { path } = &config.url else {
        return None;
    };
    config.watch_store.then(|| {
        store_watch::spawn(
            path.clone(),
            shared.reload_requests.clone(),
            stopped.clone(),
            store_watch::confirmation_period(config.max_stale),
        )
    })
}

/// The sockets systemd passed, else the configured socket bound here; the same for the TCP and
/// metrics listeners, each on its own. Bound before the first load, so a second daemon on the same
/// socket fails at once. A TCP address that cannot be bound does not stop the start: it is
/// retried once the daemon serves.
fn bind_listeners(config: &ListenSettings) -> anyhow::Result<Listeners> {
    let activated = listeners::activated()?;
    let mut states = ListenerStates::default();
    let socket_activated = !activated.unix.is_empty();
    let (unix, socket_file) = if socket_activated {
        (activated.unix, None)
    } else {
        let (listener, file) = listeners::bind_unix(
            &config.socket,
            config.socket_mode,
            config.socket_group.as_deref(),
        )?;
        (vec![listener], Some(file))
    };
    for listener in &unix {
        let address = listener.local_addr().ok();
        let path = address.as_ref().and_then(|a| a.as_pathname());
        let shown = path.map_or_else(|| "(unnamed)".to_string(), |p| p.display().to_string());
        states.add(ListenerName::Unix, shown);
    }
    let mut tcp = tcp_sockets(
        ListenerName::Tcp,
        activated.tcp,
        config.listen_tcp,
        &mut states,
    )?;
    tcp.extend(tcp_sockets(
        ListenerName::Metrics,
        activated.metrics,
        config.metrics_listen,
        &mut states,
    )?);
    Ok(Listeners {
        unix,
        tcp,
        states: Arc::new(states),
        socket_file,
        socket_activated,
    })
}

/// The `name` listeners: the sockets systemd passed (they win over `configured`, with a
/// warning), else `configured` bound here, at once if it is free.
fn tcp_sockets(
    name: ListenerName,
    activated: Vec<std::net::TcpListener>,
    configured: Option<SocketAddr>,
    states: &mut ListenerStates,
) -> anyhow::Result<Vec<TcpSocket>> {
    if activated.is_empty() {
        let configured = configured.map(|address| bind_configured(name, address, states));
        return Ok(configured.into_iter().collect());
    }
    let addresses: Vec<String> = activated
        .iter()
        .map(|l| {
            l.local_addr()
                .map_or_else(|_| "(unknown)".into(), |a| a.to_string())
        })
        .collect();
    // The same address configured too is the documented fallback (the daemon binds it itself,
    // and reports it failing, if the socket unit ever comes up without it): nothing to warn of.
    if let Some(configured) = configured
        && !addresses.contains(&configured.to_string())
    {
        tracing::warn!(
            setting = name.setting(),
            configured = %configured,
            activated = addresses.join(","),
            unit = name.socket_unit(),
            "activated_socket_overrides_config"
        );
    }
    let mut sockets = Vec::new();
    for (listener, address) in activated.into_iter().zip(addresses) {
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("cannot register the activated TCP socket")?;
        let state = states.add(name, address);
        sockets.push(TcpSocket {
            name,
            state,
            bound: Ok(listener),
        });
    }
    Ok(sockets)
}

/// `listen_tcp` or `metrics_listen` bound here: a port any local user may bind is logged as
/// `tcp_listener_unprotected`, naming the socket unit to use; a taken one is retried later.
fn bind_configured(
    name: ListenerName,
    address: SocketAddr,
    states: &mut ListenerStates,
) -> TcpSocket {
    if !ports::is_privileged(address.port()) {
        tracing::warn!(
            listener = name.name(),
            address = %address,
            unit = name.socket_unit(),
            "tcp_listener_unprotected"
        );
    }
    let state = states.add(name, address.to_string());
    let bound = rebind::try_bind(address, &state).ok_or(address);
    TcpSocket { name, state, bound }
}

/// The reloader over the configured store; a missing local key file is created empty first.
async fn reloader(config: &StoreSettings) -> Reloader {
    if let StoreUrl::File { path } = &config.url {
        create_key_file(path, config);
    }
    if config.storage_secret.as_ref().is_some_and(|s| s.is_short()) {
        tracing::warn!(
            recommended_bytes = heare_auth_store::codec::StorageSecret::RECOMMENDED_BYTES,
            "storage_secret_short"
        );
    }
    let store = heare_auth_store::open(&config.url, &config.s3, config.max_store_bytes).await;
    if matches!(config.url, StoreUrl::S3 { .. }) {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        for (endpoint, why) in store_endpoint::unprotected(config, store.endpoint(), &env) {
            tracing::warn!(%endpoint, why, "store_endpoint_unprotected");
        }
    }
    Reloader {
        store,
        storage_secret: config.storage_secret.clone(),
        cache_path: config.cache_path.clone(),
        max_cache_bytes: config.max_store_bytes,
        max_stale: config.max_stale,
        refresh_interval: config.refresh_interval,
        refresh_jitter: config.refresh_jitter,
        newest: Arc::new(Newest::open(generation_record(config).as_deref())),
        newest_change: NewestChange::open(change_record(config).as_deref()),
        log: heare_auth_store::open_change_log(
            &config.url,
            &config.s3,
            config.max_store_bytes.min(MAX_CHANGE_BYTES),
            std::time::Duration::ZERO,
        )
        .await,
        following: Default::default(),
    }
}

/// Where the rollback guard keeps the highest generation served: beside the last-known-good
/// cache, else beside a local key file; an S3 store without a cache keeps it in memory only.
/// The largest change object read (1,000 keys of 64 KiB each): a planted one of the key object's
/// own limit (1 GiB by default) is refused from its Content-Length.
const MAX_CHANGE_BYTES: u64 = 64 << 20;

/// Where the rollback guard keeps the highest change of the log served: beside the generation's
/// record (`<cache>.change_seq`).
fn change_record(config: &StoreSettings) -> Option<std::path::PathBuf> {
    let generation = generation_record(config)?;
    Some(generation.with_extension("change_seq"))
}

fn generation_record(config: &StoreSettings) -> Option<std::path::PathBuf> {
    let beside = match (&config.cache_path, &config.url) {
        (Some(cache), _) => cache.clone(),
        (None, StoreUrl::File { path }) => path.clone(),
        (None, StoreUrl::S3 { .. }) => return None,
    };
    let mut name = beside.into_os_string();
    name.push(".generation");
    Some(name.into())
}

/// Creates an empty key file at `path` if nothing is there, encrypted when a storage secret is
/// configured (a plain file would then be refused).
fn create_key_file(path: &std::path::Path, config: &StoreSettings) {
    let empty = match &config.storage_secret {
        Some(secret) => heare_auth_store::codec::encode_encrypted(
            heare_auth_store::file::EMPTY_KEY_FILE,
            secret,
        ),
        None => heare_auth_store::file::EMPTY_KEY_FILE.to_vec(),
    };
    match heare_auth_store::file::create_if_missing(path, &empty) {
        Ok(true) => tracing::info!(store = %config.url, "created_empty_key_file"),
        Ok(false) => {}
        Err(error) => tracing::warn!(store = %config.url, %error, "cannot_create_key_file"),
    }
}

fn connection_policy(config: &ConnectionSettings) -> ConnectionPolicy {
    ConnectionPolicy {
        connections: Arc::new(ConnectionTable::new(connection_limits(config))),
        timeouts: Timeouts {
            header_read: config.header_read_timeout,
            idle: config.idle_timeout,
            write: config.write_timeout,
        },
    }
}

/// The metrics listener's own small connection table: scrapers (perhaps remote, since Prometheus
/// cannot reach the socket) never take the slots of verifying clients.
fn metrics_policy(policy: &ConnectionPolicy) -> ConnectionPolicy {
    let limits = Limits {
        total: 8,
        per_uid: 8,
        per_address: 4,
        tcp: 8,
    };
    ConnectionPolicy {
        connections: Arc::new(ConnectionTable::new(limits)),
        timeouts: policy.timeouts,
    }
}

/// One accept loop per listener, all sharing `policy`'s connection table.
fn start_servers(
    listeners: Listeners,
    shared: &Arc<Shared>,
    policy: &ConnectionPolicy,
    admin_gid: Option<u32>,
    stopped: &watch::Receiver<bool>,
) -> anyhow::Result<(JoinSet<()>, Option<SocketFile>)> {
    let mut servers = JoinSet::new();
    for listener in listeners.unix {
        let listener = tokio::net::UnixListener::from_std(listener)
            .context("cannot register the Unix socket")?;
        let acceptor = UnixAcceptor {
            listener,
            admin_gid,
        };
        let serve = server::serve(acceptor, shared.clone(), policy.clone(), stopped.clone());
        servers.spawn(serve);
    }
    for socket in listeners.tcp {
        let policy = match socket.name {
            ListenerName::Metrics => metrics_policy(policy),
            _ => policy.clone(),
        };
        servers.spawn(serve_tcp(socket, shared.clone(), policy, stopped.clone()));
    }
    Ok((servers, listeners.socket_file))
}

/// Serves one TCP listener; one whose address was taken at start is bound first (retried until
/// it is free, or the daemon stops).
async fn serve_tcp(
    socket: TcpSocket,
    shared: Arc<Shared>,
    policy: ConnectionPolicy,
    mut stopped: watch::Receiver<bool>,
) {
    let listener = match socket.bound {
        Ok(listener) => listener,
        Err(address) => match rebind::until_bound(address, &socket.state, 1, &mut stopped).await {
            Some(listener) => listener,
            None => return,
        },
    };
    match socket.name {
        ListenerName::Metrics => {
            server::serve(MetricsListener(listener), shared, policy, stopped).await;
        }
        _ => server::serve(listener, shared, policy, stopped).await,
    }
}

/// Asks for a reload at every SIGHUP until SIGTERM or SIGINT.
async fn serve_until_stopped(signals: &mut Signals, shared: &Shared) {
    loop {
        tokio::select! {
            _ = signals.hangup.recv() => {
                tracing::info!("sighup_received");
                let request = ReloadRequest { trigger: Trigger::Signal, reply: None };
                // A full inbox means reloads are already queued; this one coalesces with them.
                let _ = shared.reload_requests.try_send(request);
            }
            _ = signals.terminate.recv() => return,
            _ = signals.interrupt.recv() => return,
        }
    }
}

/// The connection limits: `max_connections` capped to the descriptors there are, the per-peer
/// shares, by default a quarter of that (at least 1), and half of it for all of TCP together.
fn connection_limits(config: &ConnectionSettings) -> Limits {
    let total = connection_capacity(config.max_connections);
    let share = (total / 4).max(1);
    Limits {
        total,
        per_uid: config.max_connections_per_uid.unwrap_or(share),
        per_address: config.max_connections_per_address.unwrap_or(share),
        tcp: (total / 2).max(1),
    }
}

/// Raises the descriptor limit (logged as `fd_limit`) and returns `configured` capped to it.
fn connection_capacity(configured: usize) -> usize {
    match fd_limit::raise() {
        Ok(limit) => {
            let capacity = limit.connection_capacity(configured);
            tracing::info!(
                soft_before = limit.soft_before,
                soft = limit.soft,
                hard = limit.hard,
                max_connections = capacity,
                "fd_limit"
            );
            if capacity < configured {
                tracing::warn!(
                    configured,
                    max_connections = capacity,
                    fd_limit = limit.soft,
                    "max_connections_capped_to_fd_limit"
                );
            }
            capacity
        }
        Err(error) => {
            tracing::warn!(%error, max_connections = configured, "fd_limit_unknown");
            configured
        }
    }
}
