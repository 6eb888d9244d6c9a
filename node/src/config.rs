//! `cluster.toml`: the description of a cluster (its nodes and their addresses, data
//! dirs, Raft timing, API settings) and the validation that turns a file into a
//! [`ClusterConfig`] a node can run with.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// The whole cluster as `cluster.toml` describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Name that every peer message and every data dir carries; traffic and data of
    /// another cluster are refused.
    pub cluster_name: String,
    /// Nodes an event's inventory group is replicated on.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: usize,
    /// Shared secret for operator endpoints (`X-Admin-Key`).
    pub admin_key: String,
    /// Where `scripts/cluster` keeps pid files and logs (relative to this file).
    #[serde(default = "default_run_dir")]
    pub run_dir: PathBuf,
    /// The cluster's nodes. The first five (in file order) are the catalog's voters.
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub raft: RaftSettings,
    #[serde(default)]
    pub api: ApiSettings,
    #[serde(default)]
    pub rate_limits: RateLimits,
    #[serde(default)]
    pub inventory: InventorySettings,
    #[serde(default)]
    pub queue: QueueConfig,
    #[serde(default)]
    pub storage: StorageSettings,
    #[serde(default)]
    pub orders: OrdersConfig,
    #[serde(default)]
    pub payments: PaymentsConfig,
    #[serde(default)]
    pub realtime: RealtimeConfig,
    /// Directory of the file this was read from; relative paths resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// One node: identity, addresses and storage.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    pub id: u64,
    /// gRPC address for Raft traffic and forwarding (`host:port`).
    pub peer_addr: SocketAddr,
    /// REST address (`host:port`).
    pub http_addr: SocketAddr,
    /// RocksDB directory (relative to the config file unless absolute).
    pub data_dir: PathBuf,
}

/// Raft timing and log compaction, shared by every group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSettings {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Each replica builds a snapshot every this many applied entries; a group's
    /// replicas take turns, each offset by its share of the interval, so they do
    /// not all build at the same entry (`raft::snapshot_turns`).
    pub snapshot_logs_since_last: u64,
    /// Log entries kept behind the snapshot (followers that lag less catch up by log).
    pub max_in_snapshot_log_to_keep: u64,
    /// An event group idle this long quiesces (no heartbeats, ticks or elections
    /// until the next request); 0 keeps every group awake.
    pub quiesce_after_ms: u64,
    /// How often each node probes each peer (the node-level heartbeat).
    pub liveness_interval_ms: u64,
    /// A peer silent this long is judged down; the groups it led wake and elect.
    pub peer_down_after_ms: u64,
    /// A proposal that waited this long in its group leader's queue is refused
    /// unwritten (503 `OVERLOADED`) instead of written late (see `raft::batcher`).
    pub max_queue_wait_ms: u64,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 150,
            election_timeout_min_ms: 600,
            election_timeout_max_ms: 1200,
            snapshot_logs_since_last: 5000,
            max_in_snapshot_log_to_keep: 1000,
            quiesce_after_ms: 3000,
            liveness_interval_ms: 500,
            peer_down_after_ms: 2000,
            max_queue_wait_ms: 250,
        }
    }
}

/// REST API settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Deadline for a request that needs a group leader (routing, retries, commit);
    /// at most [`crate::domain::MAX_REQUEST_DEADLINE_MS`], so a retry of a write
    /// always finds its first outcome (docs/design.md, "Exactly-once").
    pub request_timeout_ms: u64,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Lifetime of a session token.
    pub session_ttl_seconds: u64,
    /// Requests a node serves at once under `/v1`, at most; past its current limit
    /// it answers 503 `OVERLOADED` with `Retry-After` at once instead of queueing.
    pub max_in_flight: usize,
    /// The floor of that limit: however slow requests get, a node keeps serving
    /// this many at once (capped at `max_in_flight`). Under overload on a
    /// saturated machine the latency stays above target at any limit, so the
    /// limit sits here: low enough to refuse the excess at once, high enough not
    /// to refuse what the cluster can serve (docs/benchmarks.md, "Overload").
    pub min_in_flight: usize,
    /// The mean latency the node's admission steers for: its in-flight limit comes
    /// down while requests take longer than this, and goes back up to
    /// `max_in_flight` while they don't (see `api::admission`).
    pub target_latency_ms: u64,
    /// Whether every public request must carry a valid `X-API-Key`.
    pub require_api_key: bool,
    /// argon2id cost of new password hashes (memory in KiB, passes). The defaults
    /// are OWASP's; benchmark clusters that register 100,000 fans lower them.
    pub password_hash_memory_kib: u32,
    pub password_hash_iterations: u32,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            request_timeout_ms: 5000,
            max_body_bytes: 1 << 20,
            session_ttl_seconds: 3600,
            max_in_flight: 1024,
            min_in_flight: 128,
            target_latency_ms: 40,
            require_api_key: false,
            password_hash_memory_kib: 19_456,
            password_hash_iterations: 2,
        }
    }
}

