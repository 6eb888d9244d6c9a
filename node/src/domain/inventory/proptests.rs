//! Property tests over random command sequences: the invariants that make a
//! ticketing inventory safe hold after every command, and restoring from what the
//! machine persisted gives an identical machine; a snapshot's cut taken midway
//! still dumps what was persisted then.

use std::collections::BTreeMap;

use proptest::prelude::*;
use uuid::Uuid;

use super::tests::{open, seat, Harness, EVENT, MIN};
use super::*;

const USERS: u128 = 4;
pub(super) const LIMIT: u32 = 4;

#[derive(Debug, Clone)]
enum Op {
    Seats {
        user: u128,
        seats: Vec<u32>,
    },
    Best {
        user: u128,
        quantity: u32,
        tier: Option<u128>,
    },
    Release {
        user: u128,
        pick: usize,
    },
    Convert {
        pick: usize,
    },
    Refund {
        pick: usize,
    },
    Sweep,
    Status(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..USERS, prop::collection::vec(0u32..15, 1..4))
            .prop_map(|(user, seats)| Op::Seats { user, seats }),
        2 => (0..USERS, 1u32..4, prop::option::of(0u128..3))
            .prop_map(|(user, quantity, tier)| Op::Best { user, quantity, tier }),
        2 => (0..USERS, any::<usize>()).prop_map(|(user, pick)| Op::Release { user, pick }),
        1 => any::<usize>().prop_map(|pick| Op::Convert { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Refund { pick }),
        1 => Just(Op::Sweep),
        1 => (0u8..4).prop_map(Op::Status),
    ]
}

/// Checks every invariant against a recount from the reservations.
pub(super) fn check(inv: &Inventory, now_ms: i64) {
    let layout = inv.layout().expect("opened");
    let mut owner: BTreeMap<u32, Uuid> = BTreeMap::new();
    let mut per_user: BTreeMap<Uuid, u32> = BTreeMap::new();
    for r in inv.reservations() {
        let occupies = match r.status {
            ReservationStatus::Active => {
                // Due holds are expired by the command that reaches their time
                // (unless a pending order pins them).
                assert!(
                    r.expires_ms > now_ms || inv.pinned(&r.reservation_id),
                    "a due hold survived: {r:?}"
                );
                true
            }
            ReservationStatus::Converted => true,
            _ => false,
        };
        if !occupies {
            continue;
        }
        for &s in &r.seats {
            if let Some(other) = owner.insert(s, r.reservation_id) {
                panic!(
                    "seat {s} in two live reservations: {other} and {}",
                    r.reservation_id
                );
            }
        }
        *per_user.entry(r.user_id).or_default() += r.seats.len() as u32;
    }
    let mut available = vec![0u32; layout.tiers.len()];
    for (s, tier) in layout.seat_tiers().into_iter().enumerate() {
        let s = s as u32;
        let expected = match owner.get(&s) {
            None => SeatState::Available,
            Some(id) => {
                let r = inv
                    .reservations()
                    .find(|r| r.reservation_id == *id)
                    .expect("owner");
                if r.status == ReservationStatus::Active {
                    SeatState::Held(*id)
                } else {
                    SeatState::Sold(*id)
                }
            }
        };
        assert_eq!(inv.seat_state(s), Some(expected), "seat {s}");
        if expected == SeatState::Available {
            available[usize::from(tier)] += 1;
        }
    }
    assert_eq!(inv.available_by_tier(), available.as_slice());
    for (user, n) in per_user {
        assert!(n <= LIMIT, "user {user} has {n} tickets");
        assert_eq!(inv.tickets_of(&user), n);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_keep_every_invariant(
        ops in prop::collection::vec((op(), 0i64..4 * MIN), 1..60),
    ) {
        let mut h = Harness::new();
        open(&mut h, LIMIT);
        let mut now = 1_000i64;
        let mut made: Vec<Uuid> = Vec::new();
        let freeze_at = ops.len() / 2;
        let mut frozen = None;
        for (i, (op, dt)) in ops.into_iter().enumerate() {
            now += dt;
            let before: Vec<Option<SeatState>> =
                (0..14).map(|s| h.inv().seat_state(s)).collect();
            let pick = |p: usize| made.get(p % made.len().max(1)).copied().unwrap_or_default();
            let res_id = Uuid::from_u128(1_000 + i as u128);
            let (cmd, refunded) = match op {
                Op::Seats { user, seats } => (InventoryCommand::Reserve {
                    event_id: EVENT,
                    reservation_id: res_id,
                    user_id: Uuid::from_u128(user),
                    pick: Pick::Seats(seats.iter().map(|&s| seat(s)).collect()),
                    hold_ms: 5 * MIN,
                }, None),
                Op::Best { user, quantity, tier } => (InventoryCommand::Reserve {
                    event_id: EVENT,
                    reservation_id: res_id,
                    user_id: Uuid::from_u128(user),
                    pick: Pick::Best { quantity, tier_id: tier.map(|t| Uuid::from_u128(t + 1)) },
                    hold_ms: 5 * MIN,
                }, None),
                Op::Release { user, pick: p } => (InventoryCommand::Release {
                    event_id: EVENT,
                    reservation_id: pick(p),
                    user_id: Uuid::from_u128(user),
                }, None),
                Op::Convert { pick: p } => (InventoryCommand::Convert {
                    event_id: EVENT,
                    reservation_id: pick(p),
                }, None),
                Op::Refund { pick: p } => (InventoryCommand::Refund {
                    event_id: EVENT,
                    reservation_id: pick(p),
                }, Some(pick(p))),
                Op::Sweep => (InventoryCommand::Sweep { event_id: EVENT }, None),
                Op::Status(s) => (InventoryCommand::SetStatus {
                    event_id: EVENT,
                    status: [SaleOverride::Scheduled, SaleOverride::OnSale, SaleOverride::Paused, SaleOverride::Scheduled][usize::from(s)],
                }, None),
            };
            let response = h.run(now, cmd);
            if let InventoryResponse::Reserved(v) = &response {
                prop_assert_eq!(v.reservation_id, res_id);
                made.push(res_id);
            }
            check(h.inv(), now);
            if i == freeze_at {
                frozen = Some((h.m.freeze(), h.disk.clone()));
            }
            // Sold seats never come back, except by refunding their reservation.
            for (s, was) in before.iter().enumerate() {
                if let Some(SeatState::Sold(owner)) = was {
                    let now_state = h.inv().seat_state(s as u32);
                    if now_state != Some(SeatState::Sold(*owner)) {
                        prop_assert_eq!(refunded, Some(*owner), "seat {} left SOLD", s);
                        prop_assert!(matches!(response, InventoryResponse::Refunded(_)));
                    }
                }
            }
        }
        h.check_restore();
        // The later commands changed the machine's tables, not the frozen cut.
        if let Some((frozen, disk)) = frozen {
            let dumped: BTreeMap<_, _> = frozen.dump().into_iter().collect();
            prop_assert_eq!(dumped, disk);
        }
    }
}
