//! Reads through the router: a group's read point (the leader's read index and
//! clock; followers share one RPC per round), catching a replica up to it, queries
//! served linearizably or from the nearest replica, and refusals a follower answers
//! from its own replica at a read point. Also the local helpers the peer service
//! uses: this node's read index as leader, a local query, waiting for an apply.

use std::time::{Duration, Instant};

use boxoffice_proto::peer::{query_reply, read_index_reply};

use super::{fatal, Applied, RouteError, Router, Step};
use crate::codec;
use crate::domain::{Proposal, Query, QueryResult};
use crate::raft::{Group, GroupId, NodeId, ReadPoint};

/// This node's read point of `group` if it leads it: `Ok(Err(hint))` if it does not.
/// Concurrent callers share leadership confirmations ([`crate::raft::ReadIndexBatch`]).
pub async fn read_index_local(
    group: &Group,
) -> Result<Result<ReadPoint, Option<NodeId>>, RouteError> {
    group.touch();
    group
        .reads
        .read_index(&group.raft)
        .await
        .map_err(|e| fatal(group.id, e))
}

/// A query's result, the applied index it reflects, and the node that served it.
#[derive(Debug, Clone)]
pub struct Answered {
    pub result: QueryResult,
    pub applied_index: u64,
    pub served_by: NodeId,
}

/// Evaluates a query on this node's applied state of `group`.
pub fn query_local(group: &Group, query: &Query) -> (QueryResult, u64) {
    let st = group.state.read();
    (
        st.machine.query(query),
        st.last_applied.map_or(0, |l| l.index),
    )
}

/// Waits until this node has applied `index` of `group`.
pub async fn wait_applied(group: &Group, index: u64, timeout: Duration) -> Result<(), RouteError> {
    group
        .raft
        .wait(Some(timeout))
        .applied_index_at_least(Some(index), "read index")
        .await
        .map(|_| ())
        .map_err(|_| RouteError::NoLeader { group: group.id })
}

impl Router {
    /// The leader's read point of `group`: once a replica has applied its index, its
    /// state reflects every write acknowledged before this call.
    pub async fn read_index(
        &self,
        group_id: GroupId,
        deadline: Duration,
    ) -> Result<ReadPoint, RouteError> {
        let peers = self.groups.peers().clone();
        self.route(group_id, deadline, |target, local, left| {
            let peers = peers.clone();
            let addr = self.addr_of(target);
            async move {
                if let Some(group) = local {
                    return match tokio::time::timeout(left, read_index_local(&group)).await {
                        Ok(Ok(Ok(point))) => Ok(Step::Done(point)),
                        Ok(Ok(Err(hint))) => Ok(Step::NotLeader(hint)),
                        Ok(Err(e)) => Err(e),
                        Err(_) => Ok(Step::Failed),
                    };
                }
                let Some(addr) = addr else {
                    return Ok(Step::Failed);
                };
                match peers.read_index(target, &addr, group_id, left).await {
                    Ok(reply) => match reply.outcome {
                        Some(read_index_reply::Outcome::Index(index)) => {
                            Ok(Step::Done(ReadPoint { index }))
                        }
                        Some(read_index_reply::Outcome::NotLeader(nl)) => {
                            Ok(Step::NotLeader(Some(nl.leader_id).filter(|h| *h != 0)))
                        }
                        None => Ok(Step::Failed),
                    },
                    Err(_) => Ok(Step::Failed),
                }
            }
        })
        .await
    }

    /// Waits until this node's replica of `group` reflects every write acknowledged
    /// before the call (read index from the leader, then local apply up to it).
    pub async fn catch_up(&self, group_id: GroupId, deadline: Duration) -> Result<(), RouteError> {
        let started = Instant::now();
        let group = self
            .groups
            .get(group_id)
            .ok_or(RouteError::UnknownGroup { group: group_id })?;
        let point = self.read_point(&group, deadline).await?;
        wait_applied(
            &group,
            point.index,
            deadline.saturating_sub(started.elapsed()),
        )
        .await
    }

