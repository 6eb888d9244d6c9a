//! `boxoffice bench queue`: the on-sale burst on a waiting room. N registered fans
//! join one event's queue as fast as `joiners` concurrent clients can (spread over
//! every node), then their status is polled open-loop at a fixed rate, each poll a
//! different fan on the next node in turn, as fans polling at the spec's intervals
//! would. Reports joins/s and latency, polls/s served and latency per node, and a
//! check: every fan whose join was acknowledged is found by the polls (which cover
//! every fan when rate × seconds ≥ fans).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;

use crate::bench::{closed_loop, process_cpu_seconds, LevelResult, OpenLoopTasks, Stop};
use crate::{sample_event, Client, NewVenue};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct QueueOptions {
    pub joiners: usize,
    pub poll_rate: f64,
    pub poll_seconds: u64,
    /// The event's `admission_per_second` (low: fans stay queued while polled).
    pub admission_per_second: u32,
}

/// The polling phase's outcome.
#[derive(Debug, Clone)]
pub struct PollReport {
    pub offered: f64,
    pub ok: u64,
    pub errors: u64,
    /// Polls answered 404: an acknowledged fan the room does not know.
    pub missing: u64,
    /// Distinct fans polled.
    pub fans_polled: u64,
    pub elapsed: Duration,
    pub hist: Histogram<u64>,
    /// Polls served per node, in `urls` order.
    pub per_node: Vec<u64>,
    pub generator_cpu_s: f64,
}

