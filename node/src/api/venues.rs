//! Catalog reads of venues, served from this node's local catalog replica with the
//! applied index they reflect (an extension of the spec: operators and tests read
//! back what they created from any node).

use axum::extract::State;
use axum::response::IntoResponse;
use serde_json::{json, Value};

use super::extract::Path;
use super::{ApiError, AppState};
use crate::domain::catalog::Venue;
use crate::raft::GroupId;

fn venue_json(v: &Venue) -> Value {
    let created = chrono::DateTime::from_timestamp_millis(v.created_ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    json!({
        "venue_id": v.venue_id,
        "name": v.name,
        "city": v.city,
        "state": v.state,
        "country": v.country,
        "timezone": v.timezone,
        "capacity": v.capacity,
        "sections": v.sections.iter().map(|s| json!({
            "name": s.name,
            "rows": s.rows.iter().map(|r| json!({"row": r.row, "seats": r.seats})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "created_at": created,
    })
}

/// Runs `f` on the local catalog replica, returning its result and applied index.
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

/// `GET /v1/venues`: every venue, in id order.
pub async fn list(State(ctx): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (venues, applied) = with_catalog(&ctx, |c| c.venues().map(venue_json).collect::<Vec<_>>())?;
    Ok(axum::Json(
        json!({ "venues": venues, "applied_index": applied }),
    ))
}

/// `GET /v1/venues/{venue_id}`.
pub async fn get(
    State(ctx): State<AppState>,
    Path(id): Path<uuid::Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let (venue, applied) = with_catalog(&ctx, |c| c.venue(&id).map(venue_json))?;
    let mut venue = venue.ok_or_else(|| ApiError::not_found(format!("venue {id} not found")))?;
    venue["applied_index"] = json!(applied);
    Ok(axum::Json(venue))
}
