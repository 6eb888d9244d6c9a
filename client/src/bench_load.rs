//! `boxoffice bench mixed` and `boxoffice bench overload`.
//!
//! - `mixed`: C closed-loop clients (one fan each) against one event on sale, in
//!   on-sale proportions: 35% seat maps, 25% event details, 20% searches, 20% seat
//!   holds (best available, 2 seats; a fan at the ticket limit releases a hold
//!   instead). Per-operation throughput and latency.
//! - `overload`: open loop. First a 5 s closed-loop probe measures what the cluster
//!   serves (holds of random pairs, each released right after); then the offered
//!   load steps from half to three times that, a request every 1/rate seconds
//!   whatever the answers. Per step: goodput (answered 201/409 per second), the p99
//!   of those, the refusals (429/503) and how fast they came, and the rest
//!   (timeouts, other errors). With a given capacity the probe is skipped, so runs
//!   compared with each other offer the same rates.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

use crate::bench::{process_cpu_seconds, OpenLoopTasks};
use crate::{sample_event, Client, ClientError, NewVenue};

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Latency and counts of one kind of request.
#[derive(Debug, Clone)]
pub struct OpStats {
    pub name: String,
    pub ok: u64,
    pub refused: u64,
    pub errors: u64,
    pub hist: Histogram<u64>,
}

impl OpStats {
    fn new(name: &str) -> Self {
        Self {
            name: name.into(),
            ok: 0,
            refused: 0,
            errors: 0,
            hist: histogram(),
        }
    }

    fn ms(&self, q: f64) -> f64 {
        self.hist.value_at_quantile(q) as f64 / 1000.0
    }
}

/// Clients of the nodes at `urls`, `fans` registered users' tokens, and a fresh
/// event of `seats` seats on sale: what `mixed` and `overload` start from.
pub async fn fans_and_event(
    urls: &[String],
    admin_key: &str,
    fans: usize,
    seats: u32,
    name: &str,
) -> anyhow::Result<(Arc<Vec<Client>>, Vec<String>, String)> {
    let pool = crate::bench::clients(urls, admin_key)?;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    println!("registering {fans} users ...");
    let tokens = crate::bench_holds::register_users(&pool, fans, &tag[..8]).await?;
    let event = on_sale_event(&pool[0], seats, &format!("{name} bench night")).await?;
    Ok((pool, tokens, event))
}

/// A fresh event of `seats` seats (rows of 100), on sale.
pub async fn on_sale_event(admin: &Client, seats: u32, name: &str) -> anyhow::Result<String> {
    let venue = NewVenue::sample(name, seats.div_ceil(100).max(1), 100);
    let v = admin.create_venue(&venue, None).await?;
    let e = admin
        .create_event(&sample_event(name, &v.venue_id, &["Floor"]))
        .await?;
    admin.set_event_status(&e.event_id, "ON_SALE").await?;
    Ok(e.event_id)
}

/// What `mixed` measured.
pub struct MixedReport {
    pub clients: usize,
    pub elapsed: Duration,
    pub ops: Vec<OpStats>,
    pub generator_cpu_s: f64,
}

/// Runs `mixed` for `seconds` with one client per token.
pub async fn mixed(
    clients: Arc<Vec<Client>>,
    event: String,
    tokens: Vec<String>,
    seconds: u64,
) -> anyhow::Result<MixedReport> {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let cpu0 = process_cpu_seconds();
    let started = Instant::now();
    let tasks: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(w, token)| {
            let (clients, event, token) = (clients.clone(), event.clone(), token.clone());
            tokio::spawn(async move { mixed_client(w, clients, event, token, deadline).await })
        })
        .collect();
    let mut total: BTreeMap<String, OpStats> = BTreeMap::new();
    for t in tasks {
        for s in t.await? {
            let e = total
                .entry(s.name.clone())
                .or_insert_with(|| OpStats::new(&s.name));
            e.ok += s.ok;
            e.refused += s.refused;
            e.errors += s.errors;
            e.hist.add(&s.hist)?;
        }
    }
    Ok(MixedReport {
        clients: tokens.len(),
        elapsed: started.elapsed(),
        ops: total.into_values().collect(),
        generator_cpu_s: process_cpu_seconds() - cpu0,
    })
}

