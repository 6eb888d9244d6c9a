//! # boxoffice-client
//!
//! A typed async client of the Boxoffice REST API (any node serves any request), the
//! `boxoffice` CLI built on it, and the load generator behind `boxoffice bench`.

pub mod bench;
pub mod bench_holds;
pub mod bench_load;
pub mod bench_onsale;
pub mod bench_queue;
pub mod bench_realtime;
pub mod bench_targets;
pub mod etcd_grpc;
mod orders;
pub mod wire;

use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What a call can fail with: transport, or an API error in the spec's format.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("transport: {0}")]
    Transport(#[from] reqwest::Error),
    /// The lean transport of the load generators ([`wire`]).
    #[error("transport: {0}")]
    Wire(#[from] wire::WireError),
    #[error("{status} {code}: {message} (request {request_id})")]
    Api {
        status: u16,
        code: String,
        message: String,
        request_id: String,
        details: Value,
    },
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

impl ClientError {
    /// The API error code, if the server answered with one.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, if the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// A venue as `POST /v1/admin/venues` takes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewVenue {
    pub name: String,
    pub city: String,
    pub state: String,
    pub country: String,
    pub timezone: String,
    pub sections: Vec<Section>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Section {
    pub name: String,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Row {
    pub row: String,
    pub seats: u32,
}

impl NewVenue {
    /// A small venue for tests and benchmarks: one section of `rows` rows of `seats`.
    pub fn sample(name: &str, rows: u32, seats: u32) -> Self {
        NewVenue {
            name: name.to_string(),
            city: "Springfield".into(),
            state: "IL".into(),
            country: "US".into(),
            timezone: "America/Chicago".into(),
            sections: vec![Section {
                name: "Floor".into(),
                rows: (0..rows)
                    .map(|i| Row {
                        row: row_label(i),
                        seats,
                    })
                    .collect(),
            }],
        }
    }
}

/// Row labels A..Z, AA, AB, ...
pub fn row_label(mut i: u32) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'A' + (i % 26) as u8);
        if i < 26 {
            break;
        }
        i = i / 26 - 1;
    }
    s.reverse();
    String::from_utf8(s).unwrap_or_default()
}

/// `201` of venue creation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct VenueCreated {
    pub venue_id: String,
    pub capacity: u64,
}

/// `201` of event creation.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EventCreated {
    pub event_id: String,
    pub group_id: u64,
    pub replicas: Vec<u64>,
    pub leader: Option<u64>,
}

/// A minimal event body for `POST /v1/admin/events`: one tier over every given
/// section, on sale now, the show in a month.
pub fn sample_event(name: &str, venue_id: &str, sections: &[&str]) -> Value {
    serde_json::json!({
        "name": name,
        "artist": "The Test Band",
        "description": "",
        "category": "Concert",
        "venue_id": venue_id,
        "date": "2030-08-15T19:00:00Z",
        "doors_open": "2030-08-15T18:00:00Z",
        "on_sale_date": "2030-06-03T10:00:00Z",
        "presale_start": "2030-06-01T10:00:00Z",
        "pricing_tiers": [{"name": "Standard", "price": 150.00, "fees": 22.50, "sections": sections}],
    })
}

/// `GET /v1/venues`.
#[derive(Debug, Clone, Deserialize)]
pub struct VenueList {
    pub venues: Vec<Value>,
    pub applied_index: u64,
}

/// `GET /v1/admin/cluster`.
#[derive(Debug, Clone, Deserialize)]
pub struct ClusterView {
    pub node_id: u64,
    pub nodes: Vec<NodeView>,
    pub groups: Vec<GroupView>,
    /// The answering node's rate limits beside the spec's (empty from a node that
    /// does not report them).
    #[serde(default)]
    pub rate_limits: Vec<RateLimitView>,
}

/// One rate limit of a node (`[rate_limits]`) and the spec's for the same scope.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct RateLimitView {
    pub scope: String,
    pub requests: u32,
    pub window_seconds: u64,
    pub spec_requests: u32,
    pub spec_window_seconds: u64,
}

