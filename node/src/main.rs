//! `boxoffice-node`: runs one node of a cluster described by `cluster.toml`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use boxoffice_node::config::ClusterConfig;
use clap::{Parser, Subcommand};
use metrics_exporter_prometheus::PrometheusBuilder;

/// mimalloc instead of glibc malloc: allocation-heavy request paths (HTTP, JSON, gRPC)
/// spent ~20% of their CPU in glibc's malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "boxoffice-node",
    version,
    about = "Run one node of a Boxoffice cluster"
)]
struct Cli {
    /// The cluster file.
    #[arg(long, default_value = "cluster.toml")]
    config: PathBuf,
    /// This node's id in the cluster file.
    #[arg(long)]
    id: Option<u64>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Print the cluster file's nodes, one per line: id, REST address, peer address,
    /// data dir (tab-separated), then `run_dir` and `admin_key` lines (for scripts).
    Nodes,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,openraft=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match real_main(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            ExitCode::from(2)
        }
    }
}

fn real_main(cli: Cli) -> anyhow::Result<()> {
    let config = ClusterConfig::load(&cli.config)?;
    if let Some(Cmd::Nodes) = cli.cmd {
        let mut out = std::io::stdout().lock();
        for n in &config.nodes {
            writeln!(
                out,
                "{}\t{}\t{}\t{}",
                n.id,
                n.http_addr,
                n.peer_addr,
                config.data_dir(n).display()
            )?;
        }
        writeln!(
            out,
            "run_dir\t{}",
            config.base_dir.join(&config.run_dir).display()
        )?;
        writeln!(out, "admin_key\t{}", config.admin_key)?;
        return Ok(());
    }
    let id = cli.id.ok_or_else(|| {
        anyhow::anyhow!(
            "--id is required to run a node (one of the ids in {})",
            cli.config.display()
        )
    })?;
    let node = config.node(id)?.clone();
    let prometheus = PrometheusBuilder::new()
        .set_buckets(&[
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])?
        .install_recorder()?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async move {
        let http = tokio::net::TcpListener::bind(node.http_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind REST address {}: {e}", node.http_addr))?;
        let peer = tokio::net::TcpListener::bind(node.peer_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind peer address {}: {e}", node.peer_addr))?;
        boxoffice_node::server::run(config, id, http, peer, prometheus, shutdown_signal()).await?;
        Ok(())
    })
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
