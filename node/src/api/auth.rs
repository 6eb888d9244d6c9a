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
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
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

/// A new account.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Register {
    #[schema(format = Email, example = "fan@example.com")]
    email: String,
    /// At least 8 characters.
    #[schema(min_length = 8)]
    password: String,
    #[schema(min_length = 1)]
    name: String,
}

/// Credentials for a session token.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Login {
    email: String,
    password: String,
}

/// An account, as its owner sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserView {
    pub user_id: uuid::Uuid,
    pub email: String,
    pub name: String,
}

/// A session token (JWT, HS256) for `Authorization: Bearer`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Session {
    pub access_token: String,
    #[schema(example = "Bearer")]
    pub token_type: &'static str,
    /// Seconds until the token expires.
    pub expires_in: u64,
    pub user_id: uuid::Uuid,
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
#[utoipa::path(post, path = "/v1/auth/register", operation_id = "register", tag = "accounts",
    request_body = Register,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key return the first registration")),
    responses(
        (status = 201, description = "Account created", body = UserView),
        (status = 409, description = "EMAIL_TAKEN: an account with this email exists", body = ErrorBody),
    ))]
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
    let submitted = password.clone();
    let params = argon2::Params::new(
        ctx.config.api.password_hash_memory_kib,
        ctx.config.api.password_hash_iterations,
        1,
        None,
    )
    .map_err(ApiError::internal)?;
    let password_hash = blocking(move || {
        let salt = SaltString::generate(&mut OsRng);
        Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
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
    // Scoped by the email: two people who happen to send the same key must not
    // get each other's registration (and see each other's email and name).
    let proposal = Proposal {
        request_id: request_id_for(&headers, &format!("auth.register.{}", user.email))?,
        body: CommandBody::Catalog(CatalogCommand::RegisterUser(user.clone())),
    };
    let applied = ctx.propose(GroupId::CATALOG, proposal).await?;
    match applied.response {
        Response::Catalog(CatalogResponse::UserRegistered { user_id }) => {
            // A retry with the same Idempotency-Key returns the first registration.
            let first = ctx
                .with_catalog(|c| {
                    c.user(&user_id)
                        .map(|u| (u.email.clone(), u.name.clone(), u.password_hash.clone()))
                })
                .flatten();
            let (email, name) = match first {
                // Someone else's registration of this email under the same key (a
                // guessed key) learns nothing from it: only its own retry, with the
                // same password, gets it back.
                Some((email, name, hash)) if user_id != user.user_id => {
                    if !blocking(move || password_matches(&hash, &submitted)).await? {
                        return Err(email_taken());
                    }
                    (email, name)
                }
                Some((email, name, _)) => (email, name),
                None => (user.email, user.name),
            };
            Ok((
                StatusCode::CREATED,
                axum::Json(UserView {
                    user_id,
                    email,
                    name,
                }),
            ))
        }
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::EmailTaken)) => {
            Err(email_taken())
        }
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::Invalid(m))) => {
            Err(ApiError::validation(m))
        }
        other => Err(ApiError::internal(format!(
            "unexpected catalog response {other:?}"
        ))),
    }
}

/// `POST /v1/auth/login`.
#[utoipa::path(post, path = "/v1/auth/login", operation_id = "login", tag = "accounts",
    request_body = Login,
    responses(
        (status = 200, description = "A session token", body = Session),
        (status = 401, description = "INVALID_CREDENTIALS: wrong email or password", body = ErrorBody),
    ))]
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
    let ok = blocking(move || password_matches(&hash, &password)).await?;
    let user = user.filter(|_| ok).ok_or_else(invalid)?;
    let (token, ttl) = mint_session(&ctx, user.user_id)?;
    Ok(axum::Json(Session {
        access_token: token,
        token_type: "Bearer",
        expires_in: ttl,
        user_id: user.user_id,
    }))
}

/// Whether `password` matches the stored argon2 `hash` (CPU-heavy: call it on the
/// blocking pool).
fn password_matches(hash: &str, password: &str) -> bool {
    PasswordHash::new(hash)
        .map(|parsed| {
            Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok()
        })
        .unwrap_or(false)
}

fn email_taken() -> ApiError {
    ApiError::conflict("EMAIL_TAKEN", "an account with this email exists")
}

/// `GET /v1/me`.
#[utoipa::path(get, path = "/v1/me", operation_id = "me", tag = "accounts",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's account", body = UserView),
        (status = 401, description = "Missing, invalid or expired session token", body = ErrorBody),
    ))]
pub async fn me(AuthUser(user): AuthUser) -> impl IntoResponse {
    axum::Json(UserView {
        user_id: user.user_id,
        email: user.email,
        name: user.name,
    })
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
