//! Nothing assumes three nodes: past five, nodes follow the catalog as learners and
//! serve it locally.

use std::time::Duration;

use anyhow::Result;
use boxoffice_client::NewVenue;
use boxoffice_tests::{wait_for, ClusterOpts, TestCluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_six_node_cluster_has_five_catalog_voters_and_one_learner() -> Result<()> {
    let (c, leader) = TestCluster::start_ready(ClusterOpts {
        nodes: 6,
        ..ClusterOpts::default()
    })
    .await?;
    let (voters, learners) = wait_for(
        Duration::from_secs(20),
        "node 6 added as a learner",
        || async {
            let view = c.view(leader).await?;
            let g = view.group(0).cloned();
            Ok(g.filter(|g| g.learners == vec![6])
                .map(|g| (g.members, g.learners)))
        },
    )
    .await?;
    assert_eq!(voters, vec![1, 2, 3, 4, 5]);
    assert_eq!(learners, vec![6]);

    // The learner forwards writes and reads the catalog from its own replica.
    let created = c
        .client(6)
        .create_venue(&NewVenue::sample("from-the-learner", 1, 3), None)
        .await?;
    c.wait_converged(0, Duration::from_secs(20)).await?;
    let on_learner = c.client(6).venue(&created.venue_id).await?;
    assert_eq!(on_learner["capacity"], 3);
    Ok(())
}
