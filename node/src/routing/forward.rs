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
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use boxoffice_proto::peer::{
    forward_message, ForwardCommand, ForwardMessage, ForwardOpen, ForwardOutcome,
};
use futures::StreamExt;
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
    /// The commands to send, in order, each with its caller's deadline; the
    /// receiver feeds the request's body ([`Forwarder::run`]).
    tx: mpsc::UnboundedSender<(ForwardCommand, Instant)>,
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

    /// `command` as it leaves, if its caller still waits: with the time it has
    /// left as its timeout. Commands whose callers stopped waiting (queued while
    /// the stream opened, or while the peer did not read) are not sent, so a
    /// leader never proposes one its sender has already given up on.
    fn fresh(&self, mut command: ForwardCommand, deadline: Instant) -> Option<ForwardMessage> {
        let left = deadline.checked_duration_since(Instant::now())?;
        if !self.lock().waiting.contains_key(&command.id) {
            return None;
        }
        command.timeout_ms = u64::try_from(left.as_millis()).unwrap_or(u64::MAX).max(1);
        Some(ForwardMessage {
            message: Some(forward_message::Message::Command(command)),
        })
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
        let command = ForwardCommand {
            id,
            group_id: group.0,
            command,
            refusal_from_state,
            // Set as it leaves (`Stream::fresh`).
            timeout_ms: 0,
        };
        if stream.tx.send((command, Instant::now() + timeout)).is_err() {
            return Err(tonic::Status::unavailable("the forward stream ended"));
        }
        hot_counter!("boxoffice_forwards_total").increment(1);
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

    /// Starts a stream to `key`: a task makes the call, hands each answer to its
    /// command's caller, and closes the stream when the call ends.
    fn open(&self, key: Key) -> Arc<Stream> {
        let (tx, rx) = mpsc::unbounded_channel();
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

    /// Makes the call (the open message, then each command as it leaves) and
    /// answers commands until it ends; returns why it ended.
    async fn run(
        &self,
        (node, addr): &Key,
        rx: mpsc::UnboundedReceiver<(ForwardCommand, Instant)>,
        stream: &Arc<Stream>,
    ) -> tonic::Status {
        let open = ForwardMessage {
            message: Some(forward_message::Message::Open(ForwardOpen {
                cluster: self.peers.cluster().to_string(),
                from: self.peers.me(),
            })),
        };
        // Weak: the request's body must not keep its own stream alive.
        let weak: Weak<Stream> = Arc::downgrade(stream);
        let commands = UnboundedReceiverStream::new(rx).filter_map(move |(command, deadline)| {
            let message = weak.upgrade().and_then(|s| s.fresh(command, deadline));
            futures::future::ready(message)
        });
        let outgoing = futures::stream::iter([open]).chain(commands);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn stream() -> Arc<Stream> {
        let (tx, _rx) = mpsc::unbounded_channel();
        Arc::new(Stream {
            tx,
            state: Mutex::default(),
        })
    }

    fn command(id: u64) -> ForwardCommand {
        ForwardCommand {
            id,
            group_id: 1,
            command: vec![1, 2, 3],
            refusal_from_state: true,
            timeout_ms: 0,
        }
    }

    #[test]
    fn a_command_leaves_only_while_its_caller_waits_with_the_time_it_has_left() {
        let s = stream();
        let (id, _answer) = s.register().expect("a live stream registers");
        let sent = s
            .fresh(command(id), Instant::now() + Duration::from_secs(2))
            .expect("its caller waits");
        let Some(forward_message::Message::Command(c)) = sent.message else {
            panic!("a command message: {sent:?}");
        };
        assert_eq!((c.id, c.group_id, c.refusal_from_state), (id, 1, true));
        assert!((1..=2000).contains(&c.timeout_ms), "{}", c.timeout_ms);

        // Past its deadline, or forgotten by its caller: not sent.
        assert!(s.fresh(command(id), Instant::now()).is_none());
        drop(Forget(&s, id));
        assert!(s
            .fresh(command(id), Instant::now() + Duration::from_secs(2))
            .is_none());
    }

    #[test]
    fn a_closed_stream_answers_its_waiting_commands_and_takes_no_more() {
        let s = stream();
        let (_, mut first) = s.register().expect("a live stream registers");
        let (id, mut second) = s.register().expect("a live stream registers");
        s.answer(id, Ok(ForwardOutcome::default()));
        s.close(tonic::Status::unavailable("gone"));
        let closed = first.try_recv().expect("answered at close");
        assert_eq!(
            closed.expect_err("with the stream's status").code(),
            tonic::Code::Unavailable
        );
        assert!(second.try_recv().expect("answered before").is_ok());
        assert!(s.register().is_none(), "a closed stream takes no command");
    }
}
