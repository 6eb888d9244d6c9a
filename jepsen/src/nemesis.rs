//! The nemesis: faults injected on a seeded schedule, one at a time and each kind
//! in turn, each logged in the history as `start-<fault>` and `stop-<fault>` (process `nemesis`), and
//! [`heal`] to undo whatever is left at the end of a run.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;
use boxoffice_tests::TestCluster;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Mutex;

use crate::history::{History, OpType};
use crate::{disk, netns};

/// Faults to inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Nemesis {
    /// SIGKILL a random node or the leader of the workload's group (the catalog's,
    /// or the event's), restart it a little later.
    Kill,
    /// SIGSTOP such a node (it keeps its sockets but answers nothing: a long GC
    /// pause or a stalled VM), SIGCONT it a little later.
    Pause,
    /// Cut links with iptables inside the runner's private network namespace:
    /// majority/minority halves, the workload group's leader alone, or a bridge
    /// (two sides that see one middle node but not each other).
    Partition,
    /// Skew the wall clocks of some nodes (libfaketime, changed while they run) by
    /// up to the run's maximum skew either way, then set them right.
    Clock,
    /// Fill a node's data disk (a tmpfs of its own, in the runner's private mount
    /// namespace) until writes fail with ENOSPC; then free it and restart the node.
    Disk,
}

impl Nemesis {
    fn name(self) -> &'static str {
        match self {
            Nemesis::Kill => "kill",
            Nemesis::Pause => "pause",
            Nemesis::Partition => "partition",
            Nemesis::Clock => "clock",
            Nemesis::Disk => "disk",
        }
    }
}

/// Where libfaketime lives on Debian (any architecture).
pub fn libfaketime() -> Option<PathBuf> {
    let dirs = std::fs::read_dir("/usr/lib").ok()?;
    dirs.flatten()
        .map(|d| d.path().join("faketime/libfaketimeMT.so.1"))
        .find(|p| p.is_file())
}

/// The environment that puts a node's wall clock under the file `<dir>/node{id}`
/// (an offset such as `+1.5` or `-0.25` seconds, re-read every second). The
/// monotonic clock stays true: timers and timeouts run at real speed, what moves
/// is the time the node stamps and compares against.
pub fn clock_env(lib: &Path, dir: &Path) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".into(), lib.display().to_string()),
        (
            "FAKETIME_TIMESTAMP_FILE".into(),
            dir.join("node{id}").display().to_string(),
        ),
        ("FAKETIME_CACHE_DURATION".into(), "1".into()),
        ("FAKETIME_DONT_FAKE_MONOTONIC".into(), "1".into()),
    ]
}

/// Sets node `id`'s clock offset.
pub fn set_skew(dir: &Path, id: u64, skew_ms: i64) -> Result<()> {
    let secs = skew_ms as f64 / 1000.0;
    std::fs::write(dir.join(format!("node{id}")), format!("{secs:+.3}\n"))?;
    Ok(())
}

/// What the schedule needs to know about the run.
pub struct Schedule {
    pub nemeses: Vec<Nemesis>,
    pub deadline: Instant,
    /// The group whose leader faults prefer.
    pub target_group: u64,
    /// The clock files' directory, when the clock nemesis is on.
    pub clock_dir: Option<PathBuf>,
    pub max_skew_ms: u64,
    /// Each node's address (for partitions).
    pub ips: BTreeMap<u64, IpAddr>,
    /// Each node's data directory (for the disk nemesis).
    pub data_dirs: BTreeMap<u64, PathBuf>,
}

