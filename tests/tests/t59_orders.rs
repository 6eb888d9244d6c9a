//! Orders, tickets and gate scans against a 3-node cluster, through the event
//! group's leader and its followers: the spec's money example (1,500.00 + 15%
//! fees + 9% tax = 1,860.00), every status code of `POST /v1/orders`, `GET
//! /v1/orders/{id}`, `POST /v1/orders/{id}/cancel`, `GET /v1/tickets`, the PNG
//! download, `POST /v1/tickets/scan` and transfers (offer, accept, withdraw); a
//! declined card releasing the seats; two gates scanning one ticket at once
//! admitting it once.

use std::time::Duration;

use anyhow::Result;
use base64::Engine;
use boxoffice_client::{Client, NewVenue};
use boxoffice_tests::{code, s, user, wait_for, ClusterOpts, TestCluster};
use serde_json::{json, Value};

const PNG_MAGIC: &[u8] = b"\x89PNG\r\n\x1a\n";

/// Holds last 20 s here, so the test can watch one expire.
const HOLD_SECONDS: u64 = 20;

/// A venue of 2 rows x 10 seats and an event on it at 500.00 a seat with no fees
/// of its own (so the cluster's 15% applies), put on sale; returns the event id,
/// its group's leader and the seat ids in map order.
async fn on_sale_event(c: &TestCluster) -> Result<(String, u64, Vec<String>)> {
    let venue = c
        .client(1)
        .create_venue(&NewVenue::sample("Order Hall", 2, 10), None)
        .await?;
    let event = json!({
        "name": "Order Night", "artist": "The Payers", "description": "",
        "category": "concert", "venue_id": venue.venue_id,
        "date": "2030-06-01T20:00:00Z", "on_sale_date": "2020-01-01T10:00:00Z",
        "pricing_tiers": [{"name": "Standard", "price": 500.00, "sections": ["Floor"]}],
    });
    let e = c.client(2).create_event(&event).await?;
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

async fn card(c: &Client, token: &str, card_token: &str) -> Result<String> {
    let pm = c
        .add_payment_method(token, &json!({"type": "CARD", "card_token": card_token}))
        .await?;
    Ok(s(&pm["payment_method_id"]))
}

async fn hold(c: &Client, token: &str, event: &str, seats: &[String]) -> Result<Value> {
    Ok(
        c.reserve(token, &json!({"event_id": event, "seat_ids": seats}), None)
            .await?,
    )
}

fn order_body(reservation: &Value, method: &str) -> Value {
    json!({
        "reservation_id": reservation["reservation_id"],
        "payment_method_id": method,
        "billing_address": {"street": "123 Main St", "city": "New York", "state": "NY",
                            "postal_code": "10001", "country": "US"},
        "delivery_method": "MOBILE",
    })
}

/// Waits until `c`'s seat map (served from its nearest replica, which may trail
/// the leader by a moment) shows `seat` in `status`.
async fn seat_becomes(c: &Client, event: &str, seat: &str, status: &str) -> Result<()> {
    wait_for(
        Duration::from_secs(10),
        &format!("seat {seat} {status}"),
        || async {
            let map = c.seat_map(event).await?;
            let now = Client::seats_of(&map)
                .into_iter()
                .find(|(id, _)| id == seat)
                .map(|(_, st)| st);
            Ok((now.as_deref() == Some(status)).then_some(()))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orders_tickets_and_scans_through_leader_and_followers() -> Result<()> {
    let opts = ClusterOpts {
        extra_toml: format!("[inventory]\nhold_seconds = {HOLD_SECONDS}\n"),
        ..ClusterOpts::default()
    };
    let (c, _) = TestCluster::start_ready(opts).await?;
    let (event, leader, seats) = on_sale_event(&c).await?;
    let follower = c.other_than(leader);
    let third = c
        .ids()
        .into_iter()
        .find(|&i| i != leader && i != follower)
        .unwrap_or(leader);
    let (lead, foll, other) = (c.client(leader), c.client(follower), c.client(third));
    let a = user(&lead, "buyer").await?;
    let b = user(&foll, "stranger").await?;
    let visa = card(&foll, &a, "tok_visa").await?;

    // A hold left to expire, and an order for an event that starts in 20 s:
    // both checked at the end.
    let expiring = hold(&other, &a, &event, &seats[19..20]).await?;
    let soon = soon_event(&c).await?;
    let soon_seat = Client::seats_of(&lead.seat_map(&soon).await?)[0].0.clone();
    let soon_hold = hold(&lead, &a, &soon, &[soon_seat]).await?;
    let soon_order = s(&lead
        .create_order(&a, &order_body(&soon_hold, &visa), None)
        .await?["order_id"]);

    // The spec's reserve example: 3 x 500.00, fees 15% = 225.00, total 1,725.00.
    let r = hold(&foll, &a, &event, &seats[0..3]).await?;
    assert_eq!(
        (&r["total_price"], &r["fees"], &r["total"]),
        (&json!(1500.0), &json!(225.0), &json!(1725.0))
    );

    // 400 for a payment method that is not the buyer's, 403 for someone else's
    // hold, 404 for a reservation that does not exist, 401 without a token.
    let b_card = card(&lead, &b, "tok_mastercard").await?;
    let e = foll
        .create_order(&a, &order_body(&r, &b_card), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (400, "INVALID_PAYMENT_METHOD".into()), "{e}");
    let e = lead
        .create_order(&b, &order_body(&r, &b_card), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()), "{e}");
    let ghost = json!({"reservation_id": uuid::Uuid::new_v4()});
    let e = lead
        .create_order(&a, &order_body(&ghost, &visa), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 404, "{e}");
    let e = lead
        .create_order("", &order_body(&r, &visa), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 401, "{e}");

    // 201 through a follower: the spec's order example, confirmed with tickets.
    let o = foll.create_order(&a, &order_body(&r, &visa), None).await?;
    assert_eq!(
        (&o["subtotal"], &o["fees"], &o["taxes"], &o["total"]),
        (&json!(1500.0), &json!(225.0), &json!(135.0), &json!(1860.0)),
        "{o}"
    );
    assert_eq!(o["status"], json!("CONFIRMED"), "{o}");
    assert!(
        ["AUTHORIZED", "CAPTURED"].contains(&o["payment_status"].as_str().unwrap_or("")),
        "{o}"
    );
    assert_eq!(o["seats"].as_array().map(Vec::len), Some(3));
    assert_eq!(o["seats"][0]["section"], json!("Floor"));
    assert_eq!(o["event"]["name"], json!("Order Night"));
    let order_id = s(&o["order_id"]);
    let tickets = o["tickets"].as_array().cloned().unwrap_or_default();
    assert_eq!(tickets.len(), 3);
    for t in &tickets {
        let png = base64::engine::general_purpose::STANDARD.decode(s(&t["qr_code"]))?;
        assert!(png.starts_with(PNG_MAGIC), "qr_code is not a PNG");
        let barcode = s(&t["barcode"]);
        assert!(barcode.len() == 12 && barcode.bytes().all(|b| b.is_ascii_digit()));
        // The QR payload is a JWT whose claims name the ticket and its barcode.
        let payload = s(&t["qr_payload"]);
        let claims = payload.split('.').nth(1).unwrap_or_default();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(claims)?,
        )?;
        assert_eq!(
            (&claims["tid"], &claims["barcode"]),
            (&t["ticket_id"], &t["barcode"])
        );
        assert_eq!(claims["typ"], json!("ticket"));
    }

    // The same hold ordered again answers the same order (no second charge).
    let again = lead.create_order(&a, &order_body(&r, &visa), None).await?;
    assert_eq!(s(&again["order_id"]), order_id);

    // Captured right after; every node reads it through the leader.
    for n in [&lead, &foll, &other] {
        let got = wait_for(Duration::from_secs(20), "capture", || async {
            let got = n.order(&a, &order_id).await?;
            Ok((got["payment_status"] == json!("CAPTURED")).then_some(got))
        })
        .await?;
        assert_eq!(got["status"], json!("CONFIRMED"));
        assert_eq!(got["total"], json!(1860.0));
        assert!(got["confirmed_at"].is_string());
    }
    seat_becomes(&other, &event, &seats[0], "SOLD").await?;
    // A hold of a sold seat is 410 SEATS_SOLD naming it (issue 5), from any node.
    for n in [&lead, &foll] {
        let e = n
            .reserve(
                &b,
                &json!({"event_id": event, "seat_ids": [seats[0], seats[15]]}),
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(code(&e), (410, "SEATS_SOLD".into()), "{e}");
        if let boxoffice_client::ClientError::Api { details, .. } = &e {
            assert_eq!(details["seat_ids"], json!([seats[0]]));
        }
    }
    let e = other.order(&b, &order_id).await.unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()));
    let e = other
        .order(&a, &uuid::Uuid::new_v4().to_string())
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 404);

    // Tickets of the order from any node; the PNG download.
    let list = other.tickets(&a, &order_id).await?;
    let list = list["tickets"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 3);
    assert!(list
        .iter()
        .all(|t| t["status"] == json!("ACTIVE") && t["transferable"] == json!(true)));
    assert_eq!(list[0]["venue"], json!("Order Hall"));
    let e = other.tickets(&b, &order_id).await.unwrap_err();
    assert_eq!(code(&e).0, 403);
    let ticket_id = s(&list[0]["ticket_id"]);
    let (png, kind) = lead.download_ticket(&a, &ticket_id).await?;
    assert_eq!(kind, "image/png");
    assert!(png.starts_with(PNG_MAGIC));
    let e = lead.download_ticket(&b, &ticket_id).await.unwrap_err();
    assert_eq!(code(&e).0, 403);

    // Two gates scan the same ticket at once, through different nodes: one admits it.
    let barcode = s(&list[0]["barcode"]);
    let (gate1, gate2) = (&foll, &other);
    let (x, y) = tokio::join!(
        gate1.scan_ticket(&event, &barcode),
        gate2.scan_ticket(&event, &barcode)
    );
    let (ok, dup) = match (x, y) {
        (Ok(ok), Err(dup)) | (Err(dup), Ok(ok)) => (ok, dup),
        other => panic!("two scans gave {other:?}"),
    };
    assert_eq!(ok["status"], json!("ADMITTED"));
    assert_eq!(ok["ticket_id"], json!(ticket_id));
    assert_eq!(code(&dup), (409, "ALREADY_SCANNED".into()));
    let e = gate1.scan_ticket(&event, "000000000000").await.unwrap_err();
    assert_eq!(code(&e), (404, "UNKNOWN_BARCODE".into()));
    let no_key = Client::new(lead.base());
    let e = no_key.scan_ticket(&event, &barcode).await.unwrap_err();
    assert_eq!(code(&e).0, 401, "a scan needs the admin key");
    // An order with a scanned ticket is not cancellable.
    let e = lead.cancel_order(&a, &order_id).await.unwrap_err();
    assert_eq!(code(&e), (400, "ORDER_NOT_CANCELLABLE".into()));

    // Transfers: the holder offers a ticket to a friend's email; the friend takes
    // it (a new ticket and barcode), the old barcode no longer scans.
    let moving = s(&list[1]["ticket_id"]);
    let e = foll
        .transfer_ticket(&a, &moving, "buyer@example.com")
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 422, "{e}");
    let e = foll
        .transfer_ticket(&b, &moving, "friend@example.com")
        .await
        .unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()));
    let e = foll
        .transfer_ticket(&a, &uuid::Uuid::new_v4().to_string(), "friend@example.com")
        .await
        .unwrap_err();
    assert_eq!(code(&e).0, 404);
    let offer = foll
        .transfer_ticket(&a, &moving, "Friend@Example.com")
        .await?;
    assert_eq!(offer["status"], json!("PENDING"));
    assert_eq!(offer["recipient_email"], json!("friend@example.com"));
    assert!(offer["expires_at"].is_string());
    let transfer = s(&offer["transfer_id"]);
    let e = lead
        .transfer_ticket(&a, &moving, "other@example.com")
        .await
        .unwrap_err();
    assert_eq!(code(&e), (409, "TICKET_NOT_TRANSFERABLE".into()));
    let friend = user(&other, "friend").await?;
    let e = lead.accept_transfer(&b, &transfer).await.unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()));
    let taken = lead.accept_transfer(&friend, &transfer).await?;
    assert_eq!(taken["status"], json!("ACCEPTED"));
    let new_ticket = s(&taken["ticket_id"]);
    assert_ne!(new_ticket, moving);
    assert_eq!(
        s(&other.accept_transfer(&friend, &transfer).await?["ticket_id"]),
        new_ticket
    );
    let e = foll.cancel_transfer(&a, &transfer).await.unwrap_err();
    assert_eq!(code(&e), (409, "TRANSFER_CLOSED".into()));
    let mine = foll.tickets(&friend, &order_id).await?;
    let mine = mine["tickets"].as_array().cloned().unwrap_or_default();
    assert_eq!(mine.len(), 1);
    assert_eq!(s(&mine[0]["ticket_id"]), new_ticket);
    assert_ne!(mine[0]["barcode"], list[1]["barcode"]);
    let (png, _) = foll.download_ticket(&friend, &new_ticket).await?;
    assert!(png.starts_with(PNG_MAGIC));
    let e = gate1
        .scan_ticket(&event, &s(&list[1]["barcode"]))
        .await
        .unwrap_err();
    assert_eq!(code(&e), (410, "TICKET_VOID".into()));
    let buyer_now = lead.tickets(&a, &order_id).await?;
    assert_eq!(buyer_now["tickets"].as_array().map(Vec::len), Some(2));
    // A withdrawn offer cannot be taken; withdrawing again is fine.
    let offer = lead
        .transfer_ticket(&a, &s(&list[2]["ticket_id"]), "friend@example.com")
        .await?;
    let withdrawn = s(&offer["transfer_id"]);
    foll.cancel_transfer(&a, &withdrawn).await?;
    foll.cancel_transfer(&a, &withdrawn).await?;
    let e = other
        .accept_transfer(&friend, &withdrawn)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (409, "TRANSFER_CLOSED".into()));

    // Cancel another order: 200, seats back on sale, refund processed, tickets void.
    let r2 = hold(&lead, &a, &event, &seats[5..7]).await?;
    let o2 = lead.create_order(&a, &order_body(&r2, &visa), None).await?;
    let id2 = s(&o2["order_id"]);
    let e = foll.cancel_order(&b, &id2).await.unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()));
    let cancelled = foll.cancel_order(&a, &id2).await?;
    assert_eq!(cancelled["status"], json!("CANCELLED"));
    // 2 x (500.00 + 75.00) + 9% of 1,000.00.
    assert_eq!(cancelled["refund_amount"], json!(1240.0));
    assert!(cancelled["cancelled_at"].is_string());
    let e = other.cancel_order(&a, &id2).await.unwrap_err();
    assert_eq!(code(&e), (409, "ALREADY_CANCELLED".into()));
    seat_becomes(&other, &event, &seats[5], "AVAILABLE").await?;
    let refunded = wait_for(Duration::from_secs(20), "refund", || async {
        let got = other.order(&a, &id2).await?;
        Ok((got["refund_status"] == json!("REFUNDED")).then_some(got))
    })
    .await?;
    assert_eq!(refunded["status"], json!("CANCELLED"));
    assert_eq!(refunded["payment_status"], json!("REFUNDED"));
    assert!(refunded["tickets"]
        .as_array()
        .into_iter()
        .flatten()
        .all(|t| t["status"] == json!("VOID")));
    let void_code = s(&refunded["tickets"][0]["barcode"]);
    let e = gate2.scan_ticket(&event, &void_code).await.unwrap_err();
    assert_eq!(code(&e), (410, "TICKET_VOID".into()));

    // A declined card: 402, the seats released, the order FAILED.
    let declining = card(&other, &b, "tok_chargeDeclined").await?;
    let rb = hold(&other, &b, &event, &seats[10..12]).await?;
    let e = lead
        .create_order(&b, &order_body(&rb, &declining), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (402, "PAYMENT_DECLINED".into()), "{e}");
    seat_becomes(&foll, &event, &seats[10], "AVAILABLE").await?;
    if let boxoffice_client::ClientError::Api { details, .. } = &e {
        let failed = foll.order(&b, &s(&details["order_id"])).await?;
        assert_eq!(
            (&failed["status"], &failed["payment_status"]),
            (&json!("FAILED"), &json!("DECLINED"))
        );
        assert_eq!(failed["failure_reason"], json!("card_declined"));
    }

    // 410 for a released hold, and for an expired one.
    let released = hold(&foll, &b, &event, &seats[12..13]).await?;
    foll.release(&b, &s(&released["reservation_id"])).await?;
    let e = foll
        .create_order(&b, &order_body(&released, &b_card), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (410, "RESERVATION_EXPIRED".into()), "{e}");
    let expiring_id = s(&expiring["reservation_id"]);
    wait_for(
        Duration::from_secs(HOLD_SECONDS + 20),
        "hold expiry",
        || async {
            let r = lead.reservation(&a, &expiring_id).await?;
            Ok((r["status"] == json!("EXPIRED")).then_some(()))
        },
    )
    .await?;
    let e = lead
        .create_order(&a, &order_body(&expiring, &visa), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (410, "RESERVATION_EXPIRED".into()), "{e}");

    // 400 once the event has started.
    let e = wait_for(Duration::from_secs(60), "the event to start", || async {
        match foll.cancel_order(&a, &soon_order).await {
            Err(e) if code(&e).0 == 400 => Ok(Some(e)),
            _ => Ok(None),
        }
    })
    .await?;
    assert_eq!(code(&e), (400, "ORDER_NOT_CANCELLABLE".into()), "{e}");
    Ok(())
}

/// An event on sale that starts 20 s from now, on a venue of one row of 5 seats.
async fn soon_event(c: &TestCluster) -> Result<String> {
    let venue = c
        .client(1)
        .create_venue(&NewVenue::sample("Soon Hall", 1, 5), None)
        .await?;
    let date = chrono::Utc::now() + chrono::Duration::seconds(20);
    let e = c
        .client(2)
        .create_event(&json!({
            "name": "Starting Soon", "artist": "Clock", "description": "",
            "category": "concert", "venue_id": venue.venue_id,
            "date": date.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "on_sale_date": "2020-01-01T10:00:00Z",
            "pricing_tiers": [{"name": "Standard", "price": 10.00, "sections": ["Floor"]}],
        }))
        .await?;
    Ok(e.event_id)
}
