//! [`Stripe`]: the gateway on Stripe's API through async-stripe (feature `stripe`).
//!
//! A card token becomes a PaymentMethod attached to a Customer of its own (Stripe
//! lets an unattached PaymentMethod pay only once; the gateway reference is
//! `cus_…/pm_…`); an order is authorized by a PaymentIntent created and confirmed
//! with manual capture under the order id as idempotency key, declining cards
//! that would need the buyer present (3-D Secure); capture and refund carry their
//! own keys. Giving money back looks at the
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
    ApiErrors, ApiErrorsType, Client, ClientBuilder, IdempotencyKey, RequestStrategy, StripeError,
    StripeRequest,
};
use stripe_client_core::{RequestBuilder, StripeMethod};
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

/// What went wrong. Only a request Stripe found invalid (a bad token, a payment
/// method it does not know) is the caller's fault; anything about us (a wrong
/// or restricted key, an idempotency key reused with other parameters), a key in
/// flight elsewhere (409), rate limits (429), Stripe's own errors and the network
/// are outages: the step is tried again later, never turned into a decline.
fn failure(e: StripeError) -> GatewayError {
    match e {
        StripeError::Stripe(err, status) => {
            let ours = matches!(
                err.type_,
                ApiErrorsType::IdempotencyError | ApiErrorsType::ApiError
            );
            if (400..500).contains(&status) && ![401, 403, 409, 429].contains(&status) && !ours {
                GatewayError::InvalidToken(describe(&err))
            } else {
                if err.type_ == ApiErrorsType::IdempotencyError {
                    tracing::error!("Stripe refused an idempotency key: {}", describe(&err));
                }
                GatewayError::Unavailable(format!("Stripe {status}: {}", describe(&err)))
            }
        }
        other => GatewayError::Unavailable(other.to_string()),
    }
}

fn code_of(err: &ApiErrors) -> Option<&str> {
    err.code.as_ref().map(|c| c.as_str())
}

/// A Customer of one card.
#[derive(serde::Serialize)]
struct NewCustomer<'a> {
    payment_method: &'a str,
}

#[derive(miniserde::Deserialize)]
struct CustomerLite {
    id: String,
}

/// `cus_…/pm_…` → (customer, payment method); a bare `pm_…` has no customer.
fn split_ref(card_ref: &str) -> (Option<&str>, &str) {
    match card_ref.split_once('/') {
        Some((customer, pm)) => (Some(customer), pm),
        None => (None, card_ref),
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
            // Attached to a Customer, the card pays for every later order too.
            let gateway_ref = match self.flavor {
                Flavor::Stripe => {
                    let customer = RequestBuilder::new(StripeMethod::Post, "/customers")
                        .form(&NewCustomer {
                            payment_method: &pm.id,
                        })
                        .customize::<CustomerLite>()
                        .send(&self.client)
                        .await
                        .map_err(failure)?;
                    format!("{}/{}", customer.id, pm.id)
                }
                Flavor::Localstripe => pm.id,
            };
            Ok(Card {
                brand: brand_name(&card.brand),
                last_four: card.last4,
                exp_month: u8::try_from(card.exp_month).unwrap_or(0),
                exp_year: u16::try_from(card.exp_year).unwrap_or(0),
                gateway_ref,
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
            let (customer, payment_method) = split_ref(charge.card_ref);
            let mut create = CreatePaymentIntent::new(amount, currency)
                .capture_method(stripe_core::PaymentIntentCaptureMethod::Manual)
                .confirm(true)
                .payment_method(payment_method)
                .metadata(HashMap::from([(
                    "order_id".to_string(),
                    charge.key.to_string(),
                )]));
            if self.flavor == Flavor::Stripe {
                let mut methods = CreatePaymentIntentAutomaticPaymentMethods::new(true);
                methods.allow_redirects =
                    Some(CreatePaymentIntentAutomaticPaymentMethodsAllowRedirects::Never);
                // Nobody is there to pass 3-D Secure: such a card is declined
                // (402 authentication_required) instead of waiting for ever.
                create = create
                    .automatic_payment_methods(methods)
                    .error_on_requires_action(true)
                    .description(charge.description);
            }
            if let Some(customer) = customer {
                create = create.customer(customer);
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
                    // It wants the buyer (3-D Secure) or another confirmation:
                    // let it go and decline.
                    "requires_action" | "requires_confirmation" => {
                        CancelPaymentIntent::new(pi.id.as_str())
                            .build()
                            .customize::<PaymentIntentLite>()
                            .request_strategy(idempotent(&format!("{}:void", charge.key))?)
                            .send(&self.client)
                            .await
                            .map_err(failure)?;
                        Ok(Authorization::Declined {
                            reason: "authentication_required".into(),
                        })
                    }
                    other => Err(GatewayError::Unavailable(format!(
                        "payment intent {} is {other}",
                        pi.id
                    ))),
                },
                Err(StripeError::Stripe(err, status))
                    if status == 402 || err.type_ == ApiErrorsType::CardError =>
                {
                    Ok(Authorization::Declined {
                        reason: err
                            .decline_code
                            .clone()
                            .or_else(|| code_of(&err).map(str::to_string))
                            .unwrap_or_else(|| "card_declined".into()),
                    })
                }
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
                // Captured before (under another key): done. Cancelled (the
                // authorization lapsed, or was voided elsewhere): gone for good.
                Err(StripeError::Stripe(err, 400)) => {
                    match self.payment_intent(payment_ref).await?.status.as_str() {
                        "succeeded" => Ok(()),
                        "canceled" => Err(GatewayError::Gone(describe(&err))),
                        _ => Err(failure(StripeError::Stripe(err, 400))),
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
                    Err(StripeError::Stripe(err, 400))
                        if code_of(&err) == Some("charge_already_refunded") =>
                    {
                        return Ok(())
                    }
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
