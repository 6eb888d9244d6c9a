//! [`GroupMachine`]: one group's domain machine plus the parts every group shares —
//! exactly-once by request id and a monotonic clock built from leader stamps.

use serde::{Deserialize, Serialize};

use super::catalog::Catalog;
use super::dedup::Dedup;
use super::inventory::{Inventory, InventoryResponse};
use super::{ApplyCtx, Change, Command, CommandBody, Proposal, Query, QueryResult, Response};
use crate::codec;
use crate::error::{Error, Result};

const CLOCK_KEY: &[u8] = b"mclock";
const DOMAIN_PREFIX: u8 = b'x';

/// Which domain machine a group runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum GroupKind {
    Catalog,
    /// One event's inventory.
    Inventory,
}

/// The complete replicated state of one group, in memory; persisted as its dump
/// ([`GroupMachine::dump`]) in the group's snapshots, plus the log after them.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupMachine {
    /// Largest stamped time applied so far: time never runs backwards here, even
    /// after a leader change to a node with a slower clock.
    clock_ms: i64,
    dedup: Dedup,
    domain: Domain,
}

#[derive(Debug, Clone, PartialEq)]
enum Domain {
    // Boxed: both are large, and a machine moves between owners.
    Catalog(Box<Catalog>),
    Inventory(Box<Inventory>),
}

impl GroupMachine {
    /// An empty machine of the given kind.
    pub fn new(kind: GroupKind) -> Self {
        Self {
            clock_ms: 0,
            dedup: Dedup::default(),
            domain: match kind {
                GroupKind::Catalog => Domain::Catalog(Box::default()),
                GroupKind::Inventory => Domain::Inventory(Box::default()),
            },
        }
    }

    /// Applies one command at log index `index`.
    pub fn apply(&mut self, cmd: Command, index: u64) -> (Response, Vec<Change>) {
        let cmd = match cmd.body {
            CommandBody::Batch(proposals) => {
                let mut changes = Vec::new();
                let mut responses = Vec::with_capacity(proposals.len());
                for p in proposals {
                    let (r, c) = self.apply(p.stamp(cmd.stamped_ms), index);
                    responses.push(r);
                    changes.extend(c);
                }
                return (Response::Batch(responses), changes);
            }
            body => Command { body, ..cmd },
        };
        let mut changes = Vec::new();
        if cmd.stamped_ms > self.clock_ms {
            self.clock_ms = cmd.stamped_ms;
            changes.push(Change::Put(
                CLOCK_KEY.to_vec(),
                self.clock_ms.to_be_bytes().to_vec(),
            ));
        }
        let ctx = ApplyCtx {
            index,
            now_ms: self.clock_ms,
        };
        self.dedup.evict(ctx.now_ms, &mut changes);
        if let Some(first) = self.dedup.get(&cmd.request_id) {
            return (first, changes);
        }
        let mut domain_changes = Vec::new();
        let response = match (&mut self.domain, cmd.body) {
            (Domain::Catalog(c), CommandBody::Catalog(body)) => {
                Response::Catalog(c.apply(body, ctx, &mut domain_changes))
            }
            (Domain::Inventory(i), CommandBody::Inventory(body)) => {
                Response::Inventory(i.apply(body, ctx, &mut domain_changes))
            }
            _ => Response::WrongGroup,
        };
        changes.extend(domain_changes.into_iter().map(prefix_domain));
        self.dedup
            .remember(cmd.request_id, ctx.now_ms, &response, &mut changes);
        (response, changes)
    }

    /// The response `proposal` would get if it were applied on this state at the
    /// machine's own clock (the last stamped time in the log), when that response
    /// is a refusal the state alone decides ([`Inventory::refusal_from_state`]);
    /// `None` when it must go through the log. A request id the machine remembers
    /// always goes through the log: a retry's answer is its first outcome.
    ///
    /// Time comes only from the log, as for [`Self::query`]: a hold past its
    /// `expires_at` on some node's wall clock still counts until a stamped entry
    /// (the next write or the sweep) passes it. Deciding with a wall clock made a
    /// refusal treat a due hold as gone while a later read of the reservation, at
    /// the replicated clock, still saw it ACTIVE, and wall clocks of different
    /// leaders need not agree (found by the chaos test under clock skew).
    pub fn refusal_from_state(&self, proposal: &Proposal) -> Option<Response> {
        if self.dedup.contains(&proposal.request_id) {
            return None;
        }
        match (&self.domain, &proposal.body) {
            (Domain::Inventory(i), CommandBody::Inventory(cmd)) => i
                .refusal_from_state(cmd, self.clock_ms)
                .map(|r| Response::Inventory(InventoryResponse::Rejected(r))),
            _ => None,
        }
    }

