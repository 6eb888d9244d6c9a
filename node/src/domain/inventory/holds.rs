//! Holds: all-or-nothing reservations of seats, their expiry by stamped time, the
//! per-user ticket limit, best-available selection, and the seat states, tier
//! counts and indexes derived from the reservations.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{
    reservation_key, AvailabilityView, Inventory, InventoryCommand, InventoryRejection, Pick,
    ReservationView, SeatsView,
};
use crate::domain::machine::encode_value;
use crate::domain::{ApplyCtx, Change};

/// A reservation's life: ACTIVE until released, expired or converted; a converted
/// one is REFUNDED when its order is cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReservationStatus {
    Active,
    Released,
    Expired,
    Converted,
    Refunded,
}

impl ReservationStatus {
    /// The JSON name.
    pub fn name(self) -> &'static str {
        match self {
            ReservationStatus::Active => "ACTIVE",
            ReservationStatus::Released => "RELEASED",
            ReservationStatus::Expired => "EXPIRED",
            ReservationStatus::Converted => "CONVERTED",
            ReservationStatus::Refunded => "REFUNDED",
        }
    }
}

/// A hold of seats (persisted under `r{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub reservation_id: Uuid,
    pub user_id: Uuid,
    /// Seat indexes, in the order they were asked for.
    pub seats: Vec<u32>,
    pub price_cents: u64,
    pub fees_cents: u64,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub status: ReservationStatus,
    /// When it stopped being ACTIVE (0 while active).
    pub closed_ms: i64,
}

impl Reservation {
    /// Whether its seats are held (ACTIVE) or sold (CONVERTED): they count
    /// against the user's limit and are not available.
    fn occupies(&self) -> bool {
        matches!(
            self.status,
            ReservationStatus::Active | ReservationStatus::Converted
        )
    }
}

/// A seat's state, derived from the reservations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeatState {
    Available,
    Held(Uuid),
    Sold(Uuid),
}

impl Inventory {
    /// Recomputes every derived structure from the layout and the reservations.
    pub(super) fn rebuild(&mut self) {
        let Some((seat_count, seat_tier, tiers)) = self
            .records
            .layout
            .as_ref()
            .map(|l| (l.seat_count, l.seat_tiers(), l.tiers.len()))
        else {
            return;
        };
        self.seats = vec![SeatState::Available; seat_count as usize];
        self.seat_tier = seat_tier;
        self.available_by_tier = vec![0; tiers];
        for &t in &self.seat_tier {
            if let Some(c) = self.available_by_tier.get_mut(usize::from(t)) {
                *c += 1;
            }
        }
        self.sold = 0;
        self.per_user.clear();
        self.expiries.clear();
        self.last_updated_ms = 0;
        let occupying: Vec<Reservation> = self
            .records
            .reservations
            .values()
            .filter(|r| r.occupies())
            .cloned()
            .collect();
        self.last_updated_ms = self
            .records
            .reservations
            .values()
            .map(|r| r.created_ms.max(r.closed_ms))
            .max()
            .unwrap_or(0);
        for r in &occupying {
            self.occupy(r);
        }
        self.rebuild_orders();
    }

    /// Sets the seats' state and keeps the per-tier available counts in step.
    fn mark(&mut self, seats: &[u32], state: SeatState) {
        for &s in seats {
            if let Some(slot) = self.seats.get_mut(s as usize) {
                *slot = state;
            }
            if let Some(c) = self
                .seat_tier
                .get(s as usize)
                .and_then(|&t| self.available_by_tier.get_mut(usize::from(t)))
            {
                *c = if state == SeatState::Available {
                    *c + 1
                } else {
                    c.saturating_sub(1)
                };
            }
        }
    }

