//! [`Stripe`]: the gateway on Stripe's API through async-stripe (feature `stripe`).
//!
//! A card token becomes a PaymentMethod; an order is authorized by a PaymentIntent
//! created and confirmed with manual capture under the order id as idempotency
//! key; capture and refund carry their own keys. Giving money back looks at the
//! PaymentIntent first: an authorization is cancelled (voided), a capture
//! refunded. Requests use the typed builders; responses are read leniently (only
//! the fields used), so emulators that omit fields Stripe always sends still work.
//!
//! [`Flavor::Localstripe`](crate::config::StripeFlavor) adapts to the localstripe emulator, which refuses
//! `card[token]` and `automatic_payment_methods`: test tokens become Stripe's test
//! card numbers, and the PaymentIntent is created without those fields.

use std::collections::HashMap;
use std::time::Duration;

use futures::future::BoxFuture;
use stripe::{
    ApiErrors, Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError, StripeRequest,
};
use stripe_core::payment_intent::{
    CancelPaymentIntent, CapturePaymentIntent, CreatePaymentIntent,
    CreatePaymentIntentAutomaticPaymentMethods,
    CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects, RetrievePaymentIntent,
};
use stripe_core::refund::CreateRefund;
use stripe_payment::payment_method::{
    CreatePaymentMethod, CreatePaymentMethodCard, CreatePaymentMethodCardDetailsParams,
    CreatePaymentMethodTokenParams, CreatePaymentMethodType,
};

use super::{Authorization, Card, Charge, GatewayError, PaymentGateway};
use crate::config::StripeFlavor as Flavor;

/// The Stripe gateway.
pub struct Stripe {
    client: Client,
    flavor: Flavor,
}

#[derive(miniserde::Deserialize)]
struct PaymentIntentLite {
    id: String,
    status: String,
}

#[derive(miniserde::Deserialize)]
struct PaymentMethodLite {
    id: String,
    card: Option<CardLite>,
}

#[derive(miniserde::Deserialize)]
struct CardLite {
    brand: String,
    last4: String,
    exp_month: i64,
    exp_year: i64,
}

#[derive(miniserde::Deserialize)]
struct RefundLite {
    #[allow(dead_code)]
    id: String,
}

/// Stripe's test card numbers for its test tokens (localstripe takes numbers
/// only; it declines 4000000000000341 when charged).
const TEST_NUMBERS: &[(&str, &str)] = &[
    ("tok_visa", "4242424242424242"),
    ("tok_visa_4242", "4242424242424242"),
    ("tok_visa_debit", "4000056655665556"),
    ("tok_mastercard", "5555555555554444"),
    ("tok_mastercard_debit", "5200828282828210"),
    ("tok_mastercard_prepaid", "5105105105105100"),
    ("tok_discover", "6011111111111117"),
    ("tok_jcb", "3566002020360505"),
    ("tok_unionpay", "6200000000000005"),
    ("tok_chargeDeclined", "4000000000000341"),
];

/// Stripe's brand codes as fans read them.
fn brand_name(code: &str) -> String {
    match code {
        "visa" => "Visa".into(),
        "mastercard" => "Mastercard".into(),
        "amex" => "American Express".into(),
        "discover" => "Discover".into(),
        "diners" => "Diners Club".into(),
        "jcb" => "JCB".into(),
        "unionpay" => "UnionPay".into(),
        other => {
            let mut c = other.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_else(|| "Card".into())
        }
    }
}

fn idempotent(key: &str) -> Result<RequestStrategy, GatewayError> {
    IdempotencyKey::new(key)
        .map(RequestStrategy::Idempotent)
        .map_err(|e| GatewayError::Unavailable(format!("idempotency key {key:?}: {e}")))
}

/// What went wrong, for a call whose refusal is the client's fault when Stripe
/// says 4xx (a bad token, an unknown payment) and an outage otherwise.
fn failure(e: StripeError) -> GatewayError {
    match e {
        // 409: the same key is in flight elsewhere; 429: slow down. Both pass.
        StripeError::Stripe(err, status)
            if (400..500).contains(&status) && status != 409 && status != 429 =>
        {
            GatewayError::InvalidToken(describe(&err))
        }
        other => GatewayError::Unavailable(other.to_string()),
    }
}

