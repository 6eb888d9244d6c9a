//! Per-seat linearizability of holds: a Wing–Gong–Lowe search with memoization of
//! (linearized set, state), run on each seat's projection of the history. Sound
//! because linearizability is local (Herlihy & Wing): a history is linearizable iff
//! every object's subhistory is, so each seat is checked alone, and a few thousand
//! operations check in milliseconds. (A multi-seat hold becomes one operation per
//! seat; the all-or-nothing across seats is checked by the final-state checks.)
//!
//! The model of one seat: `Free` or `Held(reservation)`. Operations, from the
//! workload's history:
//! - `acquire(r)`: a hold that names the seat and was acknowledged (or may have
//!   happened: an `info` completion may take effect at any time after its
//!   invocation, or never): `Free → Held(r)`.
//! - `busy`: a hold refused with 409 naming this seat as taken, or a read that saw
//!   it HELD or SOLD: needs `Held(_)`.
//! - `free`: a hold refused with 409 that did not name this seat (the machine
//!   reports every taken seat of the request at once), or a read that saw it
//!   AVAILABLE: needs `Free`.
//! - `release(r)`: `Held(r) → Free`; anything else is unchanged (idempotent).
//! - `owned(r)` / `not-owned(r)`: a read of reservation `r` (linearizable on the
//!   server) that saw it ACTIVE, or anything else: needs `Held(r)`, or not.
//! - `expire(r)`: `Held(r) → Free`, an event no client invokes: it may happen at
//!   any time after the earliest moment the hold could expire ([`Expiry`]), or
//!   never.

use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

use serde::Serialize;
use serde_json::Value;

use crate::history::{Op, OpType};

/// One seat's state in the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Seat {
    Free,
    Held(u32),
}

/// What an operation does to one seat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatOp {
    Acquire(u32),
    Busy,
    Free,
    Release(u32),
    Expire(u32),
    Owned(u32),
    NotOwned(u32),
}

impl SeatOp {
    /// The next state, or `None` if the operation cannot happen in `s`.
    fn step(self, s: Seat) -> Option<Seat> {
        match (self, s) {
            (SeatOp::Acquire(r), Seat::Free) => Some(Seat::Held(r)),
            (SeatOp::Acquire(_), Seat::Held(_)) => None,
            (SeatOp::Busy, Seat::Held(_)) => Some(s),
            (SeatOp::Busy, Seat::Free) => None,
            (SeatOp::Free, Seat::Free) => Some(s),
            (SeatOp::Free, Seat::Held(_)) => None,
            (SeatOp::Release(r), Seat::Held(h)) if h == r => Some(Seat::Free),
            (SeatOp::Release(_), _) => Some(s),
            // Only a live hold expires (a no-op expiry would only grow the search).
            (SeatOp::Expire(r), Seat::Held(h)) if h == r => Some(Seat::Free),
            (SeatOp::Expire(_), _) => None,
            (SeatOp::Owned(r), Seat::Held(h)) if h == r => Some(s),
            (SeatOp::Owned(_), _) => None,
            (SeatOp::NotOwned(r), Seat::Held(h)) if h == r => None,
            (SeatOp::NotOwned(_), _) => Some(s),
        }
    }
}

/// An operation on one seat with its real-time interval (history positions);
/// `end == None` for an operation that may or may not have happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timed {
    pub op: SeatOp,
    pub start: usize,
    pub end: Option<usize>,
}

/// Whether one seat's operations are linearizable from `Free`. Every operation with
/// an `end` must be placed; the others may be placed (after their start) or not.
pub fn linearizable(ops: &[Timed]) -> bool {
    search(ops) == Search::Linearizable
}

/// The outcome of one seat's search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Search {
    Linearizable,
    /// No legal order: the history position where the search got furthest (the
    /// end of the first operation it could not place), to show what is around it.
    StuckAt(usize),
    /// More than [`MAX_STATES`] states without an answer.
    Inconclusive,
}

/// The most (placed set, state) pairs one seat's search may visit.
pub const MAX_STATES: usize = 200_000;

/// The memo key of a placed set: the number of leading all-placed words, then the
/// words up to the last placed operation (compact: placements cluster at the
/// frontier).
fn memo_key(set: &[u64]) -> (usize, Vec<u64>) {
    let lo = set.iter().take_while(|w| **w == u64::MAX).count();
    let hi = set
        .iter()
        .rposition(|w| *w != 0)
        .map_or(lo, |h| h + 1)
        .max(lo);
    (lo, set[lo..hi].to_vec())
}

