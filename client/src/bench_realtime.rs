//! `boxoffice bench realtime`: N WebSocket subscribers on one event, spread over
//! every node, while C clients run the `holds` storm on it. First the same storm
//! runs on a fresh event nobody watches (the baseline), so the report shows what
//! the subscribers cost in hold throughput. Reports:
//!
//! - delivery of `availability_update`: the latency, from the group leader's
//!   stamps (nodes and generator share this machine's clock), of the *newest*
//!   change an update reflects (`applied_at_ms` to arrival: commit, the watcher's
//!   look, a member's feed where the node does not replicate the group, the
//!   WebSocket send), and the gap between a subscriber's consecutive updates
//!   (the coalescing: a look every 250 ms, fewer updates when
//!   `realtime.fanout_per_second` paces a crowd; quiet stretches with nothing
//!   to report count too). A change waits at most about one gap before it is
//!   sent;
//! - the nodes' resident memory before and after the subscribers connected, per
//!   connection (`boxoffice_process_resident_bytes`);
//! - subscribers dropped by a node (too slow: close 4008) or lost otherwise;
//! - a check: after the storm every subscriber's last count equals the seat map's.
//!
//! Subscribers use the storm's users' session tokens in turn (fans watch the
//! event they buy from). The storm's events have one section, so a subscriber's
//! last count is the event's.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::ensure;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

use crate::bench::process_cpu_seconds;
use crate::bench_holds::{holds, HoldsOptions, HoldsReport};
use crate::bench_targets::{Boxoffice, Target};
use crate::Client;

/// What to run.
#[derive(Debug, Clone, Copy)]
pub struct RealtimeOptions {
    pub subscribers: usize,
    pub holds: HoldsOptions,
}

/// The run's outcome.
pub struct RealtimeReport {
    pub subscribers: usize,
    /// Subscribers that got their first count (connected and subscribed).
    pub connected: usize,
    /// Seconds to connect and subscribe everyone.
    pub connect_s: f64,
    /// Connections a node closed (4008: fell behind) or that broke.
    pub dropped: u64,
    /// Updates received after each connection's first picture.
    pub updates: u64,
    /// Latency of the newest change an update reflects, in ms.
    pub newest: Histogram<u64>,
    /// Gaps between a subscriber's consecutive updates, in ms.
    pub gaps: Histogram<u64>,
    /// How long the watched storm ran.
    pub watched_s: f64,
    /// Per node (in `urls` order): resident bytes before and after subscribing.
    pub rss: Vec<(Option<u64>, Option<u64>)>,
    pub baseline: HoldsReport,
    pub watched: HoldsReport,
    /// Subscribers whose last count equals the seat map's after the storm.
    pub converged: usize,
    pub true_count: u64,
    pub generator_cpu_s: f64,
    pub elapsed: Duration,
}

/// What every subscriber shares.
struct Shared {
    /// (newest-change latency, gap) in ms, sharded to keep 10,000 tasks from
    /// queueing on one lock.
    shards: Vec<Mutex<(Histogram<u64>, Histogram<u64>)>>,
    connected: AtomicUsize,
    /// Connections that ended after their first count.
    lost: AtomicUsize,
    dropped: AtomicU64,
    updates: AtomicU64,
    /// Each subscriber's last count (u64::MAX before the first).
    last: Vec<AtomicU64>,
}

#[derive(Deserialize)]
struct Update {
    #[serde(rename = "type")]
    kind: String,
    available_seats: Option<u64>,
    applied_at_ms: Option<i64>,
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000, 3).expect("valid histogram bounds")
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

