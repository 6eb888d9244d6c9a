//! Crash safety of the order saga: the event group's leader is killed (a crash
//! point aborts it, as `kill -9` would) at each step of an order (before the
//! authorization, after it, before the capture, after it) and of a cancel (after
//! the refund), with the Stripe gateway on the test's Stripe-compatible server.
//! A new leader finishes every order: CONFIRMED with its tickets and exactly one
//! capture, or FAILED with its seats released and nothing charged, and a cancelled
//! order refunded exactly once.

use std::time::Duration;

use anyhow::{bail, Result};
use boxoffice_client::{Client, NewVenue};
use boxoffice_node::domain::ids::{self, Kind};
use boxoffice_tests::stripe_mock::{MockStripe, SECRET};
use boxoffice_tests::{s, user, wait_for, ClusterOpts, TestCluster};
use serde_json::{json, Value};
use uuid::Uuid;

/// Waits until node `id` has exited by itself (its crash point fired), reaps it
/// and starts it again.
async fn crashed_then_restarted(c: &mut TestCluster, id: u64, point: &str) -> Result<()> {
    for _ in 0..400 {
        if c.node_mut(id).has_exited() {
            c.kill(id)?;
            c.start_node(id)?;
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("node {id} did not crash at {point}")
}

/// Waits until the order waits for nothing more (read through any node).
async fn settled(c: &Client, token: &str, order: &str) -> Result<Value> {
    wait_for(Duration::from_secs(60), "the order to settle", || async {
        let Ok(o) = c.order(token, order).await else {
            return Ok(None);
        };
        let done = matches!(
            (o["status"].as_str(), o["payment_status"].as_str()),
            (Some("CONFIRMED"), Some("CAPTURED"))
                | (Some("FAILED"), Some("DECLINED"))
                | (Some("CANCELLED"), Some("REFUNDED"))
        );
        Ok(done.then_some(o))
    })
    .await
}

fn cents(v: &Value) -> u64 {
    (v.as_f64().unwrap_or_default() * 100.0).round() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_at_each_saga_step_leaves_no_money_without_tickets() -> Result<()> {
    let mock = MockStripe::start().await?;
    let crash_dir = tempfile::tempdir()?;
    let crash_file = |id: u64| crash_dir.path().join(format!("crash-{id}"));
    let opts = ClusterOpts {
        env: vec![(
            "BOXOFFICE_CRASH_FILE".into(),
            crash_dir
                .path()
                .join("crash-{id}")
                .to_string_lossy()
                .into_owned(),
        )],
        extra_toml: format!(
            "[inventory]\nmax_tickets_per_user = 100\n\n[orders]\nrecovery_interval_ms = 300\nrecovery_grace_ms = 1500\n\n\
             [payments]\ngateway = \"stripe\"\nstripe_api_key = \"{SECRET}\"\n\
             stripe_api_base = \"{}\"\nstripe_timeout_ms = 3000\n",
            mock.base()
        ),
        ..ClusterOpts::default()
    };
    let (mut c, _) = TestCluster::start_ready(opts).await?;
    let venue = c
        .client(1)
        .create_venue(&NewVenue::sample("Crash Hall", 2, 10), None)
        .await?;
    let event = c
        .client(2)
        .create_event(&json!({
            "name": "Crash Night", "artist": "Saga", "description": "", "category": "concert",
            "venue_id": venue.venue_id, "date": "2030-06-01T20:00:00Z",
            "on_sale_date": "2020-01-01T10:00:00Z",
            "pricing_tiers": [{"name": "Standard", "price": 100.00, "fees": 10.00,
                               "sections": ["Floor"]}],
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
    let a = user(&c.client(1), "crash-buyer").await?;
    let visa = c
        .client(2)
        .add_payment_method(&a, &json!({"type": "CARD", "card_token": "tok_visa"}))
        .await?;
    let declining = c
        .client(3)
        .add_payment_method(
            &a,
            &json!({"type": "CARD", "card_token": "tok_chargeDeclined"}),
        )
        .await?;

    let cases = [
        ("before_authorize", &visa),
        ("after_authorize", &visa),
        ("after_authorize", &declining),
        ("before_capture", &visa),
        ("after_capture", &visa),
    ];
    for (i, (point, card)) in cases.into_iter().enumerate() {
        let leader = c
            .wait_for_leader(event.group_id, Duration::from_secs(20))
            .await?;
        let reader = c.client(c.other_than(leader));
        let held = reader
            .reserve(
                &a,
                &json!({"event_id": event.event_id, "seat_ids": seats[2 * i..2 * i + 2]}),
                None,
            )
            .await?;
        let reservation: Uuid = s(&held["reservation_id"]).parse()?;
        let order_id = ids::inside(
            &event_uuid,
            Kind::Order,
            &Uuid::new_v5(&reservation, b"order"),
        )
        .to_string();
        std::fs::write(crash_file(leader), point)?;
        // The answer may or may not come before the crash.
        let _ = c
            .client(leader)
            .create_order(
                &a,
                &json!({"reservation_id": reservation,
                        "payment_method_id": card["payment_method_id"]}),
                None,
            )
            .await;
        crashed_then_restarted(&mut c, leader, point).await?;
        let o = settled(&reader, &a, &order_id).await?;
        let intents = mock.intents_of(&order_id);
        if card == &declining {
            assert_eq!(o["status"], json!("FAILED"), "{point}: {o}");
            assert!(intents.iter().all(|i| i.captured == 0), "{point}: charged");
            // The map comes from the nearest replica: it may trail by a moment.
            wait_for(Duration::from_secs(10), "the seats released", || async {
                let map = reader.seat_map(&event.event_id).await?;
                let states: Vec<(String, String)> = Client::seats_of(&map);
                let free = seats[2 * i..2 * i + 2]
                    .iter()
                    .all(|seat| states.contains(&(seat.clone(), "AVAILABLE".into())));
                Ok(free.then_some(()))
            })
            .await?;
        } else {
            assert_eq!(o["status"], json!("CONFIRMED"), "{point}: {o}");
            assert_eq!(o["tickets"].as_array().map(Vec::len), Some(2), "{point}");
            // One authorization, captured once, for the order's total.
            assert_eq!(intents.len(), 1, "{point}: {intents:?}");
            assert_eq!(intents[0].captures, 1, "{point}: {intents:?}");
            assert_eq!(intents[0].captured, cents(&o["total"]), "{point}");
        }
        c.wait_healthy(Duration::from_secs(30)).await?;
    }

    // A cancel whose leader dies after the gateway refunded, before the group
    // recorded it: refunded once all the same.
    let leader = c
        .wait_for_leader(event.group_id, Duration::from_secs(20))
        .await?;
    let reader = c.client(c.other_than(leader));
    let held = reader
        .reserve(
            &a,
            &json!({"event_id": event.event_id, "seat_ids": seats[12..14]}),
            None,
        )
        .await?;
    let o = reader
        .create_order(
            &a,
            &json!({"reservation_id": held["reservation_id"],
                    "payment_method_id": visa["payment_method_id"]}),
            None,
        )
        .await?;
    let order_id = s(&o["order_id"]);
    settled(&reader, &a, &order_id).await?;
    std::fs::write(crash_file(leader), "after_refund")?;
    let _ = c.client(leader).cancel_order(&a, &order_id).await;
    crashed_then_restarted(&mut c, leader, "after_refund").await?;
    let o = settled(&reader, &a, &order_id).await?;
    assert_eq!(o["status"], json!("CANCELLED"));
    let intents = mock.intents_of(&order_id);
    assert_eq!(intents.len(), 1);
    assert_eq!(
        (intents[0].captured, intents[0].refunded),
        (cents(&o["total"]), cents(&o["total"]))
    );
    Ok(())
}
