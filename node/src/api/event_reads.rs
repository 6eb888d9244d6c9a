//! Fans' event reads: search over the local catalog replica, event details with
//! live availability, and seat maps, both from the nearest replica of the event's
//! group (no leader round trip; the answer says when it was last updated).

use axum::extract::State;
use axum::response::IntoResponse;
use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::extract::{Path, Query};
use super::{ApiError, AppState};
use crate::domain::catalog::search::{words, EventQuery};
use crate::domain::catalog::{Catalog, Event};
use crate::domain::ids;
use crate::domain::inventory::{InventoryAnswer, InventoryQuery};
use crate::domain::money::decimal_from_cents;

/// Deeper pages are refused: refine the query instead.
const MAX_PAGE: u32 = 10_000;

/// The event group answered before its first write (it is opened on the way).
fn not_open() -> ApiError {
    ApiError::unavailable("NO_LEADER", "event is not open yet", 1)
}

fn time(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// `GET /v1/events/search` parameters.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Words matched case-insensitively against the words of name, artist, venue
    /// and city (a query word matches words it begins).
    query: Option<String>,
    /// Exact city (case-insensitive).
    city: Option<String>,
    /// Events on or after this day (UTC), `YYYY-MM-DD`.
    date_from: Option<NaiveDate>,
    /// Events on or before this day (UTC), `YYYY-MM-DD`.
    date_to: Option<NaiveDate>,
    /// Exact category (case-insensitive).
    category: Option<String>,
    #[param(minimum = 1, maximum = 10000)]
    page: Option<u32>,
    #[param(minimum = 1, maximum = 100)]
    per_page: Option<u32>,
}

/// A venue as search shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct VenueBrief {
    pub name: String,
    pub city: String,
    pub state: String,
}

/// Lowest and highest tier price.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceRange {
    pub min: f64,
    pub max: f64,
}

/// An event in search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventSummary {
    pub event_id: Uuid,
    pub name: String,
    pub artist: String,
    pub venue: VenueBrief,
    pub date: Option<DateTime<Utc>>,
    pub on_sale_date: Option<DateTime<Utc>>,
    pub price_range: PriceRange,
    /// NOT_ON_SALE, PRESALE, ON_SALE or ENDED from the dates (event details give
    /// the live status, including PAUSED, CANCELLED and SOLD_OUT).
    pub availability: &'static str,
    pub image_url: Option<String>,
}

/// Where a page is.
#[derive(Debug, Serialize, ToSchema)]
pub struct Pagination {
    pub page: u32,
    pub per_page: u32,
    pub total: u64,
}

/// Search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResults {
    pub events: Vec<EventSummary>,
    pub pagination: Pagination,
}

/// The sale status from the dates alone.
fn date_status(e: &Event, now_ms: i64) -> &'static str {
    let s = &e.spec;
    if now_ms >= s.date_ms {
        "ENDED"
    } else if now_ms >= s.on_sale_ms {
        "ON_SALE"
    } else if s.presale_start_ms.is_some_and(|p| now_ms >= p) {
        "PRESALE"
    } else {
        "NOT_ON_SALE"
    }
}

fn search_catalog(c: &Catalog, p: &SearchParams, now_ms: i64) -> SearchResults {
    let day_start = |d: NaiveDate| {
        d.and_hms_opt(0, 0, 0)
            .map(|t| t.and_utc().timestamp_millis())
    };
    let query = EventQuery {
        words: words(p.query.as_deref().unwrap_or("")).collect(),
        city: p.city.clone(),
        category: p.category.clone(),
        from_ms: p.date_from.and_then(day_start),
        until_ms: p.date_to.and_then(|d| d.succ_opt()).and_then(day_start),
    };
    let per_page = p.per_page.unwrap_or(20);
    let page = p.page.unwrap_or(1);
    let offset = (page as usize - 1).saturating_mul(per_page as usize);
    let (total, hits) = c.search_events(&query, offset, per_page as usize);
    let total = total as u64;
    let events = hits
        .into_iter()
        .filter_map(|e| {
            let venue = c.venue(&e.spec.venue_id)?;
            let prices = e.spec.pricing_tiers.iter().map(|t| t.price_cents);
            Some(EventSummary {
                event_id: e.spec.event_id,
                name: e.spec.name.clone(),
                artist: e.spec.artist.clone(),
                venue: VenueBrief {
                    name: venue.name.clone(),
                    city: venue.city.clone(),
                    state: venue.state.clone(),
                },
                date: time(e.spec.date_ms),
                on_sale_date: time(e.spec.on_sale_ms),
                price_range: PriceRange {
                    min: decimal_from_cents(prices.clone().min().unwrap_or(0)),
                    max: decimal_from_cents(prices.max().unwrap_or(0)),
                },
                availability: date_status(e, now_ms),
                image_url: e.spec.image_url.clone(),
            })
        })
        .collect();
    SearchResults {
        events,
        pagination: Pagination {
            page,
            per_page,
            total,
        },
    }
}

