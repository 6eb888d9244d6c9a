//! Exactly-once: the responses of recent request ids, so a client retry (after a
//! lost reply, a timeout or a leader change) returns the first outcome instead of
//! applying twice. Eviction is by stamped time, so every replica forgets the same
//! ids at the same log index.
//!
//! How long an id is kept depends on how it was made. Names are UUIDv5: a
//! client's `Idempotency-Key` (the API maps it to one), and the ids a node derives
//! for commands it may propose again later (an event's opening, expiry sweeps, an
//! order's steps); a name may come back long after, so names are kept an hour.
//! Random (v4) ids are minted for one proposal: a write without a key, a release,
//! the waiting room's admissions, the catalog's leader duties. Only the router
//! retries one, within the request's deadline, so those are kept two minutes.
//! Most writes of an on-sale carry minted ids, so most of the table is bounded by
//! minutes of writes instead of an hour.
//!
//! Each response is kept as the bytes that are persisted for it (dumped as they
//! are, decoded only for a duplicate): remembered responses are much of an event
//! group's state under load, and a duplicate, the only reader of one, is rare.

use std::collections::BTreeSet;
use std::sync::Arc;

use uuid::Uuid;

use super::{Change, Response, Table};
use crate::codec;

/// How long (in stamped time) a named request id is remembered: one hour. A retry
/// later than that is a new request.
pub const DEDUP_WINDOW_MS: i64 = 60 * 60 * 1000;

/// How long (in stamped time) a minted request id is remembered: two minutes. Only
/// the router retries one, within the request's deadline, which the configuration
/// caps at [`MAX_REQUEST_DEADLINE_MS`]; the rest is room for leaders' clocks to
/// disagree (a leader whose clock runs ahead moves the machine's clock ahead).
pub const MINTED_WINDOW_MS: i64 = 2 * 60 * 1000;

/// The longest request deadline (`api.request_timeout_ms`) a node accepts: minted
/// ids must outlive every retry of theirs.
pub const MAX_REQUEST_DEADLINE_MS: u64 = 60 * 1000;

/// How long `id` is remembered: minted (random, v4) ids for [`MINTED_WINDOW_MS`],
/// every other id, a name, for [`DEDUP_WINDOW_MS`].
fn window_ms(id: &Uuid) -> i64 {
    if id.get_version() == Some(uuid::Version::Random) {
        MINTED_WINDOW_MS
    } else {
        DEDUP_WINDOW_MS
    }
}

const PREFIX: u8 = b'd';

/// Remembered request ids with their responses.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Dedup {
    /// Each id's stored value: `(stamped ms, response)` encoded.
    entries: Table<Uuid, Arc<[u8]>>,
    // Derived from `entries`: each id by the stamped time it is forgotten after.
    by_time: BTreeSet<(i64, Uuid)>,
}

/// The persisted part of a [`Dedup`] at one index (see [`Dedup::freeze`]).
#[derive(Debug, Clone)]
pub(crate) struct Records(Table<Uuid, Arc<[u8]>>);

impl Dedup {
    /// Whether `id` is remembered.
    pub fn contains(&self, id: &Uuid) -> bool {
        self.entries.contains_key(id)
    }

    /// The first response to `id`, if it is remembered.
    pub fn get(&self, id: &Uuid) -> Option<Response> {
        self.entries.get(id).map(|stored| {
            // Every stored value was encoded here or decoded by `restore` first.
            let (_, response): (i64, Response) =
                codec::decode(stored).expect("a remembered response decodes");
            response
        })
    }

    pub fn remember(
        &mut self,
        id: Uuid,
        at_ms: i64,
        response: &Response,
        changes: &mut Vec<Change>,
    ) {
        let stored = encode(at_ms, response);
        self.by_time.insert((forget_after(at_ms, &id), id));
        self.entries.insert(id, Arc::from(stored.as_slice()));
        changes.push(Change::Put(key(&id), stored));
    }

    /// Forgets ids whose window is over as of `now_ms`.
    pub fn evict(&mut self, now_ms: i64, changes: &mut Vec<Change>) {
        while let Some(&(until, id)) = self.by_time.first() {
            if until >= now_ms {
                break;
            }
            self.by_time.pop_first();
            self.entries.remove(&id);
            changes.push(Change::Delete(key(&id)));
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_key(k: &[u8]) -> bool {
        k.first() == Some(&PREFIX)
    }

    /// Restores one persisted entry.
    pub fn restore(&mut self, k: &[u8], v: &[u8]) -> crate::error::Result<()> {
        let id = Uuid::from_slice(&k[1..])
            .map_err(|e| crate::error::Error::Decode(format!("dedup key: {e}")))?;
        let (at, _): (i64, Response) = codec::decode(v)?;
        self.by_time.insert((forget_after(at, &id), id));
        self.entries.insert(id, Arc::from(v));
        Ok(())
    }

    /// The remembered entries as they are now, in O(1).
    pub fn freeze(&self) -> Records {
        Records(self.entries.clone())
    }
}

impl Records {
    pub fn dump(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        for (id, stored) in &self.0 {
            out.push((key(id), stored.to_vec()));
        }
    }
}

/// The last stamped time `id`, remembered at `at_ms`, is still remembered at.
fn forget_after(at_ms: i64, id: &Uuid) -> i64 {
    at_ms.saturating_add(window_ms(id))
}

fn key(id: &Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(PREFIX);
    k.extend_from_slice(id.as_bytes());
    k
}

fn encode(at_ms: i64, response: &Response) -> Vec<u8> {
    // Responses are plain data (no maps with non-string keys, no untyped values),
    // so encoding cannot fail; a failure here is a programming error in a type.
    codec::encode(&(at_ms, response)).expect("dedup entry encodes")
}
