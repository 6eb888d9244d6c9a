//! # boxoffice-jepsen
//!
//! Chaos harness in the manner of Jepsen: a real cluster of node processes, clients
//! that record every operation in a [`history::History`], a nemesis that injects
//! faults on a seeded schedule, a settle phase after healing, a final read of every
//! node, and [`checker`]s that can fail.
//!
//! Today: the `catalog` workload (concurrent venue creation) and the `holds`
//! workload (seat holds and releases, checked per seat for linearizability by
//! [`linear`]) under the `kill` and `pause` nemeses (SIGKILL or SIGSTOP a random
//! node or the workload group's leader, restart or SIGCONT it later). The runner's
//! [`Workload`] and [`Nemesis`] enums are the extension points for `queue`,
//! `orders` and for `partition`, `clock`, `membership`, `disk`.

pub mod checker;
pub mod history;
pub mod holds;
pub mod linear;
mod runner;

pub use runner::{run, Nemesis, RunOpts, RunReport, Workload};
