//! Realtime for events whose group this node does not replicate: the node streams
//! the group's [`Facts`] from a member over gRPC (`Peer.Watch`), and switches to
//! another member when that one dies or stops answering.
//!
//! The subscriber's node ([`Feed`]) sends its [`Interest`] first and again whenever
//! it changes; the member ([`serve`]) reads the facts every [`TICK`] and sends a
//! frame when they changed, and at least every [`HEARTBEAT`] while it knows a
//! leader of the group. A feed that hears nothing for [`SILENCE`] (a member hung,
//! or cut off from its group's leader and so falling behind) or whose stream
//! breaks (a member killed, or the group moved away from it) reconnects to the
//! next member; the member answers a new stream with the whole picture, so
//! subscribers get the true counts again after a switch (facts older than what
//! they were told are ignored: counts never step back to a lagging replica's).

use std::sync::Arc;
use std::time::Duration;

use boxoffice_proto::peer::{WatchFrame, WatchRequest};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::Status;
use uuid::Uuid;

use super::facts::{self, Facts, Interest};
use super::TICK;
use crate::codec;
use crate::raft::{Group, GroupId, Groups, NodeId};
use crate::server::NodeCtx;

/// A member sends a frame at least this often, changed or not.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// A feed that hears nothing for this long moves to another member.
pub const SILENCE: Duration = Duration::from_secs(6);

/// This node's stream of one event group from a member, while the event is
/// watched here. Dropping it ends the stream.
pub struct Feed {
    event: Uuid,
    interest: watch::Sender<Interest>,
    task: JoinHandle<()>,
}

impl Drop for Feed {
    fn drop(&mut self) {
        self.task.abort();
        // 0: no source (the series stays, as every Prometheus gauge does).
        metrics::gauge!("boxoffice_realtime_feed_source", "event_id" => self.event.to_string())
            .set(0.0);
    }
}

impl Feed {
    /// Starts following `group` for `event`; frames go to `ctx.realtime`.
    pub fn start(ctx: Arc<NodeCtx>, event: Uuid, group: GroupId, interest: Interest) -> Self {
        let (tx, rx) = watch::channel(interest);
        Self {
            event,
            interest: tx,
            task: tokio::spawn(follow(ctx, event, group, rx)),
        }
    }

    /// Tells the member what this node's subscribers now care about.
    pub fn want(&self, interest: Interest) {
        self.interest.send_if_modified(|i| {
            let changed = *i != interest;
            *i = interest;
            changed
        });
    }
}

/// Forever (until the feed is dropped): stream from one member after another,
/// starting at one chosen by this node's id so that non-members spread over
/// the members.
async fn follow(ctx: Arc<NodeCtx>, event: Uuid, group: GroupId, want: watch::Receiver<Interest>) {
    let me = ctx.groups.peers().me();
    let mut turn = usize::try_from(me).unwrap_or(0);
    let mut pause = Duration::from_millis(100);
    loop {
        let members: Vec<NodeId> = ctx
            .router
            .members(group)
            .unwrap_or_default()
            .into_iter()
            .filter(|m| *m != me)
            .collect();
        let Some(&source) = members.get(turn % members.len().max(1)) else {
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        };
        turn = turn.wrapping_add(1);
        metrics::gauge!("boxoffice_realtime_feed_source", "event_id" => event.to_string())
            .set(source as f64);
        let (heard, why) = stream_from(&ctx, event, group, source, want.clone()).await;
        metrics::counter!("boxoffice_realtime_feed_switches_total").increment(1);
        tracing::info!(%event, %group, source, "realtime feed from node {source} ended ({why}); trying another member");
        pause = if heard {
            Duration::from_millis(100)
        } else {
            (pause * 2).min(Duration::from_secs(2))
        };
        tokio::time::sleep(pause).await;
    }
}

