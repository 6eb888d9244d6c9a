//! Orders and tickets: the event group's half of the order saga (docs/design.md,
//! "Orders"). An order is created PENDING from a live hold, whose seats it pins
//! (the hold no longer expires); the payment's outcome settles it: CONFIRMED with
//! one ticket per seat and the seats SOLD, or FAILED with the seats released. A
//! confirmed order is then captured; a cancelled one voids its tickets, puts its
//! seats back on sale and owes a refund until the refund is recorded. Every step
//! after creation is idempotent by order id, so whichever node drives the saga (the
//! request's node, or a leader recovering orders a crash left behind) may repeat
//! any step.
//!
//! Barcodes come from a nonce the settling command carries (randomness from the
//! log), so every replica issues the same ones.
//!
//! Keys: `O{id}` an order (tickets are in [`super::tickets`]).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::tickets::{Ticket, TicketStatus};
use super::{Inventory, InventoryRejection, ReservationStatus};
use crate::domain::ids::{self, Kind};
use crate::domain::machine::encode_value;
use crate::domain::{ApplyCtx, Change};

pub(super) const ORDER_PREFIX: u8 = b'O';

/// Longest delivery method name and billing address (JSON text) kept.
pub const MAX_DELIVERY_LEN: usize = 32;
pub const MAX_BILLING_LEN: usize = 2048;

/// An order's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OrderStatus {
    /// Created; the payment's outcome is not recorded yet.
    Pending,
    /// Paid for (authorized at least): tickets issued, seats sold.
    Confirmed,
    /// The payment was declined: no tickets, seats released.
    Failed,
    /// Cancelled after confirmation: tickets void, seats back on sale.
    Cancelled,
}

impl OrderStatus {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            OrderStatus::Pending => "PENDING",
            OrderStatus::Confirmed => "CONFIRMED",
            OrderStatus::Failed => "FAILED",
            OrderStatus::Cancelled => "CANCELLED",
        }
    }
}

/// Where the order's money is, as far as the group has recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    /// Authorization asked for (or about to be).
    Authorizing,
    Authorized,
    Captured,
    Declined,
    /// Cancelled: the authorization is to be voided or the capture refunded.
    Refunding,
    Refunded,
    /// The authorization could not be captured (it lapsed or was cancelled at
    /// the gateway): nothing was taken, the tickets are void.
    Voided,
}

impl PaymentState {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            PaymentState::Authorizing => "PENDING",
            PaymentState::Authorized => "AUTHORIZED",
            PaymentState::Captured => "CAPTURED",
            PaymentState::Declined => "DECLINED",
            PaymentState::Refunding => "REFUND_PENDING",
            PaymentState::Refunded => "REFUNDED",
            PaymentState::Voided => "VOIDED",
        }
    }
}

/// The saga step an order waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SagaStep {
    /// Ask the gateway to authorize (idempotency key: the order id), then settle.
    Authorize,
    /// Capture the authorization, then record it.
    Capture,
    /// Void or refund the payment, then record it.
    Refund,
}

/// What an `OrderCreate` carries: the node resolved the payment method and the tax
/// rate; the group takes the amounts from the hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewOrder {
    pub order_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub payment_method_id: Uuid,
    /// What the gateway charges (the payment method's gateway reference).
    pub card_ref: String,
    /// The billing address as the client sent it (JSON text), if any.
    pub billing_address: Option<String>,
    /// `MOBILE`, `EMAIL`, ...
    pub delivery_method: String,
    /// Tax in basis points of the subtotal.
    pub tax_bps: u32,
}

/// The gateway's answer to an authorization.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settlement {
    Authorized { payment_ref: String },
    Declined { reason: String },
}

