//! What the realtime watcher reads from an event group's applied state: the
//! [`Facts`] one look needs, for the fans and holds in an [`Interest`]. The same
//! read serves a node's own subscribers (when it replicates the group) and the
//! nodes that stream the group from it ([`super::feed`]); the facts travel between
//! nodes as bincode.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::WARN_BEFORE_MS;
use crate::domain::inventory::{QueueView, ReservationStatus};
use crate::raft::Group;

/// The fans and holds a node's subscribers care about in one event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interest {
    /// Fans subscribed (their queue places and holds are reported), sorted.
    pub users: Vec<Uuid>,
    /// Holds already warned about (their lapse is reported), sorted.
    pub holds: Vec<Uuid>,
}

/// What one look read from a group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Facts {
    /// Seats available per section (layout order), if read at this look.
    pub counts: Option<Vec<u32>>,
    /// The group's last applied log index.
    pub index: Option<u64>,
    /// The group's replicated clock: the leader's stamp of the last applied entry.
    pub clock_ms: i64,
    /// The interested fans' places in the waiting room. (Ordered maps: equal
    /// facts encode to equal bytes, which is how a member tells a change.)
    pub queue: BTreeMap<Uuid, QueueView>,
    /// The interested fans' live holds due within the warning time:
    /// (hold, holder, expiry).
    pub expiring: Vec<(Uuid, Uuid, i64)>,
    /// The warned holds: (still live, lapsed).
    pub holds: BTreeMap<Uuid, (bool, bool)>,
}

/// Reads the facts of `group` for `interest`, `now_ms` being this node's wall
/// clock (for the warning window). Seat counts are recomputed only when the group
/// applied something after `seen_index` (they cost a pass over the seats). `None`
/// if the group holds no event inventory.
pub fn read(
    group: &Group,
    seen_index: Option<u64>,
    interest: &Interest,
    now_ms: i64,
) -> Option<Facts> {
    let st = group.state.read();
    let inv = st.machine.inventory()?;
    let index = st.last_applied.map(|l| l.index);
    let clock = st.machine.clock_ms();
    let interested = |u: &Uuid| interest.users.binary_search(u).is_ok();
    Some(Facts {
        counts: (index != seen_index).then(|| inv.available_by_section(clock).unwrap_or_default()),
        index,
        clock_ms: clock,
        queue: interest
            .users
            .iter()
            .filter_map(|u| Some((*u, inv.waiting_room().entry_of(u, clock)?)))
            .collect(),
        expiring: inv
            .holds_expiring_by(now_ms.saturating_add(WARN_BEFORE_MS))
            .filter(|r| interested(&r.user_id))
            .map(|r| (r.reservation_id, r.user_id, r.expires_ms))
            .collect(),
        holds: interest
            .holds
            .iter()
            .filter_map(|id| {
                let r = inv.reservation(id)?;
                let active = r.status == ReservationStatus::Active;
                let lapsed =
                    r.status == ReservationStatus::Expired || (active && r.expires_ms <= clock);
                Some((*id, (active && !lapsed, lapsed)))
            })
            .collect(),
    })
}
