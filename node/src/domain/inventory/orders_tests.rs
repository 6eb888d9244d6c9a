//! Order and ticket tests: the saga's steps on the machine (create pins the hold,
//! settle sells or releases, capture, cancel, refund), one order per hold, scans
//! admitting once, restore after each; and a property test over random sequences
//! of holds, orders, payments, cancels and scans.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use uuid::Uuid;

use super::orders::*;
use super::proptests::{check, LIMIT};
use super::tests::{open, reserve, Harness, EVENT, MIN};
use super::tickets::*;
use super::transfers::*;
use super::*;
use crate::domain::ids::{self, Kind};

pub(super) fn order_id(n: u128) -> Uuid {
    ids::inside(&EVENT, Kind::Order, &Uuid::from_u128(n))
}

pub(super) fn create(order: Uuid, res: u128, user: u128) -> InventoryCommand {
    InventoryCommand::OrderCreate {
        event_id: EVENT,
        order: Box::new(NewOrder {
            order_id: order,
            reservation_id: Uuid::from_u128(res),
            user_id: Uuid::from_u128(user),
            payment_method_id: Uuid::from_u128(77),
            card_ref: "tok_visa".into(),
            billing_address: None,
            delivery_method: "MOBILE".into(),
            tax_bps: 900,
        }),
    }
}

pub(super) fn settle(order: Uuid, ok: bool, nonce: u64) -> InventoryCommand {
    InventoryCommand::OrderSettle {
        event_id: EVENT,
        order_id: order,
        settlement: if ok {
            Settlement::Authorized {
                payment_ref: format!("pi_{order}"),
            }
        } else {
            Settlement::Declined {
                reason: "card_declined".into(),
            }
        },
        nonce,
    }
}

pub(super) fn view(r: InventoryResponse) -> OrderView {
    match r {
        InventoryResponse::Order(v) => *v,
        other => panic!("not an order: {other:?}"),
    }
}

#[test]
fn an_order_pins_its_hold_then_sells_it_with_tickets() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[0, 1]));
    let o = order_id(1);
    let v = view(h.run(3_000, create(o, 1, 1)));
    // The spec's arithmetic: fees from the hold, 9% tax on the subtotal.
    let ord = &v.order;
    assert_eq!(
        (
            ord.subtotal_cents,
            ord.fees_cents,
            ord.taxes_cents,
            ord.total_cents
        ),
        (20_000, 3_000, 1_800, 24_800)
    );
    assert_eq!(
        (ord.status, ord.payment),
        (OrderStatus::Pending, PaymentState::Authorizing)
    );
    assert_eq!(ord.next_step(), Some(SagaStep::Authorize));
    // Pinned: the hold outlives its expiry while the payment is out, and its
    // owner cannot release it under the order.
    let late = 2_000 + 11 * MIN;
    h.run(late, InventoryCommand::Sweep { event_id: EVENT });
    assert_eq!(
        h.inv().seat_state(0),
        Some(SeatState::Held(Uuid::from_u128(1)))
    );
    assert_eq!(
        h.run(
            late,
            InventoryCommand::Release {
                event_id: EVENT,
                reservation_id: Uuid::from_u128(1),
                user_id: Uuid::from_u128(1),
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::OrderPending)
    );
    // Asking again for the same hold answers the same order.
    assert_eq!(
        view(h.run(late, create(order_id(2), 1, 1))).order.order_id,
        o
    );
    h.check_restore();

    let v = view(h.run(late + 1, settle(o, true, 42)));
    assert_eq!(
        (v.order.status, v.order.payment),
        (OrderStatus::Confirmed, PaymentState::Authorized)
    );
    assert_eq!(v.tickets.len(), 2);
    assert!(v
        .tickets
        .iter()
        .all(|t| t.barcode.len() == 12 && t.status == TicketStatus::Active));
    assert_ne!(v.tickets[0].barcode, v.tickets[1].barcode);
    assert_eq!(
        h.inv().seat_state(1),
        Some(SeatState::Sold(Uuid::from_u128(1)))
    );
    // A second outcome changes nothing (the first wins), nor does a direct refund.
    assert_eq!(view(h.run(late + 2, settle(o, false, 1))), v);
    assert!(matches!(
        h.run(
            late + 2,
            InventoryCommand::Refund {
                event_id: EVENT,
                reservation_id: Uuid::from_u128(1)
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::Invalid(_))
    ));
    let v = view(h.run(
        late + 3,
        InventoryCommand::OrderCaptured {
            event_id: EVENT,
            order_id: o,
        },
    ));
    assert_eq!(v.order.payment, PaymentState::Captured);
    assert_eq!(v.order.next_step(), None);
    h.check_restore();
}

#[test]
fn a_declined_payment_releases_the_seats_and_an_expired_hold_cannot_be_ordered() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[0, 1]));
    let v = view(h.run(3_000, create(order_id(1), 1, 1)));
    let v = view(h.run(3_100, settle(v.order.order_id, false, 7)));
    assert_eq!(
        (v.order.status, v.order.payment),
        (OrderStatus::Failed, PaymentState::Declined)
    );
    assert!(v.tickets.is_empty());
    assert_eq!(h.inv().seat_state(0), Some(SeatState::Available));
    // Someone else's hold, an unknown hold, an expired hold.
    h.run(3_200, reserve(2, 2, &[4]));
    assert_eq!(
        h.run(3_300, create(order_id(3), 2, 1)),
        InventoryResponse::Rejected(InventoryRejection::NotOwner)
    );
    assert_eq!(
        h.run(3_300, create(order_id(4), 99, 1)),
        InventoryResponse::Rejected(InventoryRejection::UnknownReservation)
    );
    assert_eq!(
        h.run(3_200 + 10 * MIN, create(order_id(5), 2, 2)),
        InventoryResponse::Rejected(InventoryRejection::ReservationClosed(
            ReservationStatus::Expired
        ))
    );
    // An order id of another event is refused.
    let foreign = ids::inside(&Uuid::from_u128(5), Kind::Order, &Uuid::from_u128(1));
    h.run(3_300, reserve(3, 3, &[5]));
    assert!(matches!(
        h.run(3_400, create(foreign, 3, 3)),
        InventoryResponse::Rejected(InventoryRejection::Invalid(_))
    ));
    h.check_restore();
}

