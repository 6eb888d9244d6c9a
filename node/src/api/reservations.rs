//! Seat holds: `POST /v1/seats/reserve` (named seats or best available),
//! `GET` and `DELETE /v1/reservations/{id}`. A hold is one command in the event's
//! group, so it is linearizable; ids inside an event carry the event, so any node
//! finds the group of a reservation from its id.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ErrorBody;
use super::extract::{request_id_for, Json, Path, IDEMPOTENCY_KEY};
use super::tokens::{self, AuthUser, Shopper};
use super::{ApiError, AppState};
use crate::domain::ids::{self, Kind};
use crate::domain::inventory::transfers::TransferStatus;
use crate::domain::inventory::{
    InventoryAnswer, InventoryCommand, InventoryQuery, InventoryRejection, InventoryResponse, Pick,
    ReservationView,
};
use crate::domain::money::decimal_from_cents;
use crate::domain::{CommandBody, Proposal, Response};
use crate::inventory::EventInfo;
use crate::raft::GroupId;

/// `POST /v1/seats/reserve` body: `seat_ids`, or `quantity` (and optionally
/// `tier_id`) for the best available seats.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReserveBody {
    event_id: Uuid,
    #[serde(default)]
    seat_ids: Option<Vec<Uuid>>,
    /// If present, must be the token's user.
    #[serde(default)]
    user_id: Option<Uuid>,
    #[serde(default)]
    #[schema(minimum = 1)]
    quantity: Option<u32>,
    #[serde(default)]
    tier_id: Option<Uuid>,
}

/// `201` of a hold.
#[derive(Debug, Serialize, ToSchema)]
pub struct Reserved {
    pub reservation_id: Uuid,
    pub event_id: Uuid,
    pub seat_ids: Vec<Uuid>,
    pub expires_at: Option<DateTime<Utc>>,
    pub total_price: f64,
    pub fees: f64,
    pub total: f64,
}

/// A reservation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReservationBody {
    pub reservation_id: Uuid,
    pub event_id: Uuid,
    pub seat_ids: Vec<Uuid>,
    /// ACTIVE, RELEASED, EXPIRED, CONVERTED or REFUNDED.
    pub status: &'static str,
    pub created_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub total_price: f64,
    pub fees: f64,
    pub total: f64,
}

pub(super) fn time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

impl From<&ReservationView> for ReservationBody {
    fn from(v: &ReservationView) -> Self {
        Self {
            reservation_id: v.reservation_id,
            event_id: v.event_id,
            seat_ids: v.seat_ids.clone(),
            status: v.status.name(),
            created_at: time(v.created_ms),
            expires_at: time(v.expires_ms),
            total_price: decimal_from_cents(v.price_cents),
            fees: decimal_from_cents(v.fees_cents),
            total: decimal_from_cents(v.price_cents.saturating_add(v.fees_cents)),
        }
    }
}

