//! The catalog (group 0): the cluster's identity and its venues. Events, placement,
//! users, API keys and payment methods join it in later issues.
//!
//! Keys (inside the machine's domain space): `g` the cluster's bootstrap id,
//! `v<uuid>` a venue.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::machine::encode_value;
use super::{ApplyCtx, Change};
use crate::codec;
use crate::error::{Error, Result};

/// Largest venue the catalog accepts (seats).
pub const MAX_VENUE_CAPACITY: u64 = 200_000;
/// Most seats in one row.
pub const MAX_SEATS_PER_ROW: u32 = 1_000;
/// Longest accepted name or label (characters).
pub const MAX_NAME_LEN: usize = 200;

const GENESIS_KEY: &[u8] = b"g";
const VENUE_PREFIX: u8 = b'v';

/// Catalog commands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogCommand {
    /// Records the cluster's bootstrap id. Only the first one counts.
    Genesis {
        cluster_uuid: Uuid,
    },
    CreateVenue(NewVenue),
}

/// Catalog outcomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogResponse {
    Genesis { cluster_uuid: Uuid },
    VenueCreated { venue_id: Uuid, capacity: u64 },
    Rejected(CatalogRejection),
}

/// Business refusals (replicated outcomes, not errors of the system).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CatalogRejection {
    VenueExists(Uuid),
    Invalid(String),
}

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

fn check_name(field: &str, value: &str, may_be_empty: bool) -> Result<(), String> {
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

/// The catalog's replicated state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    cluster_uuid: Option<Uuid>,
    venues: BTreeMap<Uuid, Venue>,
}

impl Catalog {
    pub(super) fn apply(
        &mut self,
        cmd: CatalogCommand,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> CatalogResponse {
        match cmd {
            CatalogCommand::Genesis { cluster_uuid } => {
                let uuid = *self.cluster_uuid.get_or_insert_with(|| {
                    changes.push(Change::Put(
                        GENESIS_KEY.to_vec(),
                        encode_value(&cluster_uuid),
                    ));
                    cluster_uuid
                });
                CatalogResponse::Genesis { cluster_uuid: uuid }
            }
            CatalogCommand::CreateVenue(new) => {
                if self.venues.contains_key(&new.venue_id) {
                    return CatalogResponse::Rejected(CatalogRejection::VenueExists(new.venue_id));
                }
                let capacity = match new.validate() {
                    Ok(c) => c,
                    Err(msg) => return CatalogResponse::Rejected(CatalogRejection::Invalid(msg)),
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
                    venue_key(&venue.venue_id),
                    encode_value(&venue),
                ));
                self.venues.insert(venue.venue_id, venue);
                CatalogResponse::VenueCreated {
                    venue_id: new.venue_id,
                    capacity,
                }
            }
        }
    }

    pub(super) fn restore(&mut self, k: &[u8], v: &[u8]) -> Result<()> {
        if k == GENESIS_KEY {
            self.cluster_uuid = Some(codec::decode(v)?);
        } else if k.first() == Some(&VENUE_PREFIX) {
            let venue: Venue = codec::decode(v)?;
            self.venues.insert(venue.venue_id, venue);
        } else {
            return Err(Error::Decode(format!("unknown catalog key {k:?}")));
        }
        Ok(())
    }

    pub(super) fn dump(&self, out: &mut Vec<(Vec<u8>, Vec<u8>)>) {
        if let Some(u) = &self.cluster_uuid {
            out.push((GENESIS_KEY.to_vec(), encode_value(u)));
        }
        for v in self.venues.values() {
            out.push((venue_key(&v.venue_id), encode_value(v)));
        }
    }

    /// The cluster's bootstrap id, once the genesis command is applied.
    pub fn cluster_uuid(&self) -> Option<Uuid> {
        self.cluster_uuid
    }

    pub fn venue(&self, id: &Uuid) -> Option<&Venue> {
        self.venues.get(id)
    }

    /// Venues in id order.
    pub fn venues(&self) -> impl Iterator<Item = &Venue> {
        self.venues.values()
    }

    pub fn venue_count(&self) -> usize {
        self.venues.len()
    }
}

