//! # boxoffice-tests
//!
//! [`TestCluster`]: real `boxoffice-node` processes on free loopback ports, with a
//! temporary config and data dirs, logs to files, fault knobs (SIGKILL, SIGTERM,
//! restart), waits on observable state (never sleeps), and cleanup by pid on drop —
//! with the tail of every node's log printed when a test fails.
//!
//! The node binary is found next to the test binary's target dir (`target/<profile>/`)
//! or at `$BOXOFFICE_NODE_BIN`; `scripts/test` builds it before running the tests.
//!
//! [`stripe_mock`]: a Stripe-compatible server for the payment tests.

pub mod stripe_mock;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use boxoffice_client::{sample_event, Client, ClusterView, EventCreated, NewVenue};

pub use boxoffice_client;

/// The admin key every test cluster uses.
pub const ADMIN_KEY: &str = "test-admin-key";

/// Knobs of a test cluster's `cluster.toml`.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub nodes: usize,
    pub replication_factor: usize,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_logs_since_last: u64,
    pub max_in_snapshot_log_to_keep: u64,
    pub quiesce_after_ms: u64,
    pub liveness_interval_ms: u64,
    pub peer_down_after_ms: u64,
    /// `raft.max_queue_wait_ms`; high by default for the same reason as
    /// `target_latency_ms`.
    pub max_queue_wait_ms: u64,
    pub request_timeout_ms: u64,
    pub session_ttl_seconds: u64,
    pub max_in_flight: usize,
    /// The nodes' admission target (`api.target_latency_ms`). High by default: test
    /// clusters run debug builds beside other tests on two cores, and a test that
    /// is not about overload must not see its requests shed; the adaptive limit
    /// has its own unit tests.
    pub target_latency_ms: u64,
    pub require_api_key: bool,
    /// Appended to the generated cluster.toml (e.g. a `[rate_limits]` table).
    pub extra_toml: String,
    /// Node `i` (from 0) listens on `hosts[i]`; nodes past the list's end, or all
    /// when it is empty, on 127.0.0.1. Loopback addresses only.
    pub hosts: Vec<IpAddr>,
    /// Extra environment of every node process; `{id}` in a value becomes the
    /// node's id (e.g. a per-node libfaketime file).
    pub env: Vec<(String, String)>,
}

impl Default for ClusterOpts {
    fn default() -> Self {
        Self {
            nodes: 3,
            replication_factor: 3,
            heartbeat_ms: 100,
            election_timeout_min_ms: 400,
            election_timeout_max_ms: 800,
            snapshot_logs_since_last: 5000,
            max_in_snapshot_log_to_keep: 1000,
            quiesce_after_ms: 3000,
            liveness_interval_ms: 250,
            peer_down_after_ms: 1000,
            max_queue_wait_ms: 60_000,
            request_timeout_ms: 5000,
            session_ttl_seconds: 3600,
            max_in_flight: 1024,
            target_latency_ms: 60_000,
            require_api_key: false,
            extra_toml: String::new(),
            hosts: Vec::new(),
            env: Vec::new(),
        }
    }
}

/// One node process of a test cluster.
pub struct TestNode {
    pub id: u64,
    pub http_addr: SocketAddr,
    pub peer_addr: SocketAddr,
    pub log: PathBuf,
    child: Option<Child>,
}

impl TestNode {
    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Whether the process was started and has exited on its own since (it stays
    /// "running" until killed or restarted, so its exit status is not lost).
    pub fn has_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }
}

/// A cluster of real node processes on loopback.
pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub nodes: Vec<TestNode>,
    bin: PathBuf,
    env: Vec<(String, String)>,
}

/// The `boxoffice-node` binary to spawn.
pub fn node_binary() -> Result<PathBuf> {
    if let Ok(p) = std::env::var("BOXOFFICE_NODE_BIN") {
        return Ok(PathBuf::from(p));
    }
    // Test binaries live in target/<profile>/deps/, other binaries (boxoffice-jepsen)
    // in target/<profile>/: look beside the executable and one level up.
    let exe = std::env::current_exe()?;
    let candidates: Vec<PathBuf> = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join("boxoffice-node"))
        .collect();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        anyhow!(
            "boxoffice-node not found at {candidates:?}: build it first (`cargo build -p boxoffice-node`, which scripts/test does) or set BOXOFFICE_NODE_BIN"
        )
    })
}

/// Free loopback addresses: all bound at once, then released together.
pub fn free_addrs(n: usize) -> Result<Vec<SocketAddr>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| bind_listen_port(IpAddr::V4(Ipv4Addr::LOCALHOST)))
        .collect::<Result<_>>()?;
    listeners.iter().map(|l| Ok(l.local_addr()?)).collect()
}

