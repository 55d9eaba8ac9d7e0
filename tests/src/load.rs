//! A load driver for the real daemon: many keep-alive connections verifying over the Unix socket
//! while the key set is reloaded on a fixed schedule, checking every answer and measuring latency.
//!
//! [`Workload`] writes two key sets that share the keys every client verifies and differ in a few
//! keys (one key changes its name and metadata, one exists only in set A, two only in set B).
//! [`run`] opens [`Plan::connections`] connections from one single-threaded generator and, in
//! alternating windows, measures without reloads (baseline) and with a reload every
//! [`Plan::reload_every`] (the store file is replaced by the other set, then `POST /refresh`).
//! Interleaving the windows spreads the noise of a shared machine over both phases alike.
//!
//! Every answer is compared byte for byte with the answer the daemon gave for that key at setup
//! (checked there against the key file). Answers must follow the set: a reload counter is odd while
//! a reload is under way; a request that starts and ends within one even value must match that set
//! exactly, one that overlaps a reload may match either set, never anything else. After each reload
//! the reloader itself checks the changing keys against the new set. Latency is measured per request
//! from writing it to reading the whole answer, into a log-linear histogram (1 µs resolution below
//! 128 µs, 1/64 above), so a soak run of hours keeps constant memory.

use crate::daemon::Daemon;
use crate::http::{self, Request};
use crate::keys::{TestKey, key_file};
use rand::Rng;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to run.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrent keep-alive connections.
    pub connections: usize,
    /// Total time measured with reloads.
    pub reloading: Duration,
    /// Total time measured without reloads.
    pub baseline: Duration,
    /// Length of one reload window; baseline windows are proportionally shorter.
    pub window: Duration,
    /// Period of reloads during reload windows.
    pub reload_every: Duration,
    /// Keys in each set (besides the few that differ).
    pub keys: usize,
    /// Each connection sends at most one request per this interval; `None`: as fast as answered.
    pub pace: Option<Duration>,
}

impl Plan {
    /// The CI run: 64 connections each sending a request every 20 ms (3,200/s in all), 30 s with
    /// a reload every 300 ms, 12 s of baseline, 1,000 keys per set. Sized for the debug build CI
    /// tests, which parses and hashes a set ~30x slower than release (10,000 keys would take over
    /// a second per reload there); a release soak can take 10,000 keys and a faster pace.
    pub fn ci() -> Plan {
        Plan {
            connections: 64,
            reloading: Duration::from_secs(30),
            baseline: Duration::from_secs(12),
            window: Duration::from_secs(5),
            reload_every: Duration::from_millis(300),
            keys: 1_000,
            pace: Some(Duration::from_millis(20)),
        }
    }

    /// [`Plan::ci`], lengthened by `HEARE_SOAK_SECS` (seconds with reloads; the baseline gets
    /// 40% of that) and adjusted by `HEARE_LOAD_KEYS`, `HEARE_LOAD_CONNECTIONS`, and
    /// `HEARE_LOAD_PACE_US` (0: no pacing). Returns the plan and whether it is a soak run.
    pub fn from_env() -> (Plan, bool) {
        let number = |name: &str| -> Option<u64> {
            let value = std::env::var(name).ok()?;
            Some(
                value
                    .parse()
                    .unwrap_or_else(|_| panic!("{name}={value:?} is not a number")),
            )
        };
        let mut plan = Plan::ci();
        let soak = number("HEARE_SOAK_SECS");
        if let Some(seconds) = soak {
            plan.reloading = Duration::from_secs(seconds.max(1));
            plan.baseline = plan.reloading * 2 / 5;
        }
        if let Some(keys) = number("HEARE_LOAD_KEYS") {
            plan.keys = keys as usize;
        }
        if let Some(connections) = number("HEARE_LOAD_CONNECTIONS") {
            plan.connections = (connections as usize).max(1);
        }
        if let Some(pace) = number("HEARE_LOAD_PACE_US") {
            plan.pace = (pace > 0).then(|| Duration::from_micros(pace));
        }
        (plan, soak.is_some())
    }
}