fn venue_key(id: &Uuid) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(VENUE_PREFIX);
    k.extend_from_slice(id.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::domain::{Command, CommandBody, GroupKind, GroupMachine, Response};

    fn venue(id: u128, seats: u32) -> NewVenue {
        NewVenue {
            venue_id: Uuid::from_u128(id),
            name: format!("Hall {id}"),
            city: "Springfield".into(),
            state: "IL".into(),
            country: "US".into(),
            timezone: "America/Chicago".into(),
            sections: vec![SectionSpec {
                name: "Floor".into(),
                rows: vec![
                    RowSpec {
                        row: "A".into(),
                        seats,
                    },
                    RowSpec {
                        row: "B".into(),
                        seats,
                    },
                ],
            }],
        }
    }

    fn cmd(req: u128, at: i64, body: CatalogCommand) -> Command {
        Command {
            request_id: Uuid::from_u128(req),
            stamped_ms: at,
            body: CommandBody::Catalog(body),
        }
    }

    /// Applies commands and mirrors the changes into a map, as the storage adapter does.
    fn run(cmds: Vec<Command>) -> (GroupMachine, BTreeMap<Vec<u8>, Vec<u8>>, Vec<Response>) {
        let mut m = GroupMachine::new(GroupKind::Catalog);
        let mut disk = BTreeMap::new();
        let mut out = Vec::new();
        for (i, c) in cmds.into_iter().enumerate() {
            let (r, changes) = m.apply(c, i as u64 + 1);
            for ch in changes {
                match ch {
                    Change::Put(k, v) => {
                        disk.insert(k, v);
                    }
                    Change::Delete(k) => {
                        disk.remove(&k);
                    }
                }
            }
            out.push(r);
        }
        (m, disk, out)
    }

    #[test]
    fn creates_venues_and_refuses_duplicates_and_bad_input() {
        let mut bad = venue(3, 10);
        bad.sections[0].rows[1].row = "A".into();
        let (m, _, out) = run(vec![
            cmd(1, 10, CatalogCommand::CreateVenue(venue(1, 30))),
            cmd(2, 11, CatalogCommand::CreateVenue(venue(1, 5))),
            cmd(3, 12, CatalogCommand::CreateVenue(bad)),
        ]);
        assert_eq!(
            out[0],
            Response::Catalog(CatalogResponse::VenueCreated {
                venue_id: Uuid::from_u128(1),
                capacity: 60
            })
        );
        assert_eq!(
            out[1],
            Response::Catalog(CatalogResponse::Rejected(CatalogRejection::VenueExists(
                Uuid::from_u128(1)
            )))
        );
        assert!(
            matches!(&out[2], Response::Catalog(CatalogResponse::Rejected(CatalogRejection::Invalid(m))) if m.contains("appears twice"))
        );
        let c = m.catalog().unwrap();
        assert_eq!(c.venue_count(), 1);
        assert_eq!(c.venue(&Uuid::from_u128(1)).unwrap().created_ms, 10);
    }

    #[test]
    fn a_retried_request_returns_the_first_outcome() {
        let (m, _, out) = run(vec![
            cmd(7, 10, CatalogCommand::CreateVenue(venue(1, 30))),
            cmd(7, 20, CatalogCommand::CreateVenue(venue(1, 30))),
        ]);
        assert_eq!(out[0], out[1]);
        assert!(matches!(
            out[1],
            Response::Catalog(CatalogResponse::VenueCreated { .. })
        ));
        assert_eq!(m.catalog().unwrap().venue_count(), 1);
    }

    #[test]
    fn request_ids_are_forgotten_after_the_window_by_stamped_time() {
        let later = crate::domain::DEDUP_WINDOW_MS + 100;
        let (m, disk, _) = run(vec![
            cmd(7, 10, CatalogCommand::CreateVenue(venue(1, 30))),
            cmd(8, later, CatalogCommand::CreateVenue(venue(2, 30))),
        ]);
        assert_eq!(m.remembered_requests(), 1);
        assert_eq!(disk.keys().filter(|k| k[0] == b'd').count(), 1);
    }

    #[test]
    fn genesis_counts_once_and_time_never_runs_backwards() {
        let (m, _, out) = run(vec![
            cmd(
                1,
                50,
                CatalogCommand::Genesis {
                    cluster_uuid: Uuid::from_u128(100),
                },
            ),
            cmd(
                2,
                20,
                CatalogCommand::Genesis {
                    cluster_uuid: Uuid::from_u128(200),
                },
            ),
            cmd(3, 30, CatalogCommand::CreateVenue(venue(1, 1))),
        ]);
        assert_eq!(
            out[1],
            Response::Catalog(CatalogResponse::Genesis {
                cluster_uuid: Uuid::from_u128(100)
            })
        );
        assert_eq!(
            m.catalog().unwrap().cluster_uuid(),
            Some(Uuid::from_u128(100))
        );
        assert_eq!(m.clock_ms(), 50);
        // The venue created by a command stamped 30 after time 50 is dated 50.
        assert_eq!(
            m.catalog()
                .unwrap()
                .venue(&Uuid::from_u128(1))
                .unwrap()
                .created_ms,
            50
        );
    }

    #[test]
    fn persisted_changes_and_dump_restore_to_the_same_machine() {
        let cmds = (0..40u128)
            .map(|i| {
                let body = if i % 7 == 0 {
                    CatalogCommand::Genesis {
                        cluster_uuid: Uuid::from_u128(i),
                    }
                } else {
                    CatalogCommand::CreateVenue(venue(i % 11, 1 + (i as u32 % 5)))
                };
                cmd(i % 13, i as i64 * 100_000, body)
            })
            .collect();
        let (m, disk, _) = run(cmds);
        let dumped: BTreeMap<_, _> = m.dump().into_iter().collect();
        assert_eq!(
            dumped, disk,
            "changes persisted must equal the machine's full dump"
        );
        let restored = GroupMachine::restore(
            GroupKind::Catalog,
            disk.iter().map(|(k, v)| (k.as_slice(), v.as_slice())),
        )
        .unwrap();
        assert_eq!(restored, m);
    }

    #[test]
    fn validation_bounds() {
        let mut v = venue(1, MAX_SEATS_PER_ROW + 1);
        assert!(v.validate().unwrap_err().contains("seats"));
        v.sections.clear();
        assert!(v.validate().unwrap_err().contains("sections"));
        let mut v = venue(1, 10);
        v.name = " ".into();
        assert!(v.validate().unwrap_err().contains("name"));
        assert_eq!(venue(1, 10).validate(), Ok(20));
    }
}
