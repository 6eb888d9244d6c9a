//! [`SnapshotTurns`]: when this replica of a group builds its next snapshot.
//!
//! openraft's own policy (`LogsSinceLast`) builds a snapshot once a given number of
//! entries have been committed since the last one. Every replica of a group
//! commits the same log, so all of them reach that point at the same entry and
//! build at once: for those seconds the group has no replica that is not busy
//! building, and its commits wait for a quorum of busy nodes (on shared cores, the
//! builds also stack up on the same CPUs). Here the replicas take turns instead:
//! each builds every `interval` applied entries, offset by its share of the interval
//! (its position among the group's members), so with three replicas one builds a
//! third of an interval after another and a quorum is always free of builds unless
//! a build outlasts a third of an interval.
//!
//! The group's watcher (`groups.rs`) asks after each change of the group's metrics
//! and triggers the build; openraft itself is configured never to build.

/// One replica's snapshot schedule (see the module doc).
#[derive(Debug, Clone)]
pub struct SnapshotTurns {
    interval: u64,
    /// The snapshot index the last trigger was for, and the applied index it was made at.
    requested: Option<(Option<u64>, u64)>,
}

impl SnapshotTurns {
    /// A build every `interval` applied entries (at least 1).
    pub fn new(interval: u64) -> Self {
        Self {
            interval: interval.max(1),
            requested: None,
        }
    }

    /// The applied index at which this replica builds next: the first point of its
    /// grid (every `interval` entries from its offset, `interval × position /
    /// replicas`) past the first interval and at least half an interval after its
    /// last snapshot (built or installed).
    pub fn next_at(&self, position: usize, replicas: usize, snapshot: Option<u64>) -> u64 {
        let n = self.interval;
        let offset = n.saturating_mul(position as u64) / replicas.max(1) as u64;
        let floor = snapshot.unwrap_or(0).saturating_add(n.div_ceil(2));
        let k = floor.saturating_sub(offset).div_ceil(n).max(1);
        k.saturating_mul(n).saturating_add(offset)
    }

    /// Whether to trigger a build now, given the group's applied and snapshot
    /// indexes and this replica's place among its members. A trigger is made once
    /// per turn: again only after the snapshot moved, or after another whole
    /// interval without it moving (a build that failed or was not started).
    pub fn due(
        &mut self,
        applied: Option<u64>,
        snapshot: Option<u64>,
        position: usize,
        replicas: usize,
    ) -> bool {
        let Some(applied) = applied else {
            return false;
        };
        if applied < self.next_at(position, replicas, snapshot) {
            return false;
        }
        if let Some((for_snapshot, at)) = self.requested {
            if for_snapshot == snapshot && applied < at.saturating_add(self.interval) {
                return false;
            }
        }
        self.requested = Some((snapshot, applied));
        true
    }
}

/// This node's position among a group's members (voters and learners, by id) and
/// their number; a node not among them counts as the last.
pub fn position_of(me: u64, members: impl IntoIterator<Item = u64>) -> (usize, usize) {
    let mut ids: Vec<u64> = members.into_iter().collect();
    ids.sort_unstable();
    ids.dedup();
    match ids.binary_search(&me) {
        Ok(i) => (i, ids.len()),
        Err(_) => (ids.len(), ids.len() + 1),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_replicas_build_a_third_of_an_interval_apart() {
        let t = SnapshotTurns::new(5000);
        let first: Vec<u64> = (0..3).map(|p| t.next_at(p, 3, None)).collect();
        assert_eq!(first, vec![5000, 6666, 8333]);
        // After each built at its point, the next turn is a whole interval later.
        let next: Vec<u64> = (0..3).map(|p| t.next_at(p, 3, Some(first[p]))).collect();
        assert_eq!(next, vec![10000, 11666, 13333]);
        // A build that cut a little past its point keeps the grid.
        assert_eq!(t.next_at(1, 3, Some(6700)), 11666);
    }

    #[test]
    fn an_installed_snapshot_defers_the_next_turn_by_at_least_half_an_interval() {
        let t = SnapshotTurns::new(5000);
        // Installed at 6,600, just before this replica's point at 6,666.
        assert_eq!(t.next_at(1, 3, Some(6600)), 11666);
        // Installed at 6,000: its next point (6,666) is too close; the one after.
        assert_eq!(t.next_at(1, 3, Some(6000)), 11666);
        assert_eq!(t.next_at(1, 3, Some(4000)), 6666);
    }

    #[test]
    fn a_lone_replica_and_the_smallest_interval() {
        let t = SnapshotTurns::new(100);
        assert_eq!(t.next_at(0, 1, None), 100);
        assert_eq!(t.next_at(0, 1, Some(100)), 200);
        let t = SnapshotTurns::new(0);
        assert_eq!(t.next_at(0, 3, None), 1);
        assert_eq!(t.next_at(2, 3, Some(7)), 8);
    }

    #[test]
    fn a_turn_is_triggered_once_until_the_snapshot_moves() {
        let mut t = SnapshotTurns::new(100);
        assert!(!t.due(None, None, 0, 3));
        assert!(!t.due(Some(99), None, 0, 3));
        assert!(t.due(Some(100), None, 0, 3));
        // Building: later applies do not trigger again...
        assert!(!t.due(Some(150), None, 0, 3));
        // ...unless a whole interval passes with no snapshot.
        assert!(t.due(Some(200), None, 0, 3));
        // The snapshot moved: the next turn is at its next point.
        assert!(!t.due(Some(250), Some(201), 0, 3));
        assert!(t.due(Some(300), Some(201), 0, 3));
    }

    #[test]
    fn positions_count_voters_and_learners_by_id() {
        assert_eq!(position_of(2, [3, 1, 2]), (1, 3));
        assert_eq!(position_of(7, [3, 1, 2, 2]), (3, 4));
        assert_eq!(position_of(1, []), (0, 1));
    }
}
