//! Node-level liveness: one probe per peer pair every `liveness_interval_ms` (not one
//! per group), so operators see which nodes are up and quiesced groups rely on it
//! instead of their own heartbeats. It also notices peers of another cluster, and
//! measures how far each peer's clock is from this node's.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ClusterConfig;
use crate::raft::{NodeId, Peers};

/// What this node knows about its peers' liveness.
#[derive(Clone)]
pub struct Liveness {
    me: NodeId,
    last_seen: Arc<Mutex<HashMap<NodeId, Instant>>>,
    /// Each peer's clock offset from the last probe it answered.
    offsets: Arc<Mutex<HashMap<NodeId, ClockOffset>>>,
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
            offsets: Arc::default(),
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

    /// How far `node`'s clock was from this node's at the last probe it answered
    /// (peer minus this node, ms; within half that probe's round trip). `None` for
    /// this node, and for a peer that has not answered.
    pub fn clock_offset_ms(&self, node: NodeId) -> Option<i64> {
        self.offsets
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&node)
            .map(|o| o.offset_ms)
    }

    /// Probes every peer of the config forever (the server aborts it at shutdown).
    pub async fn run(
        self,
        config: Arc<ClusterConfig>,
        peers: Peers,
        my_uuid: Arc<dyn Fn() -> Option<uuid::Uuid> + Send + Sync>,
    ) {
        let mut warned = false;
        let mut skewed: HashSet<NodeId> = HashSet::new();
        loop {
            let probes = config.nodes.iter().filter(|n| n.id != self.me).map(|n| {
                let peers = peers.clone();
                let addr = n.peer_addr.to_string();
                let every = self.every;
                async move {
                    let sent_ms = chrono::Utc::now().timestamp_millis();
                    let reply = peers.hello(n.id, &addr, every).await;
                    let back_ms = chrono::Utc::now().timestamp_millis();
                    (n.id, reply, sent_ms, back_ms)
                }
            });
            for (id, result, sent_ms, back_ms) in futures::future::join_all(probes).await {
                let Ok(reply) = result else { continue };
                if let Some(offset) = ClockOffset::estimate(sent_ms, reply.wall_ms, back_ms) {
                    metrics::gauge!("boxoffice_peer_clock_offset_seconds", "peer" => id.to_string())
                        .set(offset.offset_ms as f64 / 1e3);
                    self.offsets
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, offset);
                    if offset.surely_beyond(CLOCK_WARN_MS) {
                        if skewed.insert(id) {
                            tracing::warn!(
                                peer = id,
                                offset_ms = offset.offset_ms,
                                "peer's clock is off this node's by more than {} s: holds expire \
                                 and minted request ids are forgotten by leaders' clocks, which \
                                 must agree within a minute at most (docs/design.md, Exactly-once)",
                                CLOCK_WARN_MS / 1000
                            );
                        }
                    } else if skewed.remove(&id) {
                        tracing::info!(
                            peer = id,
                            offset_ms = offset.offset_ms,
                            "peer's clock agrees again"
                        );
                    }
                }
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

/// How far a peer's clock may be from this node's before it logs a warning.
const CLOCK_WARN_MS: i64 = 10_000;

/// A peer's clock offset from this node's, estimated from one probe: the peer's
/// wall clock when it answered against the midpoint of the probe's round trip.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClockOffset {
    /// Peer minus this node.
    offset_ms: i64,
    /// Half the round trip: the true offset is within this of the estimate.
    error_ms: i64,
}

impl ClockOffset {
    /// `None` when the peer sent no clock (a build before it did).
    fn estimate(sent_ms: i64, peer_wall_ms: i64, back_ms: i64) -> Option<Self> {
        if peer_wall_ms == 0 {
            return None;
        }
        let error_ms = back_ms.saturating_sub(sent_ms).max(0) / 2;
        let midpoint = sent_ms.saturating_add(error_ms);
        Some(Self {
            offset_ms: peer_wall_ms.saturating_sub(midpoint),
            error_ms,
        })
    }

    /// Whether the offset exceeds `limit_ms` whatever the probe's error.
    fn surely_beyond(&self, limit_ms: i64) -> bool {
        self.offset_ms
            .saturating_abs()
            .saturating_sub(self.error_ms)
            > limit_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_offsets_are_judged_net_of_the_round_trip() {
        // A peer 12 s ahead, probed over a 40 ms round trip.
        let ahead = ClockOffset::estimate(1_000, 13_020, 1_040).expect("a clock");
        assert_eq!(
            ahead,
            ClockOffset {
                offset_ms: 12_000,
                error_ms: 20
            }
        );
        assert!(ahead.surely_beyond(CLOCK_WARN_MS));
        // Behind by the same amount.
        let behind = ClockOffset::estimate(13_000, 1_020, 13_040).expect("a clock");
        assert_eq!(behind.offset_ms, -12_000);
        assert!(behind.surely_beyond(CLOCK_WARN_MS));
        // 10.5 s apart, but a 2 s round trip could explain 1 s of it.
        let slow = ClockOffset::estimate(0, 11_500, 2_000).expect("a clock");
        assert!(!slow.surely_beyond(CLOCK_WARN_MS));
        // A peer that sends no clock tells nothing.
        assert_eq!(ClockOffset::estimate(0, 0, 10), None);
    }
}