/// Injects faults until shortly before the deadline; returns how many of each.
pub async fn run(
    s: Schedule,
    cluster: Arc<Mutex<TestCluster>>,
    history: History,
    mut rng: StdRng,
) -> Result<BTreeMap<String, usize>> {
    let mut counts = BTreeMap::new();
    if s.nemeses.is_empty() {
        return Ok(counts);
    }
    let mut round = 0;
    loop {
        let pause = Duration::from_millis(rng.gen_range(1000..3000));
        if Instant::now() + pause * 2 >= s.deadline {
            return Ok(counts);
        }
        tokio::time::sleep(pause).await;
        // In turn, so that a short run sees every kind of fault.
        let fault = s.nemeses[round % s.nemeses.len()];
        round += 1;
        let (ids, leader) = {
            let c = cluster.lock().await;
            let running = c.running();
            let leader = match c.view(running[0]).await {
                Ok(v) => v
                    .group(s.target_group)
                    .and_then(|g| g.leader)
                    .filter(|l| running.contains(l)),
                Err(_) => None,
            };
            (running, leader)
        };
        // Half the time the workload group's leader, else any node.
        let target = match leader {
            Some(l) if rng.gen_bool(0.5) => l,
            _ => ids[rng.gen_range(0..ids.len())],
        };
        let value = match fault {
            Nemesis::Kill | Nemesis::Pause | Nemesis::Disk => json!({ "node": target }),
            Nemesis::Partition => partition_value(&ids, leader, &mut rng),
            Nemesis::Clock => {
                let k = rng.gen_range(1..=ids.len().div_ceil(2));
                let max = s.max_skew_ms as i64;
                let skews: BTreeMap<String, i64> = ids
                    .choose_multiple(&mut rng, k)
                    .map(|id| (id.to_string(), rng.gen_range(-max..=max)))
                    .collect();
                json!({ "skew_ms": skews })
            }
        };
        let name = fault.name();
        history.record(
            "nemesis",
            OpType::Info,
            &format!("start-{name}"),
            value.clone(),
        );
        {
            let mut c = cluster.lock().await;
            match fault {
                Nemesis::Kill => c.kill(target)?,
                Nemesis::Pause => c.pause(target)?,
                Nemesis::Partition => cut(&value, &s.ips)?,
                Nemesis::Clock => {
                    if let Some(dir) = &s.clock_dir {
                        for (id, skew) in value["skew_ms"].as_object().into_iter().flatten() {
                            set_skew(dir, id.parse()?, skew.as_i64().unwrap_or(0))?;
                        }
                    }
                }
                Nemesis::Disk => {
                    if let Some(dir) = s.data_dirs.get(&target) {
                        let mib = disk::fill(dir)?;
                        history.record(
                            "nemesis",
                            OpType::Info,
                            "disk-full",
                            json!({ "node": target, "ballast_mib": mib }),
                        );
                    }
                }
            }
        }
        *counts.entry(name.to_string()).or_default() += 1;
        let hold = match fault {
            Nemesis::Kill | Nemesis::Pause => rng.gen_range(500..2000),
            Nemesis::Partition => rng.gen_range(1000..4000),
            Nemesis::Clock => rng.gen_range(2000..6000),
            // The disk stays full until the node's writes fail and it stops
            // (RocksDB first uses up the log space it preallocated), or 15 s.
            Nemesis::Disk => 15_000,
        };
        let until = Instant::now() + Duration::from_millis(hold);
        while Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if fault == Nemesis::Disk && cluster.lock().await.node_mut(target).has_exited() {
                history.record(
                    "nemesis",
                    OpType::Info,
                    "node-stopped",
                    json!({ "node": target }),
                );
                break;
            }
        }
        {
            let mut c = cluster.lock().await;
            match fault {
                Nemesis::Kill => c.start_node(target)?,
                Nemesis::Pause => c.resume(target)?,
                Nemesis::Partition => netns::heal()?,
                Nemesis::Clock => reset_clocks(s.clock_dir.as_deref(), &ids)?,
                Nemesis::Disk => {
                    if let Some(dir) = s.data_dirs.get(&target) {
                        disk::free(dir)?;
                    }
                    // Whether it crashed or limps on, the node restarts on the freed
                    // disk, as an operator would do it.
                    if c.running().contains(&target) {
                        c.kill(target)?;
                    }
                    c.start_node(target)?;
                }
            }
        }
        history.record("nemesis", OpType::Info, &format!("stop-{name}"), value);
    }
}

/// Chooses a partition: `{"kind", "cuts": [[a, b], ...]}` (node pairs that
/// cannot talk).
fn partition_value(ids: &[u64], leader: Option<u64>, rng: &mut StdRng) -> Value {
    let mut shuffled = ids.to_vec();
    shuffled.shuffle(rng);
    let across = |a: &[u64], b: &[u64]| -> Vec<[u64; 2]> {
        a.iter()
            .flat_map(|x| b.iter().map(move |y| [*x, *y]))
            .collect()
    };
    let choice = rng.gen_range(0..3);
    let (kind, cuts) = match (choice, leader) {
        (0, Some(l)) => {
            let rest: Vec<u64> = ids.iter().copied().filter(|&n| n != l).collect();
            ("isolate-leader", across(&[l], &rest))
        }
        (1, _) if ids.len() >= 3 => {
            // [side A..., bridge, side C...]: A and C both see the bridge only.
            let half = (ids.len() - 1) / 2;
            let (a, rest) = shuffled.split_at(half);
            ("bridge", across(a, &rest[1..]))
        }
        _ => {
            let (minority, majority) = shuffled.split_at(ids.len() / 2);
            ("halves", across(minority, majority))
        }
    };
    json!({ "kind": kind, "cuts": cuts })
}

fn cut(value: &Value, ips: &BTreeMap<u64, IpAddr>) -> Result<()> {
    for pair in value["cuts"].as_array().into_iter().flatten() {
        let a = pair[0].as_u64().and_then(|n| ips.get(&n));
        let b = pair[1].as_u64().and_then(|n| ips.get(&n));
        if let (Some(a), Some(b)) = (a, b) {
            netns::cut(*a, *b)?;
        }
    }
    Ok(())
}

fn reset_clocks(dir: Option<&Path>, ids: &[u64]) -> Result<()> {
    if let Some(dir) = dir {
        for id in ids {
            set_skew(dir, *id, 0)?;
        }
    }
    Ok(())
}

/// Undoes every fault: restarts dead nodes, resumes paused ones, removes cuts,
/// sets clocks right.
pub fn heal(
    c: &mut TestCluster,
    clock_dir: Option<&Path>,
    data_dirs: &BTreeMap<u64, PathBuf>,
) -> Result<()> {
    netns::heal()?;
    reset_clocks(clock_dir, &c.ids())?;
    for dir in data_dirs.values() {
        disk::free(dir)?;
    }
    for id in c.ids() {
        if c.running().contains(&id) {
            // SIGCONT is harmless to a node that is not stopped.
            c.resume(id)?;
        } else {
            c.start_node(id)?;
        }
    }
    Ok(())
}