/// Seat holds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InventorySettings {
    /// How long a hold lasts.
    pub hold_seconds: u64,
    /// Tickets one user may hold and buy for one event, together.
    pub max_tickets_per_user: u32,
    /// How often a group leader looks for holds that are due, to expire them.
    pub sweep_interval_ms: u64,
}

impl Default for InventorySettings {
    fn default() -> Self {
        Self {
            hold_seconds: 600,
            max_tickets_per_user: 8,
            sweep_interval_ms: 1000,
        }
    }
}

/// The waiting rooms' cluster-wide settings (each event sets its own size, rate,
/// shopper bound and access window).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueueConfig {
    /// Live entries one device (`X-Device-ID` / `device_fingerprint`) may have in
    /// one event's queue.
    pub max_entries_per_device: u32,
    /// How often a group leader admits fans and ends access windows.
    pub admit_interval_ms: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_entries_per_device: 4,
            admit_interval_ms: 250,
        }
    }
}

/// Realtime updates over the WebSocket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RealtimeConfig {
    /// Section counts (`availability_update`) one node sends per second for one
    /// event across all its subscribers, at most: past `fanout_per_second / 4`
    /// subscribers on a node, each gets fewer than four updates a second, still
    /// ending on the true count. Bounds what a popular event costs a node.
    pub fanout_per_second: u32,
    /// Threads serving the WebSocket connections, apart from the node's request
    /// and Raft work and at a lower CPU priority: a crowd of subscribers takes
    /// spare CPU first.
    pub threads: usize,
}

impl Default for RealtimeConfig {
    fn default() -> Self {
        Self {
            fanout_per_second: 5_000,
            threads: 1,
        }
    }
}

/// Orders: money rules and the saga's recovery pace.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// Service fee, in percent of a tier's price, for events whose tiers do not
    /// set their fees.
    pub fee_percent: f64,
    /// Tax, in percent of an order's subtotal.
    pub tax_percent: f64,
    /// ISO 4217 currency of every price (lower case, as Stripe names it).
    pub currency: String,
    /// How often a group leader looks for orders whose saga stopped half way.
    pub recovery_interval_ms: u64,
    /// A saga step pending this long is taken over by the group leader (the node
    /// that took the request normally finishes it much sooner).
    pub recovery_grace_ms: u64,
    /// How long a ticket transfer offer stands (the event's start ends it sooner).
    pub transfer_hours: u64,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        Self {
            fee_percent: 15.0,
            tax_percent: 9.0,
            currency: "usd".into(),
            recovery_interval_ms: 2000,
            recovery_grace_ms: 10_000,
            transfer_hours: 168,
        }
    }
}

impl OrdersConfig {
    /// The fee rate in basis points.
    pub fn fee_bps(&self) -> u32 {
        percent_to_bps(self.fee_percent)
    }

    /// The tax rate in basis points.
    pub fn tax_bps(&self) -> u32 {
        percent_to_bps(self.tax_percent)
    }
}

/// A validated percentage (0..=100) in basis points.
fn percent_to_bps(p: f64) -> u32 {
    (p * 100.0).round().clamp(0.0, 10_000.0) as u32
}

/// Which payment gateway nodes charge cards through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GatewayKind {
    /// No network; Stripe's test tokens (the default).
    Simulated,
    /// Stripe's API (a node built with the `stripe` feature).
    Stripe,
}

