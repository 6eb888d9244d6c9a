//! Raft transport over tonic: [`Peers`] keeps one lazily connected gRPC channel per
//! peer node, and every group's [`GroupNetworkFactory`] sends its AppendEntries, Vote
//! and InstallSnapshot over those channels, tagged with its group id.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use boxoffice_proto::peer::{
    ForwardAnswer, ForwardMessage, HelloReply, HelloRequest, QueryReply, QueryRequest, RaftReply,
    RaftRequest, ReadIndexReply, ReadIndexRequest,
};
use boxoffice_proto::PeerClient;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use super::types::{GroupId, NodeId, NodeInfo, TypeConfig};
use crate::codec;

/// Largest gRPC message a node accepts or sends (snapshot chunks, entry batches).
pub const MAX_MESSAGE_BYTES: usize = 64 << 20;

/// The node's gRPC clients, one channel per peer, shared by every group.
#[derive(Clone)]
pub struct Peers {
    inner: Arc<PeersInner>,
}

struct PeersInner {
    cluster: String,
    me: NodeId,
    /// The address outgoing connections are bound to (this node's peer address),
    /// so a peer sees, and a firewall rule can match, where traffic comes from.
    local_ip: Option<IpAddr>,
    channels: RwLock<HashMap<NodeId, (String, PeerClient<Channel>)>>,
}

impl Peers {
    /// Clients for node `me`; outgoing connections leave from `local_ip` unless
    /// it is unspecified (`0.0.0.0`, `::`), when the kernel picks.
    pub fn new(cluster: String, me: NodeId, local_ip: IpAddr) -> Self {
        Self {
            inner: Arc::new(PeersInner {
                cluster,
                me,
                local_ip: (!local_ip.is_unspecified()).then_some(local_ip),
                channels: RwLock::new(HashMap::new()),
            }),
        }
    }

    /// This node's id.
    pub fn me(&self) -> NodeId {
        self.inner.me
    }

    /// The cluster name every request carries.
    pub fn cluster(&self) -> &str {
        &self.inner.cluster
    }

    /// The client of `node` at `addr`; the channel is created on first use and
    /// replaced if the node's address changed.
    pub fn client(
        &self,
        node: NodeId,
        addr: &str,
    ) -> Result<PeerClient<Channel>, tonic::transport::Error> {
        if let Some((a, c)) = self.read().get(&node) {
            if a == addr {
                return Ok(c.clone());
            }
        }
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))?
            .connect_timeout(Duration::from_millis(500))
            .tcp_nodelay(true)
            .local_address(self.inner.local_ip)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5));
        let client = PeerClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut w = self
            .inner
            .channels
            .write()
            .unwrap_or_else(|p| p.into_inner());
        w.insert(node, (addr.to_string(), client.clone()));
        Ok(client)
    }

    fn read(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<NodeId, (String, PeerClient<Channel>)>> {
        self.inner
            .channels
            .read()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// One unary call to `node`: its channel, the timeout both as `grpc-timeout`
    /// and on our side, and the reply's message.
    async fn call<Req, Resp, Fut>(
        &self,
        node: NodeId,
        addr: &str,
        timeout: Duration,
        msg: Req,
        rpc: impl FnOnce(PeerClient<Channel>, tonic::Request<Req>) -> Fut,
    ) -> Result<Resp, tonic::Status>
    where
        Fut: std::future::Future<Output = Result<tonic::Response<Resp>, tonic::Status>>,
    {
        let client = self
            .client(node, addr)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        let mut req = tonic::Request::new(msg);
        req.set_timeout(timeout);
        Ok(within(timeout, rpc(client, req)).await?.into_inner())
    }

    /// Identity and liveness probe of a peer.
    pub async fn hello(
        &self,
        node: NodeId,
        addr: &str,
        timeout: Duration,
    ) -> Result<HelloReply, tonic::Status> {
        let msg = HelloRequest {
            cluster: self.inner.cluster.clone(),
            from: self.inner.me,
        };
        self.call(node, addr, timeout, msg, |mut c, r| async move {
            c.hello(r).await
        })
        .await
    }

    /// Opens a forward stream to `node` that sends `messages` (the first must be
    /// the open message) and returns its answers ([`crate::routing::Forwarder`]).
    /// Resolves once `node` has read the open message, or fails.
    pub async fn forward_stream(
        &self,
        node: NodeId,
        addr: &str,
        messages: impl futures::Stream<Item = ForwardMessage> + Send + 'static,
    ) -> Result<tonic::Streaming<ForwardAnswer>, tonic::Status> {
        let mut client = self
            .client(node, addr)
            .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
        Ok(client.forward(messages).await?.into_inner())
    }

    /// Asks `node` for `group`'s read index (it answers if it leads the group).
    pub async fn read_index(
        &self,
        node: NodeId,
        addr: &str,
        group: GroupId,
        timeout: Duration,
    ) -> Result<ReadIndexReply, tonic::Status> {
        let msg = ReadIndexRequest {
            cluster: self.inner.cluster.clone(),
            group_id: group.0,
            from: self.inner.me,
        };
        self.call(node, addr, timeout, msg, |mut c, r| async move {
            c.read_index(r).await
        })
        .await
    }

    /// Sends an encoded query to `node` (see `QueryRequest` in the proto).
    pub async fn query(
        &self,
        node: NodeId,
        addr: &str,
        group: GroupId,
        linearizable: bool,
        query: Vec<u8>,
        timeout: Duration,
    ) -> Result<QueryReply, tonic::Status> {
        let msg = QueryRequest {
            cluster: self.inner.cluster.clone(),
            group_id: group.0,
            from: self.inner.me,
            linearizable,
            query,
        };
        self.call(node, addr, timeout, msg, |mut c, r| async move {
            c.query(r).await
        })
        .await
    }
}

/// Bounds a call on the client side too: the `grpc-timeout` header only helps if the
/// peer is alive to honour it, and a paused (SIGSTOP) peer keeps its sockets open.
async fn within<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = Result<T, tonic::Status>>,
) -> Result<T, tonic::Status> {
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(tonic::Status::deadline_exceeded(format!(
                "no answer within {timeout:?}"
            )))
        })
}

