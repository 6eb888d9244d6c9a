//! The runner: cluster up, clients and nemesis for `time`, heal, settle, final
//! read, check, and write `history.jsonl` and `report.json`.

use std::collections::BTreeMap;
use std::net::IpAddr;
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
use crate::linear::Expiry;
use crate::nemesis::{self, Nemesis};
use crate::{disk, netns, plot};

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

/// A run's settings.
#[derive(Debug, Clone)]
pub struct RunOpts {
    pub nodes: usize,
    pub workload: Workload,
    pub nemeses: Vec<Nemesis>,
    pub time: Duration,
    pub seed: u64,
    pub clients: usize,
    /// How long a seat hold lasts (the cluster's `inventory.hold_seconds`): short
    /// enough that holds expire during a run.
    pub hold_seconds: u64,
    /// The clock nemesis skews clocks by at most this much either way.
    pub max_skew_ms: u64,
    /// Each group builds a snapshot every this many applied entries, and keeps a
    /// quarter of that behind it: small, so that restarted nodes open their groups
    /// from a snapshot plus the log after it, and laggards catch up by snapshot.
    pub snapshot_every: u64,
    /// Where to write `<run>/history.jsonl` and `<run>/report.json`.
    pub out: Option<PathBuf>,
}

/// A run's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub seed: u64,
    pub workload: Workload,
    pub nemeses: Vec<Nemesis>,
    pub nodes: usize,
    pub ok: usize,
    pub fail: usize,
    pub info: usize,
    /// Faults injected, by nemesis.
    pub faults: BTreeMap<String, usize>,
    /// Nemeses asked for that this machine cannot run, and why.
    pub unavailable: Vec<String>,
    /// Snapshots the nodes built and installed during the run (from their logs).
    pub snapshots: SnapshotCounts,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog: Option<CatalogReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub holds: Option<HoldsVerdict>,
    pub out_dir: Option<PathBuf>,
}

/// How often the run went through snapshots, counted from the nodes' logs.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct SnapshotCounts {
    pub built: usize,
    pub installed: usize,
}

impl SnapshotCounts {
    fn from_logs(logs: &str) -> Self {
        let count = |what: &str| logs.lines().filter(|l| l.contains(what)).count();
        Self {
            built: count("built snapshot"),
            installed: count("installed snapshot"),
        }
    }
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
    // What this machine can do: no nemesis is ever faked.
    let mut nemeses = opts.nemeses.clone();
    let mut unavailable = Vec::new();
    if nemeses.contains(&Nemesis::Partition) && !netns::is_private() {
        unavailable.push(
            "partition: the runner is not in a private network namespace (run the boxoffice-jepsen binary as root; it needs unshare(CLONE_NEWNET) and iptables)".to_string(),
        );
        nemeses.retain(|n| *n != Nemesis::Partition);
    }
    if nemeses.contains(&Nemesis::Disk) && !disk::is_private() {
        unavailable.push(
            "disk: the runner is not in a private mount namespace (run the boxoffice-jepsen binary as root; it needs unshare(CLONE_NEWNS) and tmpfs)".to_string(),
        );
        nemeses.retain(|n| *n != Nemesis::Disk);
    }
    let faketime = nemesis::libfaketime();
    if nemeses.contains(&Nemesis::Clock) && faketime.is_none() {
        unavailable.push("clock: libfaketime not found (scripts/setup installs faketime)".into());
        nemeses.retain(|n| *n != Nemesis::Clock);
    }
    for u in &unavailable {
        eprintln!("boxoffice-jepsen: nemesis unavailable, running without it: {u}");
    }
    let clock_dir = match (&faketime, nemeses.contains(&Nemesis::Clock)) {
        (Some(_), true) => Some(
            tempfile::Builder::new()
                .prefix("boxoffice-clock-")
                .tempdir()?,
        ),
        _ => None,
    };
    let mut env = Vec::new();
    if let (Some(lib), Some(dir)) = (&faketime, &clock_dir) {
        env = nemesis::clock_env(lib, dir.path());
        for id in 1..=opts.nodes as u64 {
            nemesis::set_skew(dir.path(), id, 0)?;
        }
    }
    // In the private namespace every node has an address of its own.
    let private = netns::is_private();
    let ips: BTreeMap<u64, IpAddr> = (1..=opts.nodes as u64)
        .map(|id| {
            (
                id,
                if private {
                    netns::node_ip(id)
                } else {
                    netns::CLIENT_IP
                },
            )
        })
        .collect();
    let mut cluster = TestCluster::configure(ClusterOpts {
        nodes: opts.nodes,
        request_timeout_ms: 2000,
        snapshot_logs_since_last: opts.snapshot_every.max(1),
        max_in_snapshot_log_to_keep: opts.snapshot_every / 4,
        hosts: ips.values().copied().collect(),
        env,
        // The clients' users are not throttled.
        extra_toml: [
            "[inventory]".to_string(),
            format!("hold_seconds = {}", opts.hold_seconds),
            "[rate_limits]".into(),
            "reserve = { requests = 1000000, window_seconds = 60 }".into(),
            "authenticated = { requests = 1000000, window_seconds = 60 }".into(),
            // Small memtables flush often, so a full disk bites within seconds
            // (RocksDB preallocates a write-ahead log as large as a memtable).
            "[storage]".into(),
            format!(
                "write_buffer_mib = {}",
                if opts.nemeses.contains(&Nemesis::Disk) {
                    1
                } else {
                    64
                }
            ),
            String::new(),
        ]
        .join("\n"),
        ..ClusterOpts::default()
    })?;
    // With the disk nemesis, every node's data lives on a small disk of its own.
    let data_dirs: BTreeMap<u64, PathBuf> = if nemeses.contains(&Nemesis::Disk) {
        cluster
            .ids()
            .into_iter()
            .map(|id| (id, cluster.dir.path().join(format!("data/node{id}"))))
            .collect()
    } else {
        BTreeMap::new()
    };
    for dir in data_dirs.values() {
        disk::mount_data_dir(dir)?;
    }
    for id in cluster.ids() {
        cluster.start_node(id)?;
    }
    cluster.wait_healthy(Duration::from_secs(60)).await?;
    cluster.wait_for_leader(0, Duration::from_secs(20)).await?;
    let setup = match opts.workload {
        Workload::Holds => Some(holds::setup(&cluster, opts.clients).await?),
        Workload::Catalog => None,
    };
    let urls: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    let ids = cluster.ids();
    let cluster = Arc::new(Mutex::new(cluster));
    let history = History::new();
    let deadline = Instant::now() + opts.time;
    let mut http = reqwest::Client::builder().timeout(Duration::from_secs(4));
    if private {
        http = http.local_address(netns::CLIENT_IP);
    }
    let http = http.build()?;

