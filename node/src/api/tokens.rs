//! Session tokens: JWTs signed with the cluster's key (created once at bootstrap and
//! replicated in the catalog, so every node mints and verifies them). The algorithm
//! is pinned to HS256; `exp`, `iat`, `iss`, `aud` and `sub` are required and checked,
//! with no leeway. Queue and access tokens join with a different `typ`.

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
    /// The kind of token: `session` (queue and access tokens come later).
    pub typ: String,
}

/// The issuer: the cluster's bootstrap id, so tokens of another cluster fail.
fn issuer(ctx: &AppState) -> Result<(String, Vec<u8>), ApiError> {
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
    };
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(&key),
    )
    .map_err(ApiError::internal)?;
    Ok((token, ttl))
}

/// Verifies a session token: signature (HS256 only), expiry, issuer, audience.
pub fn verify_session(ctx: &AppState, token: &str) -> Result<Claims, ApiError> {
    let (iss, key) = issuer(ctx)?;
    let mut v = Validation::new(Algorithm::HS256);
    v.leeway = 0;
    v.set_issuer(&[iss]);
    v.set_audience(&[AUDIENCE]);
    v.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
    let data = jsonwebtoken::decode::<Claims>(token, &DecodingKey::from_secret(&key), &v)
        .map_err(|e| ApiError::unauthorized(format!("invalid token: {e}")))?;
    if data.claims.typ != "session" {
        return Err(ApiError::unauthorized("not a session token"));
    }
    if data.claims.iat > chrono::Utc::now().timestamp() + 5 {
        return Err(ApiError::unauthorized("token issued in the future"));
    }
    Ok(data.claims)
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

/// The authenticated user of a request (`Authorization: Bearer <session token>`).
pub struct AuthUser(pub User);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        ctx: &AppState,
    ) -> Result<Self, Self::Rejection> {
        // Verified by the rate-limit middleware already, if it ran on this route.
        let claims = match parts.extensions.get::<Claims>() {
            Some(c) => c.clone(),
            None => {
                if !parts
                    .headers
                    .contains_key(axum::http::header::AUTHORIZATION)
                {
                    return Err(ApiError::unauthorized(
                        "missing Authorization: Bearer <token>",
                    ));
                }
                let token = bearer(&parts.headers).ok_or_else(|| {
                    ApiError::unauthorized("Authorization must be 'Bearer <token>'")
                })?;
                verify_session(ctx, token)?
            }
        };
        let user = ctx.user(&claims.sub).await?;
        Ok(AuthUser(user))
    }
}
