//! Tickets: one per seat of a confirmed order, each with a barcode unique in the
//! event, admitted at the gate exactly once (transfers are in
//! [`super::transfers`]).
//!
//! Keys: `T{id}` a ticket.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Inventory, InventoryRejection};
use crate::domain::machine::encode_value;
use crate::domain::{ApplyCtx, Change};

pub(super) const TICKET_PREFIX: u8 = b'T';

/// A ticket's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TicketStatus {
    Active,
    /// Scanned in at the gate.
    Admitted,
    /// Its order was cancelled.
    Void,
    /// Given to someone else, who holds a new ticket for the seat.
    Transferred,
}

impl TicketStatus {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            TicketStatus::Active => "ACTIVE",
            TicketStatus::Admitted => "ADMITTED",
            TicketStatus::Void => "VOID",
            TicketStatus::Transferred => "TRANSFERRED",
        }
    }
}

/// A ticket for one seat (persisted under `T{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub ticket_id: Uuid,
    pub order_id: Uuid,
    /// Who holds it now.
    pub holder: Uuid,
    pub seat: u32,
    /// Twelve digits, unique in the event.
    pub barcode: String,
    pub status: TicketStatus,
    pub issued_ms: i64,
    pub scanned_ms: i64,
}

pub(super) fn ticket_key(id: &Uuid) -> Vec<u8> {
    super::id_key(TICKET_PREFIX, id)
}

/// SplitMix64's output function.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Inventory {
    pub(super) fn put_ticket(&mut self, t: Ticket, changes: &mut Vec<Change>) {
        changes.push(Change::Put(ticket_key(&t.ticket_id), encode_value(&t)));
        self.barcodes.insert(t.barcode.clone(), t.ticket_id);
        self.records.tickets.insert(t.ticket_id, t);
    }

    /// A ticket by id.
    pub fn ticket(&self, id: &Uuid) -> Option<&Ticket> {
        self.records.tickets.get(id)
    }

    /// Every ticket.
    pub fn tickets(&self) -> impl Iterator<Item = &Ticket> {
        self.records.tickets.values()
    }

    /// Twelve digits no ticket of the event has, drawn from the nonce.
    pub(super) fn fresh_barcode(&self, nonce: u64, i: u64) -> String {
        let mut z = mix(nonce ^ mix(i));
        loop {
            let code = format!("{:012}", z % 1_000_000_000_000);
            if !self.barcodes.contains_key(&code) {
                return code;
            }
            z = mix(z);
        }
    }

    /// Admits the ticket with `barcode` once.
    pub(super) fn scan(
        &mut self,
        barcode: &str,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<Ticket, InventoryRejection> {
        let mut t = self
            .barcodes
            .get(barcode)
            .and_then(|id| self.records.tickets.get(id))
            .cloned()
            .ok_or(InventoryRejection::UnknownBarcode)?;
        match t.status {
            TicketStatus::Admitted => Err(InventoryRejection::AlreadyScanned {
                ticket_id: t.ticket_id,
                scanned_ms: t.scanned_ms,
            }),
            TicketStatus::Void | TicketStatus::Transferred => Err(InventoryRejection::TicketVoid),
            TicketStatus::Active => {
                t.status = TicketStatus::Admitted;
                t.scanned_ms = ctx.now_ms;
                self.put_ticket(t.clone(), changes);
                Ok(t)
            }
        }
    }
}
