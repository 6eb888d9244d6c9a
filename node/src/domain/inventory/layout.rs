//! An event's seating as its inventory sees it: the venue's priced sections, rows
//! and seats numbered densely (a seat is its index), the tiers' prices, and the
//! dates that drive the sale status. Built from the catalog by a pure function, so
//! the group (at open) and any node rendering a seat map derive the same layout.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::SaleOverride;
use crate::domain::catalog::{Event, Venue};
use crate::domain::ids;

/// A pricing tier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TierLayout {
    pub tier_id: Uuid,
    pub name: String,
    pub price_cents: u64,
    pub fees_cents: u64,
}

/// A row: seats `first_seat .. first_seat + seats`, numbered from 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowLayout {
    pub name: String,
    pub first_seat: u32,
    pub seats: u32,
}

/// A priced section of the venue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SectionLayout {
    pub name: String,
    /// Index into [`EventLayout::tiers`].
    pub tier: u16,
    pub rows: Vec<RowLayout>,
}

/// Everything the inventory needs to know about an event, fixed at open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLayout {
    pub event_id: Uuid,
    pub tiers: Vec<TierLayout>,
    pub sections: Vec<SectionLayout>,
    pub seat_count: u32,
    pub date_ms: i64,
    pub on_sale_ms: i64,
    pub presale_start_ms: Option<i64>,
    /// Tickets a user may hold and buy for this event, together.
    pub max_per_user: u32,
}

/// The sale status fans see (api-extensions.md, "States").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SaleStatus {
    NotOnSale,
    Presale,
    OnSale,
    SoldOut,
    Paused,
    Cancelled,
    Ended,
}

impl SaleStatus {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            SaleStatus::NotOnSale => "NOT_ON_SALE",
            SaleStatus::Presale => "PRESALE",
            SaleStatus::OnSale => "ON_SALE",
            SaleStatus::SoldOut => "SOLD_OUT",
            SaleStatus::Paused => "PAUSED",
            SaleStatus::Cancelled => "CANCELLED",
            SaleStatus::Ended => "ENDED",
        }
    }

    /// Whether fans may hold seats now.
    pub fn allows_holds(self) -> bool {
        matches!(
            self,
            SaleStatus::Presale | SaleStatus::OnSale | SaleStatus::SoldOut
        )
    }
}

impl EventLayout {
    /// The layout of `event` at `venue`: venue order of sections and rows, only the
    /// sections a tier prices (matched case-insensitively, as the catalog checks).
    pub fn from_catalog(event: &Event, venue: &Venue, max_per_user: u32) -> Self {
        let spec = &event.spec;
        let tiers = spec
            .pricing_tiers
            .iter()
            .map(|t| TierLayout {
                tier_id: t.tier_id,
                name: t.name.clone(),
                price_cents: t.price_cents,
                fees_cents: t.fees_cents,
            })
            .collect();
        let tier_of = |section: &str| {
            let name = section.to_lowercase();
            spec.pricing_tiers
                .iter()
                .position(|t| t.sections.iter().any(|s| s.to_lowercase() == name))
        };
        let mut next = 0u32;
        let mut sections = Vec::new();
        for s in &venue.sections {
            let Some(tier) = tier_of(&s.name) else {
                continue;
            };
            let rows = s
                .rows
                .iter()
                .map(|r| {
                    let row = RowLayout {
                        name: r.row.clone(),
                        first_seat: next,
                        seats: r.seats,
                    };
                    next = next.saturating_add(r.seats);
                    row
                })
                .collect();
            sections.push(SectionLayout {
                name: s.name.clone(),
                tier: u16::try_from(tier).unwrap_or(u16::MAX),
                rows,
            });
        }
        EventLayout {
            event_id: spec.event_id,
            tiers,
            sections,
            seat_count: next,
            date_ms: spec.date_ms,
            on_sale_ms: spec.on_sale_ms,
            presale_start_ms: spec.presale_start_ms,
            max_per_user,
        }
    }

    /// The tier index of every seat, by seat index.
    pub fn seat_tiers(&self) -> Vec<u16> {
        let mut out = Vec::with_capacity(self.seat_count as usize);
        for s in &self.sections {
            for r in &s.rows {
                out.extend(std::iter::repeat_n(s.tier, r.seats as usize));
            }
        }
        out
    }

    /// The tier with this id.
    pub fn tier_index(&self, tier_id: &Uuid) -> Option<u16> {
        self.tiers
            .iter()
            .position(|t| &t.tier_id == tier_id)
            .and_then(|i| u16::try_from(i).ok())
    }

    /// Rows of the tier (or of every tier), best first: tier order, then venue order.
    pub fn rows_of(&self, tier: Option<u16>) -> impl Iterator<Item = &RowLayout> {
        let mut order: Vec<&SectionLayout> = self
            .sections
            .iter()
            .filter(|s| tier.is_none_or(|t| s.tier == t))
            .collect();
        order.sort_by_key(|s| s.tier);
        order.into_iter().flat_map(|s| s.rows.iter())
    }

    /// Where a seat is: (section index, row index, seat number from 1).
    pub fn locate(&self, seat: u32) -> Option<(usize, usize, u32)> {
        for (si, s) in self.sections.iter().enumerate() {
            for (ri, r) in s.rows.iter().enumerate() {
                if seat >= r.first_seat && seat < r.first_seat + r.seats {
                    return Some((si, ri, seat - r.first_seat + 1));
                }
            }
        }
        None
    }

    /// The public id of a seat.
    pub fn seat_id(&self, seat: u32) -> Uuid {
        ids::seat(&self.event_id, seat)
    }

    /// The sale status at `now_ms` given the operator's word and whether every seat
    /// is sold.
    pub fn sale_status(&self, op: SaleOverride, now_ms: i64, all_sold: bool) -> SaleStatus {
        match op {
            SaleOverride::Cancelled => return SaleStatus::Cancelled,
            SaleOverride::Paused => return SaleStatus::Paused,
            _ => {}
        }
        if now_ms >= self.date_ms {
            return SaleStatus::Ended;
        }
        if all_sold && self.seat_count > 0 {
            return SaleStatus::SoldOut;
        }
        if op == SaleOverride::OnSale || now_ms >= self.on_sale_ms {
            SaleStatus::OnSale
        } else if self.presale_start_ms.is_some_and(|p| now_ms >= p) {
            SaleStatus::Presale
        } else {
            SaleStatus::NotOnSale
        }
    }
}
