//! The money check: 200 concurrent buyers hold seats, order them through random
//! nodes (one in ten with a card that is declined) and cancel about a third of
//! their orders, with the Stripe gateway on the test's Stripe-compatible server.
//! Once every order has settled, the gateway's captured minus refunded equals the
//! price of the live tickets (the totals of the confirmed orders) to the cent,
//! every confirmed order was captured exactly once, nothing declined or cancelled
//! keeps money, and the seat map sells exactly the confirmed orders' seats.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use boxoffice_client::{Client, NewVenue};
use boxoffice_node::domain::ids::{self, Kind};
use boxoffice_tests::stripe_mock::{MockStripe, SECRET};
use boxoffice_tests::{s, wait_for, ClusterOpts, TestCluster};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use uuid::Uuid;

const BUYERS: usize = 200;
const USERS: usize = 20;

fn cents(v: &Value) -> u64 {
    (v.as_f64().unwrap_or_default() * 100.0).round() as u64
}

/// A user: session token, a card that pays, a card that is declined.
#[derive(Clone)]
struct Account {
    token: String,
    visa: String,
    declined: String,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_minus_refunded_is_the_price_of_the_live_tickets() -> Result<()> {
    let mock = MockStripe::start().await?;
    let opts = ClusterOpts {
        extra_toml: format!(
            "[inventory]\nmax_tickets_per_user = 100\n\n\
             [orders]\nrecovery_interval_ms = 500\nrecovery_grace_ms = 3000\n\n\
             [payments]\ngateway = \"stripe\"\nstripe_api_key = \"{SECRET}\"\n\
             stripe_api_base = \"{}\"\n\n\
             [rate_limits]\nreserve = {{ requests = 100000, window_seconds = 60 }}\n\
             authenticated = {{ requests = 100000, window_seconds = 60 }}\n",
            mock.base()
        ),
        ..ClusterOpts::default()
    };
    let (c, _) = TestCluster::start_ready(opts).await?;
    let venue = c
        .client(1)
        .create_venue(&NewVenue::sample("Money Arena", 10, 50), None)
        .await?;
    let event = c
        .client(2)
        .create_event(&json!({
            "name": "Money Night", "artist": "Ledger", "description": "", "category": "concert",
            "venue_id": venue.venue_id, "date": "2030-06-01T20:00:00Z",
            "on_sale_date": "2020-01-01T10:00:00Z",
            "pricing_tiers": [{"name": "Standard", "price": 73.33, "sections": ["Floor"]}],
        }))
        .await?;
    c.client(3)
        .set_event_status(&event.event_id, "ON_SALE")
        .await?;
    let event_uuid: Uuid = event.event_id.parse()?;
    let map = c.client(1).seat_map(&event.event_id).await?;
    let seats: Vec<String> = Client::seats_of(&map)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(seats.len(), 500);

    let mut accounts = Vec::new();
    for u in 0..USERS {
        let client = c.client(1 + (u as u64 % 3));
        let email = format!("payer{u}@example.com");
        client.register(&email, "money money", "Payer").await?;
        let token = s(&client.login(&email, "money money").await?["access_token"]);
        let card = |t: &'static str| {
            let (client, token) = (client.clone(), token.clone());
            async move {
                let pm = client
                    .add_payment_method(&token, &json!({"type": "CARD", "card_token": t}))
                    .await?;
                anyhow::Ok(s(&pm["payment_method_id"]))
            }
        };
        accounts.push(Account {
            visa: card("tok_visa").await?,
            declined: card("tok_chargeDeclined").await?,
            token,
        });
    }

