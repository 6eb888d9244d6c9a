//! The catalog (group 0): the cluster's identity, its nodes, venues, and events with
//! their placement; users, their payment methods, and API keys.
//!
//! Keys (inside the machine's domain space): `g` the cluster's bootstrap id, `k` the
//! token-signing key, `n<id>` a node, `v<uuid>` a venue, `e<uuid>` an event,
//! `u<uuid>` a user, `a<sha256>` an API key, `p<uuid>` a payment method. Group ids,
//! per-node loads, the email index, the id-prefix index, the search index and each
//! user's payment methods are derived, never stored twice.

mod events;
mod payments;
mod placement;
pub mod search;
mod users;
mod venues;

pub use events::{Event, NewEvent, QueueSettings, TierSpec};
pub use payments::{PaymentMethod, MAX_BILLING_LEN, MAX_METHODS_PER_USER};
pub use placement::{place, NodeRecord};
pub use users::{check_password, normalize_email, NewUser, User};
pub use venues::{
    check_name, NewVenue, RowSpec, SectionSpec, Venue, MAX_NAME_LEN, MAX_SEATS_PER_ROW,
    MAX_VENUE_CAPACITY,
};

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::machine::encode_value;
use super::{ApplyCtx, Change, Table};
use crate::codec;
use crate::error::{Error, Result};

const GENESIS_KEY: &[u8] = b"g";
const TOKEN_KEY: &[u8] = b"k";
const USER_PREFIX: u8 = b'u';
const API_KEY_PREFIX: u8 = b'a';
const NODE_PREFIX: u8 = b'n';
const VENUE_PREFIX: u8 = b'v';
const EVENT_PREFIX: u8 = b'e';
const PAYMENT_PREFIX: u8 = b'p';

/// Catalog commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogCommand {
    /// Records the cluster's bootstrap id, first nodes and token-signing key (random
    /// bytes chosen by the proposing leader). Only the first one counts.
    Genesis {
        cluster_uuid: Uuid,
        nodes: Vec<NodeRecord>,
        token_key: Vec<u8>,
    },
    /// Adds a node, or records its new addresses.
    RegisterNode(NodeRecord),
    CreateVenue(NewVenue),
    RegisterUser(NewUser),
    /// Records an API key by the SHA-256 of its secret (the secret is never stored).
    CreateApiKey(ApiKey),
    /// Creates an event, assigns it the next group id and places that group on
    /// `replication_factor` nodes.
    CreateEvent {
        event: Box<NewEvent>,
        replication_factor: usize,
    },
    /// Adds a user's payment method (`is_default` and `created_ms` are set here).
    AddPaymentMethod(PaymentMethod),
    /// Removes one of the user's payment methods.
    RemovePaymentMethod {
        user_id: Uuid,
        payment_method_id: Uuid,
    },
}

/// Catalog outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogResponse {
    Genesis {
        cluster_uuid: Uuid,
    },
    NodeRegistered,
    VenueCreated {
        venue_id: Uuid,
        capacity: u64,
    },
    EventCreated {
        event_id: Uuid,
        group_id: u64,
        replicas: Vec<u64>,
    },
    UserRegistered {
        user_id: Uuid,
    },
    ApiKeyCreated {
        key_id: Uuid,
    },
    Rejected(CatalogRejection),
    PaymentMethodAdded(PaymentMethod),
    PaymentMethodRemoved,
}

/// Business refusals (replicated outcomes, not errors of the system).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogRejection {
    VenueExists(Uuid),
    EventExists(Uuid),
    UnknownVenue(Uuid),
    NotEnoughNodes {
        have: usize,
        need: usize,
    },
    EmailTaken,
    /// Another event's id starts with the same six bytes; pick another id.
    IdPrefixTaken,
    Invalid(String),
    UnknownUser,
    /// No such payment method among the user's.
    UnknownPaymentMethod,
    TooManyPaymentMethods {
        limit: usize,
    },
}

/// The catalog's replicated state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// What is persisted; everything else here is derived from it.
    records: Records,
    // Derived from `records.events`:
    by_group: BTreeMap<u64, Uuid>,
    /// Words of event names, artists, venue names and cities.
    search: search::SearchIndex,
    /// Events by id prefix: ids inside an event carry it (see `domain::ids`).
    by_prefix: BTreeMap<crate::domain::ids::Prefix, Uuid>,
    load: BTreeMap<u64, usize>,
    leads: BTreeMap<u64, usize>,
    // Derived from `records.users`:
    by_email: BTreeMap<String, Uuid>,
    // Derived from `records.payment_methods`: each user's, oldest first.
    methods_of: BTreeMap<Uuid, std::collections::BTreeSet<(i64, Uuid)>>,
}