/// One key as verified under load: the request, and the answers it may get.
#[derive(Clone)]
struct Probe {
    label: String,
    request: Vec<u8>,
    /// The exact answer (status, body) while set A is loaded, and while set B is.
    in_a: (u16, Vec<u8>),
    in_b: (u16, Vec<u8>),
}

impl Probe {
    fn accepts(&self, set: Option<KeySet>, status: u16, body: &[u8]) -> bool {
        let matches = |(s, b): &(u16, Vec<u8>)| *s == status && b == body;
        match set {
            Some(KeySet::A) => matches(&self.in_a),
            Some(KeySet::B) => matches(&self.in_b),
            None => matches(&self.in_a) || matches(&self.in_b),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeySet {
    A,
    B,
}

/// The two key sets and the store file the daemon reads.
pub struct Workload {
    /// The store file (`file://` this for the daemon's `--store`).
    pub store: PathBuf,
    set_a: PathBuf,
    set_b: PathBuf,
    stable: Vec<TestKey>,
    flip: (TestKey, TestKey),
    only_a: TestKey,
    only_b: TestKey,
    unknown: String,
    keys_in_a: usize,
    keys_in_b: usize,
}

fn random_secret(rng: &mut impl Rng) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let tail: String = (0..59)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("sec_0{tail}")
}

impl Workload {
    /// Writes both sets into `dir`; the store starts as set A.
    pub fn write(dir: &Path, keys: usize) -> Workload {
        let mut rng = rand::rng();
        let stable: Vec<TestKey> = (0..keys)
            .map(|i| TestKey::new(&format!("key_load_{i:07}"), &random_secret(&mut rng)))
            .collect();
        let flip_secret = random_secret(&mut rng);
        let mut flip_a = TestKey::new("key_load_flip", &flip_secret);
        flip_a.name = "flip in set A".into();
        flip_a.metadata = serde_json::json!({ "set": "a" });
        let mut flip_b = flip_a.clone();
        flip_b.name = "flip in set B".into();
        flip_b.metadata = serde_json::json!({ "set": "b", "extra": [1, 2, 3] });
        let only_a = TestKey::new("key_load_only_a", &random_secret(&mut rng));
        let only_b = TestKey::new("key_load_only_b", &random_secret(&mut rng)).hashed();
        let also_b = TestKey::new("key_load_also_b", &random_secret(&mut rng));

        let mut a = stable.clone();
        a.extend([flip_a.clone(), only_a.clone()]);
        let mut b = stable.clone();
        b.extend([flip_b.clone(), only_b.clone(), also_b]);
        let set_a = dir.join("set-a.json");
        let set_b = dir.join("set-b.json");
        std::fs::write(&set_a, key_file(&a)).expect("write set A");
        std::fs::write(&set_b, key_file(&b)).expect("write set B");
        let workload = Workload {
            store: dir.join("keys.json"),
            set_a,
            set_b,
            stable,
            flip: (flip_a, flip_b),
            only_a,
            only_b,
            unknown: random_secret(&mut rng),
            keys_in_a: a.len(),
            keys_in_b: b.len(),
        };
        workload.install(KeySet::A);
        workload
    }

    /// `--store` for the daemon.
    pub fn store_url(&self) -> String {
        format!("file://{}", self.store.display())
    }

    /// Atomically replaces the store file with `set`; returns its key count.
    fn install(&self, set: KeySet) -> usize {
        let (source, count) = match set {
            KeySet::A => (&self.set_a, self.keys_in_a),
            KeySet::B => (&self.set_b, self.keys_in_b),
        };
        let temporary = self.store.with_extension("json.next");
        std::fs::copy(source, &temporary).expect("copy the key set");
        std::fs::rename(&temporary, &self.store).expect("install the key set");
        count
    }
}

/// Latencies in µs, log-linear: exact below 128, then 64 buckets per power of two.
#[derive(Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; 128 + 64 * 58],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    fn bucket(value: u64) -> usize {
        if value < 128 {
            return value as usize;
        }
        let exponent = 63 - value.leading_zeros() as usize; // >= 7
        let mantissa = (value >> (exponent - 6)) as usize; // 64..128
        128 + (exponent - 7) * 64 + (mantissa - 64)
    }