    // (buyer's account, order id) of every order a buyer tried to make.
    let tried: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let clients: Vec<Client> = c.ids().into_iter().map(|id| c.client(id)).collect();
    let mut tasks = Vec::new();
    for b in 0..BUYERS {
        let (clients, seats, tried) = (clients.clone(), seats.clone(), tried.clone());
        let account = accounts[b % USERS].clone();
        let event_id = event.event_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(b as u64);
            for _attempt in 0..5 {
                let node = clients
                    .choose(&mut rng)
                    .cloned()
                    .unwrap_or_else(|| clients[0].clone());
                let n = rng.gen_range(1..=3);
                let pick: Vec<&String> = seats.choose_multiple(&mut rng, n).collect();
                let Ok(held) = node
                    .reserve(
                        &account.token,
                        &json!({"event_id": event_id, "seat_ids": pick}),
                        None,
                    )
                    .await
                else {
                    continue;
                };
                let reservation: Uuid = s(&held["reservation_id"]).parse().unwrap_or_default();
                let order_id = ids::inside(
                    &event_uuid,
                    Kind::Order,
                    &Uuid::new_v5(&reservation, b"order"),
                )
                .to_string();
                tried
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((b % USERS, order_id.clone()));
                let card = if rng.gen_bool(0.1) {
                    &account.declined
                } else {
                    &account.visa
                };
                let node = clients
                    .choose(&mut rng)
                    .cloned()
                    .unwrap_or_else(|| clients[0].clone());
                let ordered = node
                    .create_order(
                        &account.token,
                        &json!({"reservation_id": reservation, "payment_method_id": card}),
                        None,
                    )
                    .await;
                if ordered.is_ok() && rng.gen_bool(0.33) {
                    let node = clients
                        .choose(&mut rng)
                        .cloned()
                        .unwrap_or_else(|| clients[0].clone());
                    let _ = node.cancel_order(&account.token, &order_id).await;
                }
                return;
            }
        }));
    }
    for t in tasks {
        t.await?;
    }

    // Every order that exists settles; orders whose create never landed do not exist.
    let tried = tried.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let reader = c.client(1);
    let (mut live_cents, mut sold) = (0u64, BTreeSet::new());
    let mut outcomes = [0usize; 3];
    for (account, order_id) in &tried {
        let token = &accounts[*account].token;
        let Some(o) = wait_for(Duration::from_secs(60), "an order to settle", || async {
            match reader.order(token, order_id).await {
                Err(e) if e.status() == Some(404) => Ok(Some(None)),
                Err(_) => Ok(None),
                Ok(o) => {
                    let done = matches!(
                        o["payment_status"].as_str(),
                        Some("CAPTURED" | "DECLINED" | "REFUNDED")
                    );
                    Ok(done.then_some(Some(o)))
                }
            }
        })
        .await?
        else {
            continue;
        };
        let intents = mock.intents_of(order_id);
        let captures: u32 = intents.iter().map(|i| i.captures).sum();
        match o["status"].as_str() {
            Some("CONFIRMED") => {
                outcomes[0] += 1;
                live_cents += cents(&o["total"]);
                assert_eq!(captures, 1, "{order_id}: {intents:?}");
                assert_eq!(
                    intents.iter().map(|i| i.captured).sum::<u64>(),
                    cents(&o["total"])
                );
                for seat in o["seats"].as_array().into_iter().flatten() {
                    assert!(
                        sold.insert(s(&seat["seat_id"])),
                        "a seat sold twice: {seat}"
                    );
                }
            }
            Some("CANCELLED") => {
                outcomes[1] += 1;
                assert!(captures <= 1, "{order_id}: {intents:?}");
                assert!(
                    intents.iter().all(|i| i.captured == i.refunded),
                    "{intents:?}"
                );
            }
            Some("FAILED") => {
                outcomes[2] += 1;
                assert!(intents.iter().all(|i| i.captured == 0), "{intents:?}");
            }
            other => panic!("order {order_id} ended {other:?}"),
        }
    }
    let (captured, refunded) = mock.money();
    assert_eq!(
        captured - refunded,
        live_cents,
        "captured {captured} - refunded {refunded} != live tickets {live_cents}"
    );
    // Each kind of ending happened (the run exercised them all).
    assert!(
        outcomes.iter().all(|&n| n > 0),
        "confirmed/cancelled/failed: {outcomes:?}"
    );
    // The map comes from the nearest replica: it may trail by a moment.
    let sold_in_map = || async {
        let map = reader.seat_map(&event.event_id).await?;
        anyhow::Ok(
            Client::seats_of(&map)
                .into_iter()
                .filter(|(_, st)| st == "SOLD")
                .map(|(id, _)| id)
                .collect::<BTreeSet<String>>(),
        )
    };
    let agreed = wait_for(Duration::from_secs(10), "the seat map", || async {
        Ok((sold_in_map().await? == sold).then_some(()))
    })
    .await;
    if agreed.is_err() {
        assert_eq!(sold_in_map().await?, sold);
    }
    Ok(())
}
