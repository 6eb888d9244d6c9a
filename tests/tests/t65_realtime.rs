//! Realtime updates over the WebSocket against a 3-node cluster: a subscriber on
//! one node sees the section's count when seats are held through another node
//! (the whole picture first, then changes); a hold's owner is warned a minute
//! before it lapses; a queued fan sees its place, then READY with an access token
//! once the fan ahead leaves; bad tokens and bad messages are refused. On a
//! 4-node cluster with 3 replicas per event, a node outside the event's group
//! streams it from a member (counts, and the warning to a hold's owner, which
//! needs the member to learn whom the node's subscribers are), and keeps its
//! subscribers updated when that member is killed.

use std::time::Duration;

use anyhow::{bail, Context, Result};
use boxoffice_client::Client;
use boxoffice_tests::{prometheus_value, s, user, wait_for, ClusterOpts, TestCluster};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Holds last 64 s: a minute before expiry comes 4 s after the hold.
const HOLD_SECONDS: u64 = 64;

async fn connect(c: &TestCluster, node: u64, token: &str) -> Result<Socket> {
    let url = format!("ws://{}/v1/realtime?token={token}", c.node(node).http_addr);
    let (socket, _) = tokio_tungstenite::connect_async(url).await?;
    Ok(socket)
}

async fn send(ws: &mut Socket, v: Value) -> Result<()> {
    ws.send(Message::Text(v.to_string().into())).await?;
    Ok(())
}

/// The next message that `pred` accepts, within 20 s (others are skipped).
async fn next(ws: &mut Socket, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .with_context(|| format!("no {what} in 20 s"))?;
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str())?;
                if pred(&v) {
                    return Ok(v);
                }
            }
            Some(Ok(_)) => {}
            other => bail!("the socket ended waiting for {what}: {other:?}"),
        }
    }
}

