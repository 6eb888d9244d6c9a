//! Node-level liveness: one probe per peer pair every `liveness_interval_ms` (not one
//! per group), so operators see which nodes are up and quiesced groups rely on it
//! instead of their own heartbeats. It also notices peers of another cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ClusterConfig;
use crate::raft::{NodeId, Peers};

/// What this node knows about its peers' liveness.
#[derive(Clone)]
pub struct Liveness {
    me: NodeId,
    last_seen: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// Probe period.
    every: Duration,
    /// Silence after which a peer counts as down.
    down_after: Duration,
}

impl Liveness {
    pub fn new(me: NodeId, every: Duration, down_after: Duration) -> Self {
        Self {
            me,
            last_seen: Arc::default(),
            every,
            down_after,
        }
    }

    /// Whether the node answered recently (this node is always up).
    pub fn is_up(&self, node: NodeId) -> bool {
        self.state_of(node) == "up"
    }

    /// `up` if the node answered recently (this node is always up), else `down`.
    pub fn state_of(&self, node: NodeId) -> &'static str {
        if node == self.me {
            return "up";
        }
        let seen = self
            .last_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .copied();
        match seen {
            Some(t) if t.elapsed() < self.down_after => "up",
            _ => "down",
        }
    }

    /// Probes every peer of the config forever (the server aborts it at shutdown).
    pub async fn run(
        self,
        config: Arc<ClusterConfig>,
        peers: Peers,
        my_uuid: Arc<dyn Fn() -> Option<uuid::Uuid> + Send + Sync>,
    ) {
        let mut warned = false;
        loop {
            let probes = config.nodes.iter().filter(|n| n.id != self.me).map(|n| {
                let peers = peers.clone();
                let addr = n.peer_addr.to_string();
                let every = self.every;
                async move { (n.id, peers.hello(n.id, &addr, every).await) }
            });
            for (id, result) in futures::future::join_all(probes).await {
                let Ok(reply) = result else { continue };
                self.last_seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id, Instant::now());
                let mine = my_uuid().map(|u| u.to_string());
                if let Some(mine) = mine {
                    if !reply.cluster_uuid.is_empty() && reply.cluster_uuid != mine && !warned {
                        tracing::error!(
                            peer = id,
                            peer_cluster_uuid = %reply.cluster_uuid,
                            our_cluster_uuid = %mine,
                            "peer holds data of a different bootstrap of this cluster (a data dir from another cluster?)"
                        );
                        warned = true;
                    }
                }
            }
            tokio::time::sleep(self.every).await;
        }
    }
}
