//! The runner: cluster up, clients and nemesis for `time`, heal, settle, final
//! read, check, and write `history.jsonl` and `report.json`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use boxoffice_client::{Client, ClientError, NewVenue};
use boxoffice_tests::{ClusterOpts, TestCluster, ADMIN_KEY};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use tokio::sync::Mutex;

use crate::checker::{check_catalog, CatalogReport};
use crate::history::{History, OpType};
use crate::holds::{self, HoldsVerdict};

/// What clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Workload {
    /// Concurrent venue creation through random nodes; checks no acknowledged venue
    /// is lost, none appears twice or from nowhere, and all nodes agree.
    Catalog,
    /// Holds and releases of the seats of one 24-seat event through random nodes;
    /// checks per-seat linearizability and the final state.
    Holds,
}

/// Faults to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Nemesis {
    /// SIGKILL a random node or the leader of the workload's group (the catalog's,
    /// or the event's), restart it a little later.
    Kill,
    /// SIGSTOP such a node (it keeps its sockets but answers nothing: a long GC
    /// pause or a stalled VM), SIGCONT it a little later.
    Pause,
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct RunOpts {
    pub nodes: usize,
    pub workload: Workload,
    pub nemeses: Vec<Nemesis>,
    pub time: Duration,
    pub seed: u64,
    pub clients: usize,
    /// Where to write `<run>/history.jsonl` and `<run>/report.json`.
    pub out: Option<PathBuf>,
}

/// A run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub workload: Workload,
    pub nemeses: Vec<Nemesis>,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    pub faults: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<HoldsVerdict>,
    pub out_dir: Option<PathBuf>,
}

impl RunReport {
    /// Every checker of the run's workload passed.
    pub fn valid(&self) -> bool {
        self.catalog.as_ref().is_none_or(|c| c.valid) && self.holds.as_ref().is_none_or(|h| h.valid)
    }
}

/// Classifies a failed call: definitely not applied (`Fail`) or unknown (`Info`).
fn classify(e: &ClientError) -> OpType {
    match e {
        // The request never reached a node.
        ClientError::Transport(t) if t.is_connect() => OpType::Fail,
        // A business or validation refusal is a replicated (or pre-proposal) "no".
        ClientError::Api { status, .. } if (400..500).contains(status) => OpType::Fail,
        // Timeouts, lost replies, 503 NO_LEADER after forwarding: may have committed.
        _ => OpType::Info,
    }
}

