//! API keys for client applications (`X-API-Key`): minted by operators, stored by
//! the SHA-256 of their secret (high-entropy secrets need no slow hash). A request
//! that carries one must carry a valid one; `api.require_api_key` makes them
//! mandatory for every public route (operator routes use `X-Admin-Key` instead).

use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::{request_id_for, Admin, Json};
use super::{ApiError, AppState};
use crate::domain::catalog::{ApiKey, CatalogCommand, CatalogRejection, CatalogResponse};
use crate::domain::{CommandBody, Proposal, Response as Outcome};
use crate::raft::GroupId;

fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// `POST /v1/admin/api-keys` body: a name to recognise the key by.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    name: String,
}

/// A new API key; `api_key` is the secret, shown only here.
#[derive(Debug, Serialize, ToSchema)]
pub struct KeyCreated {
    pub api_key: String,
    pub key_id: uuid::Uuid,
    pub name: String,
}

/// `POST /v1/admin/api-keys`: the secret is shown once, in this response.
#[utoipa::path(post, path = "/v1/admin/api-keys", operation_id = "createApiKey", tag = "admin",
    security(("admin_key" = [])),
    request_body = CreateKey,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry is refused (409): the secret is never shown twice")),
    responses(
        (status = 201, description = "Key minted", body = KeyCreated),
        (status = 409, description = "This Idempotency-Key already minted a key", body = ErrorBody),
    ))]
pub async fn create(
    State(ctx): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    Json(body): Json<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    let mut secret = [0u8; 32];
    rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut secret);
    let api_key = format!(
        "bo_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret)
    );
    let key = ApiKey {
        key_id: uuid::Uuid::new_v4(),
        name: body.name.trim().to_string(),
        key_hash: hash(api_key.as_bytes()),
        created_ms: 0,
    };
    let proposal = Proposal {
        request_id: request_id_for(&headers, "admin.api-keys")?,
        body: CommandBody::Catalog(CatalogCommand::CreateApiKey(key.clone())),
    };
    match ctx.propose(GroupId::CATALOG, proposal).await?.response {
        Outcome::Catalog(CatalogResponse::ApiKeyCreated { key_id }) if key_id == key.key_id => {
            Ok((
                StatusCode::CREATED,
                axum::Json(KeyCreated {
                    api_key,
                    key_id,
                    name: key.name,
                }),
            ))
        }
        // A retry with the same Idempotency-Key: the secret was shown the first time.
        Outcome::Catalog(CatalogResponse::ApiKeyCreated { key_id }) => Err(ApiError::conflict(
            "CONFLICT",
            format!("this request already created API key {key_id}; its secret was shown then"),
        )),
        Outcome::Catalog(CatalogResponse::Rejected(CatalogRejection::Invalid(m))) => {
            Err(ApiError::validation(m))
        }
        other => Err(ApiError::internal(format!(
            "unexpected catalog response {other:?}"
        ))),
    }
}

/// A present `X-API-Key` must be valid; a missing one is refused when keys are
/// required (except on operator routes). Part of the API's gate (`api::gate`);
/// `Err` is the response to answer.
pub async fn check(
    ctx: &AppState,
    headers: &HeaderMap,
    route: Option<&MatchedPath>,
) -> Result<(), Response> {
    let admin_route = route.is_some_and(|p| p.as_str().starts_with("/v1/admin/"));
    match headers.get("x-api-key") {
        Some(given) => {
            let h = hash(given.as_bytes());
            match ctx
                .catalog_lookup(|c| c.api_key(&h).map(|k| k.key_id))
                .await
            {
                Ok(Some(_)) => Ok(()),
                Ok(None) => Err(ApiError::unauthorized_code(
                    "INVALID_API_KEY",
                    "unknown X-API-Key",
                )
                .into_response()),
                Err(e) => Err(e.into_response()),
            }
        }
        None if ctx.config.api.require_api_key && !admin_route => Err(ApiError::unauthorized_code(
            "API_KEY_REQUIRED",
            "this cluster requires an X-API-Key header",
        )
        .into_response()),
        None => Ok(()),
    }
}
