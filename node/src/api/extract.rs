//! Extractors whose rejections are [`ApiError`]s, and operator authentication.

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use super::{ApiError, AppState};

/// `Json<T>` whose rejections use the spec's error format.
pub struct Json<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Json<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let axum::Json(v) = axum::Json::<T>::from_request(req, state).await?;
        Ok(Json(v))
    }
}

/// `Path<T>` whose rejections use the spec's error format.
pub struct Path<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(v))
    }
}

/// `Query<T>` whose rejections use the spec's error format.
pub struct Query<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(v))
    }
}

/// Proof that the request carried the cluster's `X-Admin-Key`.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let given = parts.headers.get("x-admin-key").ok_or_else(|| {
            ApiError::unauthorized("this operator endpoint needs an X-Admin-Key header")
        })?;
        if constant_time_eq(given.as_bytes(), state.config.admin_key.as_bytes()) {
            Ok(Admin)
        } else {
            Err(ApiError::unauthorized("invalid X-Admin-Key"))
        }
    }
}

/// Compares secrets without an early exit on the first differing byte.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The header that names a request so a retry gets its first outcome.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// The client's `Idempotency-Key`, mapped to a request id scoped to one operation,
/// so a retry returns the first outcome; a fresh id without one.
pub fn request_id_for(
    parts_headers: &axum::http::HeaderMap,
    scope: &str,
) -> Result<uuid::Uuid, ApiError> {
    match parts_headers.get(IDEMPOTENCY_KEY) {
        None => Ok(uuid::Uuid::new_v4()),
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| !k.is_empty() && k.len() <= 255)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Ok(uuid::Uuid::new_v5(
                &uuid::Uuid::NAMESPACE_OID,
                format!("{scope}\n{key}").as_bytes(),
            ))
        }
    }
}
