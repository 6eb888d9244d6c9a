//! The node's group registry: starts, looks up and stops the Raft of each group this
//! node replicates. Every group shares the node's RocksDB and peer channels.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use openraft::error::Fatal;

use super::log_store::LogStore;
use super::network::{GroupNetworkFactory, Peers};
use super::snapshot_turns::{position_of, SnapshotTurns};
use super::state_machine::{GroupStateMachine, SharedState};
use super::store::Store;
use super::types::{GroupId, Raft};
use crate::config::RaftSettings;
use crate::domain::GroupKind;
use crate::error::{Error, Result};

/// A running group on this node.
pub struct Group {
    pub id: GroupId,
    pub kind: GroupKind,
    pub raft: Raft,
    /// The applied state, for local reads.
    pub state: SharedState,
    /// Activity and quiescence (see [`super::quiesce`]).
    pub quiet: super::quiesce::Quiet,
    /// Shared leadership confirmations for read indexes, while this node leads.
    pub reads: super::read_index::ReadIndexBatch,
    /// Shared read-index requests to the leader, while this node follows.
    pub remote_reads: super::read_index::ReadIndexBatch,
    /// Concurrent proposals gathered into log entries.
    pub writes: super::batcher::ProposalBatcher,
}

/// Registry of the groups running on this node.
#[derive(Clone)]
pub struct Groups {
    groups: Arc<RwLock<BTreeMap<GroupId, Arc<Group>>>>,
    /// Serializes starts and stops: at most one Raft instance per group on this
    /// node, ever. Two would share the group's storage while each kept its own
    /// machine in memory: a short-lived duplicate re-applying entries wrote an
    /// older `last_applied` and older values over newer ones, and the replica
    /// diverged after its next restart (found by a 10-minute kill run of the chaos
    /// suite: a restarting node's placement reconciler and a peer's first RPC both
    /// started the group).
    starting: Arc<tokio::sync::Mutex<()>>,
    store: Store,
    peers: Peers,
    config: Arc<openraft::Config>,
    /// `raft.max_queue_wait_ms`.
    max_queue_wait: std::time::Duration,
    /// `raft.snapshot_logs_since_last`.
    snapshot_every: u64,
}

impl Groups {
    pub fn new(store: Store, peers: Peers, cluster: &str, settings: &RaftSettings) -> Result<Self> {
        let config = openraft::Config {
            cluster_name: cluster.to_string(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_timeout_min_ms,
            election_timeout_max: settings.election_timeout_max_ms,
            // Replicas build in turns (`snapshot_turns`), triggered by each group's
            // watcher, not all at the same entry as openraft's own policy would.
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: settings.max_in_snapshot_log_to_keep,
            install_snapshot_timeout: 2_000,
            ..Default::default()
        }
        .validate()
        .map_err(|e| Error::Config(format!("raft settings: {e}")))?;
        Ok(Self {
            groups: Arc::default(),
            starting: Arc::default(),
            store,
            peers,
            config: Arc::new(config),
            max_queue_wait: std::time::Duration::from_millis(settings.max_queue_wait_ms),
            snapshot_every: settings.snapshot_logs_since_last,
        })
    }

    /// Starts a group's Raft on this node (idempotent: returns the running group;
    /// concurrent calls start it once).
    pub async fn start(&self, id: GroupId, kind: GroupKind) -> Result<Arc<Group>> {
        if let Some(g) = self.get(id) {
            return Ok(g);
        }
        let _one_at_a_time = self.starting.lock().await;
        if let Some(g) = self.get(id) {
            return Ok(g);
        }
        let opening = std::time::Instant::now();
        let log = LogStore::new(self.store.clone(), id);
        let sm = GroupStateMachine::open(self.store.clone(), id, kind)
            .map_err(|e| Error::Raft(format!("open state machine of {id}: {e}")))?;
        let state = sm.shared();
        let network = GroupNetworkFactory::new(id, self.peers.clone());
        let raft = Raft::new(self.peers.me(), self.config.clone(), network, log, sm)
            .await
            .map_err(|e| Error::Raft(format!("start {id}: {e}")))?;
        // Opening restores the last snapshot and re-applies the committed log after
        // it (openraft does that in `Raft::new`).
        let opened = opening.elapsed();
        metrics::histogram!("boxoffice_raft_group_open_seconds").record(opened.as_secs_f64());
        if opened >= std::time::Duration::from_millis(100) {
            let applied = state.read().last_applied.map(|l| l.index);
            tracing::info!(group = %id, ms = opened.as_millis() as u64, ?applied, "opened group (snapshot restored, log re-applied)");
        }
        watch_group(
            id,
            self.peers.me(),
            &raft,
            SnapshotTurns::new(self.snapshot_every),
        );
        let group = Arc::new(Group {
            id,
            kind,
            raft,
            state,
            quiet: Default::default(),
            reads: super::read_index::ReadIndexBatch::with_lease(
                std::time::Duration::from_millis(self.config.election_timeout_max),
                super::read_index::lease_length(self.config.election_timeout_min),
            ),
            remote_reads: super::read_index::ReadIndexBatch::new(std::time::Duration::from_millis(
                self.config.election_timeout_max,
            )),
            writes: super::batcher::ProposalBatcher::new(self.max_queue_wait),
        });
        group.touch();
        self.groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, group.clone());
        Ok(group)
    }