/// Both phases and the final check.
pub struct QueueReport {
    pub fans: usize,
    pub joins: LevelResult,
    /// Failed joins by kind.
    pub join_failures: BTreeMap<String, u64>,
    pub polls: PollReport,
    /// What the polls found of the acknowledged joins.
    pub check: String,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// A small event on sale whose waiting room takes every fan.
async fn queued_event(admin: &Client, fans: usize, admission: u32) -> anyhow::Result<String> {
    let venue = admin
        .create_venue(&NewVenue::sample("Queue bench hall", 10, 100), None)
        .await?;
    let mut spec = sample_event("Queue bench night", &venue.venue_id, &["Floor"]);
    spec["queue"] = json!({
        "enabled": true,
        "max_size": fans * 2,
        "admission_per_second": admission,
        "max_active_shoppers": 100,
        "access_window_minutes": 10,
    });
    let e = admin.create_event(&spec).await?;
    admin.set_event_status(&e.event_id, "ON_SALE").await?;
    Ok(e.event_id)
}

/// Runs the burst and the polling (see the module doc).
pub async fn queue(
    pool: Arc<Vec<Client>>,
    tokens: Vec<String>,
    opts: QueueOptions,
) -> anyhow::Result<QueueReport> {
    let fans = tokens.len();
    let event = queued_event(&pool[0], fans, opts.admission_per_second).await?;
    let tokens = Arc::new(tokens);
    let queue_tokens: Arc<Vec<Mutex<Option<String>>>> =
        Arc::new((0..fans).map(|_| Mutex::new(None)).collect());
    let next = Arc::new(AtomicUsize::new(0));
    let failures: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    println!("{fans} fans joining through {} nodes ...", pool.len());
    let joins = {
        let (pool, tokens, queue_tokens, event, failures) = (
            pool.clone(),
            tokens.clone(),
            queue_tokens.clone(),
            event.clone(),
            failures.clone(),
        );
        closed_loop(
            "joins",
            opts.joiners,
            Stop::Count(fans as u64),
            true,
            move |_, _| {
                let (pool, tokens, queue_tokens, next, event, failures) = (
                    pool.clone(),
                    tokens.clone(),
                    queue_tokens.clone(),
                    next.clone(),
                    event.clone(),
                    failures.clone(),
                );
                async move {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(token) = tokens.get(i) else {
                        return false;
                    };
                    let device = format!("bench-device-{i}");
                    let body = json!({ "event_id": event });
                    match pool[i % pool.len()]
                        .join_queue(token, &body, Some(&device))
                        .await
                    {
                        Ok(v) => {
                            let t = v["queue_token"].as_str().unwrap_or_default().to_string();
                            *queue_tokens[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(t);
                            true
                        }
                        Err(e) => {
                            *failures
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .entry(crate::bench_load::failure_kind(&e))
                                .or_default() += 1;
                            false
                        }
                    }
                }
            },
        )
        .await?
    };
    let joined: Vec<String> = queue_tokens
        .iter()
        .filter_map(|t| t.lock().unwrap_or_else(|p| p.into_inner()).clone())
        .collect();
    anyhow::ensure!(!joined.is_empty(), "no join succeeded");
    println!(
        "polling {} fans' status at {}/s for {} s ...",
        joined.len(),
        opts.poll_rate,
        opts.poll_seconds
    );
    let polls = poll(&pool, Arc::new(joined.clone()), opts).await;
    let check = format!(
        "{} joins acknowledged; {} distinct fans polled, {} of them missing from the room",
        joined.len(),
        polls.fans_polled,
        polls.missing
    );
    anyhow::ensure!(polls.missing == 0, "acknowledged fans missing: {check}");
    let join_failures = failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok(QueueReport {
        fans,
        joins,
        join_failures,
        polls,
        check,
    })
}

/// Open-loop status polls: the n-th leaves at n / rate, for fan n and node n.
async fn poll(pool: &Arc<Vec<Client>>, joined: Arc<Vec<String>>, opts: QueueOptions) -> PollReport {
    const MAX_IN_FLIGHT: u64 = 4096;
    let hist = Arc::new(Mutex::new(histogram()));
    let errors = Arc::new(AtomicU64::new(0));
    let missing = Arc::new(AtomicU64::new(0));
    let per_node: Arc<Vec<AtomicU64>> =
        Arc::new((0..pool.len()).map(|_| AtomicU64::new(0)).collect());
    let in_flight = Arc::new(AtomicU64::new(0));
    let total = (opts.poll_rate * opts.poll_seconds as f64) as u64;
    let period = Duration::from_secs_f64(1.0 / opts.poll_rate.max(1.0));
    let cpu0 = process_cpu_seconds();
    let started = Instant::now();
    let mut tasks = OpenLoopTasks::new();
    for n in 0..total {
        tokio::time::sleep_until((started + period.mul_f64(n as f64)).into()).await;
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            errors.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let node = n as usize % pool.len();
        let (client, token) = (
            pool[node].clone(),
            joined[n as usize % joined.len()].clone(),
        );
        let (hist, errors, missing, per_node, in_flight) = (
            hist.clone(),
            errors.clone(),
            missing.clone(),
            per_node.clone(),
            in_flight.clone(),
        );
        tasks.spawn(async move {
            let t = Instant::now();
            match client.queue_status(&token).await {
                Ok(_) => {
                    let us = t.elapsed().as_micros().max(1) as u64;
                    let _ = hist.lock().unwrap_or_else(|p| p.into_inner()).record(us);
                    per_node[node].fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    errors.fetch_add(1, Ordering::Relaxed);
                    if e.status() == Some(404) {
                        missing.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    tasks.finish().await;
    let elapsed = started.elapsed();
    let hist = hist.lock().unwrap_or_else(|p| p.into_inner()).clone();
    PollReport {
        offered: opts.poll_rate,
        ok: hist.len(),
        errors: errors.load(Ordering::Relaxed),
        missing: missing.load(Ordering::Relaxed),
        fans_polled: total.min(joined.len() as u64),
        elapsed,
        hist,
        per_node: per_node.iter().map(|n| n.load(Ordering::Relaxed)).collect(),
        generator_cpu_s: process_cpu_seconds() - cpu0,
    }
}

/// The report as a Markdown table.
pub fn table(r: &QueueReport) -> String {
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let j = &r.joins;
    let p = &r.polls;
    let mut out = String::from(
        "| phase | rate | ok | errors | per s | p50 ms | p99 ms | p99.9 ms | max ms | generator CPU |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    out.push_str(&format!(
        "| {} joins, {} clients | closed loop | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% |\n",
        r.fans,
        j.writers,
        j.ok,
        j.errors,
        j.throughput(),
        j.p50_ms,
        j.p99_ms,
        j.p999_ms,
        j.max_ms,
        100.0 * j.generator_cpu_s / j.elapsed.as_secs_f64(),
    ));
    out.push_str(&format!(
        "| status polls, all nodes (per node: {}) | {:.0}/s | {} | {} | {:.0} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0}% |\n",
        p.per_node
            .iter()
            .map(u64::to_string)
            .collect::<Vec<_>>()
            .join(" / "),
        p.offered,
        p.ok,
        p.errors,
        p.ok as f64 / p.elapsed.as_secs_f64(),
        ms(&p.hist, 0.5),
        ms(&p.hist, 0.99),
        ms(&p.hist, 0.999),
        p.hist.max() as f64 / 1000.0,
        100.0 * p.generator_cpu_s / p.elapsed.as_secs_f64(),
    ));
    out
}