    fn lower_bound(bucket: usize) -> u64 {
        if bucket < 128 {
            return bucket as u64;
        }
        let exponent = (bucket - 128) / 64 + 7;
        let mantissa = ((bucket - 128) % 64 + 64) as u64;
        mantissa << (exponent - 6)
    }

    pub fn record(&mut self, micros: u64) {
        let bucket = Self::bucket(micros).min(self.counts.len() - 1);
        self.counts[bucket] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The value at quantile `q` (0..=1), as the lower bound of its bucket, in µs.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Self::lower_bound(bucket).min(self.max);
            }
        }
        self.max
    }

    pub fn max(&self) -> u64 {
        self.max
    }
}

/// What one phase (baseline or reloading) saw.
#[derive(Clone, Default)]
pub struct PhaseReport {
    pub latency: Histogram,
    pub failures: u64,
    pub seconds: f64,
}

impl PhaseReport {
    pub fn requests(&self) -> u64 {
        self.latency.count() + self.failures
    }
    pub fn p50(&self) -> u64 {
        self.latency.quantile(0.50)
    }
    pub fn p99(&self) -> u64 {
        self.latency.quantile(0.99)
    }
    pub fn p999(&self) -> u64 {
        self.latency.quantile(0.999)
    }
}

/// The outcome of [`run`].
pub struct LoadReport {
    pub plan: Plan,
    pub baseline: PhaseReport,
    pub reloading: PhaseReport,
    /// Requests that overlapped a reload (accepted from either set).
    pub during_swap: u64,
    pub reloads: u64,
    pub reload_failures: u64,
    /// Post-reload checks that the changing keys follow the new set.
    pub set_checks: u64,
    /// `POST /refresh` round trips, in µs.
    pub reload_time: Histogram,
    /// The first failures, described.
    pub failure_samples: Vec<String>,
}

impl LoadReport {
    /// Wrong or failed verify answers, and failed reloads or set checks.
    pub fn failures(&self) -> u64 {
        self.baseline.failures + self.reloading.failures + self.reload_failures
    }

    /// p99 with reloads over p99 without.
    pub fn p99_ratio(&self) -> f64 {
        self.reloading.p99() as f64 / self.baseline.p99().max(1) as f64
    }
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plan = &self.plan;
        writeln!(
            f,
            "load: {} connections, {} keys per set, pace {}, reload every {:?}",
            plan.connections,
            plan.keys,
            plan.pace
                .map_or("none (closed loop)".to_string(), |p| format!(
                    "1 request / {p:?} / connection"
                )),
            plan.reload_every
        )?;
        for (name, phase) in [("baseline", &self.baseline), ("reloading", &self.reloading)] {
            writeln!(
                f,
                "{name:>9}: {:>9} requests in {:>6.1} s ({:>6.0}/s), {} failed; latency p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
                phase.requests(),
                phase.seconds,
                phase.requests() as f64 / phase.seconds.max(1e-9),
                phase.failures,
                phase.p50(),
                phase.p99(),
                phase.p999(),
                phase.latency.max()
            )?;
        }
        writeln!(
            f,
            "  reloads: {} ({} failed), POST /refresh p50 {} µs, max {} µs; {} set checks; {} answers overlapped a reload",
            self.reloads,
            self.reload_failures,
            self.reload_time.quantile(0.5),
            self.reload_time.max(),
            self.set_checks,
            self.during_swap
        )?;
        write!(
            f,
            "  p99 with reloads / p99 without: {:.2}",
            self.p99_ratio()
        )?;
        for sample in &self.failure_samples {
            write!(f, "\n  failure: {sample}")?;
        }
        Ok(())
    }
}

const BASELINE: u8 = 0;
const RELOADING: u8 = 1;
/// Connections opening, first answers: not measured.
const WARMUP: u8 = 2;

/// State shared by the generator, the reloader and the schedule.
struct Shared {
    phase: AtomicU8,
    stop: AtomicBool,
    /// Even: a set is loaded and stable (`epoch / 2` even: A, odd: B); odd: a reload is under way.
    epoch: AtomicU64,
    failure_samples: Mutex<Vec<String>>,
}