async fn event(c: &TestCluster, name: &str, queue: Option<Value>) -> Result<String> {
    Ok(c.event_on_sale(name, queue).await?.event_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn availability_expiry_and_queue_updates_reach_subscribers() -> Result<()> {
    let opts = ClusterOpts {
        extra_toml: format!(
            "[inventory]\nhold_seconds = {HOLD_SECONDS}\n[queue]\nadmit_interval_ms = 100\n"
        ),
        ..ClusterOpts::default()
    };
    let (c, _) = TestCluster::start_ready(opts).await?;
    let ev = event(&c, "Live Arena", None).await?;
    let fan = user(&c.client(1), "watcher").await?;

    // A bad token is refused before the upgrade; a bad message gets an error.
    assert!(connect(&c, 1, "not-a-token").await.is_err());
    let mut ws = connect(&c, 1, &fan).await?;
    send(&mut ws, json!({"type": "dance"})).await?;
    let e = next(&mut ws, "an error", |v| v["type"] == "error").await?;
    assert_eq!(e["code"], json!("VALIDATION_FAILED"));

    // Subscribed: the section's count first, then its changes.
    send(&mut ws, json!({"type": "subscribe", "event_id": ev})).await?;
    next(&mut ws, "subscribed", |v| v["type"] == "subscribed").await?;
    let first = next(&mut ws, "the first count", |v| {
        v["type"] == "availability_update"
    })
    .await?;
    assert_eq!(
        (&first["section"], &first["available_seats"]),
        (&json!("Floor"), &json!(20))
    );
    let map = c.client(2).seat_map(&ev).await?;
    let seats: Vec<String> = Client::seats_of(&map)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let held = c
        .client(2)
        .reserve(
            &fan,
            &json!({"event_id": ev, "seat_ids": seats[0..2]}),
            None,
        )
        .await?;
    let update = next(&mut ws, "18 seats", |v| {
        v["type"] == "availability_update" && v["available_seats"] == json!(18)
    })
    .await?;
    assert_eq!(update["event_id"], json!(ev));

    // A minute before the hold lapses, its owner is told.
    let warned = next(&mut ws, "reservation_expiring", |v| {
        v["type"] == "reservation_expiring"
    })
    .await?;
    assert_eq!(warned["reservation_id"], held["reservation_id"]);
    assert!(
        warned["expires_in_seconds"].as_i64().unwrap_or(99) <= 60,
        "{warned}"
    );

    // The waiting room: the second fan waits, then is let in when the first leaves.
    let room = json!({"enabled": true, "max_size": 10, "admission_per_second": 5,
                      "max_active_shoppers": 1, "access_window_minutes": 5});
    let queued = event(&c, "Queue Live", Some(room)).await?;
    let first_fan = user(&c.client(2), "first-in-line").await?;
    let second_fan = user(&c.client(3), "second-in-line").await?;
    let n3 = c.client(3);
    let j1 = n3
        .join_queue(&first_fan, &json!({"event_id": queued}), Some("d1"))
        .await?;
    // Wait until the first fan is in before the second joins.
    let mut ws1 = connect(&c, 2, &s(&j1["queue_token"])).await?;
    send(&mut ws1, json!({"type": "subscribe", "event_id": queued})).await?;
    let ready1 = next(&mut ws1, "the first fan READY", |v| {
        v["type"] == "queue_update" && v["status"] == "READY"
    })
    .await?;
    let access = s(&ready1["access_token"]);
    assert!(!access.is_empty(), "{ready1}");
    let j2 = n3
        .join_queue(&second_fan, &json!({"event_id": queued}), Some("d2"))
        .await?;
    let mut ws2 = connect(&c, 3, &s(&j2["queue_token"])).await?;
    send(&mut ws2, json!({"type": "subscribe", "event_id": queued})).await?;
    let waiting = next(&mut ws2, "the second fan QUEUED", |v| {
        v["type"] == "queue_update"
    })
    .await?;
    assert_eq!(
        (&waiting["status"], &waiting["queue_position"]),
        (&json!("QUEUED"), &json!(1))
    );
    c.client(1).leave_queue(&access).await?;
    let ready2 = next(&mut ws2, "the second fan READY", |v| {
        v["type"] == "queue_update" && v["status"] == "READY"
    })
    .await?;
    assert!(ready2["access_token"].is_string(), "{ready2}");

    // Unsubscribing is answered.
    send(&mut ws, json!({"type": "unsubscribe", "event_id": ev})).await?;
    next(&mut ws, "unsubscribed", |v| v["type"] == "unsubscribed").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_outside_the_group_streams_it_and_survives_its_source_dying() -> Result<()> {
    let opts = ClusterOpts {
        nodes: 4,
        replication_factor: 3,
        extra_toml: format!("[inventory]\nhold_seconds = {HOLD_SECONDS}\n"),
        ..ClusterOpts::default()
    };
    let (mut c, _) = TestCluster::start_ready(opts).await?;
    let created = c.event_on_sale("Far Show", None).await?;
    let ev = created.event_id.clone();
    let members = created.replicas.clone();
    let outsider = c
        .ids()
        .into_iter()
        .find(|id| !members.contains(id))
        .context("a node outside the event's group")?;
    let fan = user(&c.client(outsider), "far-watcher").await?;

    // Subscribed on the outsider: the whole picture, then a hold made elsewhere.
    let mut ws = connect(&c, outsider, &fan).await?;
    send(&mut ws, json!({"type": "subscribe", "event_id": ev})).await?;
    next(&mut ws, "subscribed", |v| v["type"] == "subscribed").await?;
    let first = next(&mut ws, "the first count", |v| {
        v["type"] == "availability_update"
    })
    .await?;
    assert_eq!(first["available_seats"], json!(20), "{first}");
    let map = c.client(members[0]).seat_map(&ev).await?;
    let seats: Vec<String> = Client::seats_of(&map)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let held = c
        .client(members[0])
        .reserve(
            &fan,
            &json!({"event_id": ev, "seat_ids": seats[0..2]}),
            None,
        )
        .await?;
    next(&mut ws, "18 seats", |v| {
        v["type"] == "availability_update" && v["available_seats"] == json!(18)
    })
    .await?;
    let warned = next(&mut ws, "reservation_expiring through the feed", |v| {
        v["type"] == "reservation_expiring"
    })
    .await?;
    assert_eq!(warned["reservation_id"], held["reservation_id"]);

    // The member the outsider streams from dies; the stream moves to another.
    let series = format!("boxoffice_realtime_feed_source{{event_id=\"{ev}\"}}");
    let metrics = c.client(outsider).metrics().await?;
    let source = prometheus_value(&metrics, &series).context("the feed's source")? as u64;
    assert!(members.contains(&source), "source {source} of {members:?}");
    c.kill(source)?;
    let live = *members
        .iter()
        .find(|m| **m != source)
        .context("a live member")?;
    c.client(live)
        .reserve(
            &fan,
            &json!({"event_id": ev, "seat_ids": seats[2..4]}),
            None,
        )
        .await?;
    next(&mut ws, "16 seats after the source died", |v| {
        v["type"] == "availability_update" && v["available_seats"] == json!(16)
    })
    .await?;
    let now_from = wait_for(Duration::from_secs(10), "the feed to move", || async {
        let m = c.client(outsider).metrics().await?;
        Ok(prometheus_value(&m, &series).filter(|s| *s as u64 != source))
    })
    .await?;
    assert!(members.contains(&(now_from as u64)), "{now_from}");
    Ok(())
}