#[test]
fn cancel_voids_tickets_frees_seats_and_owes_a_refund_once() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[8, 9]));
    let o = order_id(1);
    h.run(3_000, create(o, 1, 1));
    h.run(3_100, settle(o, true, 5));
    let cancel = |user: u128| InventoryCommand::OrderCancel {
        event_id: EVENT,
        order_id: o,
        user_id: Uuid::from_u128(user),
    };
    assert_eq!(
        h.run(3_200, cancel(2)),
        InventoryResponse::Rejected(InventoryRejection::NotOwner)
    );
    let v = view(h.run(3_300, cancel(1)));
    assert_eq!(
        (v.order.status, v.order.payment),
        (OrderStatus::Cancelled, PaymentState::Refunding)
    );
    assert_eq!(v.order.next_step(), Some(SagaStep::Refund));
    assert!(v.tickets.iter().all(|t| t.status == TicketStatus::Void));
    assert_eq!(h.inv().seat_state(8), Some(SeatState::Available));
    assert_eq!(h.inv().tickets_of(&Uuid::from_u128(1)), 0);
    assert_eq!(
        h.run(3_400, cancel(1)),
        InventoryResponse::Rejected(InventoryRejection::AlreadyCancelled)
    );
    // A capture that raced the cancel does not undo it; the refund is recorded once.
    let v2 = view(h.run(
        3_500,
        InventoryCommand::OrderCaptured {
            event_id: EVENT,
            order_id: o,
        },
    ));
    assert_eq!(v2.order.payment, PaymentState::Refunding);
    let done = view(h.run(
        3_600,
        InventoryCommand::OrderRefunded {
            event_id: EVENT,
            order_id: o,
        },
    ));
    assert_eq!(
        (done.order.payment, done.order.refunded_ms),
        (PaymentState::Refunded, 3_600)
    );
    assert_eq!(
        view(h.run(
            3_700,
            InventoryCommand::OrderRefunded {
                event_id: EVENT,
                order_id: o
            }
        )),
        done
    );
    // A void ticket does not scan.
    let barcode = done.tickets[0].barcode.clone();
    assert_eq!(
        h.run(
            3_800,
            InventoryCommand::TicketScan {
                event_id: EVENT,
                barcode
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::TicketVoid)
    );
    h.check_restore();
}