    /// Marks a reservation's seats held or sold and counts them.
    fn occupy(&mut self, r: &Reservation) {
        let state = match r.status {
            ReservationStatus::Active => SeatState::Held(r.reservation_id),
            _ => SeatState::Sold(r.reservation_id),
        };
        self.mark(&r.seats, state);
        if r.status == ReservationStatus::Converted {
            self.sold += r.seats.len() as u32;
        }
        if r.status == ReservationStatus::Active {
            self.expiries.insert((r.expires_ms, r.reservation_id));
        }
        *self.per_user.entry(r.user_id).or_default() += r.seats.len() as u32;
    }

    /// Frees a reservation's seats and uncounts them.
    fn vacate(&mut self, r: &Reservation) {
        self.mark(&r.seats, SeatState::Available);
        if r.status == ReservationStatus::Converted {
            self.sold = self.sold.saturating_sub(r.seats.len() as u32);
        }
        self.expiries.remove(&(r.expires_ms, r.reservation_id));
        if let Some(n) = self.per_user.get_mut(&r.user_id) {
            *n = n.saturating_sub(r.seats.len() as u32);
            if *n == 0 {
                self.per_user.remove(&r.user_id);
            }
        }
    }

    /// Moves a reservation to `status`, keeping the derived state and the disk in
    /// step.
    pub(super) fn transition(
        &mut self,
        id: Uuid,
        status: ReservationStatus,
        now_ms: i64,
        changes: &mut Vec<Change>,
    ) -> Option<Reservation> {
        let old = self.records.reservations.get(&id)?.clone();
        self.vacate(&old);
        let mut new = old;
        new.status = status;
        new.closed_ms = if status == ReservationStatus::Active {
            0
        } else {
            now_ms
        };
        if new.occupies() {
            self.occupy(&new);
        }
        self.last_updated_ms = self.last_updated_ms.max(now_ms);
        changes.push(Change::Put(reservation_key(&id), encode_value(&new)));
        self.records.reservations.insert(id, new.clone());
        Some(new)
    }

    /// Expires every live hold whose time has come; returns how many.
    pub(super) fn expire_due(&mut self, now_ms: i64, changes: &mut Vec<Change>) -> u32 {
        let mut n = 0;
        while let Some(&(at, id)) = self.expiries.first() {
            if at > now_ms {
                break;
            }
            self.expiries.remove(&(at, id));
            self.transition(id, ReservationStatus::Expired, at, changes);
            n += 1;
        }
        n
    }

    /// The sale status now.
    pub(super) fn sale_status(&self, now_ms: i64) -> Option<super::SaleStatus> {
        let layout = self.records.layout.as_ref()?;
        let all_sold = self.sold >= layout.seat_count;
        Some(layout.sale_status(self.status_record().status, now_ms, all_sold))
    }

