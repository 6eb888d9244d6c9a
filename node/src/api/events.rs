//! Operator endpoints for events: creation (a catalog command that places the
//! event's group, then the group's first write) and sale-status changes (a write to
//! the event's own group, routed to its leader from any node).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ErrorBody;
use super::extract::{request_id_for, Admin, Json, Path};
use super::{ApiError, AppState};
use crate::domain::catalog::{
    CatalogCommand, CatalogRejection, CatalogResponse, NewEvent, QueueSettings, TierSpec,
};
use crate::domain::inventory::orders::percent_of;
use crate::domain::inventory::{
    InventoryAnswer, InventoryCommand, InventoryQuery, InventoryRejection, InventoryResponse,
    SaleOverride,
};
use crate::domain::money::cents_from_decimal;
use crate::domain::{CommandBody, Proposal, Query, QueryResult, Response};
use crate::raft::GroupId;

/// `POST /v1/admin/events` body (api-extensions.md).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateEvent {
    name: String,
    artist: String,
    #[serde(default)]
    description: String,
    category: String,
    venue_id: Uuid,
    date: DateTime<Utc>,
    #[serde(default)]
    doors_open: Option<DateTime<Utc>>,
    on_sale_date: DateTime<Utc>,
    #[serde(default)]
    presale_start: Option<DateTime<Utc>>,
    pricing_tiers: Vec<TierBody>,
    #[serde(default)]
    queue: Option<QueueBody>,
    #[serde(default)]
    image_url: Option<String>,
}

/// A pricing tier: a price (and fees) for seats of the named sections.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TierBody {
    name: String,
    price: f64,
    /// Fees per seat; without them, `orders.fee_percent` of the price.
    #[serde(default)]
    fees: Option<f64>,
    sections: Vec<String>,
}

/// Waiting-room settings.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueBody {
    enabled: bool,
    max_size: u64,
    admission_per_second: u32,
    max_active_shoppers: u32,
    access_window_minutes: u32,
}

impl CreateEvent {
    fn into_domain(self, fee_bps: u32) -> Result<NewEvent, ApiError> {
        let mut tiers = Vec::with_capacity(self.pricing_tiers.len());
        for t in self.pricing_tiers {
            let money = |what: &str, v: f64| {
                cents_from_decimal(v)
                    .map_err(|e| ApiError::validation(format!("tier {:?} {what}: {e}", t.name)))
            };
            let price_cents = money("price", t.price)?;
            let fees_cents = match t.fees {
                Some(fees) => money("fees", fees)?,
                None => percent_of(price_cents, fee_bps),
            };
            tiers.push(TierSpec {
                tier_id: Uuid::new_v4(),
                price_cents,
                fees_cents,
                name: t.name,
                sections: t.sections,
            });
        }
        let event = NewEvent {
            event_id: Uuid::new_v4(),
            name: self.name,
            artist: self.artist,
            description: self.description,
            category: self.category,
            venue_id: self.venue_id,
            date_ms: self.date.timestamp_millis(),
            doors_open_ms: self.doors_open.map(|d| d.timestamp_millis()),
            on_sale_ms: self.on_sale_date.timestamp_millis(),
            presale_start_ms: self.presale_start.map(|d| d.timestamp_millis()),
            pricing_tiers: tiers,
            queue: self.queue.map(|q| QueueSettings {
                enabled: q.enabled,
                max_size: q.max_size,
                admission_per_second: q.admission_per_second,
                max_active_shoppers: q.max_active_shoppers,
                access_window_minutes: q.access_window_minutes,
            }),
            image_url: self.image_url,
        };
        event.validate().map_err(ApiError::validation)?;
        Ok(event)
    }
}

/// An event just created and where its group was placed.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventCreated {
    pub event_id: Uuid,
    pub group_id: u64,
    /// Nodes replicating the event's group.
    pub replicas: Vec<u64>,
    /// The group's leader, once its first write went through.
    pub leader: Option<u64>,
}

/// Creates an event: the catalog records it and places its group; then the group's
/// first write binds it to the event, which also tells us its leader.
#[utoipa::path(post, path = "/v1/admin/events", operation_id = "createEvent", tag = "admin",
    security(("admin_key" = [])),
    request_body = CreateEvent,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key create one event")),
    responses(
        (status = 201, description = "Event created and placed", body = EventCreated),
        (status = 409, description = "The event exists", body = ErrorBody),
    ))]
