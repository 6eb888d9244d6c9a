//! The node as a library function: [`run`] takes already-bound listeners and a
//! shutdown future, so the binary and the tests start nodes the same way.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use boxoffice_proto::PeerServer;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::net::{TcpListener, TcpStream};

use crate::config::ClusterConfig;
use crate::domain::{GroupKind, Proposal};
use crate::error::{Error, Result};
use crate::liveness::Liveness;
use crate::raft::{
    bootstrap_catalog, catalog_duties, GroupId, Groups, NodeId, NodeInfo, PeerService, Peers,
    Store, MAX_MESSAGE_BYTES,
};
use crate::routing::{Applied, RouteError, Router};

/// How long a stopping node lets its peer server finish the calls it is serving.
const PEER_DRAIN: Duration = Duration::from_secs(5);

/// Everything a request handler can reach.
pub struct NodeCtx {
    pub config: Arc<ClusterConfig>,
    pub me: NodeId,
    pub groups: Groups,
    pub router: Router,
    pub liveness: Liveness,
    pub prometheus: PrometheusHandle,
    pub limiters: Arc<crate::api::Limiters>,
    pub event_infos: crate::inventory::EventInfos,
    /// Where cards are resolved and (with orders) charged.
    pub payments: Arc<dyn crate::payments::PaymentGateway>,
    /// The orders this node is driving through their saga now.
    pub sagas: crate::orders::Sagas,
    /// Realtime subscriptions (WebSocket).
    pub realtime: crate::realtime::Hub,
    /// Tokens this node already verified.
    pub verified_tokens: crate::api::tokens::VerifiedTokens,
}

impl NodeCtx {
    /// Gets a proposal applied by the group's leader within the API's request deadline.
    /// A catalog write is also applied here before it is acknowledged, so whoever
    /// wrote through this node reads it back from this node (catalog reads are
    /// local). Event groups don't wait: their reads say which index they reflect.
    pub async fn propose(&self, group: GroupId, proposal: Proposal) -> Result<Applied, RouteError> {
        let applied = self
            .router
            .propose(group, proposal, self.deadline())
            .await?;
        if group == GroupId::CATALOG && applied.leader != self.me {
            if let Err(e) = Box::pin(self.wait_applied(group, applied.index)).await {
                // Committed all the same: acknowledge it; only the local read lags.
                tracing::warn!(
                    index = applied.index,
                    "catalog write not applied here in time: {e}"
                );
            }
        }
        Ok(applied)
    }

    /// Like [`NodeCtx::propose`] for an event group's command whose id the client did
    /// not choose: the leader may answer a refusal its state already decides without
    /// a log entry ([`Router::propose_refusable`]).
    pub async fn propose_refusable(
        &self,
        group: GroupId,
        proposal: Proposal,
    ) -> Result<Applied, RouteError> {
        self.router
            .propose_refusable(group, proposal, self.deadline())
            .await
    }

    /// Waits until this node's replica of `group` has applied `index` (read your
    /// own write before routing by it).
    pub async fn wait_applied(&self, group: GroupId, index: u64) -> Result<(), RouteError> {
        let g = self
            .groups
            .get(group)
            .ok_or(RouteError::UnknownGroup { group })?;
        g.raft
            .wait(Some(self.deadline()))
            .applied_index_at_least(Some(index), "own write")
            .await
            .map(|_| ())
            .map_err(|_| RouteError::NoLeader { group })
    }

    /// Runs `f` on the local catalog replica (`None` if it is not running yet).
    pub fn with_catalog<T>(
        &self,
        f: impl FnOnce(&crate::domain::catalog::Catalog) -> T,
    ) -> Option<T> {
        let g = self.groups.get(GroupId::CATALOG)?;
        let st = g.state.read();
        st.machine.catalog().map(f)
    }

    /// Looks something up in the local catalog; on a miss, catches up to the catalog
    /// leader's read index and looks again (finds what another node just wrote).
    pub async fn catalog_lookup<T>(
        &self,
        f: impl Fn(&crate::domain::catalog::Catalog) -> Option<T>,
    ) -> Result<Option<T>, crate::api::ApiError> {
        if let Some(v) = self.with_catalog(&f).flatten() {
            return Ok(Some(v));
        }
        // Boxed: a read index's state is some 4 KB, which every request that
        // looks something up would otherwise carry (and move) for this rare path.
        Box::pin(self.router.catch_up(GroupId::CATALOG, self.deadline())).await?;
        Ok(self.with_catalog(&f).flatten())
    }

    /// A user by id (401 if unknown: a token for a user that does not exist).
    pub async fn user(
        &self,
        id: &uuid::Uuid,
    ) -> Result<crate::domain::catalog::User, crate::api::ApiError> {
        self.catalog_lookup(|c| c.user(id).cloned())
            .await?
            .ok_or_else(|| crate::api::ApiError::unauthorized("unknown user"))
    }

