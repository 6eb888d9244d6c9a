//! Payment methods: a user's cards as the payment gateway described them (brand,
//! last four digits, expiry, and the gateway's reference to charge). Card numbers
//! never reach the cluster; the gateway turned the client's card token into these.
//! A user's first method is the default; removing the default promotes the oldest
//! remaining one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most payment methods per user.
pub const MAX_METHODS_PER_USER: usize = 20;
/// Longest billing address kept (its JSON text).
pub const MAX_BILLING_LEN: usize = 2048;

/// A stored payment method (persisted under `p{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub payment_method_id: Uuid,
    pub user_id: Uuid,
    /// `CARD`.
    pub kind: String,
    /// As the gateway names it: `Visa`, `Mastercard`, ...
    pub brand: String,
    pub last_four: String,
    pub exp_month: u8,
    pub exp_year: u16,
    /// What the gateway charges: a Stripe PaymentMethod id, or the simulated
    /// gateway's test token.
    pub gateway_ref: String,
    /// The billing address as the client sent it (JSON text), if any.
    pub billing_address: Option<String>,
    pub is_default: bool,
    pub created_ms: i64,
}

impl PaymentMethod {
    /// Checks what the catalog stores.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind != "CARD" {
            return Err("only CARD payment methods exist".into());
        }
        if self.brand.is_empty() || self.brand.len() > 40 {
            return Err("card brand must be 1 to 40 bytes".into());
        }
        if self.last_four.len() != 4 || !self.last_four.bytes().all(|b| b.is_ascii_digit()) {
            return Err("card_last_four must be four digits".into());
        }
        if !(1..=12).contains(&self.exp_month) || !(2000..=2200).contains(&self.exp_year) {
            return Err("card expiry is out of range".into());
        }
        if self.gateway_ref.is_empty() || self.gateway_ref.len() > 255 {
            return Err("the gateway reference must be 1 to 255 bytes".into());
        }
        if self
            .billing_address
            .as_ref()
            .is_some_and(|b| b.len() > MAX_BILLING_LEN)
        {
            return Err(format!(
                "billing_address must be at most {MAX_BILLING_LEN} bytes of JSON"
            ));
        }
        Ok(())
    }

    /// `MM/YYYY`.
    pub fn expiry(&self) -> String {
        format!("{:02}/{}", self.exp_month, self.exp_year)
    }
}
