//! Orders: `POST /v1/orders` (a hold becomes an order, paid through the saga in
//! [`crate::orders`]), `GET /v1/orders/{id}`, `POST /v1/orders/{id}/cancel`.
//!
//! Creating an order answers once the payment's outcome is recorded: 201 with the
//! order CONFIRMED (payment AUTHORIZED, captured just after) and its tickets, or
//! 402 `PAYMENT_DECLINED` with the seats released. If the gateway cannot be
//! reached in time the answer is 201 with the order still PENDING, and the event
//! group's leader finishes it (docs/design.md, "Orders").

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ErrorBody;
use super::extract::{request_id_for, Json, Path};
use super::reservations::{refusal, time};
use super::tickets::{event_of, ticket_body, SeatLabel, TicketBody};
use super::tokens::Shopper;
use super::{ApiError, AppState};
use crate::domain::ids::{self, Kind};
use crate::domain::inventory::orders::{
    NewOrder, OrderStatus, OrderView, PaymentState, MAX_BILLING_LEN,
};
use crate::domain::inventory::{
    InventoryAnswer, InventoryCommand, InventoryQuery, InventoryRejection, InventoryResponse,
    ReservationStatus,
};
use crate::domain::money::decimal_from_cents;
use crate::domain::{CommandBody, Proposal};
use crate::inventory::EventInfo;
use crate::orders::{SagaError, Until};
use crate::raft::GroupId;

/// `POST /v1/orders` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateOrder {
    reservation_id: Uuid,
    payment_method_id: Uuid,
    /// Kept as given (at most 2,048 bytes of JSON).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    billing_address: Option<serde_json::Value>,
    /// `MOBILE` (the default), `EMAIL`, `WILL_CALL`, ...: upper-case letters and
    /// underscores.
    #[serde(default)]
    delivery_method: Option<String>,
}

/// The event an order is for.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderEvent {
    pub event_id: Uuid,
    pub name: String,
    pub date: Option<DateTime<Utc>>,
    pub venue: String,
}

/// An order.
#[derive(Debug, Serialize, ToSchema)]
pub struct OrderBody {
    pub order_id: Uuid,
    pub reservation_id: Uuid,
    /// `PENDING`, `CONFIRMED`, `FAILED` or `CANCELLED`.
    pub status: String,
    pub event: OrderEvent,
    pub seats: Vec<SeatLabel>,
    pub subtotal: f64,
    pub fees: f64,
    pub taxes: f64,
    pub total: f64,
    /// `PENDING`, `AUTHORIZED`, `CAPTURED`, `DECLINED`, `REFUND_PENDING`, `REFUNDED`.
    pub payment_status: String,
    pub payment_method_id: Uuid,
    pub delivery_method: String,
    /// Once confirmed.
    pub tickets: Vec<TicketBody>,
    pub created_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cancelled_at: Option<DateTime<Utc>>,
    /// Why the payment failed (a declined order).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    /// Of a cancelled order: `PROCESSING`, then `REFUNDED`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_status: Option<String>,
}

fn when(ms: i64) -> Option<DateTime<Utc>> {
    (ms > 0).then(|| time(ms)).flatten()
}

fn refund_status(p: PaymentState) -> Option<String> {
    match p {
        PaymentState::Refunding => Some("PROCESSING".into()),
        PaymentState::Refunded => Some("REFUNDED".into()),
        _ => None,
    }
}

/// Renders an order for its buyer.
fn order_body(ctx: &AppState, info: &EventInfo, v: &OrderView) -> Result<OrderBody, ApiError> {
    let o = &v.order;
    let event = &info.event.spec;
    Ok(OrderBody {
        order_id: o.order_id,
        reservation_id: o.reservation_id,
        status: o.status.name().to_string(),
        event: OrderEvent {
            event_id: event.event_id,
            name: event.name.clone(),
            date: time(event.date_ms),
            venue: info.venue.name.clone(),
        },
        seats: o
            .seats
            .iter()
            .map(|&s| SeatLabel::of(&info.layout, s))
            .collect(),
        subtotal: decimal_from_cents(o.subtotal_cents),
        fees: decimal_from_cents(o.fees_cents),
        taxes: decimal_from_cents(o.taxes_cents),
        total: decimal_from_cents(o.total_cents),
        payment_status: o.payment.name().to_string(),
        payment_method_id: o.payment_method_id,
        delivery_method: o.delivery_method.clone(),
        tickets: v
            .tickets
            .iter()
            .filter(|t| t.holder == o.user_id)
            .map(|t| ticket_body(ctx, info, t))
            .collect::<Result<_, _>>()?,
        created_at: when(o.created_ms),
        confirmed_at: when(o.confirmed_ms),
        cancelled_at: when(o.cancelled_ms),
        failure_reason: o.failure.clone(),
        refund_status: refund_status(o.payment),
    })
}

