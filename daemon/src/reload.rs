//! The one task that loads key sets: at start, then on every reload trigger.
//!
//! SIGHUP, `POST /refresh`, the poll timer, the retry timer, the notify queue and the file
//! store's watcher ([`crate::store_watch`]) only *ask* this
//! task (through a channel); requests that arrive while a load runs are answered by the next
//! single load, so a burst of triggers costs one fetch. A load fetches, decrypts and indexes off
//! to the side and then publishes the new set in one atomic swap. A failed load — store
//! unreachable, corrupt JSON, wrong storage secret, duplicate secret — changes nothing that is
//! served: the previous set stays, `/status` shows the error and that the set is stale, and
//! retries back off up to a minute with full jitter ([`crate::schedule`]). Explicit triggers
//! (SIGHUP, /refresh) always fetch the whole object; the timers, the queue and the watcher ask
//! "only if changed", so an unchanged object costs one 304 (a file: one `fstat`).

use crate::cache;
use crate::change_follow::{self, CaughtUp, End, FOLD_AFTER, Over};
use crate::generation::{self, Newest, NewestChange};
use crate::keyset::{KeySet, ServedKeys, SkippedKey};
use crate::metrics::{Metrics, ReloadResult, ReloadTrigger};
use crate::notify;
use crate::reload_request::{BodyError, Cause, ReloadError, ReloadOutcome, ReloadRequest, Trigger};
use crate::schedule::{self, Jitter};
use crate::state::{LoadStatus, Shared, Source};
use crate::usage;
use heare_auth_store::change_log::ChangeLog;
use heare_auth_store::codec::{self, StorageSecret};
use heare_auth_store::timestamp::{self, UnixMillis};
use heare_auth_store::{Fetched, Headed, KeyStore};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// The first key set, before serving starts.
pub struct Initial {
    pub keys: Arc<ServedKeys>,
    pub status: LoadStatus,
    /// The max_stale deadline when the set came from the cache.
    pub serve_until: UnixMillis,
    /// The first load, for the metrics (counted once they exist).
    pub recorded: LoadRecord,
}

/// One load as the metrics count it.
#[derive(Debug, Clone, Copy)]
pub struct LoadRecord {
    pub trigger: ReloadTrigger,
    pub result: ReloadResult,
    pub elapsed: Duration,
    pub at: UnixMillis,
}

impl LoadRecord {
    pub fn record(&self, metrics: &Metrics) {
        metrics.record_reload(self.trigger, self.result, self.elapsed, self.at);
    }
}

/// A key set built from a fetched body, with what the record and the log need.
struct Built {
    keys: KeySet,
    skipped: Vec<SkippedKey>,
    /// The generation of an encrypted body (see [`crate::generation`]).
    generation: Option<u64>,
    /// Whether the body was encrypted (the rollback guards apply).
    encrypted: bool,
    /// The store's version of the body; `None` when the store held no object.
    version: Option<String>,
    /// The body as stored, for the cache; `None` when the store held no object.
    body: Option<Vec<u8>>,
    timing: Timing,
}

/// What a fetch-and-build produced.
enum Loaded {
    Unchanged,
    Fresh(Box<Built>),
}

/// A body decoded and indexed.
struct Parsed {
    keys: KeySet,
    skipped: Vec<SkippedKey>,
    /// The body as stored, for the cache.
    body: Vec<u8>,
    /// Whether the body was encrypted, and then its generation.
    encrypted: bool,
    generation: Option<u64>,
}

/// How long the two halves of a load took, for the log.
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    fetch_ms: u64,
    build_ms: u64,
}

/// Loads key sets from the store; owns the last-known-good cache.
pub struct Reloader {
    pub store: Box<dyn KeyStore>,
    pub storage_secret: Option<StorageSecret>,
    pub cache_path: Option<PathBuf>,
    /// A cache larger than this (`max_store_bytes`: no store body it holds can be larger) is
    /// refused, not read whole.
    pub max_cache_bytes: u64,
    pub max_stale: Option<Duration>,
    pub refresh_interval: Option<Duration>,
    pub refresh_jitter: Jitter,
    /// The highest generation served (refuses older encrypted bodies written back).
    pub newest: Arc<Newest>,
    /// The highest change of the log served (refuses an older encrypted key object whose log was
    /// cut back, and a cache missing changes that were served).
    pub newest_change: NewestChange,
    /// The change log beside the key object; `None` in a build that cannot read it.
    pub log: Option<Box<dyn ChangeLog>>,
    /// What following the log left to remember between loads.
    pub following: Mutex<Following>,
}

