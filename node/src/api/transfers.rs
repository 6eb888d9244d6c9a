//! Ticket transfers: `POST /v1/tickets/{id}/transfer` (the holder offers a ticket
//! to an email address), `POST /v1/transfers/{id}/accept` (the user with that
//! address takes it: a new ticket and barcode, the old ticket void), `DELETE
//! /v1/transfers/{id}` (the sender withdraws a pending offer). Each is a command of
//! the event's group (docs/design.md, "Orders").

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ErrorBody;
use super::extract::{request_id_for, Json, Path};
use super::reservations::{refusal, time};
use super::tickets::event_of;
use super::tokens::{AuthUser, Shopper};
use super::{ApiError, AppState};
use crate::domain::catalog::normalize_email;
use crate::domain::ids::{self, Kind};
use crate::domain::inventory::transfers::{NewTransfer, Transfer, MAX_NAME_LEN};
use crate::domain::inventory::{InventoryCommand, InventoryRejection, InventoryResponse};
use crate::domain::{CommandBody, Proposal};

/// `POST /v1/tickets/{ticket_id}/transfer` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TransferBody {
    recipient_email: String,
    #[serde(default)]
    recipient_name: String,
}

/// A transfer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransferView {
    pub transfer_id: Uuid,
    pub ticket_id: Uuid,
    /// `PENDING`, `ACCEPTED`, `CANCELLED` or `EXPIRED`.
    pub status: String,
    pub recipient_email: String,
    pub recipient_name: String,
    pub expires_at: Option<DateTime<Utc>>,
}

impl From<&Transfer> for TransferView {
    fn from(t: &Transfer) -> Self {
        Self {
            transfer_id: t.transfer_id,
            ticket_id: t.ticket_id,
            status: t.status.name().to_string(),
            recipient_email: t.to_email.clone(),
            recipient_name: t.to_name.clone(),
            expires_at: time(t.expires_ms),
        }
    }
}

/// `POST /v1/transfers/{transfer_id}/accept` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// The recipient's new ticket.
    pub ticket_id: Uuid,
    pub transfer_id: Uuid,
    /// `ACCEPTED`.
    pub status: String,
}

/// A transfer answer of the group, or the API error its refusal is.
fn transfer_outcome(outcome: InventoryResponse, what: &str) -> Result<Transfer, ApiError> {
    match outcome {
        InventoryResponse::Transfer(t) => Ok(*t),
        InventoryResponse::Rejected(InventoryRejection::NotOwner) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("this {what} is not yours"),
        )),
        InventoryResponse::Rejected(r) => Err(refusal(r)),
        other => Err(ApiError::internal(format!(
            "unexpected inventory response {other:?}"
        ))),
    }
}

/// `POST /v1/tickets/{ticket_id}/transfer`: the holder offers an ACTIVE ticket to
/// an email address; the offer stands `orders.transfer_hours` (until the event
/// starts at the latest).
#[utoipa::path(post, path = "/v1/tickets/{ticket_id}/transfer", tag = "tickets", operation_id = "transferTicket",
    security(("bearer" = [])),
    params(("ticket_id" = Uuid, Path, description = "The ticket")),
    request_body = TransferBody,
    responses(
        (status = 200, description = "Offered (PENDING)", body = TransferView),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Another user's ticket (FORBIDDEN)", body = ErrorBody),
        (status = 404, description = "No such ticket", body = ErrorBody),
        (status = 409, description = "Scanned, void, already offered, or the event started (TICKET_NOT_TRANSFERABLE)", body = ErrorBody),
        (status = 422, description = "Invalid recipient (or yourself)", body = ErrorBody),
    ))]
pub async fn offer(
    State(ctx): State<AppState>,
    Shopper { user, .. }: Shopper,
    headers: HeaderMap,
    Path(ticket_id): Path<Uuid>,
    Json(body): Json<TransferBody>,
) -> Result<impl IntoResponse, ApiError> {
    let to_email = normalize_email(&body.recipient_email).map_err(ApiError::validation)?;
    if to_email == user.email {
        return Err(ApiError::validation(
            "a ticket is not transferred to oneself",
        ));
    }
    let to_name = body.recipient_name.trim().to_string();
    if to_name.len() > MAX_NAME_LEN {
        return Err(ApiError::validation(format!(
            "recipient_name is over {MAX_NAME_LEN} bytes"
        )));
    }
    let info = event_of(&ctx, &ticket_id, Kind::Ticket, "ticket").await?;
    let event_id = info.event.spec.event_id;
    let request_id = request_id_for(
        &headers,
        &format!("tickets.transfer.{}.{ticket_id}.{to_email}", user.user_id),
    )?;
    let ttl_ms = i64::try_from(ctx.config.orders.transfer_hours)
        .unwrap_or(i64::MAX / 3_600_000)
        .saturating_mul(3_600_000);
    let outcome = ctx
        .propose_to_event(&info, request_id, false, |request_id| Proposal {
            request_id,
            body: CommandBody::Inventory(InventoryCommand::TransferCreate {
                event_id,
                transfer: Box::new(NewTransfer {
                    transfer_id: ids::inside(
                        &event_id,
                        Kind::Transfer,
                        &Uuid::new_v5(&request_id, b"transfer"),
                    ),
                    ticket_id,
                    from: user.user_id,
                    to_email: to_email.clone(),
                    to_name: to_name.clone(),
                    ttl_ms,
                }),
            }),
        })
        .await?;
    let t = transfer_outcome(outcome, "ticket")?;
    Ok(axum::Json(TransferView::from(&t)))
}