fn describe(err: &ApiErrors) -> String {
    err.message
        .clone()
        .or_else(|| err.code.as_ref().map(|c| c.as_str().to_string()))
        .unwrap_or_else(|| err.type_.as_str().to_string())
}

impl Stripe {
    /// A gateway with `secret` on `base` (e.g. `https://api.stripe.com/`; a base
    /// with a path must end in `/`), each attempt bounded by `timeout`.
    pub fn new(
        secret: &str,
        base: &str,
        flavor: Flavor,
        timeout: Duration,
    ) -> Result<Self, GatewayError> {
        let client = ClientBuilder::new(secret)
            .url(base)
            .timeout(timeout)
            .build()
            .map_err(|e| GatewayError::Unavailable(format!("Stripe client: {e}")))?;
        Ok(Self { client, flavor })
    }

    async fn payment_intent(&self, id: &str) -> Result<PaymentIntentLite, GatewayError> {
        RetrievePaymentIntent::new(id)
            .build()
            .customize::<PaymentIntentLite>()
            .send(&self.client)
            .await
            .map_err(failure)
    }

    fn card_params(&self, token: &str) -> Result<CreatePaymentMethodCard, GatewayError> {
        Ok(match self.flavor {
            Flavor::Stripe => {
                CreatePaymentMethodCard::TokenParams(CreatePaymentMethodTokenParams::new(token))
            }
            Flavor::Localstripe => {
                let number = TEST_NUMBERS
                    .iter()
                    .find(|(t, _)| *t == token)
                    .map(|(_, n)| *n)
                    .ok_or_else(|| {
                        GatewayError::InvalidToken(format!(
                            "{token:?} is not a test token localstripe can take"
                        ))
                    })?;
                let mut details = CreatePaymentMethodCardDetailsParams::new(12, 2034, number);
                details.cvc = Some("123".into());
                CreatePaymentMethodCard::CardDetailsParams(details)
            }
        })
    }
}

impl PaymentGateway for Stripe {
    fn card<'a>(&'a self, token: &'a str) -> BoxFuture<'a, Result<Card, GatewayError>> {
        Box::pin(async move {
            let pm = CreatePaymentMethod::new()
                .type_(CreatePaymentMethodType::Card)
                .card(self.card_params(token)?)
                .build()
                .customize::<PaymentMethodLite>()
                .send(&self.client)
                .await
                .map_err(failure)?;
            let card = pm
                .card
                .ok_or_else(|| GatewayError::InvalidToken(format!("{token:?} is not a card")))?;
            Ok(Card {
                brand: brand_name(&card.brand),
                last_four: card.last4,
                exp_month: u8::try_from(card.exp_month).unwrap_or(0),
                exp_year: u16::try_from(card.exp_year).unwrap_or(0),
                gateway_ref: pm.id,
            })
        })
    }

