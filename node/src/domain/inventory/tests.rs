//! Inventory unit tests: binding, status, holds, limits, best available, expiry,
//! conversion and refunds, and restore after each.

use std::collections::BTreeMap;

use uuid::Uuid;

use super::*;
use crate::domain::{
    ids, Command, CommandBody, GroupKind, GroupMachine, Query, QueryResult, Response,
};

/// A machine plus the disk its changes produce.
pub(super) struct Harness {
    pub m: GroupMachine,
    pub disk: BTreeMap<Vec<u8>, Vec<u8>>,
    index: u64,
    req: u128,
}

impl Harness {
    pub fn new() -> Self {
        Self {
            m: GroupMachine::new(GroupKind::Inventory),
            disk: BTreeMap::new(),
            index: 0,
            req: 0,
        }
    }

    pub fn run(&mut self, at_ms: i64, body: InventoryCommand) -> InventoryResponse {
        self.index += 1;
        self.req += 1;
        let cmd = Command {
            request_id: Uuid::from_u128(self.req),
            stamped_ms: at_ms,
            body: CommandBody::Inventory(body),
        };
        let (r, changes) = self.m.apply(cmd, self.index);
        for ch in changes {
            match ch {
                Change::Put(k, v) => self.disk.insert(k, v),
                Change::Delete(k) => self.disk.remove(&k),
            };
        }
        match r {
            Response::Inventory(r) => r,
            other => panic!("not an inventory response: {other:?}"),
        }
    }

    pub fn inv(&self) -> &Inventory {
        self.m.inventory().expect("an inventory machine")
    }