/// What the reloader remembers of the change log between loads.
#[derive(Debug, Default)]
pub struct Following {
    /// A change that could not be used even right after loading the key object: not read again
    /// until the key object contains it (its writer, or `heare-authctl compact --drop-invalid`
    /// and the next write, moves it past).
    stuck_at: Option<u64>,
    /// Why the log could not be read last time, logged once until it changes.
    unreadable: Option<String>,
    /// The bodies of the changes applied since the key object was last loaded whole, as kept
    /// beside the cache.
    since_base: Vec<Vec<u8>>,
    /// The key object's version the last fold loaded.
    folded_at: Option<String>,
}

impl Reloader {
    /// Loads the first set: from the store, else from the cache (stale), else fails with a
    /// message saying what to fix.
    pub async fn initial_load(&self) -> anyhow::Result<Initial> {
        let now = timestamp::now();
        let started = std::time::Instant::now();
        let store_error = match self.fetch_and_build(None).await {
            Ok(Loaded::Fresh(built)) => match self.started_from_store(*built, now).await {
                Ok(mut initial) => {
                    initial.recorded.elapsed = started.elapsed();
                    return Ok(initial);
                }
                Err(error) => error,
            },
            Ok(Loaded::Unchanged) => ReloadError::NotModifiedUnasked,
            Err(error) => error,
        };
        tracing::error!(error = %store_error, store = %self.store.describe(), "startup_load_failed");
        let Some(cache_path) = &self.cache_path else {
            anyhow::bail!(
                "cannot load keys from {}: {store_error}; no last-known-good cache is configured (cache_path)",
                self.store.describe()
            );
        };
        let from_cache = match self.load_cache(cache_path).await {
            Ok(loaded) => {
                self.started_from_cache(loaded, cache_path, store_error.clone(), now)
                    .await
            }
            Err(cache_error) => Err(cache_error),
        };
        match from_cache {
            Ok(mut initial) => {
                initial.recorded.elapsed = started.elapsed();
                Ok(initial)
            }
            Err(cache_error) => anyhow::bail!(
                "cannot load keys from {}: {store_error}; and {cache_error}",
                self.store.describe(),
            ),
        }
    }

    /// The first set came from the store: cache it, log `startup`.
    async fn started_from_store(
        &self,
        built: Built,
        now: UnixMillis,
    ) -> Result<Initial, ReloadError> {
        let loaded = (built.generation, built.encrypted, built.version.as_deref());
        let caught = self.follow_loaded(built.keys, loaded).await?;
        let cache_error = self.write_cache(built.body).await.and_then(Result::err);
        self.write_changes().await;
        log_skipped(&built.skipped);
        let mut skipped = built.skipped;
        skipped.extend(caught.skipped);
        tracing::info!(
            keys_loaded = caught.served.len(),
            change_seq = caught.served.change_seq(),
            changes_applied = caught.applied,
            store = %self.store.describe(),
            fetch_ms = built.timing.fetch_ms,
            build_ms = built.timing.build_ms,
            "startup"
        );
        Ok(Initial {
            status: LoadStatus {
                cache_error,
                ..LoadStatus::fresh(built.version, now, &skipped)
            },
            keys: caught.served,
            serve_until: UnixMillis::MAX,
            recorded: first_load(ReloadResult::Success, now),
        })
    }

    /// The first set came from the cache because the store failed: stale from the start. The
    /// changes applied over the cached body before the restart are applied again.
    async fn started_from_cache(
        &self,
        (keys, skipped, written): (KeySet, Vec<SkippedKey>, UnixMillis),
        cache_path: &Path,
        store_error: ReloadError,
        now: UnixMillis,
    ) -> Result<Initial, ReloadError> {
        let caught = self.replay_cached_changes(keys, cache_path).await;
        // A cache that misses changes that were served would bring revoked keys back.
        let checked = self
            .newest_change
            .check(caught.served.store_id(), caught.served.change_seq());
        checked.map_err(|cause| ReloadError::Cache {
            path: cache_path.to_path_buf(),
            cause: BodyError::Rollback(cause),
        })?;
        tracing::warn!(
            keys_loaded = caught.served.len(),
            changes_applied = caught.applied,
            change_seq = caught.served.change_seq(),
            cache = %cache_path.display(),
            cache_written_at = %timestamp::format(written),
            "serving_stale_cache"
        );
        Ok(Initial {
            status: LoadStatus {
                version: None,
                last_load_at: None,
                last_attempt_at: Some(now),
                last_error: Some(store_error.to_string()),
                stale: true,
                source: Source::Cache,
                warnings: skipped.iter().map(ToString::to_string).collect(),
                cache_error: None,
            },
            serve_until: self.deadline_from(written),
            keys: caught.served,
            recorded: first_load(ReloadResult::Failure, now),
        })
    }

