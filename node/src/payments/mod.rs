//! Payments: the [`PaymentGateway`] trait the node charges cards through, and its
//! implementations. The simulated gateway ([`Simulated`], the default) honours
//! Stripe's test card tokens so tests and demos need no network; a Stripe gateway
//! joins it with orders (authorize, capture and refund come with them).

mod simulated;

pub use simulated::Simulated;

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
}

/// A payment service provider.
pub trait PaymentGateway: Send + Sync {
    /// Turns a client's card token into a chargeable card.
    fn card<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Card, GatewayError>>;
}