/// A listener on a free port of `host` below the kernel's ephemeral range. A port
/// the kernel hands out itself (`bind(0)`) is an ephemeral one, and once the node
/// that listened on it is killed, any outgoing connection on the machine may take
/// it as its local port, and the node's restart fails with "address in use" (seen
/// in `t56_hold_contention` on CI). Falls back to `bind(0)` when the ephemeral
/// range leaves no room below it.
fn bind_listen_port(host: IpAddr) -> Result<TcpListener> {
    use rand::Rng;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    const LOWEST: u16 = 10_000;
    if ephemeral_low > LOWEST + 1000 {
        let mut rng = rand::thread_rng();
        for _ in 0..200 {
            if let Ok(l) = TcpListener::bind((host, rng.gen_range(LOWEST..ephemeral_low))) {
                return Ok(l);
            }
        }
    }
    Ok(TcpListener::bind((host, 0))?)
}

impl TestCluster {
    /// Writes a config for `opts.nodes` nodes and starts them all.
    pub fn start(opts: ClusterOpts) -> Result<Self> {
        let mut c = Self::configure(opts)?;
        for id in c.ids() {
            c.start_node(id)?;
        }
        Ok(c)
    }

    /// Starts the cluster and waits until every node is healthy and the catalog has a
    /// leader; returns the cluster and that leader.
    pub async fn start_ready(opts: ClusterOpts) -> Result<(Self, u64)> {
        let c = Self::start(opts)?;
        c.wait_healthy(Duration::from_secs(60)).await?;
        let leader = c.wait_for_leader(0, Duration::from_secs(20)).await?;
        Ok((c, leader))
    }

    /// A running node other than `id` (a follower, when `id` leads).
    pub fn other_than(&self, id: u64) -> u64 {
        self.running()
            .into_iter()
            .find(|&n| n != id)
            .expect("another running node")
    }

    /// A 20-seat event (one "Floor" section of 2 rows of 10) on sale, with the
    /// given waiting room (or none), created through nodes 1, 2 and 3 in turn.
    pub async fn event_on_sale(
        &self,
        name: &str,
        queue: Option<serde_json::Value>,
    ) -> Result<EventCreated> {
        let venue = self
            .client(1)
            .create_venue(&NewVenue::sample(name, 2, 10), None)
            .await?;
        let mut spec = sample_event(name, &venue.venue_id, &["Floor"]);
        if let Some(q) = queue {
            spec["queue"] = q;
        }
        let e = self.client(2).create_event(&spec).await?;
        self.client(3)
            .set_event_status(&e.event_id, "ON_SALE")
            .await?;
        Ok(e)
    }

    /// The ids of the venues in node `id`'s local catalog.
    pub async fn venue_ids(&self, id: u64) -> Result<BTreeSet<String>> {
        Ok(self
            .client(id)
            .venues()
            .await?
            .venues
            .iter()
            .filter_map(|v| v["venue_id"].as_str().map(str::to_string))
            .collect())
    }

