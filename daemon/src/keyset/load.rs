//! Building a key set from key-file JSON with every core.
//!
//! A million-key file is ~370 MB of JSON; parsing it is most of a load. The `keys` array is cut
//! into runs at guessed element boundaries ([`scan::split_points`]), each run is parsed by its own
//! thread into a [`Chunk`], and [`index::assemble`] joins the chunks. A guess is only trusted once
//! the run before it has stopped exactly on it — an element boundary found by parsing from the
//! true start — so a guess that fell inside a string, or past the end of the array, is detected,
//! and the loader then carries on from where the previous run stopped, on one thread. The result
//! (keys, skipped keys, or the first error in file order) is therefore the same as one sequential
//! pass for every input; only the time differs.
//!
//! Measured (2026-12-01, 2-core VM with about one core's worth of other work on it; 1,000,000
//! Python-format keys, 367 MB, from `heare-auth-bench --write-keys`; `load_keyset FILE THREADS`,
//! runs interleaved, median of 5, parse+index time):
//! - The split is kept: 2 threads take 1,212 ms (1,128–1,270) against 1,915 ms (1,806–2,212) on
//!   one, 37% less.
//! - Plain key objects are parsed by hand ([`fast`]), everything else by serde_json. The fast
//!   path was removed on 2026-12-01 when it saved 16–19% of parse+index (under the 25% asked of
//!   hand-written code then) and brought back on 2026-12-03 for the 1.0 s target of a million-key
//!   start: without it this build's `load_keyset FILE 2` took 749–880 ms (median 803) against
//!   7ae68c2's 631–684 ms (median 640) with it, five runs each alternating on a quiet VM, and the
//!   daemon's build step 770–990 ms against 594–769 ms (six each).

use super::chunk::{Chunk, FileKey};
use super::scan::{self, Fail, Stopped};
use super::{KeySet, LoadError, LogPosition, SkippedKey, fast, index};
use heare_auth_store::change::{CHANGE_SEQ_FIELD, STORE_ID_FIELD};
use std::hash::RandomState;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::ScopedJoinHandle;

/// How a load may use threads.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Threads that parse and index at the same time (1: all on the calling thread).
    pub threads: usize,
    /// Files smaller than this are parsed on one thread (threads cost more than they save).
    pub min_parallel_bytes: usize,
    /// Whether plain key objects take the hand-written parser ([`fast`]); `false` parses every
    /// key with serde_json (for measurements and tests; the result is the same).
    pub fast_path: bool,
}

impl Plan {
    /// One thread per available CPU (at most 8), for files of at least 1 MiB.
    pub fn for_this_host() -> Self {
        Plan {
            threads: std::thread::available_parallelism()
                .map_or(1, std::num::NonZeroUsize::get)
                .clamp(1, 8),
            min_parallel_bytes: 1 << 20,
            fast_path: true,
        }
    }
}

pub(super) fn load(json: &[u8], plan: Plan) -> Result<(KeySet, Vec<SkippedKey>), LoadError> {
    let id_hasher = RandomState::new();
    let runner = Runner {
        json,
        plan,
        id_hasher: &id_hasher,
    };
    let mut chunks = Vec::new();
    let mut log = LogPosition::default();
    let walked = scan::walk_file(
        json,
        |pos| keys_array(runner, pos, &mut chunks),
        |name, pos| log.read_member(json, name, pos),
    );
    // A duplicate among the keys read before a syntax error is reported first, as a sequential
    // load meets it first.
    let (mut set, skipped) = index::assemble(chunks, plan.threads)?;
    walked.map_err(Fail::into_load_error)?;
    set.log = log;
    Ok((set, skipped))
}

impl LogPosition {
    /// Reads the top-level member `name` at `pos` if it is one of the log's (`change_seq`,
    /// `store_id`), else skips it; returns the position after it. A value of another type
    /// counts as absent: the set then follows no log and is loaded whole on every change.
    fn read_member(&mut self, json: &[u8], name: &str, pos: usize) -> Result<usize, Fail> {
        if name != CHANGE_SEQ_FIELD && name != STORE_ID_FIELD {
            return scan::skip_member(json, pos);
        }
        let (value, end) = scan::parse_one::<serde_json::Value>(json, pos)?;
        match name {
            CHANGE_SEQ_FIELD => self.change_seq = value.as_u64(),
            _ => self.store_id = value.as_str().map(str::to_owned),
        }
        Ok(end)
    }
}

