//! Accounts: register, login, `/v1/me`. Users live in the catalog; passwords are
//! hashed with argon2 on the blocking pool (never on the async workers) by the node
//! that takes the request, and only the hash enters the log.

use argon2::password_hash::{
    rand_core::OsRng, PasswordHash, PasswordHasher, PasswordVerifier, SaltString,
};
use argon2::Argon2;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::extract::{request_id_for, Json};
use super::tokens::{mint_session, AuthUser};
use super::{ApiError, AppState};
use crate::domain::catalog::{
    check_password, normalize_email, CatalogCommand, CatalogRejection, CatalogResponse, NewUser,
};
use crate::domain::{CommandBody, Proposal, Response};
use crate::raft::GroupId;

/// A fixed hash to verify against when the email is unknown, so a login takes as
/// long whether or not the account exists.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0VBj5BV3ydh2yTq8Vko6dBSqfYkKTzqUxGOPGIt3yUE";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Register {
    email: String,
    password: String,
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
}

/// Runs argon2 on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(ApiError::internal)
}

/// `POST /v1/auth/register`.
pub async fn register(
    State(ctx): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<Register>,
) -> Result<impl IntoResponse, ApiError> {
    let email = normalize_email(&body.email).map_err(ApiError::validation)?;
    check_password(&body.password).map_err(ApiError::validation)?;
    let name = body.name.trim().to_string();
    crate::domain::catalog::check_name("name", &name, false).map_err(ApiError::validation)?;
    let password = body.password;
    let password_hash = blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
    })
    .await?
    .map_err(ApiError::internal)?;
    let user = NewUser {
        user_id: uuid::Uuid::new_v4(),
        email,
        name,
        password_hash,
    };
    let proposal = Proposal {
        request_id: request_id_for(&headers, "auth.register")?,
        body: CommandBody::Catalog(CatalogCommand::RegisterUser(user.clone())),
    };
    let applied = ctx.propose(GroupId::CATALOG, proposal).await?;
    match applied.response {
        Response::Catalog(CatalogResponse::UserRegistered { user_id }) => {
            // A retry with the same Idempotency-Key returns the first registration.
            let (email, name) = ctx
                .with_catalog(|c| c.user(&user_id).map(|u| (u.email.clone(), u.name.clone())))
                .flatten()
                .unwrap_or((user.email, user.name));
            Ok((
                StatusCode::CREATED,
                axum::Json(json!({ "user_id": user_id, "email": email, "name": name })),
            ))
        }
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::EmailTaken)) => Err(
            ApiError::conflict("EMAIL_TAKEN", "an account with this email exists"),
        ),
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::Invalid(m))) => {
            Err(ApiError::validation(m))
        }
        other => Err(ApiError::internal(format!(
            "unexpected catalog response {other:?}"
        ))),
    }
}

/// `POST /v1/auth/login`.
pub async fn login(
    State(ctx): State<AppState>,
    Json(body): Json<Login>,
) -> Result<impl IntoResponse, ApiError> {
    let invalid = || ApiError::unauthorized_code("INVALID_CREDENTIALS", "wrong email or password");
    let user = match normalize_email(&body.email) {
        Ok(email) => ctx.user_by_email(&email).await?,
        Err(_) => None,
    };
    let hash = user
        .as_ref()
        .map_or(DUMMY_HASH.to_string(), |u| u.password_hash.clone());
    let password = body.password;
    let ok = blocking(move || {
        PasswordHash::new(&hash)
            .map(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await?;
    let user = user.filter(|_| ok).ok_or_else(invalid)?;
    let (token, ttl) = mint_session(&ctx, user.user_id)?;
    Ok(axum::Json(json!({
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": ttl,
        "user_id": user.user_id,
    })))
}

/// `GET /v1/me`.
pub async fn me(AuthUser(user): AuthUser) -> impl IntoResponse {
    axum::Json(json!({ "user_id": user.user_id, "email": user.email, "name": user.name }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dummy_hash_is_a_real_argon2_hash_that_matches_nothing_likely() {
        let parsed = PasswordHash::new(DUMMY_HASH).expect("DUMMY_HASH parses");
        assert!(Argon2::default()
            .verify_password(b"correct horse", &parsed)
            .is_err());
    }
}
