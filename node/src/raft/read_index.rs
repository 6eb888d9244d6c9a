//! [`ReadIndexBatch`]: one leadership confirmation for many concurrent readers.
//!
//! A read index costs the leader a heartbeat round to a quorum. Under load many
//! requests want one at the same moment (linearizable reads, and refusals answered
//! from state), so a group runs at most one round at a time and every caller that
//! arrived while it ran shares the next one. A caller never joins a round that
//! started before it arrived: that round's index may predate writes acknowledged
//! before the caller's request, and its answer would be stale.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use super::types::{NodeId, Raft};

/// What a round found: the read index, or the leader hint if this node does not
/// lead (`None` also when not enough of the quorum answered), or a fatal error.
pub type ReadIndexResult = Result<Result<u64, Option<NodeId>>, String>;

/// Rounds of leadership confirmation for one group (see the module doc).
pub struct ReadIndexBatch {
    inner: Arc<Mutex<Waiting>>,
    /// A round that gets no quorum within this answers "no leader" (a leader cut
    /// off from its followers would otherwise hold every later round back).
    round_timeout: Duration,
}

#[derive(Default)]
struct Waiting {
    round_running: bool,
    waiters: Vec<oneshot::Sender<ReadIndexResult>>,
}

impl ReadIndexBatch {
    pub fn new(round_timeout: Duration) -> Self {
        Self {
            inner: Arc::default(),
            round_timeout,
        }
    }

    /// The read index of `raft`'s group from a round that starts after this call.
    pub async fn read_index(&self, raft: &Raft) -> ReadIndexResult {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            w.waiters.push(tx);
            !std::mem::replace(&mut w.round_running, true)
        };
        if start {
            tokio::spawn(rounds(self.inner.clone(), raft.clone(), self.round_timeout));
        }
        rx.await
            .unwrap_or_else(|_| Err("read index rounds stopped".into()))
    }
}

/// Runs rounds while callers wait; each round serves the callers that arrived
/// before it started.
async fn rounds(inner: Arc<Mutex<Waiting>>, raft: Raft, timeout: Duration) {
    loop {
        let waiters = {
            let mut w = inner.lock().unwrap_or_else(|p| p.into_inner());
            if w.waiters.is_empty() {
                w.round_running = false;
                return;
            }
            std::mem::take(&mut w.waiters)
        };
        metrics::counter!("boxoffice_read_index_rounds_total").increment(1);
        metrics::histogram!("boxoffice_read_index_batch").record(waiters.len() as f64);
        let result = match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
            Ok(Ok(log_id)) => Ok(Ok(log_id.map_or(0, |l| l.index))),
            Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => {
                Ok(Err(f.leader_id))
            }
            // Not enough of the quorum answered: no leader we can vouch for now.
            Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) | Err(_) => {
                Ok(Err(None))
            }
            Ok(Err(RaftError::Fatal(e))) => Err(e.to_string()),
        };
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}
