//! `boxoffice`: the command-line client of a Boxoffice cluster.

use std::time::Duration;

use boxoffice_client::{bench, Client, NewVenue};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "boxoffice",
    version,
    about = "Command-line client of a Boxoffice cluster"
)]
struct Cli {
    /// REST URL of any node.
    #[arg(long, env = "BOXOFFICE_URL", default_value = "http://127.0.0.1:7001")]
    url: String,
    /// Operator key (X-Admin-Key) for admin commands.
    #[arg(long, env = "BOXOFFICE_ADMIN_KEY")]
    admin_key: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The node's health.
    Health,
    /// Nodes and groups as the node sees them (admin).
    Cluster,
    /// Venues in the catalog.
    #[command(subcommand)]
    Venues(VenueCmd),
    /// Load generators.
    #[command(subcommand)]
    Bench(BenchCmd),
}

#[derive(Subcommand)]
enum VenueCmd {
    /// List venues from the node's local catalog replica.
    List,
    /// Create a venue from a JSON body (admin).
    Create {
        /// The body of POST /v1/admin/venues.
        #[arg(long)]
        json: String,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Concurrent venue creation through every node: catalog write throughput.
    Catalog {
        /// REST URLs of the nodes to spread writes over (default: --url).
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        /// Concurrency levels, run one after the other.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        writers: Vec<usize>,
        /// Seconds per level.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let admin_key = || {
        cli.admin_key
            .clone()
            .ok_or_else(|| anyhow::anyhow!("this command needs --admin-key or BOXOFFICE_ADMIN_KEY"))
    };
    let client = Client::new(cli.url.clone());
    match &cli.cmd {
        Cmd::Health => print_json(&client.health().await?),
        Cmd::Cluster => {
            let c = client.with_admin_key(admin_key()?).cluster().await?;
            println!("node {} sees:", c.node_id);
            for n in &c.nodes {
                println!(
                    "  node {:>3}  {:<5} http={} peer={}",
                    n.node_id, n.state, n.http_addr, n.peer_addr
                );
            }
            for g in &c.groups {
                println!(
                    "  group {:>3}  leader={:?} term={} applied={:?} members={:?} learners={:?}",
                    g.group_id, g.leader, g.term, g.last_applied, g.members, g.learners
                );
            }
        }
        Cmd::Venues(VenueCmd::List) => {
            let list = client.venues().await?;
            print_json(
                &serde_json::json!({"venues": list.venues, "applied_index": list.applied_index}),
            );
        }
        Cmd::Venues(VenueCmd::Create { json }) => {
            let venue: NewVenue = serde_json::from_str(json)?;
            let created = client
                .with_admin_key(admin_key()?)
                .create_venue(&venue, None)
                .await?;
            println!(
                "venue {} created, capacity {}",
                created.venue_id, created.capacity
            );
        }
        Cmd::Bench(BenchCmd::Catalog {
            urls,
            writers,
            seconds,
        }) => {
            let urls = if urls.is_empty() {
                vec![cli.url.clone()]
            } else {
                urls.clone()
            };
            let opts = bench::CatalogOpts {
                urls,
                admin_key: admin_key()?,
                writers: writers.clone(),
                duration: Duration::from_secs(*seconds),
                progress: true,
            };
            let (results, verified) = bench::catalog(&opts).await?;
            println!(
                "catalog writes (venue creation) against {}",
                opts.urls.join(", ")
            );
            print!("{}", bench::table(&results));
            println!("correctness: all {verified} acknowledged venues present on every node");
        }
    }
    Ok(())
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}
