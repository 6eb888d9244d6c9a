//! Session tokens: JWTs signed with the cluster's key (created once at bootstrap and
//! replicated in the catalog, so every node mints and verifies them). The algorithm
//! is pinned to HS256; `exp`, `iat`, `iss`, `aud` and `sub` are required and checked,
//! with no leeway. Queue tokens (`typ` "queue": a place in an event's waiting room)
//! and access tokens ("access": an admitted shopper of an event, until the end of
//! the access window) carry the event; a token is good only for what its `typ`
//! opens. Queue and access tokens are minted from the replicated entry (times
//! included), so any node mints the same token for the same entry.
//!
//! Each node remembers the tokens it verified ([`VerifiedTokens`]): a fan sends the
//! same token with every request, and verifying it (base64, JSON, HMAC) again each
//! time was about 4.5% of the machine in a hold race.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{ApiError, AppState};
use crate::domain::catalog::User;

/// The audience of every Boxoffice token.
pub const AUDIENCE: &str = "boxoffice";

/// What a token says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// The kind of token: `session`, `queue` or `access`.
    pub typ: String,
    /// The event of a queue or access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<Uuid>,
}

/// How long a queue token lasts after its join.
pub const QUEUE_TOKEN_TTL_SECONDS: i64 = 7 * 24 * 3600;

/// The issuer: the cluster's bootstrap id, so tokens of another cluster fail.
fn issuer(ctx: &crate::server::NodeCtx) -> Result<(String, Vec<u8>), ApiError> {
    ctx.with_catalog(|c| {
        c.cluster_uuid()
            .zip(c.token_key())
            .map(|(u, k)| (format!("boxoffice/{u}"), k.to_vec()))
    })
    .flatten()
    .ok_or_else(|| ApiError::unavailable("NO_LEADER", "the cluster is still bootstrapping", 1))
}

/// Mints a session token for `user`; returns it and its lifetime in seconds.
pub fn mint_session(ctx: &AppState, user: Uuid) -> Result<(String, u64), ApiError> {
    let (iss, key) = issuer(ctx)?;
    let ttl = ctx.config.api.session_ttl_seconds;
    let now = chrono::Utc::now().timestamp();
    let claims = Claims {
        sub: user,
        iss,
        aud: AUDIENCE.to_string(),
        iat: now,
        exp: now + ttl as i64,
        typ: "session".into(),
        event: None,
    };
    Ok((sign(&claims, &key)?, ttl))
}

fn sign(claims: &Claims, key: &[u8]) -> Result<String, ApiError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(key),
    )
    .map_err(ApiError::internal)
}

/// What a ticket's QR code carries: the ticket, its seat and its barcode, signed
/// with the cluster key so a gate can check it without asking the cluster.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TicketPass {
    /// The ticket's holder.
    pub sub: Uuid,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// `ticket`.
    pub typ: String,
    pub event: Uuid,
    /// The ticket id.
    pub tid: Uuid,
    pub barcode: String,
    /// Section, row and seat, as printed.
    pub seat: String,
}

/// Signs a ticket pass. Its times come from the ticket (issued) and the event
/// (a day after it starts), so every node signs the same pass for a ticket.
pub fn mint_ticket_pass(ctx: &AppState, mut pass: TicketPass) -> Result<String, ApiError> {
    let (iss, key) = issuer(ctx)?;
    pass.iss = iss;
    pass.aud = AUDIENCE.to_string();
    pass.typ = "ticket".into();
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &pass,
        &EncodingKey::from_secret(&key),
    )
    .map_err(ApiError::internal)
}

/// The queue token of `user`'s entry in `event`'s waiting room, joined at
/// `joined_ms`: the same token every time it is minted for that entry.
pub fn mint_queue(
    ctx: &AppState,
    user: Uuid,
    event: Uuid,
    joined_ms: i64,
) -> Result<String, ApiError> {
    let (iss, key) = issuer(ctx)?;
    let iat = joined_ms.div_euclid(1000);
    let claims = Claims {
        sub: user,
        iss,
        aud: AUDIENCE.to_string(),
        iat,
        exp: iat + QUEUE_TOKEN_TTL_SECONDS,
        typ: "queue".into(),
        event: Some(event),
    };
    sign(&claims, &key)
}

/// The access token of a shopper admitted to `event` whose window ends at `until_ms`.
pub fn mint_access(
    ctx: &crate::server::NodeCtx,
    user: Uuid,
    event: Uuid,
    admitted_ms: i64,
    until_ms: i64,
) -> Result<String, ApiError> {
    let (iss, key) = issuer(ctx)?;
    let claims = Claims {
        sub: user,
        iss,
        aud: AUDIENCE.to_string(),
        iat: admitted_ms.div_euclid(1000),
        exp: until_ms.div_euclid(1000),
        typ: "access".into(),
        event: Some(event),
    };
    sign(&claims, &key)
}

/// Verifies a session token: signature (HS256 only), expiry, issuer, audience.
pub fn verify_session(ctx: &AppState, token: &str) -> Result<Claims, ApiError> {
    verify(ctx, token, &["session"])
}

/// Tokens up to which [`VerifiedTokens`] holds; past it, it starts again empty.
const VERIFIED_TOKENS_MAX: usize = 16_384;

/// Tokens this node verified (signature, issuer, audience, required claims), with
/// their claims. None of that can change for a given token (the cluster's key and
/// id are fixed at bootstrap); its expiry is checked again on every use, and the
/// kind and issue time by [`verify`] as for a fresh token. Bounded: emptied when
/// full.
#[derive(Default)]
pub struct VerifiedTokens {
    map: Mutex<HashMap<Box<str>, Claims>>,
    /// The rules and key a new token is checked with, built once the catalog has
    /// them (fixed at bootstrap, like everything this cache relies on).
    verifier: OnceLock<(Validation, DecodingKey)>,
}