/// Runs one test.
pub async fn run(opts: RunOpts) -> Result<RunReport> {
    let cluster = TestCluster::start(ClusterOpts {
        nodes: opts.nodes,
        request_timeout_ms: 2000,
        // Holds outlast the run (expiry is the clock nemesis's business), and the
        // clients' users are not throttled.
        extra_toml: [
            "[inventory]",
            "hold_seconds = 3600",
            "[rate_limits]",
            "reserve = { requests = 1000000, window_seconds = 60 }",
            "authenticated = { requests = 1000000, window_seconds = 60 }",
            "",
        ]
        .join("\n"),
        ..ClusterOpts::default()
    })?;
    cluster.wait_healthy(Duration::from_secs(60)).await?;
    cluster.wait_for_leader(0, Duration::from_secs(20)).await?;
    let setup = match opts.workload {
        Workload::Holds => Some(holds::setup(&cluster, opts.clients).await?),
        Workload::Catalog => None,
    };
    // The group whose leader the nemesis prefers.
    let target_group = setup.as_ref().map_or(0, |s| s.group_id);
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let ids = cluster.ids();
    let cluster = Arc::new(Mutex::new(cluster));
    let history = History::new();
    let deadline = Instant::now() + opts.time;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(4))
        .build()?;

    let clients: Vec<_> = (0..opts.clients)
        .map(|p| {
            let history = history.clone();
            let nodes: Vec<Client> = urls
                .iter()
                .map(|u| Client::with_http(http.clone(), u.clone()).with_admin_key(ADMIN_KEY))
                .collect();
            let mut rng =
                StdRng::seed_from_u64(opts.seed.wrapping_mul(1000).wrapping_add(p as u64));
            let setup = setup.clone();
            tokio::spawn(async move {
                if let Some(setup) = setup {
                    return holds::client(p, nodes, setup, history, rng, deadline).await;
                }
                let mut n = 0u64;
                while Instant::now() < deadline {
                    n += 1;
                    let name = format!("p{p}-{n}");
                    let client = &nodes[rng.gen_range(0..nodes.len())];
                    let value = json!({ "name": name });
                    history.record(p.to_string(), OpType::Invoke, "create-venue", value.clone());
                    let kind = match client
                        .create_venue(&NewVenue::sample(&name, 1, 2), Some(&name))
                        .await
                    {
                        Ok(_) => OpType::Ok,
                        Err(e) => classify(&e),
                    };
                    history.record(p.to_string(), kind, "create-venue", value);
                    if kind == OpType::Fail {
                        // The node is down: don't spin on it.
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            })
        })
        .collect();

    let nemesis = {
        let history = history.clone();
        let cluster = cluster.clone();
        let nemeses = opts.nemeses.clone();
        let mut rng = StdRng::seed_from_u64(opts.seed);
        tokio::spawn(async move {
            let mut faults = 0usize;
            if nemeses.is_empty() {
                return Ok::<usize, anyhow::Error>(0);
            }
            loop {
                let pause = Duration::from_millis(rng.gen_range(1000..3000));
                if Instant::now() + pause * 2 >= deadline {
                    return Ok(faults);
                }
                tokio::time::sleep(pause).await;
                let mut c = cluster.lock().await;
                let running = c.running();
                // Half the time the workload group's leader, else any node.
                let leader = match c.view(running[0]).await {
                    Ok(v) => v.group(target_group).and_then(|g| g.leader),
                    Err(_) => None,
                };
                let target = match leader {
                    Some(l) if rng.gen_bool(0.5) && running.contains(&l) => l,
                    _ => running[rng.gen_range(0..running.len())],
                };
                let fault = nemeses[rng.gen_range(0..nemeses.len())];
                let node = json!({ "node": target });
                let (start, stop) = match fault {
                    Nemesis::Kill => ("kill", "start"),
                    Nemesis::Pause => ("pause", "resume"),
                };
                history.record("nemesis", OpType::Invoke, start, node.clone());
                match fault {
                    Nemesis::Kill => c.kill(target)?,
                    Nemesis::Pause => c.pause(target)?,
                }
                history.record("nemesis", OpType::Info, start, node.clone());
                faults += 1;
                drop(c);
                tokio::time::sleep(Duration::from_millis(rng.gen_range(500..2000))).await;
                let mut c = cluster.lock().await;
                match fault {
                    Nemesis::Kill => c.start_node(target)?,
                    Nemesis::Pause => c.resume(target)?,
                }
                history.record("nemesis", OpType::Info, stop, node);
            }
        })
    };

    for c in clients {
        c.await?;
    }
    let faults = nemesis.await??;

    // Heal: every node runs; settle: all healthy and converged.
    let mut c = cluster.lock().await;
    for id in &ids {
        if !c.running().contains(id) {
            c.start_node(*id)?;
        }
    }
    c.wait_healthy(Duration::from_secs(60)).await?;
    c.wait_converged(0, Duration::from_secs(60)).await?;
    let ops = history.ops();
    let (catalog, holds) = match &setup {
        None => {
            let mut finals = BTreeMap::new();
            for id in &ids {
                let list = c.client(*id).venues().await?;
                let names: Vec<String> = list
                    .venues
                    .iter()
                    .filter_map(|v| v["name"].as_str().map(str::to_string))
                    .collect();
                finals.insert(*id, names);
            }
            (Some(check_catalog(&ops, &finals)), None)
        }
        Some(setup) => {
            c.wait_converged(setup.group_id, Duration::from_secs(60))
                .await?;
            (None, Some(holds::check(&c, setup, &history).await?))
        }
    };
    let count = |k: OpType| {
        ops.iter()
            .filter(|o| o.process != "nemesis" && o.kind == k)
            .count()
    };
    let mut report = RunReport {
        seed: opts.seed,
        workload: opts.workload,
        nemeses: opts.nemeses.clone(),
        ok: count(OpType::Ok),
        fail: count(OpType::Fail),
        info: count(OpType::Info),
        faults,
        catalog,
        holds,
        out_dir: None,
    };
    if let Some(out) = &opts.out {
        let dir = out.join(format!(
            "{}-{:?}-seed{}",
            chrono_like_now(),
            opts.workload,
            opts.seed
        ));
        std::fs::create_dir_all(&dir)?;
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
        history.write_jsonl(&mut f)?;
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
        std::fs::write(dir.join("logs.txt"), c.log_tails(usize::MAX))?;
        report.out_dir = Some(dir);
    }
    Ok(report)
}

/// Seconds since the Unix epoch, for run directory names.
fn chrono_like_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
