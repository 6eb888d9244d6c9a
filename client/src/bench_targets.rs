//! The systems `boxoffice bench holds` can drive, with the same workload, each the
//! way its users drive it: a Boxoffice cluster through its public API, PostgreSQL
//! (one transaction per hold that takes both seats only if both are free, through
//! a prepared statement), and etcd over its gRPC API (one transaction per hold:
//! both keys unset, then put both). Each sets up S seats, holds pair `p`
//! (seats 2p and 2p+1) all or nothing, and verifies at the end that every
//! acknowledged hold owns its seats and nothing else is held.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};

use crate::{row_label, sample_event, Client, NewVenue, Row, Section};

/// One hold attempt's result.
pub enum Outcome {
    /// Acknowledged, with the hold's id.
    Held(String),
    /// Refused: a seat was taken.
    Conflict,
    /// Refused at the door: a rate limit (429) or a node's admission (503
    /// `OVERLOADED`), both with `Retry-After`.
    RateLimited,
    /// No user with room under the ticket limit is free: try again shortly.
    Busy,
    /// Failed otherwise (no answer, an unexpected status, a database error),
    /// with a short kind for the run's tally of failures.
    Error(String),
}

/// Where the holds go.
pub enum Target {
    Boxoffice(Boxoffice),
    Postgres(Postgres),
    Etcd(Etcd),
}

impl Target {
    /// The system's name for the table.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Boxoffice(_) => "Boxoffice",
            Target::Postgres(_) => "PostgreSQL",
            Target::Etcd(_) => "etcd",
        }
    }

    /// Tries to hold pair `p` from worker `w`, through node (or endpoint) `pick`
    /// (modulo their number).
    pub async fn hold(&self, w: usize, p: usize, pick: usize) -> Outcome {
        match self {
            Target::Boxoffice(b) => b.hold(p, pick).await,
            Target::Postgres(pg) => pg.hold(w, p).await,
            Target::Etcd(e) => e.hold(p, pick).await,
        }
    }

    /// Checks that the acknowledged holds, `(hold id, pair)`, are exactly what the
    /// system holds.
    pub async fn verify(&self, acked: &[(String, usize)]) -> anyhow::Result<()> {
        match self {
            Target::Boxoffice(b) => b.verify(acked).await,
            Target::Postgres(pg) => pg.verify(acked).await,
            Target::Etcd(e) => e.verify(acked).await,
        }
    }
}

/// A Boxoffice cluster: one fresh event per run, users registered beforehand.
pub struct Boxoffice {
    clients: Arc<Vec<Client>>,
    event: String,
    seat_ids: Vec<String>,
    tokens: Vec<String>,
    /// Users with room under the limit, as (token index, holds so far).
    users: Mutex<VecDeque<(usize, u32)>>,
    holds_per_user: u32,
    /// The user of each acknowledged hold, by hold id.
    owners: Mutex<BTreeMap<String, usize>>,
}

/// A venue of `seats` seats (rows of 100; `seats` is even) for the run.
pub fn venue(seats: u32) -> NewVenue {
    let rows = (0..seats.div_ceil(100))
        .map(|i| Row {
            row: row_label(i),
            seats: (seats - i * 100).min(100),
        })
        .collect();
    NewVenue {
        name: format!("holds bench {seats}"),
        city: "Benchville".into(),
        state: "BV".into(),
        country: "US".into(),
        timezone: "UTC".into(),
        sections: vec![Section {
            name: "Floor".into(),
            rows,
        }],
    }
}

impl Boxoffice {
    /// Creates a fresh event of `seats` seats on sale.
    pub async fn setup(
        clients: Arc<Vec<Client>>,
        seats: u32,
        tokens: &[String],
        holds_per_user: u32,
    ) -> anyhow::Result<Self> {
        let v = clients[0].create_venue(&venue(seats), None).await?;
        let e = clients[0]
            .create_event(&sample_event("holds bench", &v.venue_id, &["Floor"]))
            .await?;
        clients[0].set_event_status(&e.event_id, "ON_SALE").await?;
        let map = clients[0].seat_map(&e.event_id).await?;
        let seat_ids: Vec<String> = Client::seats_of(&map)
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        ensure!(
            seat_ids.len() == seats as usize,
            "seat map has {} seats",
            seat_ids.len()
        );
        Ok(Self {
            clients,
            event: e.event_id,
            seat_ids,
            tokens: tokens.to_vec(),
            users: Mutex::new((0..tokens.len()).map(|u| (u, 0)).collect()),
            holds_per_user,
            owners: Mutex::default(),
        })
    }