/// An order (persisted under `O{id}`). Times are stamped; 0 means not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: Uuid,
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    pub payment_method_id: Uuid,
    pub card_ref: String,
    pub billing_address: Option<String>,
    pub delivery_method: String,
    /// Seat indexes, as the hold had them.
    pub seats: Vec<u32>,
    pub subtotal_cents: u64,
    pub fees_cents: u64,
    pub taxes_cents: u64,
    pub total_cents: u64,
    pub status: OrderStatus,
    pub payment: PaymentState,
    /// The gateway's id of the authorization (a PaymentIntent id on Stripe).
    pub payment_ref: Option<String>,
    /// Why the payment failed.
    pub failure: Option<String>,
    pub tickets: Vec<Uuid>,
    pub created_ms: i64,
    pub confirmed_ms: i64,
    pub captured_ms: i64,
    pub cancelled_ms: i64,
    pub refunded_ms: i64,
}

impl Order {
    /// The saga step this order waits for, if any.
    pub fn next_step(&self) -> Option<SagaStep> {
        match (self.status, self.payment) {
            (OrderStatus::Pending, _) => Some(SagaStep::Authorize),
            (OrderStatus::Confirmed, PaymentState::Authorized) => Some(SagaStep::Capture),
            (_, PaymentState::Refunding) => Some(SagaStep::Refund),
            _ => None,
        }
    }

    /// When the order last moved: its pending step is due since then.
    pub fn last_step_ms(&self) -> i64 {
        self.created_ms
            .max(self.confirmed_ms)
            .max(self.captured_ms)
            .max(self.cancelled_ms)
    }

    /// What a refund returns: everything paid.
    pub fn refund_cents(&self) -> u64 {
        self.total_cents
    }
}

/// An order with its tickets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub event_id: Uuid,
    pub order: Order,
    pub tickets: Vec<Ticket>,
}

/// A pending saga step, for the leader's recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueStep {
    pub order_id: Uuid,
    pub step: SagaStep,
    pub since_ms: i64,
}

/// `amount × bps / 10,000`, rounded half up, in integer arithmetic.
pub fn percent_of(amount_cents: u64, bps: u32) -> u64 {
    let x = u128::from(amount_cents) * u128::from(bps);
    u64::try_from((x + 5_000) / 10_000).unwrap_or(u64::MAX)
}

pub(super) fn order_key(id: &Uuid) -> Vec<u8> {
    super::id_key(ORDER_PREFIX, id)
}

impl Inventory {
    /// Whether a hold is pinned by a pending order (it does not expire).
    pub(super) fn pinned(&self, reservation_id: &Uuid) -> bool {
        self.order_of
            .get(reservation_id)
            .and_then(|o| self.records.orders.get(o))
            .is_some_and(|o| o.status == OrderStatus::Pending)
    }

    /// Rebuilds the orders' derived state (after the holds' own rebuild).
    pub(super) fn rebuild_orders(&mut self) {
        self.order_of = self
            .records
            .orders
            .values()
            .map(|o| (o.reservation_id, o.order_id))
            .collect();
        self.barcodes = self
            .records
            .tickets
            .values()
            .map(|t| (t.barcode.clone(), t.ticket_id))
            .collect();
        self.transfer_of = self
            .records
            .transfers
            .values()
            .filter(|t| t.status == super::transfers::TransferStatus::Pending)
            .map(|t| (t.ticket_id, t.transfer_id))
            .collect();
        let pinned: Vec<(i64, Uuid)> = self
            .records
            .orders
            .values()
            .filter(|o| o.status == OrderStatus::Pending)
            .filter_map(|o| self.records.reservations.get(&o.reservation_id))
            .map(|r| (r.expires_ms, r.reservation_id))
            .collect();
        for p in pinned {
            self.expiries.remove(&p);
        }
    }

    pub(super) fn put_order(&mut self, o: Order, changes: &mut Vec<Change>) -> OrderView {
        changes.push(Change::Put(order_key(&o.order_id), encode_value(&o)));
        let id = o.order_id;
        self.records.orders.insert(id, o);
        self.order_view(&id)
            .unwrap_or_else(|| unreachable!("just inserted"))
    }

