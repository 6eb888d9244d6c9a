//! Transfer tests: an offer reissues the ticket to its recipient once (the old
//! one void, the order no longer cancellable), offers can be withdrawn and lapse
//! at their expiry, one pending offer per ticket; restore after each.

use uuid::Uuid;

use super::orders_tests::{create, order_id, settle, view};
use super::tests::{open, reserve, Harness, EVENT, MIN};
use super::tickets::*;
use super::transfers::*;
use super::*;
use crate::domain::ids::{self, Kind};

#[test]
fn a_transfer_reissues_the_ticket_to_its_recipient_once() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[0]));
    let o = order_id(1);
    h.run(3_000, create(o, 1, 1));
    let v = view(h.run(3_100, settle(o, true, 9)));
    let old = v.tickets[0].clone();
    let tid = ids::inside(&EVENT, Kind::Transfer, &Uuid::from_u128(1));
    let offer = |from: u128, id: Uuid| InventoryCommand::TransferCreate {
        event_id: EVENT,
        transfer: Box::new(NewTransfer {
            transfer_id: id,
            ticket_id: old.ticket_id,
            from: Uuid::from_u128(from),
            to_email: "friend@x".into(),
            to_name: "Friend".into(),
            ttl_ms: 10 * MIN,
        }),
    };
    let accept = |user: u128, email: &str| InventoryCommand::TransferAccept {
        event_id: EVENT,
        transfer_id: tid,
        user_id: Uuid::from_u128(user),
        email: email.into(),
        nonce: 77,
    };
    assert_eq!(
        h.run(3_200, offer(2, tid)),
        InventoryResponse::Rejected(InventoryRejection::NotOwner)
    );
    let InventoryResponse::Transfer(t) = h.run(3_300, offer(1, tid)) else {
        panic!("no offer")
    };
    assert_eq!(
        (t.status, t.expires_ms),
        (TransferStatus::Pending, 3_300 + 10 * MIN)
    );
    // One pending offer per ticket; the same offer again answers the same.
    let other = ids::inside(&EVENT, Kind::Transfer, &Uuid::from_u128(2));
    assert!(matches!(
        h.run(3_400, offer(1, other)),
        InventoryResponse::Rejected(InventoryRejection::TicketNotTransferable(_))
    ));
    assert!(matches!(
        h.run(3_400, offer(1, tid)),
        InventoryResponse::Transfer(_)
    ));
    // Only the addressee accepts; then the old ticket is void and the buyer
    // cannot cancel the order any more.
    assert_eq!(
        h.run(3_500, accept(3, "stranger@x")),
        InventoryResponse::Rejected(InventoryRejection::NotOwner)
    );
    let InventoryResponse::Transfer(t) = h.run(3_600, accept(2, "friend@x")) else {
        panic!("not accepted")
    };
    let new_id = t.new_ticket.expect("a new ticket");
    let new = h.inv().ticket(&new_id).cloned().expect("issued");
    assert_eq!(
        (new.holder, new.seat, new.status),
        (Uuid::from_u128(2), old.seat, TicketStatus::Active)
    );
    assert_ne!(new.barcode, old.barcode);
    assert_eq!(
        h.inv().ticket(&old.ticket_id).map(|t| t.status),
        Some(TicketStatus::Transferred)
    );
    assert_eq!(
        h.run(3_700, accept(2, "friend@x")),
        InventoryResponse::Transfer(t.clone())
    );
    assert_eq!(
        h.run(
            3_800,
            InventoryCommand::TicketScan {
                event_id: EVENT,
                barcode: old.barcode.clone()
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::TicketVoid)
    );
    assert!(matches!(
        h.run(
            3_900,
            InventoryCommand::OrderCancel {
                event_id: EVENT,
                order_id: o,
                user_id: Uuid::from_u128(1)
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::OrderNotCancellable(_))
    ));
    assert_eq!(
        h.run(
            4_000,
            InventoryCommand::TransferCancel {
                event_id: EVENT,
                transfer_id: tid,
                user_id: Uuid::from_u128(1)
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::TransferClosed(TransferStatus::Accepted))
    );
    h.check_restore();
}

#[test]
fn a_transfer_can_be_withdrawn_and_lapses_at_its_expiry() {
    let mut h = Harness::new();
    open(&mut h, 8);
    h.run(2_000, reserve(1, 1, &[0]));
    let o = order_id(1);
    h.run(3_000, create(o, 1, 1));
    let v = view(h.run(3_100, settle(o, true, 9)));
    let ticket_id = v.tickets[0].ticket_id;
    let offer = |n: u128| InventoryCommand::TransferCreate {
        event_id: EVENT,
        transfer: Box::new(NewTransfer {
            transfer_id: ids::inside(&EVENT, Kind::Transfer, &Uuid::from_u128(n)),
            ticket_id,
            from: Uuid::from_u128(1),
            to_email: "friend@x".into(),
            to_name: String::new(),
            ttl_ms: MIN,
        }),
    };
    let first = ids::inside(&EVENT, Kind::Transfer, &Uuid::from_u128(1));
    h.run(4_000, offer(1));
    let InventoryResponse::Transfer(t) = h.run(
        4_100,
        InventoryCommand::TransferCancel {
            event_id: EVENT,
            transfer_id: first,
            user_id: Uuid::from_u128(1),
        },
    ) else {
        panic!("not withdrawn")
    };
    assert_eq!(t.status, TransferStatus::Cancelled);
    // A new offer once the first is withdrawn; it lapses after a minute.
    let second = ids::inside(&EVENT, Kind::Transfer, &Uuid::from_u128(2));
    assert!(matches!(
        h.run(4_200, offer(2)),
        InventoryResponse::Transfer(_)
    ));
    assert_eq!(
        h.run(
            4_200 + MIN,
            InventoryCommand::TransferAccept {
                event_id: EVENT,
                transfer_id: second,
                user_id: Uuid::from_u128(2),
                email: "friend@x".into(),
                nonce: 1,
            }
        ),
        InventoryResponse::Rejected(InventoryRejection::TransferClosed(TransferStatus::Expired))
    );
    assert!(matches!(
        h.run(4_300 + MIN, offer(3)),
        InventoryResponse::Transfer(_)
    ));
    h.check_restore();
}