    /// The cached set with the changes kept beside the cache applied over it.
    async fn replay_cached_changes(&self, keys: KeySet, cache_path: &Path) -> CaughtUp {
        let served = Arc::new(ServedKeys::new(keys));
        let path = cache_path.to_path_buf();
        let limit = self.max_cache_bytes;
        let read = tokio::task::spawn_blocking(move || cache::read_changes(&path, limit))
            .await
            .map_err(|error| error.to_string())
            .and_then(|read| read);
        let bodies = match read {
            Ok(bodies) => bodies,
            Err(error) => {
                tracing::error!(%error, "cache_changes_unusable");
                Vec::new()
            }
        };
        let caught = change_follow::replay(self.storage_secret.as_ref(), served, bodies).await;
        if let End::Stuck { seq, reason } = &caught.end {
            tracing::error!(change = seq, reason = %reason, "cache_changes_unusable");
        }
        self.following().since_base = caught.bodies.clone();
        caught
    }

    /// Answers reload requests, polls and retries until `shutdown` turns true. Polls and
    /// retries follow [`schedule`]: jittered, so a fleet on one object never moves in step.
    pub async fn run(
        self,
        shared: Arc<Shared>,
        mut requests: mpsc::Receiver<ReloadRequest>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut next_poll = self
            .refresh_interval
            .map(|t| Instant::now() + schedule::first_poll(t));
        let mut failures: u32 = 0;
        let mut next_retry = self.retry_after(&shared, failures);
        loop {
            let first = tokio::select! {
                request = requests.recv() => match request {
                    Some(request) => request,
                    None => return,
                },
                _ = sleep_until_or_never(next_poll) => {
                    next_poll = self.next_poll();
                    ReloadRequest { trigger: Trigger::Poll, reply: None }
                }
                _ = sleep_until_or_never(next_retry) => ReloadRequest { trigger: Trigger::Retry, reply: None },
                _ = shutdown.changed() => return,
            };
            let outcome = self.answer(&shared, first, &mut requests).await;
            failures = if outcome.is_ok() {
                0
            } else {
                failures.saturating_add(1)
            };
            next_retry = self.retry_after(&shared, failures);
        }
    }

    /// When the poll after the one starting now is due.
    fn next_poll(&self) -> Option<Instant> {
        self.refresh_interval
            .map(|t| Instant::now() + schedule::poll_wait(t, self.refresh_jitter))
    }

    /// When to retry a stale set after `failures` failed loads in a row (a set from the cache at
    /// start counts as one); `None` while the set is fresh.
    fn retry_after(&self, shared: &Shared, failures: u32) -> Option<Instant> {
        let stale = shared.status().stale;
        stale.then(|| Instant::now() + schedule::retry_wait(failures.max(1)))
    }

    /// One load for `first` and every request already waiting behind it; each gets the outcome.
    async fn answer(
        &self,
        shared: &Shared,
        first: ReloadRequest,
        requests: &mut mpsc::Receiver<ReloadRequest>,
    ) -> ReloadOutcome {
        let mut batch = vec![first];
        while let Ok(more) = requests.try_recv() {
            batch.push(more);
        }
        // Someone asking (SIGHUP, /refresh) wins over a timer: the whole object is fetched.
        let explicit = batch
            .iter()
            .map(|r| r.trigger)
            .find(|t| !t.is_conditional());
        if explicit.is_some() {
            notify::reloading();
        }
        let trigger = explicit.unwrap_or_else(|| batch_trigger(&batch));
        let outcome = self.reload(shared, trigger).await;
        for request in batch {
            if let Some(reply) = request.reply {
                let _ = reply.send(outcome.clone());
            }
        }
        notify::ready(&status_line(shared));
        outcome
    }

    /// One load for `trigger`, counted in the metrics.
    async fn reload(&self, shared: &Shared, trigger: Trigger) -> ReloadOutcome {
        let started = std::time::Instant::now();
        let (outcome, result, cause) = self.load_and_publish(shared, trigger).await;
        let record = LoadRecord {
            trigger: cause.metric,
            result,
            elapsed: started.elapsed(),
            at: timestamp::now(),
        };
        record.record(&shared.metrics);
        outcome
    }