    /// The event the run holds seats of.
    pub fn event(&self) -> &str {
        &self.event
    }

    fn pair(&self, p: usize) -> [&str; 2] {
        [&self.seat_ids[2 * p], &self.seat_ids[2 * p + 1]]
    }

    async fn hold(&self, p: usize, pick: usize) -> Outcome {
        let user = lock(&self.users).pop_front();
        let Some((u, n)) = user else {
            return Outcome::Busy;
        };
        let client = &self.clients[pick % self.clients.len()];
        let body = json!({"event_id": self.event, "seat_ids": self.pair(p)});
        let outcome = match client.reserve(&self.tokens[u], &body, None).await {
            Ok(r) => {
                let id = r["reservation_id"].as_str().unwrap_or_default().to_string();
                lock(&self.owners).insert(id.clone(), u);
                Outcome::Held(id)
            }
            Err(e) if e.status() == Some(409) || e.status() == Some(410) => Outcome::Conflict,
            Err(e) if matches!(e.status(), Some(429 | 503)) => Outcome::RateLimited,
            Err(e) => Outcome::Error(crate::bench_load::failure_kind(&e)),
        };
        let n = n + u32::from(matches!(outcome, Outcome::Held(_)));
        if n < self.holds_per_user {
            lock(&self.users).push_back((u, n));
        }
        outcome
    }

