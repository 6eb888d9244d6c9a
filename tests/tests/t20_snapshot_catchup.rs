//! A node that was down while the log was compacted past its position catches up
//! through a snapshot.

use std::time::Duration;

use anyhow::Result;
use boxoffice_client::NewVenue;
use boxoffice_tests::{prometheus_value, wait_for, ClusterOpts, TestCluster};

const GROUP: u64 = 0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_down_past_compaction_catches_up_by_snapshot() -> Result<()> {
    let (mut c, leader) = TestCluster::start_ready(ClusterOpts {
        snapshot_logs_since_last: 20,
        max_in_snapshot_log_to_keep: 0,
        ..ClusterOpts::default()
    })
    .await?;
    let lagger = c.other_than(leader);
    c.wait_converged(GROUP, Duration::from_secs(10)).await?;
    let lagger_last = c
        .view(lagger)
        .await?
        .group(GROUP)
        .and_then(|g| g.last_log_index)
        .unwrap_or(0);

    // One follower goes down; enough writes pass to snapshot and purge the log.
    c.kill(lagger)?;
    let mut acked = Vec::new();
    for i in 0..80 {
        acked.push(
            c.client(leader)
                .create_venue(&NewVenue::sample(&format!("v{i}"), 1, 4), None)
                .await?
                .venue_id,
        );
    }
    let purged = wait_for(
        Duration::from_secs(20),
        "the leader to purge its log past the lagger",
        || async {
            let g = c.view(leader).await?.group(GROUP).cloned();
            Ok(g.and_then(|g| g.purged_index).filter(|p| *p > lagger_last))
        },
    )
    .await?;
    eprintln!("leader purged up to {purged}; lagger had {lagger_last}");

    // The replicas that were up took turns: each built at its own share of the
    // interval (a third of it apart), never both at the same entry.
    let other = c
        .running()
        .into_iter()
        .find(|id| *id != leader)
        .expect("a second replica is up");
    let mut built = Vec::new();
    for id in [leader, other] {
        built.push(
            c.view(id)
                .await?
                .group(GROUP)
                .and_then(|g| g.snapshot_index),
        );
    }
    let (at_leader, at_other) = (built[0], built[1]);
    eprintln!("last snapshots: leader {at_leader:?}, node {other} {at_other:?}");
    assert!(
        at_leader.is_some() && at_other.is_some(),
        "both built a snapshot"
    );
    assert_ne!(
        at_leader, at_other,
        "replicas build in turns, not at the same entry"
    );

    // The lagger returns: the entries it needs are gone, so only a snapshot can help.
    c.start_node(lagger)?;
    c.wait_converged(GROUP, Duration::from_secs(30)).await?;
    let metrics = c.client(lagger).metrics().await?;
    let installed = prometheus_value(
        &metrics,
        "boxoffice_raft_snapshots_installed_total{group=\"0\"}",
    );
    assert!(
        installed.unwrap_or(0.0) >= 1.0,
        "the lagger installed a snapshot; metrics:\n{metrics}"
    );
    let list = c.client(lagger).venues().await?;
    for id in &acked {
        assert!(
            list.venues.iter().any(|v| v["venue_id"] == id.as_str()),
            "venue {id} on the lagger"
        );
    }

    // And it keeps up by log afterwards, and survives a restart of its own.
    acked.push(
        c.client(lagger)
            .create_venue(&NewVenue::sample("after", 1, 4), None)
            .await?
            .venue_id,
    );
    c.stop(lagger)?;
    c.start_node(lagger)?;
    c.wait_converged(GROUP, Duration::from_secs(30)).await?;
    // Its catalog reopened from the installed snapshot plus the log after it.
    let list = c.client(lagger).venues().await?;
    for id in &acked {
        assert!(
            list.venues.iter().any(|v| v["venue_id"] == id.as_str()),
            "venue {id} on the lagger after its restart"
        );
    }
    Ok(())
}
