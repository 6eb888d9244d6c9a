//! # boxoffice-jepsen
//!
//! Chaos harness in the manner of Jepsen: a real cluster of node processes, clients
//! that record every operation in a [`history::History`], a nemesis that injects
//! faults on a seeded schedule, a settle phase after healing, a final read of every
//! node, and [`checker`]s that can fail.
//!
//! Today: the `catalog` workload (concurrent venue creation) under the `kill` nemesis
//! (SIGKILL a random node or the catalog leader, restart it later). The runner's
//! [`Workload`] and [`Nemesis`] enums are the extension points for `holds`, `queue`,
//! `orders` and for `pause`, `partition`, `clock`, `membership`, `disk`.

pub mod checker;
pub mod history;
mod runner;

pub use runner::{run, Nemesis, RunOpts, RunReport, Workload};