/// Turns a refusal of the event's group into the spec's answer.
pub(super) fn refusal(r: InventoryRejection) -> ApiError {
    use InventoryRejection as R;
    match r {
        R::SeatsUnavailable(ids) => ApiError::conflict(
            "SEATS_UNAVAILABLE",
            "some of the seats are held by someone else",
        )
        .with_details(json!({ "seat_ids": ids })),
        R::NotEnoughSeats { available } => ApiError::conflict(
            "SEATS_UNAVAILABLE",
            format!("only {available} matching seats are available"),
        )
        .with_details(json!({ "available": available })),
        R::SeatsSold(ids) => {
            ApiError::new(StatusCode::GONE, "SEATS_SOLD", "some of the seats are sold")
                .with_details(json!({ "seat_ids": ids }))
        }
        R::PurchaseLimit { limit, have, asked } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "PURCHASE_LIMIT_EXCEEDED",
            format!("at most {limit} tickets per user for this event"),
        )
        .with_details(json!({ "limit": limit, "held_or_bought": have, "requested": asked })),
        R::UnknownSeats(ids) => ApiError::not_found("no such seats in this event")
            .with_details(json!({ "seat_ids": ids })),
        R::DuplicateSeats(ids) => {
            ApiError::bad_request("a seat is listed twice").with_details(json!({ "seat_ids": ids }))
        }
        R::UnknownTier(id) => ApiError::not_found(format!("tier {id} is not in this event")),
        R::NotOnSale(status) => ApiError::conflict(
            "NOT_ON_SALE",
            format!("seats cannot be held while the event is {}", status.name()),
        )
        .with_details(json!({ "status": status.name() })),
        R::UnknownReservation => ApiError::not_found("no such reservation"),
        R::NotOwner => ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this reservation belongs to another user",
        ),
        R::ReservationClosed(s) => {
            ApiError::conflict("CONFLICT", format!("the reservation is {}", s.name()))
        }
        R::Invalid(m) => ApiError::validation(m),
        R::Cancelled => ApiError::conflict("NOT_ON_SALE", "the event is cancelled"),
        R::Queue(q) => super::queue::refusal(q),
        R::UnknownOrder => ApiError::not_found("no such order"),
        R::OrderPending => ApiError::conflict(
            "CONFLICT",
            "this reservation has an order whose payment is being processed",
        ),
        R::OrderNotCancellable(why) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "ORDER_NOT_CANCELLABLE",
            format!("the order cannot be cancelled: {why}"),
        ),
        R::AlreadyCancelled => {
            ApiError::conflict("ALREADY_CANCELLED", "the order is already cancelled")
        }
        R::UnknownBarcode => ApiError::new(
            StatusCode::NOT_FOUND,
            "UNKNOWN_BARCODE",
            "no ticket of this event has that barcode",
        ),
        R::AlreadyScanned {
            ticket_id,
            scanned_ms,
        } => ApiError::conflict("ALREADY_SCANNED", "this ticket was already scanned in")
            .with_details(json!({ "ticket_id": ticket_id, "scanned_at": time(scanned_ms) })),
        R::TicketVoid => ApiError::new(StatusCode::GONE, "TICKET_VOID", "this ticket is void"),
        R::UnknownTicket => ApiError::not_found("no such ticket"),
        R::UnknownTransfer => ApiError::not_found("no such transfer"),
        R::TicketNotTransferable(why) => ApiError::conflict(
            "TICKET_NOT_TRANSFERABLE",
            format!("the ticket cannot be transferred: {why}"),
        ),
        R::TransferClosed(TransferStatus::Expired) => {
            ApiError::new(StatusCode::GONE, "TRANSFER_EXPIRED", "the transfer expired")
        }
        R::TransferClosed(s) => {
            ApiError::conflict("TRANSFER_CLOSED", format!("the transfer is {}", s.name()))
        }
        R::NotOpen | R::WrongEvent { .. } => {
            ApiError::internal(format!("inventory refused a routed command: {r:?}"))
        }
    }
}

/// Checks named seats before anything is proposed: another event's seat is a 400,
/// a seat nobody has is a 404, a repeated one a 400.
async fn check_seats(ctx: &AppState, info: &EventInfo, seats: &[Uuid]) -> Result<(), ApiError> {
    let event_id = info.event.spec.event_id;
    let mut seen = std::collections::BTreeSet::new();
    let mut foreign = Vec::new();
    let mut unknown = Vec::new();
    for id in seats {
        if !seen.insert(*id) {
            return Err(ApiError::bad_request("a seat is listed twice")
                .with_details(json!({ "seat_ids": [id] })));
        }
        match ids::seat_index(&event_id, id) {
            Some(i) if i < info.layout.seat_count => {}
            Some(_) => unknown.push(*id),
            None => {
                let prefix = ids::prefix(id);
                let elsewhere = ids::kind(id) == Some(Kind::Seat)
                    && ctx
                        .with_catalog(|c| c.event_by_prefix(&prefix).is_some())
                        .unwrap_or(false);
                if elsewhere {
                    foreign.push(*id);
                } else {
                    unknown.push(*id);
                }
            }
        }
    }
    if !foreign.is_empty() {
        return Err(ApiError::bad_request("seats of another event")
            .with_details(json!({ "seat_ids": foreign })));
    }
    if !unknown.is_empty() {
        return Err(ApiError::not_found("no such seats in this event")
            .with_details(json!({ "seat_ids": unknown })));
    }
    Ok(())
}

