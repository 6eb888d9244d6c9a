//! [`ReadIndexBatch`]: one read index for many concurrent readers.
//!
//! A read index costs the leader a heartbeat round to a quorum, and a follower an
//! RPC to the leader on top. Under load many requests want one at the same moment
//! (linearizable reads, and refusals answered from state), so a group runs at most
//! one round at a time and every caller that arrived while it ran shares the next
//! one. A caller never joins a round that started before it arrived: that round's
//! index may predate writes acknowledged before the caller's request, and its
//! answer would be stale.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, RaftError};
use tokio::sync::oneshot;

use super::types::{NodeId, Raft};

/// A linearizable read point: a replica that has applied `index` reflects every
/// write acknowledged before the round started; `time_ms` is the leader's clock
/// when it confirmed its leadership for the round (a time within every caller's
/// request), so a follower evaluates time-dependent state as the leader would.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPoint {
    pub index: u64,
    pub time_ms: i64,
}

/// What a round found: the read point, or the leader hint if the node asked does
/// not lead (`None` also when not enough of the quorum answered), or a fatal error.
pub type ReadIndexResult = Result<Result<ReadPoint, Option<NodeId>>, String>;

/// Rounds of read indexes for one group (see the module doc).
pub struct ReadIndexBatch {
    inner: Arc<Mutex<Waiting>>,
    /// A round that gets no answer within this answers "no leader" (a leader cut
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

    /// How long a round may take before it answers "no leader".
    pub fn round_timeout(&self) -> Duration {
        self.round_timeout
    }

    /// The read point of `raft`'s group, which this node leads, from a leadership
    /// confirmation that starts after this call.
    pub async fn read_index(&self, raft: &Raft) -> ReadIndexResult {
        let raft = raft.clone();
        self.shared(move || leader_round(raft.clone())).await
    }

    /// The result of a `round` that starts after this call, shared with every
    /// caller waiting for the same round. Any caller's `round` may run it: the
    /// callers of one batch must pass equivalent rounds.
    pub async fn shared<F, Fut>(&self, round: F) -> ReadIndexResult
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ReadIndexResult> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut w = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            w.waiters.push(tx);
            !std::mem::replace(&mut w.round_running, true)
        };
        if start {
            tokio::spawn(rounds(self.inner.clone(), round, self.round_timeout));
        }
        rx.await
            .unwrap_or_else(|_| Err("read index rounds stopped".into()))
    }
}

/// Confirms this node's leadership of `raft`'s group with a quorum.
async fn leader_round(raft: Raft) -> ReadIndexResult {
    match raft.ensure_linearizable().await {
        Ok(log_id) => Ok(Ok(ReadPoint {
            index: log_id.map_or(0, |l| l.index),
            time_ms: chrono::Utc::now().timestamp_millis(),
        })),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Ok(Err(f.leader_id)),
        // Not enough of the quorum answered: no leader we can vouch for now.
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => Ok(Err(None)),
        Err(RaftError::Fatal(e)) => Err(e.to_string()),
    }
}

/// Runs rounds while callers wait; each round serves the callers that arrived
/// before it started.
async fn rounds<F, Fut>(inner: Arc<Mutex<Waiting>>, round: F, timeout: Duration)
where
    F: Fn() -> Fut,
    Fut: Future<Output = ReadIndexResult>,
{
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
        let result = tokio::time::timeout(timeout, round())
            .await
            .unwrap_or(Ok(Err(None)));
        for w in waiters {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    /// Callers that arrive during a round share the next one, never the running one.
    #[tokio::test]
    async fn callers_share_the_next_round_only() {
        let batch = Arc::new(ReadIndexBatch::new(Duration::from_secs(5)));
        let started = Arc::new(AtomicU64::new(0));
        let round = {
            let started = started.clone();
            move || {
                let n = started.fetch_add(1, Ordering::SeqCst) + 1;
                async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Ok(Ok(ReadPoint {
                        index: n,
                        time_ms: 0,
                    }))
                }
            }
        };
        let first = {
            let (b, r) = (batch.clone(), round.clone());
            tokio::spawn(async move { b.shared(r).await })
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        // Round 1 is running: these ten must all get round 2.
        let later: Vec<_> = (0..10)
            .map(|_| {
                let (b, r) = (batch.clone(), round.clone());
                tokio::spawn(async move { b.shared(r).await })
            })
            .collect();
        assert_eq!(first.await.unwrap().unwrap().unwrap().index, 1);
        for h in later {
            assert_eq!(h.await.unwrap().unwrap().unwrap().index, 2);
        }
        assert_eq!(started.load(Ordering::SeqCst), 2);
    }

    /// A round that does not answer in time answers "no leader".
    #[tokio::test]
    async fn a_slow_round_answers_no_leader() {
        let batch = ReadIndexBatch::new(Duration::from_millis(20));
        let r = batch
            .shared(|| async {
                tokio::time::sleep(Duration::from_secs(5)).await;
                Ok(Ok(ReadPoint {
                    index: 1,
                    time_ms: 0,
                }))
            })
            .await;
        assert_eq!(r, Ok(Err(None)));
    }
}
