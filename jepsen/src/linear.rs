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
//! - `busy`: a hold refused with 409 naming this seat as taken: needs `Held(_)`.
//! - `free`: a hold refused with 409 that did not name this seat: the machine saw
//!   it free (it reports every taken seat of the request at once): needs `Free`.
//! - `release(r)`: `Held(r) → Free`; anything else is unchanged (idempotent).

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
    let n = ops.len();
    let words = n.div_ceil(64).max(1);
    let mut seen: HashSet<(Vec<u64>, Seat)> = HashSet::new();
    let mut stack: Vec<(Vec<u64>, Seat)> = vec![(vec![0; words], Seat::Free)];
    let required = ops.iter().filter(|o| o.end.is_some()).count();
    let done = |set: &[u64], i: usize| set[i / 64] >> (i % 64) & 1 == 1;
    while let Some((set, state)) = stack.pop() {
        let placed_required = (0..n)
            .filter(|&i| ops[i].end.is_some() && done(&set, i))
            .count();
        if placed_required == required {
            return true;
        }
        // An operation can go next only if it started before every unplaced
        // operation that must be placed has ended.
        let horizon = (0..n)
            .filter(|&i| !done(&set, i))
            .filter_map(|i| ops[i].end)
            .min()
            .unwrap_or(usize::MAX);
        for i in 0..n {
            if done(&set, i) || ops[i].start > horizon {
                continue;
            }
            let Some(next) = ops[i].op.step(state) else {
                continue;
            };
            let mut set2 = set.clone();
            set2[i / 64] |= 1 << (i % 64);
            if seen.insert((set2.clone(), next)) {
                stack.push((set2, next));
            }
        }
    }
    false
}

