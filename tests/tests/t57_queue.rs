//! The waiting room against a 3-node cluster, through leader and followers: join
//! (200, 409 with the same token, 503 when full, 400 for an unknown event or one
//! without a queue, 403 past the device cap), status polls from every node until
//! READY with an access token, reserve only with that token while the queue is on,
//! at most `max_active_shoppers` admitted at once, leaving moves the queue up, and
//! the queue survives the group leader's kill with order kept.

use std::time::Duration;

use anyhow::{Context, Result};
use boxoffice_client::{sample_event, Client, ClientError, NewVenue};
use boxoffice_tests::{code, s, user, wait_for, ClusterOpts, TestCluster};
use serde_json::{json, Value};

/// An event on sale with the given waiting room (or none); returns its id and
/// its group's leader.
async fn event(c: &TestCluster, name: &str, queue: Option<Value>) -> Result<(String, u64)> {
    let e = c.event_on_sale(name, queue).await?;
    let leader = c
        .wait_for_leader(e.group_id, Duration::from_secs(10))
        .await?;
    Ok((e.event_id, leader))
}

fn opts() -> ClusterOpts {
    ClusterOpts {
        extra_toml: "[queue]\nmax_entries_per_device = 1\nadmit_interval_ms = 100\n\
                     [rate_limits]\nqueue_status = { requests = 100000, window_seconds = 60 }\n"
            .into(),
        ..ClusterOpts::default()
    }
}