    /// An order by id, to change (404 if unknown).
    fn order_to_change(&self, id: &Uuid) -> Result<Order, InventoryRejection> {
        self.records
            .orders
            .get(id)
            .cloned()
            .ok_or(InventoryRejection::UnknownOrder)
    }

    /// The order as it stands: what a step that does not apply answers.
    fn answer(&self, id: &Uuid) -> Result<OrderView, InventoryRejection> {
        self.order_view(id).ok_or(InventoryRejection::UnknownOrder)
    }

    /// Voids a sold order's tickets and puts its seats back on sale.
    fn unsell(&mut self, o: &Order, now_ms: i64, changes: &mut Vec<Change>) {
        for id in &o.tickets {
            if let Some(mut t) = self.records.tickets.get(id).cloned() {
                t.status = TicketStatus::Void;
                self.put_ticket(t, changes);
            }
        }
        self.transition(
            o.reservation_id,
            ReservationStatus::Refunded,
            now_ms,
            changes,
        );
    }

    /// An order with its tickets.
    pub fn order_view(&self, id: &Uuid) -> Option<OrderView> {
        let order = self.records.orders.get(id)?.clone();
        let tickets = order
            .tickets
            .iter()
            .filter_map(|t| self.records.tickets.get(t).cloned())
            .collect();
        Some(OrderView {
            event_id: self.records.event_id.unwrap_or_default(),
            order,
            tickets,
        })
    }

    /// The saga steps orders wait for, oldest first.
    pub fn sagas_due(&self) -> Vec<DueStep> {
        let mut due: Vec<DueStep> = self
            .records
            .orders
            .values()
            .filter_map(|o| {
                o.next_step().map(|step| DueStep {
                    order_id: o.order_id,
                    step,
                    since_ms: o.last_step_ms(),
                })
            })
            .collect();
        due.sort_by_key(|d| d.since_ms);
        due
    }

    /// Every order.
    pub fn orders(&self) -> impl Iterator<Item = &Order> {
        self.records.orders.values()
    }

