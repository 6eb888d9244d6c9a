//! Payment methods: a user's cards as the payment gateway described them (brand,
//! last four digits, expiry, and the gateway's reference to charge). Card numbers
//! never reach the cluster; the gateway turned the client's card token into these.
//! A user's first method is the default; removing the default promotes the oldest
//! remaining one.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{key, reject, Catalog, CatalogRejection, CatalogResponse, PAYMENT_PREFIX};
use crate::domain::machine::encode_value;
use crate::domain::{ApplyCtx, Change};

/// Most payment methods per user.
pub const MAX_METHODS_PER_USER: usize = 20;
/// Longest billing address kept (its JSON text).
pub const MAX_BILLING_LEN: usize = 2048;

/// A stored payment method (persisted under `p{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    pub payment_method_id: Uuid,
    pub user_id: Uuid,
    /// `CARD`.
    pub kind: String,
    /// As the gateway names it: `Visa`, `Mastercard`, ...
    pub brand: String,
    pub last_four: String,
    pub exp_month: u8,
    pub exp_year: u16,
    /// What the gateway charges: a Stripe PaymentMethod id, or the simulated
    /// gateway's test token.
    pub gateway_ref: String,
    /// The billing address as the client sent it (JSON text), if any.
    pub billing_address: Option<String>,
    pub is_default: bool,
    pub created_ms: i64,
}

impl PaymentMethod {
    /// Checks what the catalog stores.
    pub fn validate(&self) -> Result<(), String> {
        if self.kind != "CARD" {
            return Err("only CARD payment methods exist".into());
        }
        if self.brand.is_empty() || self.brand.len() > 40 {
            return Err("card brand must be 1 to 40 bytes".into());
        }
        if self.last_four.len() != 4 || !self.last_four.bytes().all(|b| b.is_ascii_digit()) {
            return Err("card_last_four must be four digits".into());
        }
        if !(1..=12).contains(&self.exp_month) || !(2000..=2200).contains(&self.exp_year) {
            return Err("card expiry is out of range".into());
        }
        if self.gateway_ref.is_empty() || self.gateway_ref.len() > 255 {
            return Err("the gateway reference must be 1 to 255 bytes".into());
        }
        if self
            .billing_address
            .as_ref()
            .is_some_and(|b| b.len() > MAX_BILLING_LEN)
        {
            return Err(format!(
                "billing_address must be at most {MAX_BILLING_LEN} bytes of JSON"
            ));
        }
        Ok(())
    }

    /// `MM/YYYY`.
    pub fn expiry(&self) -> String {
        format!("{:02}/{}", self.exp_month, self.exp_year)
    }
}

impl Catalog {
    pub(super) fn put_payment_method(&mut self, pm: PaymentMethod, changes: &mut Vec<Change>) {
        changes.push(Change::Put(
            key(PAYMENT_PREFIX, pm.payment_method_id.as_bytes()),
            encode_value(&pm),
        ));
        self.methods_of
            .entry(pm.user_id)
            .or_default()
            .insert((pm.created_ms, pm.payment_method_id));
        self.records
            .payment_methods
            .insert(pm.payment_method_id, pm);
    }

    pub(super) fn add_payment_method(
        &mut self,
        mut pm: PaymentMethod,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> CatalogResponse {
        if let Err(msg) = pm.validate() {
            return reject(CatalogRejection::Invalid(msg));
        }
        if !self.records.users.contains_key(&pm.user_id) {
            return reject(CatalogRejection::UnknownUser);
        }
        if let Some(existing) = self.records.payment_methods.get(&pm.payment_method_id) {
            // Ids are derived from request ids: the same one again is a retry.
            return match existing.user_id == pm.user_id {
                true => CatalogResponse::PaymentMethodAdded(existing.clone()),
                false => reject(CatalogRejection::Invalid("payment method id taken".into())),
            };
        }
        let have = self.methods_of.get(&pm.user_id).map_or(0, |m| m.len());
        if have >= MAX_METHODS_PER_USER {
            return reject(CatalogRejection::TooManyPaymentMethods {
                limit: MAX_METHODS_PER_USER,
            });
        }
        pm.is_default = have == 0;
        pm.created_ms = ctx.now_ms;
        self.put_payment_method(pm.clone(), changes);
        CatalogResponse::PaymentMethodAdded(pm)
    }

    pub(super) fn remove_payment_method(
        &mut self,
        user_id: Uuid,
        id: Uuid,
        changes: &mut Vec<Change>,
    ) -> CatalogResponse {
        let Some(pm) = self
            .records
            .payment_methods
            .get(&id)
            .filter(|pm| pm.user_id == user_id)
            .cloned()
        else {
            return reject(CatalogRejection::UnknownPaymentMethod);
        };
        self.records.payment_methods.remove(&id);
        changes.push(Change::Delete(key(PAYMENT_PREFIX, id.as_bytes())));
        let mine = self.methods_of.entry(user_id).or_default();
        mine.remove(&(pm.created_ms, id));
        let next = mine.first().map(|(_, next)| *next);
        if mine.is_empty() {
            self.methods_of.remove(&user_id);
        }
        if pm.is_default {
            if let Some(mut promoted) =
                next.and_then(|n| self.records.payment_methods.get(&n).cloned())
            {
                promoted.is_default = true;
                self.put_payment_method(promoted, changes);
            }
        }
        CatalogResponse::PaymentMethodRemoved
    }

    /// One payment method by id.
    pub fn payment_method(&self, id: &Uuid) -> Option<&PaymentMethod> {
        self.records.payment_methods.get(id)
    }

    /// A user's payment methods, oldest first.
    pub fn payment_methods_of(&self, user: &Uuid) -> Vec<&PaymentMethod> {
        self.methods_of
            .get(user)
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| self.records.payment_methods.get(id))
            .collect()
    }
}