    fn authorize<'a>(
        &'a self,
        charge: Charge<'a>,
    ) -> BoxFuture<'a, Result<Authorization, GatewayError>> {
        Box::pin(async move {
            let currency = charge
                .currency
                .parse::<stripe_types::Currency>()
                .map_err(|_| GatewayError::Unavailable(format!("currency {}", charge.currency)))?;
            let amount = i64::try_from(charge.amount_cents)
                .map_err(|_| GatewayError::InvalidToken("amount out of range".into()))?;
            let mut create = CreatePaymentIntent::new(amount, currency)
                .capture_method(stripe_core::PaymentIntentCaptureMethod::Manual)
                .confirm(true)
                .payment_method(charge.card_ref)
                .metadata(HashMap::from([(
                    "order_id".to_string(),
                    charge.key.to_string(),
                )]));
            if self.flavor == Flavor::Stripe {
                let mut methods = CreatePaymentIntentAutomaticPaymentMethods::new(true);
                methods.allow_redirects =
                    Some(CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects::Never);
                create = create
                    .automatic_payment_methods(methods)
                    .description(charge.description);
            }
            let sent = create
                .build()
                .customize::<PaymentIntentLite>()
                .request_strategy(idempotent(charge.key)?)
                .send(&self.client)
                .await;
            match sent {
                Ok(pi) => match pi.status.as_str() {
                    "requires_capture" | "succeeded" => {
                        Ok(Authorization::Authorized { payment_ref: pi.id })
                    }
                    // Confirmation failed on the card (how localstripe declines).
                    "requires_payment_method" | "canceled" => Ok(Authorization::Declined {
                        reason: "card_declined".into(),
                    }),
                    other => Err(GatewayError::Unavailable(format!(
                        "payment intent {} is {other}",
                        pi.id
                    ))),
                },
                Err(StripeError::Stripe(err, 402)) => Ok(Authorization::Declined {
                    reason: err
                        .decline_code
                        .clone()
                        .or_else(|| err.code.as_ref().map(|c| c.as_str().to_string()))
                        .unwrap_or_else(|| "card_declined".into()),
                }),
                Err(e) => Err(failure(e)),
            }
        })
    }

    fn capture<'a>(
        &'a self,
        payment_ref: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let sent = CapturePaymentIntent::new(payment_ref)
                .build()
                .customize::<PaymentIntentLite>()
                .request_strategy(idempotent(key)?)
                .send(&self.client)
                .await;
            match sent {
                Ok(pi) if pi.status == "succeeded" => Ok(()),
                Ok(pi) => Err(GatewayError::Unavailable(format!(
                    "payment intent {} is {} after capture",
                    pi.id, pi.status
                ))),
                // Captured before (under another key): done.
                Err(StripeError::Stripe(err, 400)) => {
                    match self.payment_intent(payment_ref).await?.status.as_str() {
                        "succeeded" => Ok(()),
                        _ => Err(GatewayError::InvalidToken(describe(&err))),
                    }
                }
                Err(e) => Err(failure(e)),
            }
        })
    }

    fn refund<'a>(
        &'a self,
        payment_ref: &'a str,
        amount_cents: u64,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(), GatewayError>> {
        Box::pin(async move {
            let amount = i64::try_from(amount_cents)
                .map_err(|_| GatewayError::InvalidToken("amount out of range".into()))?;
            // A capture may land between the look and the cancel: look again.
            for _ in 0..3 {
                let pi = self.payment_intent(payment_ref).await?;
                let sent = match pi.status.as_str() {
                    "canceled" => return Ok(()),
                    "requires_capture" => CancelPaymentIntent::new(payment_ref)
                        .build()
                        .customize::<PaymentIntentLite>()
                        .request_strategy(idempotent(&format!("{key}:void"))?)
                        .send(&self.client)
                        .await
                        .map(|_| ()),
                    "succeeded" => CreateRefund::new()
                        .payment_intent(payment_ref)
                        .amount(amount)
                        .build()
                        .customize::<RefundLite>()
                        .request_strategy(idempotent(key)?)
                        .send(&self.client)
                        .await
                        .map(|_| ()),
                    other => {
                        return Err(GatewayError::Unavailable(format!(
                            "payment intent {payment_ref} is {other}: nothing to give back yet"
                        )))
                    }
                };
                match sent {
                    Ok(()) => return Ok(()),
                    Err(StripeError::Stripe(_, 400)) => continue,
                    Err(e) => return Err(failure(e)),
                }
            }
            Err(GatewayError::Unavailable(format!(
                "payment intent {payment_ref} kept changing under the refund"
            )))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brands_read_as_fans_know_them() {
        assert_eq!(brand_name("visa"), "Visa");
        assert_eq!(brand_name("amex"), "American Express");
        assert_eq!(brand_name("eftpos_au"), "Eftpos_au");
        assert_eq!(brand_name(""), "Card");
    }
}
