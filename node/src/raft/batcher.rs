//! [`ProposalBatcher`]: gathers a group's concurrent proposals into log entries.
//!
//! openraft 0.9's leader appends each client write as its own entry and waits for
//! that append's fsync before it takes the next one, so proposing every request as
//! its own entry costs one leader fsync per request, one after the other (the bound
//! the first hold benchmarks hit). The batcher keeps at most [`MAX_IN_FLIGHT`]
//! writes in flight per group; proposals that arrive meanwhile queue and go
//! together as the next entry (a [`CommandBody::Batch`]). Under load each append,
//! fsync and replication round carries many requests; an idle group still proposes
//! at once, as a plain entry.
//!
//! Admission: the queue is where a group's overload shows, so it is bounded by what
//! the group writes. A proposal that finds more queued than the group wrote in the
//! last [`QUEUE_TARGET`] (by a moving average of its write rate, at least
//! [`MIN_QUEUE`]) is refused at once, and one that still waited longer than
//! `raft.max_queue_wait_ms` when its turn came is refused then, unwritten: under overload the
//! excess gets a fast `503 OVERLOADED` instead of a timeout, and the proposals that
//! are taken are served within the latency budget.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::oneshot;
use uuid::Uuid;

use super::types::{NodeId, Raft};
use crate::domain::{Command, CommandBody, Proposal, Response};

/// Writes one group keeps in flight at once.
pub const MAX_IN_FLIGHT: usize = 2;
/// Proposals in one entry at most.
pub const MAX_BATCH: usize = 512;
/// The queue may hold what the group writes in this long.
pub const QUEUE_TARGET: Duration = Duration::from_millis(100);
/// The queue may always hold this many.
pub const MIN_QUEUE: usize = 64;

/// What became of a proposal.
#[derive(Debug)]
pub enum WriteOutcome {
    /// Committed and applied at `index` by `leader`.
    Applied {
        response: Response,
        index: u64,
        leader: NodeId,
    },
    /// This node does not lead the group (the hint, if it knows the leader).
    NotLeader(Option<NodeId>),
    /// Refused unwritten: the group's queue is full (see the module doc).
    Overloaded,
}

/// A write's outcome, or the group's fatal error.
pub type WriteResult = Result<WriteOutcome, String>;

struct Waiter {
    proposal: Proposal,
    queued: Instant,
    tx: oneshot::Sender<WriteResult>,
}

/// One group's queue of proposals waiting for a write (see the module doc).
pub struct ProposalBatcher {
    inner: Arc<Mutex<Pending>>,
    /// A proposal that waited this long in the queue is refused instead of written.
    max_wait: Duration,
}

#[derive(Default)]
struct Pending {
    writers: usize,
    queue: Vec<Waiter>,
    rate: WriteRate,
}

/// A moving average of proposals written per second.
#[derive(Default)]
struct WriteRate {
    per_s: f64,
    since: Option<Instant>,
    written: usize,
}

impl WriteRate {
    fn record(&mut self, n: usize, now: Instant) {
        self.written += n;
        let since = *self.since.get_or_insert(now);
        let dt = now.duration_since(since).as_secs_f64();
        if dt >= 0.1 {
            let sample = self.written as f64 / dt;
            self.per_s = if self.per_s == 0.0 {
                sample
            } else {
                0.7 * self.per_s + 0.3 * sample
            };
            self.since = Some(now);
            self.written = 0;
        }
    }

    /// Proposals the queue may hold.
    fn queue_limit(&self) -> usize {
        ((self.per_s * QUEUE_TARGET.as_secs_f64()) as usize).max(MIN_QUEUE)
    }
}

impl ProposalBatcher {
    pub fn new(max_wait: Duration) -> Self {
        Self {
            inner: Arc::default(),
            max_wait,
        }
    }

