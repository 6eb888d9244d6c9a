//! Contention: 200 concurrent clients fight over a 500-seat event with 2–4 seat
//! holds through random nodes while the event group's leader is killed and
//! restarted. At the end no seat is in two acknowledged holds, every acknowledged
//! hold is present with its seats, and every replica shows the same seat map.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use boxoffice_client::{sample_event, Client, NewVenue};
use boxoffice_tests::{wait_for, ClusterOpts, TestCluster};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;

/// An acknowledged hold: the owner's token, the reservation id, its seats.
type Hold = (String, String, Vec<String>);

const CLIENTS: usize = 200;
const USERS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_never_double_hold_a_seat_through_a_leader_kill() -> Result<()> {
    let (mut c, _) = TestCluster::start_ready(ClusterOpts {
        request_timeout_ms: 3000,
        extra_toml: [
            "[inventory]",
            "max_tickets_per_user = 100",
            "[rate_limits]",
            "reserve = { requests = 100000, window_seconds = 60 }",
            "authenticated = { requests = 100000, window_seconds = 60 }",
            "",
        ]
        .join("\n"),
        ..ClusterOpts::default()
    })
    .await?;
    let venue = c
        .client(1)
        .create_venue(&NewVenue::sample("Contention Arena", 10, 50), None)
        .await?;
    let e = c
        .client(2)
        .create_event(&sample_event("Contention", &venue.venue_id, &["Floor"]))
        .await?;
    c.client(3).set_event_status(&e.event_id, "ON_SALE").await?;
    let map = c.client(1).seat_map(&e.event_id).await?;
    let seats: Vec<String> = Client::seats_of(&map)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert_eq!(seats.len(), 500);
    let mut tokens = Vec::new();
    for u in 0..USERS {
        let client = c.client(1 + (u as u64 % 3));
        let email = format!("fan{u}@example.com");
        client.register(&email, "contention pw", "Fan").await?;
        let login = client.login(&email, "contention pw").await?;
        tokens.push(
            login["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }

    let clients: Vec<Client> = c.ids().into_iter().map(|id| c.client(id)).collect();
    let acked: Arc<Mutex<Vec<Hold>>> = Arc::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tasks = Vec::new();
    for i in 0..CLIENTS {
        let (clients, seats, acked) = (clients.clone(), seats.clone(), acked.clone());
        let token = tokens[i % USERS].clone();
        let event = e.event_id.clone();
        tasks.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            let mut attempts = 0u32;
            while Instant::now() < deadline {
                attempts += 1;
                let k = rng.gen_range(2..=4);
                let pick: Vec<String> = seats.choose_multiple(&mut rng, k).cloned().collect();
                let Some(node) = clients.choose(&mut rng) else {
                    break;
                };
                let body = json!({"event_id": event, "seat_ids": pick});
                match node.reserve(&token, &body, None).await {
                    Ok(r) => {
                        let id = r["reservation_id"].as_str().unwrap_or_default().to_string();
                        let got: Vec<String> = r["seat_ids"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|s| s.as_str().map(str::to_string))
                            .collect();
                        assert_eq!(got, pick, "a hold must be exactly the asked seats");
                        acked.lock().unwrap_or_else(|p| p.into_inner()).push((
                            token.clone(),
                            id,
                            got,
                        ));
                    }
                    // Conflicts, a dead node, no leader for a moment: try again.
                    Err(_) => tokio::time::sleep(Duration::from_millis(rng.gen_range(5..30))).await,
                }
            }
            attempts
        }));
    }
    // Kill the event group's leader while they fight, then bring it back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = c
        .wait_for_leader(e.group_id, Duration::from_secs(5))
        .await?;
    c.kill(leader)?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    c.start_node(leader)?;
    let mut attempts = 0;
    for t in tasks {
        attempts += t.await?;
    }
    let acked = acked.lock().unwrap_or_else(|p| p.into_inner()).clone();
    println!(
        "{} holds acknowledged in {attempts} attempts; leader {leader} killed and restarted",
        acked.len()
    );
    assert!(
        acked.len() > 20,
        "only {} holds in {attempts} attempts",
        acked.len()
    );

    // No seat in two acknowledged holds.
    let mut owner: BTreeMap<&str, &str> = BTreeMap::new();
    for (_, id, held) in &acked {
        for s in held {
            if let Some(other) = owner.insert(s, id) {
                panic!("seat {s} is in holds {other} and {id}");
            }
        }
    }
    // Every acknowledged hold is there, ACTIVE, with its seats.
    c.wait_healthy(Duration::from_secs(30)).await?;
    c.wait_group_converged(e.group_id, &e.replicas, Duration::from_secs(30))
        .await?;
    for (token, id, held) in &acked {
        let r = c.client(1).reservation(token, id).await?;
        assert_eq!(r["status"], "ACTIVE", "{id}");
        assert_eq!(r["seat_ids"], json!(held), "{id}");
    }
    // Every replica shows the same map, and every acknowledged seat is RESERVED.
    let reference = c.client(1).seat_map(&e.event_id).await?;
    let reserved: BTreeSet<String> = Client::seats_of(&reference)
        .into_iter()
        .filter(|(_, st)| st == "RESERVED")
        .map(|(id, _)| id)
        .collect();
    for s in owner.keys() {
        assert!(
            reserved.contains(*s),
            "acknowledged seat {s} is not RESERVED"
        );
    }
    for node in c.ids() {
        let client = c.client(node);
        let (event, want) = (e.event_id.clone(), Client::seats_of(&reference));
        wait_for(Duration::from_secs(15), "seat maps agree", || {
            let (client, event, want) = (client.clone(), event.clone(), want.clone());
            async move {
                let Ok(map) = client.seat_map(&event).await else {
                    return Ok(None);
                };
                Ok((Client::seats_of(&map) == want).then_some(()))
            }
        })
        .await?;
    }
    Ok(())
}
