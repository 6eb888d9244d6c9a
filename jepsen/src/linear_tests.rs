//! Checker tests: hand-made good and bad holds histories (double holds, lost
//! holds, stale reads, early expiry), each judged as it must be.

use super::*;
use serde_json::json;

/// Holds that outlast every test history.
const NEVER: Expiry = Expiry {
    hold_ms: 3_600_000,
    max_skew_ms: 0,
};

fn op(p: &str, kind: OpType, f: &str, value: Value, time_ms: u64) -> Op {
    Op {
        process: p.into(),
        kind,
        f: f.into(),
        value,
        time_ms,
    }
}

/// Process 0 holds seat `a` at 0–10 ms; the final read at `read_ms` sees `a`
/// as `status`.
fn hold_then_read(status: &str, read_ms: u64) -> Vec<Op> {
    vec![
        op("0", OpType::Invoke, "reserve", json!({"seats": ["a"]}), 0),
        op(
            "0",
            OpType::Ok,
            "reserve",
            json!({"reservation": "r1", "seats": ["a"]}),
            10,
        ),
        op("final-1", OpType::Invoke, "read", json!({}), read_ms),
        op(
            "final-1",
            OpType::Ok,
            "read",
            json!({"seats": {"a": status}}),
            read_ms + 1,
        ),
    ]
}

#[test]
fn reads_must_see_acknowledged_holds_and_releases() {
    assert!(check_holds(&hold_then_read("HELD", 100), NEVER).valid);
    // A lost acknowledged hold: the final read sees the seat free.
    let r = check_holds(&hold_then_read("AVAILABLE", 100), NEVER);
    assert!(!r.valid);
    assert_eq!(r.anomalies[0].seat, "a");
    assert_eq!(r.anomalies[0].ops.len(), 4, "the hold and the read: {r:?}");
    // A stale read: the seat's release was acknowledged before the read.
    let mut stale = hold_then_read("HELD", 100);
    stale.insert(
        2,
        op(
            "0",
            OpType::Invoke,
            "release",
            json!({"reservation": "r1", "seats": ["a"]}),
            20,
        ),
    );
    stale.insert(
        3,
        op("0", OpType::Ok, "release", json!({"reservation": "r1"}), 30),
    );
    assert!(!check_holds(&stale, NEVER).valid);
    let last = stale.len() - 1;
    stale[last].value = json!({"seats": {"a": "AVAILABLE"}});
    assert!(check_holds(&stale, NEVER).valid);
    // Reading the reservation itself: ACTIVE after its release was
    // acknowledged is stale; RELEASED is right.
    let read = |status: &str| {
        let mut h = stale[..4].to_vec();
        let inv = json!({"reservation": "r1", "seats": ["a"]});
        h.push(op("1", OpType::Invoke, "read-reservation", inv, 40));
        h.push(op(
            "1",
            OpType::Ok,
            "read-reservation",
            json!({"status": status}),
            41,
        ));
        check_holds(&h, NEVER).valid
    };
    assert!(read("RELEASED"));
    assert!(!read("ACTIVE"));
}

#[test]
fn holds_expire_only_once_old_enough() {
    let expiry = Expiry {
        hold_ms: 10_000,
        max_skew_ms: 1_000,
    };
    // Earliest expiry: 0 + 10 s - 2 × 1 s - slack.
    assert_eq!(expiry.earliest(0), 7_750);
    assert!(check_holds(&hold_then_read("AVAILABLE", 8_000), expiry).valid);
    let r = check_holds(&hold_then_read("AVAILABLE", 7_000), expiry);
    assert!(!r.valid, "a hold vanished before it could have expired");
    // A hold that may or may not have happened can expire too.
    let mut unknown = hold_then_read("AVAILABLE", 8_000);
    unknown[1] = op(
        "0",
        OpType::Info,
        "reserve",
        json!({"error": "timeout"}),
        10,
    );
    unknown.insert(
        2,
        op(
            "1",
            OpType::Invoke,
            "reserve",
            json!({"seats": ["a"]}),
            8_000,
        ),
    );
    unknown.insert(
        3,
        op(
            "1",
            OpType::Fail,
            "reserve",
            json!({"code": "SEATS_UNAVAILABLE", "taken": ["a"]}),
            8_001,
        ),
    );
    assert!(check_holds(&unknown, expiry).valid);
}

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
    let r = check_holds(&good, NEVER);
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
    let r = check_holds(&bad, NEVER);
    assert!(!r.valid);
    assert_eq!(r.nonlinearizable_seats, vec!["a".to_string()]);
}
