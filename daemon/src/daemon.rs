//! The daemon's life: listen, load the first key set, serve, reload on signals, shut down cleanly.
//!
//! Order matters and is deliberate. Signal handlers are installed first, so a SIGHUP during a slow
//! first load cannot kill the process (SIGHUP's default action). The socket is bound before the
//! first load, so a second daemon on the same socket fails at once, and clients that connect early
//! wait in the backlog instead of failing. READY=1 is sent only once a key set is in memory. On
//! SIGTERM/SIGINT the listeners stop accepting, in-flight requests finish (bounded), the socket
//! file this daemon made is removed, and the process exits 0.

use crate::config::Config;
use crate::logging::LogGuard;
use crate::notify;
use crate::reload::{ReloadRequest, Reloader, Trigger, status_line};
use crate::server::connections::{ConnectionTable, Limits};
use crate::server::listeners::{self, SocketFile};
use crate::server::watchdog::Timeouts;
use crate::server::{self, ConnectionPolicy, fd_limit};
use crate::state::{AdminPolicy, Shared};
use crate::store::{self, StoreUrl};
use anyhow::Context;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

/// Runs the daemon until SIGTERM or SIGINT. `admin_gid` is the admin group's gid, resolved by
/// the caller ([`Config::admin_gid`]) before anything starts.
pub async fn run(config: Config, admin_gid: Option<u32>, logs: &LogGuard) -> anyhow::Result<()> {
    let mut hangup = signal(SignalKind::hangup()).context("cannot install the SIGHUP handler")?;
    let mut terminate =
        signal(SignalKind::terminate()).context("cannot install the SIGTERM handler")?;
    let mut interrupt =
        signal(SignalKind::interrupt()).context("cannot install the SIGINT handler")?;

    let activated = listeners::activated()?;
    let socket_activated = !activated.unix.is_empty();
    let mut socket_file: Option<SocketFile> = None;
    let unix = if socket_activated {
        activated.unix
    } else {
        let (listener, file) = listeners::bind_unix(
            &config.socket,
            config.socket_mode,
            config.socket_group.as_deref(),
        )?;
        socket_file = Some(file);
        vec![listener]
    };
    let mut tcp = activated.tcp;
    if tcp.is_empty()
        && let Some(address) = config.listen_tcp
    {
        tcp.push(listeners::bind_tcp(address)?);
    }

    if let StoreUrl::File { path } = &config.store {
        // Encrypted when a storage secret is configured: a plain file would then be refused.
        let empty = match &config.storage_secret {
            Some(secret) => crate::codec::encode_encrypted(store::file::EMPTY_KEY_FILE, secret),
            None => store::file::EMPTY_KEY_FILE.to_vec(),
        };
        match store::file::create_if_missing(path, &empty) {
            Ok(true) => tracing::info!(store = %config.store, "created_empty_key_file"),
            Ok(false) => {}
            Err(error) => tracing::warn!(store = %config.store, %error, "cannot_create_key_file"),
        }
    }
    let store = store::open(&config.store, &config.s3, config.max_store_bytes).await;
    let store_name = store.describe();
    let reloader = Reloader {
        store,
        storage_secret: config.storage_secret.clone(),
        cache_path: config.cache_path.clone(),
        max_stale: config.max_stale,
        refresh_interval: config.refresh_interval,
    };
    let initial = tokio::select! {
        initial = reloader.initial_load() => initial?,
        _ = terminate.recv() => return Ok(()),
        _ = interrupt.recv() => return Ok(()),
    };

    let (reload_requests, reload_inbox) = mpsc::channel(64);
    let admin = AdminPolicy {
        own_uid: nix::unistd::geteuid().as_raw(),
        tcp_from_loopback: config.tcp_admin_from_loopback,
    };
    let shared = Arc::new(Shared::new(
        initial.keys,
        initial.status,
        reload_requests,
        admin,
        store_name,
        logs.counter(),
    ));
    shared.set_serve_until(initial.serve_until);

    let (stop, stopped) = watch::channel(false);
    let reload_task = tokio::spawn(reloader.run(shared.clone(), reload_inbox, stopped.clone()));
    let policy = ConnectionPolicy {
        connections: Arc::new(ConnectionTable::new(connection_limits(&config))),
        timeouts: Timeouts {
            header_read: config.header_read_timeout,
            idle: config.idle_timeout,
            write: config.write_timeout,
        },
    };
    let mut servers = JoinSet::new();
    for listener in unix {
        let listener = tokio::net::UnixListener::from_std(listener)
            .context("cannot register the Unix socket")?;
        let listener = server::UnixAcceptor {
            listener,
            admin_gid,
        };
        servers.spawn(server::serve(
            listener,
            shared.clone(),
            policy.clone(),
            stopped.clone(),
        ));
    }
    for listener in tcp {
        let listener = tokio::net::TcpListener::from_std(listener)
            .context("cannot register the TCP socket")?;
        servers.spawn(server::serve(
            listener,
            shared.clone(),
            policy.clone(),
            stopped.clone(),
        ));
    }

    notify::ready(&status_line(&shared));
    notify::spawn_watchdog();
    tracing::info!(
        keys_loaded = shared.keys().len(),
        socket = %config.socket.display(),
        socket_activated,
        "ready"
    );

    loop {
        tokio::select! {
            _ = hangup.recv() => {
                tracing::info!("sighup_received");
                let request = ReloadRequest { trigger: Trigger::Signal, reply: None };
                // A full inbox means reloads are already queued; this one coalesces with them.
                let _ = shared.reload_requests.try_send(request);
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }

    notify::stopping();
    tracing::info!("shutdown_started");
    let _ = stop.send(true);
    while servers.join_next().await.is_some() {}
    let _ = tokio::time::timeout(server::SHUTDOWN_GRACE, reload_task).await;
    drop(socket_file);
    tracing::info!("shutdown_complete");
    Ok(())
}

/// The connection limits: `max_connections` capped to the descriptors there are, and the
/// per-peer shares, by default a quarter of that (at least 1).
fn connection_limits(config: &Config) -> Limits {
    let total = connection_capacity(config.max_connections);
    let share = (total / 4).max(1);
    Limits {
        total,
        per_uid: config.max_connections_per_uid.unwrap_or(share),
        per_address: config.max_connections_per_address.unwrap_or(share),
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
