//! A Stripe-compatible HTTP server for the tests, on a free loopback port: the
//! endpoints the Stripe gateway uses (payment methods from test tokens, customers
//! they attach to, payment intents with manual capture, capture, cancel,
//! retrieve, refunds), Stripe's rule that a payment method not attached to a
//! customer pays once, Stripe's
//! idempotency (a key replays its first response; a key reused on another
//! endpoint is a 400 `idempotency_error`), declines as 402 `card_error`, and a
//! ledger the tests read to check the money: every capture and refund, per order.
//! `fail_next(n)` answers the next `n` requests with a 500, as an outage would.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use serde_json::{json, Value};

/// Test tokens: (token, brand code, last four, declined when charged).
const TOKENS: &[(&str, &str, &str, bool)] = &[
    ("tok_visa", "visa", "4242", false),
    ("tok_visa_4242", "visa", "4242", false),
    ("tok_mastercard", "mastercard", "4444", false),
    ("tok_amex", "amex", "8431", false),
    ("tok_chargeDeclined", "visa", "0002", true),
    ("tok_chargeDeclinedInsufficientFunds", "visa", "9995", true),
];

/// A PaymentIntent as the ledger keeps it.
#[derive(Debug, Clone)]
pub struct Intent {
    pub id: String,
    pub order_id: String,
    pub amount: u64,
    pub currency: String,
    /// `requires_capture`, `succeeded` or `canceled`.
    pub status: String,
    pub captured: u64,
    pub refunded: u64,
    /// Successful capture calls (replays of a key not counted).
    pub captures: u32,
}

/// A payment method: its test card, the customer it is attached to, and whether
/// it paid already.
struct StoredMethod {
    card: &'static (&'static str, &'static str, &'static str, bool),
    customer: Option<String>,
    used: bool,
}

#[derive(Default)]
struct Ledger {
    methods: HashMap<String, StoredMethod>,
    intents: BTreeMap<String, Intent>,
    /// Idempotency key → (endpoint, status, body).
    replays: HashMap<String, (String, u16, Value)>,
    next_id: u64,
    fail_next: u32,
    requests: u64,
    creates_without_key: u64,
}