impl RateLimitView {
    /// Allows a client more requests per second than the spec's limit does.
    pub fn raised(&self) -> bool {
        // requests / window > spec_requests / spec_window, without division.
        u128::from(self.requests) * u128::from(self.spec_window_seconds)
            > u128::from(self.spec_requests) * u128::from(self.window_seconds)
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct NodeView {
    pub node_id: u64,
    pub peer_addr: String,
    pub http_addr: String,
    pub state: String,
    /// Its clock minus the answering node's (ms); null for the answering node.
    #[serde(default)]
    pub clock_offset_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct GroupView {
    pub group_id: u64,
    pub event_id: Option<String>,
    pub members: Vec<u64>,
    pub learners: Vec<u64>,
    pub leader: Option<u64>,
    pub term: u64,
    pub state: String,
    pub last_applied: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub purged_index: Option<u64>,
    #[serde(default)]
    pub quiesced: bool,
}

impl ClusterView {
    /// The view of one group.
    pub fn group(&self, id: u64) -> Option<&GroupView> {
        self.groups.iter().find(|g| g.group_id == id)
    }
}

/// A client of one node's REST port.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    admin_key: Option<String>,
    /// The lean transport for the hot requests of `boxoffice bench`, if enabled.
    wire: Option<Arc<wire::Wire>>,
}

impl Client {
    /// A client of the node at `base` (e.g. `http://127.0.0.1:7001`).
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(256)
            .tcp_nodelay(true)
            .build()
            .unwrap_or_default();
        Self::with_http(http, base)
    }

    /// A client sharing an existing connection pool.
    pub fn with_http(http: reqwest::Client, base: impl Into<String>) -> Self {
        Self {
            http,
            base: base.into().trim_end_matches('/').to_string(),
            admin_key: None,
            wire: None,
        }
    }

    /// Sends holds, releases, queue joins and status polls over [`wire::Wire`]
    /// (a load generator's hot requests at a fraction of reqwest's CPU) when the
    /// base is plain `http://host:port`; everything else still goes by reqwest.
    pub fn with_wire(mut self) -> Self {
        self.wire = wire::Wire::for_base(&self.base, Duration::from_secs(30)).map(Arc::new);
        self
    }

    /// Sends `X-Admin-Key` on operator calls.
    pub fn with_admin_key(mut self, key: impl Into<String>) -> Self {
        self.admin_key = Some(key.into());
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn admin(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.admin_key {
            Some(k) => rb.header("x-admin-key", k),
            None => rb,
        }
    }

    /// A 204, or the error the body describes.
    async fn no_content(resp: reqwest::Response) -> Result<()> {
        if resp.status().as_u16() == 204 {
            return Ok(());
        }
        Self::parse::<Value>(resp).await.map(|_| ())
    }

    async fn parse<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T> {
        let status = resp.status().as_u16();
        let text = resp.text().await?;
        Self::parse_text(status, &text)
    }

    /// A success body as `T`, or the API error an error body describes.
    fn parse_text<T: DeserializeOwned>(status: u16, text: &str) -> Result<T> {
        if (200..300).contains(&status) {
            return serde_json::from_str(text)
                .map_err(|e| ClientError::Unexpected(format!("{e}: {text}")));
        }
        let v: Value = serde_json::from_str(text).unwrap_or(Value::Null);
        let err = &v["error"];
        Err(ClientError::Api {
            status,
            code: err["code"].as_str().unwrap_or("UNKNOWN").to_string(),
            message: err["message"].as_str().unwrap_or(text).to_string(),
            request_id: err["request_id"].as_str().unwrap_or("").to_string(),
            details: err["details"].clone(),
        })
    }

    /// `GET /health` (a 503 comes back as an error).
    pub async fn health(&self) -> Result<Value> {
        let resp = self
            .http
            .get(format!("{}/health", self.base))
            .send()
            .await?;
        if resp.status().is_success() {
            Ok(resp.json().await?)
        } else {
            Err(ClientError::Api {
                status: resp.status().as_u16(),
                code: "UNAVAILABLE".into(),
                message: resp.text().await.unwrap_or_default(),
                request_id: String::new(),
                details: Value::Null,
            })
        }
    }

    /// `GET /metrics` as Prometheus text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.base))
            .send()
            .await?
            .text()
            .await?)
    }

    /// `GET /v1/admin/cluster`.
    pub async fn cluster(&self) -> Result<ClusterView> {
        let rb = self.admin(self.http.get(format!("{}/v1/admin/cluster", self.base)));
        Self::parse(rb.send().await?).await
    }