/// 403 for someone else's order.
pub(super) fn not_yours() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "FORBIDDEN",
        "this order belongs to another user",
    )
}

/// Reads an order through its event group's leader (404 if there is none).
pub(super) async fn read_order(
    ctx: &AppState,
    id: &Uuid,
) -> Result<(std::sync::Arc<EventInfo>, OrderView), ApiError> {
    let info = event_of(ctx, id, Kind::Order, "order").await?;
    let read = ctx
        .read_inventory(&info, InventoryQuery::Order { order_id: *id }, true)
        .await?;
    match read.answer {
        InventoryAnswer::Order(Some(v)) => Ok((info, *v)),
        _ => Err(ApiError::not_found(format!("order {id} not found"))),
    }
}

/// An order answer of the group, or the API error its refusal is.
fn order_outcome(outcome: InventoryResponse) -> Result<OrderView, ApiError> {
    match outcome {
        InventoryResponse::Order(v) => Ok(*v),
        InventoryResponse::Rejected(InventoryRejection::ReservationClosed(
            s @ (ReservationStatus::Expired | ReservationStatus::Released),
        )) => Err(ApiError::new(
            StatusCode::GONE,
            "RESERVATION_EXPIRED",
            format!("the reservation is {}: hold the seats again", s.name()),
        )),
        InventoryResponse::Rejected(r) => Err(refusal(r)),
        other => Err(ApiError::internal(format!(
            "unexpected inventory response {other:?}"
        ))),
    }
}

/// `POST /v1/orders`: buys a live hold with one of the caller's payment methods.
#[utoipa::path(post, path = "/v1/orders", tag = "orders", operation_id = "createOrder",
    security(("bearer" = [])),
    request_body = CreateOrder,
    responses(
        (status = 201, description = "Ordered: CONFIRMED with tickets (or PENDING while the gateway is unreachable)", body = OrderBody),
        (status = 400, description = "Not one of the caller's payment methods (INVALID_PAYMENT_METHOD)", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 402, description = "The card was declined (PAYMENT_DECLINED); the seats are released", body = ErrorBody),
        (status = 403, description = "Another user's reservation (FORBIDDEN)", body = ErrorBody),
        (status = 404, description = "No such reservation", body = ErrorBody),
        (status = 410, description = "The reservation expired or was released (RESERVATION_EXPIRED)", body = ErrorBody),
        (status = 422, description = "Invalid delivery method or billing address", body = ErrorBody),
    ))]
pub async fn create(
    State(ctx): State<AppState>,
    Shopper { user, access_event }: Shopper,
    headers: HeaderMap,
    Json(body): Json<CreateOrder>,
) -> Result<impl IntoResponse, ApiError> {
    let info = event_of(&ctx, &body.reservation_id, Kind::Reservation, "reservation").await?;
    let event_id = info.event.spec.event_id;
    if access_event.is_some_and(|e| e != event_id) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "an access token opens only the event whose waiting room gave it",
        ));
    }
    let delivery_method = body.delivery_method.unwrap_or_else(|| "MOBILE".into());
    if delivery_method.is_empty()
        || delivery_method.len() > 32
        || !delivery_method
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b == b'_')
    {
        return Err(ApiError::validation(
            "delivery_method must be 1 to 32 upper-case letters or underscores (MOBILE, EMAIL, ...)",
        ));
    }
    let billing_address = body
        .billing_address
        .map(|b| b.to_string())
        .filter(|b| b != "null");
    if billing_address
        .as_ref()
        .is_some_and(|b| b.len() > MAX_BILLING_LEN)
    {
        return Err(ApiError::validation(format!(
            "billing_address is over {MAX_BILLING_LEN} bytes"
        )));
    }
    let method = ctx
        .catalog_lookup(|c| {
            c.payment_method(&body.payment_method_id)
                .filter(|pm| pm.user_id == user.user_id)
                .cloned()
        })
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "INVALID_PAYMENT_METHOD",
                format!(
                    "payment method {} is not one of yours",
                    body.payment_method_id
                ),
            )
        })?;
    // One order per hold: its id follows from the reservation's.
    let order_id = ids::inside(
        &event_id,
        Kind::Order,
        &Uuid::new_v5(&body.reservation_id, b"order"),
    );
    let new = NewOrder {
        order_id,
        reservation_id: body.reservation_id,
        user_id: user.user_id,
        payment_method_id: method.payment_method_id,
        card_ref: method.gateway_ref,
        billing_address,
        delivery_method,
        tax_bps: ctx.config.orders.tax_bps(),
    };
    let request_id = request_id_for(
        &headers,
        &format!("orders.create.{}.{}", user.user_id, body.reservation_id),
    )?;
    let outcome = ctx
        .propose_to_event(&info, request_id, false, |request_id| Proposal {
            request_id,
            body: CommandBody::Inventory(InventoryCommand::OrderCreate {
                event_id,
                order: Box::new(new.clone()),
            }),
        })
        .await?;
    let mut view = order_outcome(outcome)?;
    let group = GroupId(info.event.group_id);
    if view.order.status == OrderStatus::Pending {
        let claim = ctx.sagas.claim(order_id);
        match ctx.drive_order(group, view.clone(), Until::Settled).await {
            Ok(v) => view = v,
            Err(SagaError::Refused(r)) => return Err(refusal(r)),
            Err(e) => tracing::warn!(order = %order_id, "order left pending: {e}"),
        }
        drop(claim);
    }
    if view.order.payment == PaymentState::Declined {
        return Err(ApiError::new(
            StatusCode::PAYMENT_REQUIRED,
            "PAYMENT_DECLINED",
            "the card was declined; the seats are released",
        )
        .with_details(json!({
            "order_id": order_id,
            "reason": view.order.failure,
        })));
    }
    if view.order.next_step().is_some() && view.order.status != OrderStatus::Pending {
        ctx.finish_order_later(group, view.clone());
    }
    metrics::counter!("boxoffice_orders_total", "status" => view.order.status.name()).increment(1);
    Ok((
        StatusCode::CREATED,
        axum::Json(order_body(&ctx, &info, &view)?),
    ))
}

