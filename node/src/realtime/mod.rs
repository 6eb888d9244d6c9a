//! Realtime updates (docs/design.md, "Realtime"): the node's subscriptions and
//! the watcher that turns the applied state of the event groups it replicates into
//! messages for them. [`ws`] serves the WebSocket.
//!
//! The watcher looks at each watched event every [`TICK`]: when the group applied
//! something since its last look it recomputes the seats available per section
//! and sends each section whose count changed (`availability_update`: coalesced
//! to at most one per look per section, fewer for a crowd under
//! `realtime.fanout_per_second`, and always ending on the true count);
//! for each subscriber it sends `queue_update` when the fan's place or status
//! moved (READY with the access token), `reservation_expiring` once when one of
//! the fan's holds is due within a minute (by the hold's stamped expiry), and
//! `reservation_expired` when it lapsed. Nothing runs on the apply path.
//!
//! Each connection has a bounded queue; a subscriber that falls behind is
//! dropped (the connection closes with 4008) instead of slowing anyone else.
//!
//! [`facts`] is the read of a group both paths share; for an event whose group
//! this node does not replicate, [`feed`] streams those facts from a member.

pub mod facts;
pub mod feed;
pub mod ws;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use chrono::{SecondsFormat, TimeZone, Utc};
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use self::facts::{Facts, Interest};
use self::feed::Feed;
use crate::domain::inventory::queue::estimated_wait_minutes;
use crate::domain::inventory::EntryState;
use crate::raft::GroupId;
use crate::server::NodeCtx;

/// How often the watcher looks.
pub const TICK: Duration = Duration::from_millis(250);
/// Messages a connection may have waiting before it is dropped as too slow.
pub const QUEUE_DEPTH: usize = 256;
/// How long before a hold's expiry its holder is warned.
pub const WARN_BEFORE_MS: i64 = 60_000;

/// The nice value of the connection threads (the node's own threads run at 0).
const CONNECTION_NICE: libc::c_int = 10;

/// The runtime WebSocket connections run on: `threads` threads of its own, at a
/// lower CPU priority than the node's request and Raft work, so that sending to
/// a crowd of subscribers neither queues ahead of holds in the node's runtime nor
/// takes CPU they need. The first call builds it (for the process's life); if it
/// cannot be built, connections share the node's runtime.
pub fn connection_runtime(threads: usize) -> tokio::runtime::Handle {
    static RUNTIME: crate::server::OwnRuntime = std::sync::OnceLock::new();
    crate::server::own_runtime(&RUNTIME, "realtime", || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("realtime")
            .on_thread_start(lower_priority)
            .enable_all()
            .build()
    })
}

