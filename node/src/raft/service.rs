//! The peer gRPC service: receives Raft RPCs for any group running here, forwarded
//! proposals (applied only if this node leads the group; never forwarded again),
//! and identity/liveness probes.

use std::sync::Arc;
use std::time::Duration;

use boxoffice_proto::peer::{
    forward_message, forward_outcome::Outcome, query_reply, read_index_reply, ForwardAnswer,
    ForwardCommand, ForwardMessage, ForwardOutcome, HelloReply, HelloRequest, NotLeader,
    QueryReply, QueryRequest, RaftReply, RaftRequest, ReadIndexReply, ReadIndexRequest,
    WatchRequest,
};
use boxoffice_proto::Peer;
use serde::Serialize;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status};

use super::groups::{Group, Groups};
use super::types::GroupId;
use crate::codec;
use crate::domain::{Proposal, Query};
use crate::routing::{
    propose_local, query_local, read_index_local, wait_applied, LocalOutcome, RouteError,
};

/// Commands of one forward stream being proposed at once; more are refused
/// unwritten (`overloaded`) until some are answered.
pub const MAX_FORWARDS_IN_FLIGHT: usize = 4096;

/// Proposes one forwarded command here, within the sender's timeout.
async fn forward_one(group: &Group, command: ForwardCommand) -> ForwardOutcome {
    let outcome = match codec::decode::<Proposal>(&command.command) {
        Err(e) => Outcome::Unknown(format!("undecodable command: {e}")),
        Ok(proposal) => {
            let timeout = Duration::from_millis(command.timeout_ms.clamp(1, 60_000));
            let attempt = propose_local(group, proposal, command.refusal_from_state);
            match tokio::time::timeout(timeout, attempt).await {
                Ok(Ok(LocalOutcome::Applied(a))) => match codec::encode(&(a.response, a.index)) {
                    Ok(bytes) => Outcome::Response(bytes),
                    Err(e) => Outcome::Unknown(e.to_string()),
                },
                Ok(Ok(LocalOutcome::NotLeader(hint))) => Outcome::NotLeader(NotLeader {
                    leader_id: hint.unwrap_or(0),
                }),
                Ok(Err(RouteError::Overloaded { .. })) => Outcome::Overloaded(true),
                Ok(Err(e)) => Outcome::Unknown(e.to_string()),
                Err(_) => Outcome::Unknown("not applied within the timeout".into()),
            }
        }
    };
    ForwardOutcome {
        outcome: Some(outcome),
    }
}

/// Reads a forward stream's commands and proposes each on its own task, answering
/// it by id when its outcome is known. A command for a group not running here is
/// answered `unknown` (the sender tries another node); past
/// [`MAX_FORWARDS_IN_FLIGHT`], `overloaded`. Reading stops when the sender stops
/// sending or this node stops (so the peer server's graceful shutdown is not held
/// by a stream a peer keeps open); answers already under way are still sent, and
/// the answer stream ends with the last.
async fn serve_forwards(
    groups: Groups,
    mut incoming: tonic::Streaming<ForwardMessage>,
    answers: mpsc::UnboundedSender<Result<ForwardAnswer, Status>>,
    mut stopping: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_FORWARDS_IN_FLIGHT));
    loop {
        let next = tokio::select! {
            next = incoming.message() => next,
            _ = stopping.wait_for(|stop| *stop) => return,
        };
        let command = match next {
            Ok(Some(ForwardMessage {
                message: Some(forward_message::Message::Command(c)),
            })) => c,
            Ok(Some(_)) => {
                let _ = answers.send(Err(Status::invalid_argument(
                    "a forward stream opens once; then only commands",
                )));
                return;
            }
            Ok(None) => return,
            Err(status) => {
                tracing::debug!("forward stream ended: {status}");
                return;
            }
        };
        let id = command.id;
        let answer = |outcome| {
            Ok(ForwardAnswer {
                id,
                outcome: Some(ForwardOutcome {
                    outcome: Some(outcome),
                }),
            })
        };
        let Some(group) = groups.get(GroupId(command.group_id)) else {
            let why = format!("group {} is not running on this node", command.group_id);
            let _ = answers.send(answer(Outcome::Unknown(why)));
            continue;
        };
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            let _ = answers.send(answer(Outcome::Overloaded(true)));
            continue;
        };
        let answers = answers.clone();
        tokio::spawn(async move {
            let outcome = forward_one(&group, command).await;
            drop(permit);
            let _ = answers.send(Ok(ForwardAnswer {
                id,
                outcome: Some(outcome),
            }));
        });
    }
}

/// Serves peers' requests against this node's groups.
pub struct PeerService {
    groups: Groups,
    /// Catalog's cluster uuid once known, reported in hello replies.
    cluster_uuid: std::sync::Arc<dyn Fn() -> Option<uuid::Uuid> + Send + Sync>,
    /// Turns true when the node stops: forward streams stop reading.
    stopping: watch::Receiver<bool>,
}

impl PeerService {
    pub fn new(
        groups: Groups,
        cluster_uuid: std::sync::Arc<dyn Fn() -> Option<uuid::Uuid> + Send + Sync>,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        Self {
            groups,
            cluster_uuid,
            stopping,
        }
    }

    fn check_cluster(&self, cluster: &str) -> Result<(), Status> {
        if cluster != self.groups.peers().cluster() {
            return Err(Status::permission_denied(format!(
                "this node belongs to cluster {:?}, not {cluster:?}",
                self.groups.peers().cluster()
            )));
        }
        Ok(())
    }

