//! One event's inventory: the state its own Raft group replicates. It binds to its
//! event, keeps the operator's sale status and the event's seat layout, and every
//! reservation (hold) ever made; seat states, per-tier counts, per-user ticket
//! counts and the expiry index are derived from those and rebuilt on restore.
//!
//! Time is the leader's stamp (`ApplyCtx::now_ms`): every command first expires
//! the holds that are due, so the state a command sees is the state at its time.
//!
//! The event's waiting room lives here too ([`queue`]): admission depends on the
//! sale status, and buying frees a shopper's slot.
//!
//! Orders and their tickets live here as well ([`orders`]): an order pins, sells or
//! releases its hold's seats in the same command that records the payment.
//!
//! Keys: `o` the event id, `s` the status, `l` the layout, `r{id}` a reservation,
//! `q…` the waiting room, `O{id}` an order, `T{id}` a ticket, `X{id}` a transfer.

mod commands;
mod holds;
mod layout;
pub mod orders;
#[cfg(test)]
mod orders_tests;
#[cfg(test)]
mod proptests;
pub mod queue;
#[cfg(test)]
mod queue_tests;
#[cfg(test)]
mod refusal_tests;
#[cfg(test)]
mod tests;
pub mod tickets;
pub mod transfers;
#[cfg(test)]
mod transfers_tests;
mod watch;

pub use commands::*;
pub use holds::{Reservation, ReservationStatus, SeatState};
pub use layout::{EventLayout, RowLayout, SaleStatus, SectionLayout, TierLayout};
pub use queue::{EntryState, Join, QueueLimits, QueueOutcome, QueueRejection, QueueView};

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::machine::encode_value;
use super::{ApplyCtx, Change, Table};
use crate::codec;
use crate::error::{Error, Result};

const EVENT_KEY: &[u8] = b"o";
const STATUS_KEY: &[u8] = b"s";
const LAYOUT_KEY: &[u8] = b"l";
const RESERVATION_PREFIX: u8 = b'r';

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct StatusRecord {
    status: SaleOverride,
    changed_ms: i64,
}

/// One event's replicated inventory state.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Inventory {
    /// What is persisted (besides the waiting room's own records); everything
    /// else here is derived from it.
    records: Records,
    // Derived (rebuilt by `rebuild`):
    seats: Vec<SeatState>,
    seat_tier: Vec<u16>,
    available_by_tier: Vec<u32>,
    sold: u32,
    per_user: BTreeMap<Uuid, u32>,
    expiries: BTreeSet<(i64, Uuid)>,
    last_updated_ms: i64,
    /// The waiting room (persisted and restored on its own).
    queue: Box<queue::WaitingRoom>,
    // Derived from the orders and tickets (rebuilt by `rebuild_orders`):
    /// The order of each hold that has one.
    order_of: BTreeMap<Uuid, Uuid>,
    barcodes: BTreeMap<String, Uuid>,
    /// The transfer stored PENDING of each ticket that has one (at most one).
    transfer_of: BTreeMap<Uuid, Uuid>,
}

