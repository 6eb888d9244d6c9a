//! One event's inventory: the state its own Raft group replicates. Today it holds
//! which event the group serves and the operator's sale status (the state that gates
//! holds); seats, holds, orders, tickets and scans join it with the inventory work.
//!
//! Keys: `o` the event id, `s` the status.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::machine::encode_value;
use super::{ApplyCtx, Change};
use crate::codec;
use crate::error::{Error, Result};

const EVENT_KEY: &[u8] = b"o";
const STATUS_KEY: &[u8] = b"s";

/// What an operator has said about the sale; `Scheduled` follows the dates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaleOverride {
    Scheduled,
    OnSale,
    Paused,
    Cancelled,
}

/// Inventory commands. Each names its event, so a misrouted command is refused
/// instead of applied to the wrong event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryCommand {
    /// Binds a new group to its event (the first write of every event group).
    Open { event_id: Uuid },
    SetStatus {
        event_id: Uuid,
        status: SaleOverride,
    },
}

/// Reads of an event's inventory.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryQuery {
    /// Which event the group serves and its sale status.
    Status,
}

/// The event and sale status a group holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InventoryView {
    pub event_id: Option<Uuid>,
    pub status: SaleOverride,
    pub changed_ms: i64,
}

/// Inventory outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryResponse {
    Status {
        event_id: Uuid,
        status: SaleOverride,
        changed_ms: i64,
    },
    Rejected(InventoryRejection),
}

/// Business refusals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum InventoryRejection {
    /// The group serves another event.
    WrongEvent { serves: Uuid },
    /// A cancelled sale stays cancelled.
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct StatusRecord {
    status: SaleOverride,
    changed_ms: i64,
}

/// One event's replicated inventory state.
#[derive(Debug, Clone, PartialEq)]
pub struct Inventory {
    event_id: Option<Uuid>,
    status: StatusRecord,
}

impl Default for Inventory {
    fn default() -> Self {
        Self {
            event_id: None,
            status: StatusRecord {
                status: SaleOverride::Scheduled,
                changed_ms: 0,
            },
        }
    }
}

impl Inventory {
    pub(super) fn apply(
        &mut self,
        cmd: InventoryCommand,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> InventoryResponse {
        match cmd {
            InventoryCommand::Open { event_id } => match self.bind(event_id, changes) {
                Ok(()) => self.status_response(event_id),
                Err(r) => InventoryResponse::Rejected(r),
            },
            InventoryCommand::SetStatus { event_id, status } => {
                if let Err(r) = self.bind(event_id, changes) {
                    return InventoryResponse::Rejected(r);
                }
                if self.status.status == SaleOverride::Cancelled
                    && status != SaleOverride::Cancelled
                {
                    return InventoryResponse::Rejected(InventoryRejection::Cancelled);
                }
                if self.status.status != status {
                    self.status = StatusRecord {
                        status,
                        changed_ms: ctx.now_ms,
                    };
                    changes.push(Change::Put(STATUS_KEY.to_vec(), encode_value(&self.status)));
                }
                self.status_response(event_id)
            }
        }
    }

    fn status_response(&self, event_id: Uuid) -> InventoryResponse {
        InventoryResponse::Status {
            event_id,
            status: self.status.status,
            changed_ms: self.status.changed_ms,
        }
    }

    /// The first command binds the group to its event; later ones must match.
    fn bind(
        &mut self,
        event_id: Uuid,
        changes: &mut Vec<Change>,
    ) -> Result<(), InventoryRejection> {
        match self.event_id {
            Some(serves) if serves != event_id => Err(InventoryRejection::WrongEvent { serves }),
            Some(_) => Ok(()),
            None => {
                self.event_id = Some(event_id);
                changes.push(Change::Put(EVENT_KEY.to_vec(), encode_value(&event_id)));
                Ok(())
            }
        }
    }

    pub(super) fn restore(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        if k == EVENT_KEY {
            self.event_id = Some(codec::decode(v)?);
        } else if k == STATUS_KEY {
            self.status = codec::decode(v)?;
        } else {
            return Err(Error::Decode(format!("unknown inventory key {k:?}")));
        }
        Ok(())
    }

    pub(super) fn dump(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        if let Some(id) = &self.event_id {
            out.push((EVENT_KEY.to_vec(), encode_value(id)));
        }
        if self.status.changed_ms != 0 || self.status.status != SaleOverride::Scheduled {
            out.push((STATUS_KEY.to_vec(), encode_value(&self.status)));
        }
    }

    pub(super) fn query(&self, q: &InventoryQuery) -> InventoryView {
        match q {
            InventoryQuery::Status => InventoryView {
                event_id: self.event_id,
                status: self.status.status,
                changed_ms: self.status.changed_ms,
            },
        }
    }

    pub fn event_id(&self) -> Option<Uuid> {
        self.event_id
    }

    pub fn status(&self) -> SaleOverride {
        self.status.status
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::{Command, CommandBody, GroupKind, GroupMachine, Response};

    fn set(req: u128, at: i64, event: u128, status: SaleOverride) -> Command {
        Command {
            request_id: Uuid::from_u128(req),
            stamped_ms: at,
            body: CommandBody::Inventory(InventoryCommand::SetStatus {
                event_id: Uuid::from_u128(event),
                status,
            }),
        }
    }

    #[test]
    fn binds_to_one_event_and_cancellation_is_final() {
        let mut m = GroupMachine::new(GroupKind::Inventory);
        let mut disk = BTreeMap::new();
        let mut outs = Vec::new();
        for (i, c) in [
            set(1, 10, 7, SaleOverride::Paused),
            set(2, 11, 8, SaleOverride::OnSale),
            set(3, 12, 7, SaleOverride::Cancelled),
            set(4, 13, 7, SaleOverride::OnSale),
        ]
        .into_iter()
        .enumerate()
        {
            let (r, changes) = m.apply(c, i as u64 + 1);
            for ch in changes {
                match ch {
                    Change::Put(k, v) => disk.insert(k, v),
                    Change::Delete(k) => disk.remove(&k),
                };
            }
            outs.push(r);
        }
        assert!(matches!(
            outs[0],
            Response::Inventory(InventoryResponse::Status {
                status: SaleOverride::Paused,
                changed_ms: 10,
                ..
            })
        ));
        assert_eq!(
            outs[1],
            Response::Inventory(InventoryResponse::Rejected(
                InventoryRejection::WrongEvent {
                    serves: Uuid::from_u128(7)
                }
            ))
        );
        assert_eq!(
            outs[3],
            Response::Inventory(InventoryResponse::Rejected(InventoryRejection::Cancelled))
        );
        assert_eq!(
            m.inventory().map(Inventory::status),
            Some(SaleOverride::Cancelled)
        );
        let restored = GroupMachine::restore(
            GroupKind::Inventory,
            disk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .expect("test value");
        assert_eq!(restored, m);
        let dumped: BTreeMap<_, _> = m.dump().into_iter().collect();
        assert_eq!(dumped, disk);
    }
}