    fn group(&self, cluster: &str, id: u64) -> Result<std::sync::Arc<Group>, Status> {
        self.check_cluster(cluster)?;
        self.groups
            .get(GroupId(id))
            .ok_or_else(|| Status::not_found(format!("group {id} is not running on this node")))
    }

    /// For Raft RPCs: the group, started now if the catalog places it here and a
    /// peer got to it before this node's placement reconciler did (saves the peer an
    /// election timeout).
    async fn raft_group(&self, cluster: &str, id: u64) -> Result<std::sync::Arc<Group>, Status> {
        match self.group(cluster, id) {
            Ok(g) => Ok(g),
            Err(status) => {
                crate::placement::start_placed(&self.groups, GroupId(id)).await;
                self.groups.get(GroupId(id)).ok_or(status)
            }
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, Status> {
    codec::decode(bytes).map_err(|e| Status::invalid_argument(format!("undecodable payload: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftReply>, Status> {
    let payload = codec::encode(value).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl Peer for PeerService {
    type WatchStream = crate::realtime::feed::Frames;

    async fn watch(
        &self,
        req: Request<tonic::Streaming<WatchRequest>>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let mut incoming = req.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("a watch starts with its interest"))?;
        let group = self.group(&first.cluster, first.group_id)?;
        let interest = decode(&first.interest)?;
        Ok(Response::new(crate::realtime::feed::serve(
            self.groups.clone(),
            group,
            interest,
            incoming,
        )))
    }

    async fn append_entries(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        let group = self.raft_group(&req.cluster, req.group_id).await?;
        let rpc = decode(&req.payload)?;
        reply(&group.raft.append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftRequest>) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        let group = self.raft_group(&req.cluster, req.group_id).await?;
        let rpc = decode(&req.payload)?;
        reply(&group.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftRequest>,
    ) -> Result<Response<RaftReply>, Status> {
        let req = req.into_inner();
        let group = self.raft_group(&req.cluster, req.group_id).await?;
        let rpc = decode(&req.payload)?;
        reply(&group.raft.install_snapshot(rpc).await)
    }

    type ForwardStream = UnboundedReceiverStream<Result<ForwardAnswer, Status>>;

    async fn forward(
        &self,
        req: Request<tonic::Streaming<ForwardMessage>>,
    ) -> Result<Response<Self::ForwardStream>, Status> {
        let mut incoming = req.into_inner();
        let open = match incoming.message().await? {
            Some(ForwardMessage {
                message: Some(forward_message::Message::Open(open)),
            }) => open,
            _ => {
                return Err(Status::invalid_argument(
                    "a forward stream starts with its open message",
                ))
            }
        };
        self.check_cluster(&open.cluster)?;
        tracing::debug!(from = open.from, "forward stream opened");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(serve_forwards(
            self.groups.clone(),
            incoming,
            tx,
            self.stopping.clone(),
        ));
        Ok(Response::new(UnboundedReceiverStream::new(rx)))
    }

    async fn read_index(
        &self,
        req: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexReply>, Status> {
        let req = req.into_inner();
        let group = self.group(&req.cluster, req.group_id)?;
        let outcome = match read_index_local(&group).await {
            Ok(Ok(point)) => read_index_reply::Outcome::Index(point.index),
            Ok(Err(hint)) => read_index_reply::Outcome::NotLeader(NotLeader {
                leader_id: hint.unwrap_or(0),
            }),
            Err(e) => return Err(Status::internal(e.to_string())),
        };
        Ok(Response::new(ReadIndexReply {
            outcome: Some(outcome),
        }))
    }

    async fn query(&self, req: Request<QueryRequest>) -> Result<Response<QueryReply>, Status> {
        // The requester bounds the call on its side; this bounds our own wait for
        // the apply to reach the read index, should the requester be gone.
        let timeout = std::time::Duration::from_secs(10);
        let req = req.into_inner();
        let group = self.group(&req.cluster, req.group_id)?;
        let query: Query = decode(&req.query)?;
        group.touch();
        if req.linearizable {
            match read_index_local(&group).await {
                Ok(Ok(point)) => wait_applied(&group, point.index, timeout)
                    .await
                    .map_err(|e| Status::unavailable(e.to_string()))?,
                Ok(Err(hint)) => {
                    return Ok(Response::new(QueryReply {
                        outcome: Some(query_reply::Outcome::NotLeader(NotLeader {
                            leader_id: hint.unwrap_or(0),
                        })),
                    }))
                }
                Err(e) => return Err(Status::internal(e.to_string())),
            }
        }
        let answer = query_local(&group, &query);
        let bytes = codec::encode(&answer).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(QueryReply {
            outcome: Some(query_reply::Outcome::Result(bytes)),
        }))
    }

    async fn hello(&self, req: Request<HelloRequest>) -> Result<Response<HelloReply>, Status> {
        let req = req.into_inner();
        self.check_cluster(&req.cluster)?;
        let initialized = self
            .groups
            .store()
            .group_has_state(GroupId::CATALOG)
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(HelloReply {
            cluster: self.groups.peers().cluster().to_string(),
            node_id: self.groups.peers().me(),
            catalog_initialized: initialized,
            cluster_uuid: (self.cluster_uuid)()
                .map(|u| u.to_string())
                .unwrap_or_default(),
            wall_ms: chrono::Utc::now().timestamp_millis(),
        }))
    }
}
