//! `boxoffice-jepsen`: run a chaos test against a fresh local cluster.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

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
        #[arg(long, default_value = "runs")]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let Cmd::Run {
        nodes,
        workload,
        nemesis,
        time,
        seed,
        clients,
        out,
    } = Cli::parse().cmd;
    let report = run(RunOpts {
        nodes,
        workload,
        nemeses: nemesis,
        time: Duration::from_secs(time),
        seed,
        clients,
        out: Some(out),
    })
    .await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    if report.valid() {
        println!("VALID: no acknowledged write lost, none duplicated or invented, all nodes agree");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("INVALID: see the report above and the run directory");
        Ok(ExitCode::from(1))
    }
}