    /// Creates a PENDING order from the user's live hold, or answers the order the
    /// hold already has (one order per hold).
    pub(super) fn create_order(
        &mut self,
        n: NewOrder,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<OrderView, InventoryRejection> {
        let existing = self
            .records
            .orders
            .get(&n.order_id)
            .or_else(|| {
                self.order_of
                    .get(&n.reservation_id)
                    .and_then(|o| self.records.orders.get(o))
            })
            .map(|o| (o.order_id, o.user_id));
        if let Some((id, owner)) = existing {
            if owner != n.user_id {
                return Err(InventoryRejection::NotOwner);
            }
            return self.order_view(&id).ok_or(InventoryRejection::UnknownOrder);
        }
        if n.delivery_method.is_empty() || n.delivery_method.len() > MAX_DELIVERY_LEN {
            return Err(InventoryRejection::Invalid(format!(
                "delivery_method must be 1 to {MAX_DELIVERY_LEN} bytes"
            )));
        }
        if n.billing_address
            .as_ref()
            .is_some_and(|b| b.len() > MAX_BILLING_LEN)
        {
            return Err(InventoryRejection::Invalid(format!(
                "billing_address is over {MAX_BILLING_LEN} bytes"
            )));
        }
        if n.card_ref.is_empty() || n.tax_bps > 10_000 {
            return Err(InventoryRejection::Invalid(
                "an order needs a card and a tax rate of at most 100%".into(),
            ));
        }
        if ids::kind(&n.order_id) != Some(Kind::Order)
            || self
                .records
                .event_id
                .is_none_or(|e| ids::prefix(&e) != ids::prefix(&n.order_id))
        {
            return Err(InventoryRejection::Invalid(
                "an order id must be an order id of this event".into(),
            ));
        }
        let r = self
            .records
            .reservations
            .get(&n.reservation_id)
            .ok_or(InventoryRejection::UnknownReservation)?;
        if r.user_id != n.user_id {
            return Err(InventoryRejection::NotOwner);
        }
        if r.status != ReservationStatus::Active {
            return Err(InventoryRejection::ReservationClosed(r.status));
        }
        let subtotal = r.price_cents;
        let fees = r.fees_cents;
        let taxes = percent_of(subtotal, n.tax_bps);
        let order = Order {
            order_id: n.order_id,
            reservation_id: n.reservation_id,
            user_id: n.user_id,
            payment_method_id: n.payment_method_id,
            card_ref: n.card_ref,
            billing_address: n.billing_address,
            delivery_method: n.delivery_method,
            seats: r.seats.clone(),
            subtotal_cents: subtotal,
            fees_cents: fees,
            taxes_cents: taxes,
            total_cents: subtotal.saturating_add(fees).saturating_add(taxes),
            status: OrderStatus::Pending,
            payment: PaymentState::Authorizing,
            payment_ref: None,
            failure: None,
            tickets: Vec::new(),
            created_ms: ctx.now_ms,
            confirmed_ms: 0,
            captured_ms: 0,
            cancelled_ms: 0,
            refunded_ms: 0,
        };
        // The hold is pinned: it stays ACTIVE until the payment's outcome.
        self.expiries.remove(&(r.expires_ms, r.reservation_id));
        self.order_of.insert(n.reservation_id, n.order_id);
        Ok(self.put_order(order, changes))
    }

    /// Records the payment's outcome of a PENDING order (a settled order answers
    /// as it is: the first outcome wins).
    pub(super) fn settle_order(
        &mut self,
        order_id: Uuid,
        settlement: Settlement,
        nonce: u64,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<OrderView, InventoryRejection> {
        let mut o = self.order_to_change(&order_id)?;
        if o.status != OrderStatus::Pending {
            return self.answer(&order_id);
        }
        match settlement {
            Settlement::Authorized { payment_ref } => {
                o.payment_ref = Some(payment_ref);
                let live = self
                    .records
                    .reservations
                    .get(&o.reservation_id)
                    .is_some_and(|r| r.status == ReservationStatus::Active);
                let sold = live
                    && self
                        .transition(
                            o.reservation_id,
                            ReservationStatus::Converted,
                            ctx.now_ms,
                            changes,
                        )
                        .is_some();
                if !sold {
                    // Cannot happen while the hold is pinned; if it did, the money
                    // goes back rather than being kept without tickets.
                    o.status = OrderStatus::Failed;
                    o.payment = PaymentState::Refunding;
                    o.failure = Some("the hold was gone when the payment came".into());
                    o.cancelled_ms = ctx.now_ms;
                    return Ok(self.put_order(o, changes));
                }
                self.queue.bought(o.user_id, ctx.now_ms, changes);
                let event_id = self.records.event_id.unwrap_or_default();
                for (i, &seat) in o.seats.iter().enumerate() {
                    let ticket_id = ids::inside(
                        &event_id,
                        Kind::Ticket,
                        &Uuid::new_v5(&order_id, &(i as u64).to_be_bytes()),
                    );
                    let barcode = self.fresh_barcode(nonce, i as u64);
                    o.tickets.push(ticket_id);
                    self.put_ticket(
                        Ticket {
                            ticket_id,
                            order_id,
                            holder: o.user_id,
                            seat,
                            barcode,
                            status: TicketStatus::Active,
                            issued_ms: ctx.now_ms,
                            scanned_ms: 0,
                        },
                        changes,
                    );
                }
                o.status = OrderStatus::Confirmed;
                o.payment = PaymentState::Authorized;
                o.confirmed_ms = ctx.now_ms;
            }
            Settlement::Declined { reason } => {
                self.transition(
                    o.reservation_id,
                    ReservationStatus::Released,
                    ctx.now_ms,
                    changes,
                );
                o.status = OrderStatus::Failed;
                o.payment = PaymentState::Declined;
                o.failure = Some(reason);
            }
        }
        Ok(self.put_order(o, changes))
    }

    /// Records a capture (only a confirmed, authorized order moves).
    pub(super) fn order_captured(
        &mut self,
        order_id: Uuid,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<OrderView, InventoryRejection> {
        let mut o = self.order_to_change(&order_id)?;
        if (o.status, o.payment) != (OrderStatus::Confirmed, PaymentState::Authorized) {
            return self.answer(&order_id);
        }
        o.payment = PaymentState::Captured;
        o.captured_ms = ctx.now_ms;
        Ok(self.put_order(o, changes))
    }

    /// The buyer cancels a confirmed order before the event starts and before any
    /// of its tickets is scanned: tickets void, seats back on sale, refund due.
    pub(super) fn cancel_order(
        &mut self,
        order_id: Uuid,
        user_id: Uuid,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<OrderView, InventoryRejection> {
        let mut o = self.order_to_change(&order_id)?;
        if o.user_id != user_id {
            return Err(InventoryRejection::NotOwner);
        }
        let not = |why: &str| Err(InventoryRejection::OrderNotCancellable(why.into()));
        match o.status {
            OrderStatus::Cancelled => return Err(InventoryRejection::AlreadyCancelled),
            OrderStatus::Pending => return not("the order's payment is still being processed"),
            OrderStatus::Failed => return not("the order failed; nothing was charged"),
            OrderStatus::Confirmed => {}
        }
        if self
            .records
            .layout
            .as_ref()
            .is_some_and(|l| ctx.now_ms >= l.date_ms)
        {
            return not("the event has started");
        }
        let tickets: Vec<&Ticket> = o
            .tickets
            .iter()
            .filter_map(|t| self.records.tickets.get(t))
            .collect();
        if tickets.iter().any(|t| t.status == TicketStatus::Admitted) {
            return not("a ticket of this order was scanned in");
        }
        if tickets.iter().any(|t| t.holder != o.user_id) {
            return not("a ticket of this order was transferred");
        }
        self.unsell(&o, ctx.now_ms, changes);
        o.status = OrderStatus::Cancelled;
        o.payment = PaymentState::Refunding;
        o.cancelled_ms = ctx.now_ms;
        Ok(self.put_order(o, changes))
    }

    /// The gateway can no longer capture a confirmed order's authorization: the
    /// tickets are void, the seats back on sale, the order FAILED with nothing
    /// taken (tickets never stay without a payment).
    pub(super) fn capture_failed(
        &mut self,
        order_id: Uuid,
        reason: String,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<OrderView, InventoryRejection> {
        let mut o = self.order_to_change(&order_id)?;
        if (o.status, o.payment) != (OrderStatus::Confirmed, PaymentState::Authorized) {
            return self.answer(&order_id);
        }
        self.unsell(&o, ctx.now_ms, changes);
        o.status = OrderStatus::Failed;
        o.payment = PaymentState::Voided;
        o.failure = Some(reason);
        o.cancelled_ms = ctx.now_ms;
        Ok(self.put_order(o, changes))
    }

    /// Records that the payment of a cancelled order went back.
    pub(super) fn order_refunded(
        &mut self,
        order_id: Uuid,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<OrderView, InventoryRejection> {
        let mut o = self.order_to_change(&order_id)?;
        if o.payment != PaymentState::Refunding {
            return self.answer(&order_id);
        }
        o.payment = PaymentState::Refunded;
        o.refunded_ms = ctx.now_ms;
        Ok(self.put_order(o, changes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_round_half_up_in_cents() {
        // The spec's example: 1,500.00 at 15% and 9%.
        assert_eq!(percent_of(150_000, 1_500), 22_500);
        assert_eq!(percent_of(150_000, 900), 13_500);
        assert_eq!(percent_of(1, 5_000), 1);
        assert_eq!(percent_of(1, 4_999), 0);
        assert_eq!(percent_of(0, 900), 0);
        assert_eq!(percent_of(u64::MAX, 10_000), u64::MAX);
    }
}