impl Catalog {
    pub(super) fn apply(
        &mut self,
        cmd: CatalogCommand,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> CatalogResponse {
        match cmd {
            CatalogCommand::Genesis {
                cluster_uuid,
                nodes,
                token_key,
            } => {
                if self.records.cluster_uuid.is_none() {
                    self.records.cluster_uuid = Some(cluster_uuid);
                    changes.push(Change::Put(
                        GENESIS_KEY.to_vec(),
                        encode_value(&cluster_uuid),
                    ));
                    changes.push(Change::Put(TOKEN_KEY.to_vec(), encode_value(&token_key)));
                    self.records.token_key = Some(token_key);
                    for n in nodes {
                        self.put_node(n, changes);
                    }
                }
                CatalogResponse::Genesis {
                    cluster_uuid: self.records.cluster_uuid.unwrap_or(cluster_uuid),
                }
            }
            CatalogCommand::RegisterNode(n) => {
                if n.node_id == 0 {
                    return reject(CatalogRejection::Invalid("node id 0 is reserved".into()));
                }
                self.put_node(n, changes);
                CatalogResponse::NodeRegistered
            }
            CatalogCommand::CreateVenue(new) => self.create_venue(new, ctx, changes),
            CatalogCommand::RegisterUser(new) => self.register_user(new, ctx, changes),
            CatalogCommand::CreateApiKey(mut k) => {
                if let Err(msg) = super::catalog::check_name("name", &k.name, false) {
                    return reject(CatalogRejection::Invalid(msg));
                }
                if self.records.api_keys.contains_key(&k.key_hash) {
                    return reject(CatalogRejection::Invalid("this API key exists".into()));
                }
                k.created_ms = ctx.now_ms;
                changes.push(Change::Put(
                    key(API_KEY_PREFIX, &k.key_hash),
                    encode_value(&k),
                ));
                let key_id = k.key_id;
                self.records.api_keys.insert(k.key_hash, k);
                CatalogResponse::ApiKeyCreated { key_id }
            }
            CatalogCommand::CreateEvent {
                event,
                replication_factor,
            } => self.create_event(*event, replication_factor, ctx, changes),
            CatalogCommand::AddPaymentMethod(pm) => self.add_payment_method(pm, ctx, changes),
            CatalogCommand::RemovePaymentMethod {
                user_id,
                payment_method_id,
            } => self.remove_payment_method(user_id, payment_method_id, changes),
        }
    }

    fn put_node(&mut self, n: NodeRecord, changes: &mut Vec<Change>) {
        changes.push(Change::Put(
            key(NODE_PREFIX, &n.node_id.to_be_bytes()),
            encode_value(&n),
        ));
        self.records.nodes.insert(n.node_id, n);
    }

    fn create_venue(
        &mut self,
        new: NewVenue,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> CatalogResponse {
        if self.records.venues.contains_key(&new.venue_id) {
            return reject(CatalogRejection::VenueExists(new.venue_id));
        }
        let capacity = match new.validate() {
            Ok(c) => c,
            Err(msg) => return reject(CatalogRejection::Invalid(msg)),
        };
        let venue = Venue {
            venue_id: new.venue_id,
            name: new.name,
            city: new.city,
            state: new.state,
            country: new.country,
            timezone: new.timezone,
            sections: new.sections,
            capacity,
            created_ms: ctx.now_ms,
        };
        changes.push(Change::Put(
            key(VENUE_PREFIX, venue.venue_id.as_bytes()),
            encode_value(&venue),
        ));
        self.search
            .add_venue(venue.venue_id, &venue.name, &venue.city);
        self.records.venues.insert(venue.venue_id, Arc::new(venue));
        CatalogResponse::VenueCreated {
            venue_id: new.venue_id,
            capacity,
        }
    }

    fn create_event(
        &mut self,
        spec: NewEvent,
        r: usize,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> CatalogResponse {
        if self.records.events.contains_key(&spec.event_id) {
            return reject(CatalogRejection::EventExists(spec.event_id));
        }
        if self
            .by_prefix
            .contains_key(&crate::domain::ids::prefix(&spec.event_id))
        {
            return reject(CatalogRejection::IdPrefixTaken);
        }
        let Some(venue) = self.records.venues.get(&spec.venue_id) else {
            return reject(CatalogRejection::UnknownVenue(spec.venue_id));
        };
        if let Err(msg) = spec.validate().and_then(|()| spec.validate_against(venue)) {
            return reject(CatalogRejection::Invalid(msg));
        }
        let Some(replicas) = place(&self.records.nodes, &self.load, &self.leads, r) else {
            return reject(CatalogRejection::NotEnoughNodes {
                have: self.records.nodes.len(),
                need: r,
            });
        };
        let group_id = self.next_group_id();
        let event = Event {
            spec,
            group_id,
            replicas: replicas.clone(),
            created_ms: ctx.now_ms,
        };
        let event_id = event.spec.event_id;
        changes.push(Change::Put(
            key(EVENT_PREFIX, event_id.as_bytes()),
            encode_value(&event),
        ));
        self.index_event(&event);
        self.records.events.insert(event_id, Arc::new(event));
        CatalogResponse::EventCreated {
            event_id,
            group_id,
            replicas,
        }
    }

    fn register_user(
        &mut self,
        new: NewUser,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> CatalogResponse {
        if let Err(msg) = new.validate() {
            return reject(CatalogRejection::Invalid(msg));
        }
        if self.by_email.contains_key(&new.email) || self.records.users.contains_key(&new.user_id) {
            return reject(CatalogRejection::EmailTaken);
        }
        let user = User {
            user_id: new.user_id,
            email: new.email,
            name: new.name,
            password_hash: new.password_hash,
            created_ms: ctx.now_ms,
        };
        changes.push(Change::Put(
            key(USER_PREFIX, user.user_id.as_bytes()),
            encode_value(&user),
        ));
        self.by_email.insert(user.email.clone(), user.user_id);
        let user_id = user.user_id;
        self.records.users.insert(user_id, user);
        CatalogResponse::UserRegistered { user_id }
    }

    /// Group ids start at 1 (0 is the catalog) and are never reused.
    fn next_group_id(&self) -> u64 {
        self.by_group.keys().next_back().map_or(1, |g| g + 1)
    }

    fn index_event(&mut self, e: &Event) {
        self.by_group.insert(e.group_id, e.spec.event_id);
        self.search.add_event(e);
        self.by_prefix.insert(
            crate::domain::ids::prefix(&e.spec.event_id),
            e.spec.event_id,
        );
        for n in &e.replicas {
            *self.load.entry(*n).or_default() += 1;
        }
        if let Some(first) = e.replicas.first() {
            *self.leads.entry(*first).or_default() += 1;
        }
    }

    pub(super) fn restore(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        match k.first() {
            _ if k == GENESIS_KEY => self.records.cluster_uuid = Some(codec::decode(v)?),
            _ if k == TOKEN_KEY => self.records.token_key = Some(codec::decode(v)?),
            Some(&API_KEY_PREFIX) => {
                let k: ApiKey = codec::decode(v)?;
                self.records.api_keys.insert(k.key_hash, k);
            }
            Some(&USER_PREFIX) => {
                let u: User = codec::decode(v)?;
                self.by_email.insert(u.email.clone(), u.user_id);
                self.records.users.insert(u.user_id, u);
            }
            Some(&NODE_PREFIX) => {
                let n: NodeRecord = codec::decode(v)?;
                self.records.nodes.insert(n.node_id, n);
            }
            Some(&VENUE_PREFIX) => {
                let venue: Venue = codec::decode(v)?;
                self.search
                    .add_venue(venue.venue_id, &venue.name, &venue.city);
                self.records.venues.insert(venue.venue_id, Arc::new(venue));
            }
            Some(&EVENT_PREFIX) => {
                let e: Event = codec::decode(v)?;
                self.index_event(&e);
                self.records.events.insert(e.spec.event_id, Arc::new(e));
            }
            Some(&PAYMENT_PREFIX) => {
                let pm: PaymentMethod = codec::decode(v)?;
                self.methods_of
                    .entry(pm.user_id)
                    .or_default()
                    .insert((pm.created_ms, pm.payment_method_id));
                self.records
                    .payment_methods
                    .insert(pm.payment_method_id, pm);
            }
            _ => return Err(Error::Decode(format!("unknown catalog key {k:?}"))),
        }
        Ok(())
    }

    /// The persisted records as they are now, in O(1) of users, venues and events
    /// (see [`Table`]; the cluster's nodes are few and copied).
    pub(super) fn freeze(&self) -> Records {
        self.records.clone()
    }
}

/// The catalog's persisted records: the keys `apply` writes and `dump` lists.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Records {
    cluster_uuid: Option<Uuid>,
    token_key: Option<Vec<u8>>,
    nodes: BTreeMap<u64, NodeRecord>,
    users: Table<Uuid, User>,
    api_keys: Table<[u8; 32], ApiKey>,
    /// Venues and events are shared with readers (`Arc`): a node caches what it
    /// derives from one (an event's layout) and knows it is still current while
    /// the catalog holds the same allocation. A change replaces the `Arc`.
    venues: Table<Uuid, Arc<Venue>>,
    events: Table<Uuid, Arc<Event>>,
    payment_methods: Table<Uuid, PaymentMethod>,
}

impl Records {
    pub(crate) fn dump(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        if let Some(u) = &self.cluster_uuid {
            out.push((GENESIS_KEY.to_vec(), encode_value(u)));
        }
        if let Some(k) = &self.token_key {
            out.push((TOKEN_KEY.to_vec(), encode_value(k)));
        }
        for n in self.nodes.values() {
            out.push((key(NODE_PREFIX, &n.node_id.to_be_bytes()), encode_value(n)));
        }
        for k in self.api_keys.values() {
            out.push((key(API_KEY_PREFIX, &k.key_hash), encode_value(k)));
        }
        for u in self.users.values() {
            out.push((key(USER_PREFIX, u.user_id.as_bytes()), encode_value(u)));
        }
        for v in self.venues.values() {
            out.push((key(VENUE_PREFIX, v.venue_id.as_bytes()), encode_value(v)));
        }
        for e in self.events.values() {
            out.push((
                key(EVENT_PREFIX, e.spec.event_id.as_bytes()),
                encode_value(e),
            ));
        }
        for pm in self.payment_methods.values() {
            out.push((
                key(PAYMENT_PREFIX, pm.payment_method_id.as_bytes()),
                encode_value(pm),
            ));
        }
    }
}

impl Catalog {
    /// The cluster's bootstrap id, once the genesis command is applied.
    pub fn cluster_uuid(&self) -> Option<Uuid> {
        self.records.cluster_uuid
    }

    /// The key that signs the cluster's tokens, once the genesis command is applied.
    pub fn token_key(&self) -> Option<&[u8]> {
        self.records.token_key.as_deref()
    }

    /// An API key by the SHA-256 of its secret.
    pub fn api_key(&self, hash: &[u8; 32]) -> Option<&ApiKey> {
        self.records.api_keys.get(hash)
    }

    pub fn user(&self, id: &Uuid) -> Option<&User> {
        self.records.users.get(id)
    }

    /// A user by normalized email.
    pub fn user_by_email(&self, email: &str) -> Option<&User> {
        self.by_email
            .get(email)
            .and_then(|id| self.records.users.get(id))
    }

    /// Nodes the catalog knows, by id.
    pub fn nodes(&self) -> &BTreeMap<u64, NodeRecord> {
        &self.records.nodes
    }

    pub fn venue(&self, id: &Uuid) -> Option<&Venue> {
        self.records.venues.get(id).map(|v| &**v)
    }

    /// A venue as the catalog holds it: the same `Arc` until the venue changes.
    pub fn venue_shared(&self, id: &Uuid) -> Option<&Arc<Venue>> {
        self.records.venues.get(id)
    }

    /// Venues in id order.
    pub fn venues(&self) -> impl Iterator<Item = &Venue> {
        self.records.venues.values().map(|v| &**v)
    }

    pub fn venue_count(&self) -> usize {
        self.records.venues.len()
    }

    pub fn event(&self, id: &Uuid) -> Option<&Event> {
        self.records.events.get(id).map(|e| &**e)
    }

    /// An event as the catalog holds it: the same `Arc` until the event changes.
    pub fn event_shared(&self, id: &Uuid) -> Option<&Arc<Event>> {
        self.records.events.get(id)
    }

    /// The event whose inventory a group holds.
    pub fn event_of_group(&self, group_id: u64) -> Option<&Event> {
        self.by_group.get(&group_id).and_then(|id| self.event(id))
    }

    /// The event whose id (or an id inside it) starts with `prefix`.
    pub fn event_by_prefix(&self, prefix: &crate::domain::ids::Prefix) -> Option<&Event> {
        self.by_prefix.get(prefix).and_then(|id| self.event(id))
    }

    /// Events in id order.
    pub fn events(&self) -> impl Iterator<Item = &Event> {
        self.records.events.values().map(|e| &**e)
    }
}

/// An application's API key (`X-API-Key`), known by the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiKey {
    pub key_id: Uuid,
    pub name: String,
    pub key_hash: [u8; 32],
    pub created_ms: i64,
}

fn reject(r: CatalogRejection) -> CatalogResponse {
    CatalogResponse::Rejected(r)
}

fn key(prefix: u8, id: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + id.len());
    k.push(prefix);
    k.extend_from_slice(id);
    k
}

#[cfg(test)]
mod tests;
