//! Exactly-once: the responses of recent request ids, so a client retry (after a
//! lost reply, a timeout or a leader change) returns the first outcome instead of
//! applying twice. Eviction is by stamped time, so every replica forgets the same
//! ids at the same log index.
//!
//! Each response is kept as the bytes that are persisted for it (shared, not
//! copied, when the machine is cloned for a snapshot, and dumped as they are):
//! an hour of an on-sale's requests is most of an event group's state, and a
//! duplicate, the only reader of a response, is rare.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use uuid::Uuid;

use super::{Change, Response};
use crate::codec;

/// How long (in stamped time) a request id is remembered: one hour. A retry later
/// than that is a new request.
pub const DEDUP_WINDOW_MS: i64 = 60 * 60 * 1000;

const PREFIX: u8 = b'd';

/// Remembered request ids with their responses.
#[derive(Debug, Default, Clone, PartialEq)]
pub(crate) struct Dedup {
    /// Each id's stored value: `(stamped ms, response)` encoded.
    entries: BTreeMap<Uuid, Arc<[u8]>>,
    by_time: BTreeSet<(i64, Uuid)>,
}

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
        self.by_time.insert((at_ms, id));
        self.entries.insert(id, Arc::from(stored.as_slice()));
        changes.push(Change::Put(key(&id), stored));
    }

    /// Forgets ids older than the window as of `now_ms`.
    pub fn evict(&mut self, now_ms: i64, changes: &mut Vec<Change>) {
        let horizon = now_ms.saturating_sub(DEDUP_WINDOW_MS);
        while let Some(&(at, id)) = self.by_time.first() {
            if at >= horizon {
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
        self.by_time.insert((at, id));
        self.entries.insert(id, Arc::from(v));
        Ok(())
    }

    pub fn dump(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        for (id, stored) in &self.entries {
            out.push((key(id), stored.to_vec()));
        }
    }
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
