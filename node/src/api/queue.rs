//! The waiting room: `POST /v1/queue/join`, `GET /v1/queue/status`,
//! `DELETE /v1/queue/leave`. Joins and leaves are commands of the event's group;
//! status polls are local reads of the nearest replica (a linearizable one when
//! the replica has not seen the fan's entry yet). Queue and access tokens are
//! minted from the replicated entry, so every node gives the same ones.

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ErrorBody;
use super::extract::{request_id_for, Json};
use super::tokens::{self, AuthUser};
use super::{ApiError, AppState};
use crate::domain::inventory::queue::{estimated_wait_minutes, poll_interval_seconds};
use crate::domain::inventory::{
    EntryState, InventoryAnswer, InventoryCommand, InventoryQuery, InventoryRejection,
    InventoryResponse, Join, QueueLimits, QueueOutcome, QueueRejection, QueueView,
};
use crate::domain::{CommandBody, Proposal};
use crate::inventory::EventInfo;

/// Longest device fingerprint kept.
const MAX_DEVICE_LEN: usize = 256;

/// `POST /v1/queue/join` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinBody {
    event_id: Uuid,
    /// If present, must be the token's user.
    #[serde(default)]
    user_id: Option<Uuid>,
    /// The fan's device; `X-Device-ID` is used when absent.
    #[serde(default)]
    device_fingerprint: Option<String>,
}

/// A place in the waiting room.
#[derive(Debug, Serialize, ToSchema)]
pub struct Joined {
    pub queue_token: String,
    pub queue_position: u64,
    pub estimated_wait_minutes: u64,
    pub queue_size: u64,
    /// QUEUED, or READY once admitted.
    pub status: &'static str,
    pub poll_interval_seconds: u64,
}

/// `GET /v1/queue/status` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct QueueStatusBody {
    pub queue_position: u64,
    pub estimated_wait_minutes: u64,
    /// QUEUED, READY, EXPIRED (the access window ended), LEFT or COMPLETED (bought).
    pub status: &'static str,
    pub access_granted: bool,
    pub queue_size: u64,
    pub poll_interval_seconds: u64,
    /// READY only: the token that opens `POST /v1/seats/reserve` for this event.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// READY only: the end of the access window.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

/// `GET /v1/queue/status` query.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StatusQuery {
    /// The token `POST /v1/queue/join` returned (or send it as a Bearer token).
    #[serde(default)]
    queue_token: Option<String>,
}

/// Turns a refusal of the room into the spec's answer.
pub(super) fn refusal(r: QueueRejection) -> ApiError {
    match r {
        QueueRejection::AlreadyInQueue(v) => {
            ApiError::conflict("ALREADY_IN_QUEUE", "you are already in this event's queue")
                .with_details(json!({
                    "queue_position": v.position,
                    "status": v.state.name(),
                }))
        }
        QueueRejection::Full { max_size } => {
            let mut e = ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "QUEUE_FULL",
                "the queue is full; try again later",
            )
            .with_details(json!({ "max_size": max_size }));
            e.retry_after = Some(30);
            e
        }
        QueueRejection::NotAdmitted => ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "your access window is over, or you left it or bought: join the queue again",
        ),
        QueueRejection::DeviceLimit { max_per_device } => ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("at most {max_per_device} places in this queue per device"),
        )
        .with_details(json!({ "max_per_device": max_per_device })),
    }
}

/// The event of a join, as the spec answers a bad one: 400.
async fn queued_event(
    ctx: &AppState,
    event_id: &Uuid,
) -> Result<(std::sync::Arc<EventInfo>, QueueLimits), ApiError> {
    let info = ctx.event_info(event_id).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND {
            ApiError::bad_request(format!("event {event_id} not found"))
        } else {
            e
        }
    })?;
    let limits = limits_of(ctx, &info)
        .ok_or_else(|| ApiError::bad_request(format!("event {event_id} has no waiting room")))?;
    Ok((info, limits))
}

/// The status rate limit's pace in seconds: a fan polling faster would be refused.
fn poll_floor(ctx: &AppState) -> u64 {
    let l = ctx.config.rate_limits.queue_status;
    l.window_seconds.div_ceil(u64::from(l.requests.max(1)))
}