/// Searches one seat's operations for a legal order from `Free`.
pub fn search(ops: &[Timed]) -> Search {
    let mut ops = ops.to_vec();
    ops.sort_by_key(|o| o.start);
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let required = ops.iter().filter(|o| o.end.is_some()).count();
    // (placed set, state, required ops placed)
    let mut seen: HashSet<((usize, Vec<u64>), Seat)> = HashSet::new();
    let mut stack: Vec<(Vec<u64>, Seat, usize)> = vec![(vec![0; words], Seat::Free, 0)];
    let mut furthest = (0, 0);
    while let Some((set, state, placed)) = stack.pop() {
        if placed == required {
            return Search::Linearizable;
        }
        if seen.len() > MAX_STATES {
            return Search::Inconclusive;
        }
        // An operation can go next only if it started before every unplaced
        // operation that must be placed has ended. Ops are sorted by start and end
        // after they start, so the scan stops at the first start past the horizon.
        let mut horizon = usize::MAX;
        let mut candidates = Vec::new();
        // Walk the unplaced operations a bitset word at a time (placed ones are
        // skipped 64 at once: long histories are mostly placed).
        'scan: for (w, word) in set.iter().enumerate() {
            let mut unplaced = !word;
            while unplaced != 0 {
                let i = w * 64 + unplaced.trailing_zeros() as usize;
                unplaced &= unplaced - 1;
                let Some(o) = ops.get(i) else {
                    break 'scan;
                };
                if o.start > horizon {
                    break 'scan;
                }
                if let Some(end) = o.end {
                    horizon = horizon.min(end);
                }
                candidates.push(i);
            }
        }
        if placed >= furthest.0 {
            furthest = (placed, horizon);
        }
        for i in candidates {
            if ops[i].start > horizon {
                continue;
            }
            let Some(next) = ops[i].op.step(state) else {
                continue;
            };
            let mut set2 = set.clone();
            set2[i / 64] |= 1 << (i % 64);
            if seen.insert((memo_key(&set2), next)) {
                stack.push((set2, next, placed + usize::from(ops[i].end.is_some())));
            }
        }
    }
    Search::StuckAt(furthest.1)
}

/// When a hold may expire, in the run's real time: not before its request was sent
/// plus the hold time, less twice the largest clock skew (a leader running ahead
/// may stamp it, another running ahead may expire it), less a little slack for the
/// runner's own timekeeping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Expiry {
    pub hold_ms: u64,
    pub max_skew_ms: u64,
}

impl Expiry {
    const SLACK_MS: u64 = 250;

    /// The earliest run time at which a hold invoked at `invoked_ms` may expire.
    pub fn earliest(&self, invoked_ms: u64) -> u64 {
        (invoked_ms + self.hold_ms).saturating_sub(2 * self.max_skew_ms + Self::SLACK_MS)
    }
}

/// The checker's verdict on a holds history.
#[derive(Debug, Clone, Serialize)]
pub struct HoldsReport {
    pub valid: bool,
    pub seats_checked: usize,
    pub seat_ops: usize,
    /// Seats whose subhistory is not linearizable.
    pub nonlinearizable_seats: Vec<String>,
    /// Seats whose search gave up (more than [`MAX_STATES`] states): not a pass.
    pub inconclusive_seats: Vec<String>,
    /// For the first few such seats, the history entries that touch them.
    pub anomalies: Vec<Anomaly>,
    pub check_ms: f64,
}

/// A seat whose operations admit no legal order, with those operations.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    pub seat: String,
    /// The entries (invocations and completions) of the seat's operations up to
    /// where the search got stuck and a few after, in history order; at most
    /// [`Anomaly::MAX_OPS`].
    pub ops: Vec<Op>,
}

impl Anomaly {
    pub const MAX_OPS: usize = 60;
    const MAX_SEATS: usize = 5;
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s.as_str().map(str::to_string))
        .collect()
}