impl Shared {
    fn set_for(epoch: u64) -> Option<KeySet> {
        if epoch % 2 == 1 {
            None
        } else if (epoch / 2).is_multiple_of(2) {
            Some(KeySet::A)
        } else {
            Some(KeySet::B)
        }
    }

    fn failed(&self, what: String) {
        if let Ok(mut samples) = self.failure_samples.lock()
            && samples.len() < 20
        {
            samples.push(what);
        }
    }
}

/// Fetches the answers each probe may get, checking them against the key files. Leaves set A
/// loaded (epoch 0).
fn probes(daemon: &Daemon, workload: &Workload, sample: usize) -> Vec<Probe> {
    let answer = |secret: &str| {
        let response = daemon.verify(secret);
        (response.status, response.body.into_bytes())
    };
    let check = |key: &TestKey, (status, body): &(u16, Vec<u8>)| {
        let json: serde_json::Value = serde_json::from_slice(body).expect("JSON answer");
        assert_eq!(*status, 200, "{json}");
        assert_eq!(json["valid"], true, "{json}");
        assert_eq!(json["key_id"], key.id.as_str(), "{json}");
        assert_eq!(json["name"], key.name.as_str(), "{json}");
        assert_eq!(json["metadata"], key.metadata, "{json}");
    };
    let refused = |(status, body): &(u16, Vec<u8>)| {
        let json: serde_json::Value = serde_json::from_slice(body).expect("JSON answer");
        assert_eq!(*status, 403, "{json}");
        assert_eq!(json["valid"], false, "{json}");
    };
    let refresh_to = |set: KeySet| {
        let expected = workload.install(set);
        let response = daemon.refresh();
        assert_eq!(response.status, 200, "{}", response.body);
        assert_eq!(response.json()["keys_loaded"], expected);
    };

    refresh_to(KeySet::B);
    let (flip_a, flip_b) = &workload.flip;
    let b_answers = [
        answer(&flip_b.secret),
        answer(&workload.only_a.secret),
        answer(&workload.only_b.secret),
    ];
    refresh_to(KeySet::A);
    let a_answers = [
        answer(&flip_a.secret),
        answer(&workload.only_a.secret),
        answer(&workload.only_b.secret),
    ];
    check(flip_b, &b_answers[0]);
    refused(&b_answers[1]);
    check(&workload.only_b, &b_answers[2]);
    check(flip_a, &a_answers[0]);
    check(&workload.only_a, &a_answers[1]);
    refused(&a_answers[2]);

    let request = |secret: &str| {
        let body = serde_json::json!({ "api_key": secret }).to_string();
        format!(
            "POST /verify HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let mut probes = vec![
        Probe {
            label: "changing key".into(),
            request: request(&flip_a.secret),
            in_a: a_answers[0].clone(),
            in_b: b_answers[0].clone(),
        },
        Probe {
            label: "key only in set A".into(),
            request: request(&workload.only_a.secret),
            in_a: a_answers[1].clone(),
            in_b: b_answers[1].clone(),
        },
        Probe {
            label: "key only in set B".into(),
            request: request(&workload.only_b.secret),
            in_a: a_answers[2].clone(),
            in_b: b_answers[2].clone(),
        },
    ];
    let unknown = answer(&workload.unknown);
    refused(&unknown);
    probes.push(Probe {
        label: "unknown secret".into(),
        request: request(&workload.unknown),
        in_a: unknown.clone(),
        in_b: unknown,
    });
    let step = (workload.stable.len() / sample.max(1)).max(1);
    for key in workload.stable.iter().step_by(step).take(sample) {
        let expected = answer(&key.secret);
        check(key, &expected);
        probes.push(Probe {
            label: key.id.clone(),
            request: request(&key.secret),
            in_a: expected.clone(),
            in_b: expected,
        });
    }
    probes
}

/// Runs `plan` against `daemon`, whose store is `workload.store`. The daemon must let this
/// process call `POST /refresh` (it does when both run as the same user or as root).
pub fn run(daemon: &Daemon, workload: &Workload, plan: &Plan) -> LoadReport {
    let probes = Arc::new(probes(daemon, workload, 256));
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        stop: AtomicBool::new(false),
        epoch: AtomicU64::new(0),
        failure_samples: Mutex::new(Vec::new()),
    });

    let generator = {
        let (shared, probes, plan, socket) = (
            shared.clone(),
            probes.clone(),
            plan.clone(),
            daemon.socket.clone(),
        );
        std::thread::spawn(move || generate(&socket, &plan, &probes, &shared))
    };
    let reloader = std::thread::scope(|scope| {
        let reloader = scope.spawn(|| reload_loop(daemon, workload, plan, &shared));
        schedule(plan, &shared);
        reloader.join().expect("reloader thread")
    });
    let (mut baseline, mut reloading, during_swap) = generator.join().expect("generator thread");
    let (reloads, reload_failures, set_checks, reload_time, phase_seconds) = reloader;
    baseline.seconds = phase_seconds[BASELINE as usize];
    reloading.seconds = phase_seconds[RELOADING as usize];
    let failure_samples = shared
        .failure_samples
        .lock()
        .map(|s| s.clone())
        .unwrap_or_default();
    LoadReport {
        plan: plan.clone(),
        baseline,
        reloading,
        during_swap,
        reloads,
        reload_failures,
        set_checks,
        reload_time,
        failure_samples,
    }
}

