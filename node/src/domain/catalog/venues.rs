//! Venues: sections, rows and seat counts, as operators describe them.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Largest venue the catalog accepts (seats).
pub const MAX_VENUE_CAPACITY: u64 = 200_000;
/// Most seats in one row.
pub const MAX_SEATS_PER_ROW: u32 = 1_000;
/// Longest accepted name or label (characters).
pub const MAX_NAME_LEN: usize = 200;

/// A venue as an operator describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewVenue {
    pub venue_id: Uuid,
    pub name: String,
    pub city: String,
    pub state: String,
    pub country: String,
    pub timezone: String,
    pub sections: Vec<SectionSpec>,
}

/// A named section and its rows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SectionSpec {
    pub name: String,
    pub rows: Vec<RowSpec>,
}

/// A row label and its number of seats (numbered 1..=seats).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RowSpec {
    pub row: String,
    pub seats: u32,
}

/// A stored venue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Venue {
    pub venue_id: Uuid,
    pub name: String,
    pub city: String,
    pub state: String,
    pub country: String,
    pub timezone: String,
    pub sections: Vec<SectionSpec>,
    pub capacity: u64,
    /// Stamped time of the creating command (ms since the Unix epoch).
    pub created_ms: i64,
}

impl NewVenue {
    /// Checks the description and returns its capacity. Pure, so the API can answer
    /// early and the machine checks again when it applies.
    pub fn validate(&self) -> Result<u64, String> {
        for (field, value) in [
            ("name", &self.name),
            ("city", &self.city),
            ("country", &self.country),
        ] {
            check_name(field, value, false)?;
        }
        check_name("state", &self.state, true)?;
        check_name("timezone", &self.timezone, true)?;
        if self.sections.is_empty() {
            return Err("sections must not be empty".into());
        }
        let mut names = BTreeSet::new();
        let mut capacity: u64 = 0;
        for s in &self.sections {
            check_name("section name", &s.name, false)?;
            if !names.insert(s.name.to_lowercase()) {
                return Err(format!("section {:?} appears twice", s.name));
            }
            if s.rows.is_empty() {
                return Err(format!("section {:?} has no rows", s.name));
            }
            let mut rows = BTreeSet::new();
            for r in &s.rows {
                check_name("row", &r.row, false)?;
                if !rows.insert(r.row.as_str()) {
                    return Err(format!(
                        "row {:?} appears twice in section {:?}",
                        r.row, s.name
                    ));
                }
                if r.seats == 0 || r.seats > MAX_SEATS_PER_ROW {
                    return Err(format!(
                        "row {:?} of section {:?} has {} seats; a row has 1 to {MAX_SEATS_PER_ROW}",
                        r.row, s.name, r.seats
                    ));
                }
                capacity += u64::from(r.seats);
            }
        }
        if capacity > MAX_VENUE_CAPACITY {
            return Err(format!(
                "capacity {capacity} exceeds the maximum of {MAX_VENUE_CAPACITY} seats"
            ));
        }
        Ok(capacity)
    }
}

/// Checks a name or label: non-empty unless allowed, bounded, no control characters.
pub fn check_name(field: &str, value: &str, may_be_empty: bool) -> Result<(), String> {
    if !may_be_empty && value.trim().is_empty() {
        return Err(format!("{field} must not be empty"));
    }
    if value.chars().count() > MAX_NAME_LEN {
        return Err(format!("{field} is longer than {MAX_NAME_LEN} characters"));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("{field} contains control characters"));
    }
    Ok(())
}