/// `GET /v1/events/search`: from this node's catalog replica, relevance then date.
#[utoipa::path(get, path = "/v1/events/search", tag = "events", operation_id = "searchEvents",
    params(SearchParams),
    responses((status = 200, description = "Matching events, one page", body = SearchResults)))]
pub async fn search(
    State(ctx): State<AppState>,
    Query(params): Query<SearchParams>,
) -> Result<impl IntoResponse, ApiError> {
    if params.page.is_some_and(|p| p == 0 || p > MAX_PAGE) {
        return Err(ApiError::bad_request(format!(
            "page must be 1 to {MAX_PAGE}"
        )));
    }
    if params.per_page.is_some_and(|n| n == 0 || n > 100) {
        return Err(ApiError::bad_request("per_page must be 1 to 100"));
    }
    let now = Utc::now().timestamp_millis();
    let results = ctx
        .with_catalog(|c| search_catalog(c, &params, now))
        .ok_or_else(|| {
            ApiError::unavailable("NO_LEADER", "catalog is not running on this node yet", 1)
        })?;
    Ok(axum::Json(results))
}

/// A pricing tier with its live availability.
#[derive(Debug, Serialize, ToSchema)]
pub struct TierView {
    pub tier_id: Uuid,
    pub name: String,
    pub price: f64,
    pub fees: f64,
    pub total: f64,
    pub available_seats: u32,
}

/// Sale dates and the live sale status.
#[derive(Debug, Serialize, ToSchema)]
pub struct SaleInfo {
    pub presale_start: Option<DateTime<Utc>>,
    pub general_sale_start: Option<DateTime<Utc>>,
    /// NOT_ON_SALE, PRESALE, ON_SALE, SOLD_OUT, PAUSED, CANCELLED or ENDED.
    pub status: &'static str,
}

/// `GET /v1/events/{event_id}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct EventDetails {
    pub event_id: Uuid,
    pub name: String,
    pub description: String,
    pub artist: String,
    /// Stable id of the artist (derived from the name).
    pub artist_id: Uuid,
    pub venue_id: Uuid,
    pub date: Option<DateTime<Utc>>,
    pub doors_open: Option<DateTime<Utc>>,
    pub category: String,
    pub image_url: Option<String>,
    pub pricing_tiers: Vec<TierView>,
    pub sale_info: SaleInfo,
    pub total_capacity: u32,
    pub available_seats: u32,
    /// When a seat last changed.
    pub last_updated: Option<DateTime<Utc>>,
}

/// `GET /v1/events/{event_id}`: details with live availability from the nearest
/// replica of the event's group.
#[utoipa::path(get, path = "/v1/events/{event_id}", tag = "events", operation_id = "getEvent",
    params(("event_id" = Uuid, Path, description = "The event")),
    responses((status = 200, description = "The event", body = EventDetails)))]
