//! [`ReadIndexBatch`]: one read index for many concurrent readers.
//!
//! A read index costs the leader a heartbeat round to a quorum, and a follower an
//! RPC to the leader on top. Under load many requests want one at the same moment
//! (linearizable reads, and refusals answered from state), so a group runs at most
//! one round at a time and every caller that arrived while it ran shares the next
//! one. A caller never joins a round that started before it arrived: that round's
//! index may predate writes acknowledged before the caller's request, and its
//! answer would be stale.
//!
//! A leader also holds a *lease* after each confirmation: for
//! [`lease_length`] after a round *started*, no other node can have been elected,
//! because every follower that answered the round's heartbeat refuses votes for
//! `election_timeout_max` after receiving it and stands for election itself only
//! later still (openraft's leader lease), and a quorum that elects anyone else
//! needs one of those followers or this node's own vote. So while the lease
//! lasts, a round is a look inside this node's Raft core instead of a heartbeat
//! round: still the leader in the same vote (it has granted no other vote), the
//! lease not yet over at that moment, and the read point is the commit index
//! then. A round that finds no valid lease confirms leadership the usual way and
//! renews the lease.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{ServerState, Vote};
use tokio::sync::oneshot;

use super::types::{NodeId, Raft};

/// How long a leader may answer read indexes from its last confirmation: half of
/// the shortest election timeout, measured from when the confirming round began.
/// Followers refuse other candidates for `election_timeout_max` after each
/// heartbeat and start elections later still, so half the minimum leaves room for
/// clocks that run at different rates on different machines.
pub fn lease_length(election_timeout_min_ms: u64) -> Duration {
    Duration::from_millis(election_timeout_min_ms / 2)
}

/// A linearizable read point: a replica that has applied `index` reflects every
/// write acknowledged before the round started. It carries no time: time-dependent
/// state is evaluated at the machine's replicated clock
/// (`GroupMachine::refusal_from_state`, `GroupMachine::query`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadPoint {
    pub index: u64,
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
    /// The leader lease (see the module doc); zero length for batches that never
    /// confirm leadership themselves (a follower's requests to its leader).
    lease: Arc<LeaseState>,
}

/// A lease's length and the lease this leader holds, if any.
struct LeaseState {
    length: Duration,
    held: Mutex<Option<Lease>>,
    /// Rounds answered from the lease.
    served: AtomicU64,
}

/// Leadership confirmed in `vote` by a round that started before `until - length`.
#[derive(Clone)]
struct Lease {
    vote: Vote<NodeId>,
    until: Instant,
    /// The confirming round's read index: at least the first entry of this term.
    index: u64,
}

#[derive(Default)]
struct Waiting {
    round_running: bool,
    waiters: Vec<oneshot::Sender<ReadIndexResult>>,
}

impl ReadIndexBatch {
    /// Rounds without a lease (each one asks the leader).
    pub fn new(round_timeout: Duration) -> Self {
        Self::with_lease(round_timeout, Duration::ZERO)
    }

    /// A leader's rounds, with a lease of `lease` after each confirmation
    /// ([`lease_length`]; zero: every round confirms with a quorum).
    pub fn with_lease(round_timeout: Duration, lease: Duration) -> Self {
        Self {
            inner: Arc::default(),
            round_timeout,
            lease: Arc::new(LeaseState {
                length: lease,
                held: Mutex::new(None),
                served: AtomicU64::new(0),
            }),
        }
    }

    /// Rounds this batch answered from its lease so far.
    pub fn leased_reads(&self) -> u64 {
        self.lease.served.load(Ordering::Relaxed)
    }

    /// How long a round may take before it answers "no leader".
    pub fn round_timeout(&self) -> Duration {
        self.round_timeout
    }

    /// The read point of `raft`'s group, which this node leads, from a leadership
    /// confirmation that starts after this call.
    pub async fn read_index(&self, raft: &Raft) -> ReadIndexResult {
        let (raft, lease) = (raft.clone(), self.lease.clone());
        self.shared(move || leader_round(raft.clone(), lease.clone()))
            .await
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

/// Confirms this node's leadership of `raft`'s group: from its lease while it
/// holds one, else with a quorum (which renews the lease).
async fn leader_round(raft: Raft, lease: Arc<LeaseState>) -> ReadIndexResult {
    if let Some(point) = lease.read(&raft).await {
        lease.served.fetch_add(1, Ordering::Relaxed);
        hot_counter!("boxoffice_read_index_leased_total").increment(1);
        return Ok(Ok(point));
    }
    let started = Instant::now();
    // The vote the round will confirm: votes only grow, so if the vote is the same
    // at a later read, it was this one when the round's heartbeats went out.
    let vote = if lease.length.is_zero() {
        None
    } else {
        raft.with_raft_state(|st| (st.server_state == ServerState::Leader).then(|| *st.vote_ref()))
            .await
            .ok()
            .flatten()
    };
    match raft.ensure_linearizable().await {
        Ok(log_id) => {
            let index = log_id.map_or(0, |l| l.index);
            if let Some(vote) = vote {
                *lock(&lease.held) = Some(Lease {
                    vote,
                    until: started + lease.length,
                    index,
                });
            }
            Ok(Ok(ReadPoint { index }))
        }
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => Ok(Err(f.leader_id)),
        // Not enough of the quorum answered: no leader we can vouch for now.
        Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => Ok(Err(None)),
        Err(RaftError::Fatal(e)) => Err(e.to_string()),
    }
}

impl LeaseState {
    /// A read point from the lease, checked inside the Raft core (so at one
    /// moment, against the vote and role the core has then): `None` without a
    /// lease valid at that moment.
    async fn read(&self, raft: &Raft) -> Option<ReadPoint> {
        let lease = lock(&self.held).clone()?;
        if Instant::now() >= lease.until {
            return None;
        }
        raft.with_raft_state(move |st| {
            let valid = Instant::now() < lease.until
                && st.server_state == ServerState::Leader
                && *st.vote_ref() == lease.vote;
            valid.then(|| ReadPoint {
                index: st.committed.map_or(0, |c| c.index).max(lease.index),
            })
        })
        .await
        .ok()
        .flatten()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
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
        hot_counter!("boxoffice_read_index_rounds_total").increment(1);
        hot_histogram!("boxoffice_read_index_batch").record(waiters.len() as f64);
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
                    Ok(Ok(ReadPoint { index: n }))
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
                Ok(Ok(ReadPoint { index: 1 }))
            })
            .await;
        assert_eq!(r, Ok(Err(None)));
    }
}
