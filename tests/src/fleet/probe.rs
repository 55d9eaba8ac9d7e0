//! Watching a revocation spread: every daemon's socket is asked to verify the revoked key's
//! secret every 50 ms, through the async client library (`heare_auth_client::AsyncClient`, one
//! pooled client per daemon), until that daemon first refuses it.

use heare_auth_client::{AsyncClient, Error};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;

/// Between two probes of one daemon.
pub const PROBE_PERIOD: Duration = Duration::from_millis(50);
/// Bound on one probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

/// One client per daemon, shared by the probing tasks. Create it inside the runtime that probes.
pub struct Prober {
    clients: Arc<[AsyncClient]>,
}

impl Prober {
    pub fn new(sockets: &[PathBuf]) -> Prober {
        let clients = sockets
            .iter()
            .map(|socket| AsyncClient::unix(socket.clone()).timeout(PROBE_TIMEOUT))
            .collect();
        Prober { clients }
    }

    /// For each daemon, how long after `started` it first refused `secret`; `None` for a daemon
    /// that still had not after `give_up`.
    pub async fn first_refusals(
        &self,
        secret: &str,
        started: Instant,
        give_up: Duration,
    ) -> Vec<Option<Duration>> {
        let mut tasks = JoinSet::new();
        for index in 0..self.clients.len() {
            let clients = self.clients.clone();
            let secret = secret.to_owned();
            tasks.spawn(async move {
                let refused = until_refused(&clients[index], &secret, started, give_up).await;
                (index, refused)
            });
        }
        let mut refusals = vec![None; self.clients.len()];
        while let Some(joined) = tasks.join_next().await {
            if let Ok((index, refused)) = joined {
                refusals[index] = refused;
            }
        }
        refusals
    }
}

/// Probes one daemon every [`PROBE_PERIOD`] until it answers "invalid key".
async fn until_refused(
    client: &AsyncClient,
    secret: &str,
    started: Instant,
    give_up: Duration,
) -> Option<Duration> {
    let mut ticks = tokio::time::interval(PROBE_PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if started.elapsed() > give_up {
            return None;
        }
        if let Err(Error::InvalidKey) = client.verify(secret).await {
            return Some(started.elapsed());
        }
    }
}