/// Alternates baseline and reload windows until both totals are spent, then stops everything.
fn schedule(plan: &Plan, shared: &Shared) {
    // Warm-up: connections open, first requests answered; not measured.
    std::thread::sleep(Duration::from_millis(500));
    let windows = (plan.reloading.as_secs_f64() / plan.window.as_secs_f64())
        .ceil()
        .max(1.0);
    let reload_window = plan.reloading.div_f64(windows);
    let baseline_window = plan.baseline.div_f64(windows);
    for _ in 0..windows as u64 {
        for (phase, length) in [(BASELINE, baseline_window), (RELOADING, reload_window)] {
            if length.is_zero() {
                continue;
            }
            shared.phase.store(phase, Ordering::SeqCst);
            std::thread::sleep(length);
        }
    }
    shared.stop.store(true, Ordering::SeqCst);
}

type ReloadOutcome = (u64, u64, u64, Histogram, [f64; 3]);

/// During reload windows, every `plan.reload_every`: install the other set, `POST /refresh`,
/// check that the changing keys follow it. Also clocks the time spent in each phase.
fn reload_loop(
    daemon: &Daemon,
    workload: &Workload,
    plan: &Plan,
    shared: &Shared,
) -> ReloadOutcome {
    let (mut reloads, mut failures, mut checks) = (0, 0, 0);
    let mut reload_time = Histogram::default();
    let mut phase_seconds = [0.0f64; 3];
    let mut current = KeySet::A;
    let mut last = Instant::now();
    let mut next_reload = Instant::now();
    let (flip_a, flip_b) = &workload.flip;
    let mut check = |secret: &str, expected: Option<&TestKey>, what: &str| {
        checks += 1;
        let answer = http::send(&daemon.socket, &Request::verify(secret));
        let ok = match (&answer, expected) {
            (Ok(response), Some(key)) => {
                response.status == 200 && {
                    let json = response.json();
                    json["key_id"] == key.id.as_str()
                        && json["name"] == key.name.as_str()
                        && json["metadata"] == key.metadata
                }
            }
            (Ok(response), None) => response.status == 403,
            (Err(_), _) => false,
        };
        if !ok {
            shared.failed(format!("after a reload, {what}: {answer:?}"));
        }
        ok
    };
    while !shared.stop.load(Ordering::SeqCst) {
        let phase = shared.phase.load(Ordering::SeqCst);
        let now = Instant::now();
        phase_seconds[phase as usize] += now.duration_since(last).as_secs_f64();
        last = now;
        if phase != RELOADING || now < next_reload {
            std::thread::sleep(Duration::from_millis(2));
            continue;
        }
        next_reload = (next_reload + plan.reload_every).max(now);
        let target = match current {
            KeySet::A => KeySet::B,
            KeySet::B => KeySet::A,
        };
        // Odd while under way (it stays odd after a failed reload: the set is then unknown).
        let epoch = shared.epoch.load(Ordering::SeqCst) | 1;
        shared.epoch.store(epoch, Ordering::SeqCst);
        let expected = workload.install(target);
        let started = Instant::now();
        let refreshed = http::send(&daemon.socket, &Request::new("POST", "/refresh"));
        reload_time.record(started.elapsed().as_micros() as u64);
        reloads += 1;
        let ok =
            matches!(&refreshed, Ok(r) if r.status == 200 && r.json()["keys_loaded"] == expected);
        if !ok {
            failures += 1;
            shared.failed(format!("refresh to set {target:?}: {refreshed:?}"));
            continue;
        }
        current = target;
        // The next even value that names `current`.
        let mut settled = epoch + 1;
        if Shared::set_for(settled) != Some(current) {
            settled += 2;
        }
        shared.epoch.store(settled, Ordering::SeqCst);
        let all_ok = match current {
            KeySet::A => [
                check(&flip_a.secret, Some(flip_a), "changing key"),
                check(
                    &workload.only_a.secret,
                    Some(&workload.only_a),
                    "key only in A",
                ),
                check(&workload.only_b.secret, None, "key only in B"),
            ],
            KeySet::B => [
                check(&flip_b.secret, Some(flip_b), "changing key"),
                check(&workload.only_a.secret, None, "key only in A"),
                check(
                    &workload.only_b.secret,
                    Some(&workload.only_b),
                    "key only in B",
                ),
            ],
        };
        failures += all_ok.iter().filter(|ok| !**ok).count() as u64;
    }
    let now = Instant::now();
    let phase = shared.phase.load(Ordering::SeqCst);
    phase_seconds[phase as usize] += now.duration_since(last).as_secs_f64();
    (reloads, failures, checks, reload_time, phase_seconds)
}