/// What every run of one load shares.
#[derive(Clone, Copy)]
struct Runner<'j> {
    json: &'j [u8],
    plan: Plan,
    /// The same for every chunk of a load, so that their id hashes compare.
    id_hasher: &'j RandomState,
}

/// A run's chunk, and how the run ended.
type Ran = (Chunk, Result<Stopped, Fail>);

/// Parses the array at `pos` into `chunks`; returns the position after it.
fn keys_array(runner: Runner<'_>, pos: usize, chunks: &mut Vec<Chunk>) -> Result<usize, Fail> {
    let first = match scan::open_array(runner.json, pos)? {
        Ok(first) => first,
        Err(end) => return Ok(end),
    };
    let guesses = split_guesses(runner, first);
    let cancel = AtomicBool::new(false);
    std::thread::scope(|scope| {
        let speculative: Vec<_> = guesses
            .iter()
            .enumerate()
            .map(|(n, &start)| {
                let stop = guesses.get(n + 1).copied();
                let cancel = &cancel;
                scope.spawn(move || runner.run(start, stop, Some(cancel)))
            })
            .collect();
        let first_run = runner.run(first, guesses.first().copied(), None);
        let result = join_runs(runner, first_run, speculative, &cancel, chunks);
        cancel.store(true, Ordering::Relaxed);
        result
    })
}

/// Where runs other than the first start: none for one thread or a small file.
fn split_guesses(runner: Runner<'_>, first: usize) -> Vec<usize> {
    let Plan {
        threads,
        min_parallel_bytes,
        ..
    } = runner.plan;
    if threads > 1 && runner.json.len() - first >= min_parallel_bytes {
        scan::split_points(runner.json, first, threads - 1)
    } else {
        Vec::new()
    }
}

/// Takes the runs into `chunks` in file order: the first run, then each speculative run whose
/// start the run before it stopped exactly on (the guess is an element boundary, so the run is
/// the file's own). After a wrong guess the rest of the array is parsed on this thread and the
/// later speculative runs are cancelled and discarded. Returns the position after the array.
fn join_runs(
    runner: Runner<'_>,
    first_run: Ran,
    speculative: Vec<ScopedJoinHandle<'_, Ran>>,
    cancel: &AtomicBool,
    chunks: &mut Vec<Chunk>,
) -> Result<usize, Fail> {
    let mut speculative = speculative.into_iter();
    let (mut chunk, mut result) = first_run;
    loop {
        chunks.push(chunk);
        let resume_at = match result? {
            Stopped::End(end) => return Ok(end),
            Stopped::AtStop(at) => match speculative.next() {
                Some(next) => {
                    (chunk, result) = next
                        .join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                    continue;
                }
                None => at,
            },
            Stopped::Before(at) => at,
        };
        cancel.store(true, Ordering::Relaxed);
        (chunk, result) = runner.run(resume_at, None, None);
    }
}

impl Runner<'_> {
    /// Parses the elements from `start` (up to `stop`) into a new chunk.
    fn run(self, start: usize, stop: Option<usize>, cancel: Option<&AtomicBool>) -> Ran {
        let json = self.json;
        let range = json
            .get(start..stop.unwrap_or(json.len()))
            .unwrap_or_default();
        // A pretty-printed key takes ~370 bytes, a minified one ~200: reserve for the former and
        // let a denser file grow the vectors (large ones grow by remapping, not copying).
        let estimate = range.len() / 256 + 16;
        let mut chunk = Chunk::new(estimate, self.id_hasher.clone());
        let parse = |json, pos| parse_key(json, pos, self.plan.fast_path);
        let result = scan::elements(json, start, stop, cancel, parse, |key| chunk.add(key));
        (chunk, result)
    }
}

/// One key object: by the fast path when the plan allows it and the key is in the plain form,
/// else by serde_json.
fn parse_key(json: &[u8], pos: usize, fast_path: bool) -> Result<(FileKey<'_>, usize), Fail> {
    match fast_path.then(|| fast::key(json, pos)).flatten() {
        Some(parsed) => Ok(parsed),
        None => scan::parse_one(json, pos),
    }
}
