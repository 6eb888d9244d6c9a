//! Waiting-room tests: FIFO after the sale opens, the pre-sale shuffle (random,
//! identical on every replica), duplicates, the room and device caps, leaving,
//! admission bounds (rate and active shoppers) under random sequences, expiry of
//! access windows, and restore.

use proptest::prelude::*;
use uuid::Uuid;

use super::tests::{Harness, EVENT, MIN};
use super::*;
use crate::domain::{GroupKind, GroupMachine};

const SEC: i64 = 1_000;

fn limits() -> QueueLimits {
    QueueLimits {
        max_size: 1_000,
        max_per_device: 2,
        admission_per_second: 2,
        max_active_shoppers: 3,
        access_window_ms: 10 * MIN,
    }
}

/// An event group whose sale opens at `on_sale_ms`.
fn room(on_sale_ms: i64) -> Harness {
    let mut h = Harness::new();
    let mut layout = super::tests::layout(8);
    layout.on_sale_ms = on_sale_ms;
    h.run(
        0,
        InventoryCommand::Open {
            event_id: EVENT,
            layout: Box::new(layout),
        },
    );
    h
}

fn user(n: u128) -> Uuid {
    Uuid::from_u128(0x1000 + n)
}

fn join_with(
    h: &mut Harness,
    at: i64,
    n: u128,
    device: Option<&str>,
    l: QueueLimits,
) -> InventoryResponse {
    h.run(
        at,
        InventoryCommand::QueueJoin {
            event_id: EVENT,
            join: Join {
                user_id: user(n),
                entry_id: Uuid::from_u128(0x2000 + n),
                device: device.map(str::to_string),
                nonce: (n as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                limits: l,
            },
        },
    )
}

fn join(h: &mut Harness, at: i64, n: u128) -> QueueView {
    match join_with(h, at, n, None, limits()) {
        InventoryResponse::Queue(QueueOutcome::Joined(v)) => v,
        other => panic!("join {n}: {other:?}"),
    }
}

fn admit(h: &mut Harness, at: i64, l: QueueLimits) -> u32 {
    match h.run(
        at,
        InventoryCommand::QueueAdmit {
            event_id: EVENT,
            limits: l,
        },
    ) {
        InventoryResponse::Queue(QueueOutcome::Admitted { admitted, .. }) => admitted,
        other => panic!("admit: {other:?}"),
    }
}

fn leave(h: &mut Harness, at: i64, n: u128) -> bool {
    match h.run(
        at,
        InventoryCommand::QueueLeave {
            event_id: EVENT,
            user_id: user(n),
        },
    ) {
        InventoryResponse::Queue(QueueOutcome::Left { was_live }) => was_live,
        other => panic!("leave: {other:?}"),
    }
}

fn entry(h: &Harness, n: u128, at: i64) -> QueueView {
    h.inv()
        .waiting_room()
        .entry_of(&user(n), at)
        .expect("an entry")
}

/// Users in queue order (by position), queued ones only.
fn order(h: &Harness, users: u128, at: i64) -> Vec<u128> {
    let mut v: Vec<(u64, u128)> = (0..users)
        .filter_map(|n| {
            let e = h.inv().waiting_room().entry_of(&user(n), at)?;
            (e.state == EntryState::Queued).then_some((e.position, n))
        })
        .collect();
    v.sort_unstable();
    v.into_iter().map(|(_, n)| n).collect()
}

#[test]
fn after_the_sale_opens_fans_queue_in_arrival_order() {
    let mut h = room(SEC);
    for n in 0..5 {
        let v = join(&mut h, 2 * SEC + n as i64, n);
        assert_eq!((v.position, v.size), (n as u64 + 1, n as u64 + 1));
    }
    assert_eq!(order(&h, 5, 3 * SEC), vec![0, 1, 2, 3, 4]);
    // One second of tokens at 2/s: the first two are let in, in order.
    assert_eq!(admit(&mut h, 3 * SEC, limits()), 2);
    assert!(matches!(
        entry(&h, 0, 3 * SEC).state,
        EntryState::Ready { .. }
    ));
    assert!(matches!(
        entry(&h, 1, 3 * SEC).state,
        EntryState::Ready { .. }
    ));
    assert_eq!(entry(&h, 2, 3 * SEC).position, 1);
    assert_eq!(order(&h, 5, 3 * SEC), vec![2, 3, 4]);
    h.check_restore();
}

#[test]
fn pre_sale_fans_are_shuffled_at_the_sale_identically_on_every_replica() {
    let run = || {
        let mut h = room(100 * SEC);
        for n in 0..40 {
            join(&mut h, SEC + n as i64, n);
        }
        // Before the sale: arrival order, no admission.
        assert_eq!(order(&h, 40, 2 * SEC), (0..40).collect::<Vec<_>>());
        assert_eq!(admit(&mut h, 50 * SEC, limits()), 0);
        // A fan who joins after the sale opened queues behind every pre-sale fan.
        join(&mut h, 100 * SEC, 40);
        h
    };
    let (a, b) = (run(), run());
    let order_a = order(&a, 41, 100 * SEC);
    assert_eq!(order_a, order(&b, 41, 100 * SEC), "replicas agree");
    assert_eq!(order_a.last(), Some(&40));
    let mut pre = order_a[..40].to_vec();
    assert_ne!(pre, (0..40).collect::<Vec<_>>(), "shuffled");
    pre.sort_unstable();
    assert_eq!(pre, (0..40).collect::<Vec<_>>(), "a permutation");
    // Positions are 1..=41 with no gaps.
    let mut positions: Vec<u64> = (0..41).map(|n| entry(&a, n, 100 * SEC).position).collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=41).collect::<Vec<_>>());
    a.check_restore();
}

