//! The node crate's error type: configuration, storage and startup failures that end
//! in a clear message at the binary's edge. Request-level errors have their own types
//! (`api::ApiError` on the REST side, `routing::RouteError` between nodes).

use std::path::PathBuf;

/// Failures of a node outside the request path.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `cluster.toml` is unreadable or inconsistent.
    #[error("invalid cluster config: {0}")]
    Config(String),
    /// The data dir was written by another cluster or another node id.
    #[error("data dir {dir} belongs to {found}, but this node is {expected}; refusing to start (point data_dir at an empty directory or the right node's data)")]
    ForeignDataDir {
        dir: PathBuf,
        found: String,
        expected: String,
    },
    /// RocksDB failed.
    #[error("storage: {0}")]
    Storage(#[from] rocksdb::Error),
    /// A stored value could not be decoded.
    #[error("decode: {0}")]
    Decode(String),
    /// Binding or serving a socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// Raft refused to start or initialize a group.
    #[error("raft: {0}")]
    Raft(String),
}

/// Result with the node's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
