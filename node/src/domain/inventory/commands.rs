//! The inventory's vocabulary: the commands its group applies, the queries it
//! answers, and the views, outcomes and refusals it gives back.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::orders::{NewOrder, OrderView, Settlement};
use super::queue::{self, QueueLimits, QueueOutcome, QueueRejection, QueueView};
use super::tickets::Ticket;
use super::transfers::{NewTransfer, Transfer, TransferStatus};
use super::{EventLayout, ReservationStatus, SaleStatus};

/// What an operator has said about the sale; `Scheduled` follows the dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaleOverride {
    Scheduled,
    OnSale,
    Paused,
    Cancelled,
}

/// Which seats a hold asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Pick {
    /// These seats, all or none.
    Seats(Vec<Uuid>),
    /// The best `quantity` seats (of one tier, or any): adjacent in one row where
    /// possible.
    Best {
        quantity: u32,
        tier_id: Option<Uuid>,
    },
}

/// Inventory commands. Each names its event, so a misrouted command is refused
/// instead of applied to the wrong event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryCommand {
    /// Binds a new group to its event and fixes its layout (the first write of
    /// every event group; later opens are no-ops).
    Open {
        event_id: Uuid,
        layout: Box<EventLayout>,
    },
    SetStatus {
        event_id: Uuid,
        status: SaleOverride,
    },
    /// Holds seats for a user until `hold_ms` after the command's time.
    Reserve {
        event_id: Uuid,
        reservation_id: Uuid,
        user_id: Uuid,
        pick: Pick,
        hold_ms: i64,
    },
    /// The owner gives a hold up (idempotent).
    Release {
        event_id: Uuid,
        reservation_id: Uuid,
        user_id: Uuid,
    },
    /// Expires every hold that is due (the leader proposes it when one is).
    Sweep { event_id: Uuid },
    /// A live hold's seats become SOLD (an order paid for them).
    Convert {
        event_id: Uuid,
        reservation_id: Uuid,
    },
    /// Sold seats go back on sale (their order was cancelled and refunded).
    Refund {
        event_id: Uuid,
        reservation_id: Uuid,
    },
    /// A fan joins the waiting room.
    QueueJoin { event_id: Uuid, join: queue::Join },
    /// A fan leaves the waiting room, or gives up an access window (idempotent).
    QueueLeave { event_id: Uuid, user_id: Uuid },
    /// Ends the access windows that are over and lets the head of the queue in
    /// (the group leader proposes it while fans wait).
    QueueAdmit { event_id: Uuid, limits: QueueLimits },
    /// A `Reserve` made with a waiting room's access token: applied only while its
    /// user is an admitted shopper (window open, not left, not bought), else
    /// refused with `QueueRejection::NotAdmitted`.
    AsShopper(Box<InventoryCommand>),
    /// A PENDING order from the user's live hold (pins the hold).
    OrderCreate {
        event_id: Uuid,
        order: Box<NewOrder>,
    },
    /// The payment's outcome of a PENDING order; `nonce` seeds its barcodes.
    OrderSettle {
        event_id: Uuid,
        order_id: Uuid,
        settlement: Settlement,
        nonce: u64,
    },
    /// The gateway captured a confirmed order's authorization.
    OrderCaptured { event_id: Uuid, order_id: Uuid },
    /// The buyer cancels a confirmed order.
    OrderCancel {
        event_id: Uuid,
        order_id: Uuid,
        user_id: Uuid,
    },
    /// The gateway voided or refunded a cancelled order's payment.
    OrderRefunded { event_id: Uuid, order_id: Uuid },
    /// A gate scans a ticket's barcode (admits it once).
    TicketScan { event_id: Uuid, barcode: String },
    /// A holder offers a ticket to an email address.
    TransferCreate {
        event_id: Uuid,
        transfer: Box<NewTransfer>,
    },
    /// The user with the offer's email takes the ticket; `nonce` seeds the new
    /// barcode.
    TransferAccept {
        event_id: Uuid,
        transfer_id: Uuid,
        user_id: Uuid,
        email: String,
        nonce: u64,
    },
    /// The sender withdraws a pending offer.
    TransferCancel {
        event_id: Uuid,
        transfer_id: Uuid,
        user_id: Uuid,
    },
    /// The gateway can no longer capture a confirmed order's authorization.
    OrderCaptureFailed {
        event_id: Uuid,
        order_id: Uuid,
        reason: String,
    },
}

