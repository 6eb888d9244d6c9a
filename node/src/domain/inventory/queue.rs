//! The waiting room of one event, replicated in the event's group next to its seats.
//!
//! Fans join (one live entry per user, a cap per device, a cap on the room); those
//! who join before the sale opens are put in a random order when it opens, shuffled
//! with a seed built from nonces their join commands carried (so every replica
//! computes the same permutation, and no single fan picks it); later fans queue in
//! arrival order. Each leader-proposed `QueueAdmit` first ends the access windows
//! that are over, then lets in the head of the queue at the configured rate (a
//! token bucket driven by stamped time, at most one second of burst) while active
//! shoppers stay under their bound. Positions count only queued entries ahead: a
//! Fenwick tree over the entries' order keys answers them in O(log n).
//!
//! Keys (inside the inventory's space): `qm` the room's counters, `qe{user}` an entry.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::codec;
use crate::domain::machine::encode_value;
use crate::domain::{Change, Table};
use crate::error::{Error, Result};

const META_KEY: &[u8] = b"qm";
/// Most fans one `QueueAdmit` lets in: bounds one command's work and write batch
/// (the leader proposes one every `queue.admit_interval_ms`).
pub const MAX_ADMIT_PER_COMMAND: u64 = 10_000;
const ENTRY_PREFIX: &[u8] = b"qe";

/// The room's limits, from the catalog's event and the cluster config, carried by
/// each command that needs them (so applying never looks outside the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLimits {
    pub max_size: u64,
    pub max_per_device: u32,
    pub admission_per_second: u32,
    pub max_active_shoppers: u32,
    pub access_window_ms: i64,
}

/// A fan's join, as its command carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub user_id: Uuid,
    pub entry_id: Uuid,
    pub device: Option<String>,
    /// Random, chosen by the proposing node: the joins before the sale opens seed
    /// the shuffle with theirs.
    pub nonce: u64,
    pub limits: QueueLimits,
}

/// Where an entry is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryState {
    Queued,
    /// Admitted at `admitted_ms`: may shop until `until_ms`.
    Ready {
        admitted_ms: i64,
        until_ms: i64,
    },
    /// Left the queue or gave up the access window.
    Left {
        at_ms: i64,
    },
    /// The access window ended.
    Expired {
        at_ms: i64,
    },
    /// Bought: the slot went back to the room.
    Done {
        at_ms: i64,
    },
}

impl EntryState {
    /// The JSON name (`GET /v1/queue/status`, realtime `queue_update`).
    pub fn name(self) -> &'static str {
        match self {
            EntryState::Queued => "QUEUED",
            EntryState::Ready { .. } => "READY",
            EntryState::Expired { .. } => "EXPIRED",
            EntryState::Left { .. } => "LEFT",
            EntryState::Done { .. } => "COMPLETED",
        }
    }
}

/// One fan's entry (persisted under `qe{user}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub entry_id: Uuid,
    pub user_id: Uuid,
    pub device: Option<String>,
    /// Arrival number in this room.
    pub seq: u64,
    /// Place in the queue's order (arrival, or the shuffled place of a pre-sale fan).
    pub key: u64,
    pub joined_ms: i64,
    pub state: EntryState,
}

impl QueueEntry {
    fn live(&self) -> bool {
        matches!(self.state, EntryState::Queued | EntryState::Ready { .. })
    }
}

/// The room's counters (persisted under `qm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Meta {
    next_seq: u64,
    /// Whether the pre-sale entries have been put in their random order.
    shuffled: bool,
    /// Mix of the nonces of the joins before the shuffle: its seed.
    seed: u64,
    /// Admissions available, in thousandths.
    tokens_milli: u64,
    refill_ms: i64,
    admitted_total: u64,
    first_admit_ms: i64,
}