    pub(super) fn reserve(
        &mut self,
        reservation_id: Uuid,
        user_id: Uuid,
        pick: Pick,
        hold_ms: i64,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<ReservationView, InventoryRejection> {
        let status = self
            .sale_status(ctx.now_ms)
            .ok_or(InventoryRejection::NotOpen)?;
        if !status.allows_holds() {
            return Err(InventoryRejection::NotOnSale(status));
        }
        if self.records.reservations.contains_key(&reservation_id) {
            return Err(InventoryRejection::Invalid(format!(
                "reservation {reservation_id} exists"
            )));
        }
        if hold_ms <= 0 {
            return Err(InventoryRejection::Invalid(
                "hold time must be positive".into(),
            ));
        }
        let (limit, event_id) = match &self.records.layout {
            Some(l) => (l.max_per_user, l.event_id),
            None => return Err(InventoryRejection::NotOpen),
        };
        let asked = match &pick {
            Pick::Seats(ids) => ids.len() as u32,
            Pick::Best { quantity, .. } => *quantity,
        };
        if asked == 0 {
            return Err(InventoryRejection::Invalid("no seats asked for".into()));
        }
        let have = self.per_user.get(&user_id).copied().unwrap_or(0);
        if have.saturating_add(asked) > limit {
            return Err(InventoryRejection::PurchaseLimit { limit, have, asked });
        }
        let seats = match pick {
            Pick::Seats(ids) => self.named_seats(&event_id, &ids)?,
            Pick::Best { quantity, tier_id } => self.best_available(quantity, tier_id)?,
        };
        let (mut price_cents, mut fees_cents) = (0u64, 0u64);
        if let Some(layout) = &self.records.layout {
            for &s in &seats {
                if let Some(t) = self
                    .seat_tier
                    .get(s as usize)
                    .and_then(|&t| layout.tiers.get(usize::from(t)))
                {
                    price_cents = price_cents.saturating_add(t.price_cents);
                    fees_cents = fees_cents.saturating_add(t.fees_cents);
                }
            }
        }
        let r = Reservation {
            reservation_id,
            user_id,
            seats,
            price_cents,
            fees_cents,
            created_ms: ctx.now_ms,
            expires_ms: ctx.now_ms.saturating_add(hold_ms),
            status: ReservationStatus::Active,
            closed_ms: 0,
        };
        self.occupy(&r);
        self.last_updated_ms = self.last_updated_ms.max(ctx.now_ms);
        changes.push(Change::Put(
            reservation_key(&reservation_id),
            encode_value(&r),
        ));
        let view = self.view_at(&r, ctx.now_ms);
        self.records.reservations.insert(reservation_id, r);
        Ok(view)
    }

    /// The refusal a hold of named seats would surely get if it were applied at
    /// `now_ms` on this state, or `None` when only the log can answer it. Mirrors
    /// [`Self::reserve`] after [`Self::expire_due`]: every check that comes before
    /// the seat check must pass (the per-user count is an upper bound here, since
    /// due holds are still counted), and a seat counts as held only by a hold that
    /// is still live at `now_ms`. Sold seats never come back by themselves.
    pub(super) fn reserve_refusal(
        &self,
        cmd: &InventoryCommand,
        now_ms: i64,
    ) -> Option<InventoryRejection> {
        let InventoryCommand::Reserve {
            event_id,
            reservation_id,
            user_id,
            pick: Pick::Seats(ids),
            hold_ms,
        } = cmd
        else {
            return None;
        };
        let layout = self.records.layout.as_ref()?;
        if self.records.event_id != Some(*event_id) || layout.event_id != *event_id {
            return None;
        }
        if !self.sale_status(now_ms)?.allows_holds()
            || self.records.reservations.contains_key(reservation_id)
            || *hold_ms <= 0
            || ids.is_empty()
        {
            return None;
        }
        let asked = u32::try_from(ids.len()).ok()?;
        let have = self.per_user.get(user_id).copied().unwrap_or(0);
        if have.saturating_add(asked) > layout.max_per_user {
            return None;
        }
        let mut seen = BTreeSet::new();
        let mut seats = Vec::with_capacity(ids.len());
        for id in ids {
            let i = crate::domain::ids::seat_index(event_id, id)
                .filter(|&i| (i as usize) < self.seats.len())?;
            if !seen.insert(i) {
                return None;
            }
            seats.push(i);
        }
        let live =
            |id: &Uuid| {
                self.pinned(id)
                    || self.records.reservations.get(id).is_some_and(|r| {
                        r.status == ReservationStatus::Active && r.expires_ms > now_ms
                    })
            };
        self.taken(event_id, &seats, live).err()
    }

    /// Refuses `seats` if any is sold (410, naming the sold ones), else if any is
    /// held by a reservation `counts` (409, naming the held ones).
    fn taken(
        &self,
        event_id: &Uuid,
        seats: &[u32],
        counts: impl Fn(&Uuid) -> bool,
    ) -> Result<(), InventoryRejection> {
        let named = |pred: &dyn Fn(&SeatState) -> bool| -> Vec<Uuid> {
            seats
                .iter()
                .filter(|&&s| pred(&self.seats[s as usize]))
                .map(|&s| crate::domain::ids::seat(event_id, s))
                .collect()
        };
        let sold = named(&|st| matches!(st, SeatState::Sold(_)));
        if !sold.is_empty() {
            return Err(InventoryRejection::SeatsSold(sold));
        }
        let held = named(&|st| matches!(st, SeatState::Held(r) if counts(r)));
        if !held.is_empty() {
            return Err(InventoryRejection::SeatsUnavailable(held));
        }
        Ok(())
    }

    /// Checks a list of seat ids: known, distinct, none sold, none held.
    fn named_seats(&self, event_id: &Uuid, ids: &[Uuid]) -> Result<Vec<u32>, InventoryRejection> {
        let mut seen = BTreeSet::new();
        let mut dups = Vec::new();
        let mut unknown = Vec::new();
        let mut seats = Vec::with_capacity(ids.len());
        for id in ids {
            if !seen.insert(*id) {
                dups.push(*id);
                continue;
            }
            match crate::domain::ids::seat_index(event_id, id)
                .filter(|&i| (i as usize) < self.seats.len())
            {
                Some(i) => seats.push(i),
                None => unknown.push(*id),
            }
        }
        if !dups.is_empty() {
            return Err(InventoryRejection::DuplicateSeats(dups));
        }
        if !unknown.is_empty() {
            return Err(InventoryRejection::UnknownSeats(unknown));
        }
        self.taken(event_id, &seats, |_| true)?;
        Ok(seats)
    }

    /// `quantity` available seats of the tier (or any tier): the first run of
    /// adjacent seats in one row, best rows first; else the first seats found.
    fn best_available(
        &self,
        quantity: u32,
        tier_id: Option<Uuid>,
    ) -> Result<Vec<u32>, InventoryRejection> {
        let layout = self
            .records
            .layout
            .as_ref()
            .ok_or(InventoryRejection::NotOpen)?;
        let tier = match tier_id {
            Some(id) => Some(
                layout
                    .tier_index(&id)
                    .ok_or(InventoryRejection::UnknownTier(id))?,
            ),
            None => None,
        };
        let free = |s: u32| self.seats.get(s as usize) == Some(&SeatState::Available);
        for row in layout.rows_of(tier) {
            let mut run = 0u32;
            for s in row.first_seat..row.first_seat + row.seats {
                run = if free(s) { run + 1 } else { 0 };
                if run == quantity {
                    return Ok((s + 1 - quantity..=s).collect());
                }
            }
        }
        let scattered: Vec<u32> = layout
            .rows_of(tier)
            .flat_map(|r| r.first_seat..r.first_seat + r.seats)
            .filter(|&s| free(s))
            .take(quantity as usize)
            .collect();
        if scattered.len() as u32 == quantity {
            Ok(scattered)
        } else {
            Err(InventoryRejection::NotEnoughSeats {
                available: scattered.len() as u32,
            })
        }
    }

    /// Moves a reservation from `from` to `to`. One already in a status of `done`
    /// answers as it is (retries are no-ops); any other status is refused. With an
    /// `owner`, only that user may move it.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        id: Uuid,
        owner: Option<Uuid>,
        from: ReservationStatus,
        to: ReservationStatus,
        done: &[ReservationStatus],
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<ReservationView, InventoryRejection> {
        let r = self
            .records
            .reservations
            .get(&id)
            .ok_or(InventoryRejection::UnknownReservation)?;
        if owner.is_some_and(|u| u != r.user_id) {
            return Err(InventoryRejection::NotOwner);
        }
        if r.status == from {
            let r = self
                .transition(id, to, ctx.now_ms, changes)
                .ok_or(InventoryRejection::UnknownReservation)?;
            Ok(self.view_at(&r, ctx.now_ms))
        } else if done.contains(&r.status) {
            Ok(self.view_at(r, ctx.now_ms))
        } else {
            Err(InventoryRejection::ReservationClosed(r.status))
        }
    }

    /// The owner releases a hold; a released or expired one answers the same.
    pub(super) fn release(
        &mut self,
        id: Uuid,
        user_id: Uuid,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<ReservationView, InventoryRejection> {
        use ReservationStatus::*;
        self.step(
            id,
            Some(user_id),
            Active,
            Released,
            &[Released, Expired],
            ctx,
            changes,
        )
    }

    /// A live hold becomes sold.
    pub(super) fn convert(
        &mut self,
        id: Uuid,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<ReservationView, InventoryRejection> {
        use ReservationStatus::*;
        self.step(id, None, Active, Converted, &[Converted], ctx, changes)
    }

    /// Sold seats go back on sale.
    pub(super) fn refund(
        &mut self,
        id: Uuid,
        ctx: ApplyCtx,
        changes: &mut Vec<Change>,
    ) -> Result<ReservationView, InventoryRejection> {
        use ReservationStatus::*;
        self.step(id, None, Converted, Refunded, &[Refunded], ctx, changes)
    }

    /// A reservation as seen at `now_ms` (a live hold past its time reads EXPIRED).
    pub(super) fn view_at(&self, r: &Reservation, now_ms: i64) -> ReservationView {
        let event_id = self.records.event_id.unwrap_or_default();
        let status = if r.status == ReservationStatus::Active
            && r.expires_ms <= now_ms
            && !self.pinned(&r.reservation_id)
        {
            ReservationStatus::Expired
        } else {
            r.status
        };
        ReservationView {
            reservation_id: r.reservation_id,
            event_id,
            user_id: r.user_id,
            seat_ids: r
                .seats
                .iter()
                .map(|&s| crate::domain::ids::seat(&event_id, s))
                .collect(),
            status,
            created_ms: r.created_ms,
            expires_ms: r.expires_ms,
            price_cents: r.price_cents,
            fees_cents: r.fees_cents,
        }
    }

    /// Seats held by holds that are past due at `now_ms` (not yet swept).
    fn due_seats(&self, now_ms: i64) -> impl Iterator<Item = (u32, u16)> + '_ {
        self.expiries
            .iter()
            .take_while(move |(at, _)| *at <= now_ms)
            .filter_map(|(_, id)| self.records.reservations.get(id))
            .flat_map(|r| r.seats.iter())
            .map(|&s| (s, self.seat_tier.get(s as usize).copied().unwrap_or(0)))
    }

    /// Seats available per tier as of `now_ms` (holds due by then count as
    /// free), with the sale status as of `status_ms`.
    pub(super) fn availability(&self, now_ms: i64, status_ms: i64) -> Option<AvailabilityView> {
        let layout = self.records.layout.as_ref()?;
        let mut by_tier = self.available_by_tier.clone();
        for (_, t) in self.due_seats(now_ms) {
            if let Some(c) = by_tier.get_mut(usize::from(t)) {
                *c += 1;
            }
        }
        let status = self.sale_status(status_ms)?;
        Some(AvailabilityView {
            status,
            available: by_tier.iter().sum(),
            available_by_tier: by_tier,
            capacity: layout.seat_count,
            last_updated_ms: self.last_updated_ms,
        })
    }

    pub(super) fn seat_states(&self, now_ms: i64) -> Option<SeatsView> {
        self.records.layout.as_ref()?;
        let mut states: Vec<u8> = self
            .seats
            .iter()
            .map(|s| match s {
                SeatState::Available => 0,
                SeatState::Held(_) => 1,
                SeatState::Sold(_) => 2,
            })
            .collect();
        for (s, _) in self.due_seats(now_ms) {
            if let Some(x) = states.get_mut(s as usize) {
                *x = 0;
            }
        }
        Some(SeatsView {
            states,
            last_updated_ms: self.last_updated_ms,
        })
    }

    /// Every seat's derived state (tests and checks).
    pub fn seat_state(&self, seat: u32) -> Option<SeatState> {
        self.seats.get(seat as usize).copied()
    }

    /// Tickets held and bought by a user.
    pub fn tickets_of(&self, user: &Uuid) -> u32 {
        self.per_user.get(user).copied().unwrap_or(0)
    }

    /// Available seats per tier (derived counters).
    pub fn available_by_tier(&self) -> &[u32] {
        &self.available_by_tier
    }

    /// Every reservation, by id.
    pub fn reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.records.reservations.values()
    }
}