    /// `POST /v1/admin/venues`, optionally with an `Idempotency-Key`.
    pub async fn create_venue(
        &self,
        venue: &NewVenue,
        idempotency_key: Option<&str>,
    ) -> Result<VenueCreated> {
        let mut rb = self.admin(
            self.http
                .post(format!("{}/v1/admin/venues", self.base))
                .json(venue),
        );
        if let Some(k) = idempotency_key {
            rb = rb.header("idempotency-key", k);
        }
        Self::parse(rb.send().await?).await
    }

    /// `POST /v1/admin/events` with a JSON body.
    pub async fn create_event(&self, body: &Value) -> Result<EventCreated> {
        let rb = self.admin(
            self.http
                .post(format!("{}/v1/admin/events", self.base))
                .json(body),
        );
        Self::parse(rb.send().await?).await
    }

    /// `PATCH /v1/admin/events/{id}` with a new sale status (`ON_SALE`, `PAUSED`,
    /// `CANCELLED`).
    pub async fn set_event_status(&self, event_id: &str, status: &str) -> Result<Value> {
        let rb = self
            .admin(
                self.http
                    .patch(format!("{}/v1/admin/events/{event_id}", self.base)),
            )
            .json(&serde_json::json!({ "status": status }));
        Self::parse(rb.send().await?).await
    }

    /// `GET /v1/admin/events/{id}?consistency=linearizable|local`.
    pub async fn event_admin(&self, event_id: &str, consistency: &str) -> Result<Value> {
        let rb = self.admin(
            self.http
                .get(format!("{}/v1/admin/events/{event_id}", self.base))
                .query(&[("consistency", consistency)]),
        );
        Self::parse(rb.send().await?).await
    }

    /// `POST /v1/auth/register`.
    pub async fn register(&self, email: &str, password: &str, name: &str) -> Result<Value> {
        let body = serde_json::json!({ "email": email, "password": password, "name": name });
        Self::parse(
            self.http
                .post(format!("{}/v1/auth/register", self.base))
                .json(&body)
                .send()
                .await?,
        )
        .await
    }

