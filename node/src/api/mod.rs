//! The REST API (axum): routes, the request-id and metrics middleware, extractors
//! that turn every rejection into the spec's error format, and the node endpoints.
//!
//! One file per resource: [`auth`] (accounts), [`tokens`] (session JWTs),
//! [`admin`] (operators: venues, cluster), [`events`]
//! (operators: events), [`venues`] (catalog reads), [`node`] (health and metrics).

mod admin;
mod apikeys;
mod auth;
mod error;
mod events;
mod extract;
mod node;
mod ratelimit;
pub mod tokens;
mod venues;

pub use error::{current_request_id, now_rfc3339, ApiError, REQUEST_ID};
pub use ratelimit::Limiters;

use std::sync::Arc;
use std::time::Instant;

use axum::error_handling::HandleErrorLayer;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request};
use axum::http::{HeaderValue, Method, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, patch, post};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

use crate::server::NodeCtx;

/// Shared state of every handler.
pub type AppState = Arc<NodeCtx>;

/// The node's HTTP application.
pub fn router(state: AppState) -> Router {
    let max_body = state.config.api.max_body_bytes;
    let max_in_flight = state.config.api.max_in_flight;
    // The public API: bounded in-flight work (shed at once when full), then rate
    // limits. `/health` and `/metrics` stay outside both, so an overloaded node
    // still reports on itself.
    let v1 = Router::new()
        .route("/v1/admin/cluster", get(admin::cluster))
        .route("/v1/admin/api-keys", post(apikeys::create))
        .route("/v1/admin/venues", post(admin::create_venue))
        .route("/v1/admin/events", post(events::create))
        .route(
            "/v1/admin/events/{event_id}",
            patch(events::patch).get(events::get),
        )
        .route("/v1/auth/register", post(auth::register))
        .route("/v1/auth/login", post(auth::login))
        .route("/v1/me", get(auth::me))
        .route("/v1/venues", get(venues::list))
        .route("/v1/venues/{venue_id}", get(venues::get))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            ratelimit::limit,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            apikeys::check,
        ))
        .route_layer(
            tower::ServiceBuilder::new()
                .layer(HandleErrorLayer::new(overloaded))
                .layer(tower::load_shed::LoadShedLayer::new())
                // Global: one semaphore shared by every route (axum layers each route).
                .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
                    max_in_flight,
                )),
        );
    Router::new()
        .route("/health", get(node::health))
        .route("/metrics", get(node::metrics))
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

/// The node is at `api.max_in_flight`: refuse at once, don't queue.
async fn overloaded(err: tower::BoxError) -> ApiError {
    if err.is::<tower::load_shed::error::Overloaded>() {
        metrics::counter!("boxoffice_http_shed_total").increment(1);
        ApiError::unavailable("OVERLOADED", "the node is at capacity; retry shortly", 1)
    } else {
        ApiError::internal(err)
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
