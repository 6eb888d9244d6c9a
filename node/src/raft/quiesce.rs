//! Quiescing idle groups, the way TiKV hibernates regions and CockroachDB quiesces
//! ranges: most events are not on sale at any moment, and openraft gives every group
//! its own ticks and heartbeats.
//!
//! - A group with no log activity for `quiesce_after_ms` quiesces, but only while it
//!   has a leader that the node-level liveness probe sees up: its leader stops
//!   heartbeats and ticks, its followers stop ticks and elections.
//! - The next request for the group wakes it: the leader turns heartbeats back on
//!   at once; followers wake when they see the leader's next entries (waking them
//!   earlier would start an election, their last leader contact being old).
//! - When liveness judges a quiesced follower's leader down, the follower wakes with
//!   elections on, so the survivors elect a new leader.
//!
//! Timers only decide *when* Raft acts, never *what* is safe: a quiesced group still
//! cannot have two leaders in one term or lose a committed write, because votes and
//! commits follow the same rules whatever the timers do.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use openraft::ServerState;

use super::groups::{Group, Groups};
use super::types::{GroupId, NodeId};
use crate::liveness::Liveness;

/// Milliseconds since this process started (a monotonic clock for activity).
fn now_ms() -> u64 {
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64
}

/// A group's activity and quiescence, shared by the request path and the manager.
#[derive(Debug, Default)]
pub struct Quiet {
    last_active_ms: AtomicU64,
    quiesced: AtomicBool,
    /// What the manager saw last: (last log index, last applied, leader).
    seen: std::sync::Mutex<(Option<u64>, Option<u64>, Option<NodeId>)>,
}

impl Quiet {
    pub fn is_quiesced(&self) -> bool {
        self.quiesced.load(Ordering::Relaxed)
    }
}

impl Group {
    /// A request is about to use this group: mark it active and, if this node leads
    /// it while quiesced, resume heartbeats at once.
    pub fn touch(&self) {
        self.quiet.last_active_ms.store(now_ms(), Ordering::Relaxed);
        if self.quiet.is_quiesced() && self.raft.metrics().borrow().state == ServerState::Leader {
            self.wake();
        }
    }

    /// Turns the group's timers back on. Callers make sure that is safe: this node
    /// leads, or its leader is down, or it has just heard from its leader (a follower
    /// woken with an old last-leader-contact would start an election at once).
    fn wake(&self) {
        if !self.quiet.quiesced.swap(false, Ordering::Relaxed) {
            return;
        }
        let rc = self.raft.runtime_config();
        rc.tick(true);
        rc.heartbeat(true);
        rc.elect(true);
        if self.raft.metrics().borrow().state == ServerState::Leader {
            // Tell followers at once that the leader is here (the trigger is async;
            // wake is called from synchronous code on the request path).
            let raft = self.raft.clone();
            tokio::spawn(async move {
                if let Err(e) = raft.trigger().heartbeat().await {
                    tracing::debug!("heartbeat after wake: {e}");
                }
            });
        }
        metrics::counter!("boxoffice_raft_group_wakes_total").increment(1);
    }

    fn quiesce(&self, leader: bool) {
        if self.quiet.quiesced.swap(true, Ordering::Relaxed) {
            return;
        }
        let rc = self.raft.runtime_config();
        if leader {
            rc.heartbeat(false);
        } else {
            rc.elect(false);
        }
        rc.tick(false);
        metrics::counter!("boxoffice_raft_group_quiesces_total").increment(1);
    }
}

/// Runs the quiescence manager forever (the server aborts it at shutdown).
pub async fn run(groups: Groups, liveness: Liveness, quiesce_after: Duration) {
    if quiesce_after.is_zero() {
        return;
    }
    let me = groups.peers().me();
    let mut interval = tokio::time::interval(Duration::from_millis(500));
    loop {
        interval.tick().await;
        let mut quiesced = 0usize;
        for g in groups.list() {
            // The catalog serves every request's routing: it stays awake.
            if g.id == GroupId::CATALOG {
                continue;
            }
            step(&g, me, &liveness, quiesce_after);
            quiesced += usize::from(g.quiet.is_quiesced());
        }
        metrics::gauge!("boxoffice_raft_groups_quiesced").set(quiesced as f64);
    }
}

fn step(g: &Group, me: NodeId, liveness: &Liveness, quiesce_after: Duration) {
    let (state, leader, last_log, applied) = {
        let m = g.raft.metrics();
        let m = m.borrow();
        (
            m.state,
            m.current_leader,
            m.last_log_index,
            m.last_applied.map(|l| l.index),
        )
    };
    let active = {
        let mut seen = g.quiet.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = (last_log, applied, leader);
        let changed = *seen != now;
        *seen = now;
        changed
    };
    if active {
        g.quiet.last_active_ms.store(now_ms(), Ordering::Relaxed);
    }
    let leader_up = leader.is_some_and(|l| l == me || liveness.is_up(l));
    if g.quiet.is_quiesced() {
        // The leader is gone (or unknown): elect a new one. Or a follower just
        // heard from its leader: its timers may come back without an election.
        if !leader_up || (active && state != ServerState::Leader) {
            g.wake();
        }
        return;
    }
    let idle = now_ms().saturating_sub(g.quiet.last_active_ms.load(Ordering::Relaxed));
    let settled = matches!(state, ServerState::Leader | ServerState::Follower);
    if settled && leader_up && idle >= quiesce_after.as_millis() as u64 {
        g.quiesce(state == ServerState::Leader);
    }
}