/// An entry as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueView {
    pub entry_id: Uuid,
    pub user_id: Uuid,
    /// As of the view's time: a Ready entry past its window reads Expired.
    pub state: EntryState,
    /// 1-based among queued entries; 0 unless queued.
    pub position: u64,
    /// Queued entries.
    pub size: u64,
    pub joined_ms: i64,
    /// Fans admitted so far and when the first was: the measured admission rate.
    pub admitted_total: u64,
    pub first_admit_ms: i64,
}

/// Why the room refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueueRejection {
    /// The user has a live entry (shown).
    AlreadyInQueue(QueueView),
    Full {
        max_size: u64,
    },
    DeviceLimit {
        max_per_device: u32,
    },
    /// A hold made with an access token whose window is over, given up, or used.
    NotAdmitted,
}

/// Outcomes of the room's commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueueOutcome {
    Joined(QueueView),
    /// `was_live`: whether there was a live entry to leave.
    Left {
        was_live: bool,
    },
    Admitted {
        admitted: u32,
        expired: u32,
    },
}

/// A prefix-sum tree over order keys: 1 for a queued entry, 0 otherwise.
#[derive(Debug, Clone, PartialEq, Default)]
struct Fenwick {
    tree: Vec<i64>,
}

impl Fenwick {
    fn with_len(n: usize) -> Self {
        Self {
            tree: vec![0; n + 1],
        }
    }

    fn len(&self) -> usize {
        self.tree.len().saturating_sub(1)
    }