pub async fn details(
    State(ctx): State<AppState>,
    Path(event_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let info = ctx.event_info(&event_id).await?;
    let now = Utc::now().timestamp_millis();
    let read = ctx
        .read_inventory(&info, InventoryQuery::Availability { now_ms: now }, false)
        .await?;
    let InventoryAnswer::Availability(Some(a)) = read.answer else {
        return Err(not_open());
    };
    let spec = &info.event.spec;
    let tiers = info
        .layout
        .tiers
        .iter()
        .enumerate()
        .map(|(i, t)| TierView {
            tier_id: t.tier_id,
            name: t.name.clone(),
            price: decimal_from_cents(t.price_cents),
            fees: decimal_from_cents(t.fees_cents),
            total: decimal_from_cents(t.price_cents.saturating_add(t.fees_cents)),
            available_seats: a.available_by_tier.get(i).copied().unwrap_or(0),
        })
        .collect();
    Ok(axum::Json(EventDetails {
        event_id,
        name: spec.name.clone(),
        description: spec.description.clone(),
        artist: spec.artist.clone(),
        artist_id: Uuid::new_v5(&Uuid::NAMESPACE_OID, spec.artist.to_lowercase().as_bytes()),
        venue_id: spec.venue_id,
        date: time(spec.date_ms),
        doors_open: spec.doors_open_ms.and_then(time),
        category: spec.category.clone(),
        image_url: spec.image_url.clone(),
        pricing_tiers: tiers,
        sale_info: SaleInfo {
            presale_start: spec.presale_start_ms.and_then(time),
            general_sale_start: time(spec.on_sale_ms),
            status: a.status.name(),
        },
        total_capacity: a.capacity,
        available_seats: a.available,
        last_updated: (a.last_updated_ms > 0)
            .then(|| time(a.last_updated_ms))
            .flatten(),
    }))
}

/// A seat on the map.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeatView {
    pub seat_id: Uuid,
    pub number: String,
    /// AVAILABLE, RESERVED or SOLD.
    pub status: &'static str,
    pub price: f64,
}

/// A row on the map.
#[derive(Debug, Serialize, ToSchema)]
pub struct RowMap {
    pub row: String,
    pub seats: Vec<SeatView>,
}

/// A section on the map.
#[derive(Debug, Serialize, ToSchema)]
pub struct SectionMap {
    pub section_id: Uuid,
    pub name: String,
    pub tier_id: Uuid,
    pub rows: Vec<RowMap>,
}

/// `GET /v1/events/{event_id}/seats`.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeatMap {
    pub event_id: Uuid,
    pub sections: Vec<SectionMap>,
    /// When a seat last changed (the event's creation if none has).
    pub last_updated: Option<DateTime<Utc>>,
    /// The group's log index this map reflects, and the node whose replica served it.
    pub applied_index: u64,
    pub served_by: u64,
}

/// `GET /v1/events/{event_id}/seats`: every seat's status from the nearest replica.
#[utoipa::path(get, path = "/v1/events/{event_id}/seats", tag = "events", operation_id = "getSeatMap",
    params(("event_id" = Uuid, Path, description = "The event")),
    responses((status = 200, description = "The seat map", body = SeatMap)))]
pub async fn seat_map(
    State(ctx): State<AppState>,
    Path(event_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let info = ctx.event_info(&event_id).await?;
    let read = ctx
        .read_inventory(&info, InventoryQuery::Seats, false)
        .await?;
    let InventoryAnswer::Seats(Some(view)) = read.answer else {
        return Err(not_open());
    };
    let layout = &info.layout;
    let sections = layout
        .sections
        .iter()
        .enumerate()
        .map(|(si, s)| {
            let tier = layout.tiers.get(usize::from(s.tier));
            let price = decimal_from_cents(tier.map_or(0, |t| t.price_cents));
            SectionMap {
                section_id: ids::section(&event_id, si as u32),
                name: s.name.clone(),
                tier_id: tier.map(|t| t.tier_id).unwrap_or_default(),
                rows: s
                    .rows
                    .iter()
                    .map(|r| RowMap {
                        row: r.name.clone(),
                        seats: (0..r.seats)
                            .map(|n| {
                                let seat = r.first_seat + n;
                                SeatView {
                                    seat_id: ids::seat(&event_id, seat),
                                    number: (n + 1).to_string(),
                                    status: match view.states.get(seat as usize) {
                                        Some(0) => "AVAILABLE",
                                        Some(1) => "RESERVED",
                                        _ => "SOLD",
                                    },
                                    price,
                                }
                            })
                            .collect(),
                    })
                    .collect(),
            }
        })
        .collect();
    let updated = if view.last_updated_ms > 0 {
        view.last_updated_ms
    } else {
        info.event.created_ms
    };
    Ok(axum::Json(SeatMap {
        event_id,
        sections,
        last_updated: time(updated),
        applied_index: read.applied_index,
        served_by: read.served_by,
    }))
}