impl VerifiedTokens {
    /// The claims of `token` if this node verified it, refused once it expired at
    /// `now` (jsonwebtoken's rule with no leeway: expired once `exp` is past).
    fn lookup(&self, token: &str, now: i64) -> Option<Result<Claims, ApiError>> {
        let map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let claims = map.get(token)?;
        Some(if claims.exp < now {
            Err(ApiError::unauthorized("invalid token: ExpiredSignature"))
        } else {
            Ok(claims.clone())
        })
    }

    fn insert(&self, token: &str, claims: &Claims) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VERIFIED_TOKENS_MAX {
            map.clear();
        }
        map.insert(token.into(), claims.clone());
    }
}

/// Checks a token's signature, issuer, audience, required claims and expiry, with
/// no leeway; a token this node verified before is only checked for expiry.
fn verified_claims(ctx: &AppState, token: &str) -> Result<Claims, ApiError> {
    if let Some(known) = ctx
        .verified_tokens
        .lookup(token, chrono::Utc::now().timestamp())
    {
        return known;
    }
    let (v, key) = match ctx.verified_tokens.verifier.get() {
        Some(verifier) => verifier,
        None => {
            let (iss, key) = issuer(ctx)?;
            let mut v = Validation::new(Algorithm::HS256);
            v.leeway = 0;
            v.set_issuer(&[iss]);
            v.set_audience(&[AUDIENCE]);
            v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
            ctx.verified_tokens
                .verifier
                .get_or_init(|| (v, DecodingKey::from_secret(&key)))
        }
    };
    let data = jsonwebtoken::decode::<Claims>(token, key, v)
        .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
    ctx.verified_tokens.insert(token, &data.claims);
    Ok(data.claims)
}

/// Verifies a token of one of the kinds in `typ` (see [`verify_session`]); queue
/// and access tokens must name an event.
pub fn verify(ctx: &AppState, token: &str, typ: &[&str]) -> Result<Claims, ApiError> {
    let claims = verified_claims(ctx, token)?;
    if !typ.contains(&claims.typ.as_str()) {
        return Err(ApiError::unauthorized(format!(
            "a {} token does not open this (it takes: {})",
            claims.typ,
            typ.join(", ")
        )));
    }
    if claims.typ != "session" && claims.event.is_none() {
        return Err(ApiError::unauthorized(
            "a queue or access token names its event",
        ));
    }
    if claims.iat > chrono::Utc::now().timestamp() + 5 {
        return Err(ApiError::unauthorized("token issued in the future"));
    }
    Ok(claims)
}

/// The token of `Authorization: Bearer <token>`, if the header has that form.
pub fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// A body's `user_id`, when it has one, must be the token's user (403 otherwise).
pub fn same_user(claimed: Option<Uuid>, user: &User) -> Result<(), ApiError> {
    match claimed {
        Some(u) if u != user.user_id => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "user_id must be the token's user",
        )),
        _ => Ok(()),
    }
}

/// The authenticated user of a request (`Authorization: Bearer <session token>`).
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let claims = request_claims(parts, ctx, &["session"])?;
        Ok(AuthUser(ctx.user(&claims.sub).await?))
    }
}

/// The claims of a request's bearer token, if it is one of the kinds in `typ`. A
/// session token the API gate's rate-limit check verified already is not verified again.
fn request_claims(parts: &Parts, ctx: &AppState, typ: &[&str]) -> Result<Claims, ApiError> {
    if let Some(c) = parts.extensions.get::<Claims>() {
        if typ.contains(&c.typ.as_str()) {
            return Ok(c.clone());
        }
    }
    if !parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION)
    {
        return Err(ApiError::unauthorized(format!(
            "missing Authorization: Bearer <{} token>",
            typ.join(" or ")
        )));
    }
    let token = bearer(&parts.headers)
        .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
    verify(ctx, token, typ)
}

/// Who may hold seats: a user with a session token, or with the access token of
/// one event's waiting room (`access_event`); which one an event needs is the
/// handler's call (an event whose queue is on takes only its access token).
pub struct Shopper {
    pub user: User,
    pub access_event: Option<Uuid>,
}

impl FromRequestParts<AppState> for Shopper {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let claims = request_claims(parts, ctx, &["session", "access"])?;
        let user = ctx.user(&claims.sub).await?;
        let access_event = (claims.typ == "access").then_some(claims.event).flatten();
        Ok(Shopper { user, access_event })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: i64) -> Claims {
        Claims {
            sub: Uuid::nil(),
            iss: "boxoffice/test".into(),
            aud: AUDIENCE.into(),
            iat: 0,
            exp,
            typ: "session".into(),
            event: None,
        }
    }

    #[test]
    fn a_remembered_token_is_still_refused_once_expired() {
        let known = VerifiedTokens::default();
        assert!(known.lookup("t", 0).is_none(), "never verified");
        known.insert("t", &claims(100));
        assert!(matches!(known.lookup("t", 100), Some(Ok(c)) if c.exp == 100));
        assert!(matches!(known.lookup("t", 101), Some(Err(_))));
        assert!(known.lookup("u", 0).is_none(), "another token");
    }

    #[test]
    fn the_remembered_tokens_are_bounded() {
        let known = VerifiedTokens::default();
        for i in 0..VERIFIED_TOKENS_MAX {
            known.insert(&i.to_string(), &claims(100));
        }
        assert!(known.lookup("0", 0).is_some());
        known.insert("one more", &claims(100));
        assert!(known.lookup("0", 0).is_none(), "emptied when full");
        assert!(known.lookup("one more", 0).is_some());
    }
}
