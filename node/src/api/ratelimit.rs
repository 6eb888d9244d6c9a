//! Rate limits per the spec's table, with governor's GCRA: a limit of N requests per
//! window allows a burst of N and refills one every window/N. The client is its user
//! (a valid session token), else its API key, else its address. Every limited
//! response carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`; a refused one is
//! 429 `RATE_LIMITED` with `Retry-After`. Each node limits on its own (see
//! docs/design.md for what that means over N nodes).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::state::keyed::DefaultKeyedStateStore;
use governor::{Quota, RateLimiter};

use super::{ApiError, AppState};
use crate::config::{Limit, RateLimits};

/// What a request is limited as, besides the per-user hourly budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Search,
    EventDetails,
    SeatMap,
    Reserve,
    QueueStatus,
    Authenticated,
}

/// The category of a route of the spec's table (by method and route template).
pub fn category(method: &Method, route: &str) -> Option<Scope> {
    match (method, route) {
        (&Method::GET, "/v1/events/search") => Some(Scope::Search),
        (&Method::GET, "/v1/events/{event_id}") => Some(Scope::EventDetails),
        (&Method::GET, "/v1/events/{event_id}/seats") => Some(Scope::SeatMap),
        (&Method::POST, "/v1/seats/reserve") => Some(Scope::Reserve),
        (&Method::GET, "/v1/queue/status") => Some(Scope::QueueStatus),
        _ => None,
    }
}

type Keyed =
    RateLimiter<String, DefaultKeyedStateStore<String>, DefaultClock, StateInformationMiddleware>;

/// The node's limiters, one per scope.
pub struct Limiters {
    limiters: HashMap<Scope, (Limit, Keyed)>,
    clock: DefaultClock,
}

/// The headers of one check.
struct Verdict {
    limit: u32,
    remaining: u32,
    reset_unix: u64,
    retry_after: Option<u64>,
}

impl Limiters {
    pub fn new(cfg: &RateLimits) -> Arc<Self> {
        let make = |l: Limit| {
            let requests = NonZeroU32::new(l.requests).unwrap_or(NonZeroU32::MIN);
            let period = Duration::from_secs(l.window_seconds) / requests.get();
            let quota = Quota::with_period(period.max(Duration::from_nanos(1)))
                .unwrap_or_else(|| Quota::per_second(requests))
                .allow_burst(requests);
            (
                l,
                RateLimiter::keyed(quota).with_middleware::<StateInformationMiddleware>(),
            )
        };
        let limiters = [
            (Scope::Search, cfg.search),
            (Scope::EventDetails, cfg.event_details),
            (Scope::SeatMap, cfg.seat_map),
            (Scope::Reserve, cfg.reserve),
            (Scope::QueueStatus, cfg.queue_status),
            (Scope::Authenticated, cfg.authenticated),
        ]
        .into_iter()
        .map(|(s, l)| (s, make(l)))
        .collect();
        Arc::new(Self {
            limiters,
            clock: DefaultClock::default(),
        })
    }

    fn check(&self, scope: Scope, key: &str) -> Option<Verdict> {
        let (limit, limiter) = self.limiters.get(&scope)?;
        let per_request = limit.window_seconds as f64 / f64::from(limit.requests);
        let now_unix = chrono::Utc::now().timestamp() as f64;
        Some(match limiter.check_key(&key.to_string()) {
            Ok(snapshot) => {
                let remaining = snapshot.remaining_burst_capacity();
                let refill =
                    f64::from(limit.requests - remaining.min(limit.requests)) * per_request;
                Verdict {
                    limit: limit.requests,
                    remaining,
                    reset_unix: (now_unix + refill).ceil() as u64,
                    retry_after: None,
                }
            }
            Err(not_until) => {
                let wait = not_until.wait_time_from(self.clock.now()).as_secs_f64();
                Verdict {
                    limit: limit.requests,
                    remaining: 0,
                    reset_unix: (now_unix + f64::from(limit.requests) * per_request).ceil() as u64,
                    retry_after: Some(wait.ceil().max(1.0) as u64),
                }
            }
        })
    }

    /// Forgets clients whose buckets are full again (bounds memory).
    pub fn shrink(&self) {
        for (_, limiter) in self.limiters.values() {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

fn set_headers(headers: &mut HeaderMap, v: &Verdict) {
    headers.insert("x-ratelimit-limit", HeaderValue::from(v.limit));
    headers.insert("x-ratelimit-remaining", HeaderValue::from(v.remaining));
    headers.insert("x-ratelimit-reset", HeaderValue::from(v.reset_unix));
}

/// Who is asking: the user of a valid session token, else the API key, else the
/// address. Returns the key and whether the request is authenticated.
fn client_key(
    headers: &HeaderMap,
    claims: Option<&super::tokens::Claims>,
    addr: Option<SocketAddr>,
) -> (String, bool) {
    if let Some(claims) = claims {
        return (format!("user:{}", claims.sub), true);
    }
    if let Some(key) = headers.get("x-api-key").and_then(|k| k.to_str().ok()) {
        return (format!("key:{key}"), false);
    }
    (
        format!(
            "ip:{}",
            addr.map(|a| a.ip().to_string()).unwrap_or_default()
        ),
        false,
    )
}

/// The middleware: checks the route's category and, for authenticated requests, the
/// user's overall budget; the tighter one's headers go on the response.
pub async fn limit(State(ctx): State<AppState>, mut req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_string());
    let addr = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    // Verify a bearer token once here; the handler's `AuthUser` reuses the claims.
    // Any valid token keys its user (a queue status poll carries its token in the
    // query); only a session token's claims go on to the handlers.
    // The same precedence as the status handler: `?queue_token=` first.
    let token = req
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("queue_token=")))
        .or_else(|| super::tokens::bearer(req.headers()));
    let claims =
        token.and_then(|t| super::tokens::verify(&ctx, t, &["session", "queue", "access"]).ok());
    let (key, authenticated) = client_key(req.headers(), claims.as_ref(), addr);
    if let Some(c) = claims.filter(|c| c.typ == "session") {
        req.extensions_mut().insert(c);
    }
    let mut scopes = Vec::new();
    if let Some(s) = route.as_deref().and_then(|r| category(req.method(), r)) {
        scopes.push(s);
    }
    if authenticated {
        scopes.push(Scope::Authenticated);
    }
    let mut shown: Option<Verdict> = None;
    for scope in scopes {
        let Some(v) = ctx.limiters.check(scope, &key) else {
            continue;
        };
        if let Some(secs) = v.retry_after {
            let mut e = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "rate limit exceeded; retry later",
            );
            e.retry_after = Some(secs);
            let mut resp = e
                .with_details(serde_json::json!({ "limit": v.limit, "retry_after_seconds": secs }))
                .into_response();
            set_headers(resp.headers_mut(), &v);
            return resp;
        }
        if shown.as_ref().is_none_or(|s| v.remaining < s.remaining) {
            shown = Some(v);
        }
    }
    let mut resp = next.run(req).await;
    if let Some(v) = shown {
        set_headers(resp.headers_mut(), &v);
    }
    resp
}