    /// `POST /v1/auth/login`; returns the body (`access_token`, `expires_in`, ...).
    pub async fn login(&self, email: &str, password: &str) -> Result<Value> {
        let body = serde_json::json!({ "email": email, "password": password });
        Self::parse(
            self.http
                .post(format!("{}/v1/auth/login", self.base))
                .json(&body)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /v1/me` with a bearer token.
    pub async fn me(&self, token: &str) -> Result<Value> {
        let rb = self
            .http
            .get(format!("{}/v1/me", self.base))
            .bearer_auth(token);
        Self::parse(rb.send().await?).await
    }

    /// `GET /v1/venues` (this node's local catalog replica).
    pub async fn venues(&self) -> Result<VenueList> {
        Self::parse(
            self.http
                .get(format!("{}/v1/venues", self.base))
                .send()
                .await?,
        )
        .await
    }

    /// `GET /v1/venues/{id}`.
    pub async fn venue(&self, id: &str) -> Result<Value> {
        Self::parse(
            self.http
                .get(format!("{}/v1/venues/{id}", self.base))
                .send()
                .await?,
        )
        .await
    }

    /// `GET /v1/events/search` with raw query parameters.
    pub async fn search(&self, params: &[(&str, &str)]) -> Result<Value> {
        Self::parse(
            self.http
                .get(format!("{}/v1/events/search", self.base))
                .query(params)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /v1/events/{id}`.
    pub async fn event(&self, id: &str) -> Result<Value> {
        Self::parse(
            self.http
                .get(format!("{}/v1/events/{id}", self.base))
                .send()
                .await?,
        )
        .await
    }

    /// A GET of `path` (with its query) whose JSON body is checked but not kept:
    /// for load generators, so parsing large seat maps does not become their
    /// bottleneck.
    pub async fn get_discard(&self, path: &str) -> Result<()> {
        Self::parse::<serde::de::IgnoredAny>(
            self.http.get(format!("{}{path}", self.base)).send().await?,
        )
        .await
        .map(|_| ())
    }

    /// `GET /v1/events/{id}/seats`.
    pub async fn seat_map(&self, id: &str) -> Result<Value> {
        Self::parse(
            self.http
                .get(format!("{}/v1/events/{id}/seats", self.base))
                .send()
                .await?,
        )
        .await
    }

    /// `POST /v1/seats/reserve` with a raw body and an optional Idempotency-Key.
    pub async fn reserve(
        &self,
        token: &str,
        body: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<Value> {
        if let Some(w) = &self.wire {
            let key = idempotency_key.map(|k| ("idempotency-key", k));
            return wire::call(w, "POST", "/v1/seats/reserve", Some(token), key, Some(body)).await;
        }
        let mut rb = self
            .http
            .post(format!("{}/v1/seats/reserve", self.base))
            .bearer_auth(token)
            .json(body);
        if let Some(k) = idempotency_key {
            rb = rb.header("idempotency-key", k);
        }
        Self::parse(rb.send().await?).await
    }

    /// `GET /v1/reservations/{id}`.
    pub async fn reservation(&self, token: &str, id: &str) -> Result<Value> {
        Self::parse(
            self.http
                .get(format!("{}/v1/reservations/{id}", self.base))
                .bearer_auth(token)
                .send()
                .await?,
        )
        .await
    }

    /// `DELETE /v1/reservations/{id}` (204 → `Ok(())`).
    pub async fn release(&self, token: &str, id: &str) -> Result<()> {
        if let Some(w) = &self.wire {
            let path = format!("/v1/reservations/{id}");
            return wire::call_no_content(w, "DELETE", &path, Some(token)).await;
        }
        let resp = self
            .http
            .delete(format!("{}/v1/reservations/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        Self::no_content(resp).await
    }

    /// `POST /v1/queue/join` with a session token and an optional `X-Device-ID`.
    pub async fn join_queue(
        &self,
        token: &str,
        body: &Value,
        device: Option<&str>,
    ) -> Result<Value> {
        if let Some(w) = &self.wire {
            let device = device.map(|d| ("x-device-id", d));
            return wire::call(w, "POST", "/v1/queue/join", Some(token), device, Some(body)).await;
        }
        let mut rb = self
            .http
            .post(format!("{}/v1/queue/join", self.base))
            .bearer_auth(token)
            .json(body);
        if let Some(d) = device {
            rb = rb.header("x-device-id", d);
        }
        Self::parse(rb.send().await?).await
    }

    /// `GET /v1/queue/status?queue_token=...`.
    pub async fn queue_status(&self, queue_token: &str) -> Result<Value> {
        if let Some(w) = &self.wire {
            let path = format!(
                "/v1/queue/status?queue_token={}",
                wire::query_value(queue_token)
            );
            return wire::call(w, "GET", &path, None, None, None).await;
        }
        Self::parse(
            self.http
                .get(format!("{}/v1/queue/status", self.base))
                .query(&[("queue_token", queue_token)])
                .send()
                .await?,
        )
        .await
    }

    /// `DELETE /v1/queue/leave` with a queue (or access) token.
    pub async fn leave_queue(&self, token: &str) -> Result<()> {
        let resp = self
            .http
            .delete(format!("{}/v1/queue/leave", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        Self::no_content(resp).await
    }

    /// `POST /v1/payment-methods`.
    pub async fn add_payment_method(&self, token: &str, body: &Value) -> Result<Value> {
        Self::parse(
            self.http
                .post(format!("{}/v1/payment-methods", self.base))
                .bearer_auth(token)
                .json(body)
                .send()
                .await?,
        )
        .await
    }

    /// `GET /v1/payment-methods`.
    pub async fn payment_methods(&self, token: &str) -> Result<Value> {
        Self::parse(
            self.http
                .get(format!("{}/v1/payment-methods", self.base))
                .bearer_auth(token)
                .send()
                .await?,
        )
        .await
    }

    /// `DELETE /v1/payment-methods/{id}`.
    pub async fn delete_payment_method(&self, token: &str, id: &str) -> Result<()> {
        let resp = self
            .http
            .delete(format!("{}/v1/payment-methods/{id}", self.base))
            .bearer_auth(token)
            .send()
            .await?;
        Self::no_content(resp).await
    }

    /// Every seat id of a seat map, with its status, in map order.
    pub fn seats_of(map: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for section in map["sections"].as_array().into_iter().flatten() {
            for row in section["rows"].as_array().into_iter().flatten() {
                for seat in row["seats"].as_array().into_iter().flatten() {
                    out.push((
                        seat["seat_id"].as_str().unwrap_or_default().to_string(),
                        seat["status"].as_str().unwrap_or_default().to_string(),
                    ));
                }
            }
        }
        out
    }
}
