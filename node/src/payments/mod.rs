//! Payments: the [`PaymentGateway`] trait the node charges cards through, and its
//! implementations. The simulated gateway ([`Simulated`], the default) honours
//! Stripe's test card tokens so tests and demos need no network.
//!
//! Every call that moves money carries an idempotency key (the order id for an
//! authorization, derived keys for capture and refund): asking again with the
//! same key returns the first answer and moves nothing twice. That is how a group
//! leader finishes an order another node started and then died.

mod simulated;
#[cfg(feature = "stripe")]
mod stripe;

pub use simulated::Simulated;
#[cfg(feature = "stripe")]
pub use stripe::Stripe;

use std::sync::Arc;

use crate::config::{GatewayKind, PaymentsConfig};
use crate::error::{Error, Result};

use futures::future::BoxFuture;

/// A card as the gateway describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// `Visa`, `Mastercard`, `American Express`, ...
    pub brand: String,
    pub last_four: String,
    pub exp_month: u8,
    pub exp_year: u16,
    /// What to charge later (a Stripe PaymentMethod id, or the test token).
    pub gateway_ref: String,
}

/// Why the gateway said no.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// The card token is unknown, used up or malformed: the client's mistake.
    #[error("invalid card token: {0}")]
    InvalidToken(String),
    /// The gateway could not be reached or failed: try again later.
    #[error("payment gateway unavailable: {0}")]
    Unavailable(String),
    /// The payment can no longer be captured (the authorization lapsed or was
    /// cancelled at the gateway).
    #[error("payment gone: {0}")]
    Gone(String),
}

/// An authorization to ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge<'a> {
    /// The idempotency key: the order id.
    pub key: &'a str,
    /// The card's gateway reference ([`Card::gateway_ref`]).
    pub card_ref: &'a str,
    pub amount_cents: u64,
    /// ISO 4217, lower case.
    pub currency: &'a str,
    pub description: &'a str,
}

/// The gateway's answer to an authorization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Authorization {
    /// The amount is reserved on the card; `payment_ref` names it for capture
    /// and refund.
    Authorized { payment_ref: String },
    /// The card was declined (Stripe's decline code as the reason).
    Declined { reason: String },
}

/// A payment service provider.
pub trait PaymentGateway: Send + Sync {
    /// Turns a client's card token into a chargeable card.
    fn card<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Card, GatewayError>>;

    /// Authorizes a charge without capturing it (idempotent by `charge.key`).
    fn authorize<'a>(
        &'a self,
        charge: Charge<'a>,
    ) -> BoxFuture<'a, Result<Authorization, GatewayError>>;

    /// Captures an authorization in full (idempotent by `key`; capturing a captured
    /// payment is a success).
    fn capture<'a>(
        &'a self,
        payment_ref: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;

    /// Gives a payment back: voids it if it was only authorized, refunds
    /// `amount_cents` if it was captured (idempotent by `key`).
    fn refund<'a>(
        &'a self,
        payment_ref: &'a str,
        amount_cents: u64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>>;
}

/// The gateway `[payments]` asks for.
pub fn from_config(config: &PaymentsConfig) -> Result<Arc<dyn PaymentGateway>> {
    match config.gateway {
        GatewayKind::Simulated => Ok(Arc::new(Simulated)),
        GatewayKind::Stripe => stripe_gateway(config),
    }
}

#[cfg(feature = "stripe")]
fn stripe_gateway(config: &PaymentsConfig) -> Result<Arc<dyn PaymentGateway>> {
    let key = if config.stripe_api_key.is_empty() {
        std::env::var("BOXOFFICE_STRIPE_API_KEY").unwrap_or_default()
    } else {
        config.stripe_api_key.clone()
    };
    if key.is_empty() {
        return Err(Error::Config(
            "payments.gateway is stripe but no key: set payments.stripe_api_key or BOXOFFICE_STRIPE_API_KEY"
                .into(),
        ));
    }
    let gateway = Stripe::new(
        &key,
        &config.stripe_api_base,
        config.stripe_flavor,
        std::time::Duration::from_millis(config.stripe_timeout_ms),
    )
    .map_err(|e| Error::Config(e.to_string()))?;
    Ok(Arc::new(gateway))
}

#[cfg(not(feature = "stripe"))]
fn stripe_gateway(_: &PaymentsConfig) -> Result<Arc<dyn PaymentGateway>> {
    Err(Error::Config(
        "payments.gateway is stripe, but this node was built without the Stripe gateway: \
         cargo build --release -p boxoffice-node --features stripe"
            .into(),
    ))
}
