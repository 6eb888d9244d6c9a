//! Any node serves any request: [`Router`] gets a proposal applied by its group's
//! leader — locally when this node leads, otherwise forwarded over gRPC to the node
//! it believes leads (its own Raft's view if it replicates the group, else the last
//! leader it saw, else the group's members from the catalog in turn), following
//! "not leader" hints, with bounded retries and backoff until the request's deadline.
//! The same loop finds a leader's read index for linearizable reads.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxoffice_proto::peer::{forward_reply, query_reply, read_index_reply};

use crate::codec;
use crate::domain::{Proposal, Query, QueryResult, Response};
use crate::raft::{Group, GroupId, Groups, NodeId, NodeInfo, ReadPoint, WriteOutcome};

/// A proposal's replicated outcome, the log index it was applied at, and the node
/// that applied it as leader.
#[derive(Debug, Clone)]
pub struct Applied {
    pub response: Response,
    pub index: u64,
    pub leader: NodeId,
}

/// Why a request could not be served. A timed-out proposal may still commit: the
/// caller retries it with the same request id, which returns the first outcome.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no leader of group {group} answered within the deadline")]
    NoLeader { group: GroupId },
    #[error("group {group} is not known to this node")]
    UnknownGroup { group: GroupId },
    #[error("group {group} failed: {reason}")]
    Fatal { group: GroupId, reason: String },
    /// The group's leader refused the proposal unwritten: it has more queued than
    /// it can write within the latency budget ([`crate::raft::ProposalBatcher`]).
    #[error("group {group} is overloaded; retry shortly")]
    Overloaded { group: GroupId },
}

/// The outcome of proposing on this node.
pub enum LocalOutcome {
    Applied(Applied),
    NotLeader(Option<NodeId>),
}

/// Proposes on this node's Raft of `group`, gathered with concurrent proposals into
/// one entry ([`crate::raft::ProposalBatcher`]); the leader stamps the entry's time.
/// With `refusal_from_state`, a refusal the leader's state already decides is
/// answered without a log entry ([`refuse_from_state`]).
pub async fn propose_local(
    group: &Group,
    proposal: Proposal,
    refusal_from_state: bool,
) -> Result<LocalOutcome, RouteError> {
    group.touch();
    if refusal_from_state {
        if let Some(outcome) = refuse_from_state(group, &proposal).await? {
            return Ok(outcome);
        }
    }
    match group.writes.propose(&group.raft, proposal).await {
        Ok(WriteOutcome::Applied {
            response,
            index,
            leader,
        }) => Ok(LocalOutcome::Applied(Applied {
            response,
            index,
            leader,
        })),
        Ok(WriteOutcome::NotLeader(hint)) => Ok(LocalOutcome::NotLeader(hint)),
        Ok(WriteOutcome::Overloaded) => Err(RouteError::Overloaded { group: group.id }),
        Err(e) => Err(fatal(group.id, e)),
    }
}

/// Answers a proposal that its group's state would refuse, as a linearizable read:
/// this node confirms it leads (read index), applies up to that index, and asks
/// the machine what the proposal would get if stamped now
/// ([`crate::domain::GroupMachine::refusal_from_state`]). The refusal is then true
/// of a state that contains every write acknowledged before the request arrived,
/// at a time within the request, without a log append and its fsyncs (a conflict
/// near the end of an on-sale is most of the traffic). `None`: the proposal goes
/// through the log. Only for proposals whose outcome need not be remembered: a
/// refusal answered here is not in the dedup table (see [`Router::propose_refusable`]).
async fn refuse_from_state(
    group: &Group,
    proposal: &Proposal,
) -> Result<Option<LocalOutcome>, RouteError> {
    let now = || chrono::Utc::now().timestamp_millis();
    // Most proposals are not refused: a look at the applied state (fresh on a
    // leader) sends those straight to the log without a read index.
    if group
        .state
        .read()
        .machine
        .refusal_from_state(proposal, now())
        .is_none()
    {
        return Ok(None);
    }
    let index = match read_index_local(group).await? {
        Ok(point) => point.index,
        Err(hint) => return Ok(Some(LocalOutcome::NotLeader(hint))),
    };
    wait_applied(group, index, Duration::from_secs(2)).await?;
    let me = group.raft.metrics().borrow().id;
    let st = group.state.read();
    let Some(response) = st.machine.refusal_from_state(proposal, now()) else {
        return Ok(None);
    };
    metrics::counter!("boxoffice_refusals_from_state_total", "at" => "leader").increment(1);
    Ok(Some(LocalOutcome::Applied(Applied {
        response,
        index: st.last_applied.map_or(0, |l| l.index),
        leader: me,
    })))
}

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

fn fatal(group: GroupId, e: impl std::fmt::Display) -> RouteError {
    RouteError::Fatal {
        group,
        reason: e.to_string(),
    }
}

/// One attempt against one node.
enum Step<T> {
    Done(T),
    NotLeader(Option<NodeId>),
    /// The node did not answer usefully (down, not a member, deadline).
    Failed,
}