pub async fn create(
    State(ctx): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    Json(body): Json<CreateEvent>,
) -> Result<impl IntoResponse, ApiError> {
    let mut event = body.into_domain(ctx.config.orders.fee_bps())?;
    let base_request = request_id_for(&headers, "admin.events")?;
    // Ids inside an event carry its first six bytes; on the rare clash with another
    // event, try a fresh id under a request id derived deterministically from the
    // first, so a client's retry walks the same path to the same outcome.
    let mut attempt = 0u8;
    let (applied, event_id, group_id, replicas) = loop {
        let request_id = match attempt {
            0 => base_request,
            n => Uuid::new_v5(&base_request, &[n]),
        };
        let proposal = Proposal {
            request_id,
            body: CommandBody::Catalog(CatalogCommand::CreateEvent {
                event: Box::new(event.clone()),
                replication_factor: ctx.config.replication_factor,
            }),
        };
        let applied = ctx.propose(GroupId::CATALOG, proposal).await?;
        match applied.response.clone() {
            Response::Catalog(CatalogResponse::EventCreated {
                event_id,
                group_id,
                replicas,
            }) => break (applied, event_id, group_id, replicas),
            Response::Catalog(CatalogResponse::Rejected(CatalogRejection::IdPrefixTaken))
                if attempt < 3 =>
            {
                attempt += 1;
                event.event_id = Uuid::new_v4();
            }
            Response::Catalog(CatalogResponse::Rejected(r)) => return Err(catalog_rejection(r)),
            other => {
                return Err(ApiError::internal(format!(
                    "unexpected catalog response {other:?}"
                )))
            }
        }
    };
    // Route by the catalog entry we just wrote: wait until our replica has it.
    ctx.wait_applied(GroupId::CATALOG, applied.index).await?;
    // The group's first write fixes its layout; if it fails now, the first read or
    // hold of the event opens it.
    let info = ctx.event_info(&event_id).await?;
    let leader = match ctx.open_event(&info).await {
        Ok(a) => Some(a.leader),
        Err(e) => {
            tracing::warn!(%event_id, group_id, "event group not open yet: {}", e.message);
            None
        }
    };
    Ok((
        StatusCode::CREATED,
        axum::Json(EventCreated {
            event_id,
            group_id,
            replicas,
            leader,
        }),
    ))
}

fn catalog_rejection(r: CatalogRejection) -> ApiError {
    match r {
        CatalogRejection::Invalid(msg) => ApiError::validation(msg),
        CatalogRejection::UnknownVenue(id) => {
            ApiError::validation(format!("venue {id} does not exist"))
        }
        CatalogRejection::EventExists(id) => {
            ApiError::conflict("CONFLICT", format!("event {id} already exists"))
        }
        CatalogRejection::VenueExists(id) => {
            ApiError::conflict("CONFLICT", format!("venue {id} already exists"))
        }
        CatalogRejection::EmailTaken
        | CatalogRejection::UnknownUser
        | CatalogRejection::UnknownPaymentMethod
        | CatalogRejection::TooManyPaymentMethods { .. } => {
            ApiError::internal(format!("an event creation answered {r:?}"))
        }
        CatalogRejection::IdPrefixTaken => ApiError::unavailable(
            "ID_CLASH",
            "could not draw an event id that is not in use; retry",
            1,
        ),
        CatalogRejection::NotEnoughNodes { have, need } => ApiError::unavailable(
            "INSUFFICIENT_NODES",
            format!("replication needs {need} nodes and the cluster has {have}"),
            5,
        ),
    }
}

/// `PATCH /v1/admin/events/{event_id}` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PatchEvent {
    status: StatusBody,
}

/// A sale status an operator can set.
#[derive(Debug, Clone, Copy, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StatusBody {
    OnSale,
    Paused,
    Cancelled,
}

/// The JSON name of an operator status.
pub fn status_name(s: SaleOverride) -> &'static str {
    match s {
        SaleOverride::Scheduled => "SCHEDULED",
        SaleOverride::OnSale => "ON_SALE",
        SaleOverride::Paused => "PAUSED",
        SaleOverride::Cancelled => "CANCELLED",
    }
}

/// An event's operator status after a change.
#[derive(Debug, Serialize, ToSchema)]
pub struct StatusChanged {
    pub event_id: Uuid,
    /// SCHEDULED, ON_SALE, PAUSED or CANCELLED.
    pub status: &'static str,
    pub changed_at: Option<DateTime<Utc>>,
}

/// Changes an event's sale status in the event's own group.
#[utoipa::path(patch, path = "/v1/admin/events/{event_id}", operation_id = "setEventStatus", tag = "admin",
    security(("admin_key" = [])),
    request_body = PatchEvent,
    params(
        ("event_id" = Uuid, Path, description = "The event"),
        ("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key apply once"),
    ),
    responses(
        (status = 200, description = "Status changed", body = StatusChanged),
        (status = 409, description = "ALREADY_CANCELLED: a cancelled event's status cannot change", body = ErrorBody),
    ))]
