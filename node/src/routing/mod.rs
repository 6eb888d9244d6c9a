//! Any node serves any request: [`Router`] gets a proposal applied by its group's
//! leader — locally when this node leads, otherwise forwarded over gRPC to the node
//! it believes leads (its own Raft's view if it replicates the group, else the last
//! leader it saw, else the group's members from the catalog in turn), following
//! "not leader" hints, with bounded retries and backoff until the request's deadline.
//! The same loop finds a leader's read index for linearizable reads ([`reads`]:
//! read points, follower reads, queries).

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boxoffice_proto::peer::forward_outcome;

mod forward;
mod reads;

pub use forward::Forwarder;
pub use reads::{query_local, read_index_local, wait_applied, Answered};

use crate::codec;
use crate::domain::{Proposal, Response};
use crate::raft::{Group, GroupId, Groups, NodeId, NodeInfo, WriteOutcome};

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
/// the machine what the proposal would get at its replicated clock
/// ([`crate::domain::GroupMachine::refusal_from_state`]). The refusal is then true
/// of a state that contains every write acknowledged before the request arrived,
/// without a log append and its fsyncs (a conflict
/// near the end of an on-sale is most of the traffic). `None`: the proposal goes
/// through the log. Only for proposals whose outcome need not be remembered: a
/// refusal answered here is not in the dedup table (see [`Router::propose_refusable`]).
async fn refuse_from_state(
    group: &Group,
    proposal: &Proposal,
) -> Result<Option<LocalOutcome>, RouteError> {
    // Most proposals are not refused: a look at the applied state (fresh on a
    // leader) sends those straight to the log without a read index.
    if group
        .state
        .read()
        .machine
        .refusal_from_state(proposal)
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
    let Some(response) = st.machine.refusal_from_state(proposal) else {
        return Ok(None);
    };
    hot_counter!("boxoffice_refusals_from_state_total", "at" => "leader").increment(1);
    Ok(Some(LocalOutcome::Applied(Applied {
        response,
        index: st.last_applied.map_or(0, |l| l.index),
        leader: me,
    })))
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
    /// Proposals on their way to other nodes' leaders, gathered into calls.
    forwarder: Forwarder,
}

impl Router {
    pub fn new(groups: Groups, known: Vec<(NodeId, NodeInfo)>) -> Self {
        Self {
            forwarder: Forwarder::new(groups.peers().clone()),
            groups,
            known: Arc::new(known),
            leaders: Arc::default(),
        }
    }

    fn me(&self) -> NodeId {
        self.groups.peers().me()
    }

    /// A node's peer address: from the catalog's node records, else the config.
    pub fn addr_of(&self, node: NodeId) -> Option<String> {
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
    pub fn members(&self, group: GroupId) -> Option<Vec<NodeId>> {
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
        // Boxed: the attempt's state is some 5 KB, and every layer of the API
        // (handler, middleware, axum's boxing) would otherwise move it by value.
        Box::pin(self.propose_with(group_id, proposal, deadline, false)).await
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
        Box::pin(self.propose_with(group_id, proposal, deadline, true)).await
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
        // Cleared by the first attempt whose outcome is unknown.
        let may_refuse = Arc::new(AtomicBool::new(refusal_from_state));
        self.route(group_id, deadline, |target, local, left| {
            let proposal = proposal.clone();
            let encoded = encoded.clone();
            let forwarder = self.forwarder.clone();
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
                match forwarder
                    .forward(target, &addr, group_id, encoded, refuse, left)
                    .await
                {
                    Ok(reply) => match reply.outcome {
                        Some(forward_outcome::Outcome::Response(bytes)) => {
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
                        Some(forward_outcome::Outcome::NotLeader(nl)) => {
                            Ok(Step::NotLeader(Some(nl.leader_id).filter(|h| *h != 0)))
                        }
                        // The leader refused it unwritten: a definite answer.
                        Some(forward_outcome::Outcome::Overloaded(_)) => {
                            Err(RouteError::Overloaded { group: group_id })
                        }
                        Some(forward_outcome::Outcome::Unknown(why)) => {
                            tracing::debug!(group = %group_id, target, "forward outcome unknown: {why}");
                            may_refuse.store(false, Ordering::SeqCst);
                            Ok(Step::Failed)
                        }
                        None => {
                            may_refuse.store(false, Ordering::SeqCst);
                            Ok(Step::Failed)
                        }
                    },
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
}
