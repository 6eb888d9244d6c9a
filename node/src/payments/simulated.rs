//! [`Simulated`]: a gateway without a network that knows Stripe's test card tokens
//! (https://docs.stripe.com/testing): the same brands and last four digits, and the
//! tokens whose charges Stripe declines are accepted as cards here too (they are
//! declined when charged, as on Stripe). Any other token is invalid.
//!
//! It keeps no state: an authorization's outcome is a function of the card and
//! its payment reference a function of the idempotency key, so every node gives
//! the same answer to the same key (idempotent across nodes and restarts, as a
//! real gateway is). Capture and refund of a reference it issued always succeed.
//! Money it "moves" is counted in metrics only.

use futures::future::BoxFuture;

use super::{Authorization, Card, Charge, GatewayError, PaymentGateway};

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

/// Test tokens Stripe declines at charge time, with Stripe's decline code.
const DECLINES: &[(&str, &str)] = &[
    ("tok_chargeDeclined", "card_declined"),
    ("tok_chargeDeclinedInsufficientFunds", "insufficient_funds"),
    ("tok_chargeDeclinedLostCard", "lost_card"),
    ("tok_chargeDeclinedStolenCard", "stolen_card"),
    ("tok_chargeDeclinedExpiredCard", "expired_card"),
    ("tok_chargeDeclinedIncorrectCvc", "incorrect_cvc"),
    ("tok_chargeDeclinedProcessingError", "processing_error"),
    ("tok_chargeDeclinedFraudulent", "fraudulent"),
];

/// The prefix of the payment references it issues.
const REF_PREFIX: &str = "sim_pi_";

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

    fn authorize<'a>(
        &'a self,
        charge: Charge<'a>,
    ) -> BoxFuture<'a, Result<Authorization, GatewayError>> {
        Box::pin(async move {
            if Self::lookup(charge.card_ref).is_none() {
                return Err(GatewayError::InvalidToken(format!(
                    "{:?} is not a card of this gateway",
                    charge.card_ref
                )));
            }
            if let Some((_, code)) = DECLINES.iter().find(|(t, _)| *t == charge.card_ref) {
                metrics::counter!("boxoffice_simulated_declines_total").increment(1);
                return Ok(Authorization::Declined {
                    reason: (*code).to_string(),
                });
            }
            metrics::counter!("boxoffice_simulated_authorized_cents_total")
                .increment(charge.amount_cents);
            Ok(Authorization::Authorized {
                payment_ref: format!("{REF_PREFIX}{}", charge.key),
            })
        })
    }

    fn capture<'a>(
        &'a self,
        payment_ref: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            check_ref(payment_ref)?;
            metrics::counter!("boxoffice_simulated_captures_total").increment(1);
            Ok(())
        })
    }

    fn refund<'a>(
        &'a self,
        payment_ref: &'a str,
        amount_cents: u64,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            check_ref(payment_ref)?;
            metrics::counter!("boxoffice_simulated_refunded_cents_total").increment(amount_cents);
            Ok(())
        })
    }
}

fn check_ref(payment_ref: &str) -> Result<(), GatewayError> {
    if payment_ref.starts_with(REF_PREFIX) {
        Ok(())
    } else {
        Err(GatewayError::InvalidToken(format!(
            "{payment_ref:?} is not a payment of this gateway"
        )))
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

    fn charge<'a>(card_ref: &'a str, key: &'a str) -> Charge<'a> {
        Charge {
            key,
            card_ref,
            amount_cents: 186_000,
            currency: "usd",
            description: "test",
        }
    }

    #[tokio::test]
    async fn authorizations_follow_the_card_and_repeat_by_key() {
        let g = Simulated;
        let a = g.authorize(charge("tok_visa", "order-1")).await.unwrap();
        assert_eq!(a, g.authorize(charge("tok_visa", "order-1")).await.unwrap());
        let Authorization::Authorized { payment_ref } = a else {
            panic!("visa declined: {a:?}");
        };
        assert_ne!(
            Authorization::Authorized {
                payment_ref: payment_ref.clone()
            },
            g.authorize(charge("tok_visa", "order-2")).await.unwrap()
        );
        assert_eq!(
            g.authorize(charge("tok_chargeDeclinedInsufficientFunds", "order-3"))
                .await
                .unwrap(),
            Authorization::Declined {
                reason: "insufficient_funds".into()
            }
        );
        assert!(g.capture(&payment_ref, "k").await.is_ok());
        assert!(g.refund(&payment_ref, 1, "k2").await.is_ok());
        assert!(g.capture("pi_elsewhere", "k").await.is_err());
        assert!(g.authorize(charge("tok_nope", "order-4")).await.is_err());
    }
}