/// One stream from `source`, until it fails: whether any frame arrived, and why
/// it ended.
async fn stream_from(
    ctx: &Arc<NodeCtx>,
    event: Uuid,
    group: GroupId,
    source: NodeId,
    mut want: watch::Receiver<Interest>,
) -> (bool, String) {
    let Some(addr) = ctx.router.addr_of(source) else {
        return (false, "its address is unknown".into());
    };
    let peers = ctx.groups.peers();
    let mut client = match peers.client(source, &addr) {
        Ok(c) => c,
        Err(e) => return (false, e.to_string()),
    };
    let (cluster, me) = (peers.cluster().to_string(), peers.me());
    let request = move |i: &Interest| WatchRequest {
        cluster: cluster.clone(),
        group_id: group.0,
        from: me,
        interest: codec::encode(i).unwrap_or_default(),
    };
    let first = request(&want.borrow_and_update());
    let updates = futures::stream::unfold(want, move |mut want| {
        let request = request.clone();
        async move {
            want.changed().await.ok()?;
            let msg = request(&want.borrow_and_update());
            Some((msg, want))
        }
    });
    let outgoing = futures::stream::once(async move { first }).chain(updates);
    let mut frames = match tokio::time::timeout(SILENCE, client.watch(outgoing)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return (false, status.to_string()),
        Err(_) => return (false, "no answer".into()),
    };
    let mut heard = false;
    loop {
        match tokio::time::timeout(SILENCE, frames.message()).await {
            Err(_) => return (heard, format!("silent for {SILENCE:?}")),
            Ok(Err(status)) => return (heard, status.to_string()),
            Ok(Ok(None)) => return (heard, "the member closed the stream".into()),
            Ok(Ok(Some(frame))) => match codec::decode::<Facts>(&frame.facts) {
                Ok(f) => {
                    heard = true;
                    ctx.realtime.on_frame(ctx, event, f);
                }
                Err(e) => return (heard, format!("undecodable frame: {e}")),
            },
        }
    }
}

/// The frames of one `Peer.Watch`, as the stream tonic sends.
pub struct Frames(mpsc::Receiver<Result<WatchFrame, Status>>);

impl futures::Stream for Frames {
    type Item = Result<WatchFrame, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

/// The member's side of `Peer.Watch`: streams the facts of `group` for the
/// requester's interest (see the module doc) until the requester hangs up or
/// the group stops running here.
pub fn serve(
    groups: Groups,
    group: Arc<Group>,
    mut interest: Interest,
    mut incoming: tonic::Streaming<WatchRequest>,
) -> Frames {
    let (tx, rx) = mpsc::channel(8);
    tokio::spawn(async move {
        metrics::gauge!("boxoffice_realtime_feeds_served").increment(1.0);
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut seen_index, mut counts) = (None, Vec::new());
        let mut last: Option<Vec<u8>> = None;
        let mut last_sent = Instant::now();
        loop {
            tokio::select! {
                m = incoming.message() => match m {
                    Ok(Some(m)) => match codec::decode(&m.interest) {
                        Ok(i) => interest = i,
                        Err(e) => {
                            let _ = tx.send(Err(Status::invalid_argument(format!("bad interest: {e}")))).await;
                            break;
                        }
                    },
                    // The requester hung up.
                    _ => break,
                },
                _ = tick.tick() => {}
                _ = tx.closed() => break,
            }
            if !groups
                .get(group.id)
                .is_some_and(|g| Arc::ptr_eq(&g, &group))
            {
                let gone = Status::unavailable(format!("group {} no longer runs here", group.id));
                let _ = tx.send(Err(gone)).await;
                break;
            }
            // Cut off from the group's leader, this replica may fall behind:
            // stay silent, and the requester moves to another member.
            if group.raft.metrics().borrow().current_leader.is_none() {
                continue;
            }
            let now = chrono::Utc::now().timestamp_millis();
            let Some(mut f) = facts::read(&group, seen_index, &interest, now) else {
                continue;
            };
            if let Some(c) = f.counts.take() {
                counts = c;
                seen_index = f.index;
            }
            f.counts = Some(counts.clone());
            let Ok(bytes) = codec::encode(&f) else {
                break;
            };
            if last.as_ref() == Some(&bytes) && last_sent.elapsed() < HEARTBEAT {
                continue;
            }
            if tx
                .send(Ok(WatchFrame {
                    facts: bytes.clone(),
                }))
                .await
                .is_err()
            {
                break;
            }
            last = Some(bytes);
            last_sent = Instant::now();
        }
        metrics::gauge!("boxoffice_realtime_feeds_served").decrement(1.0);
    });
    Frames(rx)
}
