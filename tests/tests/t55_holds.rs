//! Seat holds against a 3-node cluster, through the group's leader and its
//! followers: every status code of `POST /v1/seats/reserve` and the reservation
//! endpoints, owner-only access, idempotent retries, event details and seat maps
//! from every replica; holds and their expiry across a full cluster restart.

use std::time::Duration;

use anyhow::{Context, Result};
use boxoffice_client::{sample_event, Client, ClientError, NewVenue};
use boxoffice_tests::{code, s, user, wait_for, ClusterOpts, TestCluster};
use serde_json::json;

/// A venue of 2 rows x 10 seats and an event on it, put on sale; returns the event
/// id, its group's leader and the seat ids in map order.
async fn on_sale_event(c: &TestCluster, name: &str) -> Result<(String, u64, Vec<String>)> {
    let venue = c
        .client(1)
        .create_venue(&NewVenue::sample(name, 2, 10), None)
        .await?;
    let e = c
        .client(2)
        .create_event(&sample_event(name, &venue.venue_id, &["Floor"]))
        .await?;
    c.client(3).set_event_status(&e.event_id, "ON_SALE").await?;
    let leader = c
        .wait_for_leader(e.group_id, Duration::from_secs(10))
        .await?;
    let map = c.client(1).seat_map(&e.event_id).await?;
    let seats: Vec<String> = Client::seats_of(&map)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(seats.len(), 20);
    Ok((e.event_id, leader, seats))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_code_of_holds_through_leader_and_followers() -> Result<()> {
    let (c, _) = TestCluster::start_ready(ClusterOpts::default()).await?;
    let (event, leader, seats) = on_sale_event(&c, "Hold Arena").await?;
    let follower = c.other_than(leader);
    let (lead, foll) = (c.client(leader), c.client(follower));
    let a = user(&lead, "alice").await?;
    let b = user(&foll, "bob").await?;

    // 201 through a follower, with the spec's totals (3 x 150.00 + 3 x 22.50).
    let r = foll
        .reserve(
            &a,
            &json!({"event_id": event, "seat_ids": seats[0..3]}),
            None,
        )
        .await?;
    assert_eq!(r["seat_ids"], json!(seats[0..3]));
    assert_eq!(r["total_price"], json!(450.0));
    assert_eq!(r["fees"], json!(67.5));
    assert_eq!(r["total"], json!(517.5));
    assert!(r["expires_at"].is_string());
    let held = s(&r["reservation_id"]);

    // 409 through the leader, naming the taken seat; nothing of it is held.
    let e = lead
        .reserve(
            &b,
            &json!({"event_id": event, "seat_ids": [seats[2], seats[3]]}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), (409, "SEATS_UNAVAILABLE".into()));
    if let ClientError::Api { details, .. } = &e {
        assert_eq!(details["seat_ids"], json!([seats[2]]));
    }
    // 400: duplicates, a seat of another event, neither seats nor quantity.
    let (other_event, _, other_seats) = on_sale_event(&c, "Other Arena").await?;
    for body in [
        json!({"event_id": event, "seat_ids": [seats[4], seats[4]]}),
        json!({"event_id": event, "seat_ids": [seats[4], other_seats[0]]}),
        json!({"event_id": event}),
    ] {
        let e = foll.reserve(&b, &body, None).await.unwrap_err();
        assert_eq!(e.status(), Some(400), "{body}: {e:?}");
    }
    // 404: an unknown seat, an unknown event, an unknown tier.
    let unknown = uuid::Uuid::new_v4().to_string();
    for body in [
        json!({"event_id": event, "seat_ids": [unknown]}),
        json!({"event_id": unknown, "seat_ids": [seats[4]]}),
        json!({"event_id": event, "quantity": 1, "tier_id": unknown}),
    ] {
        let e = lead.reserve(&b, &body, None).await.unwrap_err();
        assert_eq!(code(&e), (404, "NOT_FOUND".into()), "{body}");
    }
    // 401 without a token, 403 for another user's id.
    let e = lead
        .reserve(
            "",
            &json!({"event_id": event, "seat_ids": [seats[4]]}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    let e = lead
        .reserve(
            &b,
            &json!({"event_id": event, "seat_ids": [seats[4]], "user_id": uuid::Uuid::new_v4()}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()));

    // 422: at most 8 per user, counting what is held (3 + 6 > 8), then best
    // available up to the limit.
    let e = foll
        .reserve(&a, &json!({"event_id": event, "quantity": 6}), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (422, "PURCHASE_LIMIT_EXCEEDED".into()));
    let best = lead
        .reserve(&a, &json!({"event_id": event, "quantity": 5}), None)
        .await?;
    assert_eq!(
        best["seat_ids"],
        json!(seats[3..8]),
        "adjacent, front row first"
    );

    // Idempotency-Key: the retry gets the first hold back.
    let first = foll
        .reserve(
            &b,
            &json!({"event_id": event, "seat_ids": [seats[10]]}),
            Some("k1"),
        )
        .await?;
    let again = lead
        .reserve(
            &b,
            &json!({"event_id": event, "seat_ids": [seats[10]]}),
            Some("k1"),
        )
        .await?;
    assert_eq!(first["reservation_id"], again["reservation_id"]);

    // 409 NOT_ON_SALE: the sample event's sale opens in 2030 unless forced.
    let venue = c
        .client(1)
        .create_venue(&NewVenue::sample("Later Arena", 1, 4), None)
        .await?;
    let later = c
        .client(1)
        .create_event(&sample_event("later", &venue.venue_id, &["Floor"]))
        .await?;
    let e = lead
        .reserve(
            &b,
            &json!({"event_id": later.event_id, "quantity": 1}),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(code(&e), (409, "NOT_ON_SALE".into()));

    // The owner reads a reservation anywhere; another user's token cannot (403).
    for node in [leader, follower] {
        let v = c.client(node).reservation(&a, &held).await?;
        assert_eq!(v["status"], "ACTIVE");
        assert_eq!(v["seat_ids"], json!(seats[0..3]));
    }
    let e = lead.reservation(&b, &held).await.unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()));
    let e = lead.reservation(&a, &unknown).await.unwrap_err();
    assert_eq!(e.status(), Some(404));
    // Release: owner only, 204, and 204 again.
    let e = foll.release(&b, &held).await.unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()));
    foll.release(&a, &held).await?;
    lead.release(&a, &held).await?;
    assert_eq!(lead.reservation(&a, &held).await?["status"], "RELEASED");

    // Every replica's seat map and details converge: 20 - 5 (alice) - 1 (bob).
    for node in c.ids() {
        let client = c.client(node);
        let event = event.clone();
        wait_for(Duration::from_secs(10), "seat maps converge", || {
            let (client, event) = (client.clone(), event.clone());
            async move {
                let Ok(map) = client.seat_map(&event).await else {
                    return Ok(None);
                };
                let reserved = Client::seats_of(&map)
                    .iter()
                    .filter(|(_, st)| st == "RESERVED")
                    .count();
                Ok((reserved == 6).then_some(()))
            }
        })
        .await?;
        let d = client.event(&event).await?;
        assert_eq!(d["available_seats"], 14);
        assert_eq!(d["total_capacity"], 20);
        assert_eq!(d["pricing_tiers"][0]["available_seats"], 14);
        assert_eq!(d["sale_info"]["status"], "ON_SALE");
    }

    // Search from any node's catalog replica: words over name, artist, venue and
    // city; exact filters; bad paging is a 400.
    for node in c.ids() {
        let client = c.client(node);
        let found = client
            .search(&[("query", "hold ARENA"), ("city", "springfield")])
            .await?;
        let ids: Vec<String> = found["events"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|e| s(&e["event_id"]))
            .collect();
        assert_eq!(ids, vec![event.clone()], "{found}");
        assert_eq!(found["pagination"]["total"], 1);
        assert_eq!(found["events"][0]["price_range"]["min"], json!(150.0));
        let all = client.search(&[("query", "test band")]).await?;
        assert_eq!(all["pagination"]["total"], 3, "{all}");
        let none = client
            .search(&[("query", "arena"), ("category", "sports")])
            .await?;
        assert_eq!(none["pagination"]["total"], 0);
        for bad in [
            ("per_page", "0"),
            ("per_page", "101"),
            ("page", "0"),
            ("date_from", "soon"),
        ] {
            let e = client.search(&[bad]).await.unwrap_err();
            assert_eq!(e.status(), Some(400), "{bad:?}");
        }
    }

    // The load generator's lean transport (`Client::with_wire`) against real
    // nodes: a hold through a follower and its retry by idempotency key, the same
    // seats refused through the leader (the API error parsed), a release, and the
    // seats held again by someone else.
    let (wire_lead, wire_foll) = (lead.clone().with_wire(), foll.clone().with_wire());
    let body = json!({"event_id": other_event, "seat_ids": [other_seats[0], other_seats[1]]});
    let r = wire_foll.reserve(&a, &body, Some("wire-hold-1")).await?;
    let id = s(&r["reservation_id"]);
    assert_eq!(r["seat_ids"], json!([other_seats[0], other_seats[1]]));
    let again = wire_foll.reserve(&a, &body, Some("wire-hold-1")).await?;
    assert_eq!(s(&again["reservation_id"]), id);
    let e = wire_lead.reserve(&b, &body, None).await.unwrap_err();
    assert_eq!(code(&e), (409, "SEATS_UNAVAILABLE".into()));
    wire_lead.release(&a, &id).await?;
    let r = wire_lead.reserve(&b, &body, None).await?;
    assert_ne!(s(&r["reservation_id"]), id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_and_their_expiry_survive_a_full_restart() -> Result<()> {
    let (mut c, _) = TestCluster::start_ready(ClusterOpts {
        extra_toml: "[inventory]\nhold_seconds = 15\nsweep_interval_ms = 200\n".into(),
        ..ClusterOpts::default()
    })
    .await?;
    let (event, _, seats) = on_sale_event(&c, "Restart Arena").await?;
    let a = user(&c.client(1), "carol").await?;
    let r = c
        .client(2)
        .reserve(
            &a,
            &json!({"event_id": event, "seat_ids": seats[0..2]}),
            None,
        )
        .await?;
    let id = s(&r["reservation_id"]);
    let expires =
        chrono::DateTime::parse_from_rfc3339(&s(&r["expires_at"])).context("expires_at")?;

    c.restart_all()?;
    c.wait_healthy(Duration::from_secs(30)).await?;
    // Before its time the hold is still there on every node (the check is skipped
    // only if the restart itself outlasted the hold).
    let still_held = wait_for(Duration::from_secs(10), "reservation readable", || {
        let client = c.client(3);
        let (a, id) = (a.clone(), id.clone());
        async move { Ok(client.reservation(&a, &id).await.ok()) }
    })
    .await?;
    if chrono::Utc::now() < expires - chrono::Duration::seconds(2) {
        assert_eq!(still_held["status"], "ACTIVE");
        let map = c.client(1).seat_map(&event).await?;
        assert_eq!(Client::seats_of(&map)[0].1, "RESERVED");
    }
    // After it, the sweeper releases it: EXPIRED, and the seats are available.
    let wait = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    tokio::time::sleep(wait).await;
    for node in c.ids() {
        let client = c.client(node);
        let event = event.clone();
        wait_for(Duration::from_secs(10), "expired seats available", || {
            let (client, event) = (client.clone(), event.clone());
            async move {
                let Ok(map) = client.seat_map(&event).await else {
                    return Ok(None);
                };
                let states = Client::seats_of(&map);
                Ok((states[0].1 == "AVAILABLE" && states[1].1 == "AVAILABLE").then_some(()))
            }
        })
        .await?;
    }
    assert_eq!(c.client(1).reservation(&a, &id).await?["status"], "EXPIRED");
    // And they can be held again.
    c.client(3)
        .reserve(
            &a,
            &json!({"event_id": event, "seat_ids": seats[0..2]}),
            None,
        )
        .await?;
    Ok(())
}
