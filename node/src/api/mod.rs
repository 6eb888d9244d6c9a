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
        state.config.api.min_in_flight,
        max_in_flight,
        Duration::from_millis(state.config.api.target_latency_ms),
    );
    // The public API: bounded in-flight work (shed at once when full), API keys,
    // then rate limits, in one middleware ([`gate`]): axum wraps every route in each
    // layer and clones the stack per request. `/health` and `/metrics` stay
    // outside, so an overloaded node still reports on itself.
    let gate_state = Gate {
        admission,
        ctx: state.clone(),
    };
    let v1 = v1_routes()
        .0
        .route_layer(middleware::from_fn_with_state(gate_state, gate));
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

/// What the gate of the public API holds: one admission state for every route.
#[derive(Clone)]
struct Gate {
    admission: Arc<admission::Admission>,
    ctx: AppState,
}

/// What every `/v1` request passes, in order, before its handler: admission (at the
/// node's adaptive limit ([`admission`]) it is refused at once with 503
/// `OVERLOADED` and `Retry-After`, never queued), its API key ([`apikeys`]), then
/// the rate limits ([`ratelimit`]), whose headers go on the response.
async fn gate(State(gate): State<Gate>, mut req: Request, next: Next) -> Response {
    let Some(ticket) = gate.admission.try_admit(priority(&req)) else {
        hot_counter!("boxoffice_http_shed_total").increment(1);
        return ApiError::unavailable("OVERLOADED", "the node is at capacity; retry shortly", 1)
            .into_response();
    };
    let route = req.extensions().get::<MatchedPath>();
    if let Err(refused) = apikeys::check(&gate.ctx, req.headers(), route).await {
        return refused;
    }
    let verdict = match ratelimit::check(&gate.ctx, &mut req) {
        Ok(v) => v,
        Err(limited) => return limited.into_response(),
    };
    let mut resp = next.run(req).await;
    drop(ticket);
    ratelimit::finish(&mut resp, verdict);
    resp
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
    let method = method_label(req.method());
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED, |p| known_route(p.as_str()));
    // Read and logged; the queue uses them to cap entries per device.
    let (device, session, log_id) = if tracing::enabled!(tracing::Level::DEBUG) {
        (
            short_header(req.headers(), "x-device-id"),
            short_header(req.headers(), "x-session-id"),
            Some(id.clone()),
        )
    } else {
        (None, None, None)
    };
    let handles = RequestMetrics::get();
    handles.in_flight.increment(1.0);
    let header = HeaderValue::from_str(&id).ok();
    let mut resp = REQUEST_ID.scope(id, next.run(req)).await;
    handles.in_flight.decrement(1.0);
    if let Some(v) = header {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    let elapsed = started.elapsed().as_secs_f64();
    handles.record(method, route, resp.status(), elapsed);
    tracing::debug!(
        request_id = log_id.as_deref().unwrap_or(""),
        method,
        %route,
        status = resp.status().as_u16(),
        elapsed_ms = elapsed * 1e3,
        device_id = device.as_deref().unwrap_or(""),
        session_id = session.as_deref().unwrap_or(""),
        "request"
    );
    resp
}

const X_REQUEST_ID: axum::http::HeaderName = axum::http::HeaderName::from_static("x-request-id");

/// The method label: the standard methods by name, any other as `OTHER` (a label
/// per made-up method would let clients mint metric series).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The route label of requests no route matched.
const UNMATCHED: &str = "unmatched";

/// The routed path `path` as a `'static` label (routes are a fixed table, so a
/// label needs no allocation); [`UNMATCHED`] for anything else.
fn known_route(path: &str) -> &'static str {
    static ROUTES: std::sync::OnceLock<std::collections::HashSet<&'static str>> =
        std::sync::OnceLock::new();
    ROUTES
        .get_or_init(|| routed().into_iter().map(|(_, p)| p).collect())
        .get(path)
        .copied()
        .unwrap_or(UNMATCHED)
}

/// The request metrics' handles, kept per label set: looking a metric up in the
/// registry hashes its name and labels, and its labels were strings built per
/// request.
struct RequestMetrics {
    in_flight: metrics::Gauge,
    #[allow(clippy::type_complexity)]
    by_label: std::sync::Mutex<
        std::collections::HashMap<
            (&'static str, &'static str, u16),
            (metrics::Counter, metrics::Histogram),
        >,
    >,
}

impl RequestMetrics {
    fn get() -> &'static RequestMetrics {
        static M: std::sync::OnceLock<RequestMetrics> = std::sync::OnceLock::new();
        M.get_or_init(|| RequestMetrics {
            in_flight: metrics::gauge!("boxoffice_http_in_flight"),
            by_label: Default::default(),
        })
    }

    fn record(
        &self,
        method: &'static str,
        route: &'static str,
        status: axum::http::StatusCode,
        seconds: f64,
    ) {
        let key = (method, route, status.as_u16());
        let (count, latency) = {
            let mut by_label = self.by_label.lock().unwrap_or_else(|p| p.into_inner());
            by_label
                .entry(key)
                .or_insert_with(|| {
                    let labels = [
                        ("method", method.to_string()),
                        ("route", route.to_string()),
                        ("status", status.as_u16().to_string()),
                    ];
                    (
                        metrics::counter!("boxoffice_http_requests_total", &labels),
                        metrics::histogram!(
                            "boxoffice_http_request_duration_seconds",
                            &labels[..2]
                        ),
                    )
                })
                .clone()
        };
        count.increment(1);
        latency.record(seconds);
    }
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