/// `GET /v1/orders/{order_id}`: the buyer's order with its tickets, read through
/// the event group's leader.
#[utoipa::path(get, path = "/v1/orders/{order_id}", tag = "orders", operation_id = "getOrder",
    security(("bearer" = [])),
    params(("order_id" = Uuid, Path, description = "The order")),
    responses(
        (status = 200, description = "The order", body = OrderBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Another user's order (FORBIDDEN)", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
    ))]
pub async fn get(
    State(ctx): State<AppState>,
    Shopper { user, .. }: Shopper,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let (info, view) = read_order(&ctx, &id).await?;
    if view.order.user_id != user.user_id {
        return Err(not_yours());
    }
    Ok(axum::Json(order_body(&ctx, &info, &view)?))
}

/// `POST /v1/orders/{order_id}/cancel` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    pub order_id: Uuid,
    /// `CANCELLED`.
    pub status: String,
    pub refund_amount: f64,
    /// `PROCESSING` until the gateway confirms, then `REFUNDED` (see the order).
    pub refund_status: String,
    pub cancelled_at: Option<DateTime<Utc>>,
}

/// `POST /v1/orders/{order_id}/cancel`: the buyer cancels a confirmed order
/// before the event starts; tickets void, seats back on sale, the payment given
/// back (voided or refunded) right after.
#[utoipa::path(post, path = "/v1/orders/{order_id}/cancel", tag = "orders", operation_id = "cancelOrder",
    security(("bearer" = [])),
    params(("order_id" = Uuid, Path, description = "The order")),
    responses(
        (status = 200, description = "Cancelled; the refund is processing", body = Cancelled),
        (status = 400, description = "Not cancellable: the event started, a ticket was scanned, or the order is not confirmed (ORDER_NOT_CANCELLABLE)", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Another user's order (FORBIDDEN)", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
        (status = 409, description = "Already cancelled (ALREADY_CANCELLED)", body = ErrorBody),
    ))]
pub async fn cancel(
    State(ctx): State<AppState>,
    Shopper { user, .. }: Shopper,
    headers: HeaderMap,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let info = event_of(&ctx, &id, Kind::Order, "order").await?;
    let event_id = info.event.spec.event_id;
    let request_id = request_id_for(&headers, &format!("orders.cancel.{}.{id}", user.user_id))?;
    let outcome = ctx
        .propose_to_event(&info, request_id, false, |request_id| Proposal {
            request_id,
            body: CommandBody::Inventory(InventoryCommand::OrderCancel {
                event_id,
                order_id: id,
                user_id: user.user_id,
            }),
        })
        .await?;
    if matches!(
        outcome,
        InventoryResponse::Rejected(InventoryRejection::NotOwner)
    ) {
        return Err(not_yours());
    }
    let view = order_outcome(outcome)?;
    ctx.finish_order_later(GroupId(info.event.group_id), view.clone());
    let o = &view.order;
    Ok(axum::Json(Cancelled {
        order_id: o.order_id,
        status: o.status.name().to_string(),
        refund_amount: decimal_from_cents(o.refund_cents()),
        refund_status: refund_status(o.payment).unwrap_or_else(|| "PROCESSING".into()),
        cancelled_at: when(o.cancelled_ms),
    }))
}