#[test]
fn duplicates_full_rooms_and_device_caps_are_refused() {
    let mut h = room(SEC);
    let first = join(&mut h, 2 * SEC, 0);
    match join_with(&mut h, 2 * SEC, 0, None, limits()) {
        InventoryResponse::Rejected(InventoryRejection::Queue(QueueRejection::AlreadyInQueue(
            v,
        ))) => {
            assert_eq!(v.entry_id, first.entry_id)
        }
        other => panic!("{other:?}"),
    }
    let small = QueueLimits {
        max_size: 2,
        ..limits()
    };
    assert!(matches!(
        join_with(&mut h, 2 * SEC, 1, Some("dev"), small),
        InventoryResponse::Queue(QueueOutcome::Joined(_))
    ));
    assert!(matches!(
        join_with(&mut h, 2 * SEC, 2, Some("dev"), small),
        InventoryResponse::Rejected(InventoryRejection::Queue(QueueRejection::Full {
            max_size: 2
        }))
    ));
    assert!(matches!(
        join_with(&mut h, 2 * SEC, 2, Some("dev"), limits()),
        InventoryResponse::Queue(QueueOutcome::Joined(_))
    ));
    assert!(matches!(
        join_with(&mut h, 2 * SEC, 3, Some("dev"), limits()),
        InventoryResponse::Rejected(InventoryRejection::Queue(QueueRejection::DeviceLimit {
            max_per_device: 2
        }))
    ));
    // A device's slot comes back when one of its fans leaves.
    assert!(leave(&mut h, 3 * SEC, 1));
    assert!(matches!(
        join_with(&mut h, 3 * SEC, 3, Some("dev"), limits()),
        InventoryResponse::Queue(QueueOutcome::Joined(_))
    ));
    h.check_restore();
}

#[test]
fn leaving_moves_everyone_behind_up_and_is_idempotent() {
    let mut h = room(SEC);
    for n in 0..4 {
        join(&mut h, 2 * SEC, n);
    }
    assert!(leave(&mut h, 3 * SEC, 1));
    assert!(!leave(&mut h, 3 * SEC, 1));
    assert_eq!(
        entry(&h, 1, 3 * SEC).state,
        EntryState::Left { at_ms: 3 * SEC }
    );
    assert_eq!(entry(&h, 2, 3 * SEC).position, 2);
    assert_eq!(entry(&h, 3, 3 * SEC).position, 3);
    assert_eq!(entry(&h, 3, 3 * SEC).size, 3);
    // Leaving makes room to join again, at the back.
    assert_eq!(join(&mut h, 4 * SEC, 1).position, 4);
    h.check_restore();
}