impl InventoryCommand {
    /// The event a command names.
    pub fn event_id(&self) -> Uuid {
        match self {
            InventoryCommand::Open { event_id, .. }
            | InventoryCommand::SetStatus { event_id, .. }
            | InventoryCommand::Reserve { event_id, .. }
            | InventoryCommand::Release { event_id, .. }
            | InventoryCommand::Sweep { event_id }
            | InventoryCommand::Convert { event_id, .. }
            | InventoryCommand::Refund { event_id, .. }
            | InventoryCommand::QueueJoin { event_id, .. }
            | InventoryCommand::QueueLeave { event_id, .. }
            | InventoryCommand::QueueAdmit { event_id, .. }
            | InventoryCommand::OrderCreate { event_id, .. }
            | InventoryCommand::OrderSettle { event_id, .. }
            | InventoryCommand::OrderCaptured { event_id, .. }
            | InventoryCommand::OrderCancel { event_id, .. }
            | InventoryCommand::OrderRefunded { event_id, .. }
            | InventoryCommand::TicketScan { event_id, .. }
            | InventoryCommand::TransferCreate { event_id, .. }
            | InventoryCommand::TransferAccept { event_id, .. }
            | InventoryCommand::TransferCancel { event_id, .. }
            | InventoryCommand::OrderCaptureFailed { event_id, .. } => *event_id,
            InventoryCommand::AsShopper(inner) => inner.event_id(),
        }
    }
}

/// Reads of an event's inventory. They judge expiry by the group's replicated
/// clock (the latest leader stamp applied), never the reader's wall clock: every
/// replica at the same log index gives the same answer, and a hold reads as
/// expired exactly when writes treat it so (the leader's sweep makes that prompt).
/// The chaos suite's clock nemesis caught reads that judged by the reader's clock
/// flickering between EXPIRED and ACTIVE across nodes with skewed clocks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryQuery {
    /// Which event the group serves and its operator status.
    Status,
    /// Sale status and seats available per tier; `now_ms` is the reader's clock,
    /// used only for the date-based sale status (the sale opening does not wait
    /// for a write to the group).
    Availability { now_ms: i64 },
    /// Every seat's state, by seat index.
    Seats,
    /// One reservation.
    Reservation { reservation_id: Uuid },
    /// A user's waiting-room entry.
    Queue { user_id: Uuid },
    /// An order with its tickets.
    Order { order_id: Uuid },
    /// One ticket.
    Ticket { ticket_id: Uuid },
}

/// The event and operator status a group holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryView {
    pub event_id: Option<Uuid>,
    pub status: SaleOverride,
    pub changed_ms: i64,
}

/// Sale status and availability.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AvailabilityView {
    pub status: SaleStatus,
    /// Available seats per tier, in tier order.
    pub available_by_tier: Vec<u32>,
    pub available: u32,
    pub capacity: u32,
    /// Stamped time of the last change to any seat (0: none yet).
    pub last_updated_ms: i64,
}

/// Every seat's state, by seat index: 0 available, 1 reserved, 2 sold.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeatsView {
    pub states: Vec<u8>,
    pub last_updated_ms: i64,
}

/// A reservation as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservationView {
    pub reservation_id: Uuid,
    pub event_id: Uuid,
    pub user_id: Uuid,
    pub seat_ids: Vec<Uuid>,
    pub status: ReservationStatus,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub price_cents: u64,
    pub fees_cents: u64,
}

/// Answers to [`InventoryQuery`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryAnswer {
    Status(InventoryView),
    /// `None` until the group is opened with its layout.
    Availability(Option<AvailabilityView>),
    Seats(Option<SeatsView>),
    Reservation(Option<ReservationView>),
    Queue(Option<QueueView>),
    Order(Option<Box<OrderView>>),
    Ticket(Option<Ticket>),
}

/// Inventory outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryResponse {
    Status {
        event_id: Uuid,
        status: SaleOverride,
        changed_ms: i64,
    },
    Reserved(ReservationView),
    Released(ReservationView),
    Converted(ReservationView),
    Refunded(ReservationView),
    Swept {
        expired: u32,
    },
    Rejected(InventoryRejection),
    Queue(QueueOutcome),
    Order(Box<OrderView>),
    Scanned(Ticket),
    Transfer(Box<Transfer>),
}

/// Business refusals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryRejection {
    /// The group serves another event.
    WrongEvent {
        serves: Uuid,
    },
    /// A cancelled sale stays cancelled.
    Cancelled,
    /// The group has no layout yet.
    NotOpen,
    /// Holds are not taken in this sale status.
    NotOnSale(SaleStatus),
    /// Held by someone else (or by another of your holds).
    SeatsUnavailable(Vec<Uuid>),
    /// Sold.
    SeatsSold(Vec<Uuid>),
    /// Best available found fewer seats than asked.
    NotEnoughSeats {
        available: u32,
    },
    /// Held and bought tickets would pass the per-user limit.
    PurchaseLimit {
        limit: u32,
        have: u32,
        asked: u32,
    },
    UnknownSeats(Vec<Uuid>),
    DuplicateSeats(Vec<Uuid>),
    UnknownTier(Uuid),
    UnknownReservation,
    NotOwner,
    /// The reservation is no longer live (released, expired, converted, refunded).
    ReservationClosed(ReservationStatus),
    Invalid(String),
    Queue(QueueRejection),
    UnknownOrder,
    /// The hold has an order whose payment is being processed.
    OrderPending,
    OrderNotCancellable(String),
    AlreadyCancelled,
    UnknownBarcode,
    AlreadyScanned {
        ticket_id: Uuid,
        scanned_ms: i64,
    },
    TicketVoid,
    UnknownTicket,
    UnknownTransfer,
    TicketNotTransferable(String),
    TransferClosed(TransferStatus),
}
