//! Ticket transfers: a holder offers an ACTIVE ticket to an email address; the
//! user with that address accepts it and gets a new ticket for the seat (new id,
//! new barcode) while the old one turns TRANSFERRED and no longer scans; the
//! sender may cancel a pending offer; an offer lapses at its expiry (stamped time:
//! it reads EXPIRED from then on and cannot be accepted). One pending offer per
//! ticket. A ticket's order keeps the ids of its live tickets.
//!
//! Keys: `X{id}` a transfer.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::orders::OrderStatus;
use super::tickets::{Ticket, TicketStatus};
use super::{Inventory, InventoryRejection};
use crate::domain::ids::{self, Kind};
use crate::domain::machine::encode_value;
use crate::domain::{ApplyCtx, Change};

pub(super) const TRANSFER_PREFIX: u8 = b'X';

/// Longest recipient email and name kept.
pub const MAX_EMAIL_LEN: usize = 254;
pub const MAX_NAME_LEN: usize = 200;

/// A transfer's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TransferStatus {
    Pending,
    Accepted,
    Cancelled,
    Expired,
}

impl TransferStatus {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            TransferStatus::Pending => "PENDING",
            TransferStatus::Accepted => "ACCEPTED",
            TransferStatus::Cancelled => "CANCELLED",
            TransferStatus::Expired => "EXPIRED",
        }
    }
}

/// What a `TransferCreate` carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewTransfer {
    pub transfer_id: Uuid,
    pub ticket_id: Uuid,
    pub from: Uuid,
    /// Normalized (the catalog's form of an email).
    pub to_email: String,
    pub to_name: String,
    /// How long the offer stands (it ends at the event's start at the latest).
    pub ttl_ms: i64,
}

/// A transfer (persisted under `X{id}`). Times are stamped; 0 means not yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transfer {
    pub transfer_id: Uuid,
    pub ticket_id: Uuid,
    pub order_id: Uuid,
    pub from: Uuid,
    pub to_email: String,
    pub to_name: String,
    pub status: TransferStatus,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub closed_ms: i64,
    /// The recipient, and the ticket they got.
    pub accepted_by: Option<Uuid>,
    pub new_ticket: Option<Uuid>,
}

impl Transfer {
    /// The status as of `now_ms` (a pending offer past its time reads EXPIRED).
    pub fn status_at(&self, now_ms: i64) -> TransferStatus {
        if self.status == TransferStatus::Pending && self.expires_ms <= now_ms {
            TransferStatus::Expired
        } else {
            self.status
        }
    }
}

pub(super) fn transfer_key(id: &Uuid) -> Vec<u8> {
    super::id_key(TRANSFER_PREFIX, id)
}

impl Inventory {
    /// Stores a transfer; `transfer_of` keeps the one stored PENDING per ticket.
    fn put_transfer(&mut self, t: Transfer, changes: &mut Vec<Change>) {
        changes.push(Change::Put(transfer_key(&t.transfer_id), encode_value(&t)));
        if t.status == TransferStatus::Pending {
            self.transfer_of.insert(t.ticket_id, t.transfer_id);
        } else if self.transfer_of.get(&t.ticket_id) == Some(&t.transfer_id) {
            self.transfer_of.remove(&t.ticket_id);
        }
        self.records.transfers.insert(t.transfer_id, t);
    }

    /// A transfer as of `now_ms`.
    fn transfer_view(&self, id: &Uuid, now_ms: i64) -> Option<Transfer> {
        let mut t = self.records.transfers.get(id)?.clone();
        t.status = t.status_at(now_ms);
        Some(t)
    }

