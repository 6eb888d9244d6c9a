//! `/v1/openapi.json`: the OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` annotations and their types. The responses every route shares
//! (malformed input, API key, rate limit, overload, internal error) and the
//! `X-Request-ID` header are added here once, so each handler documents only its
//! own outcomes. `api::tests` fails when a routed method and path is missing here.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::Operation;
use utoipa::openapi::response::{Response, ResponseBuilder};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{Content, OpenApi as Document, Ref, RefOr};
use utoipa::{Modify, OpenApi};

use super::{
    admin, apikeys, auth, event_reads, events, node, orders, payments, queue, reservations,
    tickets, transfers, venues,
};

/// The API's description; `Shared` completes it.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Boxoffice",
        description = "A Raft-replicated ticketing cluster. Every node serves this API and routes each request to the right group's leader.",
    ),
    paths(
        node::health,
        node::metrics,
        document,
        admin::cluster,
        admin::create_venue,
        apikeys::create,
        events::create,
        events::patch,
        events::get,
        auth::register,
        auth::login,
        auth::me,
        venues::list,
        venues::get,
        event_reads::search,
        event_reads::details,
        event_reads::seat_map,
        reservations::reserve,
        reservations::get,
        reservations::release,
        queue::join,
        queue::status,
        queue::leave,
        payments::add,
        payments::list,
        payments::remove,
        orders::create,
        orders::get,
        orders::cancel,
        tickets::list,
        tickets::download,
        tickets::scan,
        transfers::offer,
        transfers::accept,
        transfers::withdraw,
        crate::realtime::ws::connect,
    ),
    modifiers(&Shared),
    tags(
        (name = "node", description = "Health and metrics of the node asked"),
        (name = "accounts", description = "Registration, login and the caller's account"),
        (name = "venues", description = "Venues, read from the local catalog replica"),
        (name = "events", description = "Search, event details and seat maps"),
        (name = "reservations", description = "Seat holds"),
        (name = "queue", description = "The waiting room of an event whose queue is on"),
        (name = "payments", description = "The caller's payment methods"),
        (name = "orders", description = "Orders: paying for a hold, cancelling"),
        (name = "tickets", description = "Tickets, their QR codes, and gate scans"),
        (name = "realtime", description = "Live updates over a WebSocket"),
        (name = "admin", description = "Operator endpoints (X-Admin-Key)"),
    ),
)]
pub struct ApiDoc;

/// The document, built once.
pub fn document_json() -> &'static str {
    static DOC: OnceLock<String> = OnceLock::new();
    DOC.get_or_init(|| {
        let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
        camel_case_links(&mut doc);
        serde_json::to_string_pretty(&doc)
            .unwrap_or_else(|e| format!("{{\"error\":\"openapi: {e}\"}}"))
    })
}

/// utoipa 5 writes a Link's `operationId` and `requestBody` in snake case; OpenAPI
/// spells them in camel case.
fn camel_case_links(doc: &mut serde_json::Value) {
    let Some(paths) = doc.get_mut("paths").and_then(|p| p.as_object_mut()) else {
        return;
    };
    let links = paths
        .values_mut()
        .filter_map(|item| item.as_object_mut())
        .flat_map(|item| item.values_mut())
        .filter_map(|op| op.get_mut("responses").and_then(|r| r.as_object_mut()))
        .flat_map(|responses| responses.values_mut())
        .filter_map(|r| r.get_mut("links").and_then(|l| l.as_object_mut()))
        .flat_map(|links| links.values_mut())
        .filter_map(|link| link.as_object_mut());
    for link in links {
        for (from, to) in [
            ("operation_id", "operationId"),
            ("request_body", "requestBody"),
        ] {
            if let Some(v) = link.remove(from) {
                link.insert(to.to_string(), v);
            }
        }
    }
}

/// `GET /v1/openapi.json`.
#[utoipa::path(get, path = "/v1/openapi.json", operation_id = "openapi", tag = "node",
    responses((status = 200, description = "This document (OpenAPI 3.1)", body = Object)))]
pub async fn document() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json(),
    )
}

/// Adds what every route shares: security schemes, the error responses of the
/// middleware and extractors, and `X-Request-ID` on every response.
struct Shared;

fn error_response(description: &str, retry_after: bool) -> Response {
    let mut r = ResponseBuilder::new().description(description).content(
        "application/json",
        Content::new(Some(Ref::from_schema_name("ErrorBody"))),
    );
    if retry_after {
        r = r.header(
            "Retry-After",
            HeaderBuilder::new()
                .schema(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                )
                .description(Some("Seconds to wait before retrying"))
                .build(),
        );
    }
    r.build()
}

