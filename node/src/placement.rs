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

/// A group this node should run, as the catalog says.
struct Wanted {
    group: GroupId,
    members: BTreeMap<NodeId, NodeInfo>,
    replicas: usize,
    first: NodeId,
}

fn wanted(groups: &Groups) -> Vec<Wanted> {
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
        .map(|e| Wanted {
            group: GroupId(e.group_id),
            members: e
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
                .collect(),
            replicas: e.replicas.len(),
            first: e.replicas[0],
        })
        .collect()
}

/// Runs forever (the server aborts it at shutdown): wakes on catalog changes and
/// starts, then initializes, the groups placed here.
pub async fn reconcile(groups: Groups) {
    let me = groups.peers().me();
    let Some(catalog) = groups.get(GroupId::CATALOG) else {
        return;
    };
    let mut catalog_metrics = catalog.raft.metrics();
    // Groups started here whose storage was pristine, with when we first saw them.
    let mut pristine: HashMap<GroupId, Instant> = HashMap::new();
    loop {
        for w in wanted(&groups) {
            if w.members.len() != w.replicas {
                tracing::warn!(group = %w.group, "the catalog lacks a member's address; not starting it yet");
                continue;
            }
            if groups.get(w.group).is_none() {
                let fresh = match groups.store().group_has_state(w.group) {
                    Ok(has) => !has,
                    Err(e) => {
                        tracing::error!(group = %w.group, "cannot read group state: {e}");
                        continue;
                    }
                };
                if let Err(e) = groups.start(w.group, GroupKind::Inventory).await {
                    tracing::error!(group = %w.group, "cannot start group: {e}");
                    continue;
                }
                tracing::info!(group = %w.group, members = ?w.members.keys().collect::<Vec<_>>(), "started event group");
                if fresh {
                    pristine.insert(w.group, Instant::now());
                }
            }
            let Some(since) = pristine.get(&w.group).copied() else {
                continue;
            };
            let Some(group) = groups.get(w.group) else {
                continue;
            };
            let touched = {
                let m = group.raft.metrics();
                let m = m.borrow();
                m.last_log_index.is_some() || m.vote != openraft::Vote::default()
            };
            if touched {
                // Initialized here, or a peer's vote or entries reached us: the group
                // is forming (openraft would refuse to initialize it anyway).
                pristine.remove(&w.group);
                continue;
            }
            if w.first == me || since.elapsed() >= FALLBACK_INIT_AFTER {
                match group.raft.initialize(w.members.clone()).await {
                    Ok(()) => tracing::info!(group = %w.group, "initialized event group"),
                    Err(e) => tracing::debug!(group = %w.group, "initialize: {e}"),
                }
                pristine.remove(&w.group);
            }
        }
        // Wake on catalog changes, at least every 500 ms (fallback initialization).
        let _ = tokio::time::timeout(Duration::from_millis(500), catalog_metrics.changed()).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