    /// SIGHUP loads the whole key object; every other trigger first applies what is new in the
    /// change log, then looks at the key object and loads it only when it holds more than that.
    async fn load_and_publish(&self, shared: &Shared, trigger: Trigger) -> Loaded3 {
        let now = timestamp::now();
        shared.status().last_attempt_at = Some(now);
        if !trigger.is_conditional() {
            return self.load_whole(shared, None, trigger.into(), now).await;
        }
        if let Trigger::NotifyChange(through) = trigger
            && let Some(done) = self.follow_through(shared, through, trigger.into()).await
        {
            return done;
        }
        let end = self.follow(shared).await;
        if matches!(end, End::Stuck { .. }) {
            return self
                .load_whole(shared, None, Cause::of(ReloadTrigger::ChangeGap), now)
                .await;
        }
        if matches!(end, End::Full) || self.due_to_fold(shared) {
            let folded = self
                .load_whole(shared, None, Cause::of(ReloadTrigger::Fold), now)
                .await;
            self.following().folded_at = shared.status().version.clone();
            return folded;
        }
        self.look_at_key_object(shared, trigger.into(), &end, now)
            .await
    }

    /// Queue events named changes through `through` only: those are read (one GET each, nothing
    /// past them, no HEAD; the key object's own event looks at it), and applied. `None` when
    /// they could not all be (missing, invalid): the caller then follows the log and looks at
    /// the key object as for any trigger. The set's freshness is left as it is (the key object
    /// was not asked, and a forged message must not make a stale set look fresh).
    async fn follow_through(&self, shared: &Shared, through: u64, cause: Cause) -> Option<Loaded3> {
        let served = shared.keys_full();
        let done = |count| Some((Ok(count), ReloadResult::Unchanged, cause));
        if served.change_seq()? >= through {
            return done(served.len());
        }
        if self.is_stuck(&served) {
            return None;
        }
        let secret = self.storage_secret.as_ref();
        let log = self.log.as_deref();
        let caught =
            change_follow::catch_up_until(log, secret, served, Over::Served, through).await;
        let reached = caught.served.change_seq().is_some_and(|seq| seq >= through);
        self.publish_applied(shared, &caught).await;
        match reached && !self.due_to_fold(shared) {
            true => done(caught.served.len()),
            false => None,
        }
    }

    /// Applies the changes of the log beyond the keys served and publishes the result.
    async fn follow(&self, shared: &Shared) -> End {
        let served = shared.keys_full();
        if self.is_stuck(&served) {
            return End::NotFollowing;
        }
        let secret = self.storage_secret.as_ref();
        let caught =
            change_follow::catch_up(self.log.as_deref(), secret, served, Over::Served).await;
        self.note_end(&caught.end, "load_key_object");
        self.publish_applied(shared, &caught).await;
        caught.end
    }

    /// Whether the changes applied since the last whole load are many enough to fold, and the
    /// key object is not the one the last fold loaded (a key object far behind its log would
    /// otherwise be loaded again at every trigger).
    fn due_to_fold(&self, shared: &Shared) -> bool {
        let many = shared.keys().overlay_len() > FOLD_AFTER;
        let following = self.following();
        let again = following.folded_at.is_some() && following.folded_at == shared.status().version;
        (many || following.since_base.len() > FOLD_AFTER) && !again
    }

    /// Rewrites the cache's list of changes applied since its body (when a cache is configured).
    async fn write_changes(&self) {
        let Some(path) = self.cache_path.clone() else {
            return;
        };
        let bodies = self.following().since_base.clone();
        let written = tokio::task::spawn_blocking(move || cache::write_changes(&path, &bodies))
            .await
            .map_err(|error| error.to_string())
            .and_then(|written| written.map_err(|error| error.to_string()));
        if let Err(error) = written {
            tracing::warn!(%error, "cache_changes_write_failed");
        }
    }

