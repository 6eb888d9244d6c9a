//! Operator endpoints (`X-Admin-Key`): venue creation and cluster introspection.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::Deserialize;
use serde_json::json;

use super::extract::{request_id_for, Admin, Json};
use super::{ApiError, AppState};
use crate::domain::catalog::{
    CatalogCommand, CatalogRejection, CatalogResponse, NewVenue, RowSpec, SectionSpec,
};
use crate::domain::{CommandBody, Proposal, Response};
use crate::raft::GroupId;

/// `POST /v1/admin/venues` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateVenue {
    name: String,
    city: String,
    #[serde(default)]
    state: String,
    country: String,
    #[serde(default)]
    timezone: String,
    sections: Vec<SectionBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SectionBody {
    name: String,
    rows: Vec<RowBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowBody {
    row: String,
    seats: u32,
}

/// Creates a venue in the catalog through the catalog leader.
pub async fn create_venue(
    State(ctx): State<AppState>,
    _admin: Admin,
    headers: HeaderMap,
    Json(body): Json<CreateVenue>,
) -> Result<impl IntoResponse, ApiError> {
    let venue = NewVenue {
        venue_id: uuid::Uuid::new_v4(),
        name: body.name,
        city: body.city,
        state: body.state,
        country: body.country,
        timezone: body.timezone,
        sections: body
            .sections
            .into_iter()
            .map(|s| SectionSpec {
                name: s.name,
                rows: s
                    .rows
                    .into_iter()
                    .map(|r| RowSpec {
                        row: r.row,
                        seats: r.seats,
                    })
                    .collect(),
            })
            .collect(),
    };
    venue.validate().map_err(ApiError::validation)?;
    let proposal = Proposal {
        request_id: request_id_for(&headers, "admin.venues")?,
        body: CommandBody::Catalog(CatalogCommand::CreateVenue(venue)),
    };
    let applied = ctx.propose(GroupId::CATALOG, proposal).await?;
    match applied.response {
        Response::Catalog(CatalogResponse::VenueCreated { venue_id, capacity }) => Ok((
            StatusCode::CREATED,
            axum::Json(json!({ "venue_id": venue_id, "capacity": capacity })),
        )),
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::Invalid(msg))) => {
            Err(ApiError::validation(msg))
        }
        Response::Catalog(CatalogResponse::Rejected(CatalogRejection::VenueExists(id))) => Err(
            ApiError::conflict("CONFLICT", format!("venue {id} already exists")),
        ),
        other => Err(ApiError::internal(format!(
            "unexpected catalog response {other:?}"
        ))),
    }
}

/// `GET /v1/admin/cluster`: nodes and their liveness, groups and their Raft state as
/// this node sees them.
pub async fn cluster(State(ctx): State<AppState>, _admin: Admin) -> impl IntoResponse {
    let nodes: Vec<_> = ctx
        .config
        .nodes
        .iter()
        .map(|n| {
            json!({
                "node_id": n.id,
                "peer_addr": n.peer_addr.to_string(),
                "http_addr": n.http_addr.to_string(),
                "state": ctx.liveness.state_of(n.id),
            })
        })
        .collect();
    let event_of = |group: u64| {
        ctx.groups.get(GroupId::CATALOG).and_then(|c| {
            let st = c.state.read();
            st.machine
                .catalog()
                .and_then(|c| c.event_of_group(group))
                .map(|e| e.spec.event_id)
        })
    };
    let groups: Vec<_> = ctx
        .groups
        .list()
        .iter()
        .map(|g| {
            let m = g.raft.metrics().borrow().clone();
            let membership = m.membership_config.membership();
            let voters: Vec<u64> = membership.voter_ids().collect();
            let learners: Vec<u64> = membership.learner_ids().collect();
            json!({
                "group_id": g.id.0,
                "event_id": event_of(g.id.0),
                "members": voters,
                "learners": learners,
                "leader": m.current_leader,
                "term": m.current_term,
                "state": format!("{:?}", m.state),
                "last_applied": m.last_applied.map(|l| l.index),
                "last_log_index": m.last_log_index,
                "snapshot_index": m.snapshot.map(|l| l.index),
                "purged_index": m.purged.map(|l| l.index),
                "quiesced": g.quiet.is_quiesced(),
            })
        })
        .collect();
    axum::Json(json!({ "node_id": ctx.me, "nodes": nodes, "groups": groups }))
}