    /// Writes the config without starting any node.
    pub fn configure(opts: ClusterOpts) -> Result<Self> {
        let bin = node_binary()?;
        let dir = tempfile::Builder::new()
            .prefix("boxoffice-test-")
            .tempdir()?;
        // Every port bound at once (so none is handed out twice), then released.
        let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let listeners: Vec<TcpListener> = (0..opts.nodes * 2)
            .map(|k| {
                let host = opts.hosts.get(k / 2).copied().unwrap_or(localhost);
                anyhow::ensure!(
                    host.is_loopback(),
                    "test hosts live on loopback, not {host}"
                );
                bind_listen_port(host)
            })
            .collect::<Result<_>>()?;
        let addrs: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<_>>()?;
        drop(listeners);
        let mut toml = format!(
            "cluster_name = \"test\"\nreplication_factor = {}\nadmin_key = \"{ADMIN_KEY}\"\n\n",
            opts.replication_factor.min(opts.nodes)
        );
        let mut nodes = Vec::new();
        for i in 0..opts.nodes {
            let id = i as u64 + 1;
            let (http_addr, peer_addr) = (addrs[2 * i], addrs[2 * i + 1]);
            writeln!(
                toml,
                "[[nodes]]\nid = {id}\nhttp_addr = \"{http_addr}\"\npeer_addr = \"{peer_addr}\"\ndata_dir = \"data/node{id}\"\n"
            )?;
            nodes.push(TestNode {
                id,
                http_addr,
                peer_addr,
                log: dir.path().join(format!("node{id}.log")),
                child: None,
            });
        }
        writeln!(
            toml,
            "[raft]\nheartbeat_ms = {}\nelection_timeout_min_ms = {}\nelection_timeout_max_ms = {}\nsnapshot_logs_since_last = {}\nmax_in_snapshot_log_to_keep = {}\nquiesce_after_ms = {}\nliveness_interval_ms = {}\npeer_down_after_ms = {}\nmax_queue_wait_ms = {}\n\n[api]\nrequest_timeout_ms = {}\nsession_ttl_seconds = {}\nmax_in_flight = {}\ntarget_latency_ms = {}\nrequire_api_key = {}\n\n{}",
            opts.heartbeat_ms,
            opts.election_timeout_min_ms,
            opts.election_timeout_max_ms,
            opts.snapshot_logs_since_last,
            opts.max_in_snapshot_log_to_keep,
            opts.quiesce_after_ms,
            opts.liveness_interval_ms,
            opts.peer_down_after_ms,
            opts.max_queue_wait_ms,
            opts.request_timeout_ms,
            opts.session_ttl_seconds,
            opts.max_in_flight,
            opts.target_latency_ms,
            opts.require_api_key,
            opts.extra_toml,
        )?;
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, toml)?;
        Ok(Self {
            dir,
            config_path,
            nodes,
            bin,
            env: opts.env,
        })
    }

    pub fn ids(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    pub fn node(&self, id: u64) -> &TestNode {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .expect("node id of this cluster")
    }

    pub fn node_mut(&mut self, id: u64) -> &mut TestNode {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .expect("node id of this cluster")
    }

    /// A client of node `id` with the admin key.
    pub fn client(&self, id: u64) -> Client {
        Client::new(self.node(id).url()).with_admin_key(ADMIN_KEY)
    }

    /// Ids of the nodes whose process runs.
    pub fn running(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id)
            .collect()
    }

    /// Starts node `id` (logs append to its log file).
    pub fn start_node(&mut self, id: u64) -> Result<()> {
        let bin = self.bin.clone();
        let config = self.config_path.clone();
        let env: Vec<(String, String)> = self
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.replace("{id}", &id.to_string())))
            .collect();
        let node = self.node_mut(id);
        anyhow::ensure!(node.child.is_none(), "node {id} is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)?;
        let child = Command::new(bin)
            .arg("--config")
            .arg(config)
            .arg("--id")
            .arg(id.to_string())
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info,openraft=warn".into()),
            )
            .envs(env)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawn node {id}"))?;
        node.child = Some(child);
        Ok(())
    }

    /// SIGKILL: the node gets no chance to flush anything.
    pub fn kill(&mut self, id: u64) -> Result<()> {
        self.signal(id, libc::SIGKILL)
    }

    /// SIGTERM and wait: a clean shutdown.
    pub fn stop(&mut self, id: u64) -> Result<()> {
        self.signal(id, libc::SIGTERM)
    }

    /// SIGSTOP: the node freezes mid-flight (a GC pause, a stalled VM) and keeps
    /// its connections; [`TestCluster::resume`] lets it run on.
    pub fn pause(&mut self, id: u64) -> Result<()> {
        self.signal_running(id, libc::SIGSTOP)
    }

    /// SIGCONT after [`TestCluster::pause`].
    pub fn resume(&mut self, id: u64) -> Result<()> {
        self.signal_running(id, libc::SIGCONT)
    }

    /// Sends a signal to a running node without reaping it.
    fn signal_running(&mut self, id: u64, sig: i32) -> Result<()> {
        let pid = self
            .node(id)
            .pid()
            .ok_or_else(|| anyhow!("node {id} is not running"))? as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        if unsafe { libc::kill(pid, sig) } != 0 {
            anyhow::bail!(
                "signal {sig} to node {id}: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(())
    }

    fn signal(&mut self, id: u64, sig: i32) -> Result<()> {
        let node = self.node_mut(id);
        let mut child = node
            .child
            .take()
            .ok_or_else(|| anyhow!("node {id} is not running"))?;
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(pid, sig) };
        child.wait()?;
        Ok(())
    }

    /// Restarts every node (SIGTERM, then start).
    pub fn restart_all(&mut self) -> Result<()> {
        for id in self.running() {
            self.stop(id)?;
        }
        for id in self.ids() {
            self.start_node(id)?;
        }
        Ok(())
    }

    /// The cluster view of node `id`, if it answers.
    pub async fn view(&self, id: u64) -> Result<ClusterView> {
        Ok(self.client(id).cluster().await?)
    }

    /// Waits until every running node answers `/health` with 200.
    /// On timeout the error names each node's last answer and carries the nodes'
    /// log tails (a test that returns the error does not panic, so `Drop` would
    /// not print them).
    pub async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        let ids = self.running();
        let last = std::sync::Mutex::new(BTreeMap::new());
        let waited = wait_for(timeout, &format!("nodes {ids:?} healthy"), || async {
            let mut healthy = true;
            for &id in &ids {
                let answer = self.client(id).health().await;
                healthy &= answer.is_ok();
                let seen = match answer {
                    Ok(_) => "healthy".to_string(),
                    Err(e) => e.to_string(),
                };
                last.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, seen);
            }
            Ok(healthy.then_some(()))
        })
        .await;
        waited.map_err(|e| {
            let last = last.into_inner().unwrap_or_else(|p| p.into_inner());
            e.context(format!("last answers: {last:?}\n{}", self.log_tails(30)))
        })
    }

    /// Waits until the running nodes agree on one leader of `group`, itself running;
    /// returns it.
    pub async fn wait_for_leader(&self, group: u64, timeout: Duration) -> Result<u64> {
        let ids = self.running();
        wait_for(
            timeout,
            &format!("one leader of group {group} agreed by {ids:?}"),
            || async {
                let mut leaders = Vec::new();
                for &id in &ids {
                    match self.view(id).await {
                        Ok(v) => leaders.push(v.group(group).and_then(|g| g.leader)),
                        Err(_) => return Ok(None),
                    }
                }
                match leaders.first() {
                    Some(Some(l)) if leaders.iter().all(|x| *x == Some(*l)) && ids.contains(l) => {
                        Ok(Some(*l))
                    }
                    _ => Ok(None),
                }
            },
        )
        .await
    }

    /// Waits until every running node has applied the same index of `group` and
    /// holds the same venues; returns that index.
    pub async fn wait_converged(&self, group: u64, timeout: Duration) -> Result<u64> {
        let ids = self.running();
        wait_for(
            timeout,
            &format!("nodes {ids:?} converged on group {group}"),
            || async {
                let mut applied = BTreeMap::new();
                let mut venues = BTreeMap::new();
                for &id in &ids {
                    let Ok(v) = self.view(id).await else {
                        return Ok(None);
                    };
                    applied.insert(id, v.group(group).and_then(|g| g.last_applied));
                    let Ok(ids) = self.venue_ids(id).await else {
                        return Ok(None);
                    };
                    venues.insert(id, ids);
                }
                let first_applied = applied.values().next().copied().flatten();
                let first_venues = venues.values().next().cloned();
                if first_applied.is_some()
                    && applied.values().all(|a| *a == first_applied)
                    && venues.values().all(|v| Some(v) == first_venues.as_ref())
                {
                    Ok(first_applied)
                } else {
                    Ok(None)
                }
            },
        )
        .await
    }

    /// Waits until the running `members` of `group` agree on a running leader and
    /// have applied the same index; returns that index.
    pub async fn wait_group_converged(
        &self,
        group: u64,
        members: &[u64],
        timeout: Duration,
    ) -> Result<u64> {
        let running = self.running();
        let members: Vec<u64> = members
            .iter()
            .copied()
            .filter(|m| running.contains(m))
            .collect();
        wait_for(
            timeout,
            &format!("group {group} converged on {members:?}"),
            || async {
                let mut seen = BTreeSet::new();
                for &id in &members {
                    let Ok(v) = self.view(id).await else {
                        return Ok(None);
                    };
                    let Some(g) = v.group(group) else {
                        return Ok(None);
                    };
                    match (g.leader, g.last_applied) {
                        (Some(l), Some(a)) if running.contains(&l) => {
                            seen.insert((l, a));
                        }
                        _ => return Ok(None),
                    }
                }
                Ok((seen.len() == 1)
                    .then(|| seen.first().map(|(_, a)| *a))
                    .flatten())
            },
        )
        .await
    }

    /// The last lines of every node's log.
    pub fn log_tails(&self, lines: usize) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            let text = std::fs::read_to_string(&n.log).unwrap_or_default();
            let all: Vec<&str> = text.lines().collect();
            let from = all.len().saturating_sub(lines);
            let _ = writeln!(out, "----- node {} ({}) -----", n.id, n.log.display());
            for l in &all[from..] {
                let _ = writeln!(out, "{l}");
            }
        }
        out
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails(40));
        }
        for n in &mut self.nodes {
            if let Some(mut child) = n.child.take() {
                // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
                unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGKILL) };
                let _ = child.wait();
            }
        }
    }
}

/// Polls `check` every 50 ms until it yields a value; the error names what was awaited.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if started.elapsed() > timeout {
            bail!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads one sample of a Prometheus counter or gauge (`name{labels}`) from `text`.
pub fn prometheus_value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// An API error's (status, code), for asserting on refusals.
pub fn code(e: &boxoffice_client::ClientError) -> (u16, String) {
    (e.status().unwrap_or(0), e.code().unwrap_or("").to_string())
}

/// A JSON string's value ("" when it is not a string).
pub fn s(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_default().to_string()
}

/// Registers `{name}@example.com` through `c`, logs in, and returns the session token.
pub async fn user(c: &Client, name: &str) -> Result<String> {
    let email = format!("{name}@example.com");
    c.register(&email, "a long password", name).await?;
    Ok(s(&c.login(&email, "a long password").await?["access_token"]))
}