/// The checker's verdict on a holds history.
#[derive(Debug, Clone, Serialize)]
pub struct HoldsReport {
    pub valid: bool,
    pub seats_checked: usize,
    pub seat_ops: usize,
    /// Seats whose subhistory is not linearizable.
    pub nonlinearizable_seats: Vec<String>,
    pub check_ms: f64,
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
/// `{"code","taken":[..]}`; `release` invoke/ok/fail `{"reservation"}`. Completions
/// match the last invocation of the same process.
pub fn check_holds(history: &[Op]) -> HoldsReport {
    let started = Instant::now();
    let mut reservations: BTreeMap<String, u32> = BTreeMap::new();
    let mut id = |r: &str| {
        let n = reservations.len() as u32;
        *reservations.entry(r.to_string()).or_insert(n)
    };
    let mut open: BTreeMap<&str, (usize, &Op)> = BTreeMap::new();
    let mut per_seat: BTreeMap<String, Vec<Timed>> = BTreeMap::new();
    let mut push = |seat: &str, op: SeatOp, start: usize, end: Option<usize>| {
        per_seat
            .entry(seat.to_string())
            .or_default()
            .push(Timed { op, start, end });
    };
    for (pos, op) in history.iter().enumerate() {
        if op.process == "nemesis" || (op.f != "reserve" && op.f != "release") {
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
        match (op.f.as_str(), op.kind) {
            ("reserve", OpType::Ok) => {
                let r = id(op.value["reservation"].as_str().unwrap_or_default());
                for s in strings(&op.value["seats"]) {
                    push(&s, SeatOp::Acquire(r), start, end);
                }
            }
            ("reserve", OpType::Info) => {
                // A hold that may have happened, under an id nobody saw: it can
                // only be released by its unknown owner, so it never frees.
                let r = id(&format!("unknown-{pos}"));
                for s in strings(&inv.value["seats"]) {
                    push(&s, SeatOp::Acquire(r), start, None);
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
            for s in strings(&inv.value["seats"]) {
                push(&s, SeatOp::Acquire(r), start, None);
            }
        }
    }
    let seat_ops = per_seat.values().map(Vec::len).sum();
    let bad: Vec<String> = per_seat
        .iter()
        .filter(|(_, ops)| !linearizable(ops))
        .map(|(s, _)| s.clone())
        .collect();
    HoldsReport {
        valid: bad.is_empty(),
        seats_checked: per_seat.len(),
        seat_ops,
        nonlinearizable_seats: bad,
        check_ms: started.elapsed().as_secs_f64() * 1e3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(op: SeatOp, start: usize, end: usize) -> Timed {
        Timed {
            op,
            start,
            end: Some(end),
        }
    }

    #[test]
    fn sequential_and_concurrent_histories_that_are_linearizable() {
        // acquire, busy, release, acquire by another.
        assert!(linearizable(&[
            t(SeatOp::Acquire(1), 0, 1),
            t(SeatOp::Busy, 2, 3),
            t(SeatOp::Release(1), 4, 5),
            t(SeatOp::Acquire(2), 6, 7),
        ]));
        // Two overlapping acquires where one saw busy: either order works.
        assert!(linearizable(&[
            t(SeatOp::Busy, 0, 3),
            t(SeatOp::Acquire(1), 1, 2),
        ]));
        // A possible acquire that never happened does not block a later one.
        assert!(linearizable(&[
            Timed {
                op: SeatOp::Acquire(9),
                start: 0,
                end: None
            },
            t(SeatOp::Acquire(1), 1, 2),
        ]));
    }

    #[test]
    fn double_holds_and_stale_answers_are_caught() {
        // Two acknowledged holds of one seat, no release: impossible.
        assert!(!linearizable(&[
            t(SeatOp::Acquire(1), 0, 1),
            t(SeatOp::Acquire(2), 2, 3),
        ]));
        // Even when they overlap in time.
        assert!(!linearizable(&[
            t(SeatOp::Acquire(1), 0, 3),
            t(SeatOp::Acquire(2), 1, 2),
        ]));
        // "busy" after a completed release, with nothing else: stale.
        assert!(!linearizable(&[
            t(SeatOp::Acquire(1), 0, 1),
            t(SeatOp::Release(1), 2, 3),
            t(SeatOp::Busy, 4, 5),
        ]));
        // "free" while a hold is acknowledged and not released: a lost hold.
        assert!(!linearizable(&[
            t(SeatOp::Acquire(1), 0, 1),
            t(SeatOp::Free, 2, 3),
        ]));
        // An unknown hold may explain a later "busy".
        assert!(linearizable(&[
            Timed {
                op: SeatOp::Acquire(9),
                start: 0,
                end: None
            },
            t(SeatOp::Busy, 4, 5),
        ]));
    }

    #[test]
    fn histories_are_projected_per_seat() {
        use serde_json::json;
        let op = |p: &str, kind, f: &str, value| Op {
            process: p.into(),
            kind,
            f: f.into(),
            value,
            time_ms: 0,
        };
        let good = vec![
            op("0", OpType::Invoke, "reserve", json!({"seats": ["a", "b"]})),
            op("1", OpType::Invoke, "reserve", json!({"seats": ["b", "c"]})),
            op(
                "0",
                OpType::Ok,
                "reserve",
                json!({"reservation": "r1", "seats": ["a", "b"]}),
            ),
            op(
                "1",
                OpType::Fail,
                "reserve",
                json!({"code": "SEATS_UNAVAILABLE", "taken": ["b"]}),
            ),
            op(
                "0",
                OpType::Invoke,
                "release",
                json!({"reservation": "r1", "seats": ["a", "b"]}),
            ),
            op("0", OpType::Ok, "release", json!({"reservation": "r1"})),
            op("1", OpType::Invoke, "reserve", json!({"seats": ["b"]})),
            op(
                "1",
                OpType::Ok,
                "reserve",
                json!({"reservation": "r2", "seats": ["b"]}),
            ),
        ];
        let r = check_holds(&good);
        assert!(r.valid, "{r:?}");
        assert_eq!(r.seats_checked, 3);
        // A second process acknowledged seat a while r1 still held it.
        let mut bad = good.clone();
        bad.insert(
            3,
            op("2", OpType::Invoke, "reserve", json!({"seats": ["a"]})),
        );
        bad.insert(
            4,
            op(
                "2",
                OpType::Ok,
                "reserve",
                json!({"reservation": "r3", "seats": ["a"]}),
            ),
        );
        let r = check_holds(&bad);
        assert!(!r.valid);
        assert_eq!(r.nonlinearizable_seats, vec!["a".to_string()]);
    }
}
