//! Operator endpoints (`X-Admin-Key`): venue creation and cluster introspection.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ErrorBody;
use super::extract::{request_id_for, Admin, Json};
use super::{ApiError, AppState};
use crate::config::RateLimits;
use crate::domain::catalog::{
    CatalogCommand, CatalogRejection, CatalogResponse, NewVenue, RowSpec, SectionSpec,
};
use crate::domain::{CommandBody, Proposal, Response};
use crate::raft::GroupId;

/// `POST /v1/admin/venues` body: a venue and its seating plan.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateVenue {
    name: String,
    city: String,
    #[serde(default)]
    state: String,
    country: String,
    #[serde(default)]
    timezone: String,
    #[schema(min_items = 1)]
    sections: Vec<SectionBody>,
}

/// A section: named rows of numbered seats.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SectionBody {
    name: String,
    #[schema(min_items = 1)]
    rows: Vec<RowBody>,
}

/// A row: its label and how many seats it has (numbered from 1).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RowBody {
    row: String,
    #[schema(minimum = 1)]
    seats: u32,
}

/// A venue just created.
#[derive(Debug, Serialize, ToSchema)]
pub struct VenueCreated {
    pub venue_id: uuid::Uuid,
    /// Seats over all sections.
    pub capacity: u64,
}

/// Creates a venue in the catalog through the catalog leader.
#[utoipa::path(post, path = "/v1/admin/venues", operation_id = "createVenue", tag = "admin",
    security(("admin_key" = [])),
    request_body = CreateVenue,
    params(("Idempotency-Key" = Option<String>, Header, description = "Retries with the same key create one venue")),
    responses(
        (status = 201, description = "Venue created", body = VenueCreated),
        (status = 409, description = "The venue exists", body = ErrorBody),
    ))]
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
            axum::Json(VenueCreated { venue_id, capacity }),
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

/// A node of the cluster and its liveness as this node sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub node_id: u64,
    pub peer_addr: String,
    pub http_addr: String,
    /// `up` if it answered recently, else `down`.
    pub state: &'static str,
    /// Its clock minus the answering node's, in ms, from the last liveness probe it
    /// answered (give or take half that probe's round trip); null for the
    /// answering node itself and for a peer that never answered. The nodes'
    /// clocks must agree within a minute.
    pub clock_offset_ms: Option<i64>,
}

/// One of this node's rate limits (`[rate_limits]`) beside the spec's, so a load
/// generator can say when a cluster's config raises them.
#[derive(Debug, Serialize, ToSchema)]
pub struct RateLimitView {
    /// Its name in `[rate_limits]`: search, event_details, seat_map, reserve,
    /// queue_status or authenticated.
    pub scope: &'static str,
    /// Requests per client per window on this node.
    pub requests: u32,
    pub window_seconds: u64,
    /// The spec's limit for the same scope.
    pub spec_requests: u32,
    pub spec_window_seconds: u64,
}

/// A Raft group this node replicates.
#[derive(Debug, Serialize, ToSchema)]
pub struct GroupView {
    pub group_id: u64,
    /// The event whose inventory the group holds; null for the catalog (group 0).
    pub event_id: Option<uuid::Uuid>,
    pub members: Vec<u64>,
    pub learners: Vec<u64>,
    pub leader: Option<u64>,
    pub term: u64,
    /// Leader, Follower, Candidate or Learner.
    pub state: String,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    /// True while the group is idle and its heartbeats are off.
    pub quiesced: bool,
}

/// The cluster as one node sees it.
#[derive(Debug, Serialize, ToSchema)]
pub struct ClusterView {
    /// The node that answered.
    pub node_id: u64,
    pub nodes: Vec<NodeView>,
    pub groups: Vec<GroupView>,
    /// This node's rate limits and the spec's.
    pub rate_limits: Vec<RateLimitView>,
}

/// `GET /v1/admin/cluster`: nodes and their liveness, groups and their Raft state as
/// this node sees them.
#[utoipa::path(get, path = "/v1/admin/cluster", operation_id = "cluster", tag = "admin",
    security(("admin_key" = [])),
    responses((status = 200, description = "Nodes and groups as this node sees them", body = ClusterView)))]
pub async fn cluster(State(ctx): State<AppState>, _admin: Admin) -> impl IntoResponse {
    let nodes: Vec<_> = ctx
        .config
        .nodes
        .iter()
        .map(|n| NodeView {
            node_id: n.id,
            peer_addr: n.peer_addr.to_string(),
            http_addr: n.http_addr.to_string(),
            state: ctx.liveness.state_of(n.id),
            clock_offset_ms: ctx.liveness.clock_offset_ms(n.id),
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
            GroupView {
                group_id: g.id.0,
                event_id: event_of(g.id.0),
                members: membership.voter_ids().collect(),
                learners: membership.learner_ids().collect(),
                leader: m.current_leader,
                term: m.current_term,
                state: format!("{:?}", m.state),
                last_applied: m.last_applied.map(|l| l.index),
                last_log_index: m.last_log_index,
                snapshot_index: m.snapshot.map(|l| l.index),
                purged_index: m.purged.map(|l| l.index),
                quiesced: g.quiet.is_quiesced(),
            }
        })
        .collect();
    let spec = RateLimits::default().named();
    let rate_limits = ctx
        .config
        .rate_limits
        .named()
        .into_iter()
        .zip(spec)
        .map(|((scope, l), (_, s))| RateLimitView {
            scope,
            requests: l.requests,
            window_seconds: l.window_seconds,
            spec_requests: s.requests,
            spec_window_seconds: s.window_seconds,
        })
        .collect();
    axum::Json(ClusterView {
        node_id: ctx.me,
        nodes,
        groups,
        rate_limits,
    })
}
