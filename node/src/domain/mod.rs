//! PURE domain state machines: no I/O, no clock, no randomness, no tokio, no RocksDB.
//!
//! Every Raft group runs one [`GroupMachine`]: a domain machine (the catalog, or one
//! event's inventory; the queue joins the inventory next) wrapped with what every group needs the same
//! way — exactly-once by request id and a clock that only moves forward. `apply`
//! takes a command stamped by the leader and returns the response plus the key-value
//! [`Change`]s it made to the machine's records. A machine is persisted as its dump
//! (in snapshots) plus the log; the node drops the changes, and the tests check
//! them against the dump.
//!
//! Key space of a group machine (the adapter prefixes the group id):
//! `m…` machine metadata (the clock), `d…` request-id dedup entries, `x…` domain data.

pub mod catalog;
mod dedup;
pub mod ids;
pub mod inventory;
mod machine;
pub mod money;

pub use dedup::{DEDUP_WINDOW_MS, MAX_REQUEST_DEADLINE_MS, MINTED_WINDOW_MS};
pub use machine::{Frozen, GroupKind, GroupMachine};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use catalog::{CatalogCommand, CatalogResponse};
use inventory::{InventoryAnswer, InventoryCommand, InventoryQuery, InventoryResponse};

/// A table of a machine's persisted records. It is a persistent ordered map: a
/// clone shares the map's nodes, so [`GroupMachine::freeze`] takes a snapshot's
/// cut in O(1), and while that cut is dumped the live machine copies only the
/// nodes it changes.
pub(crate) type Table<K, V> = imbl::OrdMap<K, V>;

/// Where and when a command is applied: its log index and its leader-stamped time
/// (never earlier than any time the machine has seen before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplyCtx {
    pub index: u64,
    pub now_ms: i64,
}

/// A key-value change produced by `apply`: what the machine's records (its dump)
/// gained or lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// A client's request before the leader stamps it: what forwarding carries.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Client request id: a retry with the same id gets the first outcome.
    pub request_id: Uuid,
    pub body: CommandBody,
}

impl Proposal {
    /// Stamps the proposal with the leader's wall-clock time (milliseconds since the
    /// Unix epoch), making it a log entry payload.
    pub fn stamp(self, now_ms: i64) -> Command {
        Command {
            request_id: self.request_id,
            stamped_ms: now_ms,
            body: self.body,
        }
    }
}

/// The payload of a normal Raft log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Command {
    pub request_id: Uuid,
    /// Leader's clock when it proposed this command (ms since the Unix epoch).
    pub stamped_ms: i64,
    pub body: CommandBody,
}

/// Commands of every group kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandBody {
    Catalog(CatalogCommand),
    Inventory(InventoryCommand),
    /// Proposals a leader gathered into one log entry (one append, one fsync, one
    /// replication round for all of them), applied in order as if each were its own
    /// entry stamped with the batch's time. Answered by [`Response::Batch`].
    Batch(Vec<Proposal>),
}

/// A read of a group's state, evaluated on a replica's applied state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Query {
    Inventory(InventoryQuery),
}

/// What a [`Query`] returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueryResult {
    Inventory(InventoryAnswer),
    /// The query was addressed to a group of another kind (a routing bug).
    WrongGroup,
}

/// The replicated outcome of a command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Outcome of a blank or membership entry (no command to answer).
    Empty,
    Catalog(CatalogResponse),
    Inventory(InventoryResponse),
    /// The command was addressed to a group of another kind (a routing bug, never a
    /// client mistake); replicated like any outcome so replicas stay identical.
    WrongGroup,
    /// The outcomes of a [`CommandBody::Batch`], in its order.
    Batch(Vec<Response>),
}
