//! Tickets: `GET /v1/tickets?order_id=` (the buyer's tickets with their QR codes),
//! `GET /v1/tickets/{id}/download` (the QR code as a PNG), and `POST
//! /v1/tickets/scan` (a gate admits a ticket once). A ticket's QR code encodes a
//! pass signed with the cluster key ([`tokens::TicketPass`]), so a gate can check
//! it offline; scanning is a command of the event's group, so two gates scanning
//! the same ticket at once admit it once.

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::Engine;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::error::ErrorBody;
use super::extract::{request_id_for, Admin, Json, Path, Query};
use super::reservations::{refusal, time};
use super::tokens::{self, Shopper, TicketPass};
use super::{ApiError, AppState};
use crate::domain::ids::{self, Kind};
use crate::domain::inventory::tickets::{Ticket, TicketStatus};
use crate::domain::inventory::{
    EventLayout, InventoryAnswer, InventoryCommand, InventoryQuery, InventoryResponse,
};
use crate::domain::{CommandBody, Proposal};
use crate::inventory::EventInfo;

/// A seat as printed on a ticket.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SeatLabel {
    pub seat_id: Uuid,
    pub section: String,
    pub row: String,
    pub seat: String,
}

impl SeatLabel {
    /// The label of seat index `seat` in `layout`.
    pub fn of(layout: &EventLayout, seat: u32) -> Self {
        let (section, row, number) = layout
            .locate(seat)
            .and_then(|(si, ri, n)| {
                let s = layout.sections.get(si)?;
                Some((s.name.clone(), s.rows.get(ri)?.name.clone(), n.to_string()))
            })
            .unwrap_or_default();
        Self {
            seat_id: layout.seat_id(seat),
            section,
            row,
            seat: number,
        }
    }
}

/// A ticket.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketBody {
    pub ticket_id: Uuid,
    pub order_id: Uuid,
    pub event_id: Uuid,
    pub event_name: String,
    pub event_date: Option<DateTime<Utc>>,
    pub venue: String,
    pub section: String,
    pub row: String,
    pub seat: String,
    /// A PNG of the QR code, base64 (empty for a void or transferred ticket).
    pub qr_code: String,
    /// What the QR code encodes: a JWT (HS256, cluster key) a gate can verify
    /// offline for authenticity; `POST /v1/tickets/scan` decides admission.
    pub qr_payload: String,
    pub barcode: String,
    /// `ACTIVE`, `ADMITTED` or `VOID`.
    pub status: String,
    pub transferable: bool,
    pub download_url: String,
}

/// A ticket's signed pass (what its QR code encodes) and its seat.
fn ticket_pass(
    ctx: &AppState,
    info: &EventInfo,
    t: &Ticket,
) -> Result<(String, SeatLabel), ApiError> {
    let label = SeatLabel::of(&info.layout, t.seat);
    let event = &info.event.spec;
    let pass = TicketPass {
        sub: t.holder,
        iss: String::new(),
        aud: String::new(),
        iat: t.issued_ms / 1000,
        exp: event.date_ms / 1000 + 24 * 3600,
        typ: String::new(),
        event: event.event_id,
        tid: t.ticket_id,
        barcode: t.barcode.clone(),
        seat: format!("{} {}-{}", label.section, label.row, label.seat),
    };
    Ok((tokens::mint_ticket_pass(ctx, pass)?, label))
}

/// Whether a ticket still gets a pass (a void or transferred one does not: its
/// old pass stays verifiable offline until it expires, so the gate's online scan
/// is what turns it away).
fn passable(t: &Ticket) -> bool {
    matches!(t.status, TicketStatus::Active | TicketStatus::Admitted)
}

/// Renders a ticket for its holder (a void ticket without its QR code).
pub fn ticket_body(ctx: &AppState, info: &EventInfo, t: &Ticket) -> Result<TicketBody, ApiError> {
    let event = &info.event.spec;
    let (payload, png, label) = if passable(t) {
        let (payload, label) = ticket_pass(ctx, info, t)?;
        let png = base64::engine::general_purpose::STANDARD.encode(qr_png(&payload)?);
        (payload, png, label)
    } else {
        (
            String::new(),
            String::new(),
            SeatLabel::of(&info.layout, t.seat),
        )
    };
    Ok(TicketBody {
        ticket_id: t.ticket_id,
        order_id: t.order_id,
        event_id: event.event_id,
        event_name: event.name.clone(),
        event_date: time(event.date_ms),
        venue: info.venue.name.clone(),
        section: label.section,
        row: label.row,
        seat: label.seat,
        qr_code: png,
        qr_payload: payload,
        barcode: t.barcode.clone(),
        status: t.status.name().to_string(),
        transferable: t.status == TicketStatus::Active
            && chrono::Utc::now().timestamp_millis() < event.date_ms,
        download_url: format!("/v1/tickets/{}/download", t.ticket_id),
    })
}