    /// Restoring from the disk gives the same machine, and dumping gives the disk.
    pub fn check_restore(&self) {
        let restored = GroupMachine::restore(
            GroupKind::Inventory,
            self.disk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .expect("restore");
        assert_eq!(restored, self.m);
        let dumped: BTreeMap<_, _> = self.m.dump().into_iter().collect();
        assert_eq!(dumped, self.disk);
    }
}

pub(super) const EVENT: Uuid = Uuid::from_u128(0x0123_4567_89ab_4def_8123_4567_89ab_cdef);
pub(super) const MIN: i64 = 60_000;

/// Floor (tier 0, $100 + $15): rows A and B of 4 seats (0..8); Balcony (tier 1,
/// $50 + $5): row C of 6 seats (8..14). On sale from t=1000 until t=10^9.
pub(super) fn layout(max_per_user: u32) -> EventLayout {
    EventLayout {
        event_id: EVENT,
        tiers: vec![
            TierLayout {
                tier_id: Uuid::from_u128(1),
                name: "Floor".into(),
                price_cents: 10_000,
                fees_cents: 1_500,
            },
            TierLayout {
                tier_id: Uuid::from_u128(2),
                name: "Balcony".into(),
                price_cents: 5_000,
                fees_cents: 500,
            },
        ],
        sections: vec![
            SectionLayout {
                name: "Floor".into(),
                tier: 0,
                rows: vec![
                    RowLayout {
                        name: "A".into(),
                        first_seat: 0,
                        seats: 4,
                    },
                    RowLayout {
                        name: "B".into(),
                        first_seat: 4,
                        seats: 4,
                    },
                ],
            },
            SectionLayout {
                name: "Balcony".into(),
                tier: 1,
                rows: vec![RowLayout {
                    name: "C".into(),
                    first_seat: 8,
                    seats: 6,
                }],
            },
        ],
        seat_count: 14,
        date_ms: 1_000_000_000,
        on_sale_ms: 1_000,
        presale_start_ms: None,
        max_per_user,
    }
}

pub(super) fn open(h: &mut Harness, max_per_user: u32) {
    let r = h.run(
        1_000,
        InventoryCommand::Open {
            event_id: EVENT,
            layout: Box::new(layout(max_per_user)),
        },
    );
    assert!(matches!(r, InventoryResponse::Status { .. }), "{r:?}");
}

pub(super) fn seat(i: u32) -> Uuid {
    ids::seat(&EVENT, i)
}

pub(super) fn reserve(res: u128, user: u128, seats: &[u32]) -> InventoryCommand {
    InventoryCommand::Reserve {
        event_id: EVENT,
        reservation_id: Uuid::from_u128(res),
        user_id: Uuid::from_u128(user),
        pick: Pick::Seats(seats.iter().map(|&s| seat(s)).collect()),
        hold_ms: 10 * MIN,
    }
}

fn set(event: Uuid, status: SaleOverride) -> InventoryCommand {
    InventoryCommand::SetStatus {
        event_id: event,
        status,
    }
}

#[test]
fn binds_to_one_event_and_cancellation_is_final() {
    let mut h = Harness::new();
    let other = Uuid::from_u128(8);
    let outs = [
        h.run(10, set(EVENT, SaleOverride::Paused)),
        h.run(11, set(other, SaleOverride::OnSale)),
        h.run(12, set(EVENT, SaleOverride::Cancelled)),
        h.run(13, set(EVENT, SaleOverride::OnSale)),
    ];
    assert!(matches!(
        outs[0],
        InventoryResponse::Status {
            status: SaleOverride::Paused,
            changed_ms: 10,
            ..
        }
    ));
    assert_eq!(
        outs[1],
        InventoryResponse::Rejected(InventoryRejection::WrongEvent { serves: EVENT })
    );
    assert_eq!(
        outs[3],
        InventoryResponse::Rejected(InventoryRejection::Cancelled)
    );
    assert_eq!(h.inv().status(), SaleOverride::Cancelled);
    h.check_restore();
}

#[test]
fn a_hold_is_all_or_nothing_and_names_the_taken_seats() {
    let mut h = Harness::new();
    open(&mut h, 8);
    let r = h.run(2_000, reserve(1, 1, &[0, 1, 2]));
    let InventoryResponse::Reserved(v) = r else {
        panic!("{r:?}")
    };
    assert_eq!(v.seat_ids, vec![seat(0), seat(1), seat(2)]);
    assert_eq!((v.price_cents, v.fees_cents), (30_000, 4_500));
    assert_eq!(v.expires_ms, 2_000 + 10 * MIN);
    assert_eq!(v.status, ReservationStatus::Active);
    // Seat 2 is taken: nothing of the second hold happens.
    let r = h.run(2_001, reserve(2, 2, &[2, 3]));
    assert_eq!(
        r,
        InventoryResponse::Rejected(InventoryRejection::SeatsUnavailable(vec![seat(2)]))
    );
    assert_eq!(h.inv().seat_state(3), Some(SeatState::Available));
    assert_eq!(h.inv().available_by_tier(), &[5, 6]);
    // Duplicates and unknown seats are refused.
    assert_eq!(
        h.run(2_002, reserve(3, 2, &[5, 5])),
        InventoryResponse::Rejected(InventoryRejection::DuplicateSeats(vec![seat(5)]))
    );
    assert_eq!(
        h.run(2_003, reserve(4, 2, &[5, 99])),
        InventoryResponse::Rejected(InventoryRejection::UnknownSeats(vec![seat(99)]))
    );
    h.check_restore();
}

#[test]
fn the_limit_counts_held_and_bought_tickets() {
    let mut h = Harness::new();
    open(&mut h, 4);
    assert!(matches!(
        h.run(2_000, reserve(1, 1, &[0, 1, 2])),
        InventoryResponse::Reserved(_)
    ));
    h.run(
        2_001,
        InventoryCommand::Convert {
            event_id: EVENT,
            reservation_id: Uuid::from_u128(1),
        },
    );
    assert_eq!(
        h.run(2_002, reserve(2, 1, &[4, 5])),
        InventoryResponse::Rejected(InventoryRejection::PurchaseLimit {
            limit: 4,
            have: 3,
            asked: 2
        })
    );
    assert!(matches!(
        h.run(2_003, reserve(3, 1, &[4])),
        InventoryResponse::Reserved(_)
    ));
    assert_eq!(h.inv().tickets_of(&Uuid::from_u128(1)), 4);
    // Sold seats: 410 territory, reported as such even when some are only held.
    assert_eq!(
        h.run(2_004, reserve(4, 2, &[0, 4])),
        InventoryResponse::Rejected(InventoryRejection::SeatsSold(vec![seat(0)]))
    );
    h.check_restore();
}

#[test]
fn holds_expire_by_stamped_time_and_release_is_owner_only_and_idempotent() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[0, 1]));
    h.run(3_000, reserve(2, 2, &[2, 3]));
    // Not the owner.
    let release = |user: u128| InventoryCommand::Release {
        event_id: EVENT,
        reservation_id: Uuid::from_u128(2),
        user_id: Uuid::from_u128(user),
    };
    assert_eq!(
        h.run(3_001, release(1)),
        InventoryResponse::Rejected(InventoryRejection::NotOwner)
    );
    let InventoryResponse::Released(v) = h.run(3_002, release(2)) else {
        panic!()
    };
    assert_eq!(v.status, ReservationStatus::Released);
    assert!(matches!(
        h.run(3_003, release(2)),
        InventoryResponse::Released(_)
    ));
    assert_eq!(h.inv().seat_state(2), Some(SeatState::Available));
    // Reads at a later time see the first hold expired before any sweep.
    let avail = |h: &Harness, now| match h
        .inv()
        .query(&InventoryQuery::Availability { now_ms: now }, now)
    {
        InventoryAnswer::Availability(Some(a)) => a.available,
        other => panic!("{other:?}"),
    };
    assert_eq!(avail(&h, 2_000 + 10 * MIN - 1), 12);
    assert_eq!(avail(&h, 2_000 + 10 * MIN), 14);
    assert_eq!(h.inv().next_expiry_ms(), Some(2_000 + 10 * MIN));
    // The sweep at that time expires it for good.
    assert_eq!(
        h.run(
            2_000 + 10 * MIN,
            InventoryCommand::Sweep { event_id: EVENT }
        ),
        InventoryResponse::Swept { expired: 1 }
    );
    assert_eq!(h.inv().seat_state(0), Some(SeatState::Available));
    assert_eq!(h.inv().next_expiry_ms(), None);
    match h.inv().query(
        &InventoryQuery::Reservation {
            reservation_id: Uuid::from_u128(1),
        },
        0,
    ) {
        InventoryAnswer::Reservation(Some(v)) => assert_eq!(v.status, ReservationStatus::Expired),
        other => panic!("{other:?}"),
    }
    h.check_restore();
}