    /// Every transfer, as stored.
    pub fn transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.records.transfers.values()
    }

    /// Offers a ticket to someone.
    pub(super) fn create_transfer(
        &mut self,
        n: NewTransfer,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<Transfer, InventoryRejection> {
        if let Some(t) = self.transfer_view(&n.transfer_id, ctx.now_ms) {
            return if t.from == n.from && t.ticket_id == n.ticket_id {
                Ok(t)
            } else {
                Err(InventoryRejection::Invalid(format!(
                    "transfer {} exists",
                    n.transfer_id
                )))
            };
        }
        let bad = |m: &str| Err(InventoryRejection::Invalid(m.into()));
        if n.to_email.is_empty() || n.to_email.len() > MAX_EMAIL_LEN {
            return bad("recipient_email must be 1 to 254 bytes");
        }
        if n.to_name.len() > MAX_NAME_LEN {
            return bad("recipient_name is over 200 bytes");
        }
        if n.ttl_ms <= 0 {
            return bad("a transfer must stand for some time");
        }
        if ids::kind(&n.transfer_id) != Some(Kind::Transfer)
            || self
                .records
                .event_id
                .is_none_or(|e| ids::prefix(&e) != ids::prefix(&n.transfer_id))
        {
            return bad("a transfer id must be a transfer id of this event");
        }
        let ticket = self
            .records
            .tickets
            .get(&n.ticket_id)
            .cloned()
            .ok_or(InventoryRejection::UnknownTicket)?;
        if ticket.holder != n.from {
            return Err(InventoryRejection::NotOwner);
        }
        self.transferable(&ticket, ctx.now_ms)?;
        if let Some(previous) = self
            .transfer_of
            .get(&n.ticket_id)
            .and_then(|id| self.transfer_view(id, ctx.now_ms))
        {
            if previous.status == TransferStatus::Pending {
                return Err(InventoryRejection::TicketNotTransferable(format!(
                    "transfer {} of this ticket is pending",
                    previous.transfer_id
                )));
            }
            // It lapsed: store it so, and one stored offer per ticket stays pending.
            let closed_ms = previous.expires_ms;
            self.put_transfer(
                Transfer {
                    closed_ms,
                    ..previous
                },
                changes,
            );
        }
        let date_ms = self.records.layout.as_ref().map_or(i64::MAX, |l| l.date_ms);
        let t = Transfer {
            transfer_id: n.transfer_id,
            ticket_id: n.ticket_id,
            order_id: ticket.order_id,
            from: n.from,
            to_email: n.to_email,
            to_name: n.to_name,
            status: TransferStatus::Pending,
            created_ms: ctx.now_ms,
            expires_ms: ctx.now_ms.saturating_add(n.ttl_ms).min(date_ms),
            closed_ms: 0,
            accepted_by: None,
            new_ticket: None,
        };
        self.put_transfer(t.clone(), changes);
        Ok(t)
    }

    /// Why `ticket` cannot change hands now, if it cannot.
    fn transferable(&self, ticket: &Ticket, now_ms: i64) -> Result<(), InventoryRejection> {
        let not = |why: &str| Err(InventoryRejection::TicketNotTransferable(why.into()));
        match ticket.status {
            TicketStatus::Active => {}
            TicketStatus::Admitted => return not("the ticket was scanned in"),
            TicketStatus::Void | TicketStatus::Transferred => return not("the ticket is void"),
        }
        let confirmed = self
            .records
            .orders
            .get(&ticket.order_id)
            .is_some_and(|o| o.status == OrderStatus::Confirmed);
        if !confirmed {
            return not("its order is not confirmed");
        }
        if self
            .records
            .layout
            .as_ref()
            .is_some_and(|l| now_ms >= l.date_ms)
        {
            return not("the event has started");
        }
        Ok(())
    }

    /// The recipient (the user with the offer's email) takes the ticket: a new
    /// ticket for them, the old one TRANSFERRED. Accepting again answers the same.
    pub(super) fn accept_transfer(
        &mut self,
        transfer_id: Uuid,
        user_id: Uuid,
        email: &str,
        nonce: u64,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<Transfer, InventoryRejection> {
        let mut t = self
            .transfer_view(&transfer_id, ctx.now_ms)
            .ok_or(InventoryRejection::UnknownTransfer)?;
        if t.to_email != email {
            return Err(InventoryRejection::NotOwner);
        }
        match t.status {
            TransferStatus::Pending => {}
            TransferStatus::Accepted if t.accepted_by == Some(user_id) => return Ok(t),
            TransferStatus::Expired => {
                self.put_transfer(
                    Transfer {
                        closed_ms: t.expires_ms,
                        ..t.clone()
                    },
                    changes,
                );
                return Err(InventoryRejection::TransferClosed(TransferStatus::Expired));
            }
            s => return Err(InventoryRejection::TransferClosed(s)),
        }
        let mut old = self
            .records
            .tickets
            .get(&t.ticket_id)
            .cloned()
            .ok_or(InventoryRejection::UnknownTicket)?;
        self.transferable(&old, ctx.now_ms)?;
        let event_id = self.records.event_id.unwrap_or_default();
        let new_id = ids::inside(
            &event_id,
            Kind::Ticket,
            &Uuid::new_v5(&transfer_id, b"ticket"),
        );
        let fresh = Ticket {
            ticket_id: new_id,
            order_id: old.order_id,
            holder: user_id,
            seat: old.seat,
            barcode: self.fresh_barcode(nonce, 0),
            status: TicketStatus::Active,
            issued_ms: ctx.now_ms,
            scanned_ms: 0,
        };
        old.status = TicketStatus::Transferred;
        if let Some(mut o) = self.records.orders.get(&old.order_id).cloned() {
            for id in o.tickets.iter_mut().filter(|id| **id == old.ticket_id) {
                *id = new_id;
            }
            self.put_order(o, changes);
        }
        self.put_ticket(old, changes);
        self.put_ticket(fresh, changes);
        t.status = TransferStatus::Accepted;
        t.closed_ms = ctx.now_ms;
        t.accepted_by = Some(user_id);
        t.new_ticket = Some(new_id);
        self.put_transfer(t.clone(), changes);
        Ok(t)
    }

    /// The sender withdraws a pending offer (a closed one answers as it is,
    /// except an accepted one: too late).
    pub(super) fn cancel_transfer(
        &mut self,
        transfer_id: Uuid,
        user_id: Uuid,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<Transfer, InventoryRejection> {
        let mut t = self
            .transfer_view(&transfer_id, ctx.now_ms)
            .ok_or(InventoryRejection::UnknownTransfer)?;
        if t.from != user_id {
            return Err(InventoryRejection::NotOwner);
        }
        match t.status {
            TransferStatus::Pending => {
                t.status = TransferStatus::Cancelled;
                t.closed_ms = ctx.now_ms;
                self.put_transfer(t.clone(), changes);
                Ok(t)
            }
            TransferStatus::Accepted => {
                Err(InventoryRejection::TransferClosed(TransferStatus::Accepted))
            }
            TransferStatus::Cancelled | TransferStatus::Expired => Ok(t),
        }
    }
}
