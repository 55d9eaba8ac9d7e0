//! Watching a file store (`watch_store`, on by default): any write to the key file — heare-authctl
//! with `--no-reload`, an editor, the Python service's own CLI — is served within about a second,
//! with no SIGHUP and no `/refresh`.
//!
//! One task stats the key file every second, without following a link, and compares what it sees
//! (device, inode, size, modification and change times to the nanosecond; or "missing") with
//! what it last reported. On a difference, and on its first look (a write between the first load
//! and the watcher's start must not go unseen), it asks the reloader for a conditional reload
//! (trigger `watch`): the store's own version check then decides whether the file is read at all.
//! An unchanged file costs one stat a second and records nothing. A file seen missing is reported
//! only when it is still missing a second later, so an editor that renames the old file away
//! before writing the new one does not empty the served set for a moment. A failed stat (other
//! than "missing") is logged as `store_watch_failed` once per kind of error and asks for nothing;
//! the watcher keeps looking until the daemon stops.
//!
//! With `max_stale` set, an unchanged file is also confirmed now and then (a conditional reload
//! every quarter of `max_stale`, at most a minute apart): a file store is not polled by default,
//! so without it the set's "last confirmed" time would stay at its load, and the first failed
//! reload a week later (an editor's save with a typo, which the watcher picks up) would refuse
//! every verify at once instead of serving the set in force for `max_stale`.

use crate::reload_request::{ReloadRequest, Trigger};
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc::{self, error::TrySendError};
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// How often the key file is looked at.
const PERIOD: Duration = Duration::from_secs(1);
/// The longest wait between two confirmations of an unchanged file when `max_stale` is set.
const LONGEST_CONFIRMATION_WAIT: Duration = Duration::from_secs(60);

/// How often an unchanged file is confirmed: `None` without `max_stale`, else a quarter of it,
/// between one look and a minute.
pub fn confirmation_period(max_stale: Option<Duration>) -> Option<Duration> {
    max_stale.map(|stale| (stale / 4).clamp(PERIOD, LONGEST_CONFIRMATION_WAIT))
}

/// What identifies one content of the key file: a replacement by rename changes the inode, a
/// write in place the size or the times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

/// One look at the key file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Present(Identity),
    Missing,
    /// The stat failed for another reason than "not found".
    Failed(ErrorKind),
}

/// What the watcher remembers between looks, and what it decides from the next one.
#[derive(Debug, Default)]
struct Watcher {
    /// The state last reported to the reloader; `None` before the first report.
    reported: Option<Seen>,
    /// The previous look.
    previous: Option<Seen>,
}

impl Watcher {
    /// Whether `seen` calls for a reload; remembers it.
    fn decide(&mut self, seen: Seen) -> bool {
        let previous = self.previous.replace(seen);
        let settled = match seen {
            Seen::Present(_) => true,
            Seen::Missing => previous == Some(Seen::Missing),
            Seen::Failed(_) => false,
        };
        if !settled || self.reported == Some(seen) {
            return false;
        }
        self.reported = Some(seen);
        true
    }

    /// The error kind to log for `seen`: a failure of another kind than the previous look's.
    fn new_failure(previous: Option<Seen>, seen: Seen) -> Option<ErrorKind> {
        match seen {
            Seen::Failed(kind) if previous != Some(seen) => Some(kind),
            _ => None,
        }
    }
}

/// Starts watching the key file at `path`, sending reload requests to `requests`, until
/// `stopped` turns true (or the reloader is gone); an unchanged file is confirmed every
/// `confirm_every` ([`confirmation_period`]).
pub fn spawn(
    path: PathBuf,
    requests: mpsc::Sender<ReloadRequest>,
    stopped: watch::Receiver<bool>,
    confirm_every: Option<Duration>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(watch_file(path, requests, stopped, confirm_every))
}

async fn watch_file(
    path: PathBuf,
    requests: mpsc::Sender<ReloadRequest>,
    mut stopped: watch::Receiver<bool>,
    confirm_every: Option<Duration>,
) {
    let mut ticks = tokio::time::interval(PERIOD);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut watcher = Watcher::default();
    let mut last_asked = Instant::now();
    loop {
        let seen = tokio::select! {
            seen = async { ticks.tick().await; look(&path).await } => seen,
            _ = stopped.changed() => return,
        };
        if let Some(kind) = Watcher::new_failure(watcher.previous, seen) {
            tracing::warn!(store = %path.display(), error = %kind, "store_watch_failed");
        }
        let confirm = matches!(seen, Seen::Present(_))
            && confirm_every.is_some_and(|every| last_asked.elapsed() >= every);
        if watcher.decide(seen) || confirm {
            if !ask_reload(&requests) {
                return;
            }
            last_asked = Instant::now();
        }
    }
}