    /// Evaluates a read on the applied state, as of the replicated clock.
    pub fn query(&self, q: &Query) -> QueryResult {
        match (&self.domain, q) {
            (Domain::Inventory(i), Query::Inventory(q)) => {
                QueryResult::Inventory(i.query(q, self.clock_ms))
            }
            _ => QueryResult::WrongGroup,
        }
    }

    /// Rebuilds a machine from its persisted key-values (any order).
    pub fn restore<'a>(
        kind: GroupKind,
        kvs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<Self> {
        let mut m = Self::new(kind);
        for (k, v) in kvs {
            if k == CLOCK_KEY {
                let bytes: [u8; 8] = v
                    .try_into()
                    .map_err(|_| Error::Decode("clock value is not 8 bytes".into()))?;
                m.clock_ms = i64::from_be_bytes(bytes);
            } else if Dedup::is_key(k) {
                m.dedup.restore(k, v)?;
            } else if k.first() == Some(&DOMAIN_PREFIX) {
                match &mut m.domain {
                    Domain::Catalog(c) => c.restore(&k[1..], v)?,
                    Domain::Inventory(i) => i.restore(&k[1..], v)?,
                }
            } else {
                return Err(Error::Decode(format!("unknown machine key {k:?}")));
            }
        }
        if let Domain::Inventory(i) = &mut m.domain {
            i.finish_restore()?;
        }
        Ok(m)
    }

    /// Every persisted key-value of this machine (what [`GroupMachine::restore`] takes).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.freeze().dump()
    }

    /// The persisted records as they are now, taken in O(1) of the machine's size
    /// (their tables share nodes with the machine's) and dumped later without it:
    /// how a snapshot cuts the machine while applies wait.
    pub fn freeze(&self) -> Frozen {
        Frozen {
            clock_ms: self.clock_ms,
            dedup: self.dedup.freeze(),
            domain: match &self.domain {
                Domain::Catalog(c) => FrozenDomain::Catalog(c.freeze()),
                Domain::Inventory(i) => FrozenDomain::Inventory(i.freeze()),
            },
        }
    }

    /// The catalog, if this group is the catalog.
    pub fn catalog(&self) -> Option<&Catalog> {
        match &self.domain {
            Domain::Catalog(c) => Some(c.as_ref()),
            _ => None,
        }
    }

    /// The event's inventory, if this group holds one.
    pub fn inventory(&self) -> Option<&Inventory> {
        match &self.domain {
            Domain::Inventory(i) => Some(i),
            _ => None,
        }
    }

    /// Largest leader-stamped time applied (ms since the Unix epoch).
    pub fn clock_ms(&self) -> i64 {
        self.clock_ms
    }

    /// Request ids currently remembered for exactly-once.
    pub fn remembered_requests(&self) -> usize {
        self.dedup.len()
    }
}

/// A machine's persisted records at one applied index ([`GroupMachine::freeze`]).
#[derive(Debug, Clone)]
pub struct Frozen {
    clock_ms: i64,
    dedup: super::dedup::Records,
    domain: FrozenDomain,
}

#[derive(Debug, Clone)]
enum FrozenDomain {
    Catalog(super::catalog::Records),
    Inventory(super::inventory::Frozen),
}

impl Frozen {
    /// Every persisted key-value (what [`GroupMachine::restore`] takes).
    pub fn dump(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        let mut out = Vec::new();
        if self.clock_ms != 0 {
            out.push((CLOCK_KEY.to_vec(), self.clock_ms.to_be_bytes().to_vec()));
        }
        self.dedup.dump(&mut out);
        let mut domain = Vec::new();
        match &self.domain {
            FrozenDomain::Catalog(c) => c.dump(&mut domain),
            FrozenDomain::Inventory(i) => i.dump(&mut domain),
        }
        out.extend(domain.into_iter().map(|(k, v)| (with_domain_prefix(k), v)));
        out
    }
}

fn with_domain_prefix(k: Vec<u8>) -> Vec<u8> {
    let mut out = Vec::with_capacity(k.len() + 1);
    out.push(DOMAIN_PREFIX);
    out.extend_from_slice(&k);
    out
}

fn prefix_domain(c: Change) -> Change {
    match c {
        Change::Put(k, v) => Change::Put(with_domain_prefix(k), v),
        Change::Delete(k) => Change::Delete(with_domain_prefix(k)),
    }
}

/// Encodes a domain value; domain types are plain data, so failure is a bug in a type.
pub(crate) fn encode_value<T: Serialize>(value: &T) -> Vec<u8> {
    codec::encode(value).expect("domain value encodes")
}
