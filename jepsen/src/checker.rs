//! Checkers: read a history and the final state of every node, and say what went
//! wrong. They can fail: each has unit tests with histories that must be rejected.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::history::{Op, OpType};

/// What the catalog checker found.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct CatalogReport {
    pub valid: bool,
    /// Acknowledged creations (ok) present on every node.
    pub acknowledged: usize,
    /// Indeterminate creations (info) found applied.
    pub indeterminate_applied: usize,
    /// Acknowledged venues missing from a node: `(node, venue name)`.
    pub lost: Vec<(u64, String)>,
    /// Venues on a node that no client ever asked for, or that failed definitely.
    pub phantom: Vec<(u64, String)>,
    /// Venues applied more than once on a node.
    pub duplicated: Vec<(u64, String)>,
    /// Whether the nodes' final catalogs differ.
    pub divergent: bool,
}

/// Checks a `create-venue` workload: the value of each op is `{"name": ...}`.
/// `finals` maps each node to the names of the venues it holds at the end (with
/// repetitions, so a double apply shows).
pub fn check_catalog(history: &[Op], finals: &BTreeMap<u64, Vec<String>>) -> CatalogReport {
    let mut outcome: BTreeMap<String, OpType> = BTreeMap::new();
    for op in history.iter().filter(|o| o.f == "create-venue") {
        let Some(name) = op.value["name"].as_str() else {
            continue;
        };
        if op.kind != OpType::Invoke || !outcome.contains_key(name) {
            outcome.insert(name.to_string(), op.kind);
        }
    }
    let mut r = CatalogReport::default();
    let mut first: Option<BTreeSet<&String>> = None;
    for (&node, names) in finals {
        let mut counts: BTreeMap<&String, usize> = BTreeMap::new();
        for n in names {
            *counts.entry(n).or_default() += 1;
        }
        for (name, kind) in &outcome {
            if *kind == OpType::Ok && !counts.contains_key(name) {
                r.lost.push((node, name.clone()));
            }
        }
        for (name, count) in &counts {
            match outcome.get(*name) {
                None | Some(OpType::Fail) => r.phantom.push((node, (*name).clone())),
                Some(_) if *count > 1 => r.duplicated.push((node, (*name).clone())),
                Some(_) => {}
            }
        }
        let set: BTreeSet<&String> = counts.keys().copied().collect();
        match &first {
            None => first = Some(set),
            Some(f) if *f != set => r.divergent = true,
            Some(_) => {}
        }
    }
    r.acknowledged = outcome.values().filter(|k| **k == OpType::Ok).count();
    r.indeterminate_applied = first
        .map(|f| {
            f.iter()
                .filter(|n| matches!(outcome.get(**n), Some(OpType::Info | OpType::Invoke)))
                .count()
        })
        .unwrap_or(0);
    r.valid = r.lost.is_empty() && r.phantom.is_empty() && r.duplicated.is_empty() && !r.divergent;
    r
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn op(kind: OpType, name: &str) -> Op {
        Op {
            process: "0".into(),
            kind,
            f: "create-venue".into(),
            value: json!({ "name": name }),
            time_ms: 0,
        }
    }

    fn history() -> Vec<Op> {
        vec![
            op(OpType::Invoke, "a"),
            op(OpType::Ok, "a"),
            op(OpType::Invoke, "b"),
            op(OpType::Info, "b"),
            op(OpType::Invoke, "c"),
            op(OpType::Fail, "c"),
        ]
    }

    fn finals(per_node: &[&[&str]]) -> BTreeMap<u64, Vec<String>> {
        per_node
            .iter()
            .enumerate()
            .map(|(i, names)| (i as u64 + 1, names.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    #[test]
    fn accepts_a_valid_history_with_an_indeterminate_op_either_way() {
        let r = check_catalog(&history(), &finals(&[&["a", "b"], &["a", "b"]]));
        assert!(r.valid, "{r:?}");
        assert_eq!((r.acknowledged, r.indeterminate_applied), (1, 1));
        assert!(check_catalog(&history(), &finals(&[&["a"], &["a"]])).valid);
    }

    #[test]
    fn rejects_a_lost_acknowledged_write() {
        let r = check_catalog(&history(), &finals(&[&["a"], &[]]));
        assert!(!r.valid);
        assert_eq!(r.lost, vec![(2, "a".to_string())]);
        assert!(r.divergent);
    }

    #[test]
    fn rejects_phantom_failed_and_duplicated_writes() {
        let r = check_catalog(&history(), &finals(&[&["a", "c", "zzz", "b", "b"]]));
        assert!(!r.valid);
        assert_eq!(
            r.phantom,
            vec![(1, "c".to_string()), (1, "zzz".to_string())]
        );
        assert_eq!(r.duplicated, vec![(1, "b".to_string())]);
    }
}