/// Sends requests to group leaders.
#[derive(Clone)]
pub struct Router {
    groups: Groups,
    /// Addresses of nodes this node knows from its config; the catalog adds more.
    known: Arc<Vec<(NodeId, NodeInfo)>>,
    /// Last leader seen per group this node does not replicate.
    leaders: Arc<Mutex<HashMap<GroupId, NodeId>>>,
}

impl Router {
    pub fn new(groups: Groups, known: Vec<(NodeId, NodeInfo)>) -> Self {
        Self {
            groups,
            known: Arc::new(known),
            leaders: Arc::default(),
        }
    }

    fn me(&self) -> NodeId {
        self.groups.peers().me()
    }

    /// A node's peer address: from the catalog's node records, else the config.
    fn addr_of(&self, node: NodeId) -> Option<String> {
        if let Some(catalog) = self.groups.get(GroupId::CATALOG) {
            let st = catalog.state.read();
            if let Some(n) = st.machine.catalog().and_then(|c| c.nodes().get(&node)) {
                return Some(n.peer_addr.clone());
            }
            if let Some(n) = st.membership.membership().get_node(&node) {
                return Some(n.peer_addr.clone());
            }
        }
        self.known
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, n)| n.peer_addr.clone())
    }

    /// The members of an event group, from the local catalog.
    fn members(&self, group: GroupId) -> Option<Vec<NodeId>> {
        let catalog = self.groups.get(GroupId::CATALOG)?;
        let st = catalog.state.read();
        st.machine
            .catalog()
            .and_then(|c| c.event_of_group(group.0))
            .map(|e| e.replicas.clone())
    }

    /// Whom to ask next: a hint, else this node's Raft view, else the cached
    /// leader, else the members in turn.
    fn pick(
        &self,
        group: GroupId,
        local: Option<&Group>,
        members: &[NodeId],
        attempt: usize,
    ) -> Option<NodeId> {
        if let Some(g) = local {
            if let Some(l) = g.raft.metrics().borrow().current_leader {
                return Some(l);
            }
        }
        if let Some(l) = self
            .leaders
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&group)
        {
            if attempt == 0 {
                return Some(*l);
            }
        }
        (!members.is_empty()).then(|| members[attempt % members.len()])
    }

    fn remember_leader(&self, group: GroupId, leader: Option<NodeId>) {
        let mut m = self.leaders.lock().unwrap_or_else(|p| p.into_inner());
        match leader {
            Some(l) => m.insert(group, l),
            None => m.remove(&group),
        };
    }

    /// The retry loop shared by writes and read indexes: ask one node at a time
    /// until one answers, following hints (at most three in a row), backing off
    /// 20→320 ms between rounds, until `deadline`.
    async fn route<T, F, Fut>(
        &self,
        group_id: GroupId,
        deadline: Duration,
        mut attempt: F,
    ) -> Result<T, RouteError>
    where
        F: FnMut(NodeId, Option<Arc<Group>>, Duration) -> Fut,
        Fut: Future<Output = Result<Step<T>, RouteError>>,
    {
        let local = self.groups.get(group_id);
        let members = match &local {
            Some(_) => Vec::new(),
            None => self
                .members(group_id)
                .ok_or(RouteError::UnknownGroup { group: group_id })?,
        };
        let started = Instant::now();
        let mut hint: Option<NodeId> = None;
        let (mut tries, mut hops, mut backoffs) = (0usize, 0u32, 0u32);
        loop {
            let target = hint
                .take()
                .or_else(|| self.pick(group_id, local.as_deref(), &members, tries));
            tries += 1;
            if let Some(t) = target {
                let left = deadline
                    .saturating_sub(started.elapsed())
                    .max(Duration::from_millis(1));
                let local_group = (t == self.me()).then(|| local.clone()).flatten();
                match attempt(t, local_group, left).await? {
                    Step::Done(v) => {
                        if local.is_none() {
                            self.remember_leader(group_id, Some(t));
                        }
                        return Ok(v);
                    }
                    Step::NotLeader(h) => hint = h.filter(|h| *h != t),
                    Step::Failed => {
                        if local.is_none() {
                            self.remember_leader(group_id, None);
                        }
                    }
                }
            }
            if started.elapsed() >= deadline {
                return Err(RouteError::NoLeader { group: group_id });
            }
            hops += 1;
            // Without a hint, or after a few hints in a row (a cycle during an
            // election must not spin), back off. Members are tried in turn first.
            let tried_all_members = members.is_empty() || tries % members.len() == 0;
            if (hint.is_none() && tried_all_members) || hops > 3 {
                hops = 0;
                let pause = Duration::from_millis(20u64 << backoffs.min(4));
                backoffs += 1;
                tokio::time::sleep(pause.min(deadline.saturating_sub(started.elapsed()))).await;
            }
        }
    }

    /// Gets `proposal` applied by `group`'s leader before `deadline`.
    pub async fn propose(
        &self,
        group_id: GroupId,
        proposal: Proposal,
        deadline: Duration,
    ) -> Result<Applied, RouteError> {
        self.propose_with(group_id, proposal, deadline, false).await
    }

    /// Like [`Router::propose`], but the leader may answer a refusal its state
    /// already decides without a log entry (after a read index). For requests whose
    /// id the client did not choose (no Idempotency-Key): such a refusal is not
    /// remembered under the id. Only until an attempt's outcome is unknown (a
    /// timeout, a lost reply): that attempt may be in the log, and only the log
    /// then gives the request's true outcome.
    pub async fn propose_refusable(
        &self,
        group_id: GroupId,
        proposal: Proposal,
        deadline: Duration,
    ) -> Result<Applied, RouteError> {
        self.propose_with(group_id, proposal, deadline, true).await
    }

    async fn propose_with(
        &self,
        group_id: GroupId,
        proposal: Proposal,
        deadline: Duration,
        refusal_from_state: bool,
    ) -> Result<Applied, RouteError> {
        let started = Instant::now();
        if refusal_from_state {
            if let Some(refused) = self.refuse_at_follower(group_id, &proposal, deadline).await {
                return Ok(refused);
            }
        }
        let deadline = deadline.saturating_sub(started.elapsed());
        let encoded = codec::encode(&proposal).map_err(|e| fatal(group_id, e))?;
        let peers = self.groups.peers().clone();
        // Cleared by the first attempt whose outcome is unknown.
        let may_refuse = Arc::new(AtomicBool::new(refusal_from_state));
        self.route(group_id, deadline, |target, local, left| {
            let proposal = proposal.clone();
            let encoded = encoded.clone();
            let peers = peers.clone();
            let addr = self.addr_of(target);
            let may_refuse = may_refuse.clone();
            async move {
                let refuse = may_refuse.load(Ordering::SeqCst);
                if let Some(group) = local {
                    // A leader cut off from its quorum would wait for a commit that
                    // never comes: bound it by the deadline (the outcome is then
                    // unknown; a retry with the same request id settles it).
                    let attempt = propose_local(&group, proposal, refuse);
                    return match tokio::time::timeout(left, attempt).await {
                        Ok(Ok(LocalOutcome::Applied(a))) => Ok(Step::Done(a)),
                        Ok(Ok(LocalOutcome::NotLeader(h))) => Ok(Step::NotLeader(h)),
                        Ok(Err(e)) => Err(e),
                        Err(_) => {
                            may_refuse.store(false, Ordering::SeqCst);
                            Ok(Step::Failed)
                        }
                    };
                }
                let Some(addr) = addr else {
                    return Ok(Step::Failed);
                };
                match peers
                    .forward(target, &addr, group_id, encoded, refuse, left)
                    .await
                {
                    Ok(reply) => match reply.outcome {
                        Some(forward_reply::Outcome::Response(bytes)) => {
                            let (response, index): (Response, u64) = codec::decode(&bytes)
                                .map_err(|e| {
                                    fatal(
                                        group_id,
                                        format!("bad forward reply from node {target}: {e}"),
                                    )
                                })?;
                            Ok(Step::Done(Applied {
                                response,
                                index,
                                leader: target,
                            }))
                        }
                        Some(forward_reply::Outcome::NotLeader(nl)) => {
                            Ok(Step::NotLeader(Some(nl.leader_id).filter(|h| *h != 0)))
                        }
                        None => {
                            may_refuse.store(false, Ordering::SeqCst);
                            Ok(Step::Failed)
                        }
                    },
                    // The leader refused it unwritten: a definite answer.
                    Err(status) if status.code() == tonic::Code::ResourceExhausted => {
                        Err(RouteError::Overloaded { group: group_id })
                    }
                    Err(status) => {
                        tracing::debug!(group = %group_id, target, "forward failed: {status}");
                        may_refuse.store(false, Ordering::SeqCst);
                        Ok(Step::Failed)
                    }
                }
            }
        })
        .await
    }

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
                            Ok(Step::Done(ReadPoint {
                                index,
                                time_ms: reply.leader_time_ms,
                            }))
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
    /// to it, and the machine's answer at the leader's time of the read point. The
    /// same answer the leader's [`refuse_from_state`] would give, without the
    /// forwarding hop for each request. `None`: this node leads or does not
    /// replicate the group, its state does not refuse the proposal, or no read
    /// point came in time; the proposal then takes the usual route.
    async fn refuse_at_follower(
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
        let now = chrono::Utc::now().timestamp_millis();
        // Refused by a possibly stale state: worth a read point. Not refused: the
        // leader decides (most holds that succeed never wait for a read point).
        group
            .state
            .read()
            .machine
            .refusal_from_state(proposal, now)?;
        group.touch();
        // Not past one round's timeout: without a leader to vouch for the state,
        // the usual route (which waits for one) takes the request.
        let budget = deadline.min(group.remote_reads.round_timeout());
        let point = self.read_point(&group, budget).await.ok()?;
        // A leader that sends no clock (an older node) leaves expiry undecidable here.
        if point.time_ms == 0 {
            return None;
        }
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
        let response = st.machine.refusal_from_state(proposal, point.time_ms)?;
        metrics::counter!("boxoffice_refusals_from_state_total", "at" => "follower").increment(1);
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
