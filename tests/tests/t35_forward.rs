//! The peer `Forward` stream as a follower uses it: one stream, opened once, then
//! commands for any group, each proposed and answered on its own by id. Checked
//! directly over gRPC, as a peer would call it, including what a confused or
//! hostile peer could send.

use std::collections::HashMap;

use anyhow::{ensure, Result};
use boxoffice_node::codec;
use boxoffice_node::domain::catalog::{CatalogCommand, CatalogResponse};
use boxoffice_node::domain::{CommandBody, Proposal, Response};
use boxoffice_proto::peer::{
    forward_message::Message, forward_outcome::Outcome, ForwardAnswer, ForwardCommand,
    ForwardMessage, ForwardOpen,
};
use boxoffice_proto::PeerClient;
use boxoffice_tests::{ClusterOpts, TestCluster};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use uuid::Uuid;

fn open(cluster: &str) -> ForwardMessage {
    ForwardMessage {
        message: Some(Message::Open(ForwardOpen {
            cluster: cluster.into(),
            from: 99,
        })),
    }
}

fn command(id: u64, group_id: u64, command: Vec<u8>) -> ForwardMessage {
    ForwardMessage {
        message: Some(Message::Command(ForwardCommand {
            id,
            group_id,
            command,
            refusal_from_state: false,
            timeout_ms: 5000,
        })),
    }
}

/// Sends `messages` on a new stream to the node at `addr` and reads answers
/// until `expect` arrived or the node ends the stream; returns them by id.
async fn exchange(
    addr: &str,
    messages: Vec<ForwardMessage>,
    expect: usize,
) -> Result<HashMap<u64, Option<Outcome>>, tonic::Status> {
    let mut client = PeerClient::connect(format!("http://{addr}"))
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let (tx, rx) = mpsc::unbounded_channel();
    for m in messages {
        tx.send(m).expect("the receiver is alive");
    }
    let mut answers = client
        .forward(UnboundedReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut got = HashMap::new();
    while got.len() < expect {
        let Some(ForwardAnswer { id, outcome }) = answers.message().await? else {
            break;
        };
        got.insert(id, outcome.and_then(|o| o.outcome));
    }
    drop(tx);
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_stream_answers_each_command_by_id() -> Result<()> {
    let (cluster, leader) = TestCluster::start_ready(ClusterOpts::default()).await?;
    let follower = cluster.other_than(leader);
    let (at_leader, at_follower) = (
        cluster.node(leader).peer_addr.to_string(),
        cluster.node(follower).peer_addr.to_string(),
    );
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
    let messages = || {
        vec![
            open("test"),
            command(7, 0, encoded.clone()),
            command(8, 0, b"\x01not a command".to_vec()),
            // The same request id again: the first outcome, not a second apply.
            command(9, 0, encoded.clone()),
            // A group this cluster does not run.
            command(10, 4242, encoded.clone()),
        ]
    };

    let got = exchange(&at_leader, messages(), 4).await?;
    ensure!(got.len() == 4, "one answer per command: {got:?}");
    let applied = |id: u64| -> Result<(Response, u64)> {
        match &got[&id] {
            Some(Outcome::Response(bytes)) => Ok(codec::decode(bytes)?),
            other => anyhow::bail!("command {id}: expected a response, got {other:?}"),
        }
    };
    let (first, first_index) = applied(7)?;
    ensure!(
        matches!(first, Response::Catalog(CatalogResponse::Rejected(_))),
        "the refusal is the command's outcome: {first:?}"
    );
    let (again, _) = applied(9)?;
    ensure!(
        again == first,
        "a repeated request id gets the first outcome: {again:?}"
    );
    ensure!(first_index > 0, "applied at a log index");
    match &got[&8] {
        Some(Outcome::Unknown(why)) => ensure!(why.contains("undecodable"), "{why}"),
        other => anyhow::bail!("a garbled command is answered as such: {other:?}"),
    }
    match &got[&10] {
        Some(Outcome::Unknown(why)) => ensure!(why.contains("not running"), "{why}"),
        other => anyhow::bail!("a command for an unknown group: {other:?}"),
    }

    // A follower applies nothing and names the leader, command by command.
    let got = exchange(&at_follower, messages(), 4).await?;
    for id in [7, 9] {
        match &got[&id] {
            Some(Outcome::NotLeader(nl)) => ensure!(
                nl.leader_id == leader,
                "the hint names the leader {leader}: {nl:?}"
            ),
            other => anyhow::bail!("command {id} at a follower: {other:?}"),
        }
    }

    // What a peer cannot do: name another cluster, send a command before opening
    // the stream, or open it twice.
    let err = exchange(
        &at_leader,
        vec![open("another"), command(1, 0, encoded.clone())],
        1,
    )
    .await
    .expect_err("a stream for another cluster is refused");
    ensure!(err.code() == tonic::Code::PermissionDenied, "{err:?}");
    let err = exchange(&at_leader, vec![command(1, 0, encoded.clone())], 1)
        .await
        .expect_err("a stream must be opened first");
    ensure!(err.code() == tonic::Code::InvalidArgument, "{err:?}");
    let err = exchange(&at_leader, vec![open("test"), open("test")], 1)
        .await
        .expect_err("a stream is opened once");
    ensure!(err.code() == tonic::Code::InvalidArgument, "{err:?}");

    // A later retry of the request id, on another stream, still gets the first outcome.
    let got = exchange(
        &at_leader,
        vec![open("test"), command(1, 0, encoded.clone())],
        1,
    )
    .await?;
    match &got[&1] {
        Some(Outcome::Response(bytes)) => {
            let (r, index): (Response, u64) = codec::decode(bytes)?;
            ensure!(r == first && index >= first_index, "{r:?} at {index}");
        }
        other => anyhow::bail!("a retry later: {other:?}"),
    }
    Ok(())
}