#[test]
fn a_ticket_scans_once_and_then_its_order_is_not_cancellable() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[0]));
    let o = order_id(1);
    h.run(3_000, create(o, 1, 1));
    let v = view(h.run(3_100, settle(o, true, 9)));
    let barcode = v.tickets[0].barcode.clone();
    let scan = || InventoryCommand::TicketScan {
        event_id: EVENT,
        barcode: barcode.clone(),
    };
    let InventoryResponse::Scanned(t) = h.run(4_000, scan()) else {
        panic!("not admitted")
    };
    assert_eq!((t.status, t.scanned_ms), (TicketStatus::Admitted, 4_000));
    assert_eq!(
        h.run(4_001, scan()),
        InventoryResponse::Rejected(InventoryRejection::AlreadyScanned {
            ticket_id: t.ticket_id,
            scanned_ms: 4_000
        })
    );
    assert_eq!(
        h.run(
            4_002,
            InventoryCommand::TicketScan {
                event_id: EVENT,
                barcode: "000000000000".into()
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::UnknownBarcode)
    );
    assert!(matches!(
        h.run(
            4_003,
            InventoryCommand::OrderCancel {
                event_id: EVENT,
                order_id: o,
                user_id: Uuid::from_u128(1)
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::OrderNotCancellable(_))
    ));
    h.check_restore();
}

#[test]
fn an_order_is_not_cancellable_once_the_event_started() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[0]));
    let o = order_id(1);
    h.run(3_000, create(o, 1, 1));
    h.run(3_100, settle(o, true, 9));
    let date = layout_date();
    assert!(matches!(
        h.run(
            date,
            InventoryCommand::OrderCancel {
                event_id: EVENT,
                order_id: o,
                user_id: Uuid::from_u128(1)
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::OrderNotCancellable(_))
    ));
}

fn layout_date() -> i64 {
    super::tests::layout(8).date_ms
}

#[derive(Debug, Clone)]
enum Op {
    Hold { user: u128, seats: Vec<u32> },
    Order { user: u128, pick: usize },
    Settle { pick: usize, ok: bool, nonce: u64 },
    Capture { pick: usize },
    CaptureFailed { pick: usize },
    Cancel { user: u128, pick: usize },
    Refunded { pick: usize },
    Scan { pick: usize },
    Offer { pick: usize, to: u128 },
    Accept { pick: usize, user: u128 },
    Withdraw { pick: usize, user: u128 },
    Sweep,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u128..3, prop::collection::vec(0u32..14, 1..3))
            .prop_map(|(user, seats)| Op::Hold { user, seats }),
        3 => (0u128..3, any::<usize>()).prop_map(|(user, pick)| Op::Order { user, pick }),
        3 => (any::<usize>(), prop::bool::weighted(0.8), any::<u64>())
            .prop_map(|(pick, ok, nonce)| Op::Settle { pick, ok, nonce }),
        1 => any::<usize>().prop_map(|pick| Op::Capture { pick }),
        1 => any::<usize>().prop_map(|pick| Op::CaptureFailed { pick }),
        1 => (0u128..3, any::<usize>()).prop_map(|(user, pick)| Op::Cancel { user, pick }),
        1 => any::<usize>().prop_map(|pick| Op::Refunded { pick }),
        1 => any::<usize>().prop_map(|pick| Op::Scan { pick }),
        2 => (any::<usize>(), 0u128..3).prop_map(|(pick, to)| Op::Offer { pick, to }),
        2 => (any::<usize>(), 0u128..3).prop_map(|(pick, user)| Op::Accept { pick, user }),
        1 => (any::<usize>(), 0u128..3).prop_map(|(pick, user)| Op::Withdraw { pick, user }),
        1 => Just(Op::Sweep),
    ]
}