    /// Every acknowledged hold ACTIVE with its seats; every acknowledged seat
    /// RESERVED on every node's map.
    async fn verify(&self, acked: &[(String, usize)]) -> anyhow::Result<()> {
        let owners = lock(&self.owners).clone();
        let checks: Vec<anyhow::Result<()>> = stream::iter(acked.iter().enumerate())
            .map(|(i, (id, p))| {
                let client = self.clients[i % self.clients.len()].clone();
                let token = owners.get(id).map(|u| self.tokens[*u].clone());
                let want = json!(self.pair(*p));
                async move {
                    let token = token.context("hold without an owner")?;
                    let r = client.reservation(&token, id).await?;
                    ensure!(r["status"] == "ACTIVE", "hold {id} is {}", r["status"]);
                    ensure!(r["seat_ids"] == want, "hold {id} has other seats");
                    Ok(())
                }
            })
            .buffer_unordered(32)
            .collect()
            .await;
        checks.into_iter().collect::<anyhow::Result<Vec<()>>>()?;
        let want: Vec<&str> = acked.iter().flat_map(|(_, p)| self.pair(*p)).collect();
        for client in self.clients.iter() {
            let give_up = std::time::Instant::now() + Duration::from_secs(30);
            loop {
                let map = client.seat_map(&self.event).await?;
                let states: BTreeMap<String, String> = Client::seats_of(&map).into_iter().collect();
                let missing = want
                    .iter()
                    .filter(|s| states.get(**s).map(String::as_str) != Some("RESERVED"))
                    .count();
                let reserved = states.values().filter(|s| *s == "RESERVED").count();
                if missing == 0 && reserved == want.len() {
                    break;
                }
                ensure!(
                    std::time::Instant::now() < give_up,
                    "{} shows {missing} acknowledged seats not RESERVED, {reserved} RESERVED for {} acknowledged",
                    client.base(),
                    want.len()
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(())
    }
}

/// PostgreSQL: table `bench_seats(id int primary key, holder text)`, one
/// connection per worker, the hold's `UPDATE` prepared once on each (as drivers
/// cache prepared statements) rather than parsed per hold.
pub struct Postgres {
    conns: Vec<(tokio_postgres::Client, tokio_postgres::Statement)>,
}

impl Postgres {
    /// Connects `workers` sessions and creates `seats` free seats.
    pub async fn setup(url: &str, workers: usize, seats: u32) -> anyhow::Result<Self> {
        let mut conns = Vec::with_capacity(workers);
        for _ in 0..workers.max(1) {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .with_context(|| format!("connect to {url}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            conns.push(client);
        }
        conns[0]
            .batch_execute(&format!(
                "DROP TABLE IF EXISTS bench_seats;
                 CREATE TABLE bench_seats (id int PRIMARY KEY, holder text);
                 INSERT INTO bench_seats SELECT g, NULL FROM generate_series(0, {}) g;",
                seats.saturating_sub(1)
            ))
            .await?;
        let mut prepared = Vec::with_capacity(conns.len());
        for c in conns {
            let hold = c
                .prepare(
                    "UPDATE bench_seats SET holder = $1 WHERE id IN ($2, $3) AND holder IS NULL",
                )
                .await?;
            prepared.push((c, hold));
        }
        Ok(Self { conns: prepared })
    }

    /// One transaction: take both seats if both are free, else roll back.
    async fn hold(&self, w: usize, p: usize) -> Outcome {
        let (c, update) = &self.conns[w % self.conns.len()];
        let id = uuid::Uuid::new_v4().to_string();
        let (a, b) = (2 * p as i32, 2 * p as i32 + 1);
        let tx = async {
            c.batch_execute("BEGIN").await?;
            let n = c.execute(update, &[&id, &a, &b]).await?;
            c.batch_execute(if n == 2 { "COMMIT" } else { "ROLLBACK" })
                .await?;
            Ok::<bool, tokio_postgres::Error>(n == 2)
        };
        match tx.await {
            Ok(true) => Outcome::Held(id),
            Ok(false) => Outcome::Conflict,
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK").await;
                Outcome::Error(match e.code() {
                    Some(state) => format!("PostgreSQL {}", state.code()),
                    None => "PostgreSQL connection".into(),
                })
            }
        }
    }

    async fn verify(&self, acked: &[(String, usize)]) -> anyhow::Result<()> {
        let rows = self.conns[0]
            .0
            .query(
                "SELECT id, holder FROM bench_seats WHERE holder IS NOT NULL",
                &[],
            )
            .await?;
        let held: BTreeMap<i32, String> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        check_held(acked, |seat| held.get(&(seat as i32)).cloned(), held.len())
    }
}

/// Every acknowledged hold owns its two seats, and nothing else is held.
fn check_held(
    acked: &[(String, usize)],
    holder: impl Fn(usize) -> Option<String>,
    held_seats: usize,
) -> anyhow::Result<()> {
    for (id, p) in acked {
        for seat in [2 * p, 2 * p + 1] {
            let h = holder(seat);
            ensure!(
                h.as_deref() == Some(id.as_str()),
                "seat {seat} of hold {id} is held by {h:?}"
            );
        }
    }
    ensure!(
        held_seats == 2 * acked.len(),
        "{held_seats} seats held for {} acknowledged holds",
        acked.len()
    );
    Ok(())
}

/// How the generator talks to etcd.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum EtcdApi {
    /// etcd's gRPC API, as its own client uses it (one HTTP/2 connection per
    /// member, every client multiplexed on it).
    Grpc,
    /// The JSON gateway (`/v3/kv/txn`) over the same lean HTTP/1.1 transport as
    /// Boxoffice's holds; etcd turns each request into a gRPC call to itself.
    Json,
}

/// etcd, keys `<prefix><seat>`: each hold one `Txn` (both keys never created, then
/// put both) through the API chosen; the final check is one `Range` over gRPC.
pub struct Etcd {
    grpc: Vec<crate::etcd_grpc::KvClient>,
    /// The gateway's connections, for [`EtcdApi::Json`].
    wires: Vec<crate::wire::Wire>,
    api: EtcdApi,
    prefix: String,
}

impl Etcd {
    /// A fresh key prefix on the cluster at `endpoints`.
    pub async fn setup(endpoints: &[String], api: EtcdApi) -> anyhow::Result<Self> {
        ensure!(!endpoints.is_empty(), "no etcd endpoints");
        let timeout = Duration::from_secs(30);
        let grpc = endpoints
            .iter()
            .map(|u| crate::etcd_grpc::KvClient::new(u, timeout))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let wires = match api {
            EtcdApi::Grpc => Vec::new(),
            EtcdApi::Json => endpoints
                .iter()
                .map(|u| {
                    crate::wire::Wire::for_base(u, timeout)
                        .with_context(|| format!("{u} is not a plain http://host:port endpoint"))
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let prefix = format!("holds/{}/", uuid::Uuid::new_v4().simple());
        let e = Self {
            grpc,
            wires,
            api,
            prefix,
        };
        // Every member answers, and the prefix is empty.
        for (i, c) in e.grpc.iter().enumerate() {
            let r = c
                .range(e.prefix_range())
                .await
                .with_context(|| format!("etcd member {} does not answer", endpoints[i]))?;
            ensure!(r.kvs.is_empty(), "fresh prefix {} is not empty", e.prefix);
        }
        Ok(e)
    }

    fn key(&self, seat: usize) -> Vec<u8> {
        format!("{}{seat:06}", self.prefix).into_bytes()
    }

    /// Every key under the prefix.
    fn prefix_range(&self) -> crate::etcd_grpc::RangeRequest {
        let mut end = self.prefix.clone().into_bytes();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        crate::etcd_grpc::RangeRequest {
            key: self.prefix.clone().into_bytes(),
            range_end: end,
        }
    }

    /// One transaction: both keys never created, then put both.
    async fn hold(&self, p: usize, pick: usize) -> Outcome {
        let id = uuid::Uuid::new_v4().to_string();
        let keys = [self.key(2 * p), self.key(2 * p + 1)];
        match self.api {
            EtcdApi::Grpc => self.hold_grpc(keys, id, pick).await,
            EtcdApi::Json => self.hold_json(keys, id, pick).await,
        }
    }

    async fn hold_grpc(&self, keys: [Vec<u8>; 2], id: String, pick: usize) -> Outcome {
        use crate::etcd_grpc::{Compare, PutRequest, RequestOp, TxnRequest};
        let txn = TxnRequest {
            compare: keys
                .iter()
                .map(|k| Compare {
                    result: crate::etcd_grpc::RESULT_EQUAL,
                    target: crate::etcd_grpc::TARGET_CREATE,
                    key: k.clone(),
                    create_revision: Some(0),
                })
                .collect(),
            success: keys
                .into_iter()
                .map(|key| RequestOp {
                    request_put: Some(PutRequest {
                        key,
                        value: id.clone().into_bytes(),
                    }),
                })
                .collect(),
            failure: Vec::new(),
        };
        match self.grpc[pick % self.grpc.len()].txn(txn).await {
            Ok(r) if r.succeeded => Outcome::Held(id),
            Ok(_) => Outcome::Conflict,
            Err(status) => Outcome::Error(format!("etcd: gRPC {:?}", status.code())),
        }
    }

    async fn hold_json(&self, keys: [Vec<u8>; 2], id: String, pick: usize) -> Outcome {
        let value = B64.encode(&id);
        let body = json!({
            "compare": keys.iter().map(|k| json!({
                "key": B64.encode(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0"
            })).collect::<Vec<_>>(),
            "success": keys.iter().map(|k| json!({
                "request_put": { "key": B64.encode(k), "value": value }
            })).collect::<Vec<_>>(),
        });
        let Ok(body) = serde_json::to_vec(&body) else {
            return Outcome::Error("request not encoded".into());
        };
        let wire = &self.wires[pick % self.wires.len()];
        match wire.send("POST", "/v3/kv/txn", &[], Some(&body)).await {
            Ok(r) if r.status == 200 => match serde_json::from_slice::<Value>(&r.body) {
                Ok(v) if v["succeeded"] == true => Outcome::Held(id),
                Ok(_) => Outcome::Conflict,
                Err(_) => Outcome::Error("etcd: a 200 without JSON".into()),
            },
            Ok(r) => Outcome::Error(format!("etcd: HTTP {}", r.status)),
            Err(e) => Outcome::Error(format!(
                "etcd: {}",
                crate::bench_load::wire_failure_kind(&e)
            )),
        }
    }

    async fn verify(&self, acked: &[(String, usize)]) -> anyhow::Result<()> {
        let r = self.grpc[0]
            .range(self.prefix_range())
            .await
            .context("etcd: the final range")?;
        ensure!(!r.more, "etcd answered part of the range");
        let mut held = BTreeMap::new();
        for kv in r.kvs {
            let key = String::from_utf8(kv.key)?;
            let seat: usize = key.trim_start_matches(&self.prefix).parse()?;
            held.insert(seat, String::from_utf8(kv.value)?);
        }
        check_held(acked, |seat| held.get(&seat).cloned(), held.len())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
