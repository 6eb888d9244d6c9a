//! Refusals answered from state ([`GroupMachine::refusal_from_state`]) agree with
//! what the log would answer, and batches apply like their proposals one by one.

use proptest::prelude::*;
use uuid::Uuid;

use super::tests::{open, reserve, seat, Harness, EVENT, MIN};
use super::*;
use crate::domain::{Command, CommandBody, GroupKind, GroupMachine, Proposal, Response};

fn proposal(id: u128, body: InventoryCommand) -> Proposal {
    Proposal {
        request_id: Uuid::from_u128(id),
        body: CommandBody::Inventory(body),
    }
}

fn refused(r: InventoryRejection) -> Option<Response> {
    Some(Response::Inventory(InventoryResponse::Rejected(r)))
}

#[test]
fn only_seats_taken_for_sure_are_refused_from_state() {
    let mut h = Harness::new();
    open(&mut h, 4);
    assert!(matches!(
        h.run(2_000, reserve(1, 1, &[0, 1])),
        InventoryResponse::Reserved(_)
    ));
    assert!(matches!(
        h.run(2_001, reserve(2, 1, &[2])),
        InventoryResponse::Reserved(_)
    ));
    h.run(
        2_002,
        InventoryCommand::Convert {
            event_id: EVENT,
            reservation_id: Uuid::from_u128(2),
        },
    );
    let m = &h.m;
    // Held by a live hold: refused, naming only the held seat.
    assert_eq!(
        m.refusal_from_state(&proposal(900, reserve(10, 2, &[1, 3]))),
        refused(InventoryRejection::SeatsUnavailable(vec![seat(1)]))
    );
    // Sold: 410 before 409, as the machine answers.
    assert_eq!(
        m.refusal_from_state(&proposal(901, reserve(11, 2, &[1, 2]))),
        refused(InventoryRejection::SeatsSold(vec![seat(2)]))
    );
    // Free seats go to the log.
    assert_eq!(
        m.refusal_from_state(&proposal(902, reserve(12, 2, &[3, 4]))),
        None
    );
    // Whatever the machine would check before the seats goes to the log: the
    // per-user limit (user 1 has 3 of 4), duplicates, unknown seats.
    assert_eq!(
        m.refusal_from_state(&proposal(904, reserve(14, 1, &[0, 5]))),
        None
    );
    assert_eq!(
        m.refusal_from_state(&proposal(905, reserve(15, 2, &[0, 0]))),
        None
    );
    assert_eq!(
        m.refusal_from_state(&proposal(906, reserve(16, 2, &[0, 99]))),
        None
    );
    // A request id the machine remembers is answered by the log (its first outcome).
    assert_eq!(
        m.refusal_from_state(&proposal(1, reserve(17, 2, &[0]))),
        None,
        "request 1 is in the dedup table"
    );
    // Only holds: releases and the rest always go through the log.
    let release = InventoryCommand::Release {
        event_id: EVENT,
        reservation_id: Uuid::from_u128(99),
        user_id: Uuid::from_u128(2),
    };
    assert_eq!(m.refusal_from_state(&proposal(907, release)), None);

    // Time is the machine's clock: a hold past its time on a wall clock still
    // counts until a stamped entry passes it, as it does for a read of it.
    let due = 2_000 + 10 * MIN;
    assert_eq!(
        h.m.refusal_from_state(&proposal(903, reserve(13, 2, &[0]))),
        refused(InventoryRejection::SeatsUnavailable(vec![seat(0)]))
    );
    tick(&mut h, due);
    assert_eq!(
        h.m.refusal_from_state(&proposal(908, reserve(13, 2, &[0]))),
        None,
        "due by the replicated clock: the log would expire it and grant the seat"
    );
}

/// Advances the machine's clock to `at_ms` with a command that changes nothing
/// else (a release of a reservation that does not exist).
fn tick(h: &mut Harness, at_ms: i64) {
    h.run(
        at_ms,
        InventoryCommand::Release {
            event_id: EVENT,
            reservation_id: Uuid::from_u128(u128::MAX),
            user_id: Uuid::from_u128(1),
        },
    );
}

#[test]
fn a_batch_applies_like_its_proposals_one_by_one() {
    let bodies = || {
        vec![
            proposal(100, reserve(1, 1, &[0, 1])),
            proposal(101, reserve(2, 2, &[1, 2])),
            proposal(102, reserve(3, 2, &[2, 3])),
            // A retry inside the same batch gets the first outcome.
            proposal(100, reserve(1, 1, &[0, 1])),
        ]
    };
    let mut one = Harness::new();
    open(&mut one, 8);
    let mut batched = GroupMachine::restore(
        GroupKind::Inventory,
        one.disk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
    )
    .expect("restore");
    let mut expected = Vec::new();
    let mut expected_changes = Vec::new();
    for p in bodies() {
        let (r, c) = one.m.apply(p.stamp(5_000), 7);
        expected.push(r);
        expected_changes.extend(c);
    }
    let batch = Command {
        request_id: Uuid::nil(),
        stamped_ms: 5_000,
        body: CommandBody::Batch(bodies()),
    };
    let (r, changes) = batched.apply(batch, 7);
    assert_eq!(r, Response::Batch(expected.clone()));
    assert_eq!(changes, expected_changes);
    assert_eq!(batched, one.m);
    assert!(matches!(
        &expected[..],
        [
            Response::Inventory(InventoryResponse::Reserved(_)),
            Response::Inventory(InventoryResponse::Rejected(_)),
            Response::Inventory(InventoryResponse::Reserved(_)),
            Response::Inventory(InventoryResponse::Reserved(_)),
        ]
    ));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Whenever the state alone answers a hold, the log answers the same.
    #[test]
    fn a_refusal_from_state_is_what_the_log_would_answer(
        ops in prop::collection::vec(
            (0u128..4, prop::collection::vec(0u32..15, 1..4), 0i64..4 * MIN, any::<bool>()),
            1..60,
        ),
    ) {
        let mut h = Harness::new();
        open(&mut h, 4);
        let mut now = 1_000i64;
        for (i, (user, seats, dt, convert)) in ops.into_iter().enumerate() {
            now += dt;
            let i = i as u128;
            let cmd = reserve(1_000 + i, user, &seats);
            tick(&mut h, now);
            let fast = h.m.refusal_from_state(&proposal(u128::MAX - i, cmd.clone()));
            let slow = h.run(now, cmd);
            if let Some(fast) = fast {
                prop_assert_eq!(fast, Response::Inventory(slow.clone()));
            }
            if convert {
                if let InventoryResponse::Reserved(v) = slow {
                    h.run(now, InventoryCommand::Convert {
                        event_id: EVENT,
                        reservation_id: v.reservation_id,
                    });
                }
            }
        }
    }
}
