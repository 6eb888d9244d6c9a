//! `boxoffice-jepsen`: run a chaos test against a fresh local cluster, or check a
//! recorded holds history again.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use boxoffice_jepsen::history::Op;
use boxoffice_jepsen::linear::{check_holds, Expiry};
use boxoffice_jepsen::{run, Nemesis, RunOpts, Workload};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boxoffice-jepsen",
    version,
    about = "Chaos tests: real cluster, real faults, checked histories"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Start a cluster, drive clients, inject faults, heal, check.
    Run {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, value_enum, default_value = "catalog")]
        workload: Workload,
        /// Comma-separated faults.
        #[arg(long, value_enum, value_delimiter = ',', default_value = "kill")]
        nemesis: Vec<Nemesis>,
        /// Seconds of load and faults.
        #[arg(long, default_value_t = 30)]
        time: u64,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(long, default_value_t = 8)]
        clients: usize,
        /// Seat hold time of the cluster: short, so holds expire during the run.
        #[arg(long, default_value_t = 20)]
        hold_seconds: u64,
        /// Largest clock skew the clock nemesis applies, either way.
        #[arg(long, default_value_t = 3000)]
        max_skew_ms: u64,
        /// Snapshot every this many entries (a quarter kept behind it): small, so
        /// restarts and laggards go through snapshots.
        #[arg(long, default_value_t = 100)]
        snapshot_every: u64,
        #[arg(long, default_value = "runs")]
        out: PathBuf,
    },
    /// Check a recorded holds history (`history.jsonl`) for per-seat
    /// linearizability, with the run's hold time and clock skew.
    Check {
        history: PathBuf,
        #[arg(long, default_value_t = 20)]
        hold_seconds: u64,
        /// The run's largest clock skew (0 if it had no clock nemesis).
        #[arg(long, default_value_t = 0)]
        max_skew_ms: u64,
    },
}

fn check(
    history: &std::path::Path,
    hold_seconds: u64,
    max_skew_ms: u64,
) -> anyhow::Result<ExitCode> {
    let text = std::fs::read_to_string(history)?;
    let ops: Vec<Op> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let expiry = Expiry {
        hold_ms: hold_seconds * 1000,
        max_skew_ms,
    };
    let report = check_holds(&ops, expiry);
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(if report.valid {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn main() -> anyhow::Result<ExitCode> {
    let cmd = Cli::parse().cmd;
    if let Cmd::Check {
        history,
        hold_seconds,
        max_skew_ms,
    } = &cmd
    {
        return check(history, *hold_seconds, *max_skew_ms);
    }
    let Cmd::Run {
        nodes,
        workload,
        nemesis,
        time,
        seed,
        clients,
        hold_seconds,
        max_skew_ms,
        snapshot_every,
        out,
    } = cmd
    else {
        unreachable!("check returned above");
    };
    anyhow::ensure!((1..=200).contains(&nodes), "--nodes must be 1 to 200");
    // The cluster requires its nodes' clocks to agree within a minute (minted
    // request ids are remembered two minutes of stamped time: docs/design.md).
    anyhow::ensure!(
        max_skew_ms <= 30_000,
        "--max-skew-ms must be at most 30000: the cluster requires clocks within a minute"
    );
    // Partitions and full disks need the process in namespaces of its own,
    // entered while it has one thread (before the runtime starts), so every node
    // inherits them.
    if nemesis.contains(&Nemesis::Partition) {
        if let Err(e) = boxoffice_jepsen::netns::enter_private() {
            eprintln!("boxoffice-jepsen: no private network namespace: {e:#}");
        }
    }
    if nemesis.contains(&Nemesis::Disk) {
        if let Err(e) = boxoffice_jepsen::disk::enter_private() {
            eprintln!("boxoffice-jepsen: no private mount namespace: {e:#}");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(run(RunOpts {
        nodes,
        workload,
        nemeses: nemesis,
        time: Duration::from_secs(time),
        seed,
        clients,
        hold_seconds,
        max_skew_ms,
        snapshot_every,
        out: Some(out),
    }))?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.valid() {
        println!("VALID: no acknowledged write lost, none duplicated or invented, all nodes agree");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("INVALID: see the report above and the run directory");
        Ok(ExitCode::from(1))
    }
}