/// Creates a group's connections to its peers.
#[derive(Clone)]
pub struct GroupNetworkFactory {
    group: GroupId,
    peers: Peers,
}

impl GroupNetworkFactory {
    pub fn new(group: GroupId, peers: Peers) -> Self {
        Self { group, peers }
    }
}

impl RaftNetworkFactory<TypeConfig> for GroupNetworkFactory {
    type Network = GroupNetwork;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> Self::Network {
        GroupNetwork {
            group: self.group,
            target,
            node: node.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// One group's link to one peer.
pub struct GroupNetwork {
    group: GroupId,
    target: NodeId,
    node: NodeInfo,
    peers: Peers,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

impl GroupNetwork {
    /// Sends one Raft RPC and decodes the peer's `Result<Resp, RaftError<E>>`.
    async fn call<Req, Resp, E>(
        &self,
        rpc: Rpc,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, NodeInfo, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .peers
            .client(self.target, &self.node.peer_addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(RaftRequest {
            cluster: self.peers.cluster().to_string(),
            group_id: self.group.0,
            from: self.peers.me(),
            payload,
        });
        let ttl = option.hard_ttl();
        request.set_timeout(ttl);
        let reply: Result<tonic::Response<RaftReply>, tonic::Status> = match rpc {
            Rpc::Append => within(ttl, client.append_entries(request)).await,
            Rpc::Vote => within(ttl, client.vote(request)).await,
            Rpc::Snapshot => within(ttl, client.install_snapshot(request)).await,
        };
        let reply = reply
            .map_err(|status| status_to_rpc_error(&status))?
            .into_inner();
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode(&reply.payload).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                self.node.clone(),
                e,
            ))
        })
    }
}

/// A transport failure: the peer could not be reached (`Unavailable`: no
/// connection; openraft backs off, 500 ms, before it tries again), or anything
/// else, a call that ran out of time included (openraft tries again at its next
/// heartbeat or entry, without backing off).
///
/// A busy peer answers an append late, past the heartbeat interval openraft
/// allows it; backing off from it for 500 ms as if it were gone stalled commits
/// under overload (both followers late at once: no quorum for half a second).
fn status_to_rpc_error<E: std::error::Error>(
    status: &tonic::Status,
) -> RPCError<NodeId, NodeInfo, RaftError<NodeId, E>> {
    match status.code() {
        tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(status)),
        _ => RPCError::Network(NetworkError::new(status)),
    }
}

impl RaftNetwork<TypeConfig> for GroupNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Append, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, NodeInfo, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(Rpc::Snapshot, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, NodeInfo, RaftError<NodeId>>> {
        self.call(Rpc::Vote, &rpc, &option).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Err = RPCError<NodeId, NodeInfo, RaftError<NodeId>>;

    #[test]
    fn only_a_peer_without_a_connection_is_unreachable_a_late_answer_is_not() {
        let unreachable: Err =
            status_to_rpc_error(&tonic::Status::unavailable("tcp connect error"));
        assert!(matches!(unreachable, RPCError::Unreachable(_)));
        for late in [
            tonic::Status::deadline_exceeded("no answer within 150ms"),
            tonic::Status::cancelled("Timeout expired"),
        ] {
            let e: Err = status_to_rpc_error(&late);
            assert!(
                matches!(e, RPCError::Network(_)),
                "{late:?} must not back off"
            );
        }
    }
}
