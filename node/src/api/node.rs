//! Node endpoints: `/health` and `/metrics` (Prometheus text).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::raft::GroupId;

/// Whether this node can serve: it knows a catalog leader and the cluster exists.
#[derive(Debug, Serialize, ToSchema)]
pub struct Health {
    /// `ok` or `unavailable`.
    pub status: &'static str,
    pub node_id: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catalog_leader: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
}

/// `GET /health`: 200 when this node can serve (its catalog replica runs, knows a
/// leader and has applied the cluster's genesis), 503 otherwise, with the reason.
#[utoipa::path(get, path = "/health", operation_id = "health", tag = "node",
    responses(
        (status = 200, description = "The node serves", body = Health),
        (status = 503, description = "No catalog leader known yet, or still bootstrapping", body = Health),
    ))]
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
            axum::Json(Health {
                status: "ok",
                node_id: ctx.me,
                catalog_leader: Some(leader),
                reason: None,
            }),
        ),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(Health {
                status: "unavailable",
                node_id: ctx.me,
                catalog_leader: None,
                reason: Some("no catalog leader known yet, or the cluster is still bootstrapping"),
            }),
        ),
    }
}

/// The node's resident memory (Linux: `VmRSS` of `/proc/self/status`).
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// `GET /metrics`: Prometheus text, per-group Raft gauges sampled now, plus the
/// request metrics.
#[utoipa::path(get, path = "/metrics", operation_id = "metrics", tag = "node",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
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
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!("boxoffice_process_resident_bytes").set(bytes as f64);
    }
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        ctx.prometheus.render(),
    )
}
