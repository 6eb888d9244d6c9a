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

/// Picks `r` distinct nodes, least loaded first (`load` = groups a node already
/// replicates), ties broken by node id. The first of them — the group's first
/// leader, as it initializes the group — is the one that leads fewest groups
/// (`leads`), so leadership spreads too. `None` when fewer than `r` nodes exist.
pub fn place(
    nodes: &BTreeMap<u64, NodeRecord>,
    load: &BTreeMap<u64, usize>,
    leads: &BTreeMap<u64, usize>,
    r: usize,
) -> Option<Vec<u64>> {
    if r == 0 || nodes.len() < r {
        return None;
    }
    let count = |m: &BTreeMap<u64, usize>, id: &u64| m.get(id).copied().unwrap_or(0);
    let mut ranked: Vec<(usize, u64)> = nodes.keys().map(|id| (count(load, id), *id)).collect();
    ranked.sort_unstable();
    let mut chosen: Vec<u64> = ranked.into_iter().take(r).map(|(_, id)| id).collect();
    if let Some(pos) = (0..chosen.len()).min_by_key(|&i| (count(leads, &chosen[i]), chosen[i])) {
        let first = chosen.remove(pos);
        chosen.insert(0, first);
    }
    Some(chosen)
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

    /// Groups placed, replicas per node, first replicas per node.
    type Placed = (Vec<Vec<u64>>, BTreeMap<u64, usize>, BTreeMap<u64, usize>);

    /// Places `groups` groups of `r` replicas.
    fn place_many(n: u64, groups: usize, r: usize) -> Placed {
        let nodes = nodes(n);
        let (mut load, mut leads) = (BTreeMap::new(), BTreeMap::new());
        let mut placements = Vec::new();
        for _ in 0..groups {
            let p = place(&nodes, &load, &leads, r).expect("test value");
            let mut distinct = p.clone();
            distinct.sort_unstable();
            distinct.dedup();
            assert_eq!(distinct.len(), r);
            for id in &p {
                *load.entry(*id).or_default() += 1;
            }
            *leads.entry(p[0]).or_default() += 1;
            placements.push(p);
        }
        (placements, load, leads)
    }

    #[test]
    fn spreads_replicas_evenly_and_deterministically() {
        let (placements, load, leads) = place_many(5, 20, 3);
        assert_eq!(placements[0], vec![1, 2, 3]);
        assert_eq!(placements[1], vec![4, 5, 1]);
        assert_eq!(
            place_many(5, 20, 3).0,
            placements,
            "same inputs, same placement"
        );
        // 20 groups x 3 replicas over 5 nodes: 12 each; 20 first replicas: 4 each.
        assert!(load.values().all(|&l| l == 12), "{load:?}");
        assert!(leads.values().all(|&l| l == 4), "{leads:?}");
    }

    #[test]
    fn spreads_first_replicas_when_every_node_holds_every_group() {
        let (_, _, leads) = place_many(3, 300, 3);
        assert_eq!(
            leads.values().copied().collect::<Vec<_>>(),
            vec![100, 100, 100]
        );
    }

    #[test]
    fn refuses_when_there_are_too_few_nodes() {
        let none = BTreeMap::new();
        assert_eq!(place(&nodes(2), &none, &none, 3), None);
        assert_eq!(place(&nodes(3), &none, &none, 0), None);
    }
}
