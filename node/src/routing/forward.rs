//! [`Forwarder`]: a follower's proposals for a group's leader, on one stream per peer.
//!
//! Two thirds of the requests of a 3-node cluster arrive at a node that does not
//! lead their group and are forwarded. A gRPC call per command (and later per
//! batch of the commands that arrived together) cost an HTTP/2 stream each way:
//! headers and trailers encoded and parsed, a stream opened and closed, a task on
//! the leader. In a hold race the batches averaged 1.6 commands, so that was a
//! call per command or nearly. Now each node keeps one long-lived `Peer.Forward`
//! stream per peer it forwards to: a command is one message on it, sent at once
//! (never held back for others), and its answer comes back by id as soon as the
//! leader knows it, whatever the other commands on the stream are doing. Commands
//! queued together while the connection's task is busy share a write.
//!
//! A stream that fails (the peer restarted, the connection dropped) answers every
//! command waiting on it with `unavailable`, and the next command opens a new one.
//! The router retries such a command like any failed forward, with the same request
//! id, so one that did commit is answered from the leader's dedup table.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use boxoffice_proto::peer::{
    forward_message, ForwardCommand, ForwardMessage, ForwardOpen, ForwardOutcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;

use crate::raft::{GroupId, NodeId, Peers};

/// A command's answer as its caller gets it.
type Answer = Result<ForwardOutcome, tonic::Status>;

/// Where a stream goes: the node, at the address it was reached at.
type Key = (NodeId, String);

/// Forwards commands to group leaders over one stream per peer (module doc).
#[derive(Clone)]
pub struct Forwarder {
    peers: Peers,
    streams: Arc<Mutex<HashMap<Key, Arc<Stream>>>>,
}

/// One open (or opening) `Peer.Forward` stream.
struct Stream {
    /// The messages to send, in order; its receiver is the request's body.
    tx: mpsc::UnboundedSender<ForwardMessage>,
    state: Mutex<StreamState>,
}

#[derive(Default)]
struct StreamState {
    next_id: u64,
    /// Commands sent and not yet answered, by id.
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    /// Why the stream ended, once it has: nothing more is registered.
    closed: Option<tonic::Status>,
}

impl Stream {
    fn lock(&self) -> std::sync::MutexGuard<'_, StreamState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a command and returns its id and the receiver of its answer;
    /// `None` if the stream has ended.
    fn register(&self) -> Option<(u64, oneshot::Receiver<Answer>)> {
        let mut st = self.lock();
        if st.closed.is_some() {
            return None;
        }
        let id = st.next_id;
        st.next_id += 1;
        let (tx, rx) = oneshot::channel();
        st.waiting.insert(id, tx);
        Some((id, rx))
    }

    /// Answers command `id`, if its caller still waits.
    fn answer(&self, id: u64, answer: Answer) {
        let tx = self.lock().waiting.remove(&id);
        if let Some(tx) = tx {
            let _ = tx.send(answer);
        }
    }

    /// Ends the stream: every waiting command gets `status`.
    fn close(&self, status: tonic::Status) {
        let waiting = {
            let mut st = self.lock();
            st.closed = Some(status.clone());
            std::mem::take(&mut st.waiting)
        };
        for tx in waiting.into_values() {
            let _ = tx.send(Err(status.clone()));
        }
    }
}

/// Forgets a command its caller stopped waiting for (answered, timed out, or
/// the caller's future dropped).
struct Forget<'a>(&'a Stream, u64);

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.0.lock().waiting.remove(&self.1);
    }
}

impl Forwarder {
    pub fn new(peers: Peers) -> Self {
        Self {
            peers,
            streams: Arc::default(),
        }
    }

    /// Forwards an encoded proposal to `node`, which applies it if it leads `group`,
    /// and waits up to `timeout` for its outcome.
    pub async fn forward(
        &self,
        node: NodeId,
        addr: &str,
        group: GroupId,
        command: Vec<u8>,
        refusal_from_state: bool,
        timeout: Duration,
    ) -> Result<ForwardOutcome, tonic::Status> {
        // A stream found just as it ended is replaced once.
        let (stream, id, rx) = match self.register(node, addr) {
            Some(registered) => registered,
            None => self
                .register(node, addr)
                .ok_or_else(|| tonic::Status::unavailable("the forward stream ended"))?,
        };
        let _forget = Forget(&stream, id);
        let message = ForwardMessage {
            message: Some(forward_message::Message::Command(ForwardCommand {
                id,
                group_id: group.0,
                command,
                refusal_from_state,
                timeout_ms: u64::try_from(timeout.as_millis())
                    .unwrap_or(u64::MAX)
                    .max(1),
            })),
        };
        if stream.tx.send(message).is_err() {
            return Err(tonic::Status::unavailable("the forward stream ended"));
        }
        metrics::counter!("boxoffice_forwards_total").increment(1);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(tonic::Status::unavailable("the forward stream ended")),
            Err(_) => Err(tonic::Status::deadline_exceeded(
                "no answer from the leader within the deadline",
            )),
        }
    }

    /// The live stream to `node` at `addr` (opened if there is none) and a
    /// command registered on it; `None` if that stream has just ended.
    fn register(
        &self,
        node: NodeId,
        addr: &str,
    ) -> Option<(Arc<Stream>, u64, oneshot::Receiver<Answer>)> {
        let key: Key = (node, addr.to_string());
        let stream = {
            let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
            match streams.get(&key) {
                Some(s) if s.lock().closed.is_none() => s.clone(),
                _ => {
                    let s = self.open(key.clone());
                    streams.insert(key, s.clone());
                    s
                }
            }
        };
        let (id, rx) = stream.register()?;
        Some((stream, id, rx))
    }

    /// Starts a stream to `key`: its open message is queued first, and a task
    /// makes the call, hands each answer to its command's caller, and closes the
    /// stream when the call ends.
    fn open(&self, key: Key) -> Arc<Stream> {
        let (tx, rx) = mpsc::unbounded_channel();
        let open = ForwardMessage {
            message: Some(forward_message::Message::Open(ForwardOpen {
                cluster: self.peers.cluster().to_string(),
                from: self.peers.me(),
            })),
        };
        // The receiver is alive: it is moved into the task below.
        let _ = tx.send(open);
        let stream = Arc::new(Stream {
            tx,
            state: Mutex::default(),
        });
        let (this, s) = (self.clone(), stream.clone());
        tokio::spawn(async move {
            let status = this.run(&key, rx, &s).await;
            tracing::debug!(node = key.0, addr = %key.1, "forward stream ended: {status}");
            {
                let mut streams = this.streams.lock().unwrap_or_else(|e| e.into_inner());
                if streams.get(&key).is_some_and(|cur| Arc::ptr_eq(cur, &s)) {
                    streams.remove(&key);
                }
            }
            s.close(status);
        });
        stream
    }

    /// Makes the call and answers commands until it ends; returns why it ended.
    async fn run(
        &self,
        (node, addr): &Key,
        rx: mpsc::UnboundedReceiver<ForwardMessage>,
        stream: &Stream,
    ) -> tonic::Status {
        let outgoing = UnboundedReceiverStream::new(rx);
        let mut answers = match self.peers.forward_stream(*node, addr, outgoing).await {
            Ok(answers) => answers,
            Err(status) => return status,
        };
        loop {
            match answers.message().await {
                Ok(Some(a)) => {
                    let outcome = a.outcome.unwrap_or_default();
                    stream.answer(a.id, Ok(outcome));
                }
                Ok(None) => return tonic::Status::unavailable("the peer ended the forward stream"),
                Err(status) => return status,
            }
        }
    }
}
