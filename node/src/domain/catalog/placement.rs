//! Placement: which nodes replicate an event's group. Pure and deterministic given
//! the catalog's state, so every replica of the catalog computes the same answer.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A node as the catalog records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub node_id: u64,
    pub peer_addr: String,
    pub http_addr: String,
}

/// Picks `r` distinct nodes, least loaded first (load = groups a node already
/// replicates), ties broken by node id. `None` when fewer than `r` nodes exist.
pub fn place(
    nodes: &BTreeMap<u64, NodeRecord>,
    load: &BTreeMap<u64, usize>,
    r: usize,
) -> Option<Vec<u64>> {
    if r == 0 || nodes.len() < r {
        return None;
    }
    let mut ranked: Vec<(usize, u64)> = nodes
        .keys()
        .map(|id| (load.get(id).copied().unwrap_or(0), *id))
        .collect();
    ranked.sort_unstable();
    Some(ranked.into_iter().take(r).map(|(_, id)| id).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(n: u64) -> BTreeMap<u64, NodeRecord> {
        (1..=n)
            .map(|id| {
                (
                    id,
                    NodeRecord {
                        node_id: id,
                        peer_addr: format!("127.0.0.1:{}", 7100 + id),
                        http_addr: format!("127.0.0.1:{}", 7000 + id),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn spreads_groups_evenly_and_deterministically() {
        let nodes = nodes(5);
        let mut load = BTreeMap::new();
        let mut placements = Vec::new();
        for _ in 0..20 {
            let p = place(&nodes, &load, 3).unwrap();
            let mut distinct = p.clone();
            distinct.dedup();
            assert_eq!(distinct.len(), 3);
            for id in &p {
                *load.entry(*id).or_default() += 1;
            }
            placements.push(p);
        }
        assert_eq!(placements[0], vec![1, 2, 3]);
        assert_eq!(placements[1], vec![4, 5, 1]);
        // 20 groups x 3 replicas over 5 nodes: 12 each.
        assert!(load.values().all(|&l| l == 12), "{load:?}");
    }

    #[test]
    fn refuses_when_there_are_too_few_nodes() {
        assert_eq!(place(&nodes(2), &BTreeMap::new(), 3), None);
        assert_eq!(place(&nodes(3), &BTreeMap::new(), 0), None);
    }
}
