//! The REST API (axum): routes, the request-id and metrics middleware, extractors
//! that turn every rejection into the spec's error format, and the node endpoints.
//!
//! One file per resource: [`auth`] (accounts), [`tokens`] (session JWTs),
//! [`admin`] (operators: venues, cluster), [`events`]
//! (operators: events), [`venues`] (catalog reads), [`event_reads`] (search, event
//! details, seat maps), [`reservations`] (seat holds), [`queue`] (the waiting
//! room), [`payments`] (payment methods), [`orders`] (orders), [`tickets`]
//! (tickets and gate scans), [`transfers`] (ticket transfers), [`openapi`] (the
//! document),
//! [`node`] (health and metrics).

mod admin;
pub mod admission;
mod apikeys;
mod auth;
mod error;
mod event_reads;
mod events;
mod extract;
mod node;
pub mod openapi;
mod orders;
mod payments;
mod queue;
mod ratelimit;
mod reservations;
mod tickets;
pub mod tokens;
mod transfers;
mod venues;

pub use error::{current_request_id, now_rfc3339, ApiError, ErrorBody, REQUEST_ID};
pub use extract::Query;
pub use ratelimit::Limiters;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::server::NodeCtx;

/// Shared state of every handler.
pub type AppState = Arc<NodeCtx>;

/// A (method, path) the node routes; the method in lower case.
pub type Route = (&'static str, &'static str);

/// Builds a router from `method "path" => handler` lines and lists what it routes,
/// so the router and the OpenAPI completeness test share one table.
macro_rules! table {
    ($($method:ident $path:literal => $handler:path),* $(,)?) => {
        (
            Router::new()$(.route($path, axum::routing::$method($handler)))*,
            vec![$((stringify!($method), $path)),*],
        )
    };
}

/// The node's own endpoints, outside the limits so an overloaded node still reports.
fn node_routes() -> (Router<AppState>, Vec<Route>) {
    table! {
        get "/health" => node::health,
        get "/metrics" => node::metrics,
    }
}

/// The public API. Add routes only here; `openapi::ApiDoc` must list each.
fn v1_routes() -> (Router<AppState>, Vec<Route>) {
    table! {
        get "/v1/openapi.json" => openapi::document,
        get "/v1/admin/cluster" => admin::cluster,
        post "/v1/admin/api-keys" => apikeys::create,
        post "/v1/admin/venues" => admin::create_venue,
        post "/v1/admin/events" => events::create,
        patch "/v1/admin/events/{event_id}" => events::patch,
        get "/v1/admin/events/{event_id}" => events::get,
        post "/v1/auth/register" => auth::register,
        post "/v1/auth/login" => auth::login,
        get "/v1/me" => auth::me,
        get "/v1/venues" => venues::list,
        get "/v1/venues/{venue_id}" => venues::get,
        get "/v1/events/search" => event_reads::search,
        get "/v1/events/{event_id}" => event_reads::details,
        get "/v1/events/{event_id}/seats" => event_reads::seat_map,
        post "/v1/seats/reserve" => reservations::reserve,
        get "/v1/reservations/{reservation_id}" => reservations::get,
        delete "/v1/reservations/{reservation_id}" => reservations::release,
        post "/v1/queue/join" => queue::join,
        get "/v1/queue/status" => queue::status,
        delete "/v1/queue/leave" => queue::leave,
        post "/v1/payment-methods" => payments::add,
        get "/v1/payment-methods" => payments::list,
        delete "/v1/payment-methods/{payment_method_id}" => payments::remove,
        post "/v1/orders" => orders::create,
        get "/v1/orders/{order_id}" => orders::get,
        post "/v1/orders/{order_id}/cancel" => orders::cancel,
        get "/v1/tickets" => tickets::list,
        get "/v1/tickets/{ticket_id}/download" => tickets::download,
        post "/v1/tickets/scan" => tickets::scan,
        post "/v1/tickets/{ticket_id}/transfer" => transfers::offer,
        post "/v1/transfers/{transfer_id}/accept" => transfers::accept,
        delete "/v1/transfers/{transfer_id}" => transfers::withdraw,
        get "/v1/realtime" => crate::realtime::ws::connect,
    }
}

/// Every (method, path) the node routes.
pub fn routed() -> Vec<Route> {
    let mut all = node_routes().1;
    all.extend(v1_routes().1);
    all
}

