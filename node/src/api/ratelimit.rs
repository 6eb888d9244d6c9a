//! Rate limits per the spec's table, with governor's GCRA: a limit of N requests per
//! window allows a burst of N and refills one every window/N. The client is its user
//! (a valid session token), else its API key, else its address. Every limited
//! response carries `X-RateLimit-Limit`, `-Remaining` and `-Reset`; a refused one is
//! 429 `RATE_LIMITED` with `Retry-After`. Each node limits on its own (see
//! docs/design.md for what that means over N nodes).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
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

/// Who a request counts against: the user of a valid token, else the API key, else
/// the address (keys, not formatted strings: nothing is allocated to find a user's
/// bucket).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum ClientKey {
    User(uuid::Uuid),
    ApiKey(Box<str>),
    Addr(Option<IpAddr>),
}

type Keyed = RateLimiter<
    ClientKey,
    DefaultKeyedStateStore<ClientKey>,
    DefaultClock,
    StateInformationMiddleware,
>;

/// The node's limiters, one per scope.
pub struct Limiters {
    limiters: HashMap<Scope, (Limit, Keyed)>,
    clock: DefaultClock,
}

/// The headers of one check.
pub struct Verdict {
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

    fn check(&self, scope: Scope, key: &ClientKey) -> Option<Verdict> {
        let (limit, limiter) = self.limiters.get(&scope)?;
        let per_request = limit.window_seconds as f64 / f64::from(limit.requests);
        let now_unix = chrono::Utc::now().timestamp() as f64;
        Some(match limiter.check_key(key) {
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

// Names built once: inserting a `&str` name that is not a standard header copies it.
const LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
const REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
const RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

fn set_headers(headers: &mut HeaderMap, v: &Verdict) {
    headers.insert(LIMIT, HeaderValue::from(v.limit));
    headers.insert(REMAINING, HeaderValue::from(v.remaining));
    headers.insert(RESET, HeaderValue::from(v.reset_unix));
}

/// Who is asking: the user of a valid session token, else the API key, else the
/// address. Returns the key and whether the request is authenticated.
fn client_key(
    headers: &HeaderMap,
    claims: Option<&super::tokens::Claims>,
    addr: Option<SocketAddr>,
) -> (ClientKey, bool) {
    if let Some(claims) = claims {
        return (ClientKey::User(claims.sub), true);
    }
    if let Some(key) = headers.get("x-api-key").and_then(|k| k.to_str().ok()) {
        return (ClientKey::ApiKey(key.into()), false);
    }
    (ClientKey::Addr(addr.map(|a| a.ip())), false)
}

/// Checks a request's route category and, for authenticated requests, the user's
/// overall budget (part of the API's gate, `api::gate`). `Err` is the limit that
/// refuses it (its 429 is [`Limited`]'s response); `Ok` carries the tighter
/// limit's headers for the response ([`finish`]).
pub fn check(ctx: &AppState, req: &mut Request) -> Result<Option<Verdict>, Limited> {
    let scope = req
        .extensions()
        .get::<MatchedPath>()
        .and_then(|r| category(req.method(), r.as_str()));
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
        token.and_then(|t| super::tokens::verify(ctx, t, &["session", "queue", "access"]).ok());
    let (key, authenticated) = client_key(req.headers(), claims.as_ref(), addr);
    if let Some(c) = claims.filter(|c| c.typ == "session") {
        req.extensions_mut().insert(c);
    }
    let budget = authenticated.then_some(Scope::Authenticated);
    let mut shown: Option<Verdict> = None;
    for scope in scope.into_iter().chain(budget) {
        let Some(v) = ctx.limiters.check(scope, &key) else {
            continue;
        };
        if v.retry_after.is_some() {
            return Err(Limited(v));
        }
        if shown.as_ref().is_none_or(|s| v.remaining < s.remaining) {
            shown = Some(v);
        }
    }
    Ok(shown)
}

/// A request over a limit: 429 `RATE_LIMITED` with `Retry-After` and the limit's
/// headers.
pub struct Limited(Verdict);

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let v = self.0;
        let secs = v.retry_after.unwrap_or(1);
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
        resp
    }
}

/// Puts the headers of the limit [`check`] found tightest on the response.
pub fn finish(resp: &mut Response, verdict: Option<Verdict>) {
    if let Some(v) = verdict {
        set_headers(resp.headers_mut(), &v);
    }
}
