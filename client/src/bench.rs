//! The load generator behind `boxoffice bench`:
//! - `catalog`: concurrent venue creation through every node (the catalog group's
//!   write path: forward, replicate, fsync, apply);
//! - `events`: creating many events (catalog write + placement + the new group's
//!   first write);
//! - `groups`: status writes spread over G event groups, to compare one group with
//!   many under the same client load.
//!
//! `holds` lives in [`crate::bench_holds`], `mixed` and `overload` in
//! [`crate::bench_load`]; later issues add `queue` and `onsale`.
//!
//! Closed loop: W writers each send one request at a time, spread over the nodes.
//! Latencies go into an HDR histogram; the generator reports its own CPU time so a
//! saturated generator is visible.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};

use crate::{sample_event, Client, NewVenue, RateLimitView};

/// Which of the cluster's rate limits are raised over the spec's, as a line for
/// the output of a `boxoffice bench` run: a run against such a cluster measures
/// what the spec's limits would have refused. Asks every node (`GET
/// /v1/admin/cluster`).
pub async fn rate_limits_note(pool: &[Client]) -> String {
    let mut nodes = Vec::new();
    for c in pool {
        nodes.push(match c.cluster().await {
            Ok(v) if !v.rate_limits.is_empty() => (v.node_id, Some(v.rate_limits)),
            Ok(v) => (v.node_id, None),
            // No node has id 0: the line reads "nodes [0]: not reported".
            Err(_) => (0, None),
        });
    }
    limits_line(&nodes)
}