/// Which Stripe the Stripe gateway talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StripeFlavor {
    /// Stripe itself, or a server that speaks its API fully.
    Stripe,
    /// The localstripe emulator: card numbers instead of tokens, fewer fields.
    Localstripe,
}

/// The payment gateway.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    pub gateway: GatewayKind,
    /// The secret key (`sk_...`); empty: from `BOXOFFICE_STRIPE_API_KEY`.
    pub stripe_api_key: String,
    /// Where Stripe's API is (a base with a path ends in `/`).
    pub stripe_api_base: String,
    pub stripe_flavor: StripeFlavor,
    /// Each call to Stripe, at most.
    pub stripe_timeout_ms: u64,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            gateway: GatewayKind::Simulated,
            stripe_api_key: String::new(),
            stripe_api_base: "https://api.stripe.com/".into(),
            stripe_flavor: StripeFlavor::Stripe,
            stripe_timeout_ms: 10_000,
        }
    }
}

/// RocksDB tuning.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// Memtable size of each column family, in MiB: the memory a node spends on
    /// unflushed writes, and the size RocksDB preallocates for each write-ahead
    /// log file. Small values flush often (the chaos suite's full-disk runs use 1).
    pub write_buffer_mib: u64,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            write_buffer_mib: 64,
        }
    }
}

/// A rate limit: at most `requests` per `window_seconds` for one client (user, else
/// API key, else address), enforced by each node on its own (see docs/design.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limit {
    pub requests: u32,
    pub window_seconds: u64,
}

impl Limit {
    const fn per(requests: u32, window_seconds: u64) -> Self {
        Self {
            requests,
            window_seconds,
        }
    }
}

/// The spec's rate-limit table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimits {
    pub search: Limit,
    pub event_details: Limit,
    pub seat_map: Limit,
    pub reserve: Limit,
    pub queue_status: Limit,
    /// Every request that carries a valid session token, across all endpoints.
    pub authenticated: Limit,
}

impl RateLimits {
    /// Each limit with its name in `[rate_limits]`.
    pub fn named(&self) -> [(&'static str, Limit); 6] {
        [
            ("search", self.search),
            ("event_details", self.event_details),
            ("seat_map", self.seat_map),
            ("reserve", self.reserve),
            ("queue_status", self.queue_status),
            ("authenticated", self.authenticated),
        ]
    }
}

impl Default for RateLimits {
    fn default() -> Self {
        Self {
            search: Limit::per(100, 60),
            event_details: Limit::per(200, 60),
            seat_map: Limit::per(50, 60),
            reserve: Limit::per(10, 60),
            queue_status: Limit::per(2, 60),
            authenticated: Limit::per(1000, 3600),
        }
    }
}

fn default_replication_factor() -> usize {
    3
}

fn default_run_dir() -> PathBuf {
    PathBuf::from("run")
}

/// Most catalog voters; further nodes follow the catalog as learners.
pub const MAX_CATALOG_VOTERS: usize = 5;

impl ClusterConfig {
    /// Reads and validates a cluster file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))?;
        let mut config: ClusterConfig =
            toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        let absolute = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        config.base_dir = absolute
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        config.validate()?;
        Ok(config)
    }