    fn add(&mut self, i: usize, delta: i64) {
        let mut i = i + 1;
        while i < self.tree.len() {
            self.tree[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// Sum over `[0, i)`.
    fn prefix(&self, i: usize) -> i64 {
        let mut i = i.min(self.len());
        let mut s = 0;
        while i > 0 {
            s += self.tree[i];
            i -= i & i.wrapping_neg();
        }
        s
    }
}

/// SplitMix64: a tiny generator with a fixed definition, so the shuffle is the
/// same on every replica and every build.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One event's waiting room.
#[derive(Debug, Clone, Default)]
pub struct WaitingRoom {
    /// What is persisted; everything else here is derived from it.
    records: Records,
    // Derived (rebuilt by `rebuild`):
    ranks: Fenwick,
    /// Queued entries by order key: the head is the first.
    queued: BTreeMap<u64, Uuid>,
    /// Admitted entries by the end of their window.
    ready: BTreeSet<(i64, Uuid)>,
    /// Live entries per device.
    devices: BTreeMap<String, u32>,
}

/// Two rooms are equal when their persisted state is: the indexes derive from it.
impl PartialEq for WaitingRoom {
    fn eq(&self, other: &Self) -> bool {
        self.records == other.records
    }
}

impl WaitingRoom {
    /// Recomputes the derived structures from the entries.
    fn rebuild(&mut self) {
        let len = (self.records.meta.next_seq as usize)
            .max(16)
            .next_power_of_two();
        self.ranks = Fenwick::with_len(len);
        self.queued.clear();
        self.ready.clear();
        self.devices.clear();
        let entries: Vec<QueueEntry> = self.records.entries.values().cloned().collect();
        for e in &entries {
            self.index(e);
        }
    }

    fn index(&mut self, e: &QueueEntry) {
        match e.state {
            EntryState::Queued => {
                debug_assert!(
                    e.key < self.records.meta.next_seq,
                    "order keys are below next_seq"
                );
                if e.key as usize >= self.ranks.len() {
                    // Grow by doubling; rebuilds indexes this entry too.
                    self.records.meta.next_seq = self.records.meta.next_seq.max(e.key + 1);
                    self.records.entries.insert(e.user_id, e.clone());
                    return self.rebuild();
                }
                self.ranks.add(e.key as usize, 1);
                self.queued.insert(e.key, e.user_id);
            }
            EntryState::Ready { until_ms, .. } => {
                self.ready.insert((until_ms, e.user_id));
            }
            _ => return,
        }
        if let Some(d) = &e.device {
            *self.devices.entry(d.clone()).or_default() += 1;
        }
    }

    fn unindex(&mut self, e: &QueueEntry) {
        match e.state {
            EntryState::Queued => {
                self.ranks.add(e.key as usize, -1);
                self.queued.remove(&e.key);
            }
            EntryState::Ready { until_ms, .. } => {
                self.ready.remove(&(until_ms, e.user_id));
            }
            _ => return,
        }
        if let Some(d) = &e.device {
            if let Some(n) = self.devices.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    self.devices.remove(d);
                }
            }
        }
    }

    /// Moves `user`'s entry to `state`, keeping the indexes and persisting it.
    fn set_state(&mut self, user: Uuid, state: EntryState, changes: &mut Vec<Change>) {
        let Some(mut e) = self.records.entries.get(&user).cloned() else {
            return;
        };
        self.unindex(&e);
        e.state = state;
        self.index(&e);
        changes.push(Change::Put(entry_key(&user), encode_value(&e)));
        self.records.entries.insert(user, e);
    }

    fn save_meta(&self, changes: &mut Vec<Change>) {
        changes.push(Change::Put(
            META_KEY.to_vec(),
            encode_value(&self.records.meta),
        ));
    }

    /// Ends the access windows that are over at `now_ms`.
    pub(super) fn expire_due(&mut self, now_ms: i64, changes: &mut Vec<Change>) -> u32 {
        let mut n = 0;
        while let Some(&(until, user)) = self.ready.first() {
            if until > now_ms {
                break;
            }
            self.set_state(user, EntryState::Expired { at_ms: until }, changes);
            n += 1;
        }
        n
    }

    /// Puts the pre-sale entries in their random order, once, when the sale opens.
    fn shuffle_once(&mut self, event_id: Uuid, changes: &mut Vec<Change>) {
        if self.records.meta.shuffled {
            return;
        }
        self.records.meta.shuffled = true;
        let mut users: Vec<(u64, Uuid)> = self
            .records
            .entries
            .values()
            .map(|e| (e.key, e.user_id))
            .collect();
        users.sort_unstable();
        let keys: Vec<u64> = users.iter().map(|(k, _)| *k).collect();
        let (hi, lo) = event_id.as_u64_pair();
        let mut state = self.records.meta.seed ^ hi ^ lo.rotate_left(32);
        for i in (1..users.len()).rev() {
            let j = (splitmix(&mut state) % (i as u64 + 1)) as usize;
            users.swap(i, j);
        }
        for (key, (_, user)) in keys.into_iter().zip(users) {
            if let Some(e) = self.records.entries.get_mut(&user) {
                if e.key != key {
                    e.key = key;
                    changes.push(Change::Put(entry_key(&user), encode_value(&*e)));
                }
            }
        }
        self.rebuild();
        self.save_meta(changes);
    }

    /// A fan joins. `sale_open`: the sale has opened (the shuffle happens first).
    pub(super) fn join(
        &mut self,
        event_id: Uuid,
        join: Join,
        now_ms: i64,
        sale_open: bool,
        changes: &mut Vec<Change>,
    ) -> Result<QueueView, QueueRejection> {
        let Join {
            user_id,
            entry_id,
            device,
            nonce,
            limits,
        } = join;
        if sale_open {
            self.shuffle_once(event_id, changes);
        }
        if let Some(e) = self.records.entries.get(&user_id).filter(|e| e.live()) {
            return Err(QueueRejection::AlreadyInQueue(self.view(e, now_ms)));
        }
        let live = self.queued.len() as u64 + self.ready.len() as u64;
        if live >= limits.max_size {
            return Err(QueueRejection::Full {
                max_size: limits.max_size,
            });
        }
        if let Some(d) = &device {
            if self.devices.get(d).copied().unwrap_or(0) >= limits.max_per_device {
                return Err(QueueRejection::DeviceLimit {
                    max_per_device: limits.max_per_device,
                });
            }
        }
        let seq = self.records.meta.next_seq;
        self.records.meta.next_seq += 1;
        if !self.records.meta.shuffled {
            let mut s = self.records.meta.seed ^ nonce;
            self.records.meta.seed = splitmix(&mut s);
        }
        self.save_meta(changes);
        let e = QueueEntry {
            entry_id,
            user_id,
            device,
            seq,
            key: seq,
            joined_ms: now_ms,
            state: EntryState::Queued,
        };
        changes.push(Change::Put(entry_key(&user_id), encode_value(&e)));
        if let Some(old) = self.records.entries.insert(user_id, e.clone()) {
            self.unindex(&old);
        }
        self.index(&e);
        Ok(self.view(&e, now_ms))
    }

    /// A fan leaves (queued, or giving up an access window). Idempotent.
    pub(super) fn leave(&mut self, user_id: Uuid, now_ms: i64, changes: &mut Vec<Change>) -> bool {
        let live = self
            .records
            .entries
            .get(&user_id)
            .is_some_and(QueueEntry::live);
        if live {
            self.set_state(user_id, EntryState::Left { at_ms: now_ms }, changes);
        }
        live
    }

    /// A shopper bought: the slot goes back to the room.
    pub(super) fn bought(&mut self, user_id: Uuid, now_ms: i64, changes: &mut Vec<Change>) {
        if matches!(
            self.records.entries.get(&user_id).map(|e| e.state),
            Some(EntryState::Ready { .. })
        ) {
            self.set_state(user_id, EntryState::Done { at_ms: now_ms }, changes);
        }
    }

    /// Lets in the head of the queue (see the module doc). Returns how many.
    pub(super) fn admit(
        &mut self,
        event_id: Uuid,
        limits: QueueLimits,
        now_ms: i64,
        sale_open: bool,
        changes: &mut Vec<Change>,
    ) -> u32 {
        let rate = u64::from(limits.admission_per_second);
        let elapsed =
            u64::try_from(now_ms.saturating_sub(self.records.meta.refill_ms)).unwrap_or(0);
        let cap = rate.saturating_mul(1000);
        self.records.meta.tokens_milli = if sale_open {
            self.records
                .meta
                .tokens_milli
                .saturating_add(elapsed.saturating_mul(rate))
                .min(cap)
        } else {
            0
        };
        self.records.meta.refill_ms = self.records.meta.refill_ms.max(now_ms);
        if !sale_open {
            self.save_meta(changes);
            return 0;
        }
        self.shuffle_once(event_id, changes);
        let room = u64::from(limits.max_active_shoppers).saturating_sub(self.ready.len() as u64);
        let n = (self.records.meta.tokens_milli / 1000)
            .min(room)
            .min(self.queued.len() as u64)
            .min(MAX_ADMIT_PER_COMMAND);
        let until_ms = now_ms.saturating_add(limits.access_window_ms);
        for _ in 0..n {
            let Some((_, user)) = self.queued.first_key_value().map(|(k, u)| (*k, *u)) else {
                break;
            };
            self.set_state(
                user,
                EntryState::Ready {
                    admitted_ms: now_ms,
                    until_ms,
                },
                changes,
            );
        }
        if n > 0 {
            self.records.meta.tokens_milli -= n * 1000;
            if self.records.meta.admitted_total == 0 {
                self.records.meta.first_admit_ms = now_ms;
            }
            self.records.meta.admitted_total += n;
        }
        self.save_meta(changes);
        n as u32
    }

    /// Whether `user` is an admitted shopper at `now_ms` (window open).
    pub fn is_shopper(&self, user: &Uuid, now_ms: i64) -> bool {
        matches!(
            self.records.entries.get(user).map(|e| e.state),
            Some(EntryState::Ready { until_ms, .. }) if until_ms > now_ms
        )
    }

    /// Whether the bucket holds at least one admission at `now_ms`.
    pub fn has_token(&self, now_ms: i64, admission_per_second: u32) -> bool {
        let elapsed =
            u64::try_from(now_ms.saturating_sub(self.records.meta.refill_ms)).unwrap_or(0);
        self.records
            .meta
            .tokens_milli
            .saturating_add(elapsed.saturating_mul(u64::from(admission_per_second)))
            >= 1000
    }

    /// Whether an access window is over at `now_ms`.
    pub fn window_due(&self, now_ms: i64) -> bool {
        self.ready.first().is_some_and(|(t, _)| *t <= now_ms)
    }

    /// `user`'s entry as of `now_ms` (the group's replicated clock).
    pub fn entry_of(&self, user: &Uuid, now_ms: i64) -> Option<QueueView> {
        self.records.entries.get(user).map(|e| self.view(e, now_ms))
    }

    fn view(&self, e: &QueueEntry, now_ms: i64) -> QueueView {
        let state = match e.state {
            EntryState::Ready { until_ms, .. } if until_ms <= now_ms => {
                EntryState::Expired { at_ms: until_ms }
            }
            s => s,
        };
        let position = match e.state {
            EntryState::Queued => self.ranks.prefix(e.key as usize) as u64 + 1,
            _ => 0,
        };
        QueueView {
            entry_id: e.entry_id,
            user_id: e.user_id,
            state,
            position,
            size: self.queued.len() as u64,
            joined_ms: e.joined_ms,
            admitted_total: self.records.meta.admitted_total,
            first_admit_ms: self.records.meta.first_admit_ms,
        }
    }

    /// Queued entries and admitted shoppers.
    pub fn counts(&self) -> (u64, u64) {
        (self.queued.len() as u64, self.ready.len() as u64)
    }

    pub(super) fn is_key(k: &[u8]) -> bool {
        k == META_KEY || k.starts_with(ENTRY_PREFIX)
    }

    pub(super) fn restore(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        if k == META_KEY {
            self.records.meta = codec::decode(v)?;
        } else if k.starts_with(ENTRY_PREFIX) {
            let e: QueueEntry = codec::decode(v)?;
            self.records.entries.insert(e.user_id, e);
        } else {
            return Err(Error::Decode(format!("unknown queue key {k:?}")));
        }
        Ok(())
    }

    pub(super) fn finish_restore(&mut self) {
        self.rebuild();
    }

    /// The persisted records as they are now, in O(1) (see [`Table`]).
    pub(super) fn freeze(&self) -> Records {
        self.records.clone()
    }
}

/// A waiting room's persisted records: the keys `apply` writes and `dump` lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Records {
    meta: Meta,
    entries: Table<Uuid, QueueEntry>,
}

