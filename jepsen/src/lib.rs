//! # boxoffice-jepsen
//!
//! Chaos harness in the manner of Jepsen: a real cluster of node processes, clients
//! that record every operation in a [`history::History`], a nemesis that injects
//! faults on a seeded schedule, a settle phase after healing, a final read of every
//! node, and [`checker`]s that can fail.
//!
//! Workloads: `catalog` (concurrent venue creation) and `holds` (seat holds,
//! releases and final reads, checked per seat for linearizability by [`linear`]).
//! Nemeses ([`nemesis`]): `kill`, `pause`, `partition` (iptables inside the
//! runner's own loopback-only network namespace, [`netns`]), `clock`
//! (libfaketime) and `disk` (a node's tmpfs filled up, [`disk`]). Each run writes its history, report, node logs and pictures
//! ([`plot`]). The [`Workload`] and [`Nemesis`] enums are the extension points for
//! `queue`, `orders` and `membership`.

pub mod checker;
pub mod disk;
pub mod history;
pub mod holds;
pub mod linear;
pub mod nemesis;
pub mod netns;
pub mod plot;
mod runner;

pub use nemesis::Nemesis;
pub use runner::{run, RunOpts, RunReport, Workload};
