//! What realtime subscribers watch, computed from the state and never stored:
//! seats available per section, and the live holds close to their expiry.

use uuid::Uuid;

use super::{Inventory, Reservation};

impl Inventory {
    /// Seats available per section (in layout order) as of `now_ms`, the
    /// group's replicated clock (holds due by then count as free).
    pub fn available_by_section(&self, now_ms: i64) -> Option<Vec<u32>> {
        let layout = self.records.layout.as_ref()?;
        let view = self.seat_states(now_ms)?;
        let free = |seat: u32| view.states.get(seat as usize) == Some(&0);
        Some(
            layout
                .sections
                .iter()
                .map(|s| {
                    s.rows
                        .iter()
                        .map(|r| {
                            (r.first_seat..r.first_seat.saturating_add(r.seats))
                                .filter(|&seat| free(seat))
                                .count() as u32
                        })
                        .sum()
                })
                .collect(),
        )
    }

    /// Live holds that expire by `until_ms`, soonest first (a hold pinned by a
    /// pending order does not expire and is not listed).
    pub fn holds_expiring_by(&self, until_ms: i64) -> impl Iterator<Item = &Reservation> + '_ {
        self.expiries
            .iter()
            .take_while(move |(at, _)| *at <= until_ms)
            .filter_map(|(_, id)| self.records.reservations.get(id))
    }

    /// One reservation.
    pub fn reservation(&self, id: &Uuid) -> Option<&Reservation> {
        self.records.reservations.get(id)
    }
}