#[test]
fn an_ended_window_or_a_purchase_frees_a_shoppers_slot() {
    let mut h = room(SEC);
    for n in 0..5 {
        join(&mut h, 2 * SEC, n);
    }
    let l = QueueLimits {
        admission_per_second: 100,
        ..limits()
    };
    // Three slots: three admitted however many tokens there are.
    assert_eq!(admit(&mut h, 3 * SEC, l), 3);
    assert_eq!(admit(&mut h, 4 * SEC, l), 0);
    // User 0 buys: a slot frees.
    let r = Uuid::from_u128(77);
    assert!(matches!(
        h.run(
            4 * SEC,
            InventoryCommand::Reserve {
                event_id: EVENT,
                reservation_id: r,
                user_id: user(0),
                pick: Pick::Best {
                    quantity: 1,
                    tier_id: None
                },
                hold_ms: MIN,
            }
        ),
        InventoryResponse::Reserved(_)
    ));
    assert!(matches!(
        h.run(
            5 * SEC,
            InventoryCommand::Convert {
                event_id: EVENT,
                reservation_id: r
            }
        ),
        InventoryResponse::Converted(_)
    ));
    assert!(matches!(
        entry(&h, 0, 5 * SEC).state,
        EntryState::Done { .. }
    ));
    assert_eq!(admit(&mut h, 5 * SEC, l), 1);
    // The other windows end 10 minutes after admission: their slots free.
    let later = 3 * SEC + 10 * MIN;
    assert!(matches!(
        entry(&h, 1, later).state,
        EntryState::Expired { .. }
    ));
    assert_eq!(admit(&mut h, later, l), 1);
    assert_eq!(h.inv().waiting_room().counts(), (0, 2));
    h.check_restore();
}

fn shop(h: &mut Harness, at: i64, n: u128, id: u128) -> InventoryResponse {
    h.run(
        at,
        InventoryCommand::AsShopper(Box::new(InventoryCommand::Reserve {
            event_id: EVENT,
            reservation_id: Uuid::from_u128(id),
            user_id: user(n),
            pick: Pick::Best {
                quantity: 1,
                tier_id: None,
            },
            hold_ms: MIN,
        })),
    )
}

fn not_admitted(r: &InventoryResponse) -> bool {
    matches!(
        r,
        InventoryResponse::Rejected(InventoryRejection::Queue(QueueRejection::NotAdmitted))
    )
}

#[test]
fn only_a_shopper_in_an_open_window_holds_seats() {
    let mut h = room(SEC);
    for n in 0..3 {
        join(&mut h, 2 * SEC, n);
    }
    let l = QueueLimits {
        admission_per_second: 100,
        max_active_shoppers: 2,
        ..limits()
    };
    assert_eq!(admit(&mut h, 3 * SEC, l), 2);
    // Queued, not admitted: refused, by the state and by the log alike.
    let cmd = |n: u128| {
        InventoryCommand::AsShopper(Box::new(InventoryCommand::Reserve {
            event_id: EVENT,
            reservation_id: Uuid::from_u128(900 + n),
            user_id: user(n),
            pick: Pick::Seats(vec![super::tests::seat(0)]),
            hold_ms: MIN,
        }))
    };
    assert_eq!(
        h.inv().refusal_from_state(&cmd(2), 3 * SEC),
        Some(InventoryRejection::Queue(QueueRejection::NotAdmitted))
    );
    assert!(not_admitted(&shop(&mut h, 3 * SEC, 2, 50)));
    // Admitted: holds.
    assert_eq!(h.inv().refusal_from_state(&cmd(0), 3 * SEC), None);
    assert!(matches!(
        shop(&mut h, 3 * SEC, 0, 51),
        InventoryResponse::Reserved(_)
    ));
    // Gave the window up: the slot went to user 2, and user 1's token opens nothing.
    assert!(leave(&mut h, 4 * SEC, 1));
    assert!(not_admitted(&shop(&mut h, 4 * SEC, 1, 52)));
    assert_eq!(admit(&mut h, 4 * SEC, l), 1);
    assert!(matches!(
        shop(&mut h, 4 * SEC, 2, 53),
        InventoryResponse::Reserved(_)
    ));
    // Bought: done shopping.
    let bought = h.run(
        5 * SEC,
        InventoryCommand::Convert {
            event_id: EVENT,
            reservation_id: Uuid::from_u128(51),
        },
    );
    assert!(matches!(bought, InventoryResponse::Converted(_)));
    assert!(not_admitted(&shop(&mut h, 5 * SEC, 0, 54)));
    // A repeated convert of that hold does not end a later admission.
    join(&mut h, 6 * SEC, 0);
    assert_eq!(admit(&mut h, 7 * SEC, l), 1);
    assert!(h.inv().waiting_room().is_shopper(&user(0), 7 * SEC));
    h.run(
        7 * SEC,
        InventoryCommand::Convert {
            event_id: EVENT,
            reservation_id: Uuid::from_u128(51),
        },
    );
    assert!(h.inv().waiting_room().is_shopper(&user(0), 7 * SEC));
    // The window ends: refused again.
    assert!(not_admitted(&shop(&mut h, 7 * SEC + 10 * MIN, 0, 55)));
    h.check_restore();
}