async fn mixed_client(
    w: usize,
    clients: Arc<Vec<Client>>,
    event: String,
    token: String,
    deadline: Instant,
) -> Vec<OpStats> {
    let mut rng = StdRng::seed_from_u64(w as u64);
    let mut stats: Vec<OpStats> = ["seat map", "event details", "search", "hold", "release"]
        .iter()
        .map(|n| OpStats::new(n))
        .collect();
    let mut mine: Vec<String> = Vec::new();
    let queries = ["mixed", "bench", "night", "floor"];
    while Instant::now() < deadline {
        let client = &clients[rng.gen_range(0..clients.len())];
        let roll = rng.gen_range(0..100);
        let t = Instant::now();
        let (k, result) = match roll {
            0..=34 => (
                0,
                client
                    .get_discard(&format!("/v1/events/{event}/seats"))
                    .await,
            ),
            35..=59 => (1, client.get_discard(&format!("/v1/events/{event}")).await),
            60..=79 => {
                let q = queries[rng.gen_range(0..queries.len())];
                let path = format!("/v1/events/search?query={q}");
                (2, client.get_discard(&path).await)
            }
            _ if mine.len() >= 4 => {
                let id = mine.swap_remove(rng.gen_range(0..mine.len()));
                (4, client.release(&token, &id).await)
            }
            _ => {
                let body = json!({ "event_id": event, "quantity": 2 });
                let r = client.reserve(&token, &body, None).await;
                if let Ok(v) = &r {
                    mine.push(v["reservation_id"].as_str().unwrap_or_default().to_string());
                }
                (3, r.map(|_| ()))
            }
        };
        let us = t.elapsed().as_micros().max(1) as u64;
        let s = &mut stats[k];
        match result {
            Ok(()) => {
                s.ok += 1;
                let _ = s.hist.record(us);
            }
            // A seat conflict is an answer too.
            Err(e) if e.status() == Some(409) => {
                s.ok += 1;
                let _ = s.hist.record(us);
            }
            Err(e) if matches!(e.status(), Some(429 | 503)) => s.refused += 1,
            Err(_) => s.errors += 1,
        }
    }
    stats
}

/// The `mixed` report as a Markdown table.
pub fn mixed_table(r: &MixedReport) -> String {
    let secs = r.elapsed.as_secs_f64();
    let mut out = String::from(
        "| operation | per s | p50 ms | p99 ms | p99.9 ms | max ms | refused (429/503) | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in &r.ops {
        out.push_str(&format!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} |\n",
            s.name,
            s.ok as f64 / secs,
            s.ms(0.5),
            s.ms(0.99),
            s.ms(0.999),
            s.hist.max() as f64 / 1000.0,
            s.refused,
            s.errors
        ));
    }
    let all: u64 = r.ops.iter().map(|s| s.ok).sum();
    out.push_str(&format!(
        "\n{} clients, {:.0} answered requests/s in all, generator CPU {:.0}%\n",
        r.clients,
        all as f64 / secs,
        100.0 * r.generator_cpu_s / secs
    ));
    out
}

/// One overload step.
#[derive(Debug, Clone)]
pub struct Step {
    pub offered: f64,
    /// 201 or 409: the cluster answered.
    pub served: Histogram<u64>,
    /// 429 or 503: refused.
    pub refused: Histogram<u64>,
    /// Timeouts, transport errors, other statuses.
    pub failed: u64,
    /// `failed` by kind (`timeout`, `connect`, `503 NO_LEADER`, ...).
    pub failures: std::collections::BTreeMap<String, u64>,
    pub seconds: f64,
}

/// A short kind for a failed call over the lean transport ([`crate::wire`]).
pub fn wire_failure_kind(e: &crate::wire::WireError) -> &'static str {
    match e {
        crate::wire::WireError::Timeout(_) => "timeout",
        crate::wire::WireError::Connect(_) => "connect",
        _ => "transport",
    }
}

/// A failure's kind for the report: transport trouble, or an API status and code.
pub fn failure_kind(e: &ClientError) -> String {
    match e {
        ClientError::Transport(t) if t.is_timeout() => "timeout".into(),
        ClientError::Transport(t) if t.is_connect() => "connect".into(),
        ClientError::Transport(_) => "transport".into(),
        ClientError::Wire(w) => wire_failure_kind(w).into(),
        ClientError::Api { status, code, .. } => format!("{status} {code}"),
        ClientError::Unexpected(_) => "unexpected".into(),
    }
}

/// Shared counters of the open-loop sender.
struct Pool {
    clients: Arc<Vec<Client>>,
    event: String,
    tokens: Vec<String>,
    seat_ids: Vec<String>,
}

