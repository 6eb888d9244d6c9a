//! Idle groups quiesce; a request wakes one without an election; when the node
//! leading many quiesced groups dies, every one of its events is writable again
//! from every surviving node within one request deadline (5 s). The node-level
//! probe they lean on also measures the peers' clock offsets.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Result;
use boxoffice_client::{sample_event, EventCreated, NewVenue};
use boxoffice_tests::{wait_for, ClusterOpts, TestCluster};
use futures::future::join_all;

const EVENTS: usize = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiesced_groups_wake_on_requests_and_fail_over_within_the_deadline() -> Result<()> {
    let (mut c, _) = TestCluster::start_ready(ClusterOpts {
        quiesce_after_ms: 1000,
        request_timeout_ms: 5000,
        ..ClusterOpts::default()
    })
    .await?;
    let venue_id = c
        .client(1)
        .create_venue(&NewVenue::sample("Hall", 2, 10), None)
        .await?
        .venue_id;

    // 200 events, created 10 at a time through all nodes.
    let mut events: Vec<EventCreated> = Vec::new();
    for batch in 0..EVENTS / 10 {
        let created = join_all((0..10).map(|i| {
            let client = c.client(1 + ((batch * 10 + i) % 3) as u64);
            let body = sample_event(&format!("show {batch}-{i}"), &venue_id, &["Floor"]);
            async move { client.create_event(&body).await }
        }))
        .await;
        for e in created {
            events.push(e?);
        }
    }

    // Every node quiesces all of them once they are idle.
    for id in c.ids() {
        wait_for(
            Duration::from_secs(60),
            &format!("node {id} quiesces {EVENTS} groups"),
            || async {
                let v = c.view(id).await?;
                let quiet = v
                    .groups
                    .iter()
                    .filter(|g| g.group_id != 0 && g.quiesced)
                    .count();
                Ok((quiet == EVENTS).then_some(()))
            },
        )
        .await?;
    }

    // Every node measures each peer's clock offset; on one machine it is the
    // probe's error, at most half a round trip of a probe that did not time out.
    for id in c.ids() {
        let metrics = c.client(id).metrics().await?;
        for peer in c.ids().into_iter().filter(|p| *p != id) {
            let name = format!("boxoffice_peer_clock_offset_seconds{{peer=\"{peer}\"}} ");
            let offset: f64 = metrics
                .lines()
                .find_map(|l| l.strip_prefix(&name))
                .ok_or_else(|| anyhow::anyhow!("node {id} has no clock offset for {peer}"))?
                .trim()
                .parse()?;
            assert!(offset.abs() < 1.0, "node {id} sees {peer} {offset} s off");
        }
        // And the operators' view shows the same, null for the node itself.
        for n in c.view(id).await?.nodes {
            match n.clock_offset_ms {
                None => assert_eq!(n.node_id, id, "node {id} has no offset for {}", n.node_id),
                Some(ms) => {
                    assert_ne!(n.node_id, id);
                    assert!(ms.abs() < 1000, "node {id} sees {} {ms} ms off", n.node_id);
                }
            }
        }
    }

    // A request wakes a quiesced group without an election.
    let e = &events[0];
    let terms = |v: &boxoffice_client::ClusterView| v.group(e.group_id).map(|g| (g.term, g.leader));
    let before = terms(&c.view(1).await?);
    let r = c.client(3).set_event_status(&e.event_id, "ON_SALE").await?;
    assert_eq!(r["status"], "ON_SALE");
    for id in c.ids() {
        assert_eq!(
            terms(&c.view(id).await?),
            before,
            "node {id}: woken without a new term"
        );
    }

    // Kill the node that leads the most groups.
    let mut leads: BTreeMap<u64, Vec<&EventCreated>> = BTreeMap::new();
    let view = c.view(1).await?;
    for e in &events {
        if let Some(l) = view.group(e.group_id).and_then(|g| g.leader) {
            leads.entry(l).or_default().push(e);
        }
    }
    let (&victim, led) = leads
        .iter()
        .max_by_key(|(_, v)| v.len())
        .expect("some leader");
    eprintln!("node {victim} leads {} of {EVENTS} groups", led.len());
    assert!(
        led.len() >= 10,
        "leadership is spread but {victim} leads many: {}",
        led.len()
    );
    let led: Vec<EventCreated> = led.iter().map(|e| (*e).clone()).collect();
    c.kill(victim)?;

    // Right away, every surviving node writes to every event the victim led: each
    // request must succeed within its 5 s deadline (no client-side retry).
    let survivors = c.running();
    let mut writes = Vec::new();
    for e in &led {
        for &via in &survivors {
            let client = c.client(via);
            let id = e.event_id.clone();
            writes.push(async move {
                (
                    via,
                    id.clone(),
                    client.set_event_status(&id, "PAUSED").await,
                )
            });
        }
    }
    for (via, id, result) in join_all(writes).await {
        let r = result.map_err(|e| anyhow::anyhow!("event {id} via node {via}: {e}"))?;
        assert_eq!(r["status"], "PAUSED");
    }

    // No group ever shows two leaders in one term across the survivors.
    for e in &events {
        let mut by_term: BTreeMap<u64, u64> = BTreeMap::new();
        for &id in &survivors {
            let v = c.view(id).await?;
            if let Some(g) = v.group(e.group_id) {
                if let Some(l) = g.leader {
                    let prev = by_term.insert(g.term, l);
                    assert!(
                        prev.is_none() || prev == Some(l),
                        "group {} term {}: two leaders",
                        e.group_id,
                        g.term
                    );
                }
            }
        }
    }
    Ok(())
}