/// `POST /v1/transfers/{transfer_id}/accept`: the user whose email the offer names
/// takes the ticket (again: the same answer).
#[utoipa::path(post, path = "/v1/transfers/{transfer_id}/accept", tag = "tickets", operation_id = "acceptTransfer",
    security(("bearer" = [])),
    params(("transfer_id" = Uuid, Path, description = "The transfer")),
    responses(
        (status = 200, description = "Accepted: the new ticket", body = Accepted),
        (status = 401, description = "Missing or invalid session token", body = ErrorBody),
        (status = 403, description = "The offer is for someone else (FORBIDDEN)", body = ErrorBody),
        (status = 404, description = "No such transfer", body = ErrorBody),
        (status = 409, description = "Withdrawn or taken (TRANSFER_CLOSED), or the ticket can no longer move (TICKET_NOT_TRANSFERABLE)", body = ErrorBody),
        (status = 410, description = "The offer expired (TRANSFER_EXPIRED)", body = ErrorBody),
    ))]
pub async fn accept(
    State(ctx): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Path(transfer_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = format!("transfers.accept.{}.{transfer_id}", user.user_id);
    let t = on_transfer(&ctx, &headers, transfer_id, &scope, |event_id| {
        InventoryCommand::TransferAccept {
            event_id,
            transfer_id,
            user_id: user.user_id,
            email: user.email.clone(),
            nonce: rand::random(),
        }
    })
    .await?;
    let ticket_id = t
        .new_ticket
        .ok_or_else(|| ApiError::internal("an accepted transfer without its ticket"))?;
    Ok(axum::Json(Accepted {
        ticket_id,
        transfer_id,
        status: t.status.name().to_string(),
    }))
}

/// `DELETE /v1/transfers/{transfer_id}`: the sender withdraws a pending offer (204
/// again for a withdrawn or expired one).
#[utoipa::path(delete, path = "/v1/transfers/{transfer_id}", tag = "tickets", operation_id = "cancelTransfer",
    security(("bearer" = [])),
    params(("transfer_id" = Uuid, Path, description = "The transfer")),
    responses(
        (status = 204, description = "Withdrawn"),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Someone else's offer (FORBIDDEN)", body = ErrorBody),
        (status = 404, description = "No such transfer", body = ErrorBody),
        (status = 409, description = "Already accepted (TRANSFER_CLOSED)", body = ErrorBody),
    ))]
pub async fn withdraw(
    State(ctx): State<AppState>,
    Shopper { user, .. }: Shopper,
    headers: HeaderMap,
    Path(transfer_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let scope = format!("transfers.cancel.{}.{transfer_id}", user.user_id);
    on_transfer(&ctx, &headers, transfer_id, &scope, |event_id| {
        InventoryCommand::TransferCancel {
            event_id,
            transfer_id,
            user_id: user.user_id,
        }
    })
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Gets `command(event)` applied to an existing transfer's event group, under
/// the request id of the `Idempotency-Key` in `scope`.
async fn on_transfer(
    ctx: &AppState,
    headers: &HeaderMap,
    transfer_id: Uuid,
    scope: &str,
    command: impl Fn(Uuid) -> InventoryCommand,
) -> Result<Transfer, ApiError> {
    let info = event_of(ctx, &transfer_id, Kind::Transfer, "transfer").await?;
    let event_id = info.event.spec.event_id;
    let request_id = request_id_for(headers, scope)?;
    let outcome = ctx
        .propose_to_event(&info, request_id, false, |request_id| Proposal {
            request_id,
            body: CommandBody::Inventory(command(event_id)),
        })
        .await?;
    transfer_outcome(outcome, "transfer")
}
