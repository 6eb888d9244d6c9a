//! # boxoffice-node
//!
//! One process per node. A node owns one RocksDB, one gRPC server (peer port: Raft
//! traffic and forwarding), one HTTP server (REST port), and many Raft groups: the
//! catalog (group 0) and one inventory group per event, placed on
//! `replication_factor` nodes.
//!
//! ## Module map
//! - [`config`] — `cluster.toml`.
//! - [`domain`] — PURE deterministic state machines (no I/O, no clock).
//! - [`raft`] — the multi-raft engine on openraft: RocksDB storage, tonic transport,
//!   group registry, catalog bootstrap.
//! - [`placement`] — starts and initializes the event groups the catalog places here.
//! - [`routing`] — gets a proposal applied by its group's leader from any node, and
//!   read indexes for linearizable reads.
//! - [`inventory`] — opening event groups, inventory reads, the hold sweeper, the
//!   waiting rooms' admitter.
//! - [`api`] — axum routes, error format, middleware.
//! - [`payments`] — the payment gateway trait and the simulated (Stripe test token)
//!   gateway.
//! - [`liveness`] — node-level peer probes.
//! - [`server`] — [`server::run`], the node as a library function.
//!
//! ## Write path
//! ```text
//! client ─HTTP─▶ any node ─api─▶ Router ──(leader here?)──▶ Raft::client_write
//!                                   │ no                        │ stamped with leader time
//!                                   └─gRPC Forward─▶ leader ────┘
//!   leader: append (1 synced WriteBatch) ─▶ replicate ─▶ commit ─▶ apply (pure machine,
//!           in memory) ─▶ response to the client
//! ```
//! A group's machine is durable as its last snapshot (synced) plus the synced log
//! after it; a restarted group re-applies that log.
//! ## Read path
//! ```text
//! client ─HTTP─▶ any node ─▶ local replica's applied state (+ applied index)
//! ```

/// A counter of the hot path, looked up in the metrics registry once per call site
/// (a lookup hashes the name and labels; labels here must be constants).
macro_rules! hot_counter {
    ($($key:tt)*) => {{
        static HANDLE: std::sync::OnceLock<metrics::Counter> = std::sync::OnceLock::new();
        HANDLE.get_or_init(|| metrics::counter!($($key)*))
    }};
}

/// A histogram of the hot path; see `hot_counter!`.
macro_rules! hot_histogram {
    ($($key:tt)*) => {{
        static HANDLE: std::sync::OnceLock<metrics::Histogram> = std::sync::OnceLock::new();
        HANDLE.get_or_init(|| metrics::histogram!($($key)*))
    }};
}

pub mod api;
pub mod codec;
pub mod config;
pub mod domain;
pub mod error;
pub mod inventory;
pub mod liveness;
pub mod orders;
pub mod payments;
pub mod placement;
pub mod raft;
pub mod realtime;
pub mod routing;
pub mod server;

pub use error::{Error, Result};