impl Pool {
    /// Holds a random pair as a random fan; a 201 is released right after (not
    /// timed), so seats and ticket limits never run out.
    async fn attempt(&self, rng: &mut StdRng) -> (Duration, Result<(), ClientError>) {
        let client = &self.clients[rng.gen_range(0..self.clients.len())];
        let token = &self.tokens[rng.gen_range(0..self.tokens.len())];
        let p = rng.gen_range(0..self.seat_ids.len() / 2);
        let pair = [&self.seat_ids[2 * p], &self.seat_ids[2 * p + 1]];
        let body = json!({ "event_id": self.event, "seat_ids": pair });
        let t = Instant::now();
        let r = client.reserve(token, &body, None).await;
        let took = t.elapsed();
        match r {
            Ok(v) => {
                let id = v["reservation_id"].as_str().unwrap_or_default().to_string();
                // Released as a fan's app would: a refusal (429/503) or a lost
                // answer is retried after a pause (a release is idempotent), or
                // the fan's held tickets pile up to the per-user limit.
                for pause_ms in [0u64, 50, 100, 200, 400, 800, 1600] {
                    tokio::time::sleep(Duration::from_millis(pause_ms)).await;
                    match client.release(token, &id).await {
                        Ok(()) => break,
                        Err(e) if matches!(e.status(), Some(429 | 503) | None) => continue,
                        Err(_) => break,
                    }
                }
                (took, Ok(()))
            }
            Err(e) => (took, Err(e)),
        }
    }
}

