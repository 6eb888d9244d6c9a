//! Catalog bootstrap and the catalog leader's standing duties.
//!
//! A fresh cluster initializes its catalog exactly once: only the bootstrap node (the
//! lowest voter id in `cluster.toml`) may do it, only while its own catalog has no
//! Raft state, and only after every initial voter has answered that its catalog is
//! empty too. If any peer reports an initialized catalog (this node lost its disk, or
//! the cluster has run before), it does nothing and waits to be replicated to. Nodes
//! may start in any order; bootstrap waits for all initial voters to be reachable.
//! A restart never re-initializes: the check runs against the node's own data first.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use uuid::Uuid;

use super::groups::Groups;
use super::types::{GroupId, NodeInfo};
use crate::config::ClusterConfig;
use crate::domain::catalog::{CatalogCommand, NodeRecord};
use crate::domain::{CommandBody, Proposal};
use crate::routing::{propose_local, LocalOutcome};

fn node_info(config: &ClusterConfig, id: u64) -> Option<NodeInfo> {
    config.node(id).ok().map(|n| NodeInfo {
        peer_addr: n.peer_addr.to_string(),
        http_addr: n.http_addr.to_string(),
    })
}

fn node_record(n: &crate::config::NodeConfig) -> NodeRecord {
    NodeRecord {
        node_id: n.id,
        peer_addr: n.peer_addr.to_string(),
        http_addr: n.http_addr.to_string(),
    }
}

/// Proposes a leader duty's catalog command on this node; true if it applied.
async fn propose_duty(group: &super::groups::Group, cmd: CatalogCommand) -> bool {
    let proposal = Proposal {
        request_id: Uuid::new_v4(),
        body: CommandBody::Catalog(cmd),
    };
    match propose_local(group, proposal, false).await {
        Ok(LocalOutcome::Applied(_)) => true,
        Ok(LocalOutcome::NotLeader(_)) => false,
        Err(e) => {
            tracing::warn!("catalog duty: {e}");
            false
        }
    }
}

/// Initializes the catalog group of a fresh cluster (see the module docs). Returns
/// when initialized here or found initialized elsewhere.
pub async fn bootstrap_catalog(config: Arc<ClusterConfig>, groups: Groups) {
    let me = groups.peers().me();
    let voters = config.catalog_voters();
    let mut last_report = Instant::now();
    loop {
        match groups.store().group_has_state(GroupId::CATALOG) {
            Ok(true) => {
                tracing::info!("catalog has Raft state; no bootstrap needed");
                return;
            }
            Ok(false) => {}
            Err(e) => tracing::error!("bootstrap: cannot read catalog state: {e}"),
        }
        let mut unreachable = BTreeSet::new();
        let mut initialized_elsewhere = None;
        for &id in voters.iter().filter(|id| **id != me) {
            let Some(info) = node_info(&config, id) else {
                continue;
            };
            match groups
                .peers()
                .hello(id, &info.peer_addr, Duration::from_millis(800))
                .await
            {
                Ok(r) if r.catalog_initialized => initialized_elsewhere = Some(id),
                Ok(_) => {}
                Err(_) => {
                    unreachable.insert(id);
                }
            }
        }
        if let Some(id) = initialized_elsewhere {
            tracing::info!(
                peer = id,
                "catalog already initialized on a peer; waiting to be replicated to"
            );
            return;
        }
        if unreachable.is_empty() {
            let members: BTreeMap<u64, NodeInfo> = voters
                .iter()
                .filter_map(|&id| node_info(&config, id).map(|n| (id, n)))
                .collect();
            let Some(group) = groups.get(GroupId::CATALOG) else {
                return;
            };
            match group.raft.initialize(members).await {
                Ok(()) => tracing::info!(voters = ?voters, "bootstrapped the catalog group"),
                Err(e) => tracing::info!("catalog initialize refused (already initialized): {e}"),
            }
            return;
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            tracing::info!(waiting_for = ?unreachable, "bootstrap waits for every initial catalog voter");
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Work the catalog leader does while it leads: record the cluster's bootstrap id
/// and nodes (once, ever), register nodes the file gained or readdressed since, and
/// add config nodes beyond the voters as learners, so every node can read the
/// catalog locally.
pub async fn catalog_duties(config: Arc<ClusterConfig>, groups: Groups) {
    let Some(group) = groups.get(GroupId::CATALOG) else {
        return;
    };
    loop {
        let is_leader = group.raft.metrics().borrow().current_leader == Some(groups.peers().me());
        if is_leader {
            let (has_uuid, registered, members) = {
                let st = group.state.read();
                let catalog = st.machine.catalog();
                let registered: BTreeMap<u64, NodeRecord> =
                    catalog.map(|c| c.nodes().clone()).unwrap_or_default();
                let members: BTreeSet<u64> = st
                    .membership
                    .membership()
                    .nodes()
                    .map(|(id, _)| *id)
                    .collect();
                (
                    catalog.and_then(|c| c.cluster_uuid()).is_some(),
                    registered,
                    members,
                )
            };
            let config_nodes: Vec<NodeRecord> = config.nodes.iter().map(node_record).collect();
            if !has_uuid {
                // The token-signing key: 32 random bytes, chosen once here and
                // replicated, so every node can mint and verify tokens.
                let mut token_key = vec![0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut token_key);
                let genesis = CatalogCommand::Genesis {
                    cluster_uuid: Uuid::new_v4(),
                    nodes: config_nodes.clone(),
                    token_key,
                };
                if propose_duty(&group, genesis).await {
                    tracing::info!("recorded the cluster's bootstrap id and nodes");
                }
            } else {
                // Nodes added to the file later, or whose addresses changed.
                for n in config_nodes
                    .iter()
                    .filter(|n| registered.get(&n.node_id) != Some(n))
                {
                    if propose_duty(&group, CatalogCommand::RegisterNode(n.clone())).await {
                        tracing::info!(node = n.node_id, "registered node in the catalog");
                    }
                }
            }
            for node in config.nodes.iter().filter(|n| !members.contains(&n.id)) {
                let Some(info) = node_info(&config, node.id) else {
                    continue;
                };
                match group.raft.add_learner(node.id, info, false).await {
                    Ok(_) => {
                        tracing::info!(node = node.id, "added node to the catalog as a learner")
                    }
                    Err(e) => tracing::debug!(node = node.id, "add learner: {e}"),
                }
            }
        }
        // The server aborts this task at shutdown.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
