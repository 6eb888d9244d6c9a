//! Catalog reads of venues, served from this node's local catalog replica with the
//! applied index they reflect (an extension of the spec: operators and tests read
//! back what they created from any node).

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::Path;
use super::{ApiError, AppState};
use crate::domain::catalog::Venue;
use crate::raft::GroupId;

/// A row of a venue's section.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowView {
    pub row: String,
    pub seats: u32,
}

/// A section of a venue.
#[derive(Debug, Serialize, ToSchema)]
pub struct SectionView {
    pub name: String,
    pub rows: Vec<RowView>,
}

/// A venue and its seating plan.
#[derive(Debug, Serialize, ToSchema)]
pub struct VenueView {
    pub venue_id: uuid::Uuid,
    pub name: String,
    pub city: String,
    pub state: String,
    pub country: String,
    pub timezone: String,
    pub capacity: u64,
    pub sections: Vec<SectionView>,
    pub created_at: Option<DateTime<Utc>>,
}

impl From<&Venue> for VenueView {
    fn from(v: &Venue) -> Self {
        Self {
            venue_id: v.venue_id,
            name: v.name.clone(),
            city: v.city.clone(),
            state: v.state.clone(),
            country: v.country.clone(),
            timezone: v.timezone.clone(),
            capacity: v.capacity,
            sections: v
                .sections
                .iter()
                .map(|s| SectionView {
                    name: s.name.clone(),
                    rows: s
                        .rows
                        .iter()
                        .map(|r| RowView {
                            row: r.row.clone(),
                            seats: r.seats,
                        })
                        .collect(),
                })
                .collect(),
            created_at: DateTime::from_timestamp_millis(v.created_ms),
        }
    }
}

/// Every venue, from this node's catalog replica.
#[derive(Debug, Serialize, ToSchema)]
pub struct VenueList {
    pub venues: Vec<VenueView>,
    /// The catalog log index the answer reflects.
    pub applied_index: u64,
}

/// One venue, from this node's catalog replica.
#[derive(Debug, Serialize, ToSchema)]
pub struct VenueRead {
    #[serde(flatten)]
    pub venue: VenueView,
    /// The catalog log index the answer reflects.
    pub applied_index: u64,
}

/// Runs `f` on this node's catalog replica; also returns the applied index.
fn with_catalog<T>(
    ctx: &AppState,
    f: impl FnOnce(&crate::domain::catalog::Catalog) -> T,
) -> Result<(T, u64), ApiError> {
    let group = ctx.groups.get(GroupId::CATALOG).ok_or_else(|| {
        ApiError::unavailable("NO_LEADER", "catalog is not running on this node yet", 1)
    })?;
    let st = group.state.read();
    let catalog = st
        .machine
        .catalog()
        .ok_or_else(|| ApiError::internal("group 0 does not hold the catalog"))?;
    Ok((f(catalog), st.last_applied.map(|l| l.index).unwrap_or(0)))
}

/// `GET /v1/venues`.
#[utoipa::path(get, path = "/v1/venues", operation_id = "listVenues", tag = "venues",
    responses((status = 200, description = "Every venue", body = VenueList)))]
pub async fn list(State(ctx): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (venues, applied_index) = with_catalog(&ctx, |c| {
        c.venues().map(VenueView::from).collect::<Vec<_>>()
    })?;
    Ok(axum::Json(VenueList {
        venues,
        applied_index,
    }))
}

/// `GET /v1/venues/{venue_id}`.
#[utoipa::path(get, path = "/v1/venues/{venue_id}", operation_id = "getVenue", tag = "venues",
    params(("venue_id" = uuid::Uuid, Path, description = "The venue")),
    responses(
        (status = 200, description = "The venue", body = VenueRead),
        (status = 404, description = "No such venue", body = ErrorBody),
    ))]
pub async fn get(
    State(ctx): State<AppState>,
    Path(id): Path<uuid::Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let (venue, applied_index) = with_catalog(&ctx, |c| c.venue(&id).map(VenueView::from))?;
    let venue = venue.ok_or_else(|| ApiError::not_found(format!("venue {id} not found")))?;
    Ok(axum::Json(VenueRead {
        venue,
        applied_index,
    }))
}
