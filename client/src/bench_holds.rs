//! `boxoffice bench holds`: one event of S seats; C concurrent clients each
//! repeatedly hold a random pair of adjacent seats {2i, 2i+1} (all or nothing)
//! until every pair is held or the time limit passes. Random pairs make most
//! attempts conflicts near the end by construction; that is part of the workload.
//!
//! It goes through the public API as real users: it registers as many as the
//! per-user ticket limit requires, and reports 429s separately (a cluster whose
//! reserve limit is lower than the load sees them; the run's table says so). At the
//! end it checks that no pair was acknowledged twice and that every acknowledged
//! hold is ACTIVE with its seats, and RESERVED on every node's seat map.

use std::collections::{BTreeSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::bench::{clients, process_cpu_seconds};
use crate::{row_label, sample_event, Client, NewVenue, Row, Section};

/// What a `holds` run measured.
#[derive(Debug, Clone)]
pub struct HoldsReport {
    pub clients: usize,
    pub seats: u32,
    pub users: usize,
    pub attempts: u64,
    pub holds: u64,
    pub conflicts: u64,
    pub rate_limited: u64,
    pub errors: u64,
    pub elapsed: Duration,
    /// Times at which 50%, 90% and 100% of the seats were held.
    pub t50: Option<Duration>,
    pub t90: Option<Duration>,
    pub t100: Option<Duration>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub generator_cpu_s: f64,
}

impl HoldsReport {
    pub fn attempts_per_s(&self) -> f64 {
        self.attempts as f64 / self.elapsed.as_secs_f64()
    }

    pub fn holds_per_s(&self) -> f64 {
        self.holds as f64 / self.elapsed.as_secs_f64()
    }

    /// Holds per second until half the seats were held.
    pub fn holds_per_s_first_half(&self) -> Option<f64> {
        let pairs_half = f64::from(self.seats / 4);
        self.t50.map(|t| pairs_half / t.as_secs_f64())
    }
}

/// A venue of `seats` seats (rows of 100; `seats` is even) for the run.
fn venue(seats: u32) -> NewVenue {
    let mut rows = Vec::new();
    let mut left = seats;
    let mut i = 0;
    while left > 0 {
        let n = left.min(100);
        rows.push(Row {
            row: row_label(i),
            seats: n,
        });
        left -= n;
        i += 1;
    }
    NewVenue {
        name: format!("holds bench {seats}"),
        city: "Benchville".into(),
        state: "BV".into(),
        country: "US".into(),
        timezone: "UTC".into(),
        sections: vec![Section {
            name: "Floor".into(),
            rows,
        }],
    }
}

/// Registers and logs in `n` users, 16 at a time; returns their tokens.
pub async fn register_users(
    clients: &[Client],
    n: usize,
    tag: &str,
) -> anyhow::Result<Vec<String>> {
    let results: Vec<anyhow::Result<String>> = stream::iter(0..n)
        .map(|i| {
            let client = clients[i % clients.len()].clone();
            let email = format!("bench-{tag}-{i}@example.com");
            async move {
                client
                    .register(&email, "bench password", "Bench Fan")
                    .await?;
                let login = client.login(&email, "bench password").await?;
                Ok(login["access_token"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Shared state of one run.
struct Run {
    clients: Arc<Vec<Client>>,
    event: String,
    pairs: Vec<[String; 2]>,
    held: Vec<AtomicBool>,
    held_count: AtomicU64,
    /// Users with room under the limit, as (token index, holds so far).
    users: Mutex<VecDeque<(usize, u32)>>,
    tokens: Vec<String>,
    holds_per_user: u32,
    acked: Mutex<Vec<(usize, String, usize)>>,
    double: AtomicU64,
    attempts: AtomicU64,
    conflicts: AtomicU64,
    rate_limited: AtomicU64,
    errors: AtomicU64,
    marks: Mutex<[Option<Duration>; 3]>,
    started: Instant,
}

impl Run {
    fn mark(&self, held_pairs: u64) {
        let total = self.pairs.len() as u64;
        let mut marks = self.marks.lock().unwrap_or_else(|p| p.into_inner());
        for (slot, pct) in marks.iter_mut().zip([50u64, 90, 100]) {
            if slot.is_none() && held_pairs * 100 >= total * pct {
                *slot = Some(self.started.elapsed());
            }
        }
    }

    async fn worker(self: Arc<Self>, w: usize, deadline: Instant) -> Histogram<u64> {
        let mut hist = histogram();
        let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
        let total = self.pairs.len() as u64;
        while Instant::now() < deadline && self.held_count.load(Ordering::Relaxed) < total {
            let user = self
                .users
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some((u, n)) = user else {
                // Every user with room is busy: wait for one to come back.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            };
            let p = rng.gen_range(0..self.pairs.len());
            let client = &self.clients[rng.gen_range(0..self.clients.len())];
            let body = json!({"event_id": self.event, "seat_ids": self.pairs[p]});
            let t = Instant::now();
            let outcome = client.reserve(&self.tokens[u], &body, None).await;
            self.attempts.fetch_add(1, Ordering::Relaxed);
            let mut n = n;
            match outcome {
                Ok(r) => {
                    let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    n += 1;
                    if self.held[p].swap(true, Ordering::SeqCst) {
                        self.double.fetch_add(1, Ordering::Relaxed);
                    }
                    let held = self.held_count.fetch_add(1, Ordering::Relaxed) + 1;
                    self.mark(held);
                    let id = r["reservation_id"].as_str().unwrap_or_default().to_string();
                    self.acked
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((u, id, p));
                }
                Err(e) if e.status() == Some(409) || e.status() == Some(410) => {
                    let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    self.conflicts.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if e.status() == Some(429) => {
                    self.rate_limited.fetch_add(1, Ordering::Relaxed);
                }
                Err(_) => {
                    self.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            if n < self.holds_per_user {
                self.users
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back((u, n));
            }
        }
        hist
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// One run's shape.
#[derive(Debug, Clone, Copy)]
pub struct HoldsOptions {
    pub seats: u32,
    pub clients: usize,
    /// The run stops here even if pairs are left.
    pub limit: Duration,
    /// Pair holds one user may make: the per-user ticket limit / 2.
    pub holds_per_user: u32,
}

/// Runs the workload once on a fresh event. `tokens` are users that hold nothing
/// of it yet.
pub async fn holds(
    urls: &[String],
    admin_key: &str,
    opts: HoldsOptions,
    tokens: &[String],
    progress: bool,
) -> anyhow::Result<HoldsReport> {
    let HoldsOptions {
        seats,
        clients: concurrency,
        limit,
        holds_per_user,
    } = opts;
    anyhow::ensure!(seats >= 2 && seats % 2 == 0, "--seats must be even");
    let clients = clients(urls, admin_key)?;
    let v = clients[0].create_venue(&venue(seats), None).await?;
    let e = clients[0]
        .create_event(&sample_event("holds bench", &v.venue_id, &["Floor"]))
        .await?;
    clients[0].set_event_status(&e.event_id, "ON_SALE").await?;
    let map = clients[0].seat_map(&e.event_id).await?;
    let ids: Vec<String> = Client::seats_of(&map)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    anyhow::ensure!(
        ids.len() == seats as usize,
        "seat map has {} seats",
        ids.len()
    );
    let pairs: Vec<[String; 2]> = ids
        .chunks(2)
        .map(|c| [c[0].clone(), c[1].clone()])
        .collect();
    let run = Arc::new(Run {
        clients: clients.clone(),
        event: e.event_id.clone(),
        held: pairs.iter().map(|_| AtomicBool::new(false)).collect(),
        pairs,
        held_count: AtomicU64::new(0),
        users: Mutex::new((0..tokens.len()).map(|u| (u, 0)).collect()),
        tokens: tokens.to_vec(),
        holds_per_user,
        acked: Mutex::new(Vec::new()),
        double: AtomicU64::new(0),
        attempts: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        rate_limited: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        marks: Mutex::new([None; 3]),
        started: Instant::now(),
    });
    let cpu0 = process_cpu_seconds();
    let deadline = Instant::now() + limit;
    let tasks: Vec<_> = (0..concurrency)
        .map(|w| tokio::spawn(run.clone().worker(w, deadline)))
        .collect();
    if progress {
        let bar = ProgressBar::new(run.pairs.len() as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>14} [{bar:30}] {pos}/{len} pairs held {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        bar.set_prefix(format!("{concurrency} clients"));
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
    verify(&run).await?;
    let marks = *run.marks.lock().unwrap_or_else(|p| p.into_inner());
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(HoldsReport {
        clients: concurrency,
        seats,
        users: tokens.len(),
        attempts: run.attempts.load(Ordering::Relaxed),
        holds: run.held_count.load(Ordering::Relaxed),
        conflicts: run.conflicts.load(Ordering::Relaxed),
        rate_limited: run.rate_limited.load(Ordering::Relaxed),
        errors: run.errors.load(Ordering::Relaxed),
        elapsed,
        t50: marks[0],
        t90: marks[1],
        t100: marks[2],
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        generator_cpu_s,
    })
}

/// No pair acknowledged twice; every acknowledged hold ACTIVE with its seats; every
/// acknowledged seat RESERVED on every node's map.
async fn verify(run: &Run) -> anyhow::Result<()> {
    let double = run.double.load(Ordering::Relaxed);
    anyhow::ensure!(double == 0, "{double} pairs were acknowledged to two holds");
    let acked = run.acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let checks: Vec<anyhow::Result<()>> = stream::iter(acked.iter().enumerate())
        .map(|(i, (u, id, p))| {
            let client = run.clients[i % run.clients.len()].clone();
            let (token, want) = (run.tokens[*u].clone(), run.pairs[*p].clone());
            let id = id.clone();
            async move {
                let r = client.reservation(&token, &id).await?;
                anyhow::ensure!(r["status"] == "ACTIVE", "hold {id} is {}", r["status"]);
                anyhow::ensure!(r["seat_ids"] == json!(want), "hold {id} has other seats");
                Ok(())
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    checks.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
    let want: BTreeSet<&str> = acked
        .iter()
        .flat_map(|(_, _, p)| run.pairs[*p].iter().map(String::as_str))
        .collect();
    for client in run.clients.iter() {
        let give_up = Instant::now() + Duration::from_secs(30);
        loop {
            let map = client.seat_map(&run.event).await?;
            let reserved: BTreeSet<String> = Client::seats_of(&map)
                .into_iter()
                .filter(|(_, st)| st == "RESERVED")
                .map(|(id, _)| id)
                .collect();
            let missing = want.iter().filter(|s| !reserved.contains(**s)).count();
            if missing == 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < give_up,
                "{} shows {missing} acknowledged seats not RESERVED",
                client.base()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The runs as a Markdown table.
pub fn table(reports: &[HoldsReport]) -> String {
    let secs =
        |d: Option<Duration>| d.map_or("-".to_string(), |d| format!("{:.1}", d.as_secs_f64()));
    let mut out = String::from(
        "| clients | attempts/s | holds/s (first 50%) | holds/s (run) | holds | conflicts | 429 | errors | p50 ms | p99 ms | p99.9 ms | max ms | 50% / 90% / 100% at s | generator CPU |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|\n",
    );
    for r in reports {
        out.push_str(&format!(
            "| {} | {:.0} | {} | {:.0} | {} | {} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} | {} / {} / {} | {:.0}% |\n",
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
            secs(r.t50),
            secs(r.t90),
            secs(r.t100),
            100.0 * r.generator_cpu_s / r.elapsed.as_secs_f64(),
        ));
    }
    out
}
