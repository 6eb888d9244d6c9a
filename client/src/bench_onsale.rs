//! `boxoffice bench onsale`: the whole fan journey at on-sale, through the public
//! API of every node. F fans (each with a saved card) join one event's waiting
//! room at once, wait on the WebSocket for READY and its access token, hold a
//! pair of adjacent seats with it (another pair after a conflict, until none is
//! left), and buy the pair (simulated gateway). A fan left without seats leaves
//! the queue, freeing the slot; a buyer's slot frees itself.
//!
//! Reports the pace (orders per second, time to sell out), each step's latency,
//! how many fans bought or went away, and a check: the seats the seat map shows
//! SOLD are exactly the confirmed orders' seats, and no seat is in two orders.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use rand::Rng;
use serde_json::{json, Value};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::process_cpu_seconds;
use crate::bench_load::failure_kind;
use crate::{sample_event, Client, ClientError};

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct OnsaleOptions {
    /// Seats of the event (even; fans buy pairs).
    pub seats: u32,
    pub fans: usize,
    /// Joins in flight at once (the burst's width).
    pub joiners: usize,
    pub admission_per_second: u32,
    pub max_active_shoppers: u32,
    /// A fan gives up if not let in within this.
    pub patience: Duration,
}

/// The run's outcome.
pub struct OnsaleReport {
    pub opts: OnsaleOptions,
    pub bought: usize,
    pub empty_handed: usize,
    /// Fans that failed, by step and error.
    pub failures: BTreeMap<String, u64>,
    pub conflicts: u64,
    /// Time from the first join to the last seat sold, if every seat sold.
    pub sellout: Option<Duration>,
    /// Time from the first join to the last confirmed order.
    pub last_order: Duration,
    pub elapsed: Duration,
    /// Latencies in ms (each with the retries after 429/503 it took): join,
    /// waiting room (join to READY), one hold attempt, order (to a final status).
    pub steps: [(&'static str, Histogram<u64>); 4],
    /// Whether the check held.
    pub ok: bool,
    pub check: String,
    pub generator_cpu_s: f64,
}

/// What every fan shares.
struct Run {
    pool: Arc<Vec<Client>>,
    ws: Vec<String>,
    event: String,
    seat_ids: Vec<String>,
    /// Pairs known held or sold.
    taken: Vec<AtomicBool>,
    joins: Semaphore,
    opts: OnsaleOptions,
    started: Instant,
    last_order_ms: AtomicU64,
    conflicts: AtomicU64,
    steps: Mutex<[Histogram<u64>; 4]>,
}

enum Outcome {
    Bought([String; 2]),
    EmptyHanded,
    Failed(String),
}

impl Run {
    fn record(&self, step: usize, since: Instant) {
        let ms = since.elapsed().as_millis().max(1) as u64;
        let _ = self.steps.lock().unwrap_or_else(|p| p.into_inner())[step].record(ms);
    }

    /// A pair not known taken, from a random place on.
    fn free_pair(&self) -> Option<usize> {
        let n = self.taken.len();
        let start = rand::thread_rng().gen_range(0..n);
        (0..n)
            .map(|k| (start + k) % n)
            .find(|p| !self.taken[*p].load(Ordering::Relaxed))
    }
}

/// Retries a call the cluster refused unwritten (429/503), as a fan's app would.
async fn patiently<T, F, Fut>(mut call: F) -> Result<T, ClientError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let mut pause = Duration::from_millis(50);
    loop {
        match call().await {
            Err(e) if matches!(e.status(), Some(429 | 503)) => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Waits on the WebSocket for READY: the access token, or `None` once fewer than
/// two seats are left (or the fan ran out of patience).
async fn wait_ready(run: &Run, i: usize, queue_token: &str) -> anyhow::Result<Option<String>> {
    let url = format!(
        "{}/v1/realtime?token={queue_token}",
        run.ws[i % run.ws.len()]
    );
    // A node shedding load refuses the upgrade (503): ask again, as an app would.
    let mut pause = Duration::from_millis(50);
    let mut ws = loop {
        match tokio_tungstenite::connect_async(url.as_str()).await {
            Ok((ws, _)) => break ws,
            Err(tokio_tungstenite::tungstenite::Error::Http(r))
                if matches!(r.status().as_u16(), 429 | 503) =>
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            Err(e) => return Err(e.into()),
        }
    };
    let subscribe = json!({"type": "subscribe", "event_id": run.event}).to_string();
    ws.send(Message::Text(subscribe.into())).await?;
    let deadline = tokio::time::Instant::now() + run.opts.patience;
    loop {
        let msg = match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => return Ok(None),
            Ok(Some(Ok(Message::Text(t)))) => t,
            Ok(Some(Ok(_))) => continue,
            Ok(other) => anyhow::bail!("the socket ended: {other:?}"),
        };
        let v: Value = serde_json::from_str(msg.as_str())?;
        match v["type"].as_str() {
            Some("availability_update") if v["available_seats"].as_u64().unwrap_or(0) < 2 => {
                return Ok(None)
            }
            Some("queue_update") if v["status"] == "READY" => {
                let access = v["access_token"].as_str().unwrap_or_default();
                ensure!(!access.is_empty(), "READY without an access token: {v}");
                return Ok(Some(access.to_string()));
            }
            _ => {}
        }
    }
}

/// One fan's journey.
async fn fan(run: Arc<Run>, i: usize, session: String, card: String) -> Outcome {
    let client = &run.pool[i % run.pool.len()];
    let fail = |step: &str, e: &dyn std::fmt::Display| Outcome::Failed(format!("{step}: {e}"));
    let device = format!("onsale-device-{i}");
    let body = json!({"event_id": run.event});
    let joined = {
        let _permit = run.joins.acquire().await;
        let t = Instant::now();
        match patiently(|| client.join_queue(&session, &body, Some(&device))).await {
            Ok(v) => {
                run.record(0, t);
                v["queue_token"].as_str().unwrap_or_default().to_string()
            }
            Err(e) => return fail("join", &failure_kind(&e)),
        }
    };
    let waiting = Instant::now();
    let access = match wait_ready(&run, i, &joined).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            let _ = client.leave_queue(&joined).await;
            return Outcome::EmptyHanded;
        }
        Err(e) => return fail("wait", &e),
    };
    run.record(1, waiting);
    // Hold a pair; another after a conflict, until none is left.
    let held = loop {
        let Some(p) = run.free_pair() else {
            let _ = client.leave_queue(&access).await;
            return Outcome::EmptyHanded;
        };
        let seats = [run.seat_ids[2 * p].clone(), run.seat_ids[2 * p + 1].clone()];
        let t = Instant::now();
        let body = json!({"event_id": run.event, "seat_ids": seats});
        match patiently(|| client.reserve(&access, &body, None)).await {
            Ok(r) => {
                run.record(2, t);
                run.taken[p].store(true, Ordering::Relaxed);
                break (p, seats, r);
            }
            Err(e) if matches!(e.status(), Some(409 | 410)) => {
                run.record(2, t);
                run.conflicts.fetch_add(1, Ordering::Relaxed);
                run.taken[p].store(true, Ordering::Relaxed);
            }
            Err(e) => {
                let _ = client.leave_queue(&access).await;
                return fail("hold", &failure_kind(&e));
            }
        }
    };
    let (p, seats, hold) = held;
    let order = json!({
        "reservation_id": hold["reservation_id"],
        "payment_method_id": card,
        "billing_address": {"street": "1 Bench St", "city": "Benchville", "state": "BV",
                            "postal_code": "10001", "country": "US"},
        "delivery_method": "MOBILE",
    });
    let key = uuid::Uuid::new_v4().to_string();
    let t = Instant::now();
    let placed = patiently(|| client.create_order(&session, &order, Some(&key))).await;
    // PENDING: the outcome is being recorded (the cluster finishes it); ask
    // until it is final, as the spec's client would.
    let settled = match placed {
        Ok(o) if o["status"] == "PENDING" => {
            let id = o["order_id"].as_str().unwrap_or_default().to_string();
            let mut last = Ok(o);
            for _ in 0..120 {
                tokio::time::sleep(Duration::from_millis(500)).await;
                last = patiently(|| client.order(&session, &id)).await;
                if !matches!(&last, Ok(o) if o["status"] == "PENDING") {
                    break;
                }
            }
            last
        }
        other => other,
    };
    match settled {
        Ok(o) if o["status"] == "CONFIRMED" => {
            run.record(3, t);
            let at = run.started.elapsed().as_millis() as u64;
            run.last_order_ms.fetch_max(at, Ordering::Relaxed);
            Outcome::Bought(seats)
        }
        // A fan whose purchase failed gives the slot back.
        Ok(o) => {
            run.taken[p].store(false, Ordering::Relaxed);
            let _ = client.leave_queue(&access).await;
            fail("order", &format!("status {}", o["status"]))
        }
        Err(e) => {
            let _ = client.leave_queue(&access).await;
            fail("order", &failure_kind(&e))
        }
    }
}

/// Sets up the event and the fans' cards, runs the on-sale, checks the result.
/// `tokens` are the fans' session tokens (one fan each).
pub async fn onsale(
    pool: Arc<Vec<Client>>,
    urls: &[String],
    tokens: Vec<String>,
    opts: OnsaleOptions,
) -> anyhow::Result<OnsaleReport> {
    ensure!(
        opts.seats >= 2 && opts.seats.is_multiple_of(2),
        "--seats must be even"
    );
    ensure!(tokens.len() == opts.fans, "one token per fan");
    let admin = &pool[0];
    let venue = admin
        .create_venue(&crate::bench_targets::venue(opts.seats), None)
        .await?;
    let mut spec = sample_event("onsale bench", &venue.venue_id, &["Floor"]);
    spec["queue"] = json!({
        "enabled": true,
        "max_size": opts.fans * 2,
        "admission_per_second": opts.admission_per_second,
        "max_active_shoppers": opts.max_active_shoppers,
        "access_window_minutes": 5,
    });
    let event = admin.create_event(&spec).await?.event_id;
    admin.set_event_status(&event, "ON_SALE").await?;
    let seat_ids: Vec<String> = Client::seats_of(&admin.seat_map(&event).await?)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    ensure!(
        seat_ids.len() == opts.seats as usize,
        "seat map has {} seats",
        seat_ids.len()
    );
    println!("saving a card for each of {} fans ...", opts.fans);
    let cards: Vec<anyhow::Result<String>> = futures::stream::iter(tokens.iter().enumerate())
        .map(|(i, t)| {
            let c = pool[i % pool.len()].clone();
            async move {
                let body = json!({"type": "CARD", "card_token": "tok_visa"});
                let pm = patiently(|| c.add_payment_method(t, &body)).await?;
                Ok(pm["payment_method_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string())
            }
        })
        // In order: card i is fan i's.
        .buffered(32)
        .collect()
        .await;
    let cards: Vec<String> = cards.into_iter().collect::<anyhow::Result<_>>()?;
    let histogram = || Histogram::new_with_bounds(1, 3_600_000, 3).expect("valid histogram bounds");
    let run = Arc::new(Run {
        ws: urls
            .iter()
            .map(|u| u.trim_end_matches('/').replacen("http://", "ws://", 1))
            .collect(),
        taken: (0..opts.seats / 2)
            .map(|_| AtomicBool::new(false))
            .collect(),
        joins: Semaphore::new(opts.joiners.max(1)),
        pool: pool.clone(),
        event: event.clone(),
        seat_ids,
        opts,
        started: Instant::now(),
        last_order_ms: AtomicU64::new(0),
        conflicts: AtomicU64::new(0),
        steps: Mutex::new([histogram(), histogram(), histogram(), histogram()]),
    });
    println!(
        "{} fans at the on-sale of {} seats ...",
        opts.fans, opts.seats
    );
    let cpu0 = process_cpu_seconds();
    let tasks: Vec<_> = tokens
        .into_iter()
        .zip(cards)
        .enumerate()
        .map(|(i, (t, c))| tokio::spawn(fan(run.clone(), i, t, c)))
        .collect();
    let (mut bought, mut empty_handed) = (Vec::new(), 0);
    let mut failures: BTreeMap<String, u64> = BTreeMap::new();
    for t in tasks {
        match t.await {
            Ok(Outcome::Bought(seats)) => bought.push(seats),
            Ok(Outcome::EmptyHanded) => empty_handed += 1,
            Ok(Outcome::Failed(why)) => *failures.entry(why).or_default() += 1,
            Err(e) => *failures.entry(format!("task: {e}")).or_default() += 1,
        }
    }
    let elapsed = run.started.elapsed();
    let generator_cpu_s = process_cpu_seconds() - cpu0;

    // The check: SOLD seats are exactly the confirmed orders' seats.
    let ordered: Vec<&String> = bought.iter().flatten().collect();
    let distinct: BTreeSet<&String> = ordered.iter().copied().collect();
    ensure!(
        distinct.len() == ordered.len(),
        "a seat is in two confirmed orders"
    );
    let sold: BTreeSet<String> = Client::seats_of(&admin.seat_map(&event).await?)
        .into_iter()
        .filter(|(_, status)| status == "SOLD")
        .map(|(id, _)| id)
        .collect();
    let ordered_set: BTreeSet<String> = distinct.into_iter().cloned().collect();

    let last_order = Duration::from_millis(run.last_order_ms.load(Ordering::Relaxed));
    let steps = run.steps.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let [join, wait, hold, order] = steps;
    Ok(OnsaleReport {
        opts,
        bought: bought.len(),
        empty_handed,
        failures,
        conflicts: run.conflicts.load(Ordering::Relaxed),
        sellout: (sold.len() == opts.seats as usize).then_some(last_order),
        last_order,
        elapsed,
        steps: [
            ("join", join),
            ("waiting room (join to READY)", wait),
            ("hold attempt", hold),
            ("order (authorize, confirm)", order),
        ],
        ok: sold == ordered_set,
        check: if sold == ordered_set {
            format!(
                "{} seats SOLD on the seat map = the {} confirmed orders' seats; no seat in two orders",
                sold.len(),
                bought.len()
            )
        } else {
            format!(
                "FAILED: the seat map shows {} seats SOLD, the confirmed orders have {}; {} differ",
                sold.len(),
                ordered_set.len(),
                sold.symmetric_difference(&ordered_set).count()
            )
        },
        generator_cpu_s,
    })
}

/// The report as Markdown.
pub fn table(r: &OnsaleReport) -> String {
    let o = &r.opts;
    let secs = |d: Duration| format!("{:.1}", d.as_secs_f64());
    let mut out = format!(
        "{} fans, {} seats (pairs), admission {}/s, at most {} shoppers, {} joins in flight\n\n",
        o.fans, o.seats, o.admission_per_second, o.max_active_shoppers, o.joiners
    );
    out.push_str("| bought | went away empty-handed | failed | hold conflicts | orders/s (to the last) | sold out at s | run s | generator CPU |\n|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    out.push_str(&format!(
        "| {} | {} | {} | {} | {:.0} | {} | {} | {:.0}% |\n\n",
        r.bought,
        r.empty_handed,
        r.failures.values().sum::<u64>(),
        r.conflicts,
        r.bought as f64 / r.last_order.as_secs_f64().max(0.001),
        r.sellout.map_or("-".into(), secs),
        secs(r.elapsed),
        100.0 * r.generator_cpu_s / r.elapsed.as_secs_f64().max(0.001),
    ));
    out.push_str(
        "| step | count | p50 ms | p99 ms | p99.9 ms | max ms |\n|---|---:|---:|---:|---:|---:|\n",
    );
    for (name, h) in &r.steps {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            h.len(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.99),
            h.value_at_quantile(0.999),
            h.max()
        ));
    }
    for (why, n) in &r.failures {
        out.push_str(&format!("failed: {n} × {why}\n"));
    }
    out.push_str(&format!("\ncheck: {}\n", r.check));
    out
}
