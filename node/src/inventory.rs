//! What a node does for event inventories beyond a single request: opening a
//! group with the layout derived from the catalog, reading an inventory from the
//! nearest replica (opening it first if its first write never landed), the
//! leader's sweeper that expires due holds so their seats are announced, and the
//! leader's admitter that lets waiting-room fans in.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::api::ApiError;
use crate::domain::catalog::{Event, Venue};
use crate::domain::inventory::{
    EventLayout, InventoryAnswer, InventoryCommand, InventoryQuery, InventoryRejection,
    InventoryResponse, QueueLimits, QueueOutcome,
};
use crate::domain::{CommandBody, Proposal, Query, QueryResult, Response};
use crate::raft::GroupId;
use crate::routing::Applied;
use crate::server::NodeCtx;

/// An event's catalog record, its venue and the layout derived from both.
pub struct EventInfo {
    pub event: Arc<Event>,
    pub venue: Arc<Venue>,
    pub layout: EventLayout,
}

/// Each node's [`EventInfo`] per event, derived once: every hold needs the event's
/// group and seat count, and deriving the layout of a 20,000-seat venue on each
/// request cost more CPU than the rest of the handler (profile in
/// docs/benchmarks.md). An entry is current while the catalog still holds the same
/// event and venue allocations; any change to either replaces them. At most
/// [`EventInfos::CAP`] events are kept (a crawl over every event's page must not
/// hold every layout): past that the cache starts over.
#[derive(Default)]
pub struct EventInfos(Mutex<HashMap<Uuid, Arc<EventInfo>>>);

impl EventInfos {
    pub const CAP: usize = 4096;

    fn get(&self, event: &Arc<Event>, venue: &Arc<Venue>, max_per_user: u32) -> Arc<EventInfo> {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let id = event.spec.event_id;
        if let Some(info) = map.get(&id) {
            if Arc::ptr_eq(&info.event, event) && Arc::ptr_eq(&info.venue, venue) {
                return info.clone();
            }
        }
        let info = Arc::new(EventInfo {
            layout: EventLayout::from_catalog(event, venue, max_per_user),
            event: event.clone(),
            venue: venue.clone(),
        });
        if map.len() >= Self::CAP {
            map.clear();
        }
        map.insert(id, info.clone());
        info
    }
}

/// A read of an event's inventory and where it came from.
pub struct InventoryRead {
    pub answer: InventoryAnswer,
    pub applied_index: u64,
    pub served_by: u64,
}

impl NodeCtx {
    /// The event, its venue and layout from the catalog (404 if unknown).
    pub async fn event_info(&self, event_id: &Uuid) -> Result<Arc<EventInfo>, ApiError> {
        let (event, venue) = self
            .catalog_lookup(|c| {
                let event = c.event_shared(event_id)?;
                let venue = c.venue_shared(&event.spec.venue_id)?;
                Some((event.clone(), venue.clone()))
            })
            .await?
            .ok_or_else(|| ApiError::not_found(format!("event {event_id} not found")))?;
        let max = self.config.inventory.max_tickets_per_user;
        Ok(self.event_infos.get(&event, &venue, max))
    }

    /// Opens the event's group with its layout. Idempotent: the group ignores a
    /// second open, and the request id is the same for every node.
    pub async fn open_event(&self, info: &EventInfo) -> Result<Applied, ApiError> {
        let event_id = info.event.spec.event_id;
        let proposal = Proposal {
            request_id: Uuid::new_v5(&event_id, b"open"),
            body: CommandBody::Inventory(InventoryCommand::Open {
                event_id,
                layout: Box::new(info.layout.clone()),
            }),
        };
        Ok(self.propose(GroupId(info.event.group_id), proposal).await?)
    }

    /// Gets `command(request_id)` applied by the event's group and returns the
    /// inventory's answer. If the group's first write never landed (it answers
    /// "not open"), opens it and asks again under a request id derived from this
    /// one (the first refusal is remembered under it). `refusable`: the first
    /// attempt may be answered from the leader's state ([`NodeCtx::propose_refusable`]).
    pub async fn propose_to_event(
        &self,
        info: &EventInfo,
        request_id: Uuid,
        refusable: bool,
        command: impl Fn(Uuid) -> Proposal,
    ) -> Result<InventoryResponse, ApiError> {
        let group = GroupId(info.event.group_id);
        let first = command(request_id);
        let mut outcome = if refusable {
            self.propose_refusable(group, first).await?.response
        } else {
            self.propose(group, first).await?.response
        };
        if matches!(
            outcome,
            Response::Inventory(InventoryResponse::Rejected(InventoryRejection::NotOpen))
        ) {
            self.open_event(info).await?;
            let retry = Uuid::new_v5(&request_id, b"after-open");
            outcome = self.propose(group, command(retry)).await?.response;
        }
        match outcome {
            Response::Inventory(r) => Ok(r),
            other => Err(ApiError::internal(format!(
                "unexpected inventory response {other:?}"
            ))),
        }
    }