/// The generator: `plan.connections` tasks on one thread, each a keep-alive connection.
fn generate(
    socket: &Path,
    plan: &Plan,
    probes: &Arc<Vec<Probe>>,
    shared: &Arc<Shared>,
) -> (PhaseReport, PhaseReport, u64) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("generator runtime");
    runtime.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for connection in 0..plan.connections {
            tasks.spawn(client(
                socket.to_path_buf(),
                connection,
                plan.pace,
                probes.clone(),
                shared.clone(),
            ));
        }
        let mut phases = [PhaseReport::default(), PhaseReport::default()];
        let mut during_swap = 0;
        while let Some(result) = tasks.join_next().await {
            let (mine, swaps) = result.expect("client task");
            for (total, part) in phases.iter_mut().zip(&mine) {
                total.latency.merge(&part.latency);
                total.failures += part.failures;
            }
            // Warm-up answers are not timed, but they are checked: count their failures.
            phases[BASELINE as usize].failures += mine[WARMUP as usize].failures;
            during_swap += swaps;
        }
        let [baseline, reloading] = phases;
        (baseline, reloading, during_swap)
    })
}

/// One connection: sends probes in turn (the changing keys, the unknown secret, then a stable
/// key, in a 1:1:1:1:12 mix), checks and times each answer; reconnects after an error.
async fn client(
    socket: PathBuf,
    connection: usize,
    pace: Option<Duration>,
    probes: Arc<Vec<Probe>>,
    shared: Arc<Shared>,
) -> ([PhaseReport; 3], u64) {
    let mut phases = [
        PhaseReport::default(),
        PhaseReport::default(),
        PhaseReport::default(),
    ];
    let mut during_swap = 0;
    let mut stream: Option<tokio::net::UnixStream> = None;
    let mut buffer = Vec::with_capacity(4096);
    let stable = probes.len() - 4;
    let mut ticker = pace.map(|p| {
        // Spread the connections' sends over the interval.
        let offset = p.mul_f64(connection as f64 / 64.0 % 1.0);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + offset, p);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker
    });
    let mut turn = connection;
    while !shared.stop.load(Ordering::Relaxed) {
        if let Some(ticker) = ticker.as_mut() {
            ticker.tick().await;
        }
        turn += 1;
        let probe = match turn % 16 {
            slot @ 0..4 => &probes[slot],
            _ => &probes[4 + (turn / 16 + connection * 7) % stable],
        };
        let phase = shared.phase.load(Ordering::Relaxed) as usize;
        let epoch_before = shared.epoch.load(Ordering::SeqCst);
        let started = Instant::now();
        let answer = exchange(&socket, &mut stream, &probe.request, &mut buffer).await;
        let elapsed = started.elapsed();
        let epoch_after = shared.epoch.load(Ordering::SeqCst);
        let set = if epoch_before == epoch_after {
            Shared::set_for(epoch_before)
        } else {
            None
        };
        if set.is_none() && phase != WARMUP as usize {
            during_swap += 1;
        }
        match answer {
            Ok(status) if probe.accepts(set, status, &buffer) => {
                phases[phase].latency.record(elapsed.as_micros() as u64);
            }
            Ok(status) => {
                phases[phase].failures += 1;
                shared.failed(format!(
                    "{} (set {set:?}): {status} {}",
                    probe.label,
                    String::from_utf8_lossy(&buffer)
                ));
            }
            Err(error) => {
                phases[phase].failures += 1;
                stream = None;
                shared.failed(format!("{}: {error}", probe.label));
            }
        }
    }
    (phases, during_swap)
}