/// The line of [`rate_limits_note`] from each node's limits (`None`: not
/// reported); nodes that disagree are listed group by group.
fn limits_line(nodes: &[(u64, Option<Vec<RateLimitView>>)]) -> String {
    let mut groups: Vec<(&Option<Vec<RateLimitView>>, Vec<u64>)> = Vec::new();
    for (node, limits) in nodes {
        match groups.iter_mut().find(|(l, _)| *l == limits) {
            Some((_, ids)) => ids.push(*node),
            None => groups.push((limits, vec![*node])),
        }
    }
    let describe = |limits: &Option<Vec<RateLimitView>>| match limits {
        None => "not reported".to_string(),
        Some(l) => {
            let raised: Vec<_> = l
                .iter()
                .filter(|v| v.raised())
                .map(|v| {
                    format!(
                        "{} {}/{} s (spec {}/{} s)",
                        v.scope,
                        v.requests,
                        v.window_seconds,
                        v.spec_requests,
                        v.spec_window_seconds
                    )
                })
                .collect();
            if raised.is_empty() {
                "the spec's, none raised".to_string()
            } else {
                format!("raised in this cluster's config: {}", raised.join(", "))
            }
        }
    };
    match groups.as_slice() {
        [(limits, _)] => format!("rate limits (per client, per node): {}", describe(limits)),
        _ => format!(
            "rate limits (per client, per node) differ between nodes: {}",
            groups
                .iter()
                .map(|(l, ids)| format!("nodes {ids:?}: {}", describe(l)))
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// One run's outcome.
#[derive(Debug, Clone)]
pub struct LevelResult {
    pub label: String,
    pub writers: usize,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// CPU seconds the generator itself used during the run.
    pub generator_cpu_s: f64,
}

impl LevelResult {
    pub fn throughput(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }
}

/// The nice value a load generator asks for ([`raise_priority`]).
pub const GENERATOR_NICE: libc::c_int = -10;

/// Gives the calling thread, and the threads it starts after this, precedence
/// for the CPU ([`GENERATOR_NICE`]); a line for the report saying which priority
/// the generator runs at.
///
/// The generator shares the machine with the cluster it measures. At the same
/// priority its two threads waited for the CPU behind a dozen busy node threads,
/// so it sent late and timed answers that had long arrived (the overload
/// benchmark's 3× step: p99 1.4 s in the generator, no request over 250 ms in
/// the nodes). Its work is the same either way; this only makes it prompt, as on
/// machines of its own. Needs root (CAP_SYS_NICE); without it, the line says so.
pub fn raise_priority() -> String {
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, GENERATOR_NICE) };
    if rc == 0 {
        format!("generator priority: nice {GENERATOR_NICE}")
    } else {
        format!(
            "generator priority: unchanged (nice {GENERATOR_NICE} refused: {})",
            std::io::Error::last_os_error()
        )
    }
}

/// The requests an open-loop sender has spawned. Finished ones are joined as the
/// run goes: a finished task's memory (sized for its future) is freed only when it
/// is joined, and one 10 s overload step at 9,000/s spawns 90,000. Held to the end
/// of the step, they took the generator to 230 MB (53 MB now), and the kernel's
/// zeroing of fresh pages was 6.6% of its samples in a profile.
pub(crate) struct OpenLoopTasks(tokio::task::JoinSet<()>);

impl OpenLoopTasks {
    pub(crate) fn new() -> Self {
        Self(tokio::task::JoinSet::new())
    }

    /// Spawns `request`, first joining every request already finished.
    pub(crate) fn spawn(&mut self, request: impl Future<Output = ()> + Send + 'static) {
        while self.0.try_join_next().is_some() {}
        self.0.spawn(request);
    }

    /// Waits for every request still running.
    pub(crate) async fn finish(mut self) {
        while self.0.join_next().await.is_some() {}
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

/// Clients of every node, sharing one connection pool.
pub fn clients(urls: &[String], admin_key: &str) -> anyhow::Result<Arc<Vec<Client>>> {
    anyhow::ensure!(!urls.is_empty(), "no node URLs");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    Ok(Arc::new(
        urls.iter()
            .map(|u| {
                Client::with_http(http.clone(), u.clone())
                    .with_admin_key(admin_key)
                    .with_wire()
            })
            .collect(),
    ))
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// How a run ends: after a duration, or after a number of successful operations.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    After(Duration),
    Count(u64),
}

/// Runs `writers` closed-loop workers until `stop`; `op(worker, i)` performs one
/// operation and says whether it succeeded.
pub async fn closed_loop<F, Fut>(
    label: &str,
    writers: usize,
    stop: Stop,
    progress: bool,
    op: F,
) -> anyhow::Result<LevelResult>
where
    F: Fn(usize, u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let done = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let cpu0 = process_cpu_seconds();
    let started = Instant::now();
    let finished = {
        let (done, issued) = (done.clone(), issued.clone());
        move |count_issue: bool| match stop {
            Stop::After(d) => started.elapsed() >= d,
            Stop::Count(n) => {
                if count_issue {
                    issued.fetch_add(1, Ordering::Relaxed) >= n
                } else {
                    done.load(Ordering::Relaxed) >= n
                }
            }
        }
    };
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let (op, done, finished) = (op.clone(), done.clone(), finished.clone());
            tokio::spawn(async move {
                let mut hist = histogram();
                let mut errors = 0u64;
                let mut i = 0u64;
                while !finished(true) {
                    let t = Instant::now();
                    if op(w, i).await {
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                        done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        errors += 1;
                    }
                    i += 1;
                }
                (hist, errors)
            })
        })
        .collect();
    let bar = progress.then(|| {
        let (len, unit) = match stop {
            Stop::After(d) => (d.as_secs().max(1), "s"),
            Stop::Count(n) => (n, " ops"),
        };
        let b = ProgressBar::new(len);
        b.set_style(
            ProgressStyle::with_template(&format!(
                "{{prefix:>14}} [{{bar:30}}] {{pos}}/{{len}}{unit} {{msg}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        b.set_prefix(label.to_string());
        b
    });
    if let Some(b) = &bar {
        while !tasks.iter().all(|t| t.is_finished()) {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let ok = done.load(Ordering::Relaxed);
            match stop {
                Stop::After(_) => b.set_position(started.elapsed().as_secs()),
                Stop::Count(_) => b.set_position(ok),
            }
            b.set_message(format!("{ok} ok"));
        }
    }
    let mut hist = histogram();
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
    Ok(LevelResult {
        label: label.to_string(),
        writers,
        ok: hist.len(),
        errors,
        elapsed,
        p50_ms: ms(hist.value_at_quantile(0.5)),
        p99_ms: ms(hist.value_at_quantile(0.99)),
        p999_ms: ms(hist.value_at_quantile(0.999)),
        max_ms: ms(hist.max()),
        generator_cpu_s: process_cpu_seconds() - cpu0,
    })
}

/// `bench catalog`: venue creation at each concurrency level; then every
/// acknowledged venue is checked on every node. Returns the results and the number
/// of venues verified.
pub async fn catalog(
    urls: &[String],
    admin_key: &str,
    levels: &[usize],
    duration: Duration,
    progress: bool,
) -> anyhow::Result<(Vec<LevelResult>, usize)> {
    let clients = clients(urls, admin_key)?;
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let mut results = Vec::new();
    for &writers in levels {
        let (clients, acked) = (clients.clone(), acked.clone());
        let op = move |w: usize, i: u64| {
            let (clients, acked) = (clients.clone(), acked.clone());
            async move {
                let client = &clients[(w + i as usize) % clients.len()];
                let venue = NewVenue::sample(&format!("bench-{w}-{i}"), 2, 10);
                match client.create_venue(&venue, None).await {
                    Ok(created) => {
                        acked
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(created.venue_id);
                        true
                    }
                    Err(_) => false,
                }
            }
        };
        let label = format!("{writers} writers");
        results.push(closed_loop(&label, writers, Stop::After(duration), progress, op).await?);
    }
    let acked: BTreeSet<String> = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    verify_everywhere(&clients, &acked).await?;
    Ok((results, acked.len()))
}

/// Creates a venue with one section to hang events on.
async fn bench_venue(client: &Client) -> anyhow::Result<String> {
    Ok(client
        .create_venue(&NewVenue::sample("bench arena", 4, 25), None)
        .await?
        .venue_id)
}

/// `bench events`: creates `count` events through every node, `concurrency` at a
/// time. Returns the run and the created event ids.
pub async fn events(
    urls: &[String],
    admin_key: &str,
    count: u64,
    concurrency: usize,
    progress: bool,
) -> anyhow::Result<(LevelResult, Vec<String>)> {
    let clients = clients(urls, admin_key)?;
    let venue = bench_venue(&clients[0]).await?;
    let created = Arc::new(Mutex::new(Vec::new()));
    let op = {
        let (clients, created) = (clients.clone(), created.clone());
        move |w: usize, i: u64| {
            let (clients, created, venue) = (clients.clone(), created.clone(), venue.clone());
            async move {
                let client = &clients[(w + i as usize) % clients.len()];
                match client
                    .create_event(&sample_event(&format!("bench {w}-{i}"), &venue, &["Floor"]))
                    .await
                {
                    Ok(e) => {
                        created
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(e.event_id);
                        true
                    }
                    Err(_) => false,
                }
            }
        }
    };
    let label = format!("{count} events");
    let result = closed_loop(&label, concurrency, Stop::Count(count), progress, op).await?;
    let ids = created.lock().unwrap_or_else(|p| p.into_inner()).clone();
    Ok((result, ids))
}

/// `bench groups`: for each G in `spreads`, `writers` closed-loop writers change the
/// sale status of random events among G (through random nodes) for `duration`.
pub async fn groups(
    urls: &[String],
    admin_key: &str,
    spreads: &[usize],
    writers: usize,
    duration: Duration,
    progress: bool,
) -> anyhow::Result<Vec<LevelResult>> {
    let max = spreads.iter().copied().max().unwrap_or(1) as u64;
    let (_, events) = events(urls, admin_key, max, 8, progress).await?;
    anyhow::ensure!(
        events.len() as u64 >= max,
        "created only {} of {max} events",
        events.len()
    );
    let clients = clients(urls, admin_key)?;
    let mut results = Vec::new();
    for &g in spreads {
        let targets: Arc<Vec<String>> = Arc::new(events[..g].to_vec());
        let clients = clients.clone();
        let op = move |w: usize, i: u64| {
            let (clients, targets) = (clients.clone(), targets.clone());
            async move {
                // A cheap deterministic spread over nodes and events.
                let k = (w as u64)
                    .wrapping_mul(7919)
                    .wrapping_add(i.wrapping_mul(104_729));
                let client = &clients[(k % clients.len() as u64) as usize];
                let event = &targets[(k / 3 % targets.len() as u64) as usize];
                let status = if i.is_multiple_of(2) {
                    "PAUSED"
                } else {
                    "ON_SALE"
                };
                client.set_event_status(event, status).await.is_ok()
            }
        };
        let label = format!("{g} group{}", if g == 1 { "" } else { "s" });
        results.push(closed_loop(&label, writers, Stop::After(duration), progress, op).await?);
    }
    Ok(results)
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
        "| run | writers | ok | errors | ops/s | p50 ms | p99 ms | p99.9 ms | max ms | generator CPU |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for r in results {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.0}% |\n",
            r.label,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_open_loop_joins_finished_requests_as_it_goes() {
        let mut tasks = OpenLoopTasks::new();
        let done = Arc::new(AtomicU64::new(0));
        for _ in 0..1_000 {
            let done = done.clone();
            tasks.spawn(async move {
                done.fetch_add(1, Ordering::Relaxed);
            });
            // Let the request run (the sender sleeps between requests too).
            tokio::task::yield_now().await;
        }
        assert!(
            tasks.0.len() < 10,
            "{} finished requests kept",
            tasks.0.len()
        );
        tasks.finish().await;
        assert_eq!(done.load(Ordering::Relaxed), 1_000);
    }

    fn limit(scope: &str, requests: u32, window_seconds: u64, spec: (u32, u64)) -> RateLimitView {
        RateLimitView {
            scope: scope.into(),
            requests,
            window_seconds,
            spec_requests: spec.0,
            spec_window_seconds: spec.1,
        }
    }

    /// A limit is raised when it lets a client do more per second than the spec's,
    /// whatever its window; the line names only those.
    #[test]
    fn raised_rate_limits_are_named() {
        let spec = vec![
            limit("reserve", 10, 60, (10, 60)),
            limit("authenticated", 1000, 3600, (1000, 3600)),
        ];
        let raised = vec![
            limit("reserve", 1_000_000, 60, (10, 60)),
            // 20 per 7200 s is 10 per hour: tighter than 1000 per hour.
            limit("authenticated", 20, 7200, (1000, 3600)),
        ];
        assert!(!spec[0].raised() && raised[0].raised() && !raised[1].raised());
        assert_eq!(
            limits_line(&[(1, Some(spec.clone())), (2, Some(spec.clone()))]),
            "rate limits (per client, per node): the spec's, none raised"
        );
        assert_eq!(
            limits_line(&[(1, Some(raised.clone())), (2, Some(raised.clone()))]),
            "rate limits (per client, per node): raised in this cluster's config: \
             reserve 1000000/60 s (spec 10/60 s)"
        );
        assert_eq!(
            limits_line(&[(1, Some(raised)), (2, Some(spec)), (3, None)]),
            "rate limits (per client, per node) differ between nodes: nodes [1]: raised in \
             this cluster's config: reserve 1000000/60 s (spec 10/60 s); nodes [2]: the \
             spec's, none raised; nodes [3]: not reported"
        );
    }
}