    /// A user by normalized email.
    pub async fn user_by_email(
        &self,
        email: &str,
    ) -> Result<Option<crate::domain::catalog::User>, crate::api::ApiError> {
        self.catalog_lookup(|c| c.user_by_email(email).cloned())
            .await
    }

    /// The group of an event, from the local catalog; if this replica does not have
    /// it yet, after catching up to the catalog leader's read index (an event just
    /// created through another node is found).
    pub async fn event_group(
        &self,
        event_id: &uuid::Uuid,
    ) -> Result<GroupId, crate::api::ApiError> {
        self.catalog_lookup(|c| c.event(event_id).map(|e| GroupId(e.group_id)))
            .await?
            .ok_or_else(|| crate::api::ApiError::not_found(format!("event {event_id} not found")))
    }

    /// The API's request deadline.
    pub fn deadline(&self) -> Duration {
        Duration::from_millis(self.config.api.request_timeout_ms)
    }
}

/// Runs node `me` of `config` until `shutdown` resolves.
pub async fn run(
    config: ClusterConfig,
    me: NodeId,
    http: TcpListener,
    peer: TcpListener,
    prometheus: PrometheusHandle,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let config = Arc::new(config);
    let node = config.node(me)?.clone();
    let dir = config.data_dir(&node);
    let cluster = config.cluster_name.clone();
    let storage = config.storage.clone();
    let store = tokio::task::spawn_blocking(move || Store::open(&dir, &cluster, me, &storage))
        .await
        .map_err(|e| Error::Raft(format!("open store: {e}")))??;
    let peers = Peers::new(config.cluster_name.clone(), me, node.peer_addr.ip());
    let groups = Groups::new(
        store.clone(),
        peers.clone(),
        &config.cluster_name,
        &config.raft,
    )?;
    let fresh = !store.group_has_state(GroupId::CATALOG)?;
    let catalog = groups.start(GroupId::CATALOG, GroupKind::Catalog).await?;
    let known: Vec<(NodeId, NodeInfo)> = config
        .nodes
        .iter()
        .map(|n| {
            (
                n.id,
                NodeInfo {
                    peer_addr: n.peer_addr.to_string(),
                    http_addr: n.http_addr.to_string(),
                },
            )
        })
        .collect();
    let cluster_uuid: Arc<dyn Fn() -> Option<uuid::Uuid> + Send + Sync> = {
        let state = catalog.state.clone();
        Arc::new(move || {
            state
                .read()
                .machine
                .catalog()
                .and_then(|c| c.cluster_uuid())
        })
    };
    let liveness = Liveness::new(
        me,
        Duration::from_millis(config.raft.liveness_interval_ms),
        Duration::from_millis(config.raft.peer_down_after_ms),
    );
    let ctx = Arc::new(NodeCtx {
        config: config.clone(),
        me,
        groups: groups.clone(),
        router: Router::new(groups.clone(), known),
        liveness: liveness.clone(),
        prometheus,
        limiters: crate::api::Limiters::new(&config.rate_limits),
        event_infos: Default::default(),
        verified_tokens: Default::default(),
        payments: crate::payments::from_config(&config.payments)?,
        sagas: Default::default(),
        realtime: Default::default(),
    });

    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let grpc_service = PeerServer::new(PeerService::new(
        groups.clone(),
        cluster_uuid.clone(),
        stop_rx.clone(),
    ))
    .max_decoding_message_size(MAX_MESSAGE_BYTES)
    .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let grpc = tokio::spawn(
        tonic::transport::Server::builder()
            // A peer that vanished without closing (its streams, e.g. a realtime
            // feed, would otherwise be served until TCP gives up).
            .http2_keepalive_interval(Some(Duration::from_secs(5)))
            .http2_keepalive_timeout(Some(Duration::from_secs(5)))
            .add_service(grpc_service)
            .serve_with_incoming_shutdown(peer_incoming(peer), async move {
                let _ = stop_rx.wait_for(|stop| *stop).await;
            }),
    );

    let mut tasks = Vec::new();
    if fresh && me == config.bootstrap_node() {
        tasks.push(tokio::spawn(bootstrap_catalog(
            config.clone(),
            groups.clone(),
        )));
    }
    tasks.push(tokio::spawn(catalog_duties(config.clone(), groups.clone())));
    tasks.push(tokio::spawn(crate::placement::reconcile(groups.clone())));
    tasks.push(tokio::spawn(crate::raft::quiesce::run(
        groups.clone(),
        liveness.clone(),
        Duration::from_millis(config.raft.quiesce_after_ms),
    )));
    tasks.push(tokio::spawn(liveness.run(
        config.clone(),
        peers.clone(),
        cluster_uuid,
    )));
    tasks.push(tokio::spawn(crate::inventory::sweeper(ctx.clone())));
    tasks.push(tokio::spawn(crate::inventory::admitter(ctx.clone())));
    tasks.push(tokio::spawn(crate::orders::recovery(ctx.clone())));
    tasks.push(tokio::spawn(crate::realtime::watcher(ctx.clone())));
    {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                ctx.limiters.shrink();
            }
        }));
    }
    tracing::info!(node = me, http = %node.http_addr, peer = %node.peer_addr, fresh, "node started");

    let http = http.into_std().map_err(Error::Io)?;
    let served = api_runtime()
        .spawn(async move {
            let app = crate::api::router(ctx).into_make_service_with_connect_info::<SocketAddr>();
            let http = TcpListener::from_std(http)?;
            axum::serve(http_incoming(http), app)
                .with_graceful_shutdown(shutdown)
                .await
        })
        .await
        .unwrap_or_else(|e| Err(std::io::Error::other(format!("REST server task: {e}"))));

    tracing::info!(node = me, "shutting down");
    for t in tasks {
        t.abort();
    }
    let _ = stop_tx.send(true);
    // The peer server drains its calls; one a peer keeps open (a realtime feed) or
    // a forwarded command waiting for a commit must not hold the node up forever.
    let abort = grpc.abort_handle();
    match tokio::time::timeout(PEER_DRAIN, grpc).await {
        Ok(Ok(Err(e))) => tracing::warn!("peer server: {e}"),
        Ok(Err(e)) => tracing::warn!("peer server task: {e}"),
        Ok(Ok(Ok(()))) => {}
        Err(_) => {
            tracing::warn!("peer calls still open after {PEER_DRAIN:?}; closing them");
            abort.abort();
        }
    }
    groups.stop_all().await;
    served.map_err(Error::Io)
}