/// `POST /v1/seats/reserve`.
#[utoipa::path(post, path = "/v1/seats/reserve", tag = "reservations", operation_id = "reserveSeats",
    security(("bearer" = [])),
    request_body = ReserveBody,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry returns the first outcome")),
    responses(
        (status = 201, description = "Seats held until expires_at", body = Reserved),
        (status = 401, description = "Missing or invalid session or access token", body = ErrorBody),
        (status = 403, description = "user_id is not the token's user, or the event's waiting room is on and this is not its access token (FORBIDDEN)", body = ErrorBody),
        (status = 404, description = "Unknown event, seat or tier", body = ErrorBody),
        (status = 409, description = "SEATS_UNAVAILABLE (details.seat_ids) or NOT_ON_SALE", body = ErrorBody),
        (status = 410, description = "SEATS_SOLD (details.seat_ids)", body = ErrorBody),
        (status = 422, description = "PURCHASE_LIMIT_EXCEEDED or invalid input", body = ErrorBody),
    ))]
pub async fn reserve(
    State(ctx): State<AppState>,
    Shopper { user, access_event }: Shopper,
    headers: HeaderMap,
    Json(body): Json<ReserveBody>,
) -> Result<impl IntoResponse, ApiError> {
    tokens::same_user(body.user_id, &user)?;
    let info = ctx.event_info(&body.event_id).await?;
    let queue_on = info.event.spec.queue.as_ref().is_some_and(|q| q.enabled);
    match access_event {
        Some(e) if e != body.event_id => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "an access token opens only the event whose waiting room gave it",
            ))
        }
        None if queue_on => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "FORBIDDEN",
                "this event's waiting room is on: reserve with the access token it gives when your turn comes",
            )
            .with_details(json!({ "queue": "POST /v1/queue/join" })))
        }
        _ => {}
    }
    let pick = match (body.seat_ids, body.quantity) {
        (Some(seats), None) if !seats.is_empty() => {
            if body.tier_id.is_some() {
                return Err(ApiError::bad_request(
                    "tier_id goes with quantity, not seat_ids",
                ));
            }
            check_seats(&ctx, &info, &seats).await?;
            Pick::Seats(seats)
        }
        (None, Some(quantity)) if quantity > 0 => Pick::Best {
            quantity,
            tier_id: body.tier_id,
        },
        (Some(_), None) => return Err(ApiError::validation("seat_ids is empty")),
        (None, Some(_)) => return Err(ApiError::validation("quantity must be at least 1")),
        _ => {
            return Err(ApiError::bad_request(
                "give either seat_ids or quantity (with an optional tier_id)",
            ))
        }
    };
    let event_id = body.event_id;
    let request_id = request_id_for(&headers, &format!("seats.reserve.{}", user.user_id))?;
    let command = |request_id: Uuid| {
        let reserve = InventoryCommand::Reserve {
            event_id,
            // A deterministic reservation id per request: a retry names the same hold.
            reservation_id: ids::reservation(&event_id, &Uuid::new_v5(&request_id, b"hold")),
            user_id: user.user_id,
            pick: pick.clone(),
            hold_ms: i64::try_from(ctx.config.inventory.hold_seconds)
                .unwrap_or(600)
                .saturating_mul(1000),
        };
        Proposal {
            request_id,
            // While the waiting room is on, the group checks the shopper's window.
            body: CommandBody::Inventory(if queue_on {
                InventoryCommand::AsShopper(Box::new(reserve))
            } else {
                reserve
            }),
        }
    };
    // Without an Idempotency-Key nobody can ask for this request's outcome again,
    // so a refusal need not be remembered: the leader answers a conflict from its
    // state after a read index, without a log append (docs/design.md).
    let refusable = !headers.contains_key(IDEMPOTENCY_KEY);
    let outcome = ctx
        .propose_to_event(&info, request_id, refusable, command)
        .await?;
    match outcome {
        InventoryResponse::Reserved(v) => Ok((
            StatusCode::CREATED,
            axum::Json(Reserved {
                reservation_id: v.reservation_id,
                event_id: v.event_id,
                seat_ids: v.seat_ids.clone(),
                expires_at: time(v.expires_ms),
                total_price: decimal_from_cents(v.price_cents),
                fees: decimal_from_cents(v.fees_cents),
                total: decimal_from_cents(v.price_cents.saturating_add(v.fees_cents)),
            }),
        )),
        InventoryResponse::Rejected(r) => Err(refusal(r)),
        other => Err(ApiError::internal(format!(
            "unexpected inventory response {other:?}"
        ))),
    }
}