    /// Proposes through `raft` (which must be this group's) and waits for the outcome.
    /// The leader stamps the entry with its wall clock when it writes it.
    pub async fn propose(&self, raft: &Raft, proposal: Proposal) -> WriteResult {
        let (tx, rx) = oneshot::channel();
        let start_writer = {
            let mut p = self.inner.lock().unwrap_or_else(|e| e.into_inner());
            if p.queue.len() >= p.rate.queue_limit() {
                hot_counter!("boxoffice_proposals_refused_total").increment(1);
                return Ok(WriteOutcome::Overloaded);
            }
            p.queue.push(Waiter {
                proposal,
                queued: Instant::now(),
                tx,
            });
            let start = p.writers < MAX_IN_FLIGHT;
            if start {
                p.writers += 1;
            }
            start
        };
        if start_writer {
            // Spawned, not driven by this caller: a caller that gives up (its
            // deadline) must not strand the proposals queued behind it.
            tokio::spawn(writer(self.inner.clone(), raft.clone(), self.max_wait));
        }
        rx.await
            .unwrap_or_else(|_| Err("the group's writer stopped".into()))
    }
}

/// Writes queued proposals, a batch at a time, until the queue is empty.
async fn writer(inner: Arc<Mutex<Pending>>, raft: Raft, max_wait: Duration) {
    loop {
        let (batch, late): (Vec<Waiter>, Vec<Waiter>) = {
            let mut p = inner.lock().unwrap_or_else(|e| e.into_inner());
            if p.queue.is_empty() {
                p.writers -= 1;
                return;
            }
            let n = p.queue.len().min(MAX_BATCH);
            let now = Instant::now();
            p.queue
                .drain(..n)
                .partition(|w| now.duration_since(w.queued) < max_wait)
        };
        if !late.is_empty() {
            hot_counter!("boxoffice_proposals_refused_total").increment(late.len() as u64);
        }
        for w in late {
            let _ = w.tx.send(Ok(WriteOutcome::Overloaded));
        }
        if batch.is_empty() {
            continue;
        }
        let n = batch.len();
        write(&raft, batch).await;
        inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .rate
            .record(n, Instant::now());
    }
}

/// Writes a non-empty batch as one entry (a lone proposal as a plain entry) and
/// answers each waiter.
async fn write(raft: &Raft, batch: Vec<Waiter>) {
    hot_histogram!("boxoffice_proposals_per_entry").record(batch.len() as f64);
    let (mut proposals, waiters): (Vec<Proposal>, Vec<_>) =
        batch.into_iter().map(|w| (w.proposal, w.tx)).unzip();
    let now_ms = chrono::Utc::now().timestamp_millis();
    let single = proposals.len() == 1;
    let command = if single {
        proposals.remove(0).stamp(now_ms)
    } else {
        Command {
            // Unused: a batch is never deduplicated as a whole, its proposals are.
            request_id: Uuid::nil(),
            stamped_ms: now_ms,
            body: CommandBody::Batch(proposals),
        }
    };
    let answers: Vec<WriteResult> = match raft.client_write(command).await {
        Ok(r) => {
            let (index, leader) = (r.log_id.index, r.log_id.leader_id.node_id);
            let applied = |response| {
                Ok(WriteOutcome::Applied {
                    response,
                    index,
                    leader,
                })
            };
            match r.data {
                response if single => vec![applied(response)],
                Response::Batch(responses) if responses.len() == waiters.len() => {
                    responses.into_iter().map(applied).collect()
                }
                other => {
                    let e = format!("a batch of {} was answered {other:?}", waiters.len());
                    waiters.iter().map(|_| Err(e.clone())).collect()
                }
            }
        }
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => waiters
            .iter()
            .map(|_| Ok(WriteOutcome::NotLeader(f.leader_id)))
            .collect(),
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            waiters.iter().map(|_| Err(e.to_string())).collect()
        }
        Err(RaftError::Fatal(e)) => waiters.iter().map(|_| Err(e.to_string())).collect(),
    };
    for (tx, answer) in waiters.into_iter().zip(answers) {
        let _ = tx.send(answer);
    }
}
