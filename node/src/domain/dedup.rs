//! Exactly-once: the responses of recent request ids, so a client retry (after a
//! lost reply, a timeout or a leader change) returns the first outcome instead of
//! applying twice. Eviction is by stamped time, so every replica forgets the same
//! ids at the same log index.

use std::collections::{BTreeMap, BTreeSet};

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
    entries: BTreeMap<Uuid, (i64, Response)>,
    by_time: BTreeSet<(i64, Uuid)>,
}

impl Dedup {
    pub fn get(&self, id: &Uuid) -> Option<&Response> {
        self.entries.get(id).map(|(_, r)| r)
    }

    pub fn remember(
        &mut self,
        id: Uuid,
        at_ms: i64,
        response: Response,
        changes: &mut Vec<Change>,
    ) {
        changes.push(Change::Put(key(&id), encode(at_ms, &response)));
        self.by_time.insert((at_ms, id));
        self.entries.insert(id, (at_ms, response));
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
        let (at, response): (i64, Response) = codec::decode(v)?;
        self.by_time.insert((at, id));
        self.entries.insert(id, (at, response));
        Ok(())
    }

    pub fn dump(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        for (id, (at, r)) in &self.entries {
            out.push((key(id), encode(*at, r)));
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