/// The running server.
pub struct MockStripe {
    pub addr: SocketAddr,
    ledger: Arc<Mutex<Ledger>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockStripe {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The secret key the server takes.
pub const SECRET: &str = "sk_test_boxoffice";

impl MockStripe {
    /// Starts the server on 127.0.0.1 and a free port.
    pub async fn start() -> anyhow::Result<Self> {
        let ledger: Arc<Mutex<Ledger>> = Arc::default();
        let app = Router::new()
            .route("/v1/payment_methods", post(payment_method))
            .route("/v1/customers", post(customer))
            .route("/v1/payment_intents", post(create_intent))
            .route("/v1/payment_intents/{id}", get(retrieve_intent))
            .route("/v1/payment_intents/{id}/capture", post(capture))
            .route("/v1/payment_intents/{id}/cancel", post(cancel))
            .route("/v1/refunds", post(refund))
            .layer(axum::middleware::from_fn_with_state(ledger.clone(), gate))
            .with_state(ledger.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, ledger, task })
    }

    /// The API base a gateway is given.
    pub fn base(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn with<T>(&self, f: impl FnOnce(&mut Ledger) -> T) -> T {
        f(&mut self.ledger.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Cancels the order's uncaptured authorizations, as Stripe does when one
    /// lapses (after about a week).
    pub fn lapse(&self, order_id: &str) {
        self.with(|l| {
            for i in l.intents.values_mut() {
                if i.order_id == order_id && i.status == "requires_capture" {
                    i.status = "canceled".into();
                }
            }
        });
    }

    /// Answers the next `n` requests with a 500.
    pub fn fail_next(&self, n: u32) {
        self.with(|l| l.fail_next = n);
    }

    /// Every payment intent.
    pub fn intents(&self) -> Vec<Intent> {
        self.with(|l| l.intents.values().cloned().collect())
    }

    /// The payment intents of an order (by its `metadata[order_id]`).
    pub fn intents_of(&self, order_id: &str) -> Vec<Intent> {
        self.intents()
            .into_iter()
            .filter(|i| i.order_id == order_id)
            .collect()
    }

    /// Cents captured, and cents refunded, over every intent.
    pub fn money(&self) -> (u64, u64) {
        self.with(|l| {
            l.intents
                .values()
                .fold((0, 0), |(c, r), i| (c + i.captured, r + i.refunded))
        })
    }

    /// Requests served.
    pub fn requests(&self) -> u64 {
        self.with(|l| l.requests)
    }

    /// Payment intents created without an idempotency key.
    pub fn creates_without_key(&self) -> u64 {
        self.with(|l| l.creates_without_key)
    }
}

fn error(status: u16, kind: &str, code: &str, message: &str) -> (u16, Value) {
    (
        status,
        json!({"error": {"type": kind, "code": code, "message": message}}),
    )
}

fn respond((status, body): (u16, Value)) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        Json(body),
    )
        .into_response()
}

/// Authentication, the outage switch, and idempotent replay.
async fn gate(
    State(ledger): State<Arc<Mutex<Ledger>>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if auth != format!("Bearer {SECRET}") {
        return respond(error(
            401,
            "invalid_request_error",
            "api_key_invalid",
            "Invalid API Key provided",
        ));
    }
    let endpoint = format!("{} {}", req.method(), req.uri().path());
    let key = idempotency_key(req.headers());
    {
        let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
        l.requests += 1;
        if l.fail_next > 0 {
            l.fail_next -= 1;
            return respond(error(500, "api_error", "", "simulated outage"));
        }
        if let Some(k) = key.as_ref().filter(|_| endpoint.starts_with("POST")) {
            match l.replays.get(k) {
                None => {
                    l.replays
                        .insert(k.clone(), (endpoint.clone(), 0, Value::Null));
                }
                // As Stripe: a request with a key still in flight is a conflict.
                Some((_, 0, _)) => {
                    return respond(error(
                        409,
                        "idempotency_error",
                        "",
                        "There is currently another in-progress request using this Idempotent Key",
                    ));
                }
                Some((was, _, _)) if *was != endpoint => {
                    return respond(error(
                        400,
                        "idempotency_error",
                        "",
                        "Keys for idempotent requests can only be used for the same endpoint",
                    ));
                }
                Some((_, status, body)) => return respond((*status, body.clone())),
            }
        }
    }
    let response = next.run(req).await;
    let Some(k) = key.filter(|_| endpoint.starts_with("POST")) else {
        return response;
    };
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    // Stripe saves a key's result unless the server failed.
    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    if status < 500 {
        l.replays.insert(k, (endpoint, status, body.clone()));
    } else {
        l.replays.remove(&k);
    }
    drop(l);
    respond((status, body))
}

fn idempotency_key(headers: &HeaderMap) -> Option<String> {
    headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn intent_json(i: &Intent, payment_method: &str) -> Value {
    json!({
        "id": i.id, "object": "payment_intent", "amount": i.amount,
        "amount_capturable": if i.status == "requires_capture" { i.amount } else { 0 },
        "amount_received": i.captured, "capture_method": "manual",
        "confirmation_method": "automatic", "created": 1_700_000_000, "currency": i.currency,
        "livemode": false, "metadata": {"order_id": i.order_id},
        "payment_method": payment_method, "payment_method_types": ["card"], "status": i.status,
    })
}

async fn payment_method(
    State(ledger): State<Arc<Mutex<Ledger>>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let token = f.get("card[token]").map(String::as_str).unwrap_or_default();
    let Some(card) = TOKENS.iter().find(|t| t.0 == token) else {
        return respond(error(
            400,
            "invalid_request_error",
            "resource_missing",
            &format!("No such token: '{token}'"),
        ));
    };
    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    l.next_id += 1;
    let id = format!("pm_{}", l.next_id);
    l.methods.insert(
        id.clone(),
        StoredMethod {
            card,
            customer: None,
            used: false,
        },
    );
    respond((
        200,
        json!({
            "id": id, "object": "payment_method", "type": "card", "created": 1_700_000_000,
            "livemode": false, "billing_details": {},
            "card": {"brand": card.1, "last4": card.2, "exp_month": 12, "exp_year": 2034,
                     "funding": "credit"},
        }),
    ))
}

async fn create_intent(
    State(ledger): State<Arc<Mutex<Ledger>>>,
    headers: HeaderMap,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    if idempotency_key(&headers).is_none() {
        l.creates_without_key += 1;
    }
    let amount = f.get("amount").and_then(|a| a.parse::<u64>().ok());
    let pm = f.get("payment_method").cloned().unwrap_or_default();
    let customer = f.get("customer").cloned();
    let (Some(amount), Some(method)) = (amount, l.methods.get_mut(&pm)) else {
        return respond(error(
            400,
            "invalid_request_error",
            "parameter_missing",
            "amount and a known payment_method are required",
        ));
    };
    // Stripe: an attached method pays only with its customer named; an
    // unattached one pays once.
    match (&method.customer, &customer) {
        (Some(owner), Some(named)) if owner == named => {}
        (Some(_), _) => {
            return respond(error(
                400,
                "invalid_request_error",
                "parameter_invalid",
                "The PaymentMethod is attached to a Customer: pass that customer",
            ))
        }
        (None, Some(_)) => {
            return respond(error(
                400,
                "invalid_request_error",
                "parameter_invalid",
                "The PaymentMethod is not attached to that Customer",
            ))
        }
        (None, None) if method.used => {
            return respond(error(
                400,
                "invalid_request_error",
                "payment_method_unexpected_state",
                "The PaymentMethod was previously used without being attached to a Customer",
            ))
        }
        (None, None) => method.used = true,
    }
    let card = method.card;
    if f.get("capture_method").map(String::as_str) != Some("manual")
        || f.get("confirm").map(String::as_str) != Some("true")
    {
        return respond(error(
            400,
            "invalid_request_error",
            "parameter_invalid",
            "this server only authorizes (capture_method=manual, confirm=true)",
        ));
    }
    if card.3 {
        return respond((
            402,
            json!({"error": {"type": "card_error", "code": "card_declined",
                             "decline_code": "generic_decline",
                             "message": "Your card was declined."}}),
        ));
    }
    l.next_id += 1;
    let i = Intent {
        id: format!("pi_{}", l.next_id),
        order_id: f.get("metadata[order_id]").cloned().unwrap_or_default(),
        amount,
        currency: f.get("currency").cloned().unwrap_or_default(),
        status: "requires_capture".into(),
        captured: 0,
        refunded: 0,
        captures: 0,
    };
    let body = intent_json(&i, &pm);
    l.intents.insert(i.id.clone(), i);
    respond((200, body))
}

async fn retrieve_intent(
    State(ledger): State<Arc<Mutex<Ledger>>>,
    Path(id): Path<String>,
) -> Response {
    let l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    match l.intents.get(&id) {
        Some(i) => respond((200, intent_json(i, ""))),
        None => respond(error(
            404,
            "invalid_request_error",
            "resource_missing",
            "No such payment_intent",
        )),
    }
}

/// Moves an intent from `requires_capture` to `to`, or a 400.
fn settle_intent(ledger: &Mutex<Ledger>, id: &str, to: &str) -> Response {
    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    let Some(i) = l.intents.get_mut(id) else {
        return respond(error(
            404,
            "invalid_request_error",
            "resource_missing",
            "No such payment_intent",
        ));
    };
    if i.status != "requires_capture" {
        let message = format!("This PaymentIntent's status is {}", i.status);
        return respond(error(
            400,
            "invalid_request_error",
            "payment_intent_unexpected_state",
            &message,
        ));
    }
    i.status = to.to_string();
    if to == "succeeded" {
        i.captured = i.amount;
        i.captures += 1;
    }
    let body = intent_json(i, "");
    respond((200, body))
}

async fn capture(State(ledger): State<Arc<Mutex<Ledger>>>, Path(id): Path<String>) -> Response {
    settle_intent(&ledger, &id, "succeeded")
}

async fn cancel(State(ledger): State<Arc<Mutex<Ledger>>>, Path(id): Path<String>) -> Response {
    settle_intent(&ledger, &id, "canceled")
}

async fn refund(
    State(ledger): State<Arc<Mutex<Ledger>>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    let id = f.get("payment_intent").cloned().unwrap_or_default();
    let next = l.next_id + 1;
    let Some(i) = l.intents.get_mut(&id) else {
        return respond(error(
            404,
            "invalid_request_error",
            "resource_missing",
            "No such payment_intent",
        ));
    };
    let left = i.captured - i.refunded;
    let amount = f
        .get("amount")
        .and_then(|a| a.parse::<u64>().ok())
        .unwrap_or(left);
    if i.status != "succeeded" || amount == 0 || amount > left {
        return respond(error(
            400,
            "invalid_request_error",
            "charge_already_refunded",
            "nothing (or not that much) to refund",
        ));
    }
    i.refunded += amount;
    let currency = i.currency.clone();
    l.next_id = next;
    respond((
        200,
        json!({"id": format!("re_{next}"), "object": "refund", "amount": amount,
               "created": 1_700_000_000, "currency": currency, "status": "succeeded",
               "payment_intent": id}),
    ))
}

async fn customer(
    State(ledger): State<Arc<Mutex<Ledger>>>,
    Form(f): Form<HashMap<String, String>>,
) -> Response {
    let mut l = ledger.lock().unwrap_or_else(|p| p.into_inner());
    l.next_id += 1;
    let id = format!("cus_{}", l.next_id);
    if let Some(pm) = f.get("payment_method") {
        match l.methods.get_mut(pm) {
            Some(m) if m.customer.is_none() => m.customer = Some(id.clone()),
            _ => {
                return respond(error(
                    400,
                    "invalid_request_error",
                    "resource_missing",
                    "No such PaymentMethod, or it is attached already",
                ))
            }
        }
    }
    respond((
        200,
        json!({"id": id, "object": "customer", "created": 1_700_000_000, "livemode": false}),
    ))
}