pub async fn patch(
    State(ctx): State<AppState>,
    _admin: Admin,
    Path(event_id): Path<Uuid>,
    headers: HeaderMap,
    Json(body): Json<PatchEvent>,
) -> Result<impl IntoResponse, ApiError> {
    let group_id = ctx.event_group(&event_id).await?;
    let status = match body.status {
        StatusBody::OnSale => SaleOverride::OnSale,
        StatusBody::Paused => SaleOverride::Paused,
        StatusBody::Cancelled => SaleOverride::Cancelled,
    };
    let proposal = Proposal {
        request_id: request_id_for(&headers, &format!("admin.events.patch.{event_id}"))?,
        body: CommandBody::Inventory(InventoryCommand::SetStatus { event_id, status }),
    };
    let applied = ctx.propose(group_id, proposal).await?;
    match applied.response {
        Response::Inventory(InventoryResponse::Status {
            event_id,
            status,
            changed_ms,
        }) => Ok(axum::Json(StatusChanged {
            event_id,
            status: status_name(status),
            changed_at: DateTime::from_timestamp_millis(changed_ms),
        })),
        Response::Inventory(InventoryResponse::Rejected(InventoryRejection::Cancelled)) => {
            Err(ApiError::conflict(
                "ALREADY_CANCELLED",
                format!("event {event_id} is cancelled; its status cannot change"),
            ))
        }
        other => Err(ApiError::internal(format!(
            "unexpected inventory response {other:?}"
        ))),
    }
}

/// `?consistency=` of event reads.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReadParams {
    #[serde(default)]
    consistency: Consistency,
}

/// `linearizable` (through the group leader, the default) or `local` (this replica).
#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Reflects every write acknowledged before the read (the leader's read index).
    #[default]
    Linearizable,
    /// The nearest replica's applied state, with the index it reflects.
    Local,
}

/// An event's placement and operator status, with how it was read.
#[derive(Debug, Serialize, ToSchema)]
pub struct AdminEventView {
    pub event_id: Uuid,
    pub name: String,
    pub group_id: u64,
    pub replicas: Vec<u64>,
    /// SCHEDULED, ON_SALE, PAUSED or CANCELLED.
    pub status: &'static str,
    pub status_changed_at: Option<DateTime<Utc>>,
    pub consistency: Consistency,
    /// The group's log index the answer reflects.
    pub applied_index: u64,
    /// The node whose replica answered.
    pub served_by: u64,
}

/// `GET /v1/admin/events/{event_id}`: the catalog's record of an event and its
/// group's sale status, read at the requested consistency.
#[utoipa::path(get, path = "/v1/admin/events/{event_id}", operation_id = "adminGetEvent", tag = "admin",
    security(("admin_key" = [])),
    params(("event_id" = Uuid, Path, description = "The event"), ReadParams),
    responses((status = 200, description = "The event's group and status", body = AdminEventView)))]
pub async fn get(
    State(ctx): State<AppState>,
    _admin: Admin,
    Path(event_id): Path<Uuid>,
    super::extract::Query(params): super::extract::Query<ReadParams>,
) -> Result<impl IntoResponse, ApiError> {
    let group_id = ctx.event_group(&event_id).await?;
    let (name, replicas) = ctx
        .with_catalog(|c| {
            c.event(&event_id)
                .map(|e| (e.spec.name.clone(), e.replicas.clone()))
        })
        .flatten()
        .ok_or_else(|| ApiError::not_found(format!("event {event_id} not found")))?;
    let linearizable = params.consistency == Consistency::Linearizable;
    let answer = ctx
        .router
        .query(
            group_id,
            Query::Inventory(InventoryQuery::Status),
            linearizable,
            ctx.deadline(),
        )
        .await?;
    let QueryResult::Inventory(InventoryAnswer::Status(view)) = answer.result else {
        return Err(ApiError::internal(format!(
            "group {group_id} does not hold an inventory"
        )));
    };
    Ok(axum::Json(AdminEventView {
        event_id,
        name,
        group_id: group_id.0,
        replicas,
        status: status_name(view.status),
        status_changed_at: (view.changed_ms != 0)
            .then(|| DateTime::from_timestamp_millis(view.changed_ms))
            .flatten(),
        consistency: params.consistency,
        applied_index: answer.applied_index,
        served_by: answer.served_by,
    }))
}