/// The room's limits of an event whose queue is on.
fn limits_of(ctx: &AppState, info: &EventInfo) -> Option<QueueLimits> {
    crate::inventory::queue_limits(&ctx.config, &info.event)
}

/// `POST /v1/queue/join`.
#[utoipa::path(post, path = "/v1/queue/join", tag = "queue", operation_id = "joinQueue",
    security(("bearer" = [])),
    request_body = JoinBody,
    params(
        ("X-Device-ID" = Option<String>, Header, description = "The fan's device, when the body has no device_fingerprint"),
        ("Idempotency-Key" = Option<String>, Header, description = "A retry returns the first outcome"),
    ),
    responses(
        (status = 200, description = "In the queue", body = Joined),
        (status = 400, description = "Unknown event, or its queue is not on", body = ErrorBody),
        (status = 401, description = "Missing or invalid session token", body = ErrorBody),
        (status = 403, description = "user_id is not the token's user, or the device has its places (FORBIDDEN)", body = ErrorBody),
        (status = 409, description = "ALREADY_IN_QUEUE (details.queue_token)", body = ErrorBody),
        (status = 503, description = "QUEUE_FULL", body = ErrorBody),
    ))]
pub async fn join(
    State(ctx): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Json(body): Json<JoinBody>,
) -> Result<impl IntoResponse, ApiError> {
    tokens::same_user(body.user_id, &user)?;
    let device = body
        .device_fingerprint
        .or_else(|| {
            headers
                .get("x-device-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty());
    if device.as_ref().is_some_and(|d| d.len() > MAX_DEVICE_LEN) {
        return Err(ApiError::validation(format!(
            "device_fingerprint is longer than {MAX_DEVICE_LEN} bytes"
        )));
    }
    let (info, limits) = queued_event(&ctx, &body.event_id).await?;
    let event_id = body.event_id;
    let request_id = request_id_for(&headers, &format!("queue.join.{}", user.user_id))?;
    let nonce: u64 = rand::random();
    let command = |request_id: Uuid| Proposal {
        request_id,
        body: CommandBody::Inventory(InventoryCommand::QueueJoin {
            event_id,
            join: Join {
                user_id: user.user_id,
                entry_id: Uuid::new_v5(&request_id, b"queue-entry"),
                device: device.clone(),
                nonce,
                limits,
            },
        }),
    };
    let now = Utc::now().timestamp_millis();
    match ctx
        .propose_to_event(&info, request_id, false, command)
        .await?
    {
        InventoryResponse::Queue(QueueOutcome::Joined(v)) => {
            let queue_token = tokens::mint_queue(&ctx, user.user_id, event_id, v.joined_ms)?;
            Ok(axum::Json(Joined {
                queue_token,
                queue_position: v.position,
                estimated_wait_minutes: estimated_wait_minutes(
                    &v,
                    limits.admission_per_second,
                    now,
                ),
                queue_size: v.size,
                status: v.state.name(),
                poll_interval_seconds: poll_interval_seconds(v.position, poll_floor(&ctx)),
            }))
        }
        InventoryResponse::Rejected(InventoryRejection::Queue(QueueRejection::AlreadyInQueue(
            v,
        ))) => {
            let token = tokens::mint_queue(&ctx, user.user_id, event_id, v.joined_ms)?;
            let mut e = refusal(QueueRejection::AlreadyInQueue(v));
            if let Some(d) = e.details.as_object_mut() {
                d.insert("queue_token".into(), json!(token));
            }
            Err(e)
        }
        InventoryResponse::Rejected(InventoryRejection::NotOnSale(s)) => Err(
            ApiError::bad_request(format!("the event is {}: its queue is closed", s.name())),
        ),
        InventoryResponse::Rejected(r) => Err(super::reservations::refusal(r)),
        other => Err(ApiError::internal(format!(
            "unexpected inventory response {other:?}"
        ))),
    }
}

/// The queue (or access) token of a request: `?queue_token=` or `Authorization`.
fn queue_claims(
    ctx: &AppState,
    headers: &HeaderMap,
    query: Option<&str>,
    typ: &[&str],
) -> Result<(Uuid, Uuid), ApiError> {
    let token = query.or_else(|| tokens::bearer(headers)).ok_or_else(|| {
        ApiError::unauthorized("missing queue_token (query) or Bearer queue token")
    })?;
    let claims = tokens::verify(ctx, token, typ)?;
    let event = claims
        .event
        .ok_or_else(|| ApiError::unauthorized("the token names no event"))?;
    Ok((claims.sub, event))
}

/// A fan's entry: from the nearest replica, or from one caught up with the leader
/// when the nearest has not seen a live entry (a join acknowledged elsewhere).
async fn entry(ctx: &AppState, info: &EventInfo, user: Uuid) -> Result<QueueView, ApiError> {
    for linearizable in [false, true] {
        let read = ctx
            .read_inventory(info, InventoryQuery::Queue { user_id: user }, linearizable)
            .await?;
        if let InventoryAnswer::Queue(Some(v)) = read.answer {
            if linearizable || matches!(v.state, EntryState::Queued | EntryState::Ready { .. }) {
                return Ok(v);
            }
        }
    }
    Err(ApiError::not_found("no entry in this event's queue"))
}

/// `GET /v1/queue/status`.
#[utoipa::path(get, path = "/v1/queue/status", tag = "queue", operation_id = "queueStatus",
    params(StatusQuery),
    responses(
        (status = 200, description = "The fan's place; READY carries the access token", body = QueueStatusBody),
        (status = 401, description = "Missing or invalid queue token", body = ErrorBody),
        (status = 404, description = "No entry for this token", body = ErrorBody),
    ))]
pub async fn status(
    State(ctx): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<StatusQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let (user, event_id) = queue_claims(&ctx, &headers, q.queue_token.as_deref(), &["queue"])?;
    let info = ctx.event_info(&event_id).await?;
    let configured = limits_of(&ctx, &info).map_or(1, |l| l.admission_per_second);
    let v = entry(&ctx, &info, user).await?;
    let now = Utc::now().timestamp_millis();
    let (access_token, expires_at) = match v.state {
        EntryState::Ready {
            admitted_ms,
            until_ms,
        } => (
            Some(tokens::mint_access(
                &ctx,
                user,
                event_id,
                admitted_ms,
                until_ms,
            )?),
            DateTime::from_timestamp_millis(until_ms),
        ),
        _ => (None, None),
    };
    Ok(axum::Json(QueueStatusBody {
        queue_position: v.position,
        estimated_wait_minutes: estimated_wait_minutes(&v, configured, now),
        status: v.state.name(),
        access_granted: access_token.is_some(),
        queue_size: v.size,
        poll_interval_seconds: poll_interval_seconds(v.position, poll_floor(&ctx)),
        access_token,
        expires_at,
    }))
}

/// `DELETE /v1/queue/leave`.
#[utoipa::path(delete, path = "/v1/queue/leave", tag = "queue", operation_id = "leaveQueue",
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Out of the queue (also when already out); an admitted fan gives the window up"),
        (status = 401, description = "Missing or invalid queue or access token", body = ErrorBody),
    ))]
pub async fn leave(
    State(ctx): State<AppState>,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let (user, event_id) = queue_claims(&ctx, &headers, None, &["queue", "access"])?;
    let info = ctx.event_info(&event_id).await?;
    let request_id = request_id_for(&headers, &format!("queue.leave.{user}"))?;
    let command = |request_id: Uuid| Proposal {
        request_id,
        body: CommandBody::Inventory(InventoryCommand::QueueLeave {
            event_id,
            user_id: user,
        }),
    };
    match ctx
        .propose_to_event(&info, request_id, false, command)
        .await?
    {
        InventoryResponse::Queue(QueueOutcome::Left { .. }) => Ok(StatusCode::NO_CONTENT),
        InventoryResponse::Rejected(r) => Err(super::reservations::refusal(r)),
        other => Err(ApiError::internal(format!(
            "unexpected inventory response {other:?}"
        ))),
    }
}