/// Sends `request` on the connection (opening it if needed) and reads one answer; leaves its body
/// in `body` and returns its status.
async fn exchange(
    socket: &Path,
    stream: &mut Option<tokio::net::UnixStream>,
    request: &[u8],
    body: &mut Vec<u8>,
) -> std::io::Result<u16> {
    let connection = match stream {
        Some(connection) => connection,
        None => stream.insert(tokio::net::UnixStream::connect(socket).await?),
    };
    let result = tokio::time::timeout(Duration::from_secs(10), async {
        connection.write_all(request).await?;
        read_answer(connection, body).await
    })
    .await
    .unwrap_or_else(|_| {
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no answer within 10 s",
        ))
    });
    if result.is_err() {
        *stream = None;
    }
    result
}

/// Reads one HTTP/1.1 answer with a Content-Length body.
async fn read_answer(
    connection: &mut tokio::net::UnixStream,
    body: &mut Vec<u8>,
) -> std::io::Result<u16> {
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_string());
    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let read = connection.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed before an answer",
            ));
        }
        raw.extend_from_slice(&chunk[..read]);
        if let Some(at) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        if raw.len() > 64 * 1024 {
            return Err(invalid("answer head over 64 KiB"));
        }
    };
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| invalid("head not UTF-8"))?;
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| invalid("no status"))?;
    let length: usize = head
        .split("\r\n")
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse().ok())
        .ok_or_else(|| invalid("no Content-Length"))?;
    body.clear();
    body.extend_from_slice(&raw[head_end..]);
    while body.len() < length {
        let read = connection.read(&mut chunk).await?;
        if read == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "connection closed mid-answer",
            ));
        }
        body.extend_from_slice(&chunk[..read]);
    }
    if body.len() > length {
        return Err(invalid(
            "more bytes than Content-Length (nothing was pipelined)",
        ));
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_two_percent() {
        let mut histogram = Histogram::default();
        for value in 1..=100_000u64 {
            histogram.record(value);
        }
        for (q, exact) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = histogram.quantile(q) as f64;
            assert!((got - exact).abs() / exact < 0.02, "q{q}: {got} vs {exact}");
        }
        assert_eq!(histogram.quantile(0.0001), 10);
        assert_eq!(histogram.max(), 100_000);
        for value in [0, 1, 127, 128, 129, 1000, 65_535, 1 << 40] {
            let bucket = Histogram::bucket(value);
            assert!(Histogram::lower_bound(bucket) <= value);
            assert!(Histogram::lower_bound(bucket + 1) > value, "{value}");
        }
    }

    #[test]
    fn epochs_name_the_set() {
        assert_eq!(Shared::set_for(0), Some(KeySet::A));
        assert_eq!(Shared::set_for(1), None);
        assert_eq!(Shared::set_for(2), Some(KeySet::B));
        assert_eq!(Shared::set_for(4), Some(KeySet::A));
    }
}