    /// Serves the changes applied without loading the key object (if any), records them in the
    /// rollback guard, the metrics, the log and the cache's list of changes.
    async fn publish_applied(&self, shared: &Shared, caught: &CaughtUp) {
        if caught.applied == 0 {
            return;
        }
        self.record_change(&caught.served);
        shared.publish(caught.served.clone());
        self.following()
            .since_base
            .extend(caught.bodies.iter().cloned());
        self.write_changes().await;
        shared
            .metrics
            .changes_applied
            .fetch_add(caught.applied, Ordering::Relaxed);
        log_skipped(&caught.skipped);
        shared
            .status()
            .warnings
            .extend(caught.skipped.iter().map(ToString::to_string));
        tracing::info!(
            changes_applied = caught.applied,
            change_seq = caught.served.change_seq(),
            overlay_keys = caught.served.overlay_len(),
            keys_served = caught.served.len(),
            "changes_applied"
        );
    }

    /// After following the log: whether the key object holds more than what is served (a HEAD
    /// where the store has one, else a conditional fetch), and loading it only then.
    async fn look_at_key_object(
        &self,
        shared: &Shared,
        cause: Cause,
        end: &End,
        now: UnixMillis,
    ) -> Loaded3 {
        let version = shared.status().version.clone();
        let served_seq = shared.keys().change_seq();
        // A HEAD that fails falls back to the conditional GET, whose error names S3's code
        // (a HEAD answer has no body to carry it).
        let headed = match self.store.head(version.as_deref()).await {
            Ok(headed) => headed,
            Err(error) => {
                tracing::debug!(%error, "key_object_head_failed");
                None
            }
        };
        let (new_version, object_seq) = match headed {
            None => return self.load_whole(shared, version, cause, now).await,
            Some(Headed::Missing) => return self.load_whole(shared, None, cause, now).await,
            Some(Headed::NotModified) => return unchanged(shared, cause, now),
            Some(Headed::Changed { version: new, .. }) if Some(&new) == version.as_ref() => {
                return unchanged(shared, cause, now);
            }
            Some(Headed::Changed {
                version,
                change_seq,
            }) => (version, change_seq),
        };
        match (object_seq, served_seq) {
            // Not while a snapshot waits: the key object alone holds it.
            (Some(object), Some(served))
                if object <= served && !matches!(end, End::Snapshot(_)) =>
            {
                // The log already delivered everything the key object holds.
                shared.status().version = Some(new_version);
                unchanged(shared, cause, now)
            }
            (Some(object), Some(_)) if matches!(end, End::UpToDate) => {
                // A writer may have committed and rewritten the key object since the log was
                // read: read it once more before calling the number missing.
                let again = self.follow(shared).await;
                let reached = shared.keys().change_seq().is_some_and(|seq| seq >= object);
                if reached && matches!(again, End::UpToDate) {
                    shared.status().version = Some(new_version);
                    return unchanged(shared, cause, now);
                }
                let why = match again {
                    End::Snapshot(_) => ReloadTrigger::Snapshot,
                    _ => ReloadTrigger::ChangeGap,
                };
                self.load_whole(shared, None, Cause::of(why), now).await
            }
            (Some(_), Some(_)) if matches!(end, End::Snapshot(_)) => {
                let why = Cause::of(ReloadTrigger::Snapshot);
                self.load_whole(shared, None, why, now).await
            }
            _ => {
                tracing::debug!(
                    object_change_seq = object_seq,
                    served_change_seq = served_seq,
                    "key_object_changed_beyond_the_log"
                );
                self.load_whole(shared, version, cause, now).await
            }
        }
    }

    /// Loads the key object (whole, or only if it changed from `since`), follows the log beyond
    /// it, and publishes the result.
    async fn load_whole(
        &self,
        shared: &Shared,
        since: Option<String>,
        cause: Cause,
        now: UnixMillis,
    ) -> Loaded3 {
        match self.fetch_and_build(since.as_deref()).await {
            Ok(Loaded::Unchanged) => unchanged(shared, cause, now),
            Ok(Loaded::Fresh(built)) => match self.publish(shared, *built, cause, now).await {
                Ok(count) => (Ok(count), ReloadResult::Success, cause),
                Err(error) => (
                    Err(self.failed(shared, error, cause)),
                    ReloadResult::Failure,
                    cause,
                ),
            },
            Err(error) => (
                Err(self.failed(shared, error, cause)),
                ReloadResult::Failure,
                cause,
            ),
        }
    }