#[test]
fn best_available_prefers_adjacent_seats_in_the_best_row() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[1]));
    let best =
        |res: u128, user: u128, quantity: u32, tier: Option<u128>| InventoryCommand::Reserve {
            event_id: EVENT,
            reservation_id: Uuid::from_u128(res),
            user_id: Uuid::from_u128(user),
            pick: Pick::Best {
                quantity,
                tier_id: tier.map(Uuid::from_u128),
            },
            hold_ms: MIN,
        };
    // Row A has 0 _ 2 3: two adjacent fit at 2,3; three go to row B.
    let seats = |r: InventoryResponse| match r {
        InventoryResponse::Reserved(v) => v.seat_ids,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        seats(h.run(2_001, best(2, 2, 2, Some(1)))),
        vec![seat(2), seat(3)]
    );
    assert_eq!(
        seats(h.run(2_002, best(3, 3, 3, None))),
        vec![seat(4), seat(5), seat(6)]
    );
    // Floor now has 0 and 7 left: scattered.
    assert_eq!(
        seats(h.run(2_003, best(4, 4, 2, Some(1)))),
        vec![seat(0), seat(7)]
    );
    assert_eq!(
        h.run(2_004, best(5, 5, 1, Some(1))),
        InventoryResponse::Rejected(InventoryRejection::NotEnoughSeats { available: 0 })
    );
    assert_eq!(
        h.run(2_005, best(6, 5, 1, Some(77))),
        InventoryResponse::Rejected(InventoryRejection::UnknownTier(Uuid::from_u128(77)))
    );
    h.check_restore();
}

