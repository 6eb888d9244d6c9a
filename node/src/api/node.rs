//! Node endpoints: `/health` and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use crate::raft::GroupId;

/// 200 when this node can serve (its catalog replica runs, knows a leader and has
/// applied the cluster's genesis), 503 otherwise, with the reason.
pub async fn health(State(ctx): State<AppState>) -> impl IntoResponse {
    let leader = ctx.groups.get(GroupId::CATALOG).and_then(|g| {
        let genesis = g
            .state
            .read()
            .machine
            .catalog()
            .and_then(|c| c.cluster_uuid())
            .is_some();
        let leader = g.raft.metrics().borrow().current_leader;
        leader.filter(|_| genesis)
    });
    match leader {
        Some(leader) => (
            StatusCode::OK,
            axum::Json(json!({"status": "ok", "node_id": ctx.me, "catalog_leader": leader})),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(
                json!({"status": "unavailable", "node_id": ctx.me, "reason": "no catalog leader known yet, or the cluster is still bootstrapping"}),
            ),
        ),
    }
}

/// Prometheus text: per-group Raft gauges sampled now, plus the request metrics.
pub async fn metrics(State(ctx): State<AppState>) -> impl IntoResponse {
    for g in ctx.groups.list() {
        let m = g.raft.metrics().borrow().clone();
        let group = g.id.0.to_string();
        let gauge =
            |name: &'static str, v: f64| metrics::gauge!(name, "group" => group.clone()).set(v);
        gauge("boxoffice_raft_term", m.current_term as f64);
        gauge(
            "boxoffice_raft_leader",
            m.current_leader.unwrap_or(0) as f64,
        );
        gauge(
            "boxoffice_raft_is_leader",
            f64::from(u8::from(m.current_leader == Some(ctx.me))),
        );
        gauge(
            "boxoffice_raft_applied_index",
            m.last_applied.map_or(0, |l| l.index) as f64,
        );
        gauge(
            "boxoffice_raft_last_log_index",
            m.last_log_index.unwrap_or(0) as f64,
        );
        gauge(
            "boxoffice_raft_snapshot_index",
            m.snapshot.map_or(0, |l| l.index) as f64,
        );
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.prometheus.render(),
    )
}
