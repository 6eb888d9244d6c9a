//! The node's half of the order saga (docs/design.md, "Orders"): driving an order
//! step by step between the payment gateway and its event group, and the group
//! leader's recovery of orders whose driver died half way.
//!
//! Each step asks the gateway first (with the step's idempotency key) and then
//! records the answer in the group under a request id derived from the order and
//! the step, so any number of drivers (the request's node, a recovering leader,
//! both after a partition) converge on one outcome and move money once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use uuid::Uuid;

use crate::domain::inventory::orders::{OrderView, SagaStep, Settlement};
use crate::domain::inventory::{
    InventoryAnswer, InventoryCommand, InventoryQuery, InventoryRejection, InventoryResponse,
};
use crate::domain::{CommandBody, Proposal, Query, QueryResult, Response};
use crate::payments::{Authorization, Charge, GatewayError};
use crate::raft::GroupId;
use crate::server::NodeCtx;

/// A crash point of the saga, for the crash tests (feature `test-hooks`): when
/// the file `$BOXOFFICE_CRASH_FILE` holds `name`, the file is removed and the
/// process aborts, as a `kill -9` between two steps would. Without the feature
/// it is nothing.
#[cfg(feature = "test-hooks")]
pub fn crash_point(name: &str) {
    let Ok(path) = std::env::var("BOXOFFICE_CRASH_FILE") else {
        return;
    };
    let armed = std::fs::read_to_string(&path).is_ok_and(|s| s.trim() == name);
    if armed && std::fs::remove_file(&path).is_ok() {
        tracing::error!(point = name, "test crash point reached: aborting");
        std::process::abort();
    }
}

/// A crash point of the saga (nothing without the feature `test-hooks`).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn crash_point(_name: &str) {}

/// Why a saga stopped before its end.
#[derive(Debug, thiserror::Error)]
pub enum SagaError {
    /// The gateway could not be asked; the step stays due.
    #[error("payment gateway: {0}")]
    Gateway(String),
    /// The group could not record the step; it stays due.
    #[error("recording the step: {0}")]
    Record(String),
    /// The group refused the step.
    #[error("refused: {0:?}")]
    Refused(InventoryRejection),
}

/// The payment reference of an order that costs nothing (no gateway involved).
pub const NO_PAYMENT: &str = "none";

/// How far a driver goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Stop once the payment's outcome is recorded (the request path answers then).
    Settled,
    /// Go on until the order waits for nothing.
    Done,
}

/// The orders this node is driving now, so its recovery does not start a second
/// driver beside a live one (a second driver would be harmless, only wasteful).
#[derive(Default)]
pub struct Sagas(Arc<Mutex<HashSet<Uuid>>>);

/// This node drives an order while it holds the claim.
pub struct Claim {
    set: Arc<Mutex<HashSet<Uuid>>>,
    id: Uuid,
}

impl Sagas {
    /// Claims `order`, unless a task of this node drives it already.
    pub fn claim(&self, order: Uuid) -> Option<Claim> {
        let fresh = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(order);
        fresh.then(|| Claim {
            set: self.0.clone(),
            id: order,
        })
    }