    /// Parses a cluster description from text (relative paths resolve against `base_dir`).
    pub fn parse(text: &str, base_dir: &Path) -> Result<Self> {
        let mut config: ClusterConfig =
            toml::from_str(text).map_err(|e| Error::Config(e.to_string()))?;
        config.base_dir = base_dir.to_path_buf();
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.cluster_name.trim().is_empty() {
            return bad("cluster_name must not be empty".into());
        }
        if self.admin_key.len() < 8 {
            return bad("admin_key must be at least 8 characters".into());
        }
        if self.nodes.is_empty() {
            return bad("at least one [[nodes]] entry is required".into());
        }
        let mut ids = BTreeSet::new();
        let mut addrs = BTreeSet::new();
        for node in &self.nodes {
            if node.id == 0 {
                return bad("node id 0 is reserved; ids start at 1".into());
            }
            if !ids.insert(node.id) {
                return bad(format!("node id {} appears twice", node.id));
            }
            for addr in [node.peer_addr, node.http_addr] {
                if !addrs.insert(addr) {
                    return bad(format!("address {addr} is used twice"));
                }
            }
        }
        if self.replication_factor == 0 || self.replication_factor > self.nodes.len() {
            return bad(format!(
                "replication_factor {} must be between 1 and the number of nodes ({})",
                self.replication_factor,
                self.nodes.len()
            ));
        }
        let r = &self.raft;
        if r.heartbeat_ms == 0 || r.election_timeout_min_ms <= r.heartbeat_ms {
            return bad("raft.election_timeout_min_ms must exceed raft.heartbeat_ms > 0".into());
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return bad("raft.election_timeout_max_ms must exceed election_timeout_min_ms".into());
        }
        if r.liveness_interval_ms == 0 || r.peer_down_after_ms <= r.liveness_interval_ms {
            return bad("raft.peer_down_after_ms must exceed raft.liveness_interval_ms > 0".into());
        }
        let inv = &self.inventory;
        if inv.hold_seconds == 0 || inv.hold_seconds > 86_400 {
            return bad("inventory.hold_seconds must be 1 to 86400".into());
        }
        if inv.max_tickets_per_user == 0 || inv.max_tickets_per_user > 100 {
            return bad("inventory.max_tickets_per_user must be 1 to 100".into());
        }
        if inv.sweep_interval_ms == 0 {
            return bad("inventory.sweep_interval_ms must be at least 1".into());
        }
        if self.realtime.fanout_per_second == 0 || self.realtime.threads == 0 {
            return bad(
                "realtime.fanout_per_second and realtime.threads must be at least 1".into(),
            );
        }
        if self.queue.max_entries_per_device == 0 || self.queue.admit_interval_ms == 0 {
            return bad(
                "queue.max_entries_per_device and queue.admit_interval_ms must be at least 1"
                    .into(),
            );
        }
        if self.api.password_hash_memory_kib < 8 || self.api.password_hash_iterations == 0 {
            return bad(
                "api.password_hash_memory_kib must be at least 8 and password_hash_iterations at least 1"
                    .into(),
            );
        }
        let o = &self.orders;
        for (name, p) in [
            ("fee_percent", o.fee_percent),
            ("tax_percent", o.tax_percent),
        ] {
            if !(0.0..=100.0).contains(&p) {
                return bad(format!("orders.{name} must be between 0 and 100"));
            }
        }
        if o.currency.len() != 3 || !o.currency.bytes().all(|b| b.is_ascii_lowercase()) {
            return bad("orders.currency must be three lower-case letters (usd, eur, ...)".into());
        }
        if o.transfer_hours == 0 || o.transfer_hours > 24 * 365 {
            return bad("orders.transfer_hours must be 1 to 8760".into());
        }
        if o.recovery_interval_ms == 0 || o.recovery_grace_ms == 0 {
            return bad(
                "orders.recovery_interval_ms and orders.recovery_grace_ms must be at least 1"
                    .into(),
            );
        }
        let p = &self.payments;
        if p.gateway == GatewayKind::Stripe {
            if !(p.stripe_api_base.starts_with("http://")
                || p.stripe_api_base.starts_with("https://"))
            {
                return bad("payments.stripe_api_base must be an http(s) URL".into());
            }
            if p.stripe_timeout_ms == 0 {
                return bad("payments.stripe_timeout_ms must be at least 1".into());
            }
        }
        let deadline = crate::domain::MAX_REQUEST_DEADLINE_MS;
        if !(1..=deadline).contains(&self.api.request_timeout_ms) {
            return bad(format!("api.request_timeout_ms must be 1 to {deadline}"));
        }
        if self.api.max_in_flight == 0 {
            return bad("api.max_in_flight must be at least 1".into());
        }
        if self.api.min_in_flight == 0 {
            return bad("api.min_in_flight must be at least 1".into());
        }
        if self.raft.max_queue_wait_ms == 0 {
            return bad("raft.max_queue_wait_ms must be at least 1".into());
        }
        if self.api.target_latency_ms == 0 {
            return bad("api.target_latency_ms must be at least 1".into());
        }
        for (name, limit) in self.rate_limits.named() {
            if limit.requests == 0 || limit.window_seconds == 0 {
                return bad(format!(
                    "rate_limits.{name} needs requests and window_seconds above 0"
                ));
            }
        }
        if r.snapshot_logs_since_last == 0 {
            return bad("raft.snapshot_logs_since_last must be at least 1".into());
        }
        Ok(())
    }

