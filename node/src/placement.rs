//! Placement on a node: start the Raft of every event group the catalog places on
//! this node, and initialize each group's membership exactly once.
//!
//! The catalog decides placement (`domain::catalog::place`, deterministic and pure);
//! this reconciler only acts on the local catalog replica. Initialization follows
//! openraft's rule that initializing several pristine members with the *same*
//! membership is safe: the first replica in the placement initializes at once; the
//! others initialize too if they are still pristine a few election timeouts later
//! (the first replica crashed before its entry reached them). Every member derives
//! the membership from the same catalog record, so the configs are identical. A
//! first replica that crashes after initializing finishes the job when it restarts;
//! one whose disk is lost for good in that instant leaves a group for the operator
//! to re-place (the scaling work adds that).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::domain::GroupKind;
use crate::raft::{GroupId, Groups, NodeId, NodeInfo};

/// How long a non-first replica waits for the first one before initializing too.
const FALLBACK_INIT_AFTER: Duration = Duration::from_secs(3);

/// The membership the catalog placed a group on, if this node is among it: the
/// members with their addresses and the first replica. `None` if the group is not
/// placed here or a member's address is unknown.
fn placed_here(groups: &Groups, group: GroupId) -> Option<(BTreeMap<NodeId, NodeInfo>, NodeId)> {
    let me = groups.peers().me();
    let catalog = groups.get(GroupId::CATALOG)?;
    let st = catalog.state.read();
    let c = st.machine.catalog()?;
    let e = c.event_of_group(group.0)?;
    if !e.replicas.contains(&me) {
        return None;
    }
    let members: BTreeMap<NodeId, NodeInfo> = e
        .replicas
        .iter()
        .filter_map(|id| {
            c.nodes().get(id).map(|n| {
                (
                    *id,
                    NodeInfo {
                        peer_addr: n.peer_addr.clone(),
                        http_addr: n.http_addr.clone(),
                    },
                )
            })
        })
        .collect();
    (members.len() == e.replicas.len()).then_some((members, e.replicas[0]))
}

/// Event groups the catalog places on this node that are not running yet.
fn missing(groups: &Groups) -> Vec<GroupId> {
    let me = groups.peers().me();
    let Some(catalog) = groups.get(GroupId::CATALOG) else {
        return Vec::new();
    };
    let st = catalog.state.read();
    let Some(c) = st.machine.catalog() else {
        return Vec::new();
    };
    c.events()
        .filter(|e| e.replicas.contains(&me))
        .map(|e| GroupId(e.group_id))
        .filter(|g| groups.get(*g).is_none())
        .collect()
}

/// Starts a group placed here; true if its storage was pristine.
pub async fn start_placed(groups: &Groups, group: GroupId) -> Option<bool> {
    if let Some(_running) = groups.get(group) {
        return Some(false);
    }
    placed_here(groups, group)?;
    let fresh = match groups.store().group_has_state(group) {
        Ok(has) => !has,
        Err(e) => {
            tracing::error!(%group, "cannot read group state: {e}");
            return None;
        }
    };
    match groups.start(group, GroupKind::Inventory).await {
        Ok(_) => {
            tracing::debug!(%group, "started event group");
            Some(fresh)
        }
        Err(e) => {
            tracing::error!(%group, "cannot start group: {e}");
            None
        }
    }
}

/// Runs forever (the server aborts it at shutdown): after every catalog change,
/// starts the groups placed here, then initializes the pristine ones (see the
/// module docs). Idle, it only watches the catalog's applied index.
pub async fn reconcile(groups: Groups) {
    let me = groups.peers().me();
    let Some(catalog) = groups.get(GroupId::CATALOG) else {
        return;
    };
    let mut catalog_metrics = catalog.raft.metrics();
    let mut scanned_at = None;
    // Groups started here whose storage was pristine, with when we started them.
    let mut pristine: HashMap<GroupId, Instant> = HashMap::new();
    loop {
        let applied = catalog.state.read().last_applied;
        if applied != scanned_at {
            scanned_at = applied;
            for group in missing(&groups) {
                if start_placed(&groups, group).await == Some(true) {
                    pristine.insert(group, Instant::now());
                }
            }
        }
        for (group, since) in pristine.clone() {
            let Some(g) = groups.get(group) else { continue };
            let touched = {
                let m = g.raft.metrics();
                let m = m.borrow();
                m.last_log_index.is_some() || m.vote != openraft::Vote::default()
            };
            if touched {
                // Initialized here, or a peer's vote or entries reached us: the group
                // is forming (openraft would refuse to initialize it anyway).
                pristine.remove(&group);
                continue;
            }
            let Some((members, first)) = placed_here(&groups, group) else {
                continue;
            };
            if first == me || since.elapsed() >= FALLBACK_INIT_AFTER {
                match g.raft.initialize(members).await {
                    Ok(()) => tracing::info!(%group, "initialized event group"),
                    Err(e) => tracing::debug!(%group, "initialize: {e}"),
                }
                pristine.remove(&group);
            }
        }
        // Wake on catalog changes (the metrics watch also fires on heartbeats, so
        // the applied index above decides whether to rescan), at least every 500 ms
        // for the fallback initialization.
        let _ = tokio::time::timeout(Duration::from_millis(500), catalog_metrics.changed()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
