//! Multi-raft: every event gets its own group on `replication_factor` nodes; any
//! node serves any event; groups survive a node's death and catch up after it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::Result;
use boxoffice_client::{sample_event, EventCreated, NewVenue};
use boxoffice_tests::{wait_for, ClusterOpts, TestCluster};

async fn venue(c: &TestCluster) -> Result<String> {
    Ok(c.client(1)
        .create_venue(&NewVenue::sample("Arena", 4, 10), None)
        .await?
        .venue_id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_events_on_five_nodes_each_on_three_and_writable_through_a_node_death() -> Result<()>
{
    let (mut c, _) = TestCluster::start_ready(ClusterOpts {
        nodes: 5,
        replication_factor: 3,
        ..ClusterOpts::default()
    })
    .await?;
    let venue_id = venue(&c).await?;

    // Create 20 events through different nodes.
    let mut events: Vec<EventCreated> = Vec::new();
    for i in 0..20u64 {
        let via = 1 + i % 5;
        let e = c
            .client(via)
            .create_event(&sample_event(&format!("show {i}"), &venue_id, &["Floor"]))
            .await?;
        assert_eq!(e.replicas.len(), 3, "{e:?}");
        assert_eq!(
            e.replicas.iter().collect::<BTreeSet<_>>().len(),
            3,
            "distinct replicas: {e:?}"
        );
        events.push(e);
    }
    let groups: BTreeSet<u64> = events.iter().map(|e| e.group_id).collect();
    assert_eq!(groups.len(), 20, "one group per event");
    assert!(!groups.contains(&0), "group 0 is the catalog's");

    // Each group lives on exactly its three replicas: each node runs exactly the
    // groups placed on it (plus the catalog).
    let mut placed: BTreeMap<u64, BTreeSet<u64>> = BTreeMap::new();
    for e in &events {
        for r in &e.replicas {
            placed.entry(*r).or_default().insert(e.group_id);
        }
    }
    for id in c.ids() {
        let want = placed.get(&id).cloned().unwrap_or_default();
        wait_for(
            Duration::from_secs(20),
            &format!("node {id} runs exactly its groups"),
            || async {
                let v = c.view(id).await?;
                let running: BTreeSet<u64> = v
                    .groups
                    .iter()
                    .map(|g| g.group_id)
                    .filter(|g| *g != 0)
                    .collect();
                Ok((running == want).then_some(()))
            },
        )
        .await?;
    }
    for e in &events {
        c.wait_group_converged(e.group_id, &e.replicas, Duration::from_secs(20))
            .await?;
        let view = c.view(e.replicas[0]).await?;
        let g = view.group(e.group_id).expect("group on its replica");
        assert_eq!(
            g.members,
            e.replicas
                .iter()
                .copied()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect::<Vec<_>>()
        );
        assert_eq!(g.event_id.as_deref(), Some(e.event_id.as_str()));
    }

    // Writes through a node outside the group succeed (forwarded to a member).
    for e in &events {
        let outsider = c
            .ids()
            .into_iter()
            .find(|id| !e.replicas.contains(id))
            .expect("an outsider");
        let r = c
            .client(outsider)
            .set_event_status(&e.event_id, "PAUSED")
            .await?;
        assert_eq!(r["status"], "PAUSED");
    }

    // Kill one node: every event stays writable from every surviving node.
    let victim = 2;
    c.kill(victim)?;
    for e in &events {
        for (i, via) in c.running().into_iter().enumerate() {
            let status = if i % 2 == 0 { "ON_SALE" } else { "PAUSED" };
            let r = c.client(via).set_event_status(&e.event_id, status).await?;
            assert_eq!(r["status"], status, "event {} via node {via}", e.event_id);
        }
    }

    // It comes back, and every group it belongs to converges.
    c.start_node(victim)?;
    c.wait_healthy(Duration::from_secs(30)).await?;
    for e in events.iter().filter(|e| e.replicas.contains(&victim)) {
        c.wait_group_converged(e.group_id, &e.replicas, Duration::from_secs(30))
            .await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_whose_first_replica_is_down_at_creation_still_forms_once() -> Result<()> {
    let (mut c, leader) = TestCluster::start_ready(ClusterOpts {
        nodes: 4,
        replication_factor: 3,
        ..ClusterOpts::default()
    })
    .await?;
    let venue_id = venue(&c).await?;
    // On a fresh cluster the first event is placed on nodes 1, 2, 3 and node 1
    // initializes it. Kill node 1 before the catalog places the group.
    let via = c
        .ids()
        .into_iter()
        .find(|&id| id != 1 && id != leader)
        .unwrap_or(4);
    c.kill(1)?;
    c.wait_for_leader(0, Duration::from_secs(10)).await?;
    let e = c
        .client(via)
        .create_event(&sample_event("first", &venue_id, &["Floor"]))
        .await?;
    assert_eq!(e.replicas, vec![1, 2, 3]);

    // The surviving members form the group with the placed membership.
    c.wait_group_converged(e.group_id, &e.replicas, Duration::from_secs(20))
        .await?;
    let r = c.client(4).set_event_status(&e.event_id, "ON_SALE").await?;
    assert_eq!(r["status"], "ON_SALE");

    // Node 1 returns, finds itself pristine and first: its initialization is the
    // same membership at the same log id, so it simply joins.
    c.start_node(1)?;
    let applied = c
        .wait_group_converged(e.group_id, &e.replicas, Duration::from_secs(30))
        .await?;
    for id in &e.replicas {
        let v = c.view(*id).await?;
        let g = v.group(e.group_id).expect("group on each replica");
        assert_eq!(g.members, vec![1, 2, 3], "node {id}");
        assert_eq!(g.last_applied, Some(applied), "node {id}");
    }
    let r = c.client(1).set_event_status(&e.event_id, "PAUSED").await?;
    assert_eq!(r["status"], "PAUSED");
    Ok(())
}