    /// The node with this id, or a clear error naming the ids that exist.
    pub fn node(&self, id: u64) -> Result<&NodeConfig> {
        self.nodes.iter().find(|n| n.id == id).ok_or_else(|| {
            let known: Vec<String> = self.nodes.iter().map(|n| n.id.to_string()).collect();
            Error::Config(format!(
                "node id {id} is not in the cluster file (known ids: {})",
                known.join(", ")
            ))
        })
    }

    /// A node's data dir, resolved against the config file's directory.
    pub fn data_dir(&self, node: &NodeConfig) -> PathBuf {
        if node.data_dir.is_absolute() {
            node.data_dir.clone()
        } else {
            self.base_dir.join(&node.data_dir)
        }
    }

    /// The catalog's initial voters: the first [`MAX_CATALOG_VOTERS`] nodes in file order.
    pub fn catalog_voters(&self) -> BTreeSet<u64> {
        self.nodes
            .iter()
            .take(MAX_CATALOG_VOTERS)
            .map(|n| n.id)
            .collect()
    }

    /// The node that initializes a fresh cluster's catalog: the lowest voter id.
    pub fn bootstrap_node(&self) -> u64 {
        self.catalog_voters().into_iter().next().unwrap_or(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
        cluster_name = "t"
        replication_factor = 1
        admin_key = "admin-key-123"
        [[nodes]]
        id = 1
        peer_addr = "127.0.0.1:7101"
        http_addr = "127.0.0.1:7001"
        data_dir = "d1"
    "#;

    #[test]
    fn parses_and_resolves_relative_dirs() {
        let c = ClusterConfig::parse(BASE, Path::new("/etc/bo")).expect("test value");
        assert_eq!(
            c.data_dir(c.node(1).expect("test value")),
            PathBuf::from("/etc/bo/d1")
        );
        assert_eq!(c.raft.heartbeat_ms, RaftSettings::default().heartbeat_ms);
        assert_eq!(c.raft.quiesce_after_ms, 3000);
        assert_eq!(c.catalog_voters().into_iter().collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn rejects_unknown_node_and_bad_values() {
        let err = ClusterConfig::parse(&BASE.replace("\"t\"", "\"\""), Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("cluster_name"), "{err}");
        let c = ClusterConfig::parse(BASE, Path::new(".")).expect("test value");
        let err = c.node(9).unwrap_err().to_string();
        assert!(
            err.contains("node id 9") && err.contains("known ids: 1"),
            "{err}"
        );
        let err = ClusterConfig::parse(&format!("bogus = 1\n{BASE}"), Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("bogus"), "{err}");
        let idle = format!("{BASE}\n[realtime]\nthreads = 0\n");
        let err = ClusterConfig::parse(&idle, Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("realtime.threads"), "{err}");
        // Minted request ids must outlive the router's retries of them.
        let slow = format!("{BASE}\n[api]\nrequest_timeout_ms = 60001\n");
        let err = ClusterConfig::parse(&slow, Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("api.request_timeout_ms"), "{err}");
    }

    #[test]
    fn rejects_duplicate_ids() {
        let twice = format!(
            "{BASE}\n[[nodes]]\nid = 1\npeer_addr = \"127.0.0.1:1\"\nhttp_addr = \"127.0.0.1:2\"\ndata_dir = \"x\""
        );
        let err = ClusterConfig::parse(&twice, Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("appears twice"), "{err}");
    }

    /// The cluster files the repository ships parse and pass validation.
    #[test]
    fn the_shipped_cluster_files_are_valid() {
        for (name, text) in [
            ("cluster.toml", include_str!("../../cluster.toml")),
            ("bench/holds.toml", include_str!("../../bench/holds.toml")),
            ("bench/queue.toml", include_str!("../../bench/queue.toml")),
        ] {
            let c = ClusterConfig::parse(text, Path::new("."));
            assert!(c.is_ok(), "{name}: {:?}", c.err());
        }
    }
}
