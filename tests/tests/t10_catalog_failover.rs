//! The catalog group survives its leader's death and full-cluster restarts without
//! losing an acknowledged write.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Result;
use boxoffice_client::NewVenue;
use boxoffice_tests::{ClusterOpts, TestCluster};

const GROUP: u64 = 0;

async fn create(c: &TestCluster, via: u64, name: &str, acked: &mut BTreeSet<String>) -> Result<()> {
    let created = c
        .client(via)
        .create_venue(&NewVenue::sample(name, 2, 10), None)
        .await?;
    assert_eq!(created.capacity, 20);
    acked.insert(created.venue_id);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_kill_failover_rejoin_and_full_restart() -> Result<()> {
    // A fresh cluster bootstraps its catalog by itself and elects a leader.
    let (mut c, leader) = TestCluster::start_ready(ClusterOpts::default()).await?;
    let follower = c.other_than(leader);
    let mut acked = BTreeSet::new();

    // Writes through a follower are forwarded to the leader.
    for i in 0..5 {
        create(&c, follower, &format!("before-{i}"), &mut acked).await?;
    }
    assert_eq!(
        c.venue_ids(follower).await?,
        acked,
        "a follower reads its own writes after the ack"
    );

    // SIGKILL the leader: the survivors elect a new one within 3 s.
    c.kill(leader)?;
    let killed_at = Instant::now();
    let new_leader = c.wait_for_leader(GROUP, Duration::from_secs(3)).await?;
    assert_ne!(new_leader, leader);
    eprintln!("new leader {new_leader} after {:?}", killed_at.elapsed());

    // The cluster accepts writes again, through every surviving node.
    for (i, via) in c.running().into_iter().cycle().take(6).enumerate() {
        create(&c, via, &format!("after-{i}"), &mut acked).await?;
    }

    // The killed node rejoins and converges: same applied index and catalog everywhere.
    c.start_node(leader)?;
    c.wait_converged(GROUP, Duration::from_secs(20)).await?;
    for id in c.ids() {
        assert_eq!(
            c.venue_ids(id).await?,
            acked,
            "node {id} holds exactly the acknowledged venues"
        );
    }

    // Restart the whole cluster: every acknowledged venue is still there.
    c.restart_all()?;
    c.wait_healthy(Duration::from_secs(30)).await?;
    c.wait_for_leader(GROUP, Duration::from_secs(10)).await?;
    c.wait_converged(GROUP, Duration::from_secs(20)).await?;
    for id in c.ids() {
        assert_eq!(
            c.venue_ids(id).await?,
            acked,
            "node {id} after a full restart"
        );
    }

    // And it keeps accepting writes.
    create(&c, follower, "after-restart", &mut acked).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_happens_once_whatever_order_nodes_start_in() -> Result<()> {
    // Start the bootstrap node last: nothing happens until every voter is up.
    let mut c = TestCluster::configure(ClusterOpts::default())?;
    c.start_node(3)?;
    c.start_node(2)?;
    c.start_node(1)?;
    c.wait_healthy(Duration::from_secs(30)).await?;
    let leader = c.wait_for_leader(GROUP, Duration::from_secs(10)).await?;
    let mut acked = BTreeSet::new();
    create(&c, leader, "one", &mut acked).await?;
    let term_before = c.view(leader).await?.group(GROUP).map(|g| g.term);

    // A restart of the bootstrap node alone must not initialize anything again:
    // the catalog keeps its data and its membership.
    c.stop(1)?;
    c.start_node(1)?;
    c.wait_healthy(Duration::from_secs(30)).await?;
    c.wait_converged(GROUP, Duration::from_secs(20)).await?;
    let view = c.view(1).await?;
    let g = view.group(GROUP).expect("catalog group");
    assert_eq!(g.members, vec![1, 2, 3]);
    assert!(g.term >= term_before.unwrap_or(0));
    assert_eq!(c.venue_ids(1).await?, acked);
    let log = std::fs::read_to_string(&c.node(1).log)?;
    assert_eq!(
        log.matches("bootstrapped the catalog group").count(),
        1,
        "bootstrap ran exactly once"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_request_with_the_same_idempotency_key_applies_once() -> Result<()> {
    let (c, leader) = TestCluster::start_ready(ClusterOpts::default()).await?;
    let follower = c.other_than(leader);
    let venue = NewVenue::sample("once", 1, 5);
    let first = c.client(leader).create_venue(&venue, Some("key-1")).await?;
    let retry = c
        .client(follower)
        .create_venue(&venue, Some("key-1"))
        .await?;
    assert_eq!(first, retry, "the retry returns the first outcome");
    let other = c
        .client(follower)
        .create_venue(&venue, Some("key-2"))
        .await?;
    assert_ne!(first.venue_id, other.venue_id);
    c.wait_converged(GROUP, Duration::from_secs(10)).await?;
    assert_eq!(c.venue_ids(leader).await?.len(), 2);
    Ok(())
}
