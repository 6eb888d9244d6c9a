//! Any node serves any request: [`Router`] takes a proposal for a group and gets it
//! applied by that group's leader — locally when this node leads, otherwise forwarded
//! over gRPC to the leader it believes in, following "not leader" hints, with bounded
//! retries and backoff until the request's deadline.

use std::time::{Duration, Instant};

use boxoffice_proto::peer::forward_reply::Outcome;
use openraft::error::{ClientWriteError, RaftError};

use crate::codec;
use crate::domain::{Proposal, Response};
use crate::raft::{Group, GroupId, Groups, NodeId, NodeInfo};

/// A proposal's replicated outcome and the log index it was applied at.
#[derive(Debug, Clone)]
pub struct Applied {
    pub response: Response,
    pub index: u64,
}

/// Why a proposal could not be applied. A timed-out proposal may still commit: the
/// caller retries it with the same request id, which returns the first outcome.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("no leader of group {group} applied the request within the deadline")]
    NoLeader { group: GroupId },
    #[error("group {group} is not known to this node")]
    UnknownGroup { group: GroupId },
    #[error("group {group} failed: {reason}")]
    Fatal { group: GroupId, reason: String },
}

/// The outcome of proposing on this node.
pub enum LocalOutcome {
    Applied(Applied),
    NotLeader(Option<NodeId>),
}

/// Proposes on this node's Raft of `group`; the leader stamps the proposal's time.
pub async fn propose_local(group: &Group, proposal: Proposal) -> Result<LocalOutcome, RouteError> {
    let now_ms = chrono::Utc::now().timestamp_millis();
    match group.raft.client_write(proposal.stamp(now_ms)).await {
        Ok(r) => Ok(LocalOutcome::Applied(Applied {
            response: r.data,
            index: r.log_id.index,
        })),
        Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
            Ok(LocalOutcome::NotLeader(f.leader_id))
        }
        Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
            Err(RouteError::Fatal {
                group: group.id,
                reason: e.to_string(),
            })
        }
        Err(RaftError::Fatal(e)) => Err(RouteError::Fatal {
            group: group.id,
            reason: e.to_string(),
        }),
    }
}

/// Sends proposals to group leaders.
#[derive(Clone)]
pub struct Router {
    groups: Groups,
    /// Addresses of nodes this node knows from its config (membership adds more).
    known: Vec<(NodeId, NodeInfo)>,
}

impl Router {
    pub fn new(groups: Groups, known: Vec<(NodeId, NodeInfo)>) -> Self {
        Self { groups, known }
    }

    fn addr_of(&self, group: &Group, node: NodeId) -> Option<String> {
        let st = group.state.read();
        if let Some(n) = st.membership.membership().get_node(&node) {
            return Some(n.peer_addr.clone());
        }
        self.known
            .iter()
            .find(|(id, _)| *id == node)
            .map(|(_, n)| n.peer_addr.clone())
    }

    /// Gets `proposal` applied by `group`'s leader before `deadline`.
    pub async fn propose(
        &self,
        group_id: GroupId,
        proposal: Proposal,
        deadline: Duration,
    ) -> Result<Applied, RouteError> {
        let group = self
            .groups
            .get(group_id)
            .ok_or(RouteError::UnknownGroup { group: group_id })?;
        let started = Instant::now();
        let me = self.groups.peers().me();
        let encoded = codec::encode(&proposal).map_err(|e| RouteError::Fatal {
            group: group_id,
            reason: e.to_string(),
        })?;
        let mut hint: Option<NodeId> = None;
        let mut attempt: u32 = 0;
        // Hints followed back to back; past a few, back off anyway (a hint cycle
        // during an election must not spin).
        let mut hops: u32 = 0;
        loop {
            let target = hint.or_else(|| group.raft.metrics().borrow().current_leader);
            hint = None;
            match target {
                Some(t) if t == me => {
                    // A leader cut off from its quorum would wait for a commit that
                    // never comes: bound it by the request's deadline (the outcome is
                    // then unknown and a retry with the same request id settles it).
                    let left = deadline.saturating_sub(started.elapsed());
                    match tokio::time::timeout(left, propose_local(&group, proposal.clone())).await
                    {
                        Ok(outcome) => match outcome? {
                            LocalOutcome::Applied(a) => return Ok(a),
                            LocalOutcome::NotLeader(h) => hint = h.filter(|h| *h != me),
                        },
                        Err(_) => return Err(RouteError::NoLeader { group: group_id }),
                    }
                }
                Some(t) => {
                    if let Some(addr) = self.addr_of(&group, t) {
                        let left = deadline.saturating_sub(started.elapsed());
                        match self
                            .groups
                            .peers()
                            .forward(
                                t,
                                &addr,
                                group_id,
                                encoded.clone(),
                                left.max(Duration::from_millis(1)),
                            )
                            .await
                        {
                            Ok(reply) => match reply.outcome {
                                Some(Outcome::Response(bytes)) => {
                                    let (response, index): (Response, u64) = codec::decode(&bytes)
                                        .map_err(|e| RouteError::Fatal {
                                            group: group_id,
                                            reason: format!("bad forward reply from node {t}: {e}"),
                                        })?;
                                    return Ok(Applied { response, index });
                                }
                                Some(Outcome::NotLeader(nl)) => {
                                    hint = Some(nl.leader_id).filter(|h| *h != 0 && *h != t);
                                }
                                None => {}
                            },
                            Err(status) => {
                                tracing::debug!(group = %group_id, target = t, "forward failed: {status}");
                            }
                        }
                    }
                }
                None => {}
            }
            if started.elapsed() >= deadline {
                return Err(RouteError::NoLeader { group: group_id });
            }
            hops += 1;
            if hint.is_none() || hops > 3 {
                hops = 0;
                // Back off before asking again: 20, 40, 80 ... up to 320 ms.
                let pause = Duration::from_millis(20u64 << attempt.min(4));
                attempt += 1;
                tokio::time::sleep(pause.min(deadline.saturating_sub(started.elapsed()))).await;
            }
        }
    }
}
