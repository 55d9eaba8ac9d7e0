//! Each listener's record, for `/status` and `/metrics`: which listener it is (`unix`, `tcp`,
//! `metrics`), its address, and whether it is listening or failing to bind (a TCP port another
//! process holds; the daemon keeps retrying, see [`super::rebind`]). The records are made when
//! the listeners are bound, before the first load, and written only by the task that binds one;
//! admin requests and scrapes read them.

use heare_auth_client::wire::ListenerStatus;
use std::sync::{Arc, Mutex, MutexGuard};

/// What a listener is for, named as `/status` and the `listener` label name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerName {
    /// The verify socket (every Unix socket).
    Unix,
    /// The verify TCP listener (`listen_tcp`, or an activated TCP socket not named `metrics`).
    Tcp,
    /// The metrics listener (`metrics_listen`, or the activated TCP socket named `metrics`).
    Metrics,
}

impl ListenerName {
    pub fn name(self) -> &'static str {
        match self {
            ListenerName::Unix => "unix",
            ListenerName::Tcp => "tcp",
            ListenerName::Metrics => "metrics",
        }
    }

    /// The configuration key of the TCP listener the daemon binds itself.
    pub fn setting(self) -> &'static str {
        match self {
            ListenerName::Unix => "socket",
            ListenerName::Tcp => "listen_tcp",
            ListenerName::Metrics => "metrics_listen",
        }
    }

    /// The packaged unit that has systemd bind this listener as root.
    pub fn socket_unit(self) -> &'static str {
        match self {
            ListenerName::Unix => "heare-authd.socket",
            ListenerName::Tcp => "heare-authd-tcp.socket",
            ListenerName::Metrics => "heare-authd-metrics.socket",
        }
    }
}

/// One listener's record.
pub struct ListenerState {
    pub name: ListenerName,
    /// The socket's path, or `ip:port`.
    pub address: String,
    /// `None` while listening; the last bind error while failing.
    failure: Mutex<Option<String>>,
}

impl ListenerState {
    /// The listener is bound and accepting.
    pub fn set_listening(&self) {
        *self.failure() = None;
    }

    /// A bind failed with `error`; true when that is news (it was listening, or failed
    /// differently), which is worth a log line.
    pub fn set_failing(&self, error: String) -> bool {
        let mut failure = self.failure();
        let news = failure.as_deref() != Some(error.as_str());
        *failure = Some(error);
        news
    }

    pub fn is_up(&self) -> bool {
        self.failure().is_none()
    }

    pub fn status(&self) -> ListenerStatus {
        let error = self.failure().clone();
        ListenerStatus {
            name: self.name.name().to_string(),
            address: self.address.clone(),
            state: if error.is_none() {
                "listening"
            } else {
                "failing"
            }
            .to_string(),
            error,
        }
    }

    /// A poisoned lock still holds a valid `Option<String>`, so it is used.
    fn failure(&self) -> MutexGuard<'_, Option<String>> {
        self.failure
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every listener's record, in the order they were bound.
#[derive(Default)]
pub struct ListenerStates(Vec<Arc<ListenerState>>);

/// One listener as `/metrics` shows it.
pub struct ListenerUp {
    pub name: &'static str,
    pub address: String,
    pub up: bool,
}

impl ListenerStates {
    /// Records a listener at `address`, listening until told otherwise.
    pub fn add(&mut self, name: ListenerName, address: String) -> Arc<ListenerState> {
        let state = Arc::new(ListenerState {
            name,
            address,
            failure: Mutex::new(None),
        });
        self.0.push(state.clone());
        state
    }

    pub fn status(&self) -> Vec<ListenerStatus> {
        self.0.iter().map(|state| state.status()).collect()
    }

    pub fn up(&self) -> Vec<ListenerUp> {
        self.0
            .iter()
            .map(|state| ListenerUp {
                name: state.name.name(),
                address: state.address.clone(),
                up: state.is_up(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_listener_shows_its_error_until_it_listens() {
        let mut states = ListenerStates::default();
        states.add(
            ListenerName::Unix,
            "/run/heare-auth/heare-authd.sock".into(),
        );
        let tcp = states.add(ListenerName::Tcp, "127.0.0.1:8080".into());
        assert!(tcp.set_failing("Address already in use".into()));
        assert!(!tcp.set_failing("Address already in use".into()), "no news");
        assert!(tcp.set_failing("Permission denied".into()));
        let shown = states.status();
        assert_eq!(shown[0].state, "listening");
        assert_eq!(shown[0].error, None);
        assert_eq!(
            (shown[1].name.as_str(), shown[1].state.as_str()),
            ("tcp", "failing")
        );
        assert_eq!(shown[1].error.as_deref(), Some("Permission denied"));
        assert!(!states.up()[1].up);

        tcp.set_listening();
        assert_eq!(states.status()[1].state, "listening");
        assert!(states.up().iter().all(|l| l.up));
        assert!(tcp.set_failing("Address already in use".into()));
    }
}