/// Orders agree with their holds and tickets.
fn check_orders(inv: &Inventory) {
    let mut barcodes = BTreeSet::new();
    for t in inv.tickets() {
        assert!(barcodes.insert(t.barcode.clone()), "barcode twice: {t:?}");
    }
    // Each ticket that still counts (ACTIVE or ADMITTED) is listed by exactly one
    // order, and every listed ticket is one of them: a transfer swaps, never copies.
    let listed: Vec<Uuid> = inv
        .orders()
        .flat_map(|o| o.tickets.iter().copied())
        .collect();
    let counting: BTreeSet<Uuid> = inv
        .tickets()
        .filter(|t| matches!(t.status, TicketStatus::Active | TicketStatus::Admitted))
        .map(|t| t.ticket_id)
        .collect();
    let listed_live: BTreeSet<Uuid> = listed
        .iter()
        .copied()
        .filter(|id| counting.contains(id))
        .collect();
    assert_eq!(listed_live, counting);
    assert_eq!(listed.len(), listed.iter().collect::<BTreeSet<_>>().len());
    for t in inv.transfers() {
        let old = inv.ticket(&t.ticket_id).expect("a transfer's ticket");
        if t.status == TransferStatus::Accepted {
            assert_eq!(old.status, TicketStatus::Transferred);
            let new = inv
                .ticket(&t.new_ticket.expect("new ticket"))
                .expect("issued");
            assert_eq!((new.seat, Some(new.holder)), (old.seat, t.accepted_by));
        }
    }
    let mut per_hold = BTreeMap::new();
    for o in inv.orders() {
        assert!(
            per_hold.insert(o.reservation_id, o.order_id).is_none(),
            "two orders of one hold"
        );
        let r = inv
            .reservations()
            .find(|r| r.reservation_id == o.reservation_id)
            .expect("an order's hold");
        let tickets: Vec<&Ticket> = o.tickets.iter().filter_map(|t| inv.ticket(t)).collect();
        assert_eq!(tickets.len(), o.tickets.len());
        let live = tickets
            .iter()
            .filter(|t| t.status != TicketStatus::Void)
            .count();
        match o.status {
            OrderStatus::Pending => {
                assert_eq!(r.status, ReservationStatus::Active);
                assert!(tickets.is_empty());
            }
            OrderStatus::Confirmed => {
                // Paid for, with a live ticket per seat, seats sold to this hold.
                assert_eq!(r.status, ReservationStatus::Converted);
                assert!(matches!(
                    o.payment,
                    PaymentState::Authorized | PaymentState::Captured
                ));
                assert_eq!(live, o.seats.len());
                for &s in &o.seats {
                    assert_eq!(inv.seat_state(s), Some(SeatState::Sold(r.reservation_id)));
                }
            }
            OrderStatus::Failed if o.payment == PaymentState::Voided => {
                // Confirmed, then the capture proved impossible: nothing taken.
                assert_eq!(r.status, ReservationStatus::Refunded);
                assert_eq!(live, 0);
            }
            OrderStatus::Failed => {
                assert_eq!(r.status, ReservationStatus::Released);
                assert_eq!(o.payment, PaymentState::Declined);
                assert!(tickets.is_empty());
            }
            OrderStatus::Cancelled => {
                assert_eq!(r.status, ReservationStatus::Refunded);
                assert!(matches!(
                    o.payment,
                    PaymentState::Refunding | PaymentState::Refunded
                ));
                assert_eq!(live, 0);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_order_sagas_keep_money_seats_and_tickets_consistent(
        ops in prop::collection::vec((op(), 0i64..3 * MIN), 1..60),
    ) {
        let mut h = Harness::new();
        open(&mut h, LIMIT);
        let mut now = 1_000i64;
        let mut holds: Vec<(Uuid, Uuid)> = Vec::new();
        let mut orders: Vec<Uuid> = Vec::new();
        let mut admitted = BTreeSet::new();
        for (i, (op, dt)) in ops.into_iter().enumerate() {
            now += dt;
            let pick = |v: &Vec<Uuid>, p: usize| v.get(p % v.len().max(1)).copied().unwrap_or_default();
            let cmd = match op {
                Op::Hold { user, seats } => InventoryCommand::Reserve {
                    event_id: EVENT,
                    reservation_id: Uuid::from_u128(1_000 + i as u128),
                    user_id: Uuid::from_u128(user),
                    pick: Pick::Seats(seats.iter().map(|&s| super::tests::seat(s)).collect()),
                    hold_ms: 5 * MIN,
                },
                Op::Order { user, pick: p } => {
                    let Some(&(res, _)) = holds.get(p % holds.len().max(1)) else { continue };
                    let n = NewOrder {
                        order_id: ids::inside(&EVENT, Kind::Order, &Uuid::new_v5(&res, b"order")),
                        reservation_id: res,
                        user_id: Uuid::from_u128(user),
                        payment_method_id: Uuid::from_u128(7),
                        card_ref: "tok_visa".into(),
                        billing_address: None,
                        delivery_method: "MOBILE".into(),
                        tax_bps: 900,
                    };
                    InventoryCommand::OrderCreate { event_id: EVENT, order: Box::new(n) }
                }
                Op::Settle { pick: p, ok, nonce } => settle(pick(&orders, p), ok, nonce),
                Op::Capture { pick: p } => InventoryCommand::OrderCaptured { event_id: EVENT, order_id: pick(&orders, p) },
                Op::CaptureFailed { pick: p } => InventoryCommand::OrderCaptureFailed {
                    event_id: EVENT, order_id: pick(&orders, p), reason: "lapsed".into(),
                },
                Op::Cancel { user, pick: p } => InventoryCommand::OrderCancel {
                    event_id: EVENT, order_id: pick(&orders, p), user_id: Uuid::from_u128(user),
                },
                Op::Refunded { pick: p } => InventoryCommand::OrderRefunded { event_id: EVENT, order_id: pick(&orders, p) },
                Op::Scan { pick: p } => {
                    let codes: Vec<String> = h.inv().tickets().map(|t| t.barcode.clone()).collect();
                    let Some(code) = codes.get(p % codes.len().max(1)).cloned() else { continue };
                    InventoryCommand::TicketScan { event_id: EVENT, barcode: code }
                }
                Op::Offer { pick: p, to } => {
                    let tickets: Vec<(Uuid, Uuid)> = h.inv().tickets().map(|t| (t.ticket_id, t.holder)).collect();
                    let Some(&(ticket_id, holder)) = tickets.get(p % tickets.len().max(1)) else { continue };
                    InventoryCommand::TransferCreate {
                        event_id: EVENT,
                        transfer: Box::new(NewTransfer {
                            transfer_id: ids::inside(&EVENT, Kind::Transfer, &Uuid::from_u128(5_000 + i as u128)),
                            ticket_id,
                            from: holder,
                            to_email: format!("u{to}@x"),
                            to_name: String::new(),
                            ttl_ms: 2 * MIN,
                        }),
                    }
                }
                Op::Accept { pick: p, user } => {
                    let offers: Vec<Uuid> = h.inv().transfers().map(|t| t.transfer_id).collect();
                    let Some(&transfer_id) = offers.get(p % offers.len().max(1)) else { continue };
                    InventoryCommand::TransferAccept {
                        event_id: EVENT, transfer_id, user_id: Uuid::from_u128(user),
                        email: format!("u{user}@x"), nonce: i as u64,
                    }
                }
                Op::Withdraw { pick: p, user } => {
                    let offers: Vec<Uuid> = h.inv().transfers().map(|t| t.transfer_id).collect();
                    let Some(&transfer_id) = offers.get(p % offers.len().max(1)) else { continue };
                    InventoryCommand::TransferCancel { event_id: EVENT, transfer_id, user_id: Uuid::from_u128(user) }
                }
                Op::Sweep => InventoryCommand::Sweep { event_id: EVENT },
            };
            match h.run(now, cmd) {
                InventoryResponse::Reserved(v) => holds.push((v.reservation_id, v.user_id)),
                InventoryResponse::Order(v) if !orders.contains(&v.order.order_id) => orders.push(v.order.order_id),
                InventoryResponse::Scanned(t) => prop_assert!(admitted.insert(t.ticket_id), "admitted twice"),
                _ => {}
            }
            check(h.inv(), now);
            check_orders(h.inv());
        }
        h.check_restore();
    }
}

#[test]
fn an_authorization_that_cannot_be_captured_voids_the_tickets() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[0, 1]));
    let o = order_id(1);
    h.run(3_000, create(o, 1, 1));
    h.run(3_100, settle(o, true, 9));
    let failed = || InventoryCommand::OrderCaptureFailed {
        event_id: EVENT,
        order_id: o,
        reason: "authorization lapsed".into(),
    };
    let v = view(h.run(3_200, failed()));
    assert_eq!(
        (v.order.status, v.order.payment),
        (OrderStatus::Failed, PaymentState::Voided)
    );
    assert_eq!(v.order.next_step(), None);
    assert!(v.tickets.iter().all(|t| t.status == TicketStatus::Void));
    assert_eq!(h.inv().seat_state(0), Some(SeatState::Available));
    // Once failed, a late capture record or a cancel changes nothing.
    assert_eq!(
        view(h.run(
            3_300,
            InventoryCommand::OrderCaptured {
                event_id: EVENT,
                order_id: o
            }
        )),
        v
    );
    assert!(matches!(
        h.run(
            3_400,
            InventoryCommand::OrderCancel {
                event_id: EVENT,
                order_id: o,
                user_id: Uuid::from_u128(1)
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::OrderNotCancellable(_))
    ));
    assert_eq!(view(h.run(3_500, failed())), v);
    h.check_restore();
}
