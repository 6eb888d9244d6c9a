//! `boxoffice`: the command-line client of a Boxoffice cluster.

use std::time::Duration;

use boxoffice_client::bench_targets::{Boxoffice, Etcd, EtcdApi, Postgres, Target};
use boxoffice_client::{
    bench, bench_holds, bench_load, bench_onsale, bench_queue, bench_realtime, Client, NewVenue,
};

/// mimalloc instead of glibc malloc: allocation-heavy request paths (HTTP, JSON, gRPC)
/// spent ~20% of their CPU in glibc's malloc/free.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
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
    /// Create many events (catalog write, placement, the group's first write).
    Events {
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        #[arg(long, default_value_t = 1000)]
        count: u64,
        /// Events created at a time.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
    /// Clients race to hold random adjacent seat pairs of one event until all are
    /// held; checks every acknowledged hold at the end. The same workload runs
    /// against PostgreSQL or etcd for comparison (`scripts/bench-peers`).
    Holds {
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        /// The system to drive.
        #[arg(long, value_enum, default_value = "boxoffice")]
        target: HoldsTarget,
        /// PostgreSQL connection string (for `--target postgres`).
        #[arg(long, default_value = "host=127.0.0.1 user=postgres dbname=postgres")]
        postgres: String,
        /// etcd client URLs (for `--target etcd`).
        #[arg(long, value_delimiter = ',', default_value = "http://127.0.0.1:2379")]
        etcd: Vec<String>,
        /// How to talk to etcd (for `--target etcd`): its gRPC API, as its own
        /// client does, or the JSON gateway.
        #[arg(long, value_enum, default_value = "grpc")]
        etcd_api: EtcdApi,
        /// Also write the reports as a JSON array here.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Seats of the event (even).
        #[arg(long, default_value_t = 20_000)]
        seats: u32,
        /// Concurrency levels, each on a fresh event.
        #[arg(long, value_delimiter = ',', default_value = "64")]
        clients: Vec<usize>,
        /// Time limit per level, in seconds.
        #[arg(long, default_value_t = 120)]
        seconds: u64,
        /// The cluster's per-user ticket limit (inventory.max_tickets_per_user).
        #[arg(long, default_value_t = 8)]
        max_tickets: u32,
    },
    /// On-sale traffic: seat maps, event details, searches and holds in on-sale
    /// proportions from C fans; per-operation throughput and latency.
    Mixed {
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        #[arg(long, default_value_t = 20_000)]
        seats: u32,
        #[arg(long, default_value_t = 64)]
        clients: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
    },
    /// The waiting room at on-sale: N fans join one event's queue (a burst from
    /// `joiners` clients), then their status is polled open-loop at `poll_rate`.
    Queue {
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        #[arg(long, default_value_t = 100_000)]
        fans: usize,
        #[arg(long, default_value_t = 128)]
        joiners: usize,
        /// Status polls per second, spread over every node.
        #[arg(long, default_value_t = 5_000.0)]
        poll_rate: f64,
        #[arg(long, default_value_t = 20)]
        poll_seconds: u64,
        /// The event's admission rate (fans let in per second).
        #[arg(long, default_value_t = 10)]
        admission_per_second: u32,
        /// Write the report as JSON here too.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// WebSocket subscribers on one event across every node during the holds
    /// storm: delivery latency, node memory per connection, and hold throughput
    /// against the same storm with nobody watching.
    Realtime {
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        #[arg(long, default_value_t = 10_000)]
        subscribers: usize,
        #[arg(long, default_value_t = 20_000)]
        seats: u32,
        /// Clients of the holds storm.
        #[arg(long, default_value_t = 64)]
        clients: usize,
        /// Time limit of each storm, in seconds.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// The cluster's per-user ticket limit (inventory.max_tickets_per_user).
        #[arg(long, default_value_t = 8)]
        max_tickets: u32,
    },
    /// The fan journey at on-sale: F fans join a waiting room at once, wait on
    /// the WebSocket for their access token, hold a pair of seats and buy it;
    /// checks the seat map against the confirmed orders.
    Onsale {
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        #[arg(long, default_value_t = 3_000)]
        fans: usize,
        /// Seats of the event (even: fans buy pairs).
        #[arg(long, default_value_t = 2_000)]
        seats: u32,
        /// Joins in flight at once.
        #[arg(long, default_value_t = 128)]
        joiners: usize,
        #[arg(long, default_value_t = 100)]
        admission_per_second: u32,
        #[arg(long, default_value_t = 200)]
        max_active_shoppers: u32,
        /// Seconds a fan waits to be let in before giving up.
        #[arg(long, default_value_t = 300)]
        patience: u64,
    },
    /// Open-loop holds stepped from half to three times the measured capacity;
    /// goodput, served p99, and how fast the excess is refused.
    Overload {
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        #[arg(long, default_value_t = 20_000)]
        seats: u32,
        /// Fans the requests come from.
        #[arg(long, default_value_t = 256)]
        users: usize,
        /// Multiples of the capacity to offer, one step each.
        #[arg(long, value_delimiter = ',', default_value = "0.5,1,1.5,2,3")]
        steps: Vec<f64>,
        /// Seconds per step.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Closed-loop clients of the capacity probe: enough to saturate the
        /// cluster (64 left this 2-core machine a third idle).
        #[arg(long, default_value_t = 256)]
        probe_clients: usize,
        /// Holds per second the steps are multiples of, instead of probing: runs to
        /// be compared then offer the same rates.
        #[arg(long, value_parser = positive_rate)]
        capacity: Option<f64>,
    },
    /// Status writes over 1 event group versus many, under the same client load.
    Groups {
        #[arg(long, value_delimiter = ',')]
        urls: Vec<String>,
        /// Numbers of groups to spread the writes over, run one after the other.
        #[arg(long, value_delimiter = ',', default_value = "1,100")]
        groups: Vec<usize>,
        #[arg(long, default_value_t = 64)]
        writers: usize,
        /// Seconds per run.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
}

/// The systems `bench holds` drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum HoldsTarget {
    Boxoffice,
    Postgres,
    Etcd,
}

/// Registers the users a holds storm needs: enough to hold every pair within the
/// per-user limit, plus one per client so none waits; their session tokens.
async fn storm_users(
    pool: &[Client],
    seats: u32,
    clients: usize,
    holds_per_user: u32,
) -> anyhow::Result<Vec<String>> {
    let users = (seats / 2).div_ceil(holds_per_user) as usize + clients;
    fans(pool, users, 16).await
}

/// Registers `n` fresh fans, `concurrency` at a time; their session tokens.
async fn fans(pool: &[Client], n: usize, concurrency: usize) -> anyhow::Result<Vec<String>> {
    println!("registering {n} fans ...");
    let tag = uuid::Uuid::new_v4().simple().to_string();
    bench_holds::register_users_at(pool, n, &tag[..8], concurrency).await
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if matches!(cli.cmd, Cmd::Bench(_)) {
        // Before the runtime's threads exist, so that they inherit it.
        println!("{}", bench::raise_priority());
    }
    tokio::runtime::Runtime::new()?.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
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
                let clock = n
                    .clock_offset_ms
                    .map(|ms| format!(" clock={ms:+}ms"))
                    .unwrap_or_default();
                println!(
                    "  node {:>3}  {:<5} http={} peer={}{clock}",
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
            let urls = or_default(urls, &cli.url);
            let (results, verified) = bench::catalog(
                &urls,
                &admin_key()?,
                writers,
                Duration::from_secs(*seconds),
                true,
            )
            .await?;
            println!(
                "catalog writes (venue creation) against {}",
                urls.join(", ")
            );
            print!("{}", bench::table(&results));
            println!("correctness: all {verified} acknowledged venues present on every node");
        }
        Cmd::Bench(BenchCmd::Events {
            urls,
            count,
            concurrency,
        }) => {
            let urls = or_default(urls, &cli.url);
            let (result, ids) =
                bench::events(&urls, &admin_key()?, *count, *concurrency, true).await?;
            println!("event creation against {}", urls.join(", "));
            print!("{}", bench::table(std::slice::from_ref(&result)));
            println!(
                "{} events created in {:.1} s",
                ids.len(),
                result.elapsed.as_secs_f64()
            );
        }
        Cmd::Bench(BenchCmd::Holds {
            urls,
            target,
            postgres,
            etcd,
            etcd_api,
            json,
            seats,
            clients,
            seconds,
            max_tickets,
        }) => {
            let urls = or_default(urls, &cli.url);
            let holds_per_user = (*max_tickets / 2).max(1);
            let mut tokens = Vec::new();
            let mut pool = None;
            if *target == HoldsTarget::Boxoffice {
                let most = clients.iter().copied().max().unwrap_or(1);
                let p = bench::clients(&urls, &admin_key()?)?;
                tokens = storm_users(&p, *seats, most, holds_per_user).await?;
                pool = Some(p);
            }
            let limits = match &pool {
                Some(p) => Some(bench::rate_limits_note(p).await),
                None => None,
            };
            let mut reports = Vec::new();
            for &c in clients {
                let t = match (target, &pool) {
                    (HoldsTarget::Boxoffice, Some(p)) => Target::Boxoffice(
                        Boxoffice::setup(p.clone(), *seats, &tokens, holds_per_user).await?,
                    ),
                    (HoldsTarget::Postgres, _) => {
                        Target::Postgres(Postgres::setup(postgres, c, *seats).await?)
                    }
                    (HoldsTarget::Etcd, _) => Target::Etcd(Etcd::setup(etcd, *etcd_api).await?),
                    (HoldsTarget::Boxoffice, None) => unreachable!("users registered above"),
                };
                let opts = bench_holds::HoldsOptions {
                    seats: *seats,
                    clients: c,
                    limit: Duration::from_secs(*seconds),
                };
                let mut report = bench_holds::holds(t, opts, true).await?;
                report.rate_limits = limits.clone();
                reports.push(report);
            }
            let against = match target {
                HoldsTarget::Boxoffice => urls.join(", "),
                HoldsTarget::Postgres => postgres.clone(),
                HoldsTarget::Etcd => format!("{} ({etcd_api:?})", etcd.join(", ")),
            };
            println!("seat holds: {seats} seats, random adjacent pairs, against {against}");
            print!("{}", bench_holds::table(&reports));
            if let Some(l) = &limits {
                println!("{l}");
            }
            if let Some(path) = json {
                let all: Vec<_> = reports.iter().map(|r| r.to_json()).collect();
                std::fs::write(path, serde_json::to_vec_pretty(&all)?)?;
            }
            println!(
                "correctness: no pair acknowledged twice; every acknowledged hold owns its seats and nothing else is held{}",
                if *target == HoldsTarget::Boxoffice { " (ACTIVE, and RESERVED on every node)" } else { "" }
            );
        }
        Cmd::Bench(BenchCmd::Realtime {
            urls,
            subscribers,
            seats,
            clients,
            seconds,
            max_tickets,
        }) => {
            let urls = or_default(urls, &cli.url);
            let holds_per_user = (*max_tickets / 2).max(1);
            let pool = bench::clients(&urls, &admin_key()?)?;
            let tokens = storm_users(&pool, *seats, *clients, holds_per_user).await?;
            let limits = bench::rate_limits_note(&pool).await;
            let opts = bench_realtime::RealtimeOptions {
                subscribers: *subscribers,
                holds: bench_holds::HoldsOptions {
                    seats: *seats,
                    clients: *clients,
                    limit: Duration::from_secs(*seconds),
                },
            };
            let report =
                bench_realtime::realtime(pool, &urls, &tokens, holds_per_user, opts, true).await?;
            println!(
                "realtime: {subscribers} subscribers on one event of {seats} seats, holds storm of {clients} clients, against {}",
                urls.join(", ")
            );
            print!("{}", bench_realtime::table(&report));
            println!("{limits}");
        }
        Cmd::Bench(BenchCmd::Onsale {
            urls,
            fans,
            seats,
            joiners,
            admission_per_second,
            max_active_shoppers,
            patience,
        }) => {
            let urls = or_default(urls, &cli.url);
            let pool = bench::clients(&urls, &admin_key()?)?;
            let tokens = self::fans(&pool, *fans, 16).await?;
            let limits = bench::rate_limits_note(&pool).await;
            let opts = bench_onsale::OnsaleOptions {
                seats: *seats,
                fans: *fans,
                joiners: *joiners,
                admission_per_second: *admission_per_second,
                max_active_shoppers: *max_active_shoppers,
                patience: Duration::from_secs(*patience),
            };
            let report = bench_onsale::onsale(pool, &urls, tokens, opts).await?;
            println!("on-sale against {}", urls.join(", "));
            print!("{}", bench_onsale::table(&report));
            println!("{limits}");
            anyhow::ensure!(report.ok, "the on-sale's check failed");
        }
        Cmd::Bench(BenchCmd::Mixed {
            urls,
            seats,
            clients,
            seconds,
        }) => {
            let urls = or_default(urls, &cli.url);
            let (pool, tokens, event) =
                bench_load::fans_and_event(&urls, &admin_key()?, *clients, *seats, "mixed").await?;
            let limits = bench::rate_limits_note(&pool).await;
            let report = bench_load::mixed(pool, event, tokens, *seconds).await?;
            println!(
                "on-sale mix: {seats}-seat event, {clients} fans, {seconds} s, against {}",
                urls.join(", ")
            );
            print!("{}", bench_load::mixed_table(&report));
            println!("{limits}");
        }
        Cmd::Bench(BenchCmd::Queue {
            urls,
            fans,
            joiners,
            poll_rate,
            poll_seconds,
            admission_per_second,
            json,
        }) => {
            let urls = or_default(urls, &cli.url);
            let pool = bench::clients(&urls, &admin_key()?)?;
            let started = std::time::Instant::now();
            let tokens = self::fans(&pool, *fans, 128).await?;
            let limits = bench::rate_limits_note(&pool).await;
            println!(
                "registered {fans} users in {:.1} s",
                started.elapsed().as_secs_f64()
            );
            let opts = bench_queue::QueueOptions {
                joiners: *joiners,
                poll_rate: *poll_rate,
                poll_seconds: *poll_seconds,
                admission_per_second: *admission_per_second,
            };
            let report = bench_queue::queue(pool, tokens, opts).await?;
            println!("waiting room: one event, against {}", urls.join(", "));
            print!("{}", bench_queue::table(&report));
            println!("{limits}");
            if !report.join_failures.is_empty() {
                println!("failed joins by kind: {:?}", report.join_failures);
            }
            println!("correctness: {}", report.check);
            if let Some(path) = json {
                let j = &report.joins;
                let p = &report.polls;
                let ms = |q: f64| p.hist.value_at_quantile(q) as f64 / 1000.0;
                let doc = serde_json::json!({
                    "fans": report.fans,
                    "joins_per_s": j.throughput(), "join_errors": j.errors,
                    "join_p50_ms": j.p50_ms, "join_p99_ms": j.p99_ms,
                    "polls_offered_per_s": p.offered, "polls_ok": p.ok, "poll_errors": p.errors,
                    "polls_per_s": p.ok as f64 / p.elapsed.as_secs_f64(),
                    "poll_p50_ms": ms(0.5), "poll_p99_ms": ms(0.99), "per_node": p.per_node,
                    "join_failures": report.join_failures, "check": report.check,
                });
                std::fs::write(path, serde_json::to_vec_pretty(&doc)?)?;
            }
        }
        Cmd::Bench(BenchCmd::Overload {
            urls,
            seats,
            users,
            steps,
            seconds,
            probe_clients,
            capacity,
        }) => {
            let urls = or_default(urls, &cli.url);
            let (pool, tokens, event) =
                bench_load::fans_and_event(&urls, &admin_key()?, *users, *seats, "overload")
                    .await?;
            let limits = bench::rate_limits_note(&pool).await;
            let capacity = match capacity {
                Some(rate) => bench_load::Capacity::Given(*rate),
                None => bench_load::Capacity::Probe(*probe_clients),
            };
            let report =
                bench_load::overload(pool, event, tokens, steps, *seconds, capacity).await?;
            println!(
                "overload: open-loop holds of random pairs (each released after), {seconds} s per step, against {}",
                urls.join(", ")
            );
            print!("{}", bench_load::overload_table(&report));
            println!("{limits}");
        }
        Cmd::Bench(BenchCmd::Groups {
            urls,
            groups,
            writers,
            seconds,
        }) => {
            let urls = or_default(urls, &cli.url);
            let results = bench::groups(
                &urls,
                &admin_key()?,
                groups,
                *writers,
                Duration::from_secs(*seconds),
                true,
            )
            .await?;
            println!(
                "event-group writes (sale status) against {}",
                urls.join(", ")
            );
            print!("{}", bench::table(&results));
        }
    }
    Ok(())
}

/// A rate for `--capacity`: a finite number above zero.
fn positive_rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 => Ok(r),
        _ => Err(format!("{s:?} is not a rate above zero")),
    }
}

fn or_default(urls: &[String], url: &str) -> Vec<String> {
    if urls.is_empty() {
        vec![url.to_string()]
    } else {
        urls.to_vec()
    }
}

fn print_json(v: &serde_json::Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_capacity_is_a_finite_rate_above_zero() {
        assert_eq!(positive_rate("2500"), Ok(2500.0));
        assert_eq!(positive_rate("0.5"), Ok(0.5));
        for bad in ["0", "-3", "NaN", "inf", "", "fast"] {
            assert!(positive_rate(bad).is_err(), "{bad:?} accepted");
        }
        let cli = Cli::try_parse_from(["boxoffice", "bench", "overload", "--capacity", "3000"])
            .expect("parses");
        assert!(matches!(
            cli.cmd,
            Cmd::Bench(BenchCmd::Overload { capacity: Some(c), .. }) if c == 3000.0
        ));
        assert!(
            Cli::try_parse_from(["boxoffice", "bench", "overload", "--capacity", "0"]).is_err()
        );
    }
}