/// The event of a reservation id (404 if it cannot be one).
async fn reservation_event(
    ctx: &AppState,
    id: &Uuid,
) -> Result<std::sync::Arc<EventInfo>, ApiError> {
    let missing = || ApiError::not_found(format!("reservation {id} not found"));
    if ids::kind(id) != Some(Kind::Reservation) {
        return Err(missing());
    }
    let prefix = ids::prefix(id);
    let event_id = ctx
        .catalog_lookup(|c| c.event_by_prefix(&prefix).map(|e| e.spec.event_id))
        .await?
        .ok_or_else(missing)?;
    ctx.event_info(&event_id).await
}

/// `GET /v1/reservations/{reservation_id}`: the owner's view, read through the
/// group leader (a hold just made through another node is found).
#[utoipa::path(get, path = "/v1/reservations/{reservation_id}", tag = "reservations", operation_id = "getReservation",
    security(("bearer" = [])),
    params(("reservation_id" = Uuid, Path, description = "The reservation")),
    responses(
        (status = 200, description = "The reservation", body = ReservationBody),
        (status = 401, description = "Missing or invalid session token", body = ErrorBody),
        (status = 403, description = "Another user's reservation (FORBIDDEN)", body = ErrorBody),
    ))]
pub async fn get(
    State(ctx): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let info = reservation_event(&ctx, &id).await?;
    let read = ctx
        .read_inventory(
            &info,
            InventoryQuery::Reservation { reservation_id: id },
            true,
        )
        .await?;
    let InventoryAnswer::Reservation(Some(v)) = read.answer else {
        return Err(ApiError::not_found(format!("reservation {id} not found")));
    };
    if v.user_id != user.user_id {
        return Err(refusal(InventoryRejection::NotOwner));
    }
    Ok(axum::Json(ReservationBody::from(&v)))
}

/// `DELETE /v1/reservations/{reservation_id}`: the owner releases the hold; 204
/// again for a released or expired one.
#[utoipa::path(delete, path = "/v1/reservations/{reservation_id}", tag = "reservations", operation_id = "releaseReservation",
    security(("bearer" = [])),
    params(("reservation_id" = Uuid, Path, description = "The reservation")),
    responses(
        (status = 204, description = "Released (or already released or expired)"),
        (status = 401, description = "Missing or invalid session token", body = ErrorBody),
        (status = 403, description = "Another user's reservation (FORBIDDEN)", body = ErrorBody),
        (status = 409, description = "Already converted into an order", body = ErrorBody),
    ))]
pub async fn release(
    State(ctx): State<AppState>,
    AuthUser(user): AuthUser,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let info = reservation_event(&ctx, &id).await?;
    let event_id = info.event.spec.event_id;
    let proposal = Proposal {
        request_id: Uuid::new_v4(),
        body: CommandBody::Inventory(InventoryCommand::Release {
            event_id,
            reservation_id: id,
            user_id: user.user_id,
        }),
    };
    match ctx
        .propose(GroupId(info.event.group_id), proposal)
        .await?
        .response
    {
        Response::Inventory(InventoryResponse::Released(_)) => Ok(StatusCode::NO_CONTENT),
        Response::Inventory(InventoryResponse::Rejected(InventoryRejection::NotOpen)) => {
            Err(ApiError::not_found(format!("reservation {id} not found")))
        }
        Response::Inventory(InventoryResponse::Rejected(r)) => Err(refusal(r)),
        other => Err(ApiError::internal(format!(
            "unexpected inventory response {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future `f` returns, without making one.
    fn future_size<A, Fut>(_f: impl FnOnce(A) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// A handler's future is moved by value through axum's layers (and copied
    /// whole each time): the rare, large states inside it (a read index, a routed
    /// proposal) are boxed. It was 6.5 KB before they were; 1.5 KB after.
    #[test]
    fn the_hold_handler_future_stays_small() {
        let size = future_size(
            |(ctx, shopper, headers, body): (AppState, Shopper, HeaderMap, Json<ReserveBody>)| {
                reserve(State(ctx), shopper, headers, body)
            },
        );
        assert!(size <= 2048, "the reserve handler's future is {size} bytes");
    }
}