    /// A freshly loaded base with the log applied beyond it.
    async fn follow_base(&self, keys: KeySet) -> CaughtUp {
        let plain = Arc::new(ServedKeys::new(keys));
        let copy = plain.clone();
        let base = match tokio::task::spawn_blocking(move || copy.with_id_index()).await {
            Ok(Some(indexed)) => Arc::new(indexed),
            _ => plain,
        };
        self.unstick_if_past(&base);
        let secret = self.storage_secret.as_ref();
        let caught =
            change_follow::catch_up(self.log.as_deref(), secret, base, Over::FreshBase).await;
        if let End::Stuck { seq, .. } = caught.end {
            self.following().stuck_at = Some(seq);
        }
        self.following().since_base = caught.bodies.clone();
        self.note_end(
            &caught.end,
            "stop_following_until_the_key_object_contains_it",
        );
        caught
    }

    /// Forgets a stuck change once a loaded key object contains it.
    fn unstick_if_past(&self, base: &ServedKeys) {
        let mut following = self.following();
        let past = |stuck| base.change_seq().is_some_and(|seq| seq >= stuck);
        if following.stuck_at.is_some_and(past) {
            following.stuck_at = None;
        }
    }

    /// Whether following is paused at a change that could not be used.
    fn is_stuck(&self, served: &ServedKeys) -> bool {
        let stuck_at = self.following().stuck_at;
        stuck_at.is_some_and(|stuck| served.change_seq().is_none_or(|seq| seq < stuck))
    }

    /// Logs how following ended, when it did not simply reach the end.
    fn note_end(&self, end: &End, then: &'static str) {
        match end {
            End::Stuck { seq, reason } => {
                tracing::error!(change = seq, reason = %reason, then, "change_log_stuck");
            }
            End::Snapshot(seq) => tracing::info!(change = seq, "change_log_snapshot"),
            End::Unreadable(error) => {
                let shown = error.to_string();
                let mut following = self.following();
                if following.unreadable.as_deref() != Some(shown.as_str()) {
                    tracing::error!(error = %shown, then = "poll_the_key_object", "change_log_unreadable");
                    following.unreadable = Some(shown);
                }
            }
            End::UpToDate => self.following().unreadable = None,
            End::NotFollowing | End::Full => {}
        }
    }

    fn following(&self) -> std::sync::MutexGuard<'_, Following> {
        self.following
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The store confirmed the set in force: fresh again.
    async fn publish(
        &self,
        shared: &Shared,
        built: Built,
        cause: Cause,
        now: UnixMillis,
    ) -> Result<usize, ReloadError> {
        let loaded = (built.generation, built.encrypted, built.version.as_deref());
        let caught = self.follow_loaded(built.keys, loaded).await?;
        let count = caught.served.len();
        usage::carry_rate_states(shared.keys_full(), caught.served.clone()).await;
        let old = shared.publish(caught.served.clone());
        shared.set_serve_until(UnixMillis::MAX);
        let mut skipped = built.skipped;
        skipped.extend(caught.skipped);
        {
            // The cache's state is the last write's until this load's write is done.
            let mut status = shared.status();
            let cache_error = status.cache_error.take();
            *status = LoadStatus {
                cache_error,
                ..LoadStatus::fresh(built.version, now, &skipped)
            };
        }
        log_skipped(&skipped);
        shared
            .metrics
            .changes_applied
            .fetch_add(caught.applied, Ordering::Relaxed);
        // After the set is fresh again (a stale daemon serves at once), before the next load.
        usage::carry(old, shared).await;
        tracing::info!(
            keys_loaded = count,
            trigger = cause.name,
            change_seq = caught.served.change_seq(),
            changes_applied = caught.applied,
            fetch_ms = built.timing.fetch_ms,
            build_ms = built.timing.build_ms,
            "refresh_success"
        );
        if let Some(written) = self.write_cache(built.body).await {
            shared.status().cache_error = written.err();
        }
        self.write_changes().await;
        Ok(count)
    }

    /// A body just loaded whole (its generation, whether it was encrypted, its version) with the
    /// log beyond it: the generation recorded; refused, for an encrypted store, when it reaches a
    /// lower change than was served; else that change recorded.
    async fn follow_loaded(
        &self,
        keys: KeySet,
        (generation, encrypted, version): (Option<u64>, bool, Option<&str>),
    ) -> Result<CaughtUp, ReloadError> {
        self.record_generation(generation).await;
        let caught = self.follow_base(keys).await;
        if encrypted {
            self.check_change_rollback(&caught.served, version)?;
        }
        self.record_change(&caught.served);
        Ok(caught)
    }

