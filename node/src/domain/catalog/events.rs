//! Events as the catalog records them: what is on, where, when, at what prices,
//! and which Raft group (on which nodes) holds its inventory.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::venues::{check_name, Venue};

/// Most pricing tiers per event.
pub const MAX_TIERS: usize = 50;
/// Longest description (characters).
pub const MAX_DESCRIPTION_LEN: usize = 10_000;

/// A pricing tier: a price and fees per seat for a set of the venue's sections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierSpec {
    pub tier_id: Uuid,
    pub name: String,
    pub price_cents: u64,
    pub fees_cents: u64,
    pub sections: Vec<String>,
}

/// Largest waiting room.
pub const MAX_QUEUE_SIZE: u64 = 10_000_000;
/// Fastest admission rate.
pub const MAX_ADMISSION_PER_SECOND: u32 = 100_000;
/// Most shoppers at once.
pub const MAX_ACTIVE_SHOPPERS: u32 = 1_000_000;
/// Longest access window (a day).
pub const MAX_ACCESS_WINDOW_MINUTES: u32 = 1_440;

/// The waiting room's settings (enforced by the event's group: `domain::inventory::queue`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueSettings {
    pub enabled: bool,
    pub max_size: u64,
    pub admission_per_second: u32,
    pub max_active_shoppers: u32,
    pub access_window_minutes: u32,
}

/// An event as an operator describes it. Times are ms since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    pub event_id: Uuid,
    pub name: String,
    pub artist: String,
    pub description: String,
    pub category: String,
    pub venue_id: Uuid,
    pub date_ms: i64,
    pub doors_open_ms: Option<i64>,
    pub on_sale_ms: i64,
    pub presale_start_ms: Option<i64>,
    pub pricing_tiers: Vec<TierSpec>,
    pub queue: Option<QueueSettings>,
    pub image_url: Option<String>,
}

/// A stored event with its placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub spec: NewEvent,
    /// The Raft group holding this event's inventory.
    pub group_id: u64,
    /// Nodes replicating the group; the first initializes it first.
    pub replicas: Vec<u64>,
    pub created_ms: i64,
}

impl NewEvent {
    /// Checks the event on its own (what the API can check before proposing).
    pub fn validate(&self) -> Result<(), String> {
        for (field, value) in [
            ("name", &self.name),
            ("artist", &self.artist),
            ("category", &self.category),
        ] {
            check_name(field, value, false)?;
        }
        if self.description.chars().count() > MAX_DESCRIPTION_LEN {
            return Err(format!(
                "description is longer than {MAX_DESCRIPTION_LEN} characters"
            ));
        }
        if let Some(url) = &self.image_url {
            if url.len() > 2048 || !(url.starts_with("https://") || url.starts_with("http://")) {
                return Err("image_url must be an http(s) URL of at most 2048 bytes".into());
            }
        }
        if self.on_sale_ms > self.date_ms {
            return Err("on_sale_date must not be after the event's date".into());
        }
        if let Some(p) = self.presale_start_ms {
            if p > self.on_sale_ms {
                return Err("presale_start must not be after on_sale_date".into());
            }
        }
        if let Some(d) = self.doors_open_ms {
            if d > self.date_ms {
                return Err("doors_open must not be after the event's date".into());
            }
        }
        if self.pricing_tiers.is_empty() || self.pricing_tiers.len() > MAX_TIERS {
            return Err(format!("pricing_tiers must hold 1 to {MAX_TIERS} tiers"));
        }
        let mut names = BTreeSet::new();
        for t in &self.pricing_tiers {
            check_name("tier name", &t.name, false)?;
            if !names.insert(t.name.to_lowercase()) {
                return Err(format!("tier {:?} appears twice", t.name));
            }
            if t.sections.is_empty() {
                return Err(format!("tier {:?} names no sections", t.name));
            }
        }
        if let Some(q) = &self.queue {
            if q.enabled
                && (q.max_size == 0
                    || q.admission_per_second == 0
                    || q.max_active_shoppers == 0
                    || q.access_window_minutes == 0)
            {
                return Err("an enabled queue needs max_size, admission_per_second, max_active_shoppers and access_window_minutes above 0".into());
            }
            if q.max_size > MAX_QUEUE_SIZE
                || q.admission_per_second > MAX_ADMISSION_PER_SECOND
                || q.max_active_shoppers > MAX_ACTIVE_SHOPPERS
                || q.access_window_minutes > MAX_ACCESS_WINDOW_MINUTES
            {
                return Err(format!(
                    "queue limits: max_size at most {MAX_QUEUE_SIZE}, admission_per_second at most {MAX_ADMISSION_PER_SECOND}, max_active_shoppers at most {MAX_ACTIVE_SHOPPERS}, access_window_minutes at most {MAX_ACCESS_WINDOW_MINUTES}"
                ));
            }
        }
        Ok(())
    }

    /// Checks the tiers against the venue: every named section exists, and no
    /// section is in two tiers.
    pub fn validate_against(&self, venue: &Venue) -> Result<(), String> {
        let sections: BTreeSet<String> = venue
            .sections
            .iter()
            .map(|s| s.name.to_lowercase())
            .collect();
        let mut priced = BTreeSet::new();
        for t in &self.pricing_tiers {
            for s in &t.sections {
                let key = s.to_lowercase();
                if !sections.contains(&key) {
                    return Err(format!(
                        "tier {:?} names section {s:?}, which venue {:?} does not have",
                        t.name, venue.name
                    ));
                }
                if !priced.insert(key) {
                    return Err(format!("section {s:?} is in two tiers"));
                }
            }
        }
        Ok(())
    }
}