/// The runtime the REST API's connections and handlers run on, apart from the
/// one Raft, the peer server and the node's duties run on (built on first use,
/// for the process's life; if it cannot be built, the API shares the node's).
///
/// Under overload the API has thousands of requests to parse, refuse or serve;
/// on one runtime, a follower's append, a heartbeat or a read-index round queued
/// behind them, answered past openraft's deadline (the heartbeat interval), and
/// commits stalled. On their own runtime, the few Raft tasks wait only for the
/// CPU, which the kernel gives first to a thread that was sleeping.
fn api_runtime() -> tokio::runtime::Handle {
    static RUNTIME: OwnRuntime = std::sync::OnceLock::new();
    own_runtime(&RUNTIME, "API", || {
        tokio::runtime::Builder::new_multi_thread()
            .thread_name("api")
            .enable_all()
            .build()
    })
}

/// Where a part of the node keeps the runtime [`own_runtime`] built for it.
pub(crate) type OwnRuntime = std::sync::OnceLock<Option<tokio::runtime::Runtime>>;

/// A runtime of its own for one part of the node (`what`, for the log): built by
/// `build` on the first call, kept in `cell` for the process's life. If it cannot
/// be built, that part shares the calling runtime.
pub(crate) fn own_runtime(
    cell: &'static OwnRuntime,
    what: &str,
    build: impl FnOnce() -> std::io::Result<tokio::runtime::Runtime>,
) -> tokio::runtime::Handle {
    cell.get_or_init(|| {
        build()
            .map_err(|e| tracing::warn!("no {what} runtime ({e}); it shares the node's"))
            .ok()
    })
    .as_ref()
    .map_or_else(tokio::runtime::Handle::current, |rt| rt.handle().clone())
}

/// Peer connections as accepted, without Nagle: the builder's `tcp_nodelay` does
/// not apply to an incoming stream passed in, and an HTTP/2 reply's frames would
/// otherwise wait for the caller's delayed ACK (measured: p99 of the hold race
/// 58 ms with Nagle, 23–37 ms without).
fn peer_incoming(peer: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(peer).with_nodelay(Some(true))
}

/// Client connections as accepted, without Nagle (`axum::serve` leaves it on).
fn http_incoming(http: TcpListener) -> axum::serve::TapIo<TcpListener, fn(&mut TcpStream)> {
    fn no_nagle(tcp: &mut TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!("TCP_NODELAY on a client connection: {e}");
        }
    }
    http.tap_io(no_nagle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::serve::Listener;
    use futures::StreamExt;

    async fn listener() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = l.local_addr().expect("addr");
        (l, addr)
    }

    /// Regression: both servers took connections with Nagle on, and replies
    /// waited for delayed ACKs.
    #[tokio::test]
    async fn accepted_connections_have_nagle_off() {
        let (l, addr) = listener().await;
        let mut peers = peer_incoming(l);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let accepted = peers.next().await.expect("a connection").expect("accept");
        assert!(accepted.nodelay().expect("nodelay"), "peer connection");

        let (l, addr) = listener().await;
        let mut clients = http_incoming(l);
        let _client = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (accepted, _) = clients.accept().await;
        assert!(accepted.nodelay().expect("nodelay"), "client connection");
    }
}
