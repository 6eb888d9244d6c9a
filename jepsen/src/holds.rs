//! The `holds` workload: clients hold and release seats of one small event
//! (heavy contention) through random nodes. After the run: the per-seat
//! linearizability check of the history, and the final state — every replica's
//! seat map agrees, every acknowledged hold not released is ACTIVE, and no seat is
//! in two of them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use boxoffice_client::{sample_event, Client, ClientError, NewVenue};
use boxoffice_tests::TestCluster;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde::Serialize;
use serde_json::{json, Value};

use crate::history::{History, OpType};
use crate::linear::{check_holds, Expiry, HoldsReport};

/// What every client needs: the event, its seats, and one user per client.
#[derive(Debug, Clone)]
pub struct Setup {
    pub event_id: String,
    pub group_id: u64,
    pub seats: Vec<String>,
    pub tokens: Vec<String>,
}

/// Creates a 24-seat event, puts it on sale, registers one user per client.
pub async fn setup(c: &TestCluster, clients: usize) -> Result<Setup> {
    let admin = c.client(c.ids()[0]);
    let venue = admin
        .create_venue(&NewVenue::sample("jepsen hall", 2, 12), None)
        .await?;
    let e = admin
        .create_event(&sample_event("jepsen night", &venue.venue_id, &["Floor"]))
        .await?;
    admin.set_event_status(&e.event_id, "ON_SALE").await?;
    let map = admin.seat_map(&e.event_id).await?;
    let seats = Client::seats_of(&map)
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    let mut tokens = Vec::new();
    for p in 0..clients {
        let email = format!("jepsen-{p}@example.com");
        admin.register(&email, "jepsen password", "Jepsen").await?;
        let login = admin.login(&email, "jepsen password").await?;
        tokens.push(
            login["access_token"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
        );
    }
    Ok(Setup {
        event_id: e.event_id,
        group_id: e.group_id,
        seats,
        tokens,
    })
}

/// A failed call's history entry: definitely not applied, or unknown.
fn outcome(e: &ClientError) -> (OpType, Value) {
    match e {
        ClientError::Api {
            status,
            code,
            details,
            ..
        } if (400..500).contains(status) => (
            OpType::Fail,
            json!({ "code": code, "taken": details["seat_ids"] }),
        ),
        ClientError::Transport(t) if t.is_connect() => {
            (OpType::Fail, json!({ "code": "UNREACHABLE" }))
        }
        other => (OpType::Info, json!({ "error": other.to_string() })),
    }
}

/// Tries `call` on a random node, again (up to 5 retries, backing off) while the
/// outcome is unknown (a timeout, a 5xx). After an unknown outcome only an answer
/// about the request itself (a 2xx, or a 4xx other than 429) settles it; a refused
/// connection or a rate limit on a retry says nothing about the first attempt, so
/// if no answer comes the result stays unknown.
async fn retry_unknown<T, F, Fut>(
    nodes: &[Client],
    rng: &mut StdRng,
    mut call: F,
) -> Result<T, ClientError>
where
    F: FnMut(Client) -> Fut,
    Fut: std::future::Future<Output = Result<T, ClientError>>,
{
    let answer = |e: &ClientError| matches!(e, ClientError::Api { status, .. } if (400..500).contains(status) && *status != 429);
    let mut unknown: Option<ClientError> = None;
    let mut attempt = 0u64;
    loop {
        let node = nodes[rng.gen_range(0..nodes.len())].clone();
        let e = match call(node).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let kind = outcome(&e).0;
        if answer(&e) || (unknown.is_none() && kind == OpType::Fail) {
            return Err(e);
        }
        // Here the outcome is unknown (this attempt's, or an earlier one this
        // attempt did not settle); an unknown is always on record past this point.
        if kind == OpType::Info {
            unknown = Some(e);
        }
        attempt += 1;
        if attempt > 5 {
            if let Some(e) = unknown.take() {
                return Err(e);
            }
        }
        tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
    }
}

/// One client until `deadline`: holds of 1–3 random seats (a quarter of them
/// abandoned, left to expire), releases and linearizable reads of its
/// acknowledged holds.
pub async fn client(
    p: usize,
    nodes: Vec<Client>,
    setup: Setup,
    history: History,
    mut rng: StdRng,
    deadline: Instant,
) {
    let token = &setup.tokens[p];
    let mut mine: Vec<(String, Vec<String>)> = Vec::new();
    let mut abandoned: Vec<(String, Vec<String>)> = Vec::new();
    let proc = p.to_string();
    while Instant::now() < deadline {
        let node = &nodes[rng.gen_range(0..nodes.len())];
        let readable = mine.len() + abandoned.len();
        if readable > 0 && rng.gen_bool(0.2) {
            let k = rng.gen_range(0..readable);
            let (id, seats) = mine.get(k).unwrap_or_else(|| &abandoned[k - mine.len()]);
            let value = json!({ "reservation": id, "seats": seats });
            history.record(&proc, OpType::Invoke, "read-reservation", value);
            match node.reservation(token, id).await {
                Ok(r) => history.record(
                    &proc,
                    OpType::Ok,
                    "read-reservation",
                    json!({ "status": r["status"] }),
                ),
                Err(e) => {
                    let (kind, v) = outcome(&e);
                    // A read that failed or timed out changed nothing: either way
                    // it is left out of the check.
                    history.record(&proc, kind, "read-reservation", v);
                }
            }
        } else if mine.is_empty() || rng.gen_bool(0.6) {
            let k = rng.gen_range(1..=3);
            let seats: Vec<String> = setup.seats.choose_multiple(&mut rng, k).cloned().collect();
            history.record(&proc, OpType::Invoke, "reserve", json!({ "seats": seats }));
            let body = json!({"event_id": setup.event_id, "seat_ids": seats});
            // Half the holds carry an Idempotency-Key, and an unknown outcome is
            // retried with it, as a careful client would: the first application
            // of the key decides, and a retry gets that answer. The other half
            // are sent once without a key, as most clients do: their conflicts
            // are answered from the leader's state without a log entry, a path
            // the checker must see under faults too.
            let result = if rng.gen_bool(0.5) {
                let key = uuid::Uuid::new_v4().to_string();
                retry_unknown(&nodes, &mut rng, |node| {
                    let (body, key) = (&body, &key);
                    async move { node.reserve(token, body, Some(key)).await }
                })
                .await
            } else {
                node.reserve(token, &body, None).await
            };
            match result {
                Ok(r) => {
                    let id = r["reservation_id"].as_str().unwrap_or_default().to_string();
                    history.record(
                        &proc,
                        OpType::Ok,
                        "reserve",
                        json!({ "reservation": id, "seats": r["seat_ids"] }),
                    );
                    // A fan who walks away: the hold is left to expire (and
                    // read now and then, around its expiry).
                    if rng.gen_bool(0.1) {
                        if abandoned.len() == 8 {
                            abandoned.remove(0);
                        }
                        abandoned.push((id, seats));
                    } else {
                        mine.push((id, seats));
                    }
                }
                Err(e) => {
                    let (kind, value) = outcome(&e);
                    history.record(&proc, kind, "reserve", value);
                    if kind == OpType::Fail && e.status().is_none() {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
        } else {
            let (id, seats) = mine.swap_remove(rng.gen_range(0..mine.len()));
            let value = json!({ "reservation": id, "seats": seats });
            history.record(&proc, OpType::Invoke, "release", value.clone());
            // Releases are idempotent: an unknown outcome is retried.
            let result = retry_unknown(&nodes, &mut rng, |node| {
                let (token, id) = (token, &id);
                async move { node.release(token, id).await }
            })
            .await;
            match result {
                Ok(()) => history.record(&proc, OpType::Ok, "release", value),
                Err(e) => {
                    let (kind, v) = outcome(&e);
                    history.record(&proc, kind, "release", v);
                    if kind != OpType::Ok {
                        // Not known to be released: it may still hold its seats.
                        mine.push((id, seats));
                    }
                }
            }
        }
    }
}

/// The final state after healing.
#[derive(Debug, Clone, Serialize)]
pub struct FinalState {
    /// Every replica's seat map is the same.
    pub maps_agree: bool,
    /// Acknowledged holds never released (by an acknowledged release) that are not
    /// ACTIVE now, though too young to have expired: lost holds.
    pub lost: Vec<String>,
    /// Acknowledged holds that expired (legitimately: old enough).
    pub expired: usize,
    /// Seats in two ACTIVE acknowledged holds.
    pub double_held: Vec<String>,
}

/// The checks of a holds run.
#[derive(Debug, Clone, Serialize)]
pub struct HoldsVerdict {
    pub linearizability: HoldsReport,
    pub final_state: FinalState,
    pub valid: bool,
}

/// Reads every replica's seat map and every acknowledged reservation into the
/// history (as `read` and `read-reservation` operations, which the
/// linearizability check then places after everything else), checks the
/// acknowledged holds against the healed cluster, and checks the history.
pub async fn check(
    c: &TestCluster,
    setup: &Setup,
    history: &History,
    expiry: Expiry,
) -> Result<HoldsVerdict> {
    let mut maps = BTreeSet::new();
    for id in c.ids() {
        let process = format!("final-{id}");
        history.record(&process, OpType::Invoke, "read", json!({ "node": id }));
        let map = c.client(id).seat_map(&setup.event_id).await?;
        let seats: BTreeMap<String, String> = Client::seats_of(&map).into_iter().collect();
        history.record(&process, OpType::Ok, "read", json!({ "seats": seats }));
        maps.insert(seats);
    }
    // Acknowledged holds (owner, invocation time, seats), and those whose release
    // was acknowledged.
    let mut acked: BTreeMap<String, (usize, u64, Value)> = BTreeMap::new();
    let mut released = BTreeSet::new();
    let mut last_invoke: BTreeMap<String, (Value, u64)> = BTreeMap::new();
    for op in &history.ops() {
        match (op.f.as_str(), op.kind) {
            (_, OpType::Invoke) => {
                last_invoke.insert(op.process.clone(), (op.value.clone(), op.time_ms));
            }
            ("reserve", OpType::Ok) => {
                let invoked = last_invoke.get(&op.process).map_or(0, |(_, t)| *t);
                if let (Some(id), Ok(p)) = (op.value["reservation"].as_str(), op.process.parse()) {
                    acked.insert(id.to_string(), (p, invoked, op.value["seats"].clone()));
                }
            }
            ("release", OpType::Ok) => {
                if let Some(id) = last_invoke
                    .get(&op.process)
                    .and_then(|(v, _)| v["reservation"].as_str())
                {
                    released.insert(id.to_string());
                }
            }
            _ => {}
        }
    }
    let reader = c.client(c.ids()[0]);
    let mut lost = Vec::new();
    let mut expired = 0;
    let mut seat_owner: BTreeMap<String, String> = BTreeMap::new();
    let mut double_held = Vec::new();
    for (id, (p, invoked, seats)) in &acked {
        let value = json!({ "reservation": id, "seats": seats });
        history.record("final", OpType::Invoke, "read-reservation", value);
        // A reservation the cluster no longer knows is a lost write, not a
        // reason to stop checking.
        let r = match reader.reservation(&setup.tokens[*p], id).await {
            Err(e) if e.status() == Some(404) => json!({ "status": "NOT_FOUND" }),
            other => other?,
        };
        history.record(
            "final",
            OpType::Ok,
            "read-reservation",
            json!({ "status": r["status"] }),
        );
        let active = r["status"] == "ACTIVE";
        if !released.contains(id) && !active {
            // Old enough to have expired by the time the read returned?
            if r["status"] == "EXPIRED" && history.now_ms() >= expiry.earliest(*invoked) {
                expired += 1;
            } else {
                lost.push(id.clone());
            }
        }
        if active {
            for s in r["seat_ids"].as_array().into_iter().flatten() {
                let s = s.as_str().unwrap_or_default().to_string();
                if seat_owner.insert(s.clone(), id.clone()).is_some() {
                    double_held.push(s);
                }
            }
        }
    }
    let linearizability = check_holds(&history.ops(), expiry);
    let final_state = FinalState {
        maps_agree: maps.len() == 1,
        lost,
        expired,
        double_held,
    };
    let valid = linearizability.valid
        && final_state.maps_agree
        && final_state.lost.is_empty()
        && final_state.double_held.is_empty();
    Ok(HoldsVerdict {
        linearizability,
        final_state,
        valid,
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use rand::SeedableRng;

    use super::*;

    fn api(status: u16) -> ClientError {
        ClientError::Api {
            status,
            code: "X".into(),
            message: String::new(),
            request_id: String::new(),
            details: Value::Null,
        }
    }

    /// Runs `retry_unknown` over scripted answers; returns its answer's status.
    async fn settle(script: Vec<u16>) -> Option<u16> {
        let nodes = vec![Client::new("http://127.0.0.1:9")];
        let mut rng = StdRng::seed_from_u64(1);
        let script = Mutex::new(script.into_iter());
        let r = retry_unknown(&nodes, &mut rng, |_| {
            let next = script.lock().unwrap_or_else(|p| p.into_inner()).next();
            async move {
                match next {
                    Some(200) | None => Ok(()),
                    Some(s) => Err(api(s)),
                }
            }
        })
        .await;
        r.err().and_then(|e| e.status())
    }

    #[tokio::test]
    async fn only_an_answer_settles_an_unknown_outcome() {
        // A definite refusal first time is a refusal.
        assert_eq!(settle(vec![409]).await, Some(409));
        assert_eq!(settle(vec![429]).await, Some(429));
        // Unknown, then the answer about the request.
        assert_eq!(settle(vec![503, 409]).await, Some(409));
        assert_eq!(settle(vec![503, 200]).await, None);
        // Unknown, then only non-answers (rate limits): still unknown.
        assert_eq!(settle(vec![503, 429, 429, 429, 429, 429]).await, Some(503));
    }
}