    /// Refuses keys that reach a lower change of the log than was served (same store).
    fn check_change_rollback(
        &self,
        served: &ServedKeys,
        version: Option<&str>,
    ) -> Result<(), ReloadError> {
        let checked = self
            .newest_change
            .check(served.store_id(), served.change_seq());
        checked.map_err(|cause| ReloadError::Body {
            store: self.store.describe(),
            version: version.unwrap_or("-").to_string(),
            cause: BodyError::Rollback(cause),
        })
    }

    /// Remembers the change the keys now served reach.
    fn record_change(&self, served: &ServedKeys) {
        self.newest_change
            .served(served.store_id(), served.change_seq());
    }

    /// A failed load: the set in force stays, marked stale; max_stale starts counting from the
    /// last time the store confirmed it.
    fn failed(&self, shared: &Shared, error: ReloadError, cause: Cause) -> ReloadError {
        let mut status = shared.status();
        if !status.stale
            && let Some(confirmed) = status.last_load_at
        {
            shared.set_serve_until(self.deadline_from(confirmed));
        }
        status.last_error = Some(error.to_string());
        status.stale = true;
        tracing::error!(
            error = %error,
            trigger = cause.name,
            keys_served = shared.keys().len(),
            "refresh_failed"
        );
        error
    }

    /// Fetches from the store and builds a set off the async threads.
    async fn fetch_and_build(&self, since: Option<&str>) -> Result<Loaded, ReloadError> {
        let started = std::time::Instant::now();
        let fetched = self
            .store
            .fetch(since)
            .await
            .map_err(|e| ReloadError::Store(Arc::new(e)))?;
        let fetch_ms = started.elapsed().as_millis() as u64;
        let (body, version) = match fetched {
            Fetched::NotModified => return Ok(Loaded::Unchanged),
            Fetched::Missing => {
                if self.storage_secret.is_some() {
                    self.newest
                        .check_missing()
                        .map_err(|cause| ReloadError::Emptied {
                            store: self.store.describe(),
                            cause,
                        })?;
                }
                tracing::warn!(store = %self.store.describe(), "store_object_missing_serving_no_keys");
                return Ok(Loaded::Fresh(Box::new(Built {
                    keys: KeySet::empty(),
                    skipped: Vec::new(),
                    generation: None,
                    encrypted: false,
                    version: None,
                    body: None,
                    timing: Timing::default(),
                })));
            }
            Fetched::Body { body, version } => (body, version),
        };
        let built = std::time::Instant::now();
        let bad_body = |cause| ReloadError::Body {
            store: self.store.describe(),
            version: version.clone(),
            cause,
        };
        let parsed = self.build(body).await?.map_err(bad_body)?;
        if parsed.encrypted {
            let now = u64::try_from(timestamp::now()).unwrap_or(0);
            self.newest
                .check(parsed.generation, now)
                .map_err(|cause| bad_body(BodyError::Rollback(cause)))?;
        }
        Ok(Loaded::Fresh(Box::new(Built {
            keys: parsed.keys,
            skipped: parsed.skipped,
            generation: parsed.generation,
            encrypted: parsed.encrypted,
            version: Some(version),
            body: Some(parsed.body),
            timing: Timing {
                fetch_ms,
                build_ms: built.elapsed().as_millis() as u64,
            },
        })))
    }

    /// Decodes and indexes a body on a blocking thread; the outer error is a cancelled build.
    async fn build(&self, body: Vec<u8>) -> Result<Result<Parsed, BodyError>, ReloadError> {
        let secret = self.storage_secret.clone();
        tokio::task::spawn_blocking(move || {
            let json = codec::decode(&body, secret.as_ref())?;
            let built = KeySet::from_json(&json).map_err(|e| BodyError::Keys(Arc::new(e)));
            let encrypted = codec::is_encrypted(&body);
            let generation = encrypted.then(|| generation::of_json(&json)).flatten();
            // A decrypted body holds every plaintext secret: zeroed as soon as it is parsed.
            if let std::borrow::Cow::Owned(plain) = json {
                drop(zeroize::Zeroizing::new(plain));
            }
            let (keys, skipped) = built?;
            Ok(Parsed {
                keys,
                skipped,
                body,
                encrypted,
                generation,
            })
        })
        .await
        .map_err(|e| ReloadError::Cancelled(e.to_string()))
    }

    /// Remembers (and records on disk) the generation of an encrypted body now served.
    async fn record_generation(&self, generation: Option<u64>) {
        if let Some(generation) = generation {
            let newest = self.newest.clone();
            let _ = tokio::task::spawn_blocking(move || newest.served(generation)).await;
        }
    }