impl Records {
    pub(super) fn dump(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        if self.meta != Meta::default() {
            out.push((META_KEY.to_vec(), encode_value(&self.meta)));
        }
        for e in self.entries.values() {
            out.push((entry_key(&e.user_id), encode_value(e)));
        }
    }
}

fn entry_key(user: &Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(18);
    k.extend_from_slice(ENTRY_PREFIX);
    k.extend_from_slice(user.as_bytes());
    k
}

/// Minutes until a fan at `position` is admitted: by the measured admission rate
/// once there is one (at least 10 s of admissions), else by the configured rate.
pub fn estimated_wait_minutes(view: &QueueView, configured_per_second: u32, now_ms: i64) -> u64 {
    let measured_for_ms = now_ms.saturating_sub(view.first_admit_ms);
    let per_second = if view.admitted_total > 0 && measured_for_ms >= 10_000 {
        view.admitted_total as f64 * 1000.0 / measured_for_ms as f64
    } else {
        f64::from(configured_per_second.max(1))
    };
    (view.position as f64 / per_second / 60.0).ceil() as u64
}

/// How often a fan at `position` should poll: often near the front, rarely far
/// back, and never more often than `floor_seconds` (the status rate limit's pace).
pub fn poll_interval_seconds(position: u64, floor_seconds: u64) -> u64 {
    let by_position = match position {
        0..=100 => 5,
        101..=1_000 => 10,
        1_001..=10_000 => 30,
        _ => 60,
    };
    by_position.max(floor_seconds)
}