/// Projects a holds history onto seats and checks every seat.
///
/// Entries: `reserve` invoke `{"seats":[..]}`, ok `{"reservation","seats"}`, fail
/// `{"code","taken":[..]}`; `release` invoke/ok/fail `{"reservation"}`; `read`
/// ok `{"seats":{seat: status}}`. Completions match the last invocation of the
/// same process. Holds may expire as `expiry` allows.
pub fn check_holds(history: &[Op], expiry: Expiry) -> HoldsReport {
    let started = Instant::now();
    // The first history position at or after a run time (times never decrease).
    let position_at = |ms: u64| history.partition_point(|o| o.time_ms < ms);
    let mut reservations: BTreeMap<String, u32> = BTreeMap::new();
    let mut id = |r: &str| {
        let n = reservations.len() as u32;
        *reservations.entry(r.to_string()).or_insert(n)
    };
    let mut open: BTreeMap<&str, (usize, &Op)> = BTreeMap::new();
    let mut per_seat: BTreeMap<String, Vec<Timed>> = BTreeMap::new();
    // The history positions of each seat's client entries.
    let mut touched: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut push = |seat: &str, op: SeatOp, start: usize, end: Option<usize>| {
        per_seat
            .entry(seat.to_string())
            .or_default()
            .push(Timed { op, start, end });
        if !matches!(op, SeatOp::Expire(_)) {
            let t = touched.entry(seat.to_string()).or_default();
            t.push(start);
            t.extend(end);
        }
    };
    for (pos, op) in history.iter().enumerate() {
        if op.process == "nemesis"
            || !matches!(
                op.f.as_str(),
                "reserve" | "release" | "read" | "read-reservation"
            )
        {
            continue;
        }
        if op.kind == OpType::Invoke {
            open.insert(op.process.as_str(), (pos, op));
            continue;
        }
        let Some((start, inv)) = open.remove(op.process.as_str()) else {
            continue;
        };
        let end = (op.kind == OpType::Ok || op.kind == OpType::Fail).then_some(pos);
        // A hold's expiry, if the history reaches the earliest moment for it.
        let expires = position_at(expiry.earliest(inv.time_ms));
        let expires = (expires < history.len()).then_some(expires);
        match (op.f.as_str(), op.kind) {
            ("reserve", OpType::Ok) => {
                let r = id(op.value["reservation"].as_str().unwrap_or_default());
                for s in strings(&op.value["seats"]) {
                    push(&s, SeatOp::Acquire(r), start, end);
                    if let Some(e) = expires {
                        push(&s, SeatOp::Expire(r), e, None);
                    }
                }
            }
            ("reserve", OpType::Info) => {
                // A hold that may have happened, under an id nobody saw: it can
                // only be released by its unknown owner, so it frees only by
                // expiring.
                let r = id(&format!("unknown-{pos}"));
                for s in strings(&inv.value["seats"]) {
                    push(&s, SeatOp::Acquire(r), start, None);
                    if let Some(e) = expires {
                        push(&s, SeatOp::Expire(r), e, None);
                    }
                }
            }
            ("read-reservation", OpType::Ok) => {
                let r = id(inv.value["reservation"].as_str().unwrap_or_default());
                let o = if op.value["status"] == "ACTIVE" {
                    SeatOp::Owned(r)
                } else {
                    SeatOp::NotOwned(r)
                };
                for s in strings(&inv.value["seats"]) {
                    push(&s, o, start, end);
                }
            }
            ("read", OpType::Ok) => {
                for (s, status) in op.value["seats"].as_object().into_iter().flatten() {
                    let o = if status == "AVAILABLE" {
                        SeatOp::Free
                    } else {
                        SeatOp::Busy
                    };
                    push(s, o, start, end);
                }
            }
            ("reserve", OpType::Fail) if op.value["code"] == "SEATS_UNAVAILABLE" => {
                let taken = strings(&op.value["taken"]);
                for s in strings(&inv.value["seats"]) {
                    let o = if taken.contains(&s) {
                        SeatOp::Busy
                    } else {
                        SeatOp::Free
                    };
                    push(&s, o, start, end);
                }
            }
            ("release", OpType::Ok | OpType::Info) => {
                let r = id(inv.value["reservation"].as_str().unwrap_or_default());
                for s in strings(&inv.value["seats"]) {
                    push(&s, SeatOp::Release(r), start, end);
                }
            }
            _ => {}
        }
    }
    // Invocations that never completed (the run ended first) may have happened.
    for (_, (start, inv)) in open {
        if inv.f == "reserve" {
            let r = id(&format!("unknown-{start}"));
            let expires = position_at(expiry.earliest(inv.time_ms));
            for s in strings(&inv.value["seats"]) {
                push(&s, SeatOp::Acquire(r), start, None);
                if expires < history.len() {
                    push(&s, SeatOp::Expire(r), expires, None);
                }
            }
        }
    }
    let seat_ops = per_seat.values().map(Vec::len).sum();
    let mut stuck: Vec<(String, usize)> = Vec::new();
    let mut inconclusive = Vec::new();
    for (seat, ops) in &per_seat {
        match search(ops) {
            Search::Linearizable => {}
            Search::StuckAt(at) => stuck.push((seat.clone(), at)),
            Search::Inconclusive => inconclusive.push(seat.clone()),
        }
    }
    let anomalies = stuck
        .iter()
        .take(Anomaly::MAX_SEATS)
        .map(|(seat, stuck)| {
            let mut at = touched.remove(seat).unwrap_or_default();
            at.sort_unstable();
            at.dedup();
            // The entries up to where the search got stuck, and a few after.
            let upto = at.partition_point(|p| p <= stuck);
            let from = upto.saturating_sub(Anomaly::MAX_OPS - 10);
            Anomaly {
                seat: seat.clone(),
                ops: at[from..(upto + 10).min(at.len())]
                    .iter()
                    .map(|&i| history[i].clone())
                    .collect(),
            }
        })
        .collect();
    let bad: Vec<String> = stuck.into_iter().map(|(s, _)| s).collect();
    HoldsReport {
        valid: bad.is_empty() && inconclusive.is_empty(),
        inconclusive_seats: inconclusive,
        seats_checked: per_seat.len(),
        seat_ops,
        nonlinearizable_seats: bad,
        anomalies,
        check_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

#[cfg(test)]
#[path = "linear_tests.rs"]
mod tests;