    /// The set in the last-known-good cache, and when the cache was written.
    async fn load_cache(
        &self,
        path: &Path,
    ) -> Result<(KeySet, Vec<SkippedKey>, UnixMillis), ReloadError> {
        let unusable = |cause| ReloadError::Cache {
            path: path.to_path_buf(),
            cause,
        };
        let owned = path.to_path_buf();
        let limit = self.max_cache_bytes;
        let (body, written) = tokio::task::spawn_blocking(move || cache::read(&owned, limit))
            .await
            .map_err(|e| ReloadError::Cancelled(e.to_string()))?
            .map_err(|e| unusable(BodyError::File(Arc::new(e))))?;
        let written = written
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as UnixMillis);
        let parsed = self.build(body).await?.map_err(unusable)?;
        // The cache held what was served last: its generation is served again.
        self.record_generation(parsed.generation).await;
        Ok((parsed.keys, parsed.skipped, written))
    }

    /// Writes `body` to the cache, if one is configured and there is a body (a missing store
    /// object has none): `None` when nothing was written, else the outcome, for `/status`.
    async fn write_cache(&self, body: Option<Vec<u8>>) -> Option<Result<(), String>> {
        let (Some(path), Some(body)) = (self.cache_path.clone(), body) else {
            return None;
        };
        let shown = path.display().to_string();
        let result = tokio::task::spawn_blocking(move || cache::write(&path, &body))
            .await
            .map_err(|error| error.to_string())
            .and_then(|written| written.map_err(|error| error.to_string()));
        match &result {
            Ok(()) => tracing::debug!(cache = %shown, "cache_written"),
            Err(error) => tracing::warn!(cache = %shown, %error, "cache_write_failed"),
        }
        Some(result.map_err(|error| format!("cannot write the cache {shown}: {error}")))
    }

    fn deadline_from(&self, confirmed_at: UnixMillis) -> UnixMillis {
        match self.max_stale {
            Some(max) => confirmed_at.saturating_add(max.as_millis() as UnixMillis),
            None => UnixMillis::MAX,
        }
    }
}

/// The trigger one load answers a batch of conditional requests with: queue events that named
/// only changes are answered by reading through the highest; anything else by the first other.
fn batch_trigger(batch: &[ReloadRequest]) -> Trigger {
    let other = batch
        .iter()
        .map(|r| r.trigger)
        .find(|t| !matches!(t, Trigger::NotifyChange(_)));
    let highest = batch.iter().filter_map(|r| match r.trigger {
        Trigger::NotifyChange(seq) => Some(seq),
        _ => None,
    });
    match (other, highest.max()) {
        (Some(other), _) => other,
        (None, Some(seq)) => Trigger::NotifyChange(seq),
        (None, None) => Trigger::Poll,
    }
}

/// What one load ended as: the outcome, its result and cause for the metrics.
type Loaded3 = (ReloadOutcome, ReloadResult, Cause);

/// [`confirmed_unchanged`] as a load's end.
fn unchanged(shared: &Shared, cause: Cause, now: UnixMillis) -> Loaded3 {
    let count = confirmed_unchanged(shared, cause, now);
    (Ok(count), ReloadResult::Unchanged, cause)
}

/// The store answered "not modified": the set in force is confirmed, fresh again.
fn confirmed_unchanged(shared: &Shared, cause: Cause, now: UnixMillis) -> usize {
    let mut status = shared.status();
    status.last_load_at = Some(now);
    status.last_error = None;
    status.stale = false;
    shared.set_serve_until(UnixMillis::MAX);
    tracing::debug!(trigger = cause.name, "refresh_unchanged");
    shared.keys().len()
}

/// systemd's STATUS= line: what is served and whether it is fresh.
pub fn status_line(shared: &Shared) -> String {
    let count = shared.keys().len();
    if shared.status().stale {
        format!(
            "serving {count} keys (STALE: last load failed) from {}",
            shared.store
        )
    } else {
        format!("serving {count} keys from {}", shared.store)
    }
}

fn log_skipped(skipped: &[SkippedKey]) {
    for key in skipped {
        tracing::warn!(key_id = %key.key_id, reason = %key.reason, "key_skipped");
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// The first load's record; its time is filled in by [`Reloader::initial_load`].
fn first_load(result: ReloadResult, at: UnixMillis) -> LoadRecord {
    LoadRecord {
        trigger: ReloadTrigger::Start,
        result,
        elapsed: Duration::ZERO,
        at,
    }
}
