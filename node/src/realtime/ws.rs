//! `GET /v1/realtime?token=...`: the WebSocket. The token is a session, access or
//! queue token. The client sends `{"type":"subscribe","event_id"}` and
//! `{"type":"unsubscribe","event_id"}` (several events per connection, at most
//! [`MAX_SUBSCRIPTIONS`]); the node answers each with `subscribed`/`unsubscribed`
//! or an `error`, then streams the events' updates ([`super`]). The node pings
//! every [`PING_EVERY`]; a connection silent for [`IDLE_AFTER`] is closed (1000),
//! one whose token expires is closed with 4001, one that fell behind with 4008.

use std::collections::BTreeSet;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::response::IntoResponse;
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::time::Instant;
use utoipa::IntoParams;
use uuid::Uuid;

use super::{Outlet, Subscription};
use crate::api::tokens;
use crate::api::{ApiError, AppState};
use crate::raft::GroupId;

/// Subscriptions one connection may hold.
pub const MAX_SUBSCRIPTIONS: usize = 20;
/// How often the node pings.
pub const PING_EVERY: Duration = Duration::from_secs(20);
/// How long a connection may stay silent (no message, no pong).
pub const IDLE_AFTER: Duration = Duration::from_secs(75);
/// Largest message a client may send (subscribe and unsubscribe are tiny).
const MAX_CLIENT_MESSAGE: usize = 4 << 10;
/// The WebSocket library's read and write buffers per connection (in the
/// process; the kernel's socket buffers are its own): messages are small, and
/// tens of thousands of connections per node must not cost the 128 KiB defaults.
const BUFFER_BYTES: usize = 4 << 10;
/// Queued messages written out before one flush.
const FLUSH_EVERY: usize = 64;

/// `GET /v1/realtime` query.
#[derive(Debug, Deserialize, IntoParams)]
pub struct RealtimeQuery {
    /// A session, access or queue token.
    token: String,
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientMessage {
    Subscribe { event_id: Uuid },
    Unsubscribe { event_id: Uuid },
}

/// `GET /v1/realtime`: upgrades to the WebSocket (401 for a bad token).
#[utoipa::path(get, path = "/v1/realtime", tag = "realtime", operation_id = "realtime",
    params(RealtimeQuery),
    responses(
        (status = 101, description = "Switching to the WebSocket protocol"),
        (status = 400, description = "Not a WebSocket upgrade", body = crate::api::ErrorBody),
        (status = 401, description = "Missing or invalid token", body = crate::api::ErrorBody),
    ))]
pub async fn connect(
    State(ctx): State<AppState>,
    crate::api::Query(q): crate::api::Query<RealtimeQuery>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let claims = tokens::verify(&ctx, &q.token, &["session", "access", "queue"])?;
    let upgrade =
        upgrade.map_err(|e| ApiError::bad_request(format!("not a WebSocket upgrade: {e}")))?;
    let expires_in = Duration::from_secs(
        u64::try_from(claims.exp - chrono::Utc::now().timestamp()).unwrap_or(0),
    );
    Ok(upgrade
        .read_buffer_size(BUFFER_BYTES)
        .write_buffer_size(BUFFER_BYTES)
        .max_message_size(MAX_CLIENT_MESSAGE)
        .max_frame_size(MAX_CLIENT_MESSAGE)
        .on_upgrade(move |socket| async move {
            // The connection runs apart ([`super::connection_runtime`]); lookups
            // that may route to other nodes come back to the node's runtime.
            let node = tokio::runtime::Handle::current();
            let runtime = super::connection_runtime(ctx.config.realtime.threads);
            runtime.spawn(serve(ctx, node, socket, claims.sub, expires_in));
        }))
}

/// One connection, until it closes.
async fn serve(
    ctx: AppState,
    node: tokio::runtime::Handle,
    socket: WebSocket,
    user: Uuid,
    expires_in: Duration,
) {
    let conn = ctx.realtime.connection();
    let (out, mut rx, mut kicked) = Outlet::new();
    let (mut sink, mut stream) = socket.split();
    let mut subscribed: BTreeSet<Uuid> = BTreeSet::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let expiry = tokio::time::sleep(expires_in);
    tokio::pin!(expiry);
    let mut last_heard = Instant::now();
    metrics::gauge!("boxoffice_realtime_connections").increment(1.0);
    let close = loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(text) => {
                    // Whatever else is queued goes out with it, in one flush.
                    let mut batch = vec![text];
                    while batch.len() < FLUSH_EVERY {
                        match rx.try_recv() {
                            Ok(t) => batch.push(t),
                            Err(_) => break,
                        }
                    }
                    let mut out = futures::stream::iter(batch.into_iter().map(|t| Ok(Message::Text(t))));
                    if sink.send_all(&mut out).await.is_err() {
                        break None;
                    }
                }
                None => break None,
            },
            _ = kicked.changed() => {
                let code = kicked.borrow().unwrap_or(4008);
                break Some((code, "too slow: updates were dropped; reconnect"));
            }
            _ = &mut expiry => break Some((4001, "token expired")),
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_AFTER {
                    break Some((1000, "idle"));
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break None;
                }
            }
            incoming = stream.next() => {
                last_heard = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let answer = handle(&ctx, &node, conn, user, &out, &mut subscribed, text.as_str()).await;
                        if sink.send(Message::Text(answer.to_string().into())).await.is_err() {
                            break None;
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break None,
                    Some(Ok(_)) => {}
                }
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = sink.send(Message::Close(Some(frame))).await;
    }
    ctx.realtime.disconnect(conn);
    metrics::gauge!("boxoffice_realtime_connections").decrement(1.0);
}

/// Answers one client message.
async fn handle(
    ctx: &AppState,
    node: &tokio::runtime::Handle,
    conn: u64,
    user: Uuid,
    out: &Outlet,
    subscribed: &mut BTreeSet<Uuid>,
    text: &str,
) -> serde_json::Value {
    let error =
        |code: &str, message: String| json!({"type": "error", "code": code, "message": message});
    let msg: ClientMessage = match serde_json::from_str(text) {
        Ok(m) => m,
        Err(e) => {
            return error(
                "VALIDATION_FAILED",
                format!("expected {{\"type\":\"subscribe\"|\"unsubscribe\",\"event_id\"}}: {e}"),
            )
        }
    };
    match msg {
        ClientMessage::Subscribe { event_id } => {
            if !subscribed.contains(&event_id) && subscribed.len() >= MAX_SUBSCRIPTIONS {
                return error(
                    "TOO_MANY_SUBSCRIPTIONS",
                    format!("at most {MAX_SUBSCRIPTIONS} events per connection"),
                );
            }
            let lookup = {
                let ctx = ctx.clone();
                node.spawn(async move { ctx.event_info(&event_id).await })
            };
            let info = match lookup.await {
                Ok(Ok(info)) => info,
                Ok(Err(e)) => return error(e.code, e.message),
                Err(e) => return error("INTERNAL", format!("lookup failed: {e}")),
            };
            let sections = info
                .layout
                .sections
                .iter()
                .map(|s| s.name.clone())
                .collect();
            let subscription = Subscription {
                conn,
                user,
                event: event_id,
                group: GroupId(info.event.group_id),
                sections,
                out: out.clone(),
            };
            ctx.realtime.subscribe(subscription);
            subscribed.insert(event_id);
            json!({"type": "subscribed", "event_id": event_id})
        }
        ClientMessage::Unsubscribe { event_id } => {
            subscribed.remove(&event_id);
            ctx.realtime.unsubscribe(conn, &event_id);
            json!({"type": "unsubscribed", "event_id": event_id})
        }
    }
}
