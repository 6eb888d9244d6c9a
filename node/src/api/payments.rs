//! Payment methods: `POST /v1/payment-methods` (a card token, resolved by the
//! payment gateway into brand, last four and expiry; the first is the default),
//! `GET /v1/payment-methods` (the caller's), `DELETE /v1/payment-methods/{id}`.
//! Stored in the catalog, so every node lists them from its local replica.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::error::ErrorBody;
use super::extract::{request_id_for, Json, Path};
use super::tokens::AuthUser;
use super::{ApiError, AppState};
use crate::domain::catalog::{
    CatalogCommand, CatalogRejection, CatalogResponse, PaymentMethod, MAX_BILLING_LEN,
};
use crate::domain::{CommandBody, Proposal, Response};
use crate::payments::GatewayError;
use crate::raft::GroupId;

/// `POST /v1/payment-methods` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewPaymentMethod {
    /// `CARD`.
    #[serde(rename = "type")]
    kind: String,
    /// A card token from the payment provider (Stripe test tokens: `tok_visa`, ...).
    card_token: String,
    /// Kept as given (at most 2,048 bytes of JSON).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    billing_address: Option<serde_json::Value>,
}

/// A payment method.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMethodBody {
    pub payment_method_id: Uuid,
    #[serde(rename = "type")]
    pub kind: String,
    pub card_last_four: String,
    pub card_brand: String,
    /// `MM/YYYY`.
    pub expiry: String,
    pub is_default: bool,
}

impl From<&PaymentMethod> for PaymentMethodBody {
    fn from(pm: &PaymentMethod) -> Self {
        Self {
            payment_method_id: pm.payment_method_id,
            kind: pm.kind.clone(),
            card_last_four: pm.last_four.clone(),
            card_brand: pm.brand.clone(),
            expiry: pm.expiry(),
            is_default: pm.is_default,
        }
    }
}

/// The caller's payment methods.
#[derive(Debug, Serialize, ToSchema)]
pub struct PaymentMethodList {
    pub payment_methods: Vec<PaymentMethodBody>,
}

fn invalid_method(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "INVALID_PAYMENT_METHOD", message)
}

/// `POST /v1/payment-methods`.
#[utoipa::path(post, path = "/v1/payment-methods", tag = "payments", operation_id = "addPaymentMethod",
    security(("bearer" = [])),
    request_body = NewPaymentMethod,
    params(("Idempotency-Key" = Option<String>, Header, description = "A retry returns the first outcome")),
    responses(
        (status = 201, description = "Added; the caller's first method is the default", body = PaymentMethodBody),
        (status = 400, description = "INVALID_PAYMENT_METHOD: the gateway does not know the card token", body = ErrorBody),
        (status = 401, description = "Missing or invalid session token", body = ErrorBody),
        (status = 409, description = "The caller has the most payment methods allowed (20)", body = ErrorBody),
        (status = 422, description = "Not a CARD, or a billing address too large", body = ErrorBody),
    ))]