/// Polls `token`'s status on `c` until it is `status`.
async fn until_status(c: &Client, token: &str, status: &str) -> Result<Value> {
    wait_for(
        Duration::from_secs(20),
        &format!("status {status}"),
        || async {
            Ok(c.queue_status(token)
                .await
                .ok()
                .filter(|v| v["status"] == status))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_status_admission_access_and_leave_through_every_node() -> Result<()> {
    let (c, _) = TestCluster::start_ready(opts()).await?;
    let room = json!({"enabled": true, "max_size": 3, "admission_per_second": 1,
                      "max_active_shoppers": 1, "access_window_minutes": 1});
    let (ev, leader) = event(&c, "Queue Arena", Some(room)).await?;
    let (plain, _) = event(&c, "Plain Arena", None).await?;
    let follower = c.other_than(leader);
    let (lead, foll) = (c.client(leader), c.client(follower));
    let third = c.client(
        c.ids()
            .into_iter()
            .find(|&i| i != leader && i != follower)
            .context("3 nodes")?,
    );
    let [a, b, cc, d] = [
        user(&lead, "qa").await?,
        user(&foll, "qb").await?,
        user(&third, "qc").await?,
        user(&lead, "qd").await?,
    ];

    // 400: unknown event, an event without a waiting room.
    for id in [uuid::Uuid::new_v4().to_string(), plain.clone()] {
        let e = foll
            .join_queue(&a, &json!({"event_id": id}), None)
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(400), "{id}: {e:?}");
    }
    // 403 while the queue is on: a session token does not reserve.
    let e = foll
        .reserve(&a, &json!({"event_id": ev, "quantity": 1}), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()));

    // 200 through a follower; 409 again with the same token in the details.
    let ja = foll
        .join_queue(&a, &json!({"event_id": ev}), Some("dev-a"))
        .await?;
    let qa = s(&ja["queue_token"]);
    assert!(ja["queue_position"].as_u64().is_some(), "{ja}");
    assert!(ja["poll_interval_seconds"].as_u64().unwrap_or(0) > 0);
    // (Through the load generator's lean transport: the same answer.)
    let e = lead
        .clone()
        .with_wire()
        .join_queue(&a, &json!({"event_id": ev}), Some("dev-a"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), (409, "ALREADY_IN_QUEUE".into()));
    let ClientError::Api { details, .. } = &e else {
        panic!("not an API error: {e:?}");
    };
    assert_eq!(s(&details["queue_token"]), qa);
    // 403 past the device cap (1 per device here).
    let e = lead
        .join_queue(&b, &json!({"event_id": ev}), Some("dev-a"))
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(403), "{e:?}");

    // a is let in (one slot): READY with an access token, seen from every node.
    let ready = until_status(&third, &qa, "READY").await?;
    assert_eq!(ready["access_granted"], json!(true));
    assert_eq!(ready["queue_position"], json!(0));
    // Status polls are local reads: each replica shows READY once it applied it.
    for id in c.ids() {
        let v = until_status(&c.client(id), &qa, "READY").await?;
        assert_eq!(
            v["access_token"], ready["access_token"],
            "node {id} mints the same token"
        );
    }
    let access = s(&ready["access_token"]);
    // A queue token opens nothing but the queue; the access token reserves.
    let e = foll
        .reserve(&qa, &json!({"event_id": ev, "quantity": 1}), None)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(401));
    let e = foll
        .reserve(&access, &json!({"event_id": plain, "quantity": 1}), None)
        .await
        .unwrap_err();
    assert_eq!(
        code(&e),
        (403, "FORBIDDEN".into()),
        "an access token opens only its event"
    );
    let held = foll
        .reserve(&access, &json!({"event_id": ev, "quantity": 2}), None)
        .await?;
    assert_eq!(held["seat_ids"].as_array().map(Vec::len), Some(2));

    // b, c queue behind; the room (3 live entries) is full for d.
    let jb = lead
        .join_queue(&b, &json!({"event_id": ev}), Some("dev-b"))
        .await?;
    let jc = third
        .join_queue(&cc, &json!({"event_id": ev}), Some("dev-c"))
        .await?;
    let (qb, qc) = (s(&jb["queue_token"]), s(&jc["queue_token"]));
    let e = foll
        .join_queue(&d, &json!({"event_id": ev}), Some("dev-d"))
        .await
        .unwrap_err();
    assert_eq!(code(&e), (503, "QUEUE_FULL".into()));
    // One shopper at a time: b and c stay queued, in order, while a shops.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (sb, sc) = (
        foll.clone().with_wire().queue_status(&qb).await?,
        lead.queue_status(&qc).await?,
    );
    assert_eq!(
        (sb["status"].clone(), sb["queue_position"].clone()),
        (json!("QUEUED"), json!(1))
    );
    assert_eq!(
        (sc["status"].clone(), sc["queue_position"].clone()),
        (json!("QUEUED"), json!(2))
    );
    assert_eq!(sc["queue_size"], json!(2));

    // b leaves: c moves up (leaving twice is still 204).
    third.leave_queue(&qb).await?;
    foll.leave_queue(&qb).await?;
    let sc = wait_for(Duration::from_secs(10), "c moves up", || async {
        Ok(third
            .queue_status(&qc)
            .await
            .ok()
            .filter(|v| v["queue_position"] == json!(1)))
    })
    .await?;
    assert_eq!(sc["queue_size"], json!(1));
    assert_eq!(lead.queue_status(&qb).await?["status"], json!("LEFT"));
    // a gives the window up: the slot goes to c, and a's access token, still
    // unexpired, holds nothing more (the group checks the window, not the token).
    lead.leave_queue(&access).await?;
    until_status(&foll, &qc, "READY").await?;
    assert_eq!(lead.queue_status(&qa).await?["status"], json!("LEFT"));
    let e = third
        .reserve(&access, &json!({"event_id": ev, "quantity": 1}), None)
        .await
        .unwrap_err();
    assert_eq!(code(&e), (403, "FORBIDDEN".into()), "{e:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_survives_a_leader_kill_in_order() -> Result<()> {
    let (mut c, _) = TestCluster::start_ready(opts()).await?;
    // Nobody is admitted (no shopper slots are free once one is in): the order stays.
    let room = json!({"enabled": true, "max_size": 100, "admission_per_second": 1,
                      "max_active_shoppers": 1, "access_window_minutes": 10});
    let (ev, leader) = event(&c, "Kill Arena", Some(room)).await?;
    let survivor = c.other_than(leader);
    let mut tokens = Vec::new();
    for i in 0..6 {
        let node = c.client(c.ids()[i % 3]);
        let t = user(&node, &format!("k{i}")).await?;
        let j = node
            .join_queue(&t, &json!({"event_id": ev}), Some(&format!("dev-{i}")))
            .await?;
        tokens.push(s(&j["queue_token"]));
    }
    // The first fan holds the one slot (read where the statuses are read below).
    until_status(&c.client(survivor), &tokens[0], "READY").await?;
    let before: Vec<Value> = {
        let mut v = Vec::new();
        for t in &tokens {
            v.push(c.client(survivor).queue_status(t).await?);
        }
        v
    };
    c.kill(leader)?;
    let node = c.client(survivor);
    for (t, was) in tokens.iter().zip(&before) {
        let now = wait_for(Duration::from_secs(20), "status after the kill", || async {
            Ok(node.queue_status(t).await.ok())
        })
        .await?;
        assert_eq!(now["status"], was["status"], "{t}");
        assert_eq!(now["queue_position"], was["queue_position"], "{t}");
    }
    // Positions are 0 (the one shopper) then 1..=5, none lost or doubled.
    let mut positions: Vec<u64> = before
        .iter()
        .map(|v| v["queue_position"].as_u64().unwrap_or(99))
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, vec![0, 1, 2, 3, 4, 5]);
    // The new leader keeps admitting: the shopper leaves, the head becomes READY.
    let shopper = before
        .iter()
        .position(|v| v["status"] == json!("READY"))
        .context("one shopper")?;
    let head = before
        .iter()
        .position(|v| v["queue_position"] == json!(1))
        .context("a head")?;
    node.leave_queue(&tokens[shopper]).await?;
    until_status(&node, &tokens[head], "READY").await?;
    c.start_node(leader)?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pre_sale_fans_get_one_random_order_on_every_replica() -> Result<()> {
    let (c, _) = TestCluster::start_ready(opts()).await?;
    // Not on sale yet (the sample event's sale opens in 2030): fans queue early.
    let venue = c
        .client(1)
        .create_venue(&NewVenue::sample("Early Arena", 2, 10), None)
        .await?;
    let mut spec = sample_event("Early Arena", &venue.venue_id, &["Floor"]);
    spec["queue"] = json!({"enabled": true, "max_size": 100, "admission_per_second": 1,
                           "max_active_shoppers": 1, "access_window_minutes": 10});
    let e = c.client(2).create_event(&spec).await?;
    const FANS: usize = 12;
    let mut tokens = Vec::new();
    for i in 0..FANS {
        let node = c.client(c.ids()[i % 3]);
        let t = user(&node, &format!("early{i}")).await?;
        let j = node
            .join_queue(&t, &json!({"event_id": e.event_id}), Some(&format!("d{i}")))
            .await?;
        // Before the sale: arrival order.
        assert_eq!(j["queue_position"], json!(i + 1), "{j}");
        tokens.push(s(&j["queue_token"]));
    }
    c.client(3).set_event_status(&e.event_id, "ON_SALE").await?;
    // The sale opened: the first admission shuffles the early fans. Every replica
    // shows the same order: one shopper (position 0), then 1..=11.
    let mut orders = Vec::new();
    for id in c.ids() {
        let node = c.client(id);
        let order = wait_for(Duration::from_secs(20), "a shuffled order", || async {
            let mut positions = Vec::new();
            for t in &tokens {
                match node.queue_status(t).await {
                    Ok(v) => positions.push(v["queue_position"].as_u64().unwrap_or(99)),
                    Err(_) => return Ok(None),
                }
            }
            let mut sorted = positions.clone();
            sorted.sort_unstable();
            Ok((sorted == (0..FANS as u64).collect::<Vec<_>>()).then_some(positions))
        })
        .await?;
        orders.push(order);
    }
    assert!(
        orders.windows(2).all(|w| w[0] == w[1]),
        "replicas differ: {orders:?}"
    );
    let arrival: Vec<u64> = (0..FANS as u64).collect();
    assert_ne!(orders[0], arrival, "the early fans were not shuffled");
    Ok(())
}