    /// Orders being driven now.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

/// The idempotency key of a step at the gateway: the order id for the
/// authorization (as the architecture says), derived keys for the others.
fn gateway_key(order: &Uuid, step: SagaStep) -> String {
    match step {
        SagaStep::Authorize => order.to_string(),
        SagaStep::Capture => format!("{order}:capture"),
        SagaStep::Refund => format!("{order}:refund"),
    }
}

impl NodeCtx {
    /// Drives `view`'s order through the steps it waits for, `until` far, and
    /// returns the order as last recorded. Before every step but a first
    /// authorization the order is read again through the leader: a step may have
    /// been taken meanwhile by another driver, or the order cancelled (a capture
    /// must not follow a cancel it did not see).
    pub async fn drive_order(
        &self,
        group: GroupId,
        mut view: OrderView,
        until: Until,
    ) -> Result<OrderView, SagaError> {
        let mut first = true;
        while let Some(step) = view.order.next_step() {
            if !(first && step == SagaStep::Authorize) {
                view = self.current_order(group, &view).await?;
            }
            first = false;
            let Some(step) = view.order.next_step() else {
                break;
            };
            if until == Until::Settled && step != SagaStep::Authorize {
                break;
            }
            let o = &view.order;
            let key = gateway_key(&o.order_id, step);
            let step_name = format!("{step:?}").to_lowercase();
            crash_point(&format!("before_{step_name}"));
            let (event_id, order_id) = (view.event_id, o.order_id);
            // A free order (a zero total) has nothing to ask a gateway for.
            let free = o.total_cents == 0 || o.payment_ref.as_deref() == Some(NO_PAYMENT);
            let command = match step {
                SagaStep::Authorize => {
                    let settlement = if free {
                        Settlement::Authorized {
                            payment_ref: NO_PAYMENT.into(),
                        }
                    } else {
                        let description = format!("Boxoffice order {order_id}");
                        let charge = Charge {
                            key: &key,
                            card_ref: &o.card_ref,
                            amount_cents: o.total_cents,
                            currency: &self.config.orders.currency,
                            description: &description,
                        };
                        match self.payments.authorize(charge).await {
                            Ok(Authorization::Authorized { payment_ref }) => {
                                Settlement::Authorized { payment_ref }
                            }
                            Ok(Authorization::Declined { reason }) => {
                                Settlement::Declined { reason }
                            }
                            // The card the order names is not one the gateway can
                            // charge: as good as declined, and it will not get better.
                            Err(GatewayError::InvalidToken(why) | GatewayError::Gone(why)) => {
                                Settlement::Declined { reason: why }
                            }
                            Err(GatewayError::Unavailable(why)) => {
                                return Err(SagaError::Gateway(why));
                            }
                        }
                    };
                    InventoryCommand::OrderSettle {
                        event_id,
                        order_id,
                        settlement,
                        nonce: rand::random(),
                    }
                }
                SagaStep::Capture => {
                    let payment_ref = o.payment_ref.as_deref().unwrap_or_default();
                    match if free {
                        Ok(())
                    } else {
                        self.payments.capture(payment_ref, &key).await
                    } {
                        Ok(()) => InventoryCommand::OrderCaptured { event_id, order_id },
                        // Nothing can be captured any more: the tickets must go.
                        Err(GatewayError::Gone(reason)) => {
                            tracing::warn!(order = %order_id, "capture impossible: {reason}");
                            InventoryCommand::OrderCaptureFailed {
                                event_id,
                                order_id,
                                reason,
                            }
                        }
                        Err(e) => return Err(SagaError::Gateway(e.to_string())),
                    }
                }
                SagaStep::Refund => {
                    // An order that never got a payment reference has nothing
                    // at the gateway to give back.
                    if let Some(payment_ref) = o.payment_ref.as_deref().filter(|_| !free) {
                        match self
                            .payments
                            .refund(payment_ref, o.refund_cents(), &key)
                            .await
                        {
                            Ok(()) | Err(GatewayError::Gone(_)) => {}
                            Err(e) => return Err(SagaError::Gateway(e.to_string())),
                        }
                    }
                    InventoryCommand::OrderRefunded { event_id, order_id }
                }
            };
            crash_point(&format!("after_{step_name}"));
            let proposal = Proposal {
                request_id: Uuid::new_v5(&order_id, step_name.as_bytes()),
                body: CommandBody::Inventory(command),
            };
            let applied = self
                .propose(group, proposal)
                .await
                .map_err(|e| SagaError::Record(e.to_string()))?;
            view = match applied.response {
                Response::Inventory(InventoryResponse::Order(v)) => *v,
                Response::Inventory(InventoryResponse::Rejected(r)) => {
                    return Err(SagaError::Refused(r))
                }
                other => return Err(SagaError::Record(format!("unexpected answer {other:?}"))),
            };
            metrics::counter!("boxoffice_order_steps_total", "step" => step_name).increment(1);
        }
        Ok(view)
    }

    /// The order as its group's leader has it now.
    async fn current_order(
        &self,
        group: GroupId,
        view: &OrderView,
    ) -> Result<OrderView, SagaError> {
        let order_id = view.order.order_id;
        let answered = self
            .router
            .query(
                group,
                Query::Inventory(InventoryQuery::Order { order_id }),
                true,
                self.deadline(),
            )
            .await
            .map_err(|e| SagaError::Record(e.to_string()))?;
        match answered.result {
            QueryResult::Inventory(InventoryAnswer::Order(Some(v))) => Ok(*v),
            other => Err(SagaError::Record(format!(
                "order {order_id} not found at its leader: {other:?}"
            ))),
        }
    }

    /// Drives the rest of an order in the background (capture after a
    /// confirmation, refund after a cancel). A failure leaves the step to the
    /// leader's recovery.
    pub fn finish_order_later(self: &Arc<Self>, group: GroupId, view: OrderView) {
        let Some(claim) = self.sagas.claim(view.order.order_id) else {
            return;
        };
        let ctx = self.clone();
        tokio::spawn(async move {
            let id = view.order.order_id;
            if let Err(e) = ctx.drive_order(group, view, Until::Done).await {
                tracing::info!(order = %id, "order step left to recovery: {e}");
            }
            drop(claim);
        });
    }
}

/// Most orders one node recovers at once.
const MAX_RECOVERING: usize = 64;

/// Forever: every `orders.recovery_interval_ms`, each event group this node leads
/// has its orders whose saga step has been due longer than
/// `orders.recovery_grace_ms` driven to their end (a driver that died, a gateway
/// that was down). Idle groups are not touched.
pub async fn recovery(ctx: Arc<NodeCtx>) {
    let every = Duration::from_millis(ctx.config.orders.recovery_interval_ms);
    let grace = i64::try_from(ctx.config.orders.recovery_grace_ms).unwrap_or(i64::MAX);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = chrono::Utc::now().timestamp_millis();
        for g in crate::inventory::led_event_groups(&ctx) {
            let due: Vec<OrderView> = {
                let st = g.state.read();
                let Some(inv) = st.machine.inventory() else {
                    continue;
                };
                inv.sagas_due()
                    .into_iter()
                    .take_while(|d| d.since_ms.saturating_add(grace) <= now)
                    .filter_map(|d| inv.order_view(&d.order_id))
                    .collect()
            };
            for view in due {
                if ctx.sagas.len() >= MAX_RECOVERING {
                    break;
                }
                let Some(claim) = ctx.sagas.claim(view.order.order_id) else {
                    continue;
                };
                let (ctx, group) = (ctx.clone(), g.id);
                tokio::spawn(async move {
                    let id = view.order.order_id;
                    tracing::info!(order = %id, "recovering an order");
                    metrics::counter!("boxoffice_orders_recovered_total").increment(1);
                    if let Err(e) = ctx.drive_order(group, view, Until::Done).await {
                        tracing::warn!(order = %id, "order recovery stopped: {e}");
                    }
                    drop(claim);
                });
            }
        }
    }
}