/// Pixels per QR module, and the quiet zone in modules.
const SCALE: usize = 4;
const QUIET: usize = 4;

/// `data` as a QR code in a grayscale PNG.
pub fn qr_png(data: &str) -> Result<Vec<u8>, ApiError> {
    let code = qrcode::QrCode::with_error_correction_level(data, qrcode::EcLevel::M)
        .map_err(|e| ApiError::internal(format!("QR code: {e}")))?;
    let modules = code.width();
    let colors = code.to_colors();
    let side = (modules + 2 * QUIET) * SCALE;
    let mut pixels = vec![255u8; side * side];
    for y in 0..modules {
        for x in 0..modules {
            if colors[y * modules + x] == qrcode::Color::Dark {
                for dy in 0..SCALE {
                    let row = ((y + QUIET) * SCALE + dy) * side;
                    let from = row + (x + QUIET) * SCALE;
                    pixels[from..from + SCALE].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, side as u32, side as u32);
    enc.set_color(png::ColorType::Grayscale);
    enc.set_depth(png::BitDepth::Eight);
    let mut w = enc.write_header().map_err(ApiError::internal)?;
    w.write_image_data(&pixels).map_err(ApiError::internal)?;
    w.finish().map_err(ApiError::internal)?;
    Ok(out)
}

/// The event of an id inside one (404 if it cannot be one of `kind`).
pub async fn event_of(
    ctx: &AppState,
    id: &Uuid,
    kind: Kind,
    what: &str,
) -> Result<std::sync::Arc<EventInfo>, ApiError> {
    let missing = || ApiError::not_found(format!("{what} {id} not found"));
    if ids::kind(id) != Some(kind) {
        return Err(missing());
    }
    let prefix = ids::prefix(id);
    let event_id = ctx
        .catalog_lookup(|c| c.event_by_prefix(&prefix).map(|e| e.spec.event_id))
        .await?
        .ok_or_else(missing)?;
    ctx.event_info(&event_id).await
}

/// `GET /v1/tickets` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TicketsQuery {
    /// The order whose tickets to list (required).
    order_id: Option<Uuid>,
}

/// `GET /v1/tickets` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct TicketList {
    pub tickets: Vec<TicketBody>,
}

/// `GET /v1/tickets?order_id=`: the caller's tickets of an order (the buyer's,
/// or those transferred to the caller), read through the event group's leader.
#[utoipa::path(get, path = "/v1/tickets", tag = "tickets", operation_id = "listTickets",
    security(("bearer" = [])),
    params(TicketsQuery),
    responses(
        (status = 200, description = "The order's tickets", body = TicketList),
        (status = 400, description = "No order_id given", body = ErrorBody),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Another user's order (FORBIDDEN)", body = ErrorBody),
        (status = 404, description = "No such order", body = ErrorBody),
    ))]
pub async fn list(
    State(ctx): State<AppState>,
    Shopper { user, .. }: Shopper,
    Query(q): Query<TicketsQuery>,
) -> Result<impl IntoResponse, ApiError> {
    let Some(order_id) = q.order_id else {
        return Err(ApiError::bad_request(
            "give order_id: tickets are listed per order",
        ));
    };
    let (info, view) = super::orders::read_order(&ctx, &order_id).await?;
    // The buyer, or someone a ticket of the order was transferred to, sees the
    // tickets they hold.
    let held: Vec<_> = view
        .tickets
        .iter()
        .filter(|t| t.holder == user.user_id)
        .collect();
    if view.order.user_id != user.user_id && held.is_empty() {
        return Err(super::orders::not_yours());
    }
    let tickets = held
        .into_iter()
        .map(|t| ticket_body(&ctx, &info, t))
        .collect::<Result<_, _>>()?;
    Ok(axum::Json(TicketList { tickets }))
}