pub async fn add(
    State(ctx): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Json(body): Json<NewPaymentMethod>,
) -> Result<impl IntoResponse, ApiError> {
    if body.kind != "CARD" {
        return Err(ApiError::validation("type must be CARD"));
    }
    let token = body.card_token.trim();
    if token.is_empty() || token.len() > 255 {
        return Err(invalid_method("card_token must be 1 to 255 bytes"));
    }
    let billing_address = match body.billing_address {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_BILLING_LEN {
                return Err(ApiError::validation(format!(
                    "billing_address must be at most {MAX_BILLING_LEN} bytes of JSON"
                )));
            }
            Some(text)
        }
        Some(_) => return Err(ApiError::validation("billing_address must be an object")),
    };
    let request_id = request_id_for(&headers, &format!("payment-methods.add.{}", user.user_id))?;
    let card = ctx.payments.card(token).await.map_err(|e| match e {
        GatewayError::InvalidToken(m) | GatewayError::Gone(m) => invalid_method(m),
        GatewayError::Unavailable(m) => ApiError::unavailable("PAYMENT_GATEWAY", m, 5),
    })?;
    let method = PaymentMethod {
        payment_method_id: Uuid::new_v5(&request_id, b"payment-method"),
        user_id: user.user_id,
        kind: "CARD".into(),
        brand: card.brand,
        last_four: card.last_four,
        exp_month: card.exp_month,
        exp_year: card.exp_year,
        gateway_ref: card.gateway_ref,
        billing_address,
        is_default: false,
        created_ms: 0,
    };
    let proposal = Proposal {
        request_id,
        body: CommandBody::Catalog(CatalogCommand::AddPaymentMethod(method)),
    };
    match ctx.propose(GroupId::CATALOG, proposal).await?.response {
        Response::Catalog(CatalogResponse::PaymentMethodAdded(pm)) => Ok((
            StatusCode::CREATED,
            axum::Json(PaymentMethodBody::from(&pm)),
        )),
        Response::Catalog(CatalogResponse::Rejected(r)) => Err(refusal(r)),
        other => Err(ApiError::internal(format!(
            "unexpected catalog response {other:?}"
        ))),
    }
}

fn refusal(r: CatalogRejection) -> ApiError {
    match r {
        CatalogRejection::TooManyPaymentMethods { limit } => ApiError::conflict(
            "CONFLICT",
            format!("at most {limit} payment methods per user: delete one first"),
        ),
        CatalogRejection::UnknownPaymentMethod => ApiError::not_found("no such payment method"),
        CatalogRejection::UnknownUser => ApiError::unauthorized("unknown user"),
        CatalogRejection::Invalid(m) => ApiError::validation(m),
        other => ApiError::internal(format!("unexpected catalog refusal {other:?}")),
    }
}

/// `GET /v1/payment-methods`.
#[utoipa::path(get, path = "/v1/payment-methods", tag = "payments", operation_id = "listPaymentMethods",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's payment methods, oldest first", body = PaymentMethodList),
        (status = 401, description = "Missing or invalid session token", body = ErrorBody),
    ))]
pub async fn list(
    State(ctx): State<AppState>,
    AuthUser(user): AuthUser,
) -> Result<impl IntoResponse, ApiError> {
    let payment_methods = ctx
        .with_catalog(|c| {
            c.payment_methods_of(&user.user_id)
                .into_iter()
                .map(PaymentMethodBody::from)
                .collect()
        })
        .unwrap_or_default();
    Ok(axum::Json(PaymentMethodList { payment_methods }))
}

/// `DELETE /v1/payment-methods/{payment_method_id}`.
#[utoipa::path(delete, path = "/v1/payment-methods/{payment_method_id}", tag = "payments",
    operation_id = "deletePaymentMethod",
    security(("bearer" = [])),
    params(("payment_method_id" = Uuid, Path)),
    responses(
        (status = 204, description = "Deleted; if it was the default, the oldest remaining one is"),
        (status = 401, description = "Missing or invalid session token", body = ErrorBody),
        (status = 404, description = "Not one of the caller's payment methods", body = ErrorBody),
    ))]
pub async fn remove(
    State(ctx): State<AppState>,
    AuthUser(user): AuthUser,
    headers: HeaderMap,
    Path(payment_method_id): Path<Uuid>,
) -> Result<impl IntoResponse, ApiError> {
    let proposal = Proposal {
        request_id: request_id_for(
            &headers,
            &format!("payment-methods.remove.{}", user.user_id),
        )?,
        body: CommandBody::Catalog(CatalogCommand::RemovePaymentMethod {
            user_id: user.user_id,
            payment_method_id,
        }),
    };
    match ctx.propose(GroupId::CATALOG, proposal).await?.response {
        Response::Catalog(CatalogResponse::PaymentMethodRemoved) => Ok(StatusCode::NO_CONTENT),
        Response::Catalog(CatalogResponse::Rejected(r)) => Err(refusal(r)),
        other => Err(ApiError::internal(format!(
            "unexpected catalog response {other:?}"
        ))),
    }
}