    let clients: Vec<_> = (0..opts.clients)
        .map(|p| {
            let history = history.clone();
            let nodes: Vec<Client> = urls
                .iter()
                .map(|u| Client::with_http(http.clone(), u.clone()).with_admin_key(ADMIN_KEY))
                .collect();
            let rng = StdRng::seed_from_u64(opts.seed.wrapping_mul(1000).wrapping_add(p as u64));
            let setup = setup.clone();
            tokio::spawn(async move {
                match setup {
                    Some(setup) => holds::client(p, nodes, setup, history, rng, deadline).await,
                    None => catalog_client(p, nodes, history, rng, deadline).await,
                }
            })
        })
        .collect();

    let schedule = nemesis::Schedule {
        nemeses: nemeses.clone(),
        deadline,
        target_group: setup.as_ref().map_or(0, |s| s.group_id),
        clock_dir: clock_dir.as_ref().map(|d| d.path().to_path_buf()),
        max_skew_ms: opts.max_skew_ms,
        ips,
        data_dirs: data_dirs.clone(),
    };
    let faults = tokio::spawn(nemesis::run(
        schedule,
        cluster.clone(),
        history.clone(),
        StdRng::seed_from_u64(opts.seed),
    ));
    for c in clients {
        c.await?;
    }
    let faults = faults.await?;

    // Heal (even if the nemesis failed), settle, read the final state and check.
    let mut c = cluster.lock().await;
    let checked = async {
        nemesis::heal(&mut c, clock_dir.as_ref().map(|d| d.path()), &data_dirs)?;
        let faults = faults?;
        c.wait_healthy(Duration::from_secs(60)).await?;
        c.wait_converged(0, Duration::from_secs(60)).await?;
        let checks = match &setup {
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
                (Some(check_catalog(&history.ops(), &finals)), None)
            }
            Some(setup) => {
                // The event group's replicas (not every node, past 3) agree.
                let view = c.view(ids[0]).await?;
                let members = view
                    .group(setup.group_id)
                    .map(|g| g.members.clone())
                    .unwrap_or_else(|| ids.clone());
                c.wait_group_converged(setup.group_id, &members, Duration::from_secs(60))
                    .await?;
                let expiry = Expiry {
                    hold_ms: opts.hold_seconds * 1000,
                    max_skew_ms: if nemeses.contains(&Nemesis::Clock) {
                        opts.max_skew_ms
                    } else {
                        0
                    },
                };
                (None, Some(holds::check(&c, setup, &history, expiry).await?))
            }
        };
        anyhow::Ok((faults, checks))
    }
    .await;
    let ops = history.ops();
    let logs = c.log_tails(usize::MAX);
    let snapshots = SnapshotCounts::from_logs(&logs);
    // The history, logs and pictures are written whatever happened.
    let dir = match &opts.out {
        Some(out) => {
            let dir = out.join(format!(
                "{}-{:?}-seed{}",
                chrono_like_now(),
                opts.workload,
                opts.seed
            ));
            std::fs::create_dir_all(&dir)?;
            let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("history.jsonl"))?);
            history.write_jsonl(&mut f)?;
            std::fs::write(dir.join("logs.txt"), &logs)?;
            plot::write_all(&ops, &dir)?;
            Some(dir)
        }
        None => None,
    };
    // Stop the nodes, then detach their disks so the temporary directory goes.
    for id in c.running() {
        c.kill(id)?;
    }
    for dir in data_dirs.values() {
        disk::unmount_data_dir(dir)?;
    }
    let (faults, (catalog, holds)) = checked.map_err(|e| match &dir {
        Some(d) => e.context(format!(
            "the run failed; its history and logs are in {}",
            d.display()
        )),
        None => e,
    })?;
    let count = |k: OpType| {
        ops.iter()
            .filter(|o| o.process != "nemesis" && !o.process.starts_with("final") && o.kind == k)
            .count()
    };
    let report = RunReport {
        seed: opts.seed,
        workload: opts.workload,
        nemeses,
        nodes: opts.nodes,
        ok: count(OpType::Ok),
        fail: count(OpType::Fail),
        info: count(OpType::Info),
        faults,
        unavailable,
        snapshots,
        catalog,
        holds,
        out_dir: dir.clone(),
    };
    if let Some(dir) = &dir {
        std::fs::write(dir.join("report.json"), serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report)
}

/// A `catalog` client until `deadline`: creates venues with unique names through
/// random nodes.
async fn catalog_client(
    p: usize,
    nodes: Vec<Client>,
    history: History,
    mut rng: StdRng,
    deadline: Instant,
) {
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
}

/// Seconds since the Unix epoch, for run directory names.
fn chrono_like_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