impl Inventory {
    pub(super) fn apply(
        &mut self,
        cmd: InventoryCommand,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> InventoryResponse {
        let event_id = cmd.event_id();
        if let Err(r) = self.bind(event_id, changes) {
            return InventoryResponse::Rejected(r);
        }
        let expired = self.expire_due(ctx.now_ms, changes);
        let windows_ended = self.queue.expire_due(ctx.now_ms, changes);
        let sale = self.sale_status(ctx.now_ms);
        let sale_open = sale.is_some_and(|s| s.allows_holds());
        let cmd = match cmd {
            InventoryCommand::AsShopper(inner) => match *inner {
                InventoryCommand::Reserve { user_id, .. }
                    if !self.queue.is_shopper(&user_id, ctx.now_ms) =>
                {
                    return InventoryResponse::Rejected(InventoryRejection::Queue(
                        QueueRejection::NotAdmitted,
                    ));
                }
                reserve @ InventoryCommand::Reserve { .. } => reserve,
                _ => {
                    return InventoryResponse::Rejected(InventoryRejection::Invalid(
                        "only a hold is made as a shopper".into(),
                    ))
                }
            },
            cmd => cmd,
        };
        let outcome = match cmd {
            InventoryCommand::Open { layout, .. } => {
                if self.records.layout.is_none() && layout.event_id == event_id {
                    changes.push(Change::Put(LAYOUT_KEY.to_vec(), encode_value(&layout)));
                    self.records.layout = Some(Arc::from(layout));
                    self.rebuild();
                }
                Ok(self.status_response(event_id))
            }
            InventoryCommand::SetStatus { status, .. } => self.set_status(status, ctx, changes),
            InventoryCommand::Reserve {
                reservation_id,
                user_id,
                pick,
                hold_ms,
                ..
            } => self
                .reserve(reservation_id, user_id, pick, hold_ms, ctx, changes)
                .map(InventoryResponse::Reserved),
            InventoryCommand::Release {
                reservation_id,
                user_id,
                ..
            } => {
                if self.pinned(&reservation_id) {
                    Err(InventoryRejection::OrderPending)
                } else {
                    self.release(reservation_id, user_id, ctx, changes)
                        .map(InventoryResponse::Released)
                }
            }
            InventoryCommand::Sweep { .. } => Ok(InventoryResponse::Swept { expired }),
            InventoryCommand::Convert { reservation_id, .. }
            | InventoryCommand::Refund { reservation_id, .. }
                if self.order_of.contains_key(&reservation_id) =>
            {
                Err(InventoryRejection::Invalid(
                    "an ordered hold is sold and refunded by its order".into(),
                ))
            }
            InventoryCommand::Convert { reservation_id, .. } => {
                let was_live = self
                    .records
                    .reservations
                    .get(&reservation_id)
                    .is_some_and(|r| r.status == ReservationStatus::Active);
                let converted = self.convert(reservation_id, ctx, changes);
                // A purchase frees the buyer's shopper slot (a repeated convert
                // of the same hold does not touch a later admission).
                if let (Ok(r), true) = (&converted, was_live) {
                    self.queue.bought(r.user_id, ctx.now_ms, changes);
                }
                converted.map(InventoryResponse::Converted)
            }
            InventoryCommand::Refund { reservation_id, .. } => self
                .refund(reservation_id, ctx, changes)
                .map(InventoryResponse::Refunded),
            InventoryCommand::OrderCreate { order, .. } => self
                .create_order(*order, ctx, changes)
                .map(|v| InventoryResponse::Order(Box::new(v))),
            InventoryCommand::OrderSettle {
                order_id,
                settlement,
                nonce,
                ..
            } => self
                .settle_order(order_id, settlement, nonce, ctx, changes)
                .map(|v| InventoryResponse::Order(Box::new(v))),
            InventoryCommand::OrderCaptured { order_id, .. } => self
                .order_captured(order_id, ctx, changes)
                .map(|v| InventoryResponse::Order(Box::new(v))),
            InventoryCommand::OrderCancel {
                order_id, user_id, ..
            } => self
                .cancel_order(order_id, user_id, ctx, changes)
                .map(|v| InventoryResponse::Order(Box::new(v))),
            InventoryCommand::OrderRefunded { order_id, .. } => self
                .order_refunded(order_id, ctx, changes)
                .map(|v| InventoryResponse::Order(Box::new(v))),
            InventoryCommand::TicketScan { barcode, .. } => self
                .scan(&barcode, ctx, changes)
                .map(InventoryResponse::Scanned),
            InventoryCommand::OrderCaptureFailed {
                order_id, reason, ..
            } => self
                .capture_failed(order_id, reason, ctx, changes)
                .map(|v| InventoryResponse::Order(Box::new(v))),
            InventoryCommand::TransferCreate { transfer, .. } => self
                .create_transfer(*transfer, ctx, changes)
                .map(|t| InventoryResponse::Transfer(Box::new(t))),
            InventoryCommand::TransferAccept {
                transfer_id,
                user_id,
                email,
                nonce,
                ..
            } => self
                .accept_transfer(transfer_id, user_id, &email, nonce, ctx, changes)
                .map(|t| InventoryResponse::Transfer(Box::new(t))),
            InventoryCommand::TransferCancel {
                transfer_id,
                user_id,
                ..
            } => self
                .cancel_transfer(transfer_id, user_id, ctx, changes)
                .map(|t| InventoryResponse::Transfer(Box::new(t))),
            InventoryCommand::QueueJoin { join, .. } => match sale {
                None => Err(InventoryRejection::NotOpen),
                Some(s @ (SaleStatus::Cancelled | SaleStatus::Ended)) => {
                    Err(InventoryRejection::NotOnSale(s))
                }
                Some(_) => self
                    .queue
                    .join(event_id, join, ctx.now_ms, sale_open, changes)
                    .map(|v| InventoryResponse::Queue(QueueOutcome::Joined(v)))
                    .map_err(InventoryRejection::Queue),
            },
            InventoryCommand::QueueLeave { user_id, .. } => {
                let was_live = self.queue.leave(user_id, ctx.now_ms, changes);
                Ok(InventoryResponse::Queue(QueueOutcome::Left { was_live }))
            }
            InventoryCommand::AsShopper(_) => Err(InventoryRejection::Invalid(
                "a shopper's command inside another".into(),
            )),
            InventoryCommand::QueueAdmit { limits, .. } => {
                let admitted = self
                    .queue
                    .admit(event_id, limits, ctx.now_ms, sale_open, changes);
                Ok(InventoryResponse::Queue(QueueOutcome::Admitted {
                    admitted,
                    expired: windows_ended,
                }))
            }
        };
        outcome.unwrap_or_else(InventoryResponse::Rejected)
    }

    fn status_record(&self) -> StatusRecord {
        self.records.status.unwrap_or(StatusRecord {
            status: SaleOverride::Scheduled,
            changed_ms: 0,
        })
    }

    fn set_status(
        &mut self,
        status: SaleOverride,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<InventoryResponse, InventoryRejection> {
        let current = self.status_record();
        if current.status == SaleOverride::Cancelled && status != SaleOverride::Cancelled {
            return Err(InventoryRejection::Cancelled);
        }
        if current.status != status {
            let record = StatusRecord {
                status,
                changed_ms: ctx.now_ms,
            };
            changes.push(Change::Put(STATUS_KEY.to_vec(), encode_value(&record)));
            self.records.status = Some(record);
        }
        let event_id = self.records.event_id.unwrap_or_default();
        Ok(self.status_response(event_id))
    }

    fn status_response(&self, event_id: Uuid) -> InventoryResponse {
        let s = self.status_record();
        InventoryResponse::Status {
            event_id,
            status: s.status,
            changed_ms: s.changed_ms,
        }
    }

    /// The first command binds the group to its event; later ones must match.
    fn bind(
        &mut self,
        event_id: Uuid,
        changes: &mut Vec<Change>,
    ) -> Result<(), InventoryRejection> {
        match self.records.event_id {
            Some(serves) if serves != event_id => Err(InventoryRejection::WrongEvent { serves }),
            Some(_) => Ok(()),
            None => {
                self.records.event_id = Some(event_id);
                changes.push(Change::Put(EVENT_KEY.to_vec(), encode_value(&event_id)));
                Ok(())
            }
        }
    }

    pub(super) fn restore(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        if k == EVENT_KEY {
            self.records.event_id = Some(codec::decode(v)?);
        } else if k == STATUS_KEY {
            self.records.status = Some(codec::decode(v)?);
        } else if k == LAYOUT_KEY {
            self.records.layout = Some(Arc::new(codec::decode::<EventLayout>(v)?));
        } else if k.first() == Some(&RESERVATION_PREFIX) {
            let r: Reservation = codec::decode(v)?;
            self.records.reservations.insert(r.reservation_id, r);
        } else if queue::WaitingRoom::is_key(k) {
            self.queue.restore(k, v)?;
        } else if k.first() == Some(&orders::ORDER_PREFIX) {
            let o: orders::Order = codec::decode(v)?;
            self.records.orders.insert(o.order_id, o);
        } else if k.first() == Some(&transfers::TRANSFER_PREFIX) {
            let t: transfers::Transfer = codec::decode(v)?;
            self.records.transfers.insert(t.transfer_id, t);
        } else if k.first() == Some(&tickets::TICKET_PREFIX) {
            let t: tickets::Ticket = codec::decode(v)?;
            self.records.tickets.insert(t.ticket_id, t);
        } else {
            return Err(Error::Decode(format!("unknown inventory key {k:?}")));
        }
        Ok(())
    }

    /// Rebuilds the derived state once every key is restored.
    pub(super) fn finish_restore(&mut self) -> Result<()> {
        self.rebuild();
        self.queue.finish_restore();
        if let Some(layout) = &self.records.layout {
            let bad = self
                .records
                .reservations
                .values()
                .flat_map(|r| r.seats.iter())
                .any(|&s| s >= layout.seat_count);
            if bad {
                return Err(Error::Decode(
                    "a reservation names a seat outside the layout".into(),
                ));
            }
        }
        Ok(())
    }

    /// The persisted records as they are now, in O(1) (see [`Table`]).
    pub(super) fn freeze(&self) -> Frozen {
        Frozen {
            records: self.records.clone(),
            queue: self.queue.freeze(),
        }
    }

    /// Answers `q` as of `now_ms`, the group's replicated clock.
    pub(super) fn query(&self, q: &InventoryQuery, now_ms: i64) -> InventoryAnswer {
        match q {
            InventoryQuery::Status => {
                let s = self.status_record();
                InventoryAnswer::Status(InventoryView {
                    event_id: self.records.event_id,
                    status: s.status,
                    changed_ms: s.changed_ms,
                })
            }
            InventoryQuery::Availability { now_ms: wall_ms } => {
                InventoryAnswer::Availability(self.availability(now_ms, *wall_ms))
            }
            InventoryQuery::Seats => InventoryAnswer::Seats(self.seat_states(now_ms)),
            InventoryQuery::Reservation { reservation_id } => InventoryAnswer::Reservation(
                self.records
                    .reservations
                    .get(reservation_id)
                    .map(|r| self.view_at(r, now_ms)),
            ),
            InventoryQuery::Queue { user_id } => {
                InventoryAnswer::Queue(self.queue.entry_of(user_id, now_ms))
            }
            InventoryQuery::Order { order_id } => {
                InventoryAnswer::Order(self.order_view(order_id).map(Box::new))
            }
            InventoryQuery::Ticket { ticket_id } => {
                InventoryAnswer::Ticket(self.ticket(ticket_id).cloned())
            }
        }
    }

    pub fn event_id(&self) -> Option<Uuid> {
        self.records.event_id
    }

    /// The refusal `cmd` would surely get if applied at `now_ms` on this state,
    /// when the state alone decides it (a hold of named seats that are sold or
    /// held by live holds); `None` when only the log can answer.
    pub fn refusal_from_state(
        &self,
        cmd: &InventoryCommand,
        now_ms: i64,
    ) -> Option<InventoryRejection> {
        match cmd {
            InventoryCommand::AsShopper(inner) => {
                let InventoryCommand::Reserve {
                    event_id, user_id, ..
                } = inner.as_ref()
                else {
                    return None;
                };
                if self.records.event_id != Some(*event_id) {
                    return None;
                }
                if !self.queue.is_shopper(user_id, now_ms) {
                    return Some(InventoryRejection::Queue(QueueRejection::NotAdmitted));
                }
                self.reserve_refusal(inner, now_ms)
            }
            cmd => self.reserve_refusal(cmd, now_ms),
        }
    }

    /// The operator's status.
    pub fn status(&self) -> SaleOverride {
        self.status_record().status
    }

    /// The layout, once opened.
    pub fn layout(&self) -> Option<&EventLayout> {
        self.records.layout.as_deref()
    }

    /// The waiting room.
    pub fn waiting_room(&self) -> &queue::WaitingRoom {
        &self.queue
    }

    /// Whether a `QueueAdmit` at `now_ms` would change anything: an access window
    /// to end, or fans waiting while the sale is open, a shopper slot is free and
    /// the bucket holds an admission.
    pub fn queue_needs_admit(&self, now_ms: i64, limits: &QueueLimits) -> bool {
        let (queued, active) = self.queue.counts();
        self.queue.window_due(now_ms)
            || (queued > 0
                && active < u64::from(limits.max_active_shoppers)
                && self.queue.has_token(now_ms, limits.admission_per_second)
                && self.sale_status(now_ms).is_some_and(|s| s.allows_holds()))
    }

    /// The earliest expiry of a live hold, for the leader's sweeper.
    pub fn next_expiry_ms(&self) -> Option<i64> {
        self.expiries.first().map(|(t, _)| *t)
    }
}

/// An inventory's persisted records: the keys `apply` writes and `dump` lists.
#[derive(Debug, Clone, PartialEq, Default)]
struct Records {
    event_id: Option<Uuid>,
    status: Option<StatusRecord>,
    /// Shared with frozen copies: it never changes once set.
    layout: Option<Arc<EventLayout>>,
    reservations: Table<Uuid, Reservation>,
    orders: Table<Uuid, orders::Order>,
    tickets: Table<Uuid, tickets::Ticket>,
    transfers: Table<Uuid, transfers::Transfer>,
}

/// An inventory's persisted records at one index, with its waiting room's
/// ([`Inventory::freeze`]).
#[derive(Debug, Clone)]
pub(crate) struct Frozen {
    records: Records,
    queue: queue::Records,
}

impl Frozen {
    pub(crate) fn dump(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        if let Some(id) = &self.records.event_id {
            out.push((EVENT_KEY.to_vec(), encode_value(id)));
        }
        if let Some(s) = &self.records.status {
            out.push((STATUS_KEY.to_vec(), encode_value(s)));
        }
        if let Some(l) = &self.records.layout {
            out.push((LAYOUT_KEY.to_vec(), encode_value(l)));
        }
        for r in self.records.reservations.values() {
            out.push((reservation_key(&r.reservation_id), encode_value(r)));
        }
        self.queue.dump(out);
        for o in self.records.orders.values() {
            out.push((orders::order_key(&o.order_id), encode_value(o)));
        }
        for t in self.records.tickets.values() {
            out.push((tickets::ticket_key(&t.ticket_id), encode_value(t)));
        }
        for t in self.records.transfers.values() {
            out.push((transfers::transfer_key(&t.transfer_id), encode_value(t)));
        }
    }
}

fn reservation_key(id: &Uuid) -> Vec<u8> {
    id_key(RESERVATION_PREFIX, id)
}

/// The key of a record stored by id: its kind's prefix byte, then the id.
fn id_key(prefix: u8, id: &Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(prefix);
    k.extend_from_slice(id.as_bytes());
    k
}