/// Stats the key file, without following a link.
async fn look(path: &Path) -> Seen {
    match tokio::fs::symlink_metadata(path).await {
        Ok(metadata) => Seen::Present(Identity {
            dev: metadata.dev(),
            ino: metadata.ino(),
            size: metadata.size(),
            mtime: (metadata.mtime(), metadata.mtime_nsec()),
            ctime: (metadata.ctime(), metadata.ctime_nsec()),
        }),
        Err(error) if error.kind() == ErrorKind::NotFound => Seen::Missing,
        Err(error) => Seen::Failed(error.kind()),
    }
}

/// Asks for a conditional reload; false once the reloader is gone. A full inbox means reloads
/// are already queued, and the next one reads the file as it is now.
fn ask_reload(requests: &mpsc::Sender<ReloadRequest>) -> bool {
    let request = ReloadRequest {
        trigger: Trigger::Watch,
        reply: None,
    };
    !matches!(requests.try_send(request), Err(TrySendError::Closed(_)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(ino: u64) -> Seen {
        Seen::Present(Identity {
            dev: 1,
            ino,
            size: 10,
            mtime: (5, 6),
            ctime: (5, 6),
        })
    }

    #[test]
    fn an_unchanged_file_is_confirmed_a_quarter_of_max_stale_apart_within_bounds() {
        let s = Duration::from_secs;
        assert_eq!(confirmation_period(None), None);
        assert_eq!(confirmation_period(Some(s(8))), Some(s(2)));
        assert_eq!(confirmation_period(Some(s(2))), Some(PERIOD));
        assert_eq!(confirmation_period(Some(s(7 * 86400))), Some(s(60)));
    }

    #[test]
    fn the_first_look_and_every_change_ask_for_a_reload() {
        let mut watcher = Watcher::default();
        assert!(watcher.decide(present(1)), "the first look");
        assert!(!watcher.decide(present(1)), "unchanged");
        assert!(watcher.decide(present(2)), "replaced");
        assert!(!watcher.decide(present(2)));
    }

    #[test]
    fn a_missing_file_is_reported_only_when_still_missing_a_second_later() {
        let mut watcher = Watcher::default();
        assert!(watcher.decide(present(1)));
        assert!(!watcher.decide(Seen::Missing), "an editor's rename window");
        assert!(watcher.decide(present(2)), "the new file");
        assert!(!watcher.decide(Seen::Missing));
        assert!(watcher.decide(Seen::Missing), "deleted for good");
        assert!(!watcher.decide(Seen::Missing));
        assert!(watcher.decide(present(3)), "recreated");
    }

    #[test]
    fn a_failed_look_asks_nothing_and_the_same_file_after_it_neither() {
        let mut watcher = Watcher::default();
        assert!(watcher.decide(present(1)));
        let denied = Seen::Failed(ErrorKind::PermissionDenied);
        assert!(!watcher.decide(denied));
        assert!(!watcher.decide(present(1)), "nothing changed meanwhile");
        assert!(!watcher.decide(denied));
        assert!(watcher.decide(present(2)));
    }

    #[test]
    fn a_failure_is_logged_once_per_kind() {
        let denied = Seen::Failed(ErrorKind::PermissionDenied);
        let other = Seen::Failed(ErrorKind::Other);
        assert_eq!(
            Watcher::new_failure(Some(present(1)), denied),
            Some(ErrorKind::PermissionDenied)
        );
        assert_eq!(Watcher::new_failure(Some(denied), denied), None);
        assert_eq!(
            Watcher::new_failure(Some(denied), other),
            Some(ErrorKind::Other)
        );
        assert_eq!(Watcher::new_failure(Some(denied), present(1)), None);
    }

    #[tokio::test]
    async fn a_look_tells_present_missing_and_replaced_apart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys.json");
        assert_eq!(look(&path).await, Seen::Missing);
        std::fs::write(&path, b"{}").unwrap();
        let first = look(&path).await;
        assert!(matches!(first, Seen::Present(_)), "{first:?}");
        assert_eq!(look(&path).await, first);
        let next = dir.path().join("keys.json.tmp");
        std::fs::write(&next, b"{}").unwrap();
        std::fs::rename(&next, &path).unwrap();
        assert_ne!(look(&path).await, first, "same size, new inode");
    }
}