    /// Reads the event's inventory: linearizable through the leader, or the
    /// nearest replica's applied state. A group that was never opened is opened
    /// and read again.
    pub async fn read_inventory(
        &self,
        info: &EventInfo,
        query: InventoryQuery,
        linearizable: bool,
    ) -> Result<InventoryRead, ApiError> {
        let group = GroupId(info.event.group_id);
        for attempt in 0..2 {
            let answered = self
                .router
                .query(
                    group,
                    Query::Inventory(query.clone()),
                    linearizable || attempt > 0,
                    self.deadline(),
                )
                .await?;
            let QueryResult::Inventory(answer) = answered.result else {
                return Err(ApiError::internal(format!(
                    "group {group} does not hold an inventory"
                )));
            };
            let unopened = matches!(
                answer,
                InventoryAnswer::Availability(None) | InventoryAnswer::Seats(None)
            );
            if unopened && attempt == 0 {
                self.open_event(info).await?;
                continue;
            }
            return Ok(InventoryRead {
                answer,
                applied_index: answered.applied_index,
                served_by: answered.served_by,
            });
        }
        Err(ApiError::unavailable(
            "NO_LEADER",
            format!("event {} is not open yet", info.event.spec.event_id),
            1,
        ))
    }
}

/// The event groups this node leads now.
pub(crate) fn led_event_groups(
    ctx: &NodeCtx,
) -> impl Iterator<Item = Arc<crate::raft::Group>> + '_ {
    ctx.groups.list().into_iter().filter(|g| {
        g.id != GroupId::CATALOG && g.raft.metrics().borrow().current_leader == Some(ctx.me)
    })
}

/// Forever: every `sweep_interval_ms`, each inventory group this node leads with a
/// hold that is due gets a sweep proposed (the server aborts it at shutdown). Idle
/// groups are not touched, so quiesced groups stay quiet.
pub async fn sweeper(ctx: Arc<NodeCtx>) {
    let every = Duration::from_millis(ctx.config.inventory.sweep_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now().timestamp_millis();
        for g in led_event_groups(&ctx) {
            let due = {
                let st = g.state.read();
                st.machine.inventory().and_then(|i| {
                    let next = i.next_expiry_ms()?;
                    let event = i.event_id()?;
                    (next <= now).then_some((event, next))
                })
            };
            let Some((event_id, next)) = due else {
                continue;
            };
            let proposal = Proposal {
                request_id: Uuid::new_v5(&event_id, format!("sweep\n{next}").as_bytes()),
                body: CommandBody::Inventory(InventoryCommand::Sweep { event_id }),
            };
            match ctx.propose(g.id, proposal).await {
                Ok(_) => metrics::counter!("boxoffice_sweeps_total").increment(1),
                Err(e) => tracing::debug!(group = %g.id, "sweep not applied: {e}"),
            }
        }
    }
}

/// The waiting-room limits of `event` if its queue is on: the event's settings
/// and the cluster's per-device cap, as the room's commands carry them.
pub fn queue_limits(config: &crate::config::ClusterConfig, event: &Event) -> Option<QueueLimits> {
    let q = event.spec.queue.as_ref().filter(|q| q.enabled)?;
    Some(QueueLimits {
        max_size: q.max_size,
        max_per_device: config.queue.max_entries_per_device,
        admission_per_second: q.admission_per_second,
        max_active_shoppers: q.max_active_shoppers,
        access_window_ms: i64::from(q.access_window_minutes).saturating_mul(60_000),
    })
}

/// Forever: every `queue.admit_interval_ms`, each event group this node leads whose
/// waiting room has work (fans waiting while the sale is open, a slot is free and
/// an admission is due, or an access window to end) gets a `QueueAdmit` proposed
/// with the event's limits from the catalog. Each group's proposal runs on its own
/// (a group without a quorum does not hold the others back), at most one at a time
/// per group. Rooms with nothing to do are not touched.
pub async fn admitter(ctx: Arc<NodeCtx>) {
    let every = Duration::from_millis(ctx.config.queue.admit_interval_ms);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let busy: Arc<Mutex<std::collections::HashSet<GroupId>>> = Arc::default();
    loop {
        tick.tick().await;
        let now = chrono::Utc::now().timestamp_millis();
        for g in led_event_groups(&ctx) {
            let Some(event_id) = g
                .state
                .read()
                .machine
                .inventory()
                .and_then(|i| i.event_id())
            else {
                continue;
            };
            let Some(limits) = ctx
                .with_catalog(|c| {
                    c.event_shared(&event_id)
                        .and_then(|e| queue_limits(&ctx.config, e))
                })
                .flatten()
            else {
                continue;
            };
            let due = g
                .state
                .read()
                .machine
                .inventory()
                .is_some_and(|i| i.queue_needs_admit(now, &limits));
            if !due || !busy.lock().unwrap_or_else(|p| p.into_inner()).insert(g.id) {
                continue;
            }
            let proposal = Proposal {
                request_id: Uuid::new_v4(),
                body: CommandBody::Inventory(InventoryCommand::QueueAdmit { event_id, limits }),
            };
            let (ctx, busy, group) = (ctx.clone(), busy.clone(), g.id);
            tokio::spawn(async move {
                match ctx.propose(group, proposal).await {
                    Ok(a) => {
                        if let Response::Inventory(InventoryResponse::Queue(
                            QueueOutcome::Admitted { admitted, expired },
                        )) = a.response
                        {
                            metrics::counter!("boxoffice_queue_admitted_total")
                                .increment(u64::from(admitted));
                            metrics::counter!("boxoffice_queue_windows_ended_total")
                                .increment(u64::from(expired));
                        }
                    }
                    Err(e) => tracing::debug!(%group, "admission not applied: {e}"),
                }
                busy.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&group);
            });
        }
    }
}
