//! `boxoffice bench holds`: one event of S seats; C concurrent clients each
//! repeatedly hold a random pair of adjacent seats {2i, 2i+1} (all or nothing)
//! until every pair is held or the time limit passes. Random pairs make most
//! attempts conflicts near the end by construction; that is part of the workload.
//!
//! The same driver runs against Boxoffice, PostgreSQL and etcd
//! ([`crate::bench_targets`]). Against Boxoffice it goes through the public API as
//! real users: it registers as many as the per-user ticket limit requires, and
//! reports refusals at the door separately: 429 (a cluster whose reserve limit is
//! lower than the load) and 503 `OVERLOADED` (a node's admission shedding). At the end it checks that no pair was
//! acknowledged twice and that every acknowledged hold owns its seats (ACTIVE and
//! RESERVED on every node's seat map, for Boxoffice) and nothing else is held.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};

use anyhow::Context;

use crate::bench::process_cpu_seconds;
use crate::bench_targets::{Outcome, Target};
use crate::Client;

/// What a `holds` run measured.
#[derive(Debug, Clone)]
pub struct HoldsReport {
    pub system: &'static str,
    pub clients: usize,
    pub seats: u32,
    pub attempts: u64,
    pub holds: u64,
    pub conflicts: u64,
    pub rate_limited: u64,
    pub errors: u64,
    /// `errors` by kind (`timeout`, `500 INTERNAL`, `etcd: connect`, ...).
    pub failures: BTreeMap<String, u64>,
    pub elapsed: Duration,
    /// When 1%, 2%, ..., 100% of the seats were held, with the attempts made by
    /// then: how the rate falls as conflicts take over.
    pub progress: [Option<Mark>; 100],
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub generator_cpu_s: f64,
    /// For Boxoffice: which of the cluster's rate limits are raised over the
    /// spec's ([`crate::bench::rate_limits_note`]).
    pub rate_limits: Option<String>,
}

impl HoldsReport {
    pub fn attempts_per_s(&self) -> f64 {
        self.attempts as f64 / self.elapsed.as_secs_f64()
    }

    pub fn holds_per_s(&self) -> f64 {
        self.holds as f64 / self.elapsed.as_secs_f64()
    }

    /// The report as JSON (times in seconds), for scripts.
    pub fn to_json(&self) -> serde_json::Value {
        let secs = |d: Option<Duration>| d.map(|d| d.as_secs_f64());
        serde_json::json!({
            "system": self.system,
            "clients": self.clients,
            "seats": self.seats,
            "attempts": self.attempts,
            "holds": self.holds,
            "conflicts": self.conflicts,
            "rate_limited": self.rate_limited,
            "errors": self.errors,
            "failures": self.failures,
            "elapsed_s": self.elapsed.as_secs_f64(),
            "attempts_per_s": self.attempts_per_s(),
            "holds_per_s": self.holds_per_s(),
            "holds_per_s_first_half": self.holds_per_s_first_half(),
            "t50_s": secs(self.t50()),
            "t90_s": secs(self.t90()),
            "t100_s": secs(self.t100()),
            "progress": self.progress.iter().map(|m| m.map(|m| serde_json::json!({
                "at_s": m.at.as_secs_f64(),
                "attempts": m.attempts,
            }))).collect::<Vec<_>>(),
            "p50_ms": self.p50_ms,
            "p99_ms": self.p99_ms,
            "p999_ms": self.p999_ms,
            "max_ms": self.max_ms,
            "generator_cpu_s": self.generator_cpu_s,
            "rate_limits": self.rate_limits,
        })
    }

    /// When half the seats were held.
    pub fn t50(&self) -> Option<Duration> {
        self.progress[49].map(|m| m.at)
    }

    /// When 90% of the seats were held.
    pub fn t90(&self) -> Option<Duration> {
        self.progress[89].map(|m| m.at)
    }

    /// When every seat was held.
    pub fn t100(&self) -> Option<Duration> {
        self.progress[99].map(|m| m.at)
    }

    /// Holds per second until half the seats were held.
    pub fn holds_per_s_first_half(&self) -> Option<f64> {
        let pairs_half = f64::from(self.seats / 4);
        self.t50().map(|t| pairs_half / t.as_secs_f64())
    }
}

/// Registers and logs in `n` users, 16 at a time; returns their tokens.
pub async fn register_users(
    clients: &[Client],
    n: usize,
    tag: &str,
) -> anyhow::Result<Vec<String>> {
    register_users_at(clients, n, tag, 16).await
}

