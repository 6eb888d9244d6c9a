//! Ids of things that live inside an event's group (seats, sections, reservations,
//! orders, tickets, transfers) carry the event: they are UUIDv8 (RFC 9562, custom)
//! whose first six bytes are the event id's first six bytes. Any node can thus
//! route `GET /reservations/{id}` (or an order, a ticket) to the right group with
//! the catalog's prefix index, and tell a seat of another event from a seat that
//! does not exist, without a lookup table per seat.
//!
//! Layout: bytes 0..6 event prefix; byte 6 = 0x80 | kind (version 8); byte 8 has the
//! RFC variant bits; the rest is the payload (a seat's index, a reservation's
//! random bits). The catalog refuses an event whose prefix another event has.

use uuid::Uuid;

/// The first six bytes of an event id, shared by every id inside the event.
pub type Prefix = [u8; 6];

/// What an id inside an event names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Seat = 0,
    Section = 1,
    Reservation = 2,
    Order = 3,
    Ticket = 4,
    Transfer = 5,
}

/// The prefix of an event id (or of any id inside the event).
pub fn prefix(id: &Uuid) -> Prefix {
    let mut p = [0u8; 6];
    p.copy_from_slice(&id.as_bytes()[..6]);
    p
}

fn build(event: &Uuid, kind: Kind, payload: [u8; 9]) -> Uuid {
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&prefix(event));
    b[6] = 0x80 | kind as u8;
    b[7..].copy_from_slice(&payload);
    b[8] = 0x80 | (b[8] & 0x3f);
    Uuid::from_bytes(b)
}

/// The id of the event's seat at `index` (its position in the layout).
pub fn seat(event: &Uuid, index: u32) -> Uuid {
    let mut payload = [0u8; 9];
    payload[5..].copy_from_slice(&index.to_be_bytes());
    build(event, Kind::Seat, payload)
}

/// The id of the event's section at `index`.
pub fn section(event: &Uuid, index: u32) -> Uuid {
    let mut payload = [0u8; 9];
    payload[5..].copy_from_slice(&index.to_be_bytes());
    build(event, Kind::Section, payload)
}

/// A reservation id of the event, its other bits from `random` (a v4 uuid).
pub fn reservation(event: &Uuid, random: &Uuid) -> Uuid {
    inside(event, Kind::Reservation, random)
}

/// An id of `kind` inside the event, its other bits from `random` (any uuid whose
/// last nine bytes vary: v4, or v5 for ids derived from others).
pub fn inside(event: &Uuid, kind: Kind, random: &Uuid) -> Uuid {
    let mut payload = [0u8; 9];
    payload.copy_from_slice(&random.as_bytes()[7..]);
    build(event, kind, payload)
}

/// The kind of an id inside an event, if it is one.
pub fn kind(id: &Uuid) -> Option<Kind> {
    let b = id.as_bytes();
    if b[6] & 0xf0 != 0x80 || b[8] & 0xc0 != 0x80 {
        return None;
    }
    match b[6] & 0x0f {
        0 => Some(Kind::Seat),
        1 => Some(Kind::Section),
        2 => Some(Kind::Reservation),
        3 => Some(Kind::Order),
        4 => Some(Kind::Ticket),
        5 => Some(Kind::Transfer),
        _ => None,
    }
}

/// The index a seat id carries, if `id` is a seat id of `event`.
pub fn seat_index(event: &Uuid, id: &Uuid) -> Option<u32> {
    if prefix(id) != prefix(event) || kind(id) != Some(Kind::Seat) {
        return None;
    }
    let b = id.as_bytes();
    if b[7..12] != [0, 0x80, 0, 0, 0] {
        return None;
    }
    Some(u32::from_be_bytes([b[12], b[13], b[14], b[15]]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_their_event_and_kind() {
        let event = Uuid::new_v4();
        let other = Uuid::new_v4();
        for i in [0, 1, 255, 19_999, u32::MAX] {
            let s = seat(&event, i);
            assert_eq!(s.get_version_num(), 8);
            assert_eq!(s.get_variant(), uuid::Variant::RFC4122);
            assert_eq!(prefix(&s), prefix(&event));
            assert_eq!(kind(&s), Some(Kind::Seat));
            assert_eq!(seat_index(&event, &s), Some(i));
            assert_eq!(seat_index(&other, &s), None);
        }
        let r = reservation(&event, &Uuid::new_v4());
        assert_eq!(kind(&r), Some(Kind::Reservation));
        assert_eq!(prefix(&r), prefix(&event));
        assert_eq!(seat_index(&event, &r), None);
        assert_eq!(kind(&section(&event, 3)), Some(Kind::Section));
        for k in [Kind::Order, Kind::Ticket, Kind::Transfer] {
            let id = inside(&event, k, &Uuid::new_v4());
            assert_eq!((kind(&id), prefix(&id)), (Some(k), prefix(&event)));
        }
        assert_eq!(kind(&Uuid::new_v4()), None);
        assert_ne!(seat(&event, 1), seat(&event, 2));
    }
}
