//! [`Forwarder`]: a follower's proposals for a group's leader, gathered into calls.
//!
//! Two thirds of the requests of a 3-node cluster arrive at a node that does not
//! lead their group and are forwarded. One gRPC call per request cost an HTTP/2
//! stream each way (headers, data, trailers, a task on the leader) and was the
//! largest share of the peer traffic's CPU. The forwarder gathers, per leader and
//! group, the commands that arrive until a task it spawned for the first of them
//! runs, and sends them as one call (up to [`MAX_FORWARD_BATCH`]). It never holds a
//! command back for an earlier call to finish: a first version that kept two calls
//! in flight per lane doubled the forwarded requests' latency under load (a command
//! waited for a free call, then for the slowest command of its call), and the
//! nodes' adaptive limits shed half the join benchmark. On an idle node the task
//! runs at once and the call carries one command; on a busy one it waits its turn
//! on the runtime, and whatever arrived meanwhile rides along. Each command keeps
//! its own outcome and deadline: the leader proposes them side by side and answers
//! each, and a caller that gives up stops waiting for its own answer only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxoffice_proto::peer::{ForwardItem, ForwardOutcome};
use tokio::sync::oneshot;

use crate::raft::{GroupId, NodeId, Peers};

/// Commands in one call at most.
pub const MAX_FORWARD_BATCH: usize = 256;

/// Where a call goes: the node (at the address it was reached at) and the group.
type Lane = (NodeId, String, GroupId);

struct Waiting {
    item: ForwardItem,
    deadline: Instant,
    tx: oneshot::Sender<Result<ForwardOutcome, tonic::Status>>,
}

/// Forwards commands to group leaders, gathered per node and group (module doc).
#[derive(Clone)]
pub struct Forwarder {
    peers: Peers,
    /// Each lane's commands waiting for the task that sends them (spawned for the
    /// first; the lane is removed when that task takes them all).
    lanes: Arc<Mutex<HashMap<Lane, Vec<Waiting>>>>,
}

impl Forwarder {
    pub fn new(peers: Peers) -> Self {
        Self {
            peers,
            lanes: Arc::default(),
        }
    }

    /// Forwards an encoded proposal to `node`, which applies it if it leads `group`,
    /// and waits up to `timeout` for its outcome.
    pub async fn forward(
        &self,
        node: NodeId,
        addr: &str,
        group: GroupId,
        command: Vec<u8>,
        refusal_from_state: bool,
        timeout: Duration,
    ) -> Result<ForwardOutcome, tonic::Status> {
        let (tx, rx) = oneshot::channel();
        let lane: Lane = (node, addr.to_string(), group);
        let first = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            let queue = lanes.entry(lane.clone()).or_default();
            queue.push(Waiting {
                item: ForwardItem {
                    command,
                    refusal_from_state,
                    timeout_ms: 0,
                },
                deadline: Instant::now() + timeout,
                tx,
            });
            queue.len() == 1
        };
        if first {
            // Spawned: a caller that gives up must not strand the commands behind it.
            tokio::spawn(self.clone().send(lane));
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(tonic::Status::unavailable("the forwarder stopped")),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "no answer from the leader within the deadline",
            )),
        }
    }

    /// Takes the lane's waiting commands and sends them, in calls of at most
    /// [`MAX_FORWARD_BATCH`] side by side. Commands that arrive after the take
    /// find an empty lane and start the next task.
    async fn send(self, lane: Lane) {
        // Behind the tasks already runnable and the next look at the sockets, so
        // the commands they carry ride along.
        tokio::task::yield_now().await;
        let mut waiting = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            lanes.remove(&lane).unwrap_or_default()
        };
        while waiting.len() > MAX_FORWARD_BATCH {
            let rest = waiting.split_off(MAX_FORWARD_BATCH);
            tokio::spawn(
                self.clone()
                    .call(lane.clone(), std::mem::replace(&mut waiting, rest)),
            );
        }
        self.call(lane, waiting).await;
    }

    /// One call with `batch`, answering each command's caller.
    async fn call(self, lane: Lane, batch: Vec<Waiting>) {
        let (node, addr, group) = &lane;
        let now = Instant::now();
        // Callers past their deadline have stopped waiting: not sent.
        let live: Vec<Waiting> = batch.into_iter().filter(|w| w.deadline > now).collect();
        let Some(longest) = live.iter().map(|w| w.deadline - now).max() else {
            return;
        };
        let (items, txs): (Vec<ForwardItem>, Vec<_>) = live
            .into_iter()
            .map(|mut w| {
                let left = w.deadline.saturating_duration_since(now);
                w.item.timeout_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
                (w.item, w.tx)
            })
            .unzip();
        metrics::histogram!("boxoffice_forwards_per_call").record(items.len() as f64);
        let n = items.len();
        let answers: Vec<Result<ForwardOutcome, tonic::Status>> = match self
            .peers
            .forward(*node, addr, *group, items, longest)
            .await
        {
            Ok(reply) if reply.items.len() == n => reply.items.into_iter().map(Ok).collect(),
            Ok(reply) => {
                let e = tonic::Status::internal(format!(
                    "node {node} answered {} of {n} forwarded commands",
                    reply.items.len()
                ));
                vec![Err(e); n]
            }
            Err(status) => vec![Err(status); n],
        };
        for (tx, answer) in txs.into_iter().zip(answers) {
            let _ = tx.send(answer);
        }
    }
}