/// The node's HTTP application.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.api.max_body_bytes;
    let max_in_flight = state.config.api.max_in_flight;
    let admission = admission::Admission::new(
        max_in_flight,
        Duration::from_millis(state.config.api.target_latency_ms),
    );
    // The public API: bounded in-flight work (shed at once when full), then rate
    // limits. `/health` and `/metrics` stay outside both, so an overloaded node
    // still reports on itself.
    let v1 = v1_routes()
        .0
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            apikeys::check,
        ))
        // One admission state shared by every route (axum layers each route).
        .route_layer(middleware::from_fn_with_state(admission, admit));
    node_routes()
        .0
        .merge(v1)
        .fallback(unknown_route)
        .method_not_allowed_fallback(wrong_method)
        .layer(DefaultBodyLimit::max(max_body))
        .layer(CatchPanicLayer::custom(
            |_panic: Box<dyn std::any::Any + Send>| {
                ApiError::internal("handler panicked").into_response()
            },
        ))
        .layer(middleware::from_fn(observe))
        .with_state(state)
}

/// Admits a `/v1` request, or refuses it at once when the node is at its adaptive
/// limit ([`admission`]): 503 `OVERLOADED` with `Retry-After`, never a queue.
async fn admit(
    State(admission): State<std::sync::Arc<admission::Admission>>,
    req: axum::extract::Request,
    next: middleware::Next,
) -> axum::response::Response {
    match admission.try_admit(priority(&req)) {
        Some(ticket) => {
            let response = next.run(req).await;
            drop(ticket);
            response
        }
        None => {
            metrics::counter!("boxoffice_http_shed_total").increment(1);
            ApiError::unavailable("OVERLOADED", "the node is at capacity; retry shortly", 1)
                .into_response()
        }
    }
}

/// Releases, orders and cancellations finish what a fan started; under overload
/// they are refused after new holds and joins ([`admission::Priority`]).
fn priority(req: &Request) -> admission::Priority {
    let finishing = req.method() == Method::DELETE
        || (req.method() == Method::POST
            && req
                .extensions()
                .get::<MatchedPath>()
                .is_some_and(|p| p.as_str().starts_with("/v1/orders")));
    if finishing {
        admission::Priority::Finish
    } else {
        admission::Priority::Start
    }
}

async fn unknown_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "METHOD_NOT_ALLOWED",
        format!("{method} is not allowed on {}", uri.path()),
    )
}

/// Accepts a caller's `X-Request-ID` if it is a short token, else makes one.
fn request_id(req: &Request) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// A header's value, cut to 128 characters, for logs.
fn short_header(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(128).collect())
}

/// Outermost middleware: request id (task-local for error bodies, `X-Request-ID` on
/// every response), request counts and latencies per route, and a log line.
async fn observe(req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = request_id(&req);
    let method = req.method().clone();
    // Read and logged; the queue uses them to cap entries per device.
    let (device, session) = (
        short_header(req.headers(), "x-device-id"),
        short_header(req.headers(), "x-session-id"),
    );
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "unmatched".to_string());
    let in_flight = metrics::gauge!("boxoffice_http_in_flight");
    in_flight.increment(1.0);
    let mut resp = REQUEST_ID.scope(id.clone(), next.run(req)).await;
    in_flight.decrement(1.0);
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert("x-request-id", v);
    }
    let status = resp.status().as_u16().to_string();
    let elapsed = started.elapsed().as_secs_f64();
    let labels = [
        ("method", method.to_string()),
        ("route", route.clone()),
        ("status", status),
    ];
    metrics::counter!("boxoffice_http_requests_total", &labels).increment(1);
    metrics::histogram!("boxoffice_http_request_duration_seconds", &labels[..2]).record(elapsed);
    tracing::debug!(
        request_id = %id,
        %method,
        %route,
        status = resp.status().as_u16(),
        elapsed_ms = elapsed * 1e3,
        device_id = device.as_deref().unwrap_or(""),
        session_id = session.as_deref().unwrap_or(""),
        "request"
    );
    resp
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    #[test]
    fn every_routed_method_and_path_is_in_the_openapi_document_and_nothing_else() {
        let routed: BTreeSet<(String, String)> = super::routed()
            .into_iter()
            .map(|(m, p)| (m.to_uppercase(), p.to_string()))
            .collect();
        let documented: BTreeSet<(String, String)> =
            super::openapi::operations().into_iter().collect();
        let undocumented: Vec<_> = routed.difference(&documented).collect();
        let unrouted: Vec<_> = documented.difference(&routed).collect();
        assert!(
            undocumented.is_empty(),
            "routed but missing from /v1/openapi.json: {undocumented:?}"
        );
        assert!(
            unrouted.is_empty(),
            "documented but not routed: {unrouted:?}"
        );
    }

    #[test]
    fn the_document_is_openapi_3_1_with_error_schemas() {
        let doc: serde_json::Value =
            serde_json::from_str(super::openapi::document_json()).expect("valid JSON");
        assert!(doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")));
        assert!(doc["components"]["schemas"]["ErrorBody"].is_object());
        let register = &doc["paths"]["/v1/auth/register"]["post"]["responses"];
        for status in ["201", "400", "409", "422", "429", "503"] {
            assert!(register[status].is_object(), "register lacks {status}");
        }
    }
}
