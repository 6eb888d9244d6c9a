//! [`Simulated`]: a gateway without a network that knows Stripe's test card tokens
//! (https://docs.stripe.com/testing): the same brands and last four digits, and the
//! tokens whose charges Stripe declines are accepted as cards here too (they are
//! declined when charged, as on Stripe). Any other token is invalid.

use futures::future::BoxFuture;

use super::{Card, GatewayError, PaymentGateway};

/// The simulated gateway (see the module doc).
#[derive(Debug, Default, Clone)]
pub struct Simulated;

/// Test tokens: (token, brand, last four). Expiry is 12 of a fixed future year.
const TOKENS: &[(&str, &str, &str)] = &[
    ("tok_visa", "Visa", "4242"),
    ("tok_visa_4242", "Visa", "4242"),
    ("tok_visa_debit", "Visa", "5556"),
    ("tok_mastercard", "Mastercard", "4444"),
    ("tok_mastercard_debit", "Mastercard", "8210"),
    ("tok_mastercard_prepaid", "Mastercard", "5100"),
    ("tok_amex", "American Express", "8431"),
    ("tok_discover", "Discover", "1117"),
    ("tok_diners", "Diners Club", "0004"),
    ("tok_jcb", "JCB", "0505"),
    ("tok_unionpay", "UnionPay", "0005"),
    ("tok_chargeDeclined", "Visa", "0002"),
    ("tok_chargeDeclinedInsufficientFunds", "Visa", "9995"),
    ("tok_chargeDeclinedLostCard", "Visa", "9987"),
    ("tok_chargeDeclinedStolenCard", "Visa", "9979"),
    ("tok_chargeDeclinedExpiredCard", "Visa", "0069"),
    ("tok_chargeDeclinedIncorrectCvc", "Visa", "0127"),
    ("tok_chargeDeclinedProcessingError", "Visa", "0119"),
    ("tok_chargeDeclinedFraudulent", "Visa", "0019"),
];

/// The expiry year of every simulated card.
pub const EXP_YEAR: u16 = 2034;

impl Simulated {
    /// The card of a test token, if it is one.
    pub fn lookup(token: &str) -> Option<Card> {
        TOKENS
            .iter()
            .find(|(t, _, _)| *t == token)
            .map(|(t, brand, last)| Card {
                brand: (*brand).to_string(),
                last_four: (*last).to_string(),
                exp_month: 12,
                exp_year: EXP_YEAR,
                gateway_ref: (*t).to_string(),
            })
    }
}

impl PaymentGateway for Simulated {
    fn card<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Card, GatewayError>> {
        Box::pin(async move {
            Self::lookup(token).ok_or_else(|| {
                GatewayError::InvalidToken(format!(
                    "{token:?} is not a card token this gateway knows (try tok_visa)"
                ))
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stripe_test_tokens_resolve_and_others_do_not() {
        let g = Simulated;
        let visa = g.card("tok_visa_4242").await.unwrap();
        assert_eq!(
            (visa.brand.as_str(), visa.last_four.as_str()),
            ("Visa", "4242")
        );
        let mc = g.card("tok_mastercard").await.unwrap();
        assert_eq!(
            (mc.brand.as_str(), mc.last_four.as_str()),
            ("Mastercard", "4444")
        );
        assert!(
            g.card("tok_chargeDeclined").await.is_ok(),
            "declined only when charged"
        );
        assert!(matches!(
            g.card("tok_nope").await,
            Err(GatewayError::InvalidToken(_))
        ));
    }
}