#[test]
fn estimates_use_the_measured_rate_once_there_is_one() {
    let mut v = QueueView {
        entry_id: Uuid::nil(),
        user_id: Uuid::nil(),
        state: EntryState::Queued,
        position: 600,
        size: 600,
        joined_ms: 0,
        admitted_total: 0,
        first_admit_ms: 0,
    };
    assert_eq!(queue::estimated_wait_minutes(&v, 10, 0), 1);
    v.admitted_total = 100;
    v.first_admit_ms = 0;
    // 100 in 100 s: 1/s, so 600 ahead is 10 minutes.
    assert_eq!(queue::estimated_wait_minutes(&v, 10, 100 * SEC), 10);
    assert!(queue::poll_interval_seconds(1, 0) < queue::poll_interval_seconds(50_000, 0));
    // Never faster than the status rate limit allows (2 a minute: every 30 s).
    assert_eq!(queue::poll_interval_seconds(1, 30), 30);
}

#[derive(Debug, Clone)]
enum Op {
    Join(u128, u8),
    Leave(u128),
    Admit,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u128..30, 0u8..4).prop_map(|(u, d)| Op::Join(u, d)),
        1 => (0u128..30).prop_map(Op::Leave),
        3 => Just(Op::Admit),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Random joins, leaves and admissions over time: admission never passes the
    /// rate (one second of burst) or the shopper bound, positions are exactly
    /// 1..=size with no gaps, and a restore gives the same room.
    #[test]
    fn admission_keeps_its_bounds(
        ops in prop::collection::vec((op(), 0i64..1_500), 1..120),
        on_sale in 0i64..20_000,
    ) {
        let mut h = room(on_sale);
        let l = limits();
        let mut now = 0i64;
        let mut admitted_since_open = 0u64;
        for (op, dt) in ops {
            now += dt;
            match op {
                Op::Join(u, d) => {
                    let device = format!("d{d}");
                    join_with(&mut h, now, u, Some(device.as_str()), l);
                }
                Op::Leave(u) => {
                    leave(&mut h, now, u);
                }
                Op::Admit => {
                    let n = admit(&mut h, now, l);
                    if now < on_sale {
                        prop_assert_eq!(n, 0);
                    }
                    admitted_since_open += u64::from(n);
                }
            }
            let rate = u64::from(l.admission_per_second);
            let open_for = u64::try_from(now - on_sale).unwrap_or(0);
            prop_assert!(admitted_since_open <= rate + open_for * rate / 1000,
                "{} admitted in {} ms", admitted_since_open, open_for);
            let room = h.inv().waiting_room();
            let (queued, active) = room.counts();
            prop_assert!(active <= u64::from(l.max_active_shoppers));
            let mut positions = Vec::new();
            for u in 0..30 {
                if let Some(e) = room.entry_of(&user(u), now) {
                    if e.state == EntryState::Queued {
                        positions.push(e.position);
                    }
                    prop_assert_eq!(e.size, queued);
                }
            }
            positions.sort_unstable();
            prop_assert_eq!(positions, (1..=queued).collect::<Vec<_>>());
        }
        h.check_restore();
        // The restored room's indexes answer like the live one's.
        let restored = GroupMachine::restore(
            GroupKind::Inventory,
            h.disk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .expect("restore");
        let (live, back) = (h.inv().waiting_room(), restored.inventory().expect("inventory").waiting_room());
        prop_assert_eq!(live.counts(), back.counts());
        for u in 0..30 {
            prop_assert_eq!(live.entry_of(&user(u), now), back.entry_of(&user(u), now));
            prop_assert_eq!(live.is_shopper(&user(u), now), back.is_shopper(&user(u), now));
        }
    }
}
