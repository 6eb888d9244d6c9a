//! The Stripe gateway (async-stripe) against the Stripe-compatible server the test
//! starts: a card from a test token, an authorization and its idempotent retry
//! (one PaymentIntent), a decline, capture (twice: one capture), refund, the void
//! of an uncaptured authorization, a token Stripe does not know, an outage, and a
//! wrong key.

use std::time::Duration;

use anyhow::Result;
use boxoffice_node::config::StripeFlavor;
use boxoffice_node::payments::{Authorization, Charge, GatewayError, PaymentGateway, Stripe};
use boxoffice_tests::stripe_mock::{MockStripe, SECRET};

fn gateway(mock: &MockStripe, secret: &str) -> Result<Stripe> {
    Ok(Stripe::new(
        secret,
        &mock.base(),
        StripeFlavor::Stripe,
        Duration::from_secs(5),
    )?)
}

fn charge<'a>(card: &'a str, key: &'a str, amount_cents: u64) -> Charge<'a> {
    Charge {
        key,
        card_ref: card,
        amount_cents,
        currency: "usd",
        description: "test order",
    }
}

#[tokio::test]
async fn the_stripe_gateway_authorizes_captures_refunds_and_retries_idempotently() -> Result<()> {
    let mock = MockStripe::start().await?;
    let g = gateway(&mock, SECRET)?;

    let visa = g.card("tok_visa").await?;
    assert_eq!(
        (visa.brand.as_str(), visa.last_four.as_str(), visa.exp_month),
        ("Visa", "4242", 12)
    );
    // Attached to a customer of its own, so it can pay more than once.
    assert!(
        visa.gateway_ref.starts_with("cus_") && visa.gateway_ref.contains("/pm_"),
        "{}",
        visa.gateway_ref
    );
    assert!(matches!(
        g.card("tok_nonsense").await,
        Err(GatewayError::InvalidToken(_))
    ));

    // Authorize; the same key again is the same PaymentIntent, not a second one.
    let first = g
        .authorize(charge(&visa.gateway_ref, "order-1", 186_000))
        .await?;
    let Authorization::Authorized { payment_ref } = first.clone() else {
        panic!("declined: {first:?}");
    };
    let again = g
        .authorize(charge(&visa.gateway_ref, "order-1", 186_000))
        .await?;
    assert_eq!(again, first);
    let intents = mock.intents_of("order-1");
    assert_eq!(intents.len(), 1);
    assert_eq!(
        (intents[0].amount, intents[0].status.as_str()),
        (186_000, "requires_capture")
    );
    assert_eq!(mock.creates_without_key(), 0);

    // Capture, twice under the same key: one capture.
    g.capture(&payment_ref, "order-1:capture").await?;
    g.capture(&payment_ref, "order-1:capture").await?;
    let i = &mock.intents_of("order-1")[0];
    assert_eq!(
        (i.captures, i.captured, i.status.as_str()),
        (1, 186_000, "succeeded")
    );

    // Refund a capture, twice under the same key: refunded once.
    g.refund(&payment_ref, 186_000, "order-1:refund").await?;
    g.refund(&payment_ref, 186_000, "order-1:refund").await?;
    // Under another key, Stripe says it is refunded already: done too.
    g.refund(&payment_ref, 186_000, "another-key").await?;
    assert_eq!(mock.money(), (186_000, 186_000));

    // An authorization given back before capture is voided, not refunded.
    let Authorization::Authorized { payment_ref: held } = g
        .authorize(charge(&visa.gateway_ref, "order-2", 5_000))
        .await?
    else {
        panic!("declined");
    };
    g.refund(&held, 5_000, "order-2:refund").await?;
    let i = &mock.intents_of("order-2")[0];
    assert_eq!(
        (i.status.as_str(), i.captured, i.refunded),
        ("canceled", 0, 0)
    );

    // A decline, and its retry under the same key: declined again, nothing held.
    let declining = g.card("tok_chargeDeclined").await?;
    for _ in 0..2 {
        let d = g
            .authorize(charge(&declining.gateway_ref, "order-3", 1_000))
            .await?;
        assert_eq!(
            d,
            Authorization::Declined {
                reason: "generic_decline".into()
            }
        );
    }
    assert!(mock.intents_of("order-3").is_empty());

    // An outage is not a decline: the caller may try again with the same key.
    mock.fail_next(1);
    let down = g
        .authorize(charge(&visa.gateway_ref, "order-4", 1_000))
        .await;
    assert!(
        matches!(down, Err(GatewayError::Unavailable(_))),
        "{down:?}"
    );
    let up = g
        .authorize(charge(&visa.gateway_ref, "order-4", 1_000))
        .await?;
    assert!(matches!(up, Authorization::Authorized { .. }));
    assert_eq!(mock.intents_of("order-4").len(), 1);

    // An authorization that lapsed cannot be captured: gone, not "try again".
    let Authorization::Authorized {
        payment_ref: lapsing,
    } = g
        .authorize(charge(&visa.gateway_ref, "order-5", 700))
        .await?
    else {
        panic!("declined");
    };
    mock.lapse("order-5");
    let gone = g.capture(&lapsing, "order-5:capture").await;
    assert!(matches!(gone, Err(GatewayError::Gone(_))), "{gone:?}");

    // A wrong secret key is our outage, not the fan's bad card.
    let wrong = gateway(&mock, "sk_test_wrong")?;
    let refused = wrong.card("tok_visa").await;
    assert!(
        matches!(refused, Err(GatewayError::Unavailable(_))),
        "{refused:?}"
    );
    Ok(())
}