/// `GET /v1/tickets/{ticket_id}/download`: the ticket's QR code as a PNG.
#[utoipa::path(get, path = "/v1/tickets/{ticket_id}/download", tag = "tickets", operation_id = "downloadTicket",
    security(("bearer" = [])),
    params(("ticket_id" = Uuid, Path, description = "The ticket")),
    responses(
        (status = 200, description = "The ticket's QR code", content_type = "image/png", body = Vec<u8>),
        (status = 401, description = "Missing or invalid token", body = ErrorBody),
        (status = 403, description = "Another user's ticket (FORBIDDEN)", body = ErrorBody),
        (status = 404, description = "No such ticket", body = ErrorBody),
        (status = 410, description = "The ticket is void or was transferred (TICKET_VOID)", body = ErrorBody),
    ))]
pub async fn download(
    State(ctx): State<AppState>,
    Shopper { user, .. }: Shopper,
    Path(id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let info = event_of(&ctx, &id, Kind::Ticket, "ticket").await?;
    let read = ctx
        .read_inventory(&info, InventoryQuery::Ticket { ticket_id: id }, true)
        .await?;
    let InventoryAnswer::Ticket(Some(t)) = read.answer else {
        return Err(ApiError::not_found(format!("ticket {id} not found")));
    };
    if t.holder != user.user_id {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "this ticket belongs to another user",
        ));
    }
    if !passable(&t) {
        return Err(refusal(
            crate::domain::inventory::InventoryRejection::TicketVoid,
        ));
    }
    let png = qr_png(&ticket_pass(&ctx, &info, &t)?.0)?;
    Ok((
        [
            (header::CONTENT_TYPE, "image/png".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"ticket-{id}.png\""),
            ),
        ],
        png,
    ))
}

/// `POST /v1/tickets/scan` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScanBody {
    barcode: String,
    event_id: Uuid,
}

/// `POST /v1/tickets/scan` answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct Scanned {
    pub ticket_id: Uuid,
    /// `ADMITTED`.
    pub status: String,
    pub section: String,
    pub row: String,
    pub seat: String,
    pub scanned_at: Option<DateTime<Utc>>,
}

/// `POST /v1/tickets/scan`: a gate (admin key) admits a ticket by its barcode,
/// once.
#[utoipa::path(post, path = "/v1/tickets/scan", tag = "tickets", operation_id = "scanTicket",
    security(("admin_key" = [])),
    request_body = ScanBody,
    responses(
        (status = 200, description = "Admitted", body = Scanned),
        (status = 401, description = "Missing or wrong X-Admin-Key", body = ErrorBody),
        (status = 404, description = "Unknown event or barcode (UNKNOWN_BARCODE)", body = ErrorBody),
        (status = 409, description = "Scanned before (ALREADY_SCANNED, with scanned_at)", body = ErrorBody),
        (status = 410, description = "The ticket is void (TICKET_VOID)", body = ErrorBody),
    ))]
pub async fn scan(
    State(ctx): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    Json(body): Json<ScanBody>,
) -> Result<impl IntoResponse, ApiError> {
    let info = ctx.event_info(&body.event_id).await?;
    if body.barcode.len() != 12 || !body.barcode.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refusal(
            crate::domain::inventory::InventoryRejection::UnknownBarcode,
        ));
    }
    let event_id = body.event_id;
    // The key is scoped to the barcode: a key reused for another ticket is
    // another request.
    let request_id = request_id_for(
        &headers,
        &format!("tickets.scan.{event_id}.{}", body.barcode),
    )?;
    let barcode = body.barcode;
    let outcome = ctx
        .propose_to_event(&info, request_id, false, |request_id| Proposal {
            request_id,
            body: CommandBody::Inventory(InventoryCommand::TicketScan {
                event_id,
                barcode: barcode.clone(),
            }),
        })
        .await?;
    match outcome {
        InventoryResponse::Scanned(t) => {
            metrics::counter!("boxoffice_tickets_scanned_total").increment(1);
            let label = SeatLabel::of(&info.layout, t.seat);
            Ok(axum::Json(Scanned {
                ticket_id: t.ticket_id,
                status: t.status.name().to_string(),
                section: label.section,
                row: label.row,
                seat: label.seat,
                scanned_at: time(t.scanned_ms),
            }))
        }
        InventoryResponse::Rejected(r) => Err(refusal(r)),
        other => Err(ApiError::internal(format!(
            "unexpected inventory response {other:?}"
        ))),
    }
}
