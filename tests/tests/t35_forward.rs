//! The peer `Forward` call as a follower sends it: several commands for one group
//! in one call, each proposed and answered on its own, in order. Checked directly
//! over gRPC, as a peer would call it, including what a confused or hostile peer
//! could send.

use anyhow::{ensure, Context, Result};
use boxoffice_node::codec;
use boxoffice_node::domain::catalog::{CatalogCommand, CatalogResponse};
use boxoffice_node::domain::{CommandBody, Proposal, Response};
use boxoffice_proto::peer::{forward_outcome::Outcome, ForwardItem, ForwardRequest};
use boxoffice_proto::PeerClient;
use boxoffice_tests::{ClusterOpts, TestCluster};
use uuid::Uuid;

fn item(command: Vec<u8>) -> ForwardItem {
    ForwardItem {
        command,
        refusal_from_state: false,
        timeout_ms: 5000,
    }
}

fn request(items: Vec<ForwardItem>) -> ForwardRequest {
    ForwardRequest {
        cluster: "test".into(),
        group_id: 0,
        from: 99,
        items,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_answers_each_command_in_order() -> Result<()> {
    let (cluster, leader) = TestCluster::start_ready(ClusterOpts::default()).await?;
    let follower = cluster.other_than(leader);
    let connect = |id: u64| {
        let addr = format!("http://{}", cluster.node(id).peer_addr);
        async move {
            PeerClient::connect(addr)
                .await
                .context("connecting to a node's peer port")
        }
    };
    // A catalog command whose outcome is a refusal (no such payment method): it is
    // written, applied and remembered like any other.
    let proposal = Proposal {
        request_id: Uuid::new_v4(),
        body: CommandBody::Catalog(CatalogCommand::RemovePaymentMethod {
            user_id: Uuid::new_v4(),
            payment_method_id: Uuid::new_v4(),
        }),
    };
    let encoded = codec::encode(&proposal)?;
    let items = || {
        vec![
            item(encoded.clone()),
            item(b"\x01not a command".to_vec()),
            // The same request id again: the first outcome, not a second apply.
            item(encoded.clone()),
        ]
    };

    let mut at_leader = connect(leader).await?;
    let reply = at_leader.forward(request(items())).await?.into_inner();
    ensure!(reply.items.len() == 3, "one outcome per command: {reply:?}");
    let applied = |i: usize| -> Result<(Response, u64)> {
        match &reply.items[i].outcome {
            Some(Outcome::Response(bytes)) => Ok(codec::decode(bytes)?),
            other => anyhow::bail!("command {i}: expected a response, got {other:?}"),
        }
    };
    let (first, first_index) = applied(0)?;
    ensure!(
        matches!(first, Response::Catalog(CatalogResponse::Rejected(_))),
        "the refusal is the command's outcome: {first:?}"
    );
    let (again, _) = applied(2)?;
    ensure!(
        again == first,
        "a repeated request id gets the first outcome: {again:?}"
    );
    ensure!(first_index > 0, "applied at a log index");
    match &reply.items[1].outcome {
        Some(Outcome::Unknown(why)) => ensure!(why.contains("undecodable"), "{why}"),
        other => anyhow::bail!("a garbled command is answered as such: {other:?}"),
    }

    // A follower applies nothing and names the leader, command by command.
    let mut at_follower = connect(follower).await?;
    let reply = at_follower.forward(request(items())).await?.into_inner();
    ensure!(reply.items.len() == 3, "{reply:?}");
    for i in [0, 2] {
        match &reply.items[i].outcome {
            Some(Outcome::NotLeader(nl)) => ensure!(
                nl.leader_id == leader,
                "the hint names the leader {leader}: {nl:?}"
            ),
            other => anyhow::bail!("command {i} at a follower: {other:?}"),
        }
    }

    // What a peer cannot do: send more than a call may carry, or name another cluster.
    let many = (0..5000).map(|_| item(Vec::new())).collect();
    let err = at_leader
        .forward(request(many))
        .await
        .expect_err("an oversized call is refused whole");
    ensure!(err.code() == tonic::Code::InvalidArgument, "{err:?}");
    let mut wrong = request(items());
    wrong.cluster = "another".into();
    let err = at_leader
        .forward(wrong)
        .await
        .expect_err("a call for another cluster is refused");
    ensure!(err.code() == tonic::Code::PermissionDenied, "{err:?}");

    // A later retry of the request id still gets the first outcome.
    let reply = at_leader
        .forward(request(vec![item(encoded.clone())]))
        .await?
        .into_inner();
    match &reply.items[0].outcome {
        Some(Outcome::Response(bytes)) => {
            let (r, index): (Response, u64) = codec::decode(bytes)?;
            ensure!(r == first && index >= first_index, "{r:?} at {index}");
        }
        other => anyhow::bail!("a retry later: {other:?}"),
    }
    Ok(())
}