    /// A read point of `group`, which this node replicates: its own leadership
    /// confirmation when it leads, else one from the leader shared with every
    /// concurrent caller on this node (`Group::remote_reads`: one RPC serves them all).
    async fn read_point(&self, group: &Group, deadline: Duration) -> Result<ReadPoint, RouteError> {
        let leader = group.raft.metrics().borrow().current_leader;
        if leader == Some(self.me()) {
            return self.read_index(group.id, deadline).await;
        }
        let started = Instant::now();
        let (id, round) = (group.id, group.remote_reads.round_timeout());
        let mut pause = Duration::from_millis(20);
        // A round finds no leader during an election: try again, backing off, until
        // the deadline (as `route` does for a single caller).
        loop {
            let router = self.clone();
            let shared = group.remote_reads.shared(move || {
                let router = router.clone();
                async move {
                    match router.read_index(id, round).await {
                        Ok(point) => Ok(Ok(point)),
                        Err(RouteError::Fatal { reason, .. }) => Err(reason),
                        Err(_) => Ok(Err(None)),
                    }
                }
            });
            let left = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, shared).await {
                Ok(Ok(Ok(point))) => return Ok(point),
                Ok(Err(reason)) => return Err(RouteError::Fatal { group: id, reason }),
                Ok(Ok(Err(_))) if started.elapsed() + pause < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(320));
                }
                Ok(Ok(Err(_))) | Err(_) => return Err(RouteError::NoLeader { group: id }),
            }
        }
    }

    /// Answers a proposal that this follower's replica refuses, as a linearizable
    /// read: a read point from the leader (shared by concurrent callers), apply up
    /// to it, and the machine's answer at its replicated clock. The
    /// same answer the leader's [`refuse_from_state`] would give, without the
    /// forwarding hop for each request. `None`: this node leads or does not
    /// replicate the group, its state does not refuse the proposal, or no read
    /// point came in time; the proposal then takes the usual route.
    pub(super) async fn refuse_at_follower(
        &self,
        group_id: GroupId,
        proposal: &Proposal,
        deadline: Duration,
    ) -> Option<Applied> {
        let started = Instant::now();
        let group = self.groups.get(group_id)?;
        let leader = group.raft.metrics().borrow().current_leader?;
        if leader == self.me() {
            return None;
        }
        // Refused by a possibly stale state: worth a read point. Not refused: the
        // leader decides (most holds that succeed never wait for a read point).
        group.state.read().machine.refusal_from_state(proposal)?;
        group.touch();
        // Not past one round's timeout: without a leader to vouch for the state,
        // the usual route (which waits for one) takes the request.
        let budget = deadline.min(group.remote_reads.round_timeout());
        let point = self.read_point(&group, budget).await.ok()?;
        // A replica far behind would spend the request's time catching up: the
        // same budget, then the usual route.
        wait_applied(
            &group,
            point.index,
            budget.saturating_sub(started.elapsed()),
        )
        .await
        .ok()?;
        let st = group.state.read();
        let response = st.machine.refusal_from_state(proposal)?;
        hot_counter!("boxoffice_refusals_from_state_total", "at" => "follower").increment(1);
        Some(Applied {
            response,
            index: st.last_applied.map_or(0, |l| l.index),
            leader,
        })
    }

    /// Answers a query on `group`. Linearizable: reflects every write acknowledged
    /// before the call (read index, then apply up to it; a node outside the group
    /// asks the leader). Local: the nearest replica's applied state (this node's if
    /// it replicates the group, else any member's), with the index it reflects.
    pub async fn query(
        &self,
        group_id: GroupId,
        query: Query,
        linearizable: bool,
        deadline: Duration,
    ) -> Result<Answered, RouteError> {
        let me = self.me();
        if let Some(group) = self.groups.get(group_id) {
            if linearizable {
                self.catch_up(group_id, deadline).await?;
            }
            let (result, applied_index) = query_local(&group, &query);
            return Ok(Answered {
                result,
                applied_index,
                served_by: me,
            });
        }
        let encoded = codec::encode(&query).map_err(|e| fatal(group_id, e))?;
        let peers = self.groups.peers().clone();
        self.route(group_id, deadline, |target, _local, left| {
            let peers = peers.clone();
            let encoded = encoded.clone();
            let addr = self.addr_of(target);
            async move {
                let Some(addr) = addr else {
                    return Ok(Step::Failed);
                };
                match peers
                    .query(target, &addr, group_id, linearizable, encoded, left)
                    .await
                {
                    Ok(reply) => match reply.outcome {
                        Some(query_reply::Outcome::Result(bytes)) => {
                            let (result, applied_index): (QueryResult, u64) = codec::decode(&bytes)
                                .map_err(|e| {
                                    fatal(
                                        group_id,
                                        format!("bad query reply from node {target}: {e}"),
                                    )
                                })?;
                            Ok(Step::Done(Answered {
                                result,
                                applied_index,
                                served_by: target,
                            }))
                        }
                        Some(query_reply::Outcome::NotLeader(nl)) => {
                            Ok(Step::NotLeader(Some(nl.leader_id).filter(|h| *h != 0)))
                        }
                        None => Ok(Step::Failed),
                    },
                    Err(_) => Ok(Step::Failed),
                }
            }
        })
        .await
    }
}