/// Lowers the calling thread's CPU priority (Linux: nice is per thread).
fn lower_priority() {
    // SAFETY: gettid and setpriority take plain integers and touch no memory of ours.
    let rc = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, CONNECTION_NICE)
    };
    if rc != 0 {
        tracing::debug!(
            "realtime thread keeps its priority: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// One connection's way out.
#[derive(Clone)]
pub struct Outlet {
    tx: mpsc::Sender<Utf8Bytes>,
    /// Set to a close code when the connection must end (it fell behind).
    kick: Arc<watch::Sender<Option<u16>>>,
}

impl Outlet {
    /// A connection's outlet, its message queue and its kick signal.
    pub fn new() -> (
        Self,
        mpsc::Receiver<Utf8Bytes>,
        watch::Receiver<Option<u16>>,
    ) {
        let (tx, rx) = mpsc::channel(QUEUE_DEPTH);
        let (kick, kicked) = watch::channel(None);
        (
            Self {
                tx,
                kick: Arc::new(kick),
            },
            rx,
            kicked,
        )
    }

    /// Queues a message (serialized once, shared by every subscriber it goes
    /// to); false (and the connection kicked) if the queue is full.
    fn send(&self, msg: &Utf8Bytes) -> bool {
        match self.tx.try_send(msg.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("boxoffice_realtime_dropped_total").increment(1);
                let _ = self.kick.send(Some(4008));
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }

    fn send_json(&self, msg: &Value) -> bool {
        self.send(&Utf8Bytes::from(msg.to_string()))
    }
}

/// One subscription of one connection to one event.
struct Sub {
    user: Uuid,
    out: Outlet,
    /// Nothing sent yet: the next look sends the whole picture first.
    fresh: bool,
    /// The last queue place and status sent.
    queue: Option<(u64, &'static str)>,
    /// Holds warned about, each with whether its lapse was told.
    warned: BTreeMap<Uuid, bool>,
}

/// An event someone watches on this node.
struct Watched {
    group: GroupId,
    sections: Vec<String>,
    seen_index: Option<u64>,
    /// Seats available per section as last read.
    counts: Vec<u32>,
    /// The counts last sent to every subscriber, and when.
    sent: Vec<u32>,
    sent_at: Option<Instant>,
    subs: HashMap<u64, Sub>,
    /// The stream from a member, while this node does not replicate the group.
    feed: Option<Feed>,
    /// The latest facts the feed brought.
    remote: Option<Facts>,
}

impl Watched {
    /// The fans and warned holds of this node's subscribers.
    fn interest(&self) -> Interest {
        let users: BTreeSet<Uuid> = self.subs.values().map(|s| s.user).collect();
        let holds: BTreeSet<Uuid> = self
            .subs
            .values()
            .flat_map(|s| s.warned.keys().copied())
            .collect();
        Interest {
            users: users.into_iter().collect(),
            holds: holds.into_iter().collect(),
        }
    }
}

/// The node's subscriptions.
#[derive(Default)]
pub struct Hub {
    next: AtomicU64,
    events: Mutex<HashMap<Uuid, Watched>>,
}

/// A connection's request to watch an event.
pub struct Subscription {
    pub conn: u64,
    pub user: Uuid,
    pub event: Uuid,
    pub group: GroupId,
    /// The event's section names, in layout order.
    pub sections: Vec<String>,
    pub out: Outlet,
}

fn stamp(ms: i64) -> String {
    Utc.timestamp_millis_opt(ms)
        .single()
        .unwrap_or_else(Utc::now)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

impl Hub {
    /// A new connection id.
    pub fn connection(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    fn with<T>(&self, f: impl FnOnce(&mut HashMap<Uuid, Watched>) -> T) -> T {
        f(&mut self.events.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Subscribes a connection to an event; the next look sends it the current
    /// state (from this node's replica of the group, or from a member's feed).
    pub fn subscribe(&self, s: Subscription) {
        let Subscription {
            conn,
            user,
            event,
            group,
            sections,
            out,
        } = s;
        self.with(|events| {
            let w = events.entry(event).or_insert_with(|| Watched {
                group,
                sections,
                seen_index: None,
                counts: Vec::new(),
                sent: Vec::new(),
                sent_at: None,
                subs: HashMap::new(),
                feed: None,
                remote: None,
            });
            w.subs.insert(
                conn,
                Sub {
                    user,
                    out,
                    fresh: true,
                    queue: None,
                    warned: BTreeMap::new(),
                },
            );
        });
        metrics::gauge!("boxoffice_realtime_subscriptions").increment(1.0);
    }

    /// Ends one subscription (or none).
    pub fn unsubscribe(&self, conn: u64, event: &Uuid) {
        self.with(|events| {
            if let Some(w) = events.get_mut(event) {
                if w.subs.remove(&conn).is_some() {
                    metrics::gauge!("boxoffice_realtime_subscriptions").decrement(1.0);
                }
                if w.subs.is_empty() {
                    events.remove(event);
                }
            }
        });
    }

    /// Ends every subscription of a connection.
    pub fn disconnect(&self, conn: u64) {
        let watched: Vec<Uuid> = self.with(|events| events.keys().copied().collect());
        for event in watched {
            self.unsubscribe(conn, &event);
        }
    }

    /// One look at every watched event. A group this node replicates is read
    /// briefly (into [`Facts`]) without the hub's lock, and the messages are made
    /// and queued without the state's lock: apply never waits on subscribers.
    /// For the other groups the look keeps each one's [`Feed`] running and up to
    /// date with what its subscribers care about, and tells new subscribers the
    /// latest facts it brought.
    fn look(&self, ctx: &Arc<NodeCtx>) {
        let now = Utc::now().timestamp_millis();
        let watched: Vec<(Uuid, GroupId, Option<u64>, Interest)> = self.with(|events| {
            events
                .iter()
                .map(|(e, w)| (*e, w.group, w.seen_index, w.interest()))
                .collect()
        });
        for (event, group, seen_index, interest) in watched {
            let Some(g) = ctx.groups.get(group) else {
                self.with(|events| {
                    if let Some(w) = events.get_mut(&event) {
                        match &w.feed {
                            Some(feed) => feed.want(interest),
                            None => w.feed = Some(Feed::start(ctx.clone(), event, group, interest)),
                        }
                        if let Some(f) = w.remote.clone() {
                            tell(ctx, event, w, f, now);
                        }
                    }
                });
                continue;
            };
            let Some(seen) = facts::read(&g, seen_index, &interest, now) else {
                continue;
            };
            self.with(|events| {
                // Skipped if the event's watch was replaced meanwhile (its last
                // subscriber left and another came): the next look reads afresh.
                if let Some(w) = events
                    .get_mut(&event)
                    .filter(|w| w.seen_index == seen_index)
                {
                    // Replicated here now (placement moved the group): no feed.
                    w.feed = None;
                    w.remote = None;
                    tell(ctx, event, w, seen, now);
                }
            });
        }
        self.with(|events| {
            for w in events.values_mut() {
                w.subs.retain(|_, s| !s.out.tx.is_closed());
            }
            events.retain(|_, w| !w.subs.is_empty());
        });
    }

    /// A frame from a member's feed: told to the event's subscribers at once,
    /// unless it is older than what they were told (a lagging member after a
    /// switch) or the feed has ended (the group is replicated here now).
    fn on_frame(&self, ctx: &NodeCtx, event: Uuid, facts: Facts) {
        let now = Utc::now().timestamp_millis();
        self.with(|events| {
            if let Some(w) = events.get_mut(&event) {
                if w.feed.is_none() || facts.index < w.seen_index {
                    return;
                }
                w.remote = Some(facts.clone());
                tell(ctx, event, w, facts, now);
            }
        });
    }
}

/// Sends what changed in one event to its subscribers.
///
/// Section counts go out as `availability_update` with two extensions of the
/// spec's message: `applied_index`, the group's log index the count is true at
/// (a client can order updates by it), and `applied_at_ms`, the leader's stamp
/// (Unix ms) of that entry: the newest change the count reflects.
///
/// Changed counts go out at most as often as `realtime.fanout_per_second` allows
/// for this many subscribers (at most every [`TICK`] anyway); held back, they go
/// with a later look, so every subscriber still ends on the true count.
fn tell(ctx: &NodeCtx, event: Uuid, w: &mut Watched, seen: Facts, now_ms: i64) {
    let counts = seen.counts.clone().unwrap_or_else(|| w.counts.clone());
    let section_update = |i: usize, n: u32| {
        Utf8Bytes::from(
            json!({
                "type": "availability_update",
                "event_id": event,
                "section": w.sections.get(i).cloned().unwrap_or_default(),
                "available_seats": n,
                "timestamp": stamp(now_ms),
                "applied_index": seen.index,
                "applied_at_ms": seen.clock_ms,
            })
            .to_string(),
        )
    };
    let changed: Vec<(usize, u32)> = counts
        .iter()
        .enumerate()
        .filter(|(i, n)| w.sent.get(*i) != Some(*n))
        .map(|(i, &n)| (i, n))
        .collect();
    let send_changed = !changed.is_empty()
        && paced_due(
            w.subs.len() * changed.len(),
            ctx.config.realtime.fanout_per_second,
            w.sent_at.map(|t| t.elapsed()),
        );
    let moved: Vec<Utf8Bytes> = if send_changed {
        changed.iter().map(|&(i, n)| section_update(i, n)).collect()
    } else {
        Vec::new()
    };
    let all: Vec<Utf8Bytes> = if w.subs.values().any(|s| s.fresh) {
        counts
            .iter()
            .enumerate()
            .map(|(i, &n)| section_update(i, n))
            .collect()
    } else {
        Vec::new()
    };
    for sub in w.subs.values_mut() {
        let snapshot = std::mem::take(&mut sub.fresh);
        for m in if snapshot { &all } else { &moved } {
            if !sub.out.send(m) {
                break;
            }
        }
        // The fan's place in the waiting room.
        if let Some(v) = seen.queue.get(&sub.user) {
            let status = v.state.name();
            if sub.queue != Some((v.position, status)) {
                sub.queue = Some((v.position, status));
                let mut m = json!({
                    "type": "queue_update",
                    "event_id": event,
                    "queue_position": v.position,
                    "status": status,
                    "estimated_wait": estimated_wait_minutes(v, 1, now_ms),
                    "timestamp": stamp(now_ms),
                });
                if let EntryState::Ready {
                    admitted_ms,
                    until_ms,
                } = v.state
                {
                    if let Ok(token) =
                        crate::api::tokens::mint_access(ctx, sub.user, event, admitted_ms, until_ms)
                    {
                        m["access_token"] = json!(token);
                        m["expires_at"] = json!(stamp(until_ms));
                    }
                }
                sub.out.send_json(&m);
            }
        }
        // The fan's holds about to lapse (once each), and those that did.
        for &(id, owner, expires_ms) in &seen.expiring {
            if owner == sub.user && !sub.warned.contains_key(&id) {
                sub.warned.insert(id, false);
                sub.out.send_json(&json!({
                    "type": "reservation_expiring",
                    "event_id": event,
                    "reservation_id": id,
                    "expires_in_seconds": expires_ms.saturating_sub(now_ms).max(0) / 1000,
                    "expires_at": stamp(expires_ms),
                }));
            }
        }
        for (id, told) in sub.warned.iter_mut() {
            if matches!(seen.holds.get(id), Some((_, true))) && !*told {
                *told = true;
                sub.out.send_json(&json!({
                    "type": "reservation_expired",
                    "event_id": event,
                    "reservation_id": id,
                    "timestamp": stamp(now_ms),
                }));
            }
        }
        // Forget settled holds (lapsed and told, released, bought); a lapsed
        // hold stays known while it is still listed as due, so it is not
        // warned about twice.
        sub.warned.retain(|id, _| {
            seen.holds.get(id).is_some_and(|(live, _)| *live)
                || seen.expiring.iter().any(|e| e.0 == *id)
        });
    }
    if send_changed {
        w.sent = counts.clone();
        w.sent_at = Some(Instant::now());
    }
    w.counts = counts;
    w.seen_index = seen.index;
}

/// Whether `messages` (subscribers × changed sections) may go out now, the last
/// send `since` ago (never: now), under a budget of `fanout_per_second` messages
/// a second.
fn paced_due(messages: usize, fanout_per_second: u32, since: Option<Duration>) -> bool {
    let wait = Duration::from_millis(messages as u64 * 1000 / u64::from(fanout_per_second.max(1)));
    since.is_none_or(|s| s >= wait)
}

/// Forever: the watcher (see the module doc).
pub async fn watcher(ctx: Arc<NodeCtx>) {
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        ctx.realtime.look(&ctx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_subscriber_that_falls_behind_is_kicked_not_waited_for() {
        let (out, mut rx, kicked) = Outlet::new();
        let msg = Utf8Bytes::from(json!({"type": "availability_update"}).to_string());
        for _ in 0..QUEUE_DEPTH {
            assert!(out.send(&msg));
        }
        assert_eq!(*kicked.borrow(), None);
        // Full: the message is dropped at once and the connection told to close.
        assert!(!out.send(&msg));
        assert_eq!(*kicked.borrow(), Some(4008));
        assert!(rx.try_recv().is_ok());
        drop(rx);
        assert!(!out.send(&msg), "a closed connection takes nothing");
    }

    #[test]
    fn a_crowd_is_paced_to_the_fanout_budget() {
        let ms = |n| Some(Duration::from_millis(n));
        // 1,000 subscribers under 5,000 a second: every look (250 ms) may send.
        assert!(paced_due(1_000, 5_000, ms(250)));
        // 3,333 subscribers: one send per 666 ms.
        assert!(!paced_due(3_333, 5_000, ms(500)));
        assert!(paced_due(3_333, 5_000, ms(750)));
        // Two changed sections count twice.
        assert!(!paced_due(2 * 3_333, 5_000, ms(750)));
        // The first send goes at once.
        assert!(paced_due(100_000, 5_000, None));
        // A zero budget is refused by the config; here it cannot divide by zero.
        assert!(paced_due(1, 0, ms(1_000)));
    }

    #[test]
    fn stamps_are_rfc3339_seconds() {
        assert_eq!(stamp(1_767_866_400_000), "2026-01-08T10:00:00Z");
    }
}