#[test]
fn holds_wait_for_the_sale_and_refunds_put_seats_back() {
    let mut early = Harness::new();
    early.run(
        100,
        InventoryCommand::Open {
            event_id: EVENT,
            layout: Box::new(layout(8)),
        },
    );
    assert_eq!(
        early.run(200, reserve(1, 1, &[0])),
        InventoryResponse::Rejected(InventoryRejection::NotOnSale(SaleStatus::NotOnSale))
    );
    early.run(300, set(EVENT, SaleOverride::OnSale));
    assert!(matches!(
        early.run(400, reserve(1, 1, &[0])),
        InventoryResponse::Reserved(_)
    ));

    let mut h = Harness::new();
    open(&mut h, 8);
    // The layout goes on sale at t=1000; the machine's clock is already there
    // (Open was stamped 1000), so an earlier stamp reads as 1000: on sale.
    assert!(matches!(
        h.run(500, reserve(1, 1, &[0])),
        InventoryResponse::Reserved(_)
    ));
    let r = Uuid::from_u128(1);
    h.run(
        600,
        InventoryCommand::Release {
            event_id: EVENT,
            reservation_id: r,
            user_id: Uuid::from_u128(1),
        },
    );
    h.run(2_000, reserve(2, 1, &[0]));
    let conv = InventoryCommand::Convert {
        event_id: EVENT,
        reservation_id: Uuid::from_u128(2),
    };
    assert!(matches!(
        h.run(2_001, conv),
        InventoryResponse::Converted(_)
    ));
    assert_eq!(
        h.inv().seat_state(0),
        Some(SeatState::Sold(Uuid::from_u128(2)))
    );
    let refund = InventoryCommand::Refund {
        event_id: EVENT,
        reservation_id: Uuid::from_u128(2),
    };
    assert!(matches!(
        h.run(2_002, refund),
        InventoryResponse::Refunded(_)
    ));
    assert_eq!(h.inv().seat_state(0), Some(SeatState::Available));
    assert_eq!(h.inv().tickets_of(&Uuid::from_u128(1)), 0);
    h.run(2_003, set(EVENT, SaleOverride::Paused));
    assert_eq!(
        h.run(2_004, reserve(3, 1, &[0])),
        InventoryResponse::Rejected(InventoryRejection::NotOnSale(SaleStatus::Paused))
    );
    h.check_restore();
}

/// Regression (found by the chaos suite's clock nemesis): reads judge expiry by the
/// group's replicated clock, not the reader's wall clock, so replicas at the same
/// index agree whatever their clocks say, and a hold reads ACTIVE until a command
/// stamped at or past its expiry is applied.
#[test]
fn reads_judge_expiry_by_the_replicated_clock() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[0]));
    let status = |h: &Harness| {
        let q = Query::Inventory(InventoryQuery::Reservation {
            reservation_id: Uuid::from_u128(1),
        });
        match h.m.query(&q) {
            QueryResult::Inventory(InventoryAnswer::Reservation(Some(v))) => v.status,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(status(&h), ReservationStatus::Active);
    h.run(2_000 + 10 * MIN - 1, reserve(2, 2, &[5]));
    assert_eq!(
        status(&h),
        ReservationStatus::Active,
        "one ms before expiry"
    );
    h.run(
        2_000 + 10 * MIN,
        InventoryCommand::Sweep { event_id: EVENT },
    );
    assert_eq!(status(&h), ReservationStatus::Expired);
}
