//! Wire compatibility with a Stripe emulator nobody here wrote: localstripe (PyPI,
//! pinned and installed by `scripts/setup`), its app served on 127.0.0.1 only. The
//! Stripe gateway in its localstripe flavor resolves cards, authorizes, captures,
//! refunds, voids and sees a decline there; then a cluster configured with it
//! sells and cancels an order end to end.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use boxoffice_client::{Client, NewVenue};
use boxoffice_node::config::StripeFlavor;
use boxoffice_node::payments::{Authorization, Charge, GatewayError, PaymentGateway, Stripe};
use boxoffice_tests::{free_addrs, s, user, wait_for, ClusterOpts, TestCluster};
use serde_json::json;

const SECRET: &str = "sk_test_localstripe";

/// localstripe's app on 127.0.0.1 (its own command listens on every interface
/// and saves its store to /tmp), in memory, killed by pid when dropped.
struct Localstripe {
    child: Child,
    base: String,
}

impl Drop for Localstripe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn python() -> Result<PathBuf> {
    let tools = std::env::var_os("BOXOFFICE_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/boxoffice")))
        .context("neither BOXOFFICE_TOOLS nor HOME is set")?;
    let bin = tools.join("localstripe-1.15.10/bin/python");
    if !bin.exists() {
        bail!(
            "{} is missing: run scripts/setup (it installs localstripe from PyPI)",
            bin.display()
        );
    }
    Ok(bin)
}

impl Localstripe {
    fn start() -> Result<Self> {
        let addr = free_addrs(1)?[0];
        let child = Command::new(python()?)
            .args([
                "-c",
                // In memory only: its store otherwise pickles itself to /tmp.
                "import sys; from aiohttp import web; import localstripe.server as s; \
                 import localstripe.resources as r; r.Store.dump_to_disk = lambda self: None; \
                 web.run_app(s.app, host='127.0.0.1', port=int(sys.argv[1]), print=None)",
                &addr.port().to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let me = Self {
            child,
            base: format!("http://{addr}/"),
        };
        for _ in 0..200 {
            if TcpStream::connect(addr).is_ok() {
                return Ok(me);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        bail!("localstripe did not listen on {addr}")
    }
}

fn charge<'a>(card: &'a str, key: &'a str, amount_cents: u64) -> Charge<'a> {
    Charge {
        key,
        card_ref: card,
        amount_cents,
        currency: "usd",
        description: "",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stripe_gateway_speaks_to_localstripe() -> Result<()> {
    let ls = Localstripe::start()?;
    let g = Stripe::new(
        SECRET,
        &ls.base,
        StripeFlavor::Localstripe,
        Duration::from_secs(10),
    )?;

    let visa = g.card("tok_visa").await?;
    assert_eq!(
        (visa.brand.as_str(), visa.last_four.as_str()),
        ("Visa", "4242")
    );
    assert!(visa.gateway_ref.starts_with("pm_"), "{visa:?}");
    assert!(matches!(
        g.card("tok_unheard_of").await,
        Err(GatewayError::InvalidToken(_))
    ));

    // Authorize, capture, refund.
    let a = g
        .authorize(charge(&visa.gateway_ref, "ls-order-1", 12_345))
        .await?;
    let Authorization::Authorized { payment_ref } = a else {
        panic!("declined: {a:?}")
    };
    assert!(payment_ref.starts_with("pi_"));
    g.capture(&payment_ref, "ls-order-1:capture").await?;
    g.refund(&payment_ref, 12_345, "ls-order-1:refund").await?;

    // An authorization given back before capture is voided.
    let Authorization::Authorized { payment_ref: held } = g
        .authorize(charge(&visa.gateway_ref, "ls-order-2", 500))
        .await?
    else {
        panic!("declined")
    };
    g.refund(&held, 500, "ls-order-2:refund").await?;

    // localstripe declines its "charge customer fail" card when charged.
    let declining = g.card("tok_chargeDeclined").await?;
    let d = g
        .authorize(charge(&declining.gateway_ref, "ls-order-3", 999))
        .await?;
    assert!(matches!(d, Authorization::Declined { .. }), "{d:?}");

    // A cluster charging through localstripe: an order, captured, then cancelled.
    let opts = ClusterOpts {
        extra_toml: format!(
            "[payments]\ngateway = \"stripe\"\nstripe_flavor = \"localstripe\"\n\
             stripe_api_key = \"{SECRET}\"\nstripe_api_base = \"{}\"\n",
            ls.base
        ),
        ..ClusterOpts::default()
    };
    let (c, _) = TestCluster::start_ready(opts).await?;
    let venue = c
        .client(1)
        .create_venue(&NewVenue::sample("Emulated Hall", 1, 10), None)
        .await?;
    let event = c
        .client(2)
        .create_event(&json!({
            "name": "Emulated Night", "artist": "Wire", "description": "", "category": "concert",
            "venue_id": venue.venue_id, "date": "2030-06-01T20:00:00Z",
            "on_sale_date": "2020-01-01T10:00:00Z",
            "pricing_tiers": [{"name": "Standard", "price": 40.00, "sections": ["Floor"]}],
        }))
        .await?;
    c.client(3)
        .set_event_status(&event.event_id, "ON_SALE")
        .await?;
    let n = c.client(2);
    let fan = user(&n, "emulated").await?;
    let card = n
        .add_payment_method(
            &fan,
            &json!({"type": "CARD", "card_token": "tok_mastercard"}),
        )
        .await?;
    // localstripe calls every card a Visa; the last four are the card's own.
    assert_eq!(card["card_last_four"], json!("4444"));
    let map = n.seat_map(&event.event_id).await?;
    let seat = Client::seats_of(&map)[0].0.clone();
    let held = n
        .reserve(
            &fan,
            &json!({"event_id": event.event_id, "seat_ids": [seat]}),
            None,
        )
        .await?;
    let o = c
        .client(3)
        .create_order(
            &fan,
            &json!({"reservation_id": held["reservation_id"],
                    "payment_method_id": card["payment_method_id"]}),
            None,
        )
        .await?;
    assert_eq!(o["status"], json!("CONFIRMED"), "{o}");
    let id = s(&o["order_id"]);
    wait_for(Duration::from_secs(30), "capture", || async {
        let o = n.order(&fan, &id).await?;
        Ok((o["payment_status"] == json!("CAPTURED")).then_some(()))
    })
    .await?;
    c.client(1).cancel_order(&fan, &id).await?;
    wait_for(Duration::from_secs(30), "refund", || async {
        let o = n.order(&fan, &id).await?;
        Ok((o["payment_status"] == json!("REFUNDED")).then_some(()))
    })
    .await?;
    Ok(())
}