/// Like [`register_users`], `concurrency` at a time.
pub async fn register_users_at(
    clients: &[Client],
    n: usize,
    tag: &str,
    concurrency: usize,
) -> anyhow::Result<Vec<String>> {
    let results: Vec<anyhow::Result<String>> = stream::iter(0..n)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let email = format!("bench-{tag}-{i}@example.com");
            async move {
                // Refused unwritten (429/503: the node or the catalog is busy):
                // back off and ask again, as a fan's app would. An account that a
                // lost answer created already is taken: then it is ours.
                let mut pause = Duration::from_millis(50);
                loop {
                    match client.register(&email, "bench password", "Bench Fan").await {
                        Ok(_) => break,
                        Err(e) if e.status() == Some(409) => break,
                        Err(e) if matches!(e.status(), Some(429 | 503)) => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(2));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                let login = loop {
                    match client.login(&email, "bench password").await {
                        Err(e) if matches!(e.status(), Some(429 | 503)) => {
                            tokio::time::sleep(pause).await;
                            pause = (pause * 2).min(Duration::from_secs(2));
                        }
                        other => break other?,
                    }
                };
                Ok(login["access_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())
            }
        })
        .buffer_unordered(concurrency.max(1))
        .collect()
        .await;
    results.into_iter().collect()
}

/// Shared state of one run.
struct Run {
    target: Target,
    pairs: usize,
    held: Vec<AtomicBool>,
    held_count: AtomicU64,
    /// Acknowledged holds: (hold id, pair).
    acked: Mutex<Vec<(String, usize)>>,
    double: AtomicU64,
    attempts: AtomicU64,
    conflicts: AtomicU64,
    rate_limited: AtomicU64,
    errors: AtomicU64,
    failures: Mutex<BTreeMap<String, u64>>,
    /// When 1%, 2%, ..., 100% of the pairs were held.
    marks: Mutex<[Option<Mark>; 100]>,
    started: Instant,
}

impl Run {
    fn mark(&self, held_pairs: u64) {
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        let now = Mark {
            at: self.started.elapsed(),
            attempts: self.attempts.load(Ordering::Relaxed),
        };
        fill_marks(&mut marks, held_pairs, self.pairs as u64, now);
    }

    async fn worker(self: Arc<Self>, w: usize, deadline: Instant) -> Histogram<u64> {
        let mut hist = histogram();
        let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
        let total = self.pairs as u64;
        while Instant::now() < deadline && self.held_count.load(Ordering::Relaxed) < total {
            let p = rng.gen_range(0..self.pairs);
            let t = Instant::now();
            let outcome = self.target.hold(w, p, rng.gen()).await;
            let took = t.elapsed().as_micros().max(1) as u64;
            match outcome {
                Outcome::Held(id) => {
                    let _ = hist.record(took);
                    if self.held[p].swap(true, Ordering::SeqCst) {
                        self.double.fetch_add(1, Ordering::Relaxed);
                    }
                    let held = self.held_count.fetch_add(1, Ordering::Relaxed) + 1;
                    self.mark(held);
                    self.acked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((id, p));
                }
                Outcome::Conflict => {
                    let _ = hist.record(took);
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::RateLimited => {
                    self.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                Outcome::Busy => {
                    // Every user with room is busy: wait for one to come back.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                Outcome::Error(kind) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                    *self
                        .failures
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(kind)
                        .or_default() += 1;
                }
            }
            self.attempts.fetch_add(1, Ordering::Relaxed);
        }
        hist
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// A hundredth of the seats held: when, and after how many attempts in all.
#[derive(Debug, Clone, Copy)]
pub struct Mark {
    pub at: Duration,
    pub attempts: u64,
}

/// Stamps `now` on every percent of `total` that `held` reaches and that has no
/// mark yet: slot i is reached once `held` is at least (i + 1)% of `total`.
fn fill_marks(marks: &mut [Option<Mark>; 100], held: u64, total: u64, now: Mark) {
    let reached = (held * 100 / total.max(1)).min(100) as usize;
    for slot in marks.iter_mut().take(reached) {
        if slot.is_none() {
            *slot = Some(now);
        }
    }
}

/// One run's shape.
#[derive(Debug, Clone, Copy)]
pub struct HoldsOptions {
    pub seats: u32,
    pub clients: usize,
    /// The run stops here even if pairs are left.
    pub limit: Duration,
}

/// Runs the workload once against `target`, set up with `opts.seats` free seats.
pub async fn holds(
    target: Target,
    opts: HoldsOptions,
    progress: bool,
) -> anyhow::Result<HoldsReport> {
    let HoldsOptions {
        seats,
        clients: concurrency,
        limit,
    } = opts;
    anyhow::ensure!(seats >= 2 && seats % 2 == 0, "--seats must be even");
    let pairs = seats as usize / 2;
    let system = target.name();
    let run = Arc::new(Run {
        target,
        pairs,
        held: (0..pairs).map(|_| AtomicBool::new(false)).collect(),
        held_count: AtomicU64::new(0),
        acked: Mutex::new(Vec::new()),
        double: AtomicU64::new(0),
        attempts: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        failures: Mutex::new(BTreeMap::new()),
        marks: Mutex::new([None; 100]),
        started: Instant::now(),
    });
    let cpu0 = process_cpu_seconds();
    let deadline = Instant::now() + limit;
    eprintln!("{system}: {concurrency} clients racing for {pairs} pairs (at most {limit:?})");
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| tokio::spawn(run.clone().worker(w, deadline)))
        .collect();
    if progress {
        let bar = ProgressBar::new(pairs as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>24} [{bar:30}] {pos}/{len} pairs held {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{system}, {concurrency} clients"));
        while !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            bar.set_position(run.held_count.load(Ordering::Relaxed));
            bar.set_message(format!("{} attempts", run.attempts.load(Ordering::Relaxed)));
        }
        bar.finish_and_clear();
    }
    let mut hist = histogram();
    for t in tasks {
        hist.add(t.await?)?;
    }
    let elapsed = run.started.elapsed();
    let generator_cpu_s = process_cpu_seconds() - cpu0;
    let double = run.double.load(Ordering::Relaxed);
    anyhow::ensure!(
        double == 0,
        "{system}: {double} pairs were acknowledged to two holds"
    );
    let acked = run.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    run.target
        .verify(&acked)
        .await
        .with_context(|| format!("{system}: the final check failed"))?;
    let marks = *run.marks.lock().unwrap_or_else(|p| p.into_inner());
    let failures = run
        .failures
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(HoldsReport {
        system,
        clients: concurrency,
        seats,
        attempts: run.attempts.load(Ordering::Relaxed),
        holds: run.held_count.load(Ordering::Relaxed),
        conflicts: run.conflicts.load(Ordering::Relaxed),
        rate_limited: run.rate_limited.load(Ordering::Relaxed),
        errors: run.errors.load(Ordering::Relaxed),
        failures,
        elapsed,
        progress: marks,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        generator_cpu_s,
        rate_limits: None,
    })
}

/// The runs as a Markdown table.
pub fn table(reports: &[HoldsReport]) -> String {
    let secs =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
    let mut out = String::from(
        "| system | clients | attempts/s | holds/s (first 50%) | holds/s (run) | holds | conflicts | 429/503 | errors | p50 ms | p99 ms | p99.9 ms | max ms | 50% / 90% / 100% at s | generator CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {} | {:.0} | {} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} / {} / {} | {:.0}% |\n",
            r.system,
            r.clients,
            r.attempts_per_s(),
            r.holds_per_s_first_half().map_or("-".into(), |h| format!("{h:.0}")),
            r.holds_per_s(),
            r.holds,
            r.conflicts,
            r.rate_limited,
            r.errors,
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            secs(r.t50()),
            secs(r.t90()),
            secs(r.t100()),
            100.0 * r.generator_cpu_s / r.elapsed.as_secs_f64(),
        ));
    }
    for r in reports.iter().filter(|r| !r.failures.is_empty()) {
        let kinds: Vec<String> = r
            .failures
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        out.push_str(&format!("\nerrors ({}): {}\n", r.system, kinds.join(", ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(failures: &[(&str, u64)]) -> HoldsReport {
        HoldsReport {
            system: "etcd",
            clients: 16,
            seats: 2000,
            attempts: 10,
            holds: 4,
            conflicts: 3,
            rate_limited: 0,
            errors: failures.iter().map(|(_, n)| n).sum(),
            failures: failures.iter().map(|(k, n)| (k.to_string(), *n)).collect(),
            elapsed: Duration::from_secs(1),
            progress: [None; 100],
            p50_ms: 1.0,
            p99_ms: 2.0,
            p999_ms: 3.0,
            max_ms: 4.0,
            generator_cpu_s: 0.1,
            rate_limits: None,
        }
    }

    /// Each percent of the pairs is stamped once, by the hold that reached it; a
    /// hold that crosses several percents stamps them all.
    #[test]
    fn progress_marks_each_percent_once() {
        let mut marks = [None; 100];
        let at = |ms, attempts| Mark {
            at: Duration::from_millis(ms),
            attempts,
        };
        fill_marks(&mut marks, 1, 200, at(1, 1));
        assert!(marks.iter().all(Option::is_none), "0.5% is no percent yet");
        fill_marks(&mut marks, 2, 200, at(2, 3));
        fill_marks(&mut marks, 2, 200, at(3, 4));
        assert_eq!(marks[0].map(|m| m.attempts), Some(3), "first to reach it");
        fill_marks(&mut marks, 7, 200, at(4, 9));
        assert_eq!(marks[1].map(|m| m.at), Some(Duration::from_millis(4)));
        assert_eq!(marks[2].map(|m| m.attempts), Some(9));
        assert!(marks[3].is_none());
        fill_marks(&mut marks, 200, 200, at(5, 400));
        assert_eq!(marks[99].map(|m| m.attempts), Some(400));
        let r = HoldsReport {
            progress: marks,
            ..report(&[])
        };
        assert_eq!(r.t50(), Some(Duration::from_millis(5)));
        assert_eq!(r.to_json()["progress"][2]["attempts"], 9);
    }

    /// A run's errors are told apart by kind in the table and the JSON, so a
    /// dead endpoint ("connect") is not mistaken for the system's own refusals.
    #[test]
    fn errors_are_tallied_by_kind() {
        let r = report(&[("etcd: connect", 2), ("etcd: HTTP 500", 1)]);
        let t = table(std::slice::from_ref(&r));
        assert!(
            t.contains("errors (etcd): etcd: HTTP 500: 1, etcd: connect: 2"),
            "{t}"
        );
        assert_eq!(r.to_json()["failures"]["etcd: connect"], 2);
        let clean = table(&[report(&[])]);
        assert!(!clean.contains("errors ("), "{clean}");
    }
}