async fn resident(c: &Client) -> Option<u64> {
    let text = c.metrics().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("boxoffice_process_resident_bytes "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
}

/// One subscriber, until the run aborts its task.
async fn subscribe(url: String, event: String, i: usize, shared: Arc<Shared>) {
    let socket = match tokio_tungstenite::connect_async(url).await {
        Ok((s, _)) => s,
        Err(_) => {
            shared.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let (mut sink, mut stream) = socket.split();
    let subscribe = json!({"type": "subscribe", "event_id": event}).to_string();
    if sink.send(Message::Text(subscribe.into())).await.is_err() {
        shared.dropped.fetch_add(1, Ordering::Relaxed);
        return;
    }
    // The arrival of the previous count.
    let mut previous: Option<i64> = None;
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => continue,
        };
        let Ok(u) = serde_json::from_str::<Update>(text.as_str()) else {
            continue;
        };
        let (Some(n), Some(at)) = (u.available_seats, u.applied_at_ms) else {
            continue;
        };
        if u.kind != "availability_update" {
            continue;
        }
        shared.last[i].store(n, Ordering::Relaxed);
        let now = unix_ms();
        let Some(before) = previous.replace(now) else {
            shared.connected.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        shared.updates.fetch_add(1, Ordering::Relaxed);
        let ms = |since: i64| (now - since).max(1) as u64;
        let mut shard = shared.shards[i % shared.shards.len()]
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let _ = shard.0.record(ms(at));
        let _ = shard.1.record(ms(before));
    }
    if previous.is_some() {
        shared.lost.fetch_add(1, Ordering::Relaxed);
    }
    shared.dropped.fetch_add(1, Ordering::Relaxed);
}

/// Runs the benchmark (see the module doc). `tokens` are the storm's users.
pub async fn realtime(
    pool: Arc<Vec<Client>>,
    urls: &[String],
    tokens: &[String],
    holds_per_user: u32,
    opts: RealtimeOptions,
    progress: bool,
) -> anyhow::Result<RealtimeReport> {
    let started = Instant::now();
    let cpu0 = process_cpu_seconds();
    let seats = opts.holds.seats;
    ensure!(!tokens.is_empty(), "no users");
    if progress {
        eprintln!("baseline: the storm on an event nobody watches ...");
    }
    let plain = Boxoffice::setup(pool.clone(), seats, tokens, holds_per_user).await?;
    let baseline = holds(Target::Boxoffice(plain), opts.holds, progress).await?;

    let target = Boxoffice::setup(pool.clone(), seats, tokens, holds_per_user).await?;
    let event = target.event().to_string();
    let mut rss = Vec::new();
    for c in pool.iter() {
        rss.push((resident(c).await, None));
    }
    let n = opts.subscribers;
    let shared = Arc::new(Shared {
        shards: (0..64)
            .map(|_| Mutex::new((histogram(), histogram())))
            .collect(),
        connected: AtomicUsize::new(0),
        lost: AtomicUsize::new(0),
        dropped: AtomicU64::new(0),
        updates: AtomicU64::new(0),
        last: (0..n).map(|_| AtomicU64::new(u64::MAX)).collect(),
    });
    if progress {
        eprintln!("connecting {n} subscribers over {} nodes ...", urls.len());
    }
    let connecting = Instant::now();
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let base = urls[i % urls.len()]
            .trim_end_matches('/')
            .replacen("http://", "ws://", 1);
        let url = format!("{base}/v1/realtime?token={}", tokens[i % tokens.len()]);
        tasks.push(tokio::spawn(subscribe(
            url,
            event.clone(),
            i,
            shared.clone(),
        )));
        // Connect in waves so the nodes' accept queues never overflow.
        if i % 200 == 199 {
            while shared.connected.load(Ordering::Relaxed)
                + (shared.dropped.load(Ordering::Relaxed) as usize)
                < i.saturating_sub(400)
            {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    let all_in = tokio::time::timeout(Duration::from_secs(120), async {
        while shared.connected.load(Ordering::Relaxed)
            + (shared.dropped.load(Ordering::Relaxed) as usize)
            < n
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let connect_s = connecting.elapsed().as_secs_f64();
    let connected = shared.connected.load(Ordering::Relaxed);
    if all_in.is_err() && progress {
        eprintln!("only {connected} of {n} subscribed within 120 s");
    }
    // Let the nodes settle before reading their memory.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (c, r) in pool.iter().zip(rss.iter_mut()) {
        r.1 = resident(c).await;
    }
    if progress {
        eprintln!("{connected} subscribed in {connect_s:.1} s; the storm on the watched event ...");
    }
    let storm = Instant::now();
    let watched = holds(Target::Boxoffice(target), opts.holds, progress).await?;
    let watched_s = storm.elapsed().as_secs_f64();

    // Every subscriber should end on the seat map's count.
    let map = pool[0].seat_map(&event).await?;
    let true_count = Client::seats_of(&map)
        .iter()
        .filter(|(_, status)| status == "AVAILABLE")
        .count() as u64;
    let settle = Instant::now();
    let converged = loop {
        let at_true = shared
            .last
            .iter()
            .filter(|c| c.load(Ordering::Relaxed) == true_count)
            .count();
        let alive = connected.saturating_sub(shared.lost.load(Ordering::Relaxed));
        if at_true >= alive || settle.elapsed() > Duration::from_secs(10) {
            break at_true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    for t in &tasks {
        t.abort();
    }
    let dropped = shared.dropped.load(Ordering::Relaxed);
    let (mut newest, mut gaps) = (histogram(), histogram());
    for s in &shared.shards {
        let s = s.lock().unwrap_or_else(|p| p.into_inner());
        newest.add(&s.0)?;
        gaps.add(&s.1)?;
    }
    Ok(RealtimeReport {
        subscribers: n,
        connected,
        connect_s,
        dropped,
        updates: shared.updates.load(Ordering::Relaxed),
        newest,
        gaps,
        watched_s,
        rss,
        baseline,
        watched,
        converged,
        true_count,
        generator_cpu_s: process_cpu_seconds() - cpu0,
        elapsed: started.elapsed(),
    })
}

/// The report as Markdown.
pub fn table(r: &RealtimeReport) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "subscribers: {} ({} subscribed in {:.1} s), {} dropped or lost\n\n",
        r.subscribers, r.connected, r.connect_s, r.dropped
    ));
    out.push_str(&format!(
        "{} updates received during the storm: {:.2} per subscriber per second\n\n",
        r.updates,
        r.updates as f64 / r.connected.max(1) as f64 / r.watched_s.max(0.001)
    ));
    out.push_str("| updates | p50 ms | p99 ms | p99.9 ms | max ms |\n|---|---:|---:|---:|---:|\n");
    for (name, l) in [
        ("latency: newest change in an update", &r.newest),
        ("gap between a subscriber's updates", &r.gaps),
    ] {
        out.push_str(&format!(
            "| {name} | {} | {} | {} | {} |\n",
            l.value_at_quantile(0.5),
            l.value_at_quantile(0.99),
            l.value_at_quantile(0.999),
            l.max()
        ));
    }
    out.push('\n');
    out.push_str(
        "| node | RSS before | RSS with subscribers | per connection |\n|---:|---:|---:|---:|\n",
    );
    let per_node = r.connected.div_ceil(r.rss.len().max(1)).max(1);
    for (i, (before, after)) in r.rss.iter().enumerate() {
        let mib =
            |b: Option<u64>| b.map_or("-".into(), |b| format!("{:.1} MiB", b as f64 / 1048576.0));
        let per = match (before, after) {
            (Some(b), Some(a)) => format!(
                "{:.1} KiB",
                a.saturating_sub(*b) as f64 / 1024.0 / per_node as f64
            ),
            _ => "-".into(),
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} |\n",
            i + 1,
            mib(*before),
            mib(*after),
            per
        ));
    }
    out.push('\n');
    let rate = |h: &HoldsReport| {
        h.holds_per_s_first_half()
            .map_or("-".into(), |v| format!("{v:.0}"))
    };
    out.push_str("| hold storm | holds/s (first 50%) | holds/s (run) | p99 ms | all seats at s |\n|---|---:|---:|---:|---:|\n");
    for (name, h) in [("nobody watching", &r.baseline), ("watched", &r.watched)] {
        out.push_str(&format!(
            "| {name} | {} | {:.0} | {:.2} | {} |\n",
            rate(h),
            h.holds_per_s(),
            h.p99_ms,
            h.t100()
                .map_or("-".into(), |d| format!("{:.1}", d.as_secs_f64()))
        ));
    }
    out.push_str(&format!(
        "\ncheck: {} of {} subscribers ended on the seat map's count ({} available); generator CPU {:.0}% of one core over {:.0} s\n",
        r.converged,
        r.connected,
        r.true_count,
        100.0 * r.generator_cpu_s / r.elapsed.as_secs_f64(),
        r.elapsed.as_secs_f64()
    ));
    out
}
