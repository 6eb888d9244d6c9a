//! The load generator behind `boxoffice bench`. Today: `catalog`, concurrent venue
//! creation through every node (the catalog group's write path: forward, replicate,
//! fsync, apply). Later issues add `holds`, `mixed`, `overload`, `queue`, `onsale`.
//!
//! Closed loop: W writers each send one request at a time, spread round-robin over
//! the nodes. Latencies go into an HDR histogram; the generator reports its own CPU
//! time so a saturated generator is visible. At the end every acknowledged venue is
//! checked on every node.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{Client, NewVenue};

/// Options of `boxoffice bench catalog`.
#[derive(Debug, Clone)]
pub struct CatalogOpts {
    pub urls: Vec<String>,
    pub admin_key: String,
    /// Concurrency levels to run, one after the other.
    pub writers: Vec<usize>,
    pub duration: Duration,
    pub progress: bool,
}

/// One concurrency level's outcome.
#[derive(Debug, Clone)]
pub struct LevelResult {
    pub writers: usize,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// CPU seconds the generator itself used during the level.
    pub generator_cpu_s: f64,
}

impl LevelResult {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// CPU seconds (user + system) used by this process so far.
pub fn process_cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage writes a rusage struct into the pointer we own.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return 0.0;
    }
    // SAFETY: getrusage succeeded, so the struct is initialized.
    let u = unsafe { usage.assume_init() };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(u.ru_utime) + tv(u.ru_stime)
}

/// Runs the catalog write benchmark; returns one result per level and the number of
/// acknowledged venues verified on every node.
pub async fn catalog(opts: &CatalogOpts) -> anyhow::Result<(Vec<LevelResult>, usize)> {
    anyhow::ensure!(!opts.urls.is_empty(), "no node URLs");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let clients: Arc<Vec<Client>> = Arc::new(
        opts.urls
            .iter()
            .map(|u| {
                Client::with_http(http.clone(), u.clone()).with_admin_key(opts.admin_key.clone())
            })
            .collect(),
    );
    let acked = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut results = Vec::new();
    for &writers in &opts.writers {
        let bar = if opts.progress {
            let b = ProgressBar::new(opts.duration.as_secs().max(1));
            b.set_style(
                ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len}s {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_prefix(format!("{writers} writers"));
            Some(b)
        } else {
            None
        };
        let done = Arc::new(AtomicU64::new(0));
        let cpu0 = process_cpu_seconds();
        let started = Instant::now();
        let deadline = started + opts.duration;
        let tasks: Vec<_> = (0..writers)
            .map(|w| {
                let clients = clients.clone();
                let acked = acked.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                        .expect("histogram bounds");
                    let mut errors = 0u64;
                    let mut i = w;
                    while Instant::now() < deadline {
                        let client = &clients[i % clients.len()];
                        i += 1;
                        let venue = NewVenue::sample(&format!("bench-{w}-{i}"), 2, 10);
                        let t = Instant::now();
                        match client.create_venue(&venue, None).await {
                            Ok(created) => {
                                let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                                acked
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(created.venue_id);
                                done.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => errors += 1,
                        }
                    }
                    (hist, errors)
                })
            })
            .collect();
        if let Some(b) = &bar {
            while Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                b.set_position(started.elapsed().as_secs().min(opts.duration.as_secs()));
                b.set_message(format!("{} ok", done.load(Ordering::Relaxed)));
            }
        }
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
        let mut errors = 0;
        for t in tasks {
            let (h, e) = t.await?;
            hist.add(h)?;
            errors += e;
        }
        let elapsed = started.elapsed();
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        results.push(LevelResult {
            writers,
            ok: hist.len(),
            errors,
            elapsed,
            p50_ms: ms(hist.value_at_quantile(0.5)),
            p99_ms: ms(hist.value_at_quantile(0.99)),
            p999_ms: ms(hist.value_at_quantile(0.999)),
            max_ms: ms(hist.max()),
            generator_cpu_s: process_cpu_seconds() - cpu0,
        });
    }
    let acked: BTreeSet<String> = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    verify_everywhere(&clients, &acked).await?;
    Ok((results, acked.len()))
}

/// Waits (up to 30 s) until every node's local catalog holds every acknowledged venue.
async fn verify_everywhere(clients: &[Client], acked: &BTreeSet<String>) -> anyhow::Result<()> {
    let give_up = Instant::now() + Duration::from_secs(30);
    for c in clients {
        loop {
            let list = c.venues().await?;
            let have: BTreeSet<String> = list
                .venues
                .iter()
                .filter_map(|v| v["venue_id"].as_str().map(str::to_string))
                .collect();
            let missing = acked.difference(&have).count();
            if missing == 0 {
                break;
            }
            anyhow::ensure!(
                Instant::now() < give_up,
                "{} is missing {missing} acknowledged venues",
                c.base()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// The results as a Markdown table.
pub fn table(results: &[LevelResult]) -> String {
    let mut out = String::from(
        "| writers | ok | errors | writes/s | p50 ms | p99 ms | p99.9 ms | max ms | generator CPU |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}% |\n",
            r.writers,
            r.ok,
            r.errors,
            r.throughput(),
            r.p50_ms,
            r.p99_ms,
            r.p999_ms,
            r.max_ms,
            100.0 * r.generator_cpu_s / r.elapsed.as_secs_f64(),
        ));
    }
    out
}