/// Closed loop for `seconds` with `workers`: answered attempts per second.
async fn capacity(pool: Arc<Pool>, workers: usize, seconds: u64) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let served = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (pool, served) = (pool.clone(), served.clone());
            tokio::spawn(async move {
                let mut rng = StdRng::seed_from_u64(w as u64 + 7_000);
                while Instant::now() < deadline {
                    let (_, r) = pool.attempt(&mut rng).await;
                    if r.is_ok() || r.as_ref().err().and_then(ClientError::status) == Some(409) {
                        served.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    served.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64()
}

/// Offers `rate` requests per second for `seconds`, open loop (at most
/// `max_in_flight` outstanding, beyond which sends count as failed: the generator
/// never queues silently).
async fn step(pool: Arc<Pool>, rate: f64, seconds: u64, max_in_flight: u64) -> Step {
    let served = Arc::new(Mutex::new(histogram()));
    let refused = Arc::new(Mutex::new(histogram()));
    let failed = Arc::new(AtomicU64::new(0));
    let failures: Arc<Mutex<std::collections::BTreeMap<String, u64>>> = Arc::default();
    let in_flight = Arc::new(AtomicU64::new(0));
    let total = (rate * seconds as f64) as u64;
    let period = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let started = Instant::now();
    let mut tasks = OpenLoopTasks::new();
    for n in 0..total {
        // The n-th request leaves at n × period, whatever the answers so far.
        let at = started + period.mul_f64(n as f64);
        tokio::time::sleep_until(at.into()).await;
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            failed.fetch_add(1, Ordering::Relaxed);
            *failures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .entry("generator at its in-flight cap".into())
                .or_default() += 1;
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (pool, served, refused, failed, failures, in_flight) = (
            pool.clone(),
            served.clone(),
            refused.clone(),
            failed.clone(),
            failures.clone(),
            in_flight.clone(),
        );
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(n);
            let (took, r) = pool.attempt(&mut rng).await;
            let us = took.as_micros().max(1) as u64;
            let status = r.as_ref().err().and_then(ClientError::status);
            let bucket = match (&r, status) {
                (Ok(()), _) | (Err(_), Some(409)) => Some(&served),
                (Err(_), Some(429 | 503)) => Some(&refused),
                _ => None,
            };
            match bucket {
                Some(h) => {
                    let _ = h.lock().unwrap_or_else(|p| p.into_inner()).record(us);
                }
                None => {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = &r {
                        *failures
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .entry(failure_kind(e))
                            .or_default() += 1;
                    }
                }
            }
            in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    tasks.finish().await;
    let take = |h: &Arc<Mutex<Histogram<u64>>>| h.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Step {
        offered: rate,
        served: take(&served),
        refused: take(&refused),
        failed: failed.load(Ordering::Relaxed),
        failures: {
            let kinds = failures.lock().unwrap_or_else(|p| p.into_inner()).clone();
            kinds
        },
        seconds: seconds as f64,
    }
}

/// What `overload` measured.
pub struct OverloadReport {
    pub capacity: f64,
    /// Closed-loop clients of the capacity probe; `None` if the capacity was given.
    pub probe_clients: Option<usize>,
    pub steps: Vec<Step>,
    pub generator_cpu_s: f64,
    pub elapsed: Duration,
}

/// Where `overload` takes the capacity its steps are multiples of.
#[derive(Debug, Clone, Copy)]
pub enum Capacity {
    /// Measured by a 5 s closed-loop probe with this many clients.
    Probe(usize),
    /// Given, in holds per second (the probe is skipped).
    Given(f64),
}

/// Probes capacity (or takes it as given), then offers `multiples` of it for
/// `seconds` each, holding (and releasing) random pairs of `event`.
pub async fn overload(
    clients: Arc<Vec<Client>>,
    event: String,
    tokens: Vec<String>,
    multiples: &[f64],
    seconds: u64,
    capacity_from: Capacity,
) -> anyhow::Result<OverloadReport> {
    let map = clients[0].seat_map(&event).await?;
    let seat_ids = Client::seats_of(&map)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let pool = Arc::new(Pool {
        clients,
        event,
        tokens,
        seat_ids,
    });
    let cpu0 = process_cpu_seconds();
    let started = Instant::now();
    let (capacity, probe_clients) = match capacity_from {
        Capacity::Probe(clients) => (capacity(pool.clone(), clients, 5).await, Some(clients)),
        Capacity::Given(rate) => (rate, None),
    };
    anyhow::ensure!(capacity > 0.0, "the probe got no answers");
    let mut steps = Vec::new();
    for m in multiples {
        steps.push(step(pool.clone(), capacity * m, seconds, 20_000).await);
    }
    Ok(OverloadReport {
        capacity,
        probe_clients,
        steps,
        generator_cpu_s: process_cpu_seconds() - cpu0,
        elapsed: started.elapsed(),
    })
}

/// The `overload` report as a Markdown table.
pub fn overload_table(r: &OverloadReport) -> String {
    let ms = |h: &Histogram<u64>, q: f64| {
        if h.is_empty() {
            "-".to_string()
        } else {
            format!("{:.1}", h.value_at_quantile(q) as f64 / 1000.0)
        }
    };
    let source = match r.probe_clients {
        Some(clients) => format!(
            "capacity probe ({clients} clients, closed loop): {:.0} answered holds/s",
            r.capacity
        ),
        None => format!("capacity (given, not probed): {:.0} holds/s", r.capacity),
    };
    let mut out = format!(
        "{}\n\n| offered/s | × capacity | goodput/s | goodput / peak | served p50 ms | served p99 ms | refused (429/503) | refused p99 ms | failed (timeouts, errors) |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        source
    );
    // The best rate measured: the probe's, if there was one, or any step's. A given
    // capacity was not measured, so it is no peak.
    let probed = r.probe_clients.map_or(0.0, |_| r.capacity);
    let peak = r
        .steps
        .iter()
        .map(|s| s.served.len() as f64 / s.seconds)
        .fold(probed, f64::max);
    for s in &r.steps {
        let goodput = s.served.len() as f64 / s.seconds;
        out.push_str(&format!(
            "| {:.0} | {:.1} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
            s.offered,
            s.offered / r.capacity,
            goodput,
            // No peak if nothing was served (a given capacity and no answers).
            if peak > 0.0 {
                format!("{:.0}%", 100.0 * goodput / peak)
            } else {
                "-".to_string()
            },
            ms(&s.served, 0.5),
            ms(&s.served, 0.99),
            s.refused.len(),
            ms(&s.refused, 0.99),
            s.failed
        ));
    }
    for s in r.steps.iter().filter(|s| !s.failures.is_empty()) {
        let kinds: Vec<String> = s
            .failures
            .iter()
            .map(|(k, n)| format!("{k}: {n}"))
            .collect();
        out.push_str(&format!(
            "\nfailed at {:.1}×: {}",
            s.offered / r.capacity,
            kinds.join(", ")
        ));
    }
    out.push_str(&format!(
        "\n\ngenerator CPU {:.0}%\n",
        100.0 * r.generator_cpu_s / r.elapsed.as_secs_f64()
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(offered: f64, served: u64) -> Step {
        let mut h = histogram();
        h.record_n(1_000, served).expect("records");
        Step {
            offered,
            served: h,
            refused: histogram(),
            failed: 0,
            failures: BTreeMap::new(),
            seconds: 1.0,
        }
    }

    fn report(probe_clients: Option<usize>) -> OverloadReport {
        OverloadReport {
            capacity: 3_000.0,
            probe_clients,
            steps: vec![step(3_000.0, 2_000), step(9_000.0, 1_600)],
            generator_cpu_s: 0.0,
            elapsed: Duration::from_secs(2),
        }
    }

    #[test]
    fn the_peak_is_a_measured_rate_never_a_given_capacity() {
        // Probed: the probe's 3,000 is the best rate measured.
        let probed = overload_table(&report(Some(256)));
        assert!(probed.starts_with("capacity probe (256 clients, closed loop): 3000"));
        assert!(probed.contains("| 9000 | 3.0 | 1600 | 53% |"), "{probed}");
        // Given: only the steps were measured; the best of them (2,000) is the peak.
        let given = overload_table(&report(None));
        assert!(given.starts_with("capacity (given, not probed): 3000 holds/s\n"));
        assert!(given.contains("| 3000 | 1.0 | 2000 | 100% |"), "{given}");
        assert!(given.contains("| 9000 | 3.0 | 1600 | 80% |"), "{given}");
        // Nothing served at a given capacity: no peak to divide by.
        let mut none = report(None);
        none.steps = vec![step(3_000.0, 0)];
        let none = overload_table(&none);
        assert!(none.contains("| 3000 | 1.0 | 0 | - |"), "{none}");
    }
}