    pub fn get(&self, id: GroupId) -> Option<Arc<Group>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Running groups in id order.
    pub fn list(&self) -> Vec<Arc<Group>> {
        self.groups
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Stops a group's Raft (its data stays on disk).
    pub async fn stop(&self, id: GroupId) {
        let _one_at_a_time = self.starting.lock().await;
        let removed = self
            .groups
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
        if let Some(g) = removed {
            if let Err(e) = g.raft.shutdown().await {
                tracing::warn!(group = %id, "raft shutdown: {e}");
            }
        }
    }

    /// Stops every group.
    pub async fn stop_all(&self) {
        let ids: Vec<GroupId> = self.list().iter().map(|g| g.id).collect();
        for id in ids {
            self.stop(id).await;
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn peers(&self) -> &Peers {
        &self.peers
    }
}

/// The exit status of a node whose storage failed (EX_IOERR).
pub const EXIT_STORAGE_FAILED: i32 = 74;

/// Fail-stop: if a group's Raft dies of a storage error (a full disk, a failed
/// fsync) or a panic, the whole node exits so its supervisor restarts it on a
/// sound disk, instead of limping on with one group frozen (it would neither vote
/// nor replicate, yet still look like that group's leader to local requests).
/// After a failed write or fsync, nothing in memory can be trusted to match the
/// disk; recovery from the write-ahead log on restart is the only safe path. A
/// group stopped on purpose ([`Groups::stop`]) is not a failure.
///
/// The same watcher, woken by every change of the group's metrics, triggers this
/// replica's snapshot builds in its turn ([`SnapshotTurns`]). It holds a handle of
/// the group's Raft until the group stops ([`Groups::stop`] shuts it down).
fn watch_group(id: GroupId, me: u64, raft: &Raft, mut turns: SnapshotTurns) {
    let mut metrics = raft.metrics();
    let raft = raft.clone();
    tokio::spawn(async move {
        loop {
            let (fatal, due) = {
                let m = metrics.borrow_and_update();
                let fatal = match &m.running_state {
                    Err(Fatal::Stopped) => return,
                    Err(fatal) => Some(fatal.to_string()),
                    Ok(()) => None,
                };
                let membership = m.membership_config.membership();
                let (position, replicas) =
                    position_of(me, membership.voter_ids().chain(membership.learner_ids()));
                let due = turns.due(
                    m.last_applied.map(|l| l.index),
                    m.snapshot.map(|l| l.index),
                    position,
                    replicas,
                );
                (fatal, due)
            };
            if let Some(fatal) = fatal {
                tracing::error!(group = %id, "raft failed, the node stops: {fatal}");
                std::process::exit(EXIT_STORAGE_FAILED);
            }
            // A stopped group answers the trigger with an error; its metrics then
            // say `Stopped` and the loop ends above.
            if due && raft.trigger().snapshot().await.is_err() {
                tracing::debug!(group = %id, "snapshot trigger refused (group stopping)");
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::*;
    use crate::config::StorageSettings;

    /// Regression: a peer's first RPC and the placement reconciler both start a
    /// group on a restarting node; there must be one Raft instance, not two.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_starts_make_one_instance() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "t", 1, &StorageSettings::default()).expect("store");
        let peers = Peers::new("t".into(), 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
        let groups = Groups::new(store, peers, "t", &RaftSettings::default()).expect("groups");
        // Both worker threads call start at the same moment, many times over.
        let barrier = Arc::new(tokio::sync::Barrier::new(2));
        let starts: Vec<_> = (0..2)
            .map(|_| {
                let (groups, barrier) = (groups.clone(), barrier.clone());
                tokio::spawn(async move {
                    let mut mine = Vec::new();
                    for g in 0..50 {
                        barrier.wait().await;
                        mine.push(groups.start(GroupId(g), GroupKind::Inventory).await);
                    }
                    mine
                })
            })
            .collect();
        let mut results = Vec::new();
        for s in starts {
            results.push(s.await.expect("join"));
        }
        for (g, (a, b)) in results[0].iter().zip(&results[1]).enumerate() {
            let (a, b) = (a.as_ref().expect("start"), b.as_ref().expect("start"));
            assert!(Arc::ptr_eq(a, b), "group {g} was started twice");
            // What the registry holds is what both callers got.
            let registered = groups.get(GroupId(g as u64)).expect("registered");
            assert!(Arc::ptr_eq(&registered, a));
        }
        groups.stop_all().await;
    }

    /// A read point from the leader lease is the commit index at the read, not the
    /// index of the round that granted the lease: writes committed since count.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn leased_read_points_include_later_writes() {
        use crate::domain::inventory::InventoryCommand;
        use crate::domain::{CommandBody, Proposal};
        use crate::raft::types::NodeInfo;
        use std::time::Duration;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path(), "t", 1, &StorageSettings::default()).expect("store");
        let peers = Peers::new("t".into(), 1, IpAddr::V4(Ipv4Addr::LOCALHOST));
        // A lease long enough that the second read below cannot outlive it.
        let settings = RaftSettings {
            election_timeout_min_ms: 60_000,
            election_timeout_max_ms: 90_000,
            ..RaftSettings::default()
        };
        let groups = Groups::new(store, peers, "t", &settings).expect("groups");
        let group = groups
            .start(GroupId(7), GroupKind::Inventory)
            .await
            .expect("start");
        let node = NodeInfo {
            peer_addr: "127.0.0.1:1".into(),
            http_addr: "127.0.0.1:2".into(),
        };
        let members = BTreeMap::from([(1u64, node)]);
        group.raft.initialize(members).await.expect("initialize");
        group
            .raft
            .wait(Some(Duration::from_secs(10)))
            .state(openraft::ServerState::Leader, "leader")
            .await
            .expect("leader");
        let leased = || group.reads.leased_reads();
        let first = group.reads.read_index(&group.raft).await;
        let first = first.expect("round").expect("leader");
        let before = leased();
        // A write after the lease was granted (refused by the machine, still an entry).
        let event_id = uuid::Uuid::from_u128(1);
        let proposal = Proposal {
            request_id: uuid::Uuid::from_u128(2),
            body: CommandBody::Inventory(InventoryCommand::Sweep { event_id }),
        };
        group
            .writes
            .propose(&group.raft, proposal)
            .await
            .expect("write");
        let written = group.raft.metrics().borrow().last_log_index.expect("log");
        assert!(written > first.index);
        let second = group.reads.read_index(&group.raft).await;
        let second = second.expect("round").expect("leader");
        assert_eq!(
            leased(),
            before + 1,
            "the second read index came from the lease"
        );
        assert!(
            second.index >= written,
            "leased read point {} misses write {written}",
            second.index
        );
        groups.stop_all().await;
    }
}