fn request_id_header() -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(
            "The request's id (the caller's, if it sent a valid one)",
        ))
        .build()
}

impl Shared {
    /// Shared error responses, by status, with the condition they apply under.
    fn add_errors(op: &mut Operation, has_params: bool) {
        let has_body = op.request_body.is_some();
        let shared: [(&str, &str, bool, bool); 9] = [
            (
                "400",
                "Malformed request: JSON, path, query or Idempotency-Key (VALIDATION_FAILED)",
                true,
                false,
            ),
            (
                "401",
                "Invalid X-API-Key, or a key is required (INVALID_API_KEY, API_KEY_REQUIRED)",
                true,
                false,
            ),
            ("404", "No such resource (NOT_FOUND)", has_params, false),
            ("413", "Body too large (PAYLOAD_TOO_LARGE)", has_body, false),
            (
                "415",
                "Body is not JSON (UNSUPPORTED_MEDIA_TYPE)",
                has_body,
                false,
            ),
            (
                "422",
                "Well-formed but invalid input (VALIDATION_FAILED)",
                has_body,
                false,
            ),
            (
                "429",
                "Rate limit reached (RATE_LIMITED); see X-RateLimit-* headers",
                true,
                true,
            ),
            (
                "500",
                "A server fault (INTERNAL); quote the request id",
                true,
                false,
            ),
            (
                "503",
                "Overloaded or no leader reachable yet (OVERLOADED, NO_LEADER, INSUFFICIENT_NODES)",
                true,
                true,
            ),
        ];
        for (status, description, applies, retry_after) in shared {
            if applies && !op.responses.responses.contains_key(status) {
                op.responses.responses.insert(
                    status.to_string(),
                    RefOr::T(error_response(description, retry_after)),
                );
            }
        }
    }

    /// Every response carries `X-Request-ID`.
    fn add_request_id(op: &mut Operation) {
        for r in op.responses.responses.values_mut() {
            if let RefOr::T(r) = r {
                r.headers
                    .insert("X-Request-ID".to_string(), request_id_header());
            }
        }
    }
}

/// OpenAPI links, so a fuzzer (and a reader) can follow an id from the response
/// that creates it to the operations that take it: (operation, status, link name,
/// target operation id, parameter, where the value is in the response).
const LINKS: &[(&str, &str, &str, &str, &str, &str)] = &[
    (
        "createVenue",
        "201",
        "GetVenue",
        "getVenue",
        "venue_id",
        "$response.body#/venue_id",
    ),
    (
        "createEvent",
        "201",
        "GetEvent",
        "adminGetEvent",
        "event_id",
        "$response.body#/event_id",
    ),
    (
        "createEvent",
        "201",
        "SetEventStatus",
        "setEventStatus",
        "event_id",
        "$response.body#/event_id",
    ),
];

fn add_links(op: &mut Operation) {
    let Some(id) = op.operation_id.clone() else {
        return;
    };
    for (from, status, name, to, param, value) in LINKS {
        if *from != id {
            continue;
        }
        if let Some(RefOr::T(r)) = op.responses.responses.get_mut(*status) {
            r.links.insert(
                name.to_string(),
                RefOr::T(
                    LinkBuilder::new()
                        .operation_id(*to)
                        .parameter(*param, *value)
                        .build(),
                ),
            );
        }
    }
}

impl Modify for Shared {
    fn modify(&self, doc: &mut Document) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
        components.add_security_scheme(
            "admin_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Admin-Key"))),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))),
        );
        for (path, item) in doc.paths.paths.iter_mut() {
            let v1 = path.starts_with("/v1/");
            let has_params = path.contains('{');
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.patch,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            {
                if v1 {
                    Self::add_errors(op, has_params);
                }
                Self::add_request_id(op);
                add_links(op);
            }
        }
    }
}

/// Every (method, path) the document describes, upper-case methods.
pub fn operations() -> Vec<(String, String)> {
    let doc = ApiDoc::openapi();
    let mut out = Vec::new();
    for (path, item) in &doc.paths.paths {
        for (method, op) in [
            ("GET", &item.get),
            ("POST", &item.post),
            ("PUT", &item.put),
            ("PATCH", &item.patch),
            ("DELETE", &item.delete),
        ] {
            if op.is_some() {
                out.push((method.to_string(), path.clone()));
            }
        }
    }
    out
}
