//! The multi-raft engine on openraft: every group (the catalog and, later, one per
//! event) shares the node's RocksDB ([`store`]) and peer channels ([`network`]); the
//! registry ([`groups`]) starts and stops each group's Raft.

// openraft's storage traits fix `StorageError` (224 bytes) as the error type; boxing
// it in helpers would only add conversions at every trait boundary.
#![allow(clippy::result_large_err)]

mod batcher;
mod bootstrap;
mod groups;
mod log_store;
mod network;
pub mod quiesce;
mod read_index;
mod service;
mod snapshot_turns;
mod state_machine;
mod store;
mod types;

pub use batcher::{ProposalBatcher, WriteOutcome, WriteResult};
pub use bootstrap::{bootstrap_catalog, catalog_duties};
pub use groups::{Group, Groups};
pub use log_store::LogStore;
pub use network::{Peers, MAX_MESSAGE_BYTES};
pub use read_index::{ReadIndexBatch, ReadIndexResult, ReadPoint};
pub use service::PeerService;
pub use state_machine::{AppliedState, GroupStateMachine, SharedState, SnapshotBody};
pub use store::Store;
pub use types::{Entry, GroupId, LogId, NodeId, NodeInfo, Raft, RaftMetrics, TypeConfig};

#[cfg(test)]
mod storage_suite;
